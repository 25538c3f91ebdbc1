//! `moninit proxy` end to end, judged by independent verifiers: botocore's SigV4 (the AMP
//! stand-in) and moto's IAM signature checks.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::support::http;
use crate::support::process;
use crate::support::stand_ins::{Proxy, Verifier, KEY, SECRET, WS};
use crate::support::{self, Moto, Seed};

fn remote_write_body(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

const RW_HEADERS: [(&str, &str); 3] = [
    ("Content-Type", "application/x-protobuf"),
    ("Content-Encoding", "snappy"),
    ("X-Prometheus-Remote-Write-Version", "0.1.0"),
];

#[test]
fn remote_write_is_signed_and_verified_by_botocore() {
    let verifier = Verifier::start(&[]);
    let proxy = Proxy::start(verifier.addr, &[], &[]);
    let mut headers = RW_HEADERS.to_vec();
    headers.push((
        "Authorization",
        "AWS4-HMAC-SHA256 Credential=INJECTED/x/y/z/aws4_request, SignedHeaders=host, Signature=00",
    ));
    headers.push(("X-Amz-Security-Token", "injected-token"));
    let resp = proxy.send(
        "POST",
        &format!("/workspaces/{WS}/api/v1/remote_write"),
        &headers,
        &remote_write_body(70_000),
    );
    assert_eq!(resp.status, 204, "{}", resp.text());
    let log = verifier.requests();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0]["verified"], true, "{:?}", log[0]);
    assert_eq!(
        log[0]["access_key"], KEY,
        "incoming credentials must be stripped, not forwarded"
    );
    assert_eq!(log[0]["security_token"], false);
    assert_eq!(log[0]["body_len"], 70_000);
    let metrics = proxy.metrics();
    assert!(
        metrics.contains("moninit_proxy_requests_total{route=\"remote_write\",code=\"204\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("moninit_proxy_signing_seconds_count 1"),
        "{metrics}"
    );
}

#[test]
fn promql_with_awkward_characters_is_sent_exactly_as_signed() {
    let verifier = Verifier::start(&[]);
    let proxy = Proxy::start(verifier.addr, &[], &[]);
    let query = r#"sum by (job) (rate(http_requests_total{job=~"api|web", code!="500", path="/a b+c"}[5m])) + 1 > 0.5 ✓"#;
    // Queries as clients send them: form-encoded (spaces as '+', literal '+' as %2B), partly
    // raw (`[]`, `{}`, `=`, `~` unencoded, as curl -g sends), and a repeated key.
    let raw = format!(
        "query={}&time=1700000000&match[]=up{{job=%22a%22}}&match%5B%5D=%7B__name__%3D~%22node_.%2B%22%7D",
        form_encode(query)
    );
    let resp = proxy.send(
        "GET",
        &format!("/workspaces/{WS}/api/v1/query?{raw}"),
        &[],
        b"",
    );
    assert_eq!(resp.status, 200, "{:?} {}", resp.headers, resp.text());
    let log = verifier.requests();
    assert_eq!(log[0]["verified"], true, "{:?}", log[0]);
    let params = &resp.json()["params"];
    assert_eq!(params[0], serde_json::json!(["query", query]));
    assert_eq!(params[2], serde_json::json!(["match[]", "up{job=\"a\"}"]));
    assert_eq!(
        params[3],
        serde_json::json!(["match[]", "{__name__=~\"node_.+\"}"])
    );

    // The same query as a form-encoded POST body.
    let body = format!("query={}&start=1&end=2&step=15", form_encode(query));
    let resp = proxy.send(
        "POST",
        &format!("/workspaces/{WS}/api/v1/query_range"),
        &[("Content-Type", "application/x-www-form-urlencoded")],
        body.as_bytes(),
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["form"][0], serde_json::json!(["query", query]));
    assert!(verifier.requests().iter().all(|e| e["verified"] == true));
}

