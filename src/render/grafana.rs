//! Grafana settings (the `grafana:` section of the agent config) and the choices that depend
//! on Grafana's version.
//!
//! Grafana 13 removed SigV4 from its core Prometheus data source; from 13 on, the AMP data
//! source is the `grafana-amazonprometheus-datasource` plugin, which reads the same `jsonData`
//! SigV4 keys.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// How the Grafana data source reaches AMP.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DatasourceMode {
    /// Grafana signs its own queries with SigV4 (`sigv4_auth_enabled`, `jsonData.sigV4Auth`).
    #[default]
    Native,
    /// Grafana queries moninit's loopback signing proxy, unsigned.
    Proxy,
}

/// Whether moninit runs Grafana.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Enabled {
    /// Run it when its binary is found; otherwise say so and go on.
    #[default]
    Auto,
    /// Run it; its absence is an error.
    True,
    /// Never run it (files are still rendered).
    False,
}

/// The `grafana:` section.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `auto` (default), `true` or `false`.
    pub enabled: Enabled,
    /// Grafana's home (static files, default config): `--homepath`.
    pub homepath: PathBuf,
    /// Extra command-line flags for Grafana.
    pub extra_args: Vec<String>,
    /// Grafana's major version, which picks the data source type; unset = detected from the
    /// binary, or [`Config::ASSUMED_VERSION`] when there is none.
    pub version: Option<u32>,
    /// The Grafana binary; unset = `grafana` then `grafana-server` on PATH.
    pub binary: Option<PathBuf>,
    /// A pinned release archive (`{url, sha256}`) whose top directory is Grafana's homepath;
    /// when set it wins over `binary` and `homepath`.
    pub archive: Option<crate::artifact::Pin>,
    /// Pinned plugin zips (`[{url, sha256}, …]`), each a directory named by the plugin id,
    /// linked into Grafana's plugins directory.
    pub plugins: Vec<crate::artifact::Pin>,
    /// `native` (default) or `proxy`.
    pub datasource: DatasourceMode,
    /// The data source's name in Grafana.
    pub datasource_name: String,
    /// The data source's uid (dashboards refer to it).
    pub datasource_uid: String,
    /// `jsonData.sigV4AuthType` in native mode: `default` (the AWS SDK chain) or `ec2_iam_role`.
    pub sigv4_auth_type: String,
    /// `[server] http_addr`; empty = all interfaces.
    pub http_addr: String,
    /// `[server] http_port`.
    pub http_port: u16,
    /// `[security] admin_user`; the password comes from the `grafana/admin_password` parameter.
    pub admin_user: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enabled: Enabled::Auto,
            homepath: PathBuf::from("/usr/share/grafana"),
            extra_args: Vec::new(),
            version: None,
            binary: None,
            archive: None,
            plugins: Vec::new(),
            datasource: DatasourceMode::Native,
            datasource_name: "Amazon Managed Prometheus".into(),
            datasource_uid: "amp".into(),
            sigv4_auth_type: "default".into(),
            http_addr: String::new(),
            http_port: 3000,
            admin_user: "admin".into(),
        }
    }
}

impl Config {
    /// The version assumed when neither the config nor a binary tells.
    pub const ASSUMED_VERSION: u32 = 12;

    pub fn validate(&self) -> Result<(), String> {
        const AUTH_TYPES: [&str; 5] = [
            "default",
            "ec2_iam_role",
            "keys",
            "credentials",
            "grafana_assume_role",
        ];
        if !AUTH_TYPES.contains(&self.sigv4_auth_type.as_str()) {
            return Err(format!(
                "grafana.sigv4_auth_type: `{}` is not one of {}",
                self.sigv4_auth_type,
                AUTH_TYPES.join(", ")
            ));
        }
        if self.datasource_uid.is_empty() || self.datasource_uid.len() > 40 {
            return Err("grafana.datasource_uid: must be 1 to 40 characters".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for pin in &self.plugins {
            if !seen.insert(pin.sha256.clone()) {
                return Err(format!(
                    "grafana.plugins: the archive with sha256 {} is pinned twice",
                    pin.sha256
                ));
            }
        }
        Ok(())
    }
}

/// The AMP data source plugin's id.
pub const AMP_PLUGIN: &str = "grafana-amazonprometheus-datasource";

/// The data source `type` for a Grafana major version and mode, and whether the AMP plugin
/// is provisioned: from 13 on the plugin is the only native SigV4 data source; on 12 it is
/// used when moninit provisions it (Grafana 12 would otherwise fetch it from the internet).
pub fn datasource_type(version: u32, mode: DatasourceMode, amp_plugin: bool) -> &'static str {
    match mode {
        DatasourceMode::Native if version >= 13 || (version >= 12 && amp_plugin) => AMP_PLUGIN,
        _ => "prometheus",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grafana_13_signs_through_the_amazon_prometheus_plugin() {
        assert_eq!(
            datasource_type(12, DatasourceMode::Native, false),
            "prometheus"
        );
        assert_eq!(
            datasource_type(12, DatasourceMode::Native, true),
            AMP_PLUGIN
        );
        assert_eq!(
            datasource_type(11, DatasourceMode::Native, true),
            "prometheus"
        );
        assert_eq!(
            datasource_type(13, DatasourceMode::Native, false),
            AMP_PLUGIN
        );
        assert_eq!(
            datasource_type(13, DatasourceMode::Proxy, true),
            "prometheus"
        );
    }
}
