//! Golden tests of the built-in templates: the examples rendered with fixed settings must
//! match `tests/golden/CASE/` byte for byte. After an intended template change, regenerate
//! with `UPDATE_GOLDEN=1 cargo test --test it golden` and review the diff.

use std::path::{Path, PathBuf};

use moninit::layout::{self, Layout};
use moninit::render::{self, grafana, prometheus, Identity};
use moninit::source::{self, SourceUrl};

fn identity() -> Identity {
    Identity {
        region: "eu-west-1".into(),
        workspace_id: "ws-0b1c2d3e-aaaa-bbbb-cccc-123456789012".into(),
        cluster: "monitoring-asg".into(),
        replica: "i-0123456789abcdef0".into(),
        instance_id: Some("i-0123456789abcdef0".into()),
        availability_zone: Some("eu-west-1a".into()),
        autoscaling_group: Some("monitoring-asg".into()),
        hostname: "ip-10-0-0-1".into(),
    }
}

fn check(
    case: &str,
    prometheus: prometheus::Config,
    grafana: grafana::Config,
    grafana_version: u32,
    inputs: &Path,
) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let snapshot = runtime
        .block_on(source::file::fetch(inputs, &source::Config::default()))
        .unwrap();
    let layout = Layout::new(&layout::Config::default());
    let sources = [
        SourceUrl::parse("s3://golden-bucket/monitoring/").unwrap(),
        SourceUrl::parse("ssm:/monitoring/prod/").unwrap(),
    ];
    let id = identity();
    let settings = render::Settings {
        identity: &id,
        sources: &sources,
        amp_endpoint: "https://aps-workspaces.eu-west-1.amazonaws.com",
        proxy_port: 8005,
        admin_port: 8006,
        prometheus: &prometheus,
        grafana: &grafana,
        grafana_version,
        amp_plugin: false,
        layout: &layout,
    };
    let files = render::render(&snapshot, &settings).unwrap().files;
    let golden = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(case);
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    for name in [
        layout::PROMETHEUS_YML,
        layout::GRAFANA_INI,
        layout::GRAFANA_DATASOURCES,
        layout::GRAFANA_DASHBOARD_PROVIDERS,
    ] {
        let file = files.iter().find(|f| f.path == Path::new(name)).unwrap();
        let path = golden.join(name);
        if update {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &file.contents).unwrap();
            continue;
        }
        let want =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let got = String::from_utf8(file.contents.clone()).unwrap();
        assert_eq!(got, want, "{case}/{name} differs from its golden file");
    }
}

#[test]
fn golden_agent_mode_with_grafana_12_native_sigv4() {
    check(
        "native-grafana12",
        prometheus::Config::default(),
        grafana::Config::default(),
        12,
        &crate::support::examples(),
    );
}

#[test]
fn golden_grafana_13_uses_the_amazon_prometheus_plugin() {
    check(
        "native-grafana13",
        prometheus::Config::default(),
        grafana::Config::default(),
        13,
        &crate::support::examples(),
    );
}

#[test]
fn golden_server_mode_with_rules_and_grafana_through_the_proxy() {
    let inputs = crate::support::inputs_copy();
    std::fs::create_dir_all(inputs.path().join("prometheus/rules")).unwrap();
    std::fs::write(
        inputs.path().join("prometheus/rules/up.yml"),
        "groups: []\n",
    )
    .unwrap();
    let prom = prometheus::Config {
        mode: prometheus::Mode::Server,
        external_labels: [("team".to_owned(), "sre".to_owned())].into(),
        ..Default::default()
    };
    let graf = grafana::Config {
        datasource: grafana::DatasourceMode::Proxy,
        ..Default::default()
    };
    check("server-proxy", prom, graf, 13, inputs.path());
}
