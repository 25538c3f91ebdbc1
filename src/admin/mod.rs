//! The loopback admin endpoint: `/healthz`, `/readyz` and `/metrics`.

pub mod metrics;
mod server;

pub use server::serve;

use serde::Deserialize;

/// The `admin:` section.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Loopback port for `/healthz`, `/readyz` and `/metrics` (scraped by the rendered
    /// prometheus.yml as job `moninit`).
    pub port: u16,
}

impl Default for Config {
    fn default() -> Self {
        Config { port: 8006 }
    }
}
