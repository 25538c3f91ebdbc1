//! Where everything moninit writes lives: one place, so that `--root`, the README and the
//! templates cannot disagree.
//!
//! Defaults follow the FHS: rendered configuration under `/etc/moninit/rendered/` (next to
//! the agent's own config, where an operator looks first), state (Prometheus WAL, Grafana
//! database) under `/var/lib/moninit/`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Output locations, from the `output:` section of the agent config.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directory that receives every rendered file.
    pub config_dir: PathBuf,
    /// Directory for state: Prometheus' WAL and Grafana's database.
    pub state_dir: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            config_dir: PathBuf::from(Self::DEFAULT_CONFIG_DIR),
            state_dir: PathBuf::from(Self::DEFAULT_STATE_DIR),
        }
    }
}

impl Config {
    pub const DEFAULT_CONFIG_DIR: &str = "/etc/moninit/rendered";
    pub const DEFAULT_STATE_DIR: &str = "/var/lib/moninit";
}

/// Relative paths of the rendered files under the config dir.
pub const PROMETHEUS_YML: &str = "prometheus/prometheus.yml";
pub const GRAFANA_INI: &str = "grafana/grafana.ini";
pub const GRAFANA_DATASOURCES: &str = "grafana/provisioning/datasources/moninit.yaml";
pub const GRAFANA_DASHBOARD_PROVIDERS: &str = "grafana/provisioning/dashboards/moninit.yaml";
pub const PROMETHEUS_DIR: &str = "prometheus";
pub const GRAFANA_PROVISIONING_DIR: &str = "grafana/provisioning";
pub const GRAFANA_DASHBOARDS_DIR: &str = "grafana/dashboards";

/// Absolute paths, resolved once from [`Config`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub config_dir: PathBuf,
    pub state_dir: PathBuf,
}

impl Layout {
    pub fn new(config: &Config) -> Self {
        Layout {
            config_dir: config.config_dir.clone(),
            state_dir: config.state_dir.clone(),
        }
    }

    /// Every default path moved under `root` (`moninit run --root DIR`), so moninit runs
    /// unprivileged anywhere: `/etc/moninit/rendered` becomes `DIR/etc/moninit/rendered`.
    pub fn rooted(config: &Config, root: &Path) -> Self {
        let under = |p: &Path| root.join(p.strip_prefix("/").unwrap_or(p));
        Layout {
            config_dir: under(&config.config_dir),
            state_dir: under(&config.state_dir),
        }
    }

    /// The same layout with the rendered files under `dir` (as `moninit render --out DIR`).
    pub fn with_config_dir(&self, dir: &Path) -> Self {
        Layout {
            config_dir: dir.to_owned(),
            state_dir: self.state_dir.clone(),
        }
    }

    pub fn rendered(&self, relative: &str) -> PathBuf {
        self.config_dir.join(relative)
    }

    pub fn state(&self, relative: &str) -> PathBuf {
        self.state_dir.join(relative)
    }

    /// The paths templates see, as `paths.*`.
    pub fn to_json(&self) -> serde_json::Value {
        let s = |p: PathBuf| serde_json::Value::String(p.display().to_string());
        serde_json::json!({
            "config_dir": s(self.config_dir.clone()),
            "state_dir": s(self.state_dir.clone()),
            "prometheus_config": s(self.rendered(PROMETHEUS_YML)),
            "prometheus_dir": s(self.rendered(PROMETHEUS_DIR)),
            "prometheus_data": s(self.state("prometheus")),
            "grafana_ini": s(self.rendered(GRAFANA_INI)),
            "grafana_provisioning": s(self.rendered(GRAFANA_PROVISIONING_DIR)),
            "grafana_dashboards": s(self.rendered(GRAFANA_DASHBOARDS_DIR)),
            "grafana_data": s(self.state("grafana")),
            "grafana_logs": s(self.state("grafana/logs")),
            "grafana_plugins": s(self.state("grafana/plugins")),
        })
    }
}
