//! The `proxy:` section of the agent config.

use serde::Deserialize;

/// Where the embedded signing proxy listens.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Loopback port Prometheus' remote_write (and Grafana in proxy mode) connect to.
    pub port: u16,
}

impl Config {
    /// The port AWS documents for aws-sigv4-proxy in front of AMP, so migrations keep theirs.
    pub const DEFAULT_PORT: u16 = 8005;

    pub fn validate(&self) -> Result<(), String> {
        if self.port == 0 {
            return Err("proxy.port: must be a fixed port (Prometheus' config names it)".into());
        }
        Ok(())
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            port: Self::DEFAULT_PORT,
        }
    }
}