/// application/x-www-form-urlencoded, as browsers and Grafana encode.
fn form_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[test]
fn session_tokens_are_signed() {
    let token = "FwoGZXIvYXdzEJr//////////wEaDK+session/token==";
    let verifier = Verifier::start(&["--key", &format!("ASIATEMPKEY:tempsecret:{token}")]);
    let proxy = Proxy::start(
        verifier.addr,
        &[],
        &[
            ("AWS_ACCESS_KEY_ID", "ASIATEMPKEY"),
            ("AWS_SECRET_ACCESS_KEY", "tempsecret"),
            ("AWS_SESSION_TOKEN", token),
        ],
    );
    let resp = proxy.send("GET", &format!("/workspaces/{WS}/api/v1/labels"), &[], b"");
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(verifier.requests()[0]["security_token"], true);
}

#[test]
fn a_wrong_secret_fails_upstream_not_in_the_proxy() {
    let verifier = Verifier::start(&[]);
    let proxy = Proxy::start(
        verifier.addr,
        &[],
        &[("AWS_SECRET_ACCESS_KEY", "not-the-right-secret")],
    );
    let resp = proxy.send(
        "GET",
        &format!("/workspaces/{WS}/api/v1/query?query=up"),
        &[],
        b"",
    );
    assert_eq!(resp.status, 403);
    assert!(
        resp.text()
            .contains("signature we calculated does not match"),
        "{}",
        resp.text()
    );
    let log = verifier.requests();
    assert_eq!(
        (log.len(), log[0]["verified"].clone()),
        (1, serde_json::json!(false))
    );
}

#[test]
fn status_codes_and_retry_after_pass_through_untouched() {
    for status in ["429", "503"] {
        let verifier = Verifier::start(&["--status", status]);
        let proxy = Proxy::start(verifier.addr, &[], &[]);
        let resp = proxy.send(
            "POST",
            &format!("/workspaces/{WS}/api/v1/remote_write"),
            &RW_HEADERS,
            b"x",
        );
        assert_eq!(resp.status.to_string(), status);
        assert_eq!(resp.header("retry-after"), Some("7"));
        assert_eq!(resp.text(), "{\"message\":\"stand-in status\"}");
    }
}

#[test]
fn refusals_never_reach_the_upstream() {
    let verifier = Verifier::start(&[]);
    let proxy = Proxy::start(verifier.addr, &["--body-limit", "100000"], &[]);
    // (method, target, headers, body length, expected status)
    type Case<'a> = (&'a str, String, Vec<(&'a str, &'a str)>, usize, u16);
    let cases: [Case; 8] = [
        (
            "GET",
            format!("/workspaces/{WS}/api/v1/query?query=up"),
            vec![("Host", "sts.amazonaws.com")],
            0,
            403,
        ),
        (
            "GET",
            format!("/workspaces/{WS}/api/v1/query?query=up"),
            vec![("Host", "monitoring.us-east-1.amazonaws.com")],
            0,
            403,
        ),
        ("POST", "/workspaces".into(), vec![], 0, 404),
        (
            "GET",
            format!("/workspaces/{WS}/api/v1/query?query=up"),
            vec![("Host", "")],
            0,
            403,
        ),
        ("GET", "/".into(), vec![], 0, 404),
        (
            "DELETE",
            format!("/workspaces/{WS}/api/v1/query"),
            vec![],
            0,
            405,
        ),
        (
            "GET",
            format!("/workspaces/{WS}/api/v1/%2e%2e/%2e%2e/x"),
            vec![],
            0,
            400,
        ),
        (
            "POST",
            format!("/workspaces/{WS}/api/v1/remote_write"),
            RW_HEADERS.to_vec(),
            100_001,
            413,
        ),
    ];
    for (method, target, headers, body, want) in cases {
        let resp = proxy.send(method, &target, &headers, &vec![b'x'; body]);
        assert_eq!(
            resp.status,
            want,
            "{method} {target} {headers:?}: {}",
            resp.text()
        );
        assert!(!resp.text().contains(SECRET) && !resp.text().contains("Credential"));
    }
    assert!(
        verifier.requests().is_empty(),
        "a refused request reached the upstream: {:?}",
        verifier.requests()
    );
}

