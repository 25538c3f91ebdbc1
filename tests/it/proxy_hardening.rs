//! The signing proxy under attack from the loopback port and at its limits: memory bounded
//! whatever the chunking, no slot starvation, no browser-driven signing, exact header
//! signing; and the small things: a log cap no RUST_LOG can lift, the open-files limit, one
//! line per fatal error.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::process;
use crate::support::stand_ins::{Proxy, Verifier, WS};
use crate::support::{self, http};

fn write_path() -> String {
    format!("/workspaces/{WS}/api/v1/remote_write")
}

fn query_path() -> String {
    format!("/workspaces/{WS}/api/v1/query?query=up")
}

/// The response status of a raw HTTP/1.1 exchange on `stream`.
fn status_of(stream: &mut TcpStream) -> u16 {
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).unwrap();
    std::str::from_utf8(&head[9..12]).unwrap().parse().unwrap()
}

#[test]
fn a_body_sent_one_byte_per_chunk_costs_about_its_size_in_memory() {
    let verifier = Verifier::start(&[]);
    let proxy = Proxy::start(verifier.addr, &[], &[]);
    let before = process::peak_rss_kib(proxy.process.pid());
    // 4 MiB, every byte its own chunk: 4 Mi frames for the proxy to read.
    let size = 4 << 20;
    let mut body = Vec::with_capacity(size * 6 + 5);
    for i in 0..size {
        body.extend_from_slice(b"1\r\n");
        body.push(b'a' + (i % 26) as u8);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    let mut stream = TcpStream::connect(proxy.addr).unwrap();
    write!(
        stream,
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-protobuf\r\nContent-Encoding: snappy\r\nTransfer-Encoding: chunked\r\n\r\n",
        write_path(),
        proxy.addr
    )
    .unwrap();
    stream.write_all(&body).unwrap();
    let status = status_of(&mut stream);
    let grew_mib = (process::peak_rss_kib(proxy.process.pid()) - before) / 1024;
    assert!(status < 500, "status {status}");
    // The body itself (4 MiB) plus buffers: far from the 36× a handle per byte cost.
    assert!(
        grew_mib < 40,
        "peak RSS grew by {grew_mib} MiB for a 4 MiB body"
    );
    let requests = verifier.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0]["verified"], true, "{requests:?}");
}

#[test]
fn bodies_trickling_in_cannot_starve_a_plain_query_and_are_cut_off() {
    let verifier = Verifier::start(&[]);
    let proxy = Proxy::start(verifier.addr, &["--max-concurrent", "4"], &[]);
    // Every body slot taken by a client that sends one byte and stops.
    let mut stalled: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = TcpStream::connect(proxy.addr).unwrap();
            write!(
                s,
                "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-protobuf\r\nContent-Length: 100000\r\n\r\nx",
                write_path(),
                proxy.addr
            )
            .unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let resp = proxy.send("GET", &query_path(), &[], b"");
    let took = started.elapsed();
    assert_ne!(resp.status, 503, "{}", resp.text());
    assert!(took < Duration::from_secs(2), "the query waited {took:?}");
    // The stalled bodies are cut off with 408 within a few seconds, freeing their slots.
    let cut = Instant::now();
    for s in &mut stalled {
        assert_eq!(status_of(s), 408);
    }
    assert!(
        cut.elapsed() < Duration::from_secs(10),
        "{:?}",
        cut.elapsed()
    );
    assert!(verifier.requests().iter().all(|r| r["method"] != "POST"));
}

#[test]
fn a_cross_site_browser_request_is_refused_and_never_reaches_the_upstream() {
    let verifier = Verifier::start(&[]);
    let proxy = Proxy::start(verifier.addr, &[], &[]);
    // What a web page's "simple" cross-site POST looks like.
    let resp = proxy.send(
        "POST",
        &write_path(),
        &[
            ("Origin", "https://evil.example"),
            ("Sec-Fetch-Site", "cross-site"),
            ("Content-Type", "text/plain"),
        ],
        b"samples",
    );
    assert_eq!(resp.status, 403, "{}", resp.text());
    assert!(resp.text().contains("another site"), "{}", resp.text());
    // Without Origin (an old browser), text/plain cannot pass as remote_write either.
    let resp = proxy.send(
        "POST",
        &write_path(),
        &[("Content-Type", "text/plain")],
        b"x",
    );
    assert_eq!(resp.status, 415, "{}", resp.text());
    assert!(verifier.requests().is_empty(), "{:?}", verifier.requests());

    // Grafana's own queries in `grafana.datasource: proxy` mode pass: its data source proxy
    // strips Origin and keeps the browser's Sec-Fetch-Site: same-origin.
    let resp = proxy.send(
        "POST",
        &format!("/workspaces/{WS}/api/v1/query"),
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Sec-Fetch-Site", "same-origin"),
            ("X-Grafana-Org-Id", "1"),
            ("User-Agent", "Grafana/12.1.0"),
        ],
        b"query=up&time=1700000000",
    );
    assert_ne!(resp.status, 403, "{}", resp.text());
    let requests = verifier.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0]["verified"], true, "{requests:?}");
}

