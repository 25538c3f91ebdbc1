//! Fuzz harnesses. Each takes arbitrary bytes and panics only when a property breaks; none
//! does I/O. cargo-fuzz drives them coverage-guided (`fuzz/`, `scripts/fuzz`, nightly), and
//! `scripts/test` replays every committed corpus file through them on stable (the
//! `fuzz_corpus` integration test), crashes found included.
//!
//! - [`agent_config`]: any text either parses into a validated config or is an error;
//! - [`inputs_layout`]: whatever keys a source lists, every rendered dashboard or rule file
//!   lands under its own directory (plain relative path, no `.`/`..`/empty segment);
//! - [`proxy_request`]: whatever request head is accepted is forwarded exactly as signed:
//!   the URI sent parses back to the signed path and canonical query, the canonical query is
//!   a fixed point, and signing the request re-derived from what is sent gives the same
//!   signature;
//! - [`body_reader`]: whatever the chunking, the body read is the bytes sent, its hash is
//!   theirs, and small chunks never stay one buffer each.

use std::path::{Component, Path};

use bytes::Bytes;

/// The agent-config parser never panics.
pub fn agent_config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::config::Config::parse(text, Path::new("fuzz.yaml"));
    }
}

/// Each line is an input path (an S3 key under the prefix); each output must stay in place.
pub fn inputs_layout(data: &[u8]) {
    let mut snapshot = crate::source::Snapshot::default();
    for line in String::from_utf8_lossy(data).lines() {
        snapshot.files.insert(
            line.to_owned(),
            crate::source::InputFile {
                origin: format!("s3://fuzz/{line}"),
                bytes: br#"{"title": "t"}"#.to_vec(),
            },
        );
    }
    let dashboards = crate::render::inputs::dashboards(&snapshot).unwrap_or_default();
    let rules = crate::render::inputs::rule_files(&snapshot, true).unwrap_or_default();
    for (file, dir) in dashboards
        .iter()
        .map(|f| (f, "grafana/dashboards"))
        .chain(rules.iter().map(|f| (f, "prometheus/rules")))
    {
        assert!(
            file.path.starts_with(dir)
                && file
                    .path
                    .components()
                    .all(|c| matches!(c, Component::Normal(n) if !n.is_empty())),
            "{} escapes {dir}",
            file.path.display()
        );
    }
}

/// Lines: method, request target (path and query), then `name: value` headers.
pub fn proxy_request(data: &[u8]) {
    use crate::proxy::sign::{Payload, Signer};
    let text = String::from_utf8_lossy(data);
    let mut lines = text.lines();
    let (Some(method), Some(target)) = (lines.next(), lines.next()) else {
        return;
    };
    let Ok(method) = http::Method::from_bytes(method.trim().as_bytes()) else {
        return;
    };
    let Ok(uri) = target.parse::<http::Uri>() else {
        return;
    };
    let mut headers = http::HeaderMap::new();
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            if let (Ok(k), Ok(v)) = (
                http::header::HeaderName::try_from(k.trim()),
                http::HeaderValue::try_from(v.trim()),
            ) {
                headers.append(k, v);
            }
        }
    }
    let upstream_host = "aps-workspaces.us-east-1.amazonaws.com";
    let routes = crate::proxy::route::Table::new(
        crate::proxy::route::amp(),
        None,
        vec![upstream_host.into()],
    );
    if crate::proxy::admit::admit(&routes, 1 << 20, &method, uri.host(), uri.path(), &headers)
        .is_err()
    {
        return;
    }
    let upstream = crate::proxy::Upstream {
        scheme: "https".into(),
        authority: upstream_host.into(),
    };
    let (signed, sent) =
        crate::proxy::forward::uris(&upstream, upstream_host, uri.path(), uri.query());
    let query = crate::proxy::sign::canonical_query(uri.query().unwrap_or(""));
    assert_eq!(
        crate::proxy::sign::canonical_query(&query),
        query,
        "not a fixed point"
    );
    let parsed: http::Uri = sent.parse().expect("the URI sent must parse");
    assert_eq!(parsed.path(), uri.path(), "path changed on the way");
    assert_eq!(
        parsed.query().unwrap_or(""),
        query,
        "query changed on the way"
    );
    // What the upstream re-derives from the request as sent must give our signature.
    let signer = Signer {
        service: "aps".into(),
        region: "us-east-1".into(),
        content_sha256_header: true,
    };
    let credentials = aws_credential_types::Credentials::new("AKID", "secret", None, None, "fuzz");
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
    let host = [("host", upstream_host)];
    let ours = signer.sign(
        method.as_str(),
        &signed,
        host.into_iter(),
        Payload::Bytes(b""),
        &credentials,
        time,
    );
    let rederived = format!(
        "https://{upstream_host}{}",
        parsed.path_and_query().map(|p| p.as_str()).unwrap_or("/")
    );
    let theirs = signer.sign(
        method.as_str(),
        &rederived,
        host.into_iter(),
        Payload::Bytes(b""),
        &credentials,
        time,
    );
    match (ours, theirs) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "signed {signed} but sent {sent}"),
        (Err(_), Err(_)) => {}
        (a, b) => panic!("signing differs: {a:?} / {b:?}"),
    }
}

/// The first byte of each step says how long the next chunk is (0 → up to 64 KiB).
pub fn body_reader(data: &[u8]) {
    use crate::proxy::body;
    let mut chunks = Vec::new();
    let mut rest = data;
    while let Some((&n, tail)) = rest.split_first() {
        let len = if n == 0 {
            tail.len().min(64 * 1024)
        } else {
            (n as usize).min(tail.len())
        };
        chunks.push(Bytes::copy_from_slice(&tail[..len]));
        rest = &tail[len..];
        if len == 0 {
            break;
        }
    }
    let sent: Vec<u8> = chunks.iter().flat_map(|c| c.to_vec()).collect();
    let large = chunks.iter().filter(|c| c.len() >= body::SMALL).count();
    let small_bytes: usize = chunks
        .iter()
        .filter(|c| c.len() < body::SMALL)
        .map(|c| c.len())
        .sum();
    let frames: Vec<Result<hyper::body::Frame<Bytes>, std::convert::Infallible>> = chunks
        .into_iter()
        .map(|c| Ok(hyper::body::Frame::data(c)))
        .collect();
    let stream = http_body_util::StreamBody::new(futures::stream::iter(frames));
    let limits = body::Limits {
        max: 1 << 20,
        total: std::time::Duration::from_secs(60),
        stall: std::time::Duration::from_secs(60),
        min_rate: 0,
        grace: std::time::Duration::from_secs(60),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    let read = runtime.block_on(body::read(stream, None, limits));
    match read {
        Ok((out, sha)) => {
            assert_eq!(out.len(), sent.len());
            use sha2::Digest;
            assert_eq!(sha, hex::encode(sha2::Sha256::digest(&sent)));
            // Large chunks kept as they are; small ones fill blocks, a run of them starting a
            // new one.
            assert!(
                out.count() <= 2 * large + 1 + small_bytes / body::BLOCK,
                "{} buffers for {large} large chunks",
                out.count()
            );
        }
        Err(body::Error::TooLarge) => assert!(sent.len() > 1 << 20),
        Err(e) => panic!("{e:?}"),
    }
}
