//! Snapshot + templates → rendered files, in memory. Pure: no I/O, no clock, no environment,
//! so the same inputs always give byte-identical output (golden tests rely on it).
//!
//! Templates are Tera. Built-ins are compiled into the binary from `templates/`; an input
//! file `templates/NAME.tera` replaces the built-in NAME (or adds a template others can
//! include). Rendering is strict: an undefined variable is an error naming the template, its
//! origin and the line where the variable is used.

pub mod grafana;
pub(crate) mod inputs;
pub mod prometheus;
mod templates;

use std::path::PathBuf;

use serde_json::json;

use crate::layout::{self, Layout};
use crate::source::{Snapshot, SourceUrl};

pub use templates::BUILTIN;

/// Who this node is: resolved once from the config, IMDS and parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub region: String,
    pub workspace_id: String,
    /// `cluster` external label: same for every replica of one autoscaling group.
    pub cluster: String,
    /// `__replica__` external label: unique per instance.
    pub replica: String,
    pub instance_id: Option<String>,
    pub availability_zone: Option<String>,
    pub autoscaling_group: Option<String>,
    pub hostname: String,
}

/// Everything rendering needs besides the snapshot.
#[derive(Clone, Debug)]
pub struct Settings<'a> {
    pub identity: &'a Identity,
    pub sources: &'a [SourceUrl],
    pub amp_endpoint: &'a str,
    pub proxy_port: u16,
    pub admin_port: u16,
    pub prometheus: &'a prometheus::Config,
    pub grafana: &'a grafana::Config,
    /// Grafana's major version, already resolved (config, binary, or assumed).
    pub grafana_version: u32,
    /// The AMP data source plugin is provisioned from a pinned archive.
    pub amp_plugin: bool,
    pub layout: &'a Layout,
}

/// One rendered file, relative to the config dir.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputFile {
    pub path: PathBuf,
    pub contents: Vec<u8>,
    /// The template or input file it came from, for error messages.
    pub origin: String,
    /// Holds a secret value: installed 0600/0640, never shown unmasked.
    pub secret: bool,
}

impl OutputFile {
    pub fn new(path: impl Into<PathBuf>, contents: Vec<u8>, origin: &str) -> Self {
        OutputFile {
            path: path.into(),
            contents,
            origin: origin.to_owned(),
            secret: false,
        }
    }
}

/// Why rendering failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{origin}: {message}")]
    Input { origin: String, message: String },
    #[error("template `{name}` ({origin}){line}: {message}", line = line.map(|l| format!(", line {l}")).unwrap_or_default())]
    Template {
        name: String,
        origin: String,
        line: Option<usize>,
        message: String,
    },
}

/// What rendering produced.
#[derive(Clone, Debug)]
pub struct Rendered {
    pub files: Vec<OutputFile>,
    /// Which input file each scrape job came from (job name → origin), so that an error
    /// found later in the rendered `prometheus.yml` can name the file a user has to fix.
    pub job_origins: std::collections::BTreeMap<String, String>,
}

/// Renders every output file.
pub fn render(snapshot: &Snapshot, settings: &Settings<'_>) -> Result<Rendered, Error> {
    let server_mode = settings.prometheus.mode == prometheus::Mode::Server;
    let scrape_configs = inputs::scrape_configs(snapshot)?;
    let rules = inputs::rule_files(snapshot, server_mode)?;
    let dashboards = inputs::dashboards(snapshot)?;
    let overrides = inputs::templates(snapshot)?;

    let rule_names: Vec<String> = rules
        .iter()
        .filter_map(|f| f.path.strip_prefix(layout::PROMETHEUS_DIR).ok())
        .map(|p| p.display().to_string())
        .collect();
    let mut job_origins = std::collections::BTreeMap::new();
    let scrape_configs = scrape_configs
        .into_iter()
        .map(|s| {
            job_origins.insert(s.job, s.origin);
            s.config
        })
        .collect();
    let context = context(snapshot, settings, scrape_configs, rule_names);
    let engine = templates::Engine::new(overrides)?;

    let mut files = Vec::new();
    for (name, path) in [
        ("prometheus.yml", layout::PROMETHEUS_YML),
        ("grafana.ini", layout::GRAFANA_INI),
        ("grafana-datasources.yaml", layout::GRAFANA_DATASOURCES),
        (
            "grafana-dashboards.yaml",
            layout::GRAFANA_DASHBOARD_PROVIDERS,
        ),
    ] {
        let mut text = engine.render(name, &context)?;
        if !text.ends_with('\n') {
            text.push('\n');
        }
        files.push(OutputFile::new(
            path,
            text.into_bytes(),
            &engine.origin(name),
        ));
    }
    files.extend(rules);
    files.extend(dashboards);
    // Secret-ness follows from the inputs alone (no global state): a file holding any secret
    // parameter, as is or escaped, is private.
    let secrets = snapshot.params.secrets();
    for file in &mut files {
        file.secret = std::str::from_utf8(&file.contents)
            .is_ok_and(|t| secrets.iter().any(|s| s.appears_in(t)));
    }
    Ok(Rendered { files, job_origins })
}