#[test]
fn a_duplicated_signed_header_is_refused_before_signing() {
    let verifier = Verifier::start(&[]);
    let proxy = Proxy::start(verifier.addr, &[], &[]);
    let resp = proxy.send(
        "POST",
        &write_path(),
        &[
            ("Content-Type", "application/x-protobuf"),
            ("Content-Type", "text/plain"),
        ],
        b"x",
    );
    assert_eq!(resp.status, 400, "{}", resp.text());
    assert!(
        resp.text().contains("may each appear once"),
        "{}",
        resp.text()
    );
    assert!(verifier.requests().is_empty());
}

#[test]
fn no_rust_log_target_lifts_the_cap_on_third_party_trace_logs() {
    let verifier = Verifier::start(&[]);
    let proxy = Proxy::start(
        verifier.addr,
        &[],
        &[("RUST_LOG", "debug,aws_sigv4::http_request::sign=trace")],
    );
    let resp = proxy.send("GET", &query_path(), &[], b"");
    assert!(resp.status < 500);
    std::thread::sleep(Duration::from_millis(200));
    let log = std::fs::read_to_string(&proxy.log).unwrap();
    assert!(log.contains("DEBUG"), "debug logging is on: {log}");
    assert!(
        !log.lines().any(|l| l.contains(" TRACE aws_sigv4")),
        "trace lines from aws_sigv4:\n{log}"
    );
}

#[test]
fn the_soft_open_files_limit_is_raised_to_the_hard_one() {
    let verifier = Verifier::start(&[]);
    let port = process::free_port();
    let mut cmd = std::process::Command::new("bash");
    cmd.arg("-c")
        .arg("ulimit -Sn 256; exec \"$@\"")
        .arg("bash")
        .arg(env!("CARGO_BIN_EXE_moninit"))
        .args([
            "proxy",
            "--region",
            "us-east-1",
            "--upstream-url-scheme",
            "http",
            "--host",
        ])
        .arg(verifier.addr.to_string())
        .args(["--port", &format!("127.0.0.1:{port}")])
        .env("AWS_ACCESS_KEY_ID", "AKIDMONINITTEST")
        .env("AWS_SECRET_ACCESS_KEY", "x")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    let proxy = process::spawn(cmd, None);
    assert!(process::wait_listening(
        format!("127.0.0.1:{port}").parse().unwrap(),
        Duration::from_secs(10)
    ));
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", proxy.pid())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let f: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(f[3], f[4], "soft limit not raised: {line}");
    assert_ne!(f[3], "256", "{line}");
}

#[test]
fn a_fatal_error_is_printed_once() {
    let work = tempfile::tempdir().unwrap();
    let config = support::write_config(work.path(), "region: us-east-1\nsources: []\n");
    let out = support::moninit(None)
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let text = support::text(&out);
    assert_eq!(
        text.matches("at least one source is needed").count(),
        1,
        "{text}"
    );
}

#[test]
fn metrics_on_a_network_address_are_refused_with_advice_that_helps() {
    let verifier = Verifier::start(&[]);
    let out = support::moninit(None)
        .args([
            "proxy",
            "--region",
            "us-east-1",
            "--upstream-url-scheme",
            "http",
            "--host",
        ])
        .arg(verifier.addr.to_string())
        .args(["--port", &format!("127.0.0.1:{}", process::free_port())])
        .args(["--metrics-listen", "0.0.0.0:9091", "--allow-non-loopback"])
        .output()
        .unwrap();
    let text = support::text(&out);
    assert_eq!(out.status.code(), Some(8), "{text}");
    assert!(
        text.contains("refusing to serve metrics on 0.0.0.0:9091"),
        "{text}"
    );
    assert!(!text.contains("pass --allow-non-loopback"), "{text}");
    let _ = http::get;
}
