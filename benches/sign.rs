//! Criterion benchmarks of the proxy's per-request work: SHA-256 of remote_write-sized
//! bodies (the bound the proxy is measured against), query canonicalisation, and signing.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use moninit::proxy::sign::{canonical_query, Payload, Signer};
use sha2::{Digest, Sha256};

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("sha256");
    for size in [64 * 1024, 1024 * 1024] {
        let body = vec![0x5au8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &body, |b, body| {
            b.iter(|| hex::encode(Sha256::digest(body)))
        });
    }
    group.finish();

    let signer = Signer {
        service: "aps".into(),
        region: "us-east-1".into(),
        content_sha256_header: true,
    };
    let credentials =
        Credentials::new("AKIDEXAMPLE", "secret", Some("token".into()), None, "bench");
    let hash = hex::encode(Sha256::digest(b"body"));
    let uri =
        "https://aps-workspaces.us-east-1.amazonaws.com/workspaces/ws-0b1c2d3e/api/v1/remote_write";
    c.bench_function("sign remote_write", |b| {
        b.iter(|| {
            let headers = [
                ("host", "aps-workspaces.us-east-1.amazonaws.com"),
                ("content-type", "application/x-protobuf"),
                ("content-encoding", "snappy"),
            ];
            signer
                .sign(
                    "POST",
                    uri,
                    headers.into_iter(),
                    Payload::Sha256(&hash),
                    &credentials,
                    SystemTime::now(),
                )
                .unwrap()
        })
    });
    let raw = "query=sum+by+(job)+(rate(http_requests_total%7Bjob%3D~%22api%7Cweb%22%7D%5B5m%5D))&start=1&end=2&step=15";
    c.bench_function("canonical_query promql", |b| {
        b.iter(|| canonical_query(raw))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
