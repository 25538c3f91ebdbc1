//! The AWS SigV4 test suite shipped inside the `aws-sigv4` crate, run through the steps
//! moninit does itself: path acceptance, query canonicalisation and signing.
//!
//! Vectors whose path the proxy refuses before signing (dot segments, encoded or non-ASCII
//! characters) must be refused by `clean_segments`; every other vector must produce exactly
//! the suite's signature.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use moninit::proxy::route::clean_segments;
use moninit::proxy::sign::{canonical_query, Payload, Signer};

/// The v4 vectors of the aws-sigv4 version in Cargo.lock, in cargo's registry.
fn vectors_dir() -> PathBuf {
    let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.lock")).unwrap();
    let version = lock
        .split("[[package]]")
        .find(|p| p.contains("name = \"aws-sigv4\""))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = \"")))
        .map(|v| v.trim_end_matches('"').to_owned())
        .expect("aws-sigv4 in Cargo.lock");
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cargo"));
    let registry = home.join("registry/src");
    for index in std::fs::read_dir(&registry).unwrap() {
        let dir = index
            .unwrap()
            .path()
            .join(format!("aws-sigv4-{version}/aws-signing-test-suite/v4"));
        if dir.is_dir() {
            return dir;
        }
    }
    panic!(
        "aws-sigv4 {version} sources not found under {}",
        registry.display()
    );
}

/// `2015-08-30T12:36:00Z` → SystemTime.
fn parse_time(s: &str) -> SystemTime {
    let n = |a: usize, b: usize| s[a..b].parse::<i64>().unwrap();
    let (y, m, d) = (n(0, 4), n(5, 7), n(8, 10));
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + n(11, 13) * 3600 + n(14, 16) * 60 + n(17, 19);
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs as u64)
}

struct Request {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// Parses request.txt; `None` for folded (multi-line) headers, which hyper refuses anyway.
fn parse_request(text: &str) -> Option<Request> {
    let (head, body) = text.split_once("\n\n").unwrap_or((text, ""));
    let mut lines = head.lines();
    let first = lines.next()?;
    let mut parts = first.split(' ');
    let method = parts.next()?.to_owned();
    let target = parts.next()?;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut headers = Vec::new();
    for line in lines {
        if line.starts_with(' ') || line.starts_with('\t') {
            return None;
        }
        let (k, v) = line.split_once(':')?;
        headers.push((k.to_ascii_lowercase(), v.to_owned()));
    }
    Some(Request {
        method,
        path: path.to_owned(),
        query: query.to_owned(),
        headers,
        body: body.as_bytes().to_vec(),
    })
}

#[test]
fn aws_sigv4_test_suite_signatures_match() {
    let (mut signed, mut refused) = (Vec::new(), Vec::new());
    let mut entries: Vec<_> = std::fs::read_dir(vectors_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for dir in entries {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        if !dir.join("context.json").exists() {
            continue; // the older-format vectors carry no signing context
        }
        let Some(request) =
            parse_request(&std::fs::read_to_string(dir.join("request.txt")).unwrap())
        else {
            continue;
        };
        let context: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("context.json")).unwrap())
                .unwrap();
        if context["normalize"] == false {
            continue; // S3-style unnormalised paths: the proxy never signs those for AMP
        }
        if context["omit_session_token"] == true {
            continue; // token added after signing: moninit always signs the token (AMP needs it)
        }
        if clean_segments(&request.path).is_none() {
            refused.push(name);
            continue;
        }
        let creds = &context["credentials"];
        let credentials = Credentials::new(
            creds["access_key_id"].as_str().unwrap(),
            creds["secret_access_key"].as_str().unwrap(),
            creds["token"].as_str().map(str::to_owned),
            None,
            "vectors",
        );
        let signer = Signer {
            service: context["service"].as_str().unwrap().to_owned(),
            region: context["region"].as_str().unwrap().to_owned(),
            content_sha256_header: context["sign_body"] == true,
        };
        let host = &request.headers.iter().find(|(k, _)| k == "host").unwrap().1;
        let query = canonical_query(&request.query);
        let uri = if query.is_empty() {
            format!("https://{host}{}", request.path)
        } else {
            format!("https://{host}{}?{query}", request.path)
        };
        // Every header of the vector is signed: which headers the proxy signs is its own
        // policy, tested in forward.rs; here the signing of what is chosen is checked.
        let headers = request
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()));
        let added = signer
            .sign(
                &request.method,
                &uri,
                headers,
                Payload::Bytes(&request.body),
                &credentials,
                parse_time(context["timestamp"].as_str().unwrap()),
            )
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let auth = added
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
            .unwrap()
            .1
            .clone();
        let signature = auth.rsplit("Signature=").next().unwrap();
        let want = std::fs::read_to_string(dir.join("header-signature.txt")).unwrap();
        assert_eq!(signature, want.trim(), "{name}: signature differs");
        signed.push(name);
    }
    assert!(
        signed.len() >= 20,
        "only {} vectors signed: {signed:?}",
        signed.len()
    );
    for must in [
        "get-vanilla-query-order-encoded",
        "get-vanilla-utf8-query",
        "get-vanilla-with-session-token",
        "post-x-www-form-urlencoded",
    ] {
        assert!(signed.iter().any(|s| s == must), "{must} was not exercised");
    }
    for must in [
        "get-relative-normalized",
        "get-slash-dot-slash-normalized",
        "get-space-normalized",
        "get-utf8",
    ] {
        assert!(
            refused.iter().any(|s| s == must),
            "{must} should be refused before signing"
        );
    }
}