#[test]
fn a_slow_client_is_cut_off() {
    use std::io::{Read, Write};
    let verifier = Verifier::start(&[]);
    let proxy = Proxy::start(verifier.addr, &[], &[]);
    let mut stream = std::net::TcpStream::connect(proxy.addr).unwrap();
    stream.write_all(b"GET /workspaces/").unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let _ = stream.read_to_end(&mut buf);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(9) && waited < Duration::from_secs(15),
        "closed after {waited:?}"
    );
    assert!(verifier.requests().is_empty());
}

#[test]
fn upstream_down_gives_502_and_the_proxy_keeps_serving() {
    let dead: SocketAddr = format!("127.0.0.1:{}", process::free_port())
        .parse()
        .unwrap();
    let proxy = Proxy::start(dead, &[], &[]);
    for _ in 0..3 {
        let resp = proxy.send(
            "POST",
            &format!("/workspaces/{WS}/api/v1/remote_write"),
            &RW_HEADERS,
            b"x",
        );
        assert_eq!(resp.status, 502);
        assert_eq!(resp.text(), "moninit proxy: upstream unreachable\n");
    }
    assert!(proxy.metrics().contains("code=\"502\"} 3"));
}

#[test]
fn a_thousand_concurrent_requests_keep_memory_bounded() {
    let verifier = Verifier::start(&[]);
    let proxy = Proxy::start(
        verifier.addr,
        &["--max-concurrent", "32", "--body-limit", "300000"],
        &[],
    );
    let body = std::sync::Arc::new(remote_write_body(256 * 1024));
    let addr = proxy.addr;
    let idle = process::peak_rss_kib(proxy.process.pid());
    let threads: Vec<_> = (0..1000)
        .map(|_| {
            let body = body.clone();
            std::thread::Builder::new()
                .stack_size(128 * 1024)
                .spawn(move || {
                    http::request(
                        addr,
                        "POST",
                        &format!("/workspaces/{WS}/api/v1/remote_write"),
                        &RW_HEADERS,
                        &body,
                    )
                    .map(|r| r.status)
                    .unwrap_or(0)
                })
                .unwrap()
        })
        .collect();
    let statuses: Vec<u16> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    // Requests beyond the 32 slots wait (up to 5 s) for one; on a loaded machine some may
    // still time out in the queue and get 503 + Retry-After. Nothing else is acceptable: no
    // dropped connection, no other error.
    let ok = statuses.iter().filter(|s| **s == 204).count();
    let other: Vec<&u16> = statuses
        .iter()
        .filter(|s| **s != 204 && **s != 503)
        .collect();
    assert!(other.is_empty(), "unexpected outcomes: {other:?}");
    assert!(ok >= 500, "only {ok} of 1000 succeeded");
    // Growth is bounded by the slots' bodies (32 × 300 kB) plus a small per-connection cost
    // (hyper's read buffer, up to 32 KiB, and bookkeeping) for the 1000 connections, far
    // below the 1000 × 256 KiB that buffering every body would take.
    let grown = process::peak_rss_kib(proxy.process.pid()) - idle;
    let bound = 32 * 300_000 / 1024 + 1000 * 48;
    assert!(
        grown < bound,
        "RSS grew by {grown} KiB under load, bound {bound} KiB"
    );
}

