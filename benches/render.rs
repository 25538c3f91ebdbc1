//! Criterion benchmark of the pure render step: the examples snapshot → every output file.

use criterion::{criterion_group, criterion_main, Criterion};

use moninit::layout::{self, Layout};
use moninit::render::{self, grafana, prometheus, Identity};
use moninit::source::{self, SourceUrl};

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let inputs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/inputs");
    let snapshot = runtime
        .block_on(source::file::fetch(&inputs, &source::Config::default()))
        .unwrap();
    let identity = Identity {
        region: "us-east-1".into(),
        workspace_id: "ws-0b1c2d3e-aaaa-bbbb-cccc-123456789012".into(),
        cluster: "bench".into(),
        replica: "i-0".into(),
        instance_id: None,
        availability_zone: None,
        autoscaling_group: None,
        hostname: "bench".into(),
    };
    let layout = Layout::new(&layout::Config::default());
    let sources = [SourceUrl::parse("s3://bench/monitoring/").unwrap()];
    let (prom, graf) = (prometheus::Config::default(), grafana::Config::default());
    let settings = render::Settings {
        identity: &identity,
        sources: &sources,
        amp_endpoint: "https://aps-workspaces.us-east-1.amazonaws.com",
        proxy_port: 8005,
        admin_port: 8006,
        prometheus: &prom,
        grafana: &graf,
        grafana_version: 12,
        amp_plugin: false,
        layout: &layout,
    };
    c.bench_function("render examples", |b| {
        b.iter(|| render::render(&snapshot, &settings).unwrap().files)
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