fn context(
    snapshot: &Snapshot,
    s: &Settings<'_>,
    scrape_configs: Vec<serde_json::Value>,
    rule_files: Vec<String>,
) -> tera::Context {
    let id = s.identity;
    let endpoint = s.amp_endpoint.trim_end_matches('/');
    let workspace_path = format!("/workspaces/{}/", id.workspace_id);
    let proxy_url = format!("http://127.0.0.1:{}", s.proxy_port);
    let native = s.grafana.datasource == grafana::DatasourceMode::Native;
    let value = json!({
        "region": id.region,
        "workspace_id": id.workspace_id,
        "cluster": id.cluster,
        "replica": id.replica,
        "instance": {
            "id": id.instance_id,
            "availability_zone": id.availability_zone,
            "autoscaling_group": id.autoscaling_group,
            "hostname": id.hostname,
        },
        "sources": s.sources.iter().map(|x| x.to_string()).collect::<Vec<_>>(),
        "amp": {
            "endpoint": endpoint,
            "workspace_url": format!("{endpoint}{workspace_path}"),
            "remote_write_url": format!("{endpoint}{workspace_path}api/v1/remote_write"),
        },
        "proxy": {
            "port": s.proxy_port,
            "url": proxy_url,
            "workspace_url": format!("{proxy_url}{workspace_path}"),
            "remote_write_url": format!("{proxy_url}{workspace_path}api/v1/remote_write"),
        },
        "admin": {
            "port": s.admin_port,
            "url": format!("http://127.0.0.1:{}", s.admin_port),
        },
        "prometheus": {
            "mode": s.prometheus.mode,
            "listen": s.prometheus.listen,
            "scrape_moninit": s.prometheus.scrape_moninit,
            "scrape_interval": s.prometheus.scrape_interval,
            "scrape_timeout": s.prometheus.scrape_timeout,
            "evaluation_interval": s.prometheus.evaluation_interval,
            "external_labels": s.prometheus.external_labels,
            "queue": s.prometheus.queue,
            "scrape_configs": scrape_configs,
            "rule_files": rule_files,
        },
        "grafana": {
            "version": s.grafana_version,
            "datasource_mode": s.grafana.datasource,
            "datasource_type": grafana::datasource_type(s.grafana_version, s.grafana.datasource, s.amp_plugin),
            "plugins_pinned": !s.grafana.plugins.is_empty(),
            "datasource_name": s.grafana.datasource_name,
            "datasource_uid": s.grafana.datasource_uid,
            "datasource_url": if native { format!("{endpoint}{workspace_path}") } else { format!("{proxy_url}{workspace_path}") },
            "sigv4_auth_type": s.grafana.sigv4_auth_type,
            "http_addr": s.grafana.http_addr,
            "http_port": s.grafana.http_port,
            "admin_user": s.grafana.admin_user,
        },
        "paths": s.layout.to_json(),
        "params": snapshot.params.to_json(),
        "files": inputs::other_files(snapshot),
    });
    tera::Context::from_value(value).expect("the context is a JSON object")
}