#[test]
fn credentials_expiring_mid_run_are_refreshed_without_a_failed_request() {
    let verifier = Verifier::start(&["--issue-ttl", "6"]);
    let creds_uri = format!("http://{}/creds", verifier.addr);
    let proxy = Proxy::start(
        verifier.addr,
        &[],
        &[
            ("AWS_ACCESS_KEY_ID", ""),
            ("AWS_SECRET_ACCESS_KEY", ""),
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", &creds_uri),
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut sent = 0;
    while Instant::now() < deadline {
        let resp = proxy.send(
            "POST",
            &format!("/workspaces/{WS}/api/v1/remote_write"),
            &RW_HEADERS,
            b"sample",
        );
        assert_eq!(resp.status, 204, "request {sent} failed: {}", resp.text());
        sent += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = verifier.log();
    let issued = log.iter().filter(|e| e.get("issued").is_some()).count();
    assert!(
        issued >= 3,
        "credentials were refreshed only {issued} times in 10 s with a 6 s lifetime"
    );
    assert!(log
        .iter()
        .filter(|e| e.get("method").is_some())
        .all(|e| e["verified"] == true));
    assert!(sent > 20);
}

#[test]
fn moto_verifies_s3_requests_signed_by_the_proxy() {
    let seed = Seed {
        auth: true,
        allowed_policy: Some("s3".into()),
        ..Seed::examples()
    };
    let moto = Moto::start(&seed);
    let (key, secret) = moto.allowed_keys.clone().unwrap();
    let upstream: SocketAddr = moto.endpoint.trim_start_matches("http://").parse().unwrap();
    let proxy = Proxy::start(
        upstream,
        &["--name", "s3", "--allow-path", "GET,PUT:/moninit-test/**"],
        &[
            ("AWS_ACCESS_KEY_ID", &key),
            ("AWS_SECRET_ACCESS_KEY", &secret),
        ],
    );
    let put = proxy.send(
        "PUT",
        "/moninit-test/through-proxy/a-b.txt",
        &[("Content-Type", "text/plain")],
        b"signed by moninit",
    );
    assert_eq!(put.status, 200, "{}", put.text());
    let got = proxy.send("GET", "/moninit-test/through-proxy/a-b.txt", &[], b"");
    assert_eq!(
        (got.status, got.text().as_str()),
        (200, "signed by moninit")
    );
    let listed = proxy.send(
        "GET",
        "/moninit-test?list-type=2&prefix=through-proxy/",
        &[],
        b"",
    );
    assert_eq!(
        listed.status, 404,
        "paths outside the allowed routes are refused"
    );

    let wrong = Proxy::start(
        upstream,
        &["--name", "s3", "--allow-path", "GET:/moninit-test/**"],
        &[
            ("AWS_ACCESS_KEY_ID", &key),
            ("AWS_SECRET_ACCESS_KEY", "wrong-secret"),
        ],
    );
    let denied = wrong.send("GET", "/moninit-test/through-proxy/a-b.txt", &[], b"");
    assert_eq!(denied.status, 403);
    assert!(
        denied.text().contains("SignatureDoesNotMatch"),
        "{}",
        denied.text()
    );
}

#[test]
fn non_loopback_listen_is_refused_unless_allowed() {
    let output = support::moninit(None)
        .args(["proxy", "--region", "us-east-1", "--port", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(8));
    assert!(
        support::text(&output).contains("not a loopback address"),
        "{}",
        support::text(&output)
    );
}

fn skew_metric(metrics: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("moninit_proxy_clock_skew_seconds "))
        .unwrap_or_else(|| panic!("no skew metric:\n{metrics}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn clock_skew_is_measured_from_the_upstreams_date_and_a_refusal_for_it_is_logged_once() {
    // In step: the skew is about zero (Date has one-second resolution).
    let verifier = Verifier::start(&[]);
    let proxy = Proxy::start(verifier.addr, &[], &[]);
    let target = format!("/workspaces/{WS}/api/v1/remote_write");
    assert_eq!(proxy.send("POST", &target, &RW_HEADERS, b"x").status, 204);
    assert!(skew_metric(&proxy.metrics()).abs() <= 2.0);

    // AWS's clock 10 minutes ahead of this host's: SigV4 refuses every request.
    let verifier = Verifier::start(&["--clock-offset", "600"]);
    let proxy = Proxy::start(verifier.addr, &[], &[]);
    for _ in 0..3 {
        let resp = proxy.send("POST", &target, &RW_HEADERS, b"x");
        assert_eq!(resp.status, 403, "{}", resp.text());
        assert!(resp.text().contains("Signature expired"), "{}", resp.text());
    }
    let skew = skew_metric(&proxy.metrics());
    assert!((-602.0..=-598.0).contains(&skew), "{skew}");
    let log = std::fs::read_to_string(&proxy.log).unwrap();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("refused the signature's time"))
        .collect();
    assert_eq!(lines.len(), 1, "{log}");
    // Date has one-second resolution.
    assert!(
        (599..=601).any(|s| lines[0].contains(&format!("this clock is {s} s behind AWS's"))),
        "{log}"
    );
    assert!(lines[0].contains("synchronise the clock"), "{log}");
}
