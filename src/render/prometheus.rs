//! Prometheus settings (the `prometheus:` section of the agent config) and their template
//! values.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// How Prometheus runs.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Agent mode: scrape and remote-write only; AMP is the storage. No rules, no queries.
    #[default]
    Agent,
    /// Full server: local TSDB, rule evaluation (rule files from `prometheus/rules/`).
    Server,
}

/// remote_write `queue_config`, defaulting to the values AWS recommends for AMP.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Queue {
    pub capacity: u32,
    pub max_shards: u32,
    pub max_samples_per_send: u32,
    /// Prometheus duration, e.g. `5s`.
    pub batch_send_deadline: String,
}

impl Default for Queue {
    fn default() -> Self {
        Queue {
            capacity: 2500,
            max_shards: 200,
            max_samples_per_send: 1000,
            batch_send_deadline: "5s".into(),
        }
    }
}

/// The `prometheus:` section.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `agent` (default) or `server`.
    pub mode: Mode,
    /// The Prometheus binary (a name on PATH or an absolute path).
    pub binary: PathBuf,
    /// A pinned release archive (`{url, sha256}`) holding `prometheus` and `promtool`; when
    /// set it wins over `binary` and `promtool`.
    pub archive: Option<crate::artifact::Pin>,
    /// promtool, used to validate the rendered config when it is found.
    pub promtool: PathBuf,
    /// `global.scrape_interval`.
    pub scrape_interval: String,
    /// `global.scrape_timeout`; unset = Prometheus' own default (10s, or the interval if
    /// shorter).
    pub scrape_timeout: Option<String>,
    /// `global.evaluation_interval` (server mode).
    pub evaluation_interval: String,
    /// Extra `global.external_labels`, beside `cluster` and `__replica__`.
    pub external_labels: BTreeMap<String, String>,
    /// remote_write queue tuning.
    pub queue: Queue,
    /// `--web.listen-address` (loopback: Prometheus' UI and API are not for the network).
    pub listen: String,
    /// `--storage.remote.flush-deadline`: how long a stopping Prometheus keeps flushing.
    pub flush_deadline: String,
    /// Scrape moninit's own `/metrics` (job `moninit`).
    pub scrape_moninit: bool,
    /// Extra command-line flags for Prometheus.
    pub extra_args: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mode: Mode::Agent,
            binary: PathBuf::from("prometheus"),
            archive: None,
            promtool: PathBuf::from("promtool"),
            scrape_interval: "30s".into(),
            scrape_timeout: None,
            evaluation_interval: "30s".into(),
            external_labels: BTreeMap::new(),
            queue: Queue::default(),
            listen: "127.0.0.1:9090".into(),
            flush_deadline: "10s".into(),
            scrape_moninit: true,
            extra_args: Vec::new(),
        }
    }
}

impl Config {
    /// Checks that a user can act on, done once at load.
    pub fn validate(&self) -> Result<(), String> {
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(format!(
                "prometheus.listen: `{}` is not ADDRESS:PORT",
                self.listen
            ));
        }
        for reserved in ["cluster", "__replica__"] {
            if self.external_labels.contains_key(reserved) {
                return Err(format!(
                    "prometheus.external_labels.{reserved}: set by moninit for AMP deduplication; use the top-level `{}` key",
                    if reserved == "cluster" { "cluster" } else { "replica" }
                ));
            }
        }
        Ok(())
    }
}
