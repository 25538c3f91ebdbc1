//! The agent config (`/etc/moninit/moninit.yaml`): composes each module's own `Config`,
//! parsed once and validated once; the rest of the code never re-checks raw input.
//!
//! The smallest useful file is three facts: `region` (or `auto`), `workspace_id` (or a
//! `workspace_id` parameter in the sources) and `sources`. Unknown keys are errors with line
//! and column, because a misspelt key silently ignored is a config that does not do what its
//! author believes.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::render::{self, Identity};
use crate::source::{self, imds, Params, SourceUrl};
use crate::{admin, asg, layout, proxy, supervise};

/// Where the config is read from when neither `--config` nor `MONINIT_CONFIG` says.
pub const DEFAULT_PATH: &str = "/etc/moninit/moninit.yaml";

/// The agent config, as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// AWS region, or `auto` to read it from instance metadata (IMDSv2).
    pub region: String,
    /// AMP workspace id (`ws-…`); unset = the `workspace_id` parameter from the sources.
    #[serde(default)]
    pub workspace_id: Option<String>,
    /// Where inputs come from, overlaid in order: `s3://B/P/`, `ssm:/P/`, `file:///D/`.
    pub sources: Vec<SourceUrl>,
    /// AMP endpoint; default `https://aps-workspaces.REGION.amazonaws.com`.
    #[serde(default)]
    pub amp_endpoint: Option<String>,
    /// `cluster` external label; `auto` = the autoscaling group's name, else the instance id.
    #[serde(default = "auto")]
    pub cluster: String,
    /// `__replica__` external label; `auto` = the instance id, else the hostname.
    #[serde(default = "auto")]
    pub replica: String,
    /// How inputs are fetched.
    #[serde(default)]
    pub fetch: source::Config,
    /// Where rendered files and state go.
    #[serde(default)]
    pub output: layout::Config,
    /// Prometheus settings.
    #[serde(default)]
    pub prometheus: render::prometheus::Config,
    /// Grafana settings.
    #[serde(default)]
    pub grafana: render::grafana::Config,
    /// The embedded signing proxy.
    #[serde(default)]
    pub proxy: proxy::Config,
    /// The loopback admin endpoint.
    #[serde(default)]
    pub admin: admin::Config,
    /// Restart and stop policy for the children.
    #[serde(default)]
    pub supervise: supervise::Config,
    /// What moninit tells its autoscaling group.
    #[serde(default)]
    pub autoscaling: asg::Config,
    /// Following the sources after boot.
    #[serde(default)]
    pub watch: crate::watch::Config,
    /// Rule files and the Alertmanager config sent to AMP (agent mode).
    #[serde(default)]
    pub amp: crate::amp::Config,
}

fn auto() -> String {
    "auto".into()
}

/// Why the agent config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    #[error("{0}")]
    Identity(String),
}

impl Config {
    /// Reads, parses and validates the config at `path`.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Read {
            path: path.display().to_string(),
            source: e,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates `text`; `path` only names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, Error> {
        let invalid = |message: String| Error::Invalid {
            path: path.display().to_string(),
            message,
        };
        let config: Config = serde_yaml_ng::from_str(text).map_err(|e| invalid(e.to_string()))?;
        config.validate().map_err(invalid)?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        if self.region.trim().is_empty() {
            return Err("region: must be a region name or `auto`".into());
        }
        if self.sources.is_empty() {
            return Err("sources: at least one source is needed (s3://BUCKET/PREFIX/, ssm:/PATH/, file:///DIR/)".into());
        }
        if let Some(ws) = &self.workspace_id {
            validate_workspace_id(ws)?;
        }
        if let Some(endpoint) = &self.amp_endpoint {
            if !(endpoint.starts_with("https://") || endpoint.starts_with("http://")) {
                return Err(format!("amp_endpoint: `{endpoint}` is not an http(s) URL"));
            }
        }
        for (key, value) in [("cluster", &self.cluster), ("replica", &self.replica)] {
            if value.trim().is_empty() {
                return Err(format!("{key}: must not be empty (use `auto`)"));
            }
        }
        if self.fetch.concurrency == 0 || self.fetch.deadline_secs == 0 {
            return Err("fetch: concurrency and deadline_secs must be positive".into());
        }
        self.prometheus.validate()?;
        self.grafana.validate()?;
        self.proxy.validate()?;
        self.supervise.validate()?;
        self.amp.validate()?;
        if self.amp.sync && self.prometheus.mode != render::prometheus::Mode::Agent {
            return Err("amp.sync: rules go to AMP in agent mode only; with `prometheus.mode: server` Prometheus evaluates them itself".into());
        }
        if self.admin.port == 0 || self.admin.port == self.proxy.port {
            return Err("admin.port: must be a fixed port, different from proxy.port".into());
        }
        Ok(())
    }

    /// Every pinned program archive.
    pub fn pins(&self) -> Vec<&crate::artifact::Pin> {
        self.prometheus
            .archive
            .iter()
            .chain(self.grafana.archive.iter())
            .chain(self.grafana.plugins.iter())
            .collect()
    }

    /// What IMDS must be asked, given which values are `auto`.
    pub fn imds_needs(&self) -> imds::Needs {
        imds::Needs {
            region: self.region == "auto",
            instance_id: self.replica == "auto" || self.cluster == "auto",
            autoscaling_group: self.cluster == "auto",
        }
    }

    /// The region to use: as configured, or the one IMDS reported.
    pub fn region(&self, facts: &imds::Facts) -> Result<String, Error> {
        if self.region != "auto" {
            return Ok(self.region.clone());
        }
        facts
            .region
            .clone()
            .ok_or_else(|| Error::Identity("region is `auto` but IMDS gave no region".into()))
    }

    /// The AMP endpoint for `region`.
    pub fn amp_endpoint(&self, region: &str) -> String {
        match &self.amp_endpoint {
            Some(e) => e.trim_end_matches('/').to_owned(),
            None => format!("https://aps-workspaces.{region}.amazonaws.com"),
        }
    }

    /// Resolves who this node is from the config, IMDS facts and the fetched parameters.
    pub fn identity(
        &self,
        region: &str,
        facts: &imds::Facts,
        params: &Params,
        hostname: &str,
    ) -> Result<Identity, Error> {
        let workspace_id = match &self.workspace_id {
            Some(ws) => ws.clone(),
            None => match params.get("workspace_id") {
                Some(source::ParamValue::Plain { value, origin }) => {
                    validate_workspace_id(value).map_err(|m| Error::Identity(format!("{origin}: {m}")))?;
                    value.clone()
                }
                Some(source::ParamValue::Secret { value, .. }) => value.expose().to_owned(),
                None => {
                    return Err(Error::Identity(
                        "workspace_id: not in the config and no `workspace_id` parameter in the sources".into(),
                    ))
                }
            },
        };
        let instance = facts
            .instance_id
            .clone()
            .unwrap_or_else(|| hostname.to_owned());
        let replica = if self.replica == "auto" {
            instance.clone()
        } else {
            self.replica.clone()
        };
        let cluster = if self.cluster == "auto" {
            facts.autoscaling_group.clone().unwrap_or(instance)
        } else {
            self.cluster.clone()
        };
        Ok(Identity {
            region: region.to_owned(),
            workspace_id,
            cluster,
            replica,
            instance_id: facts.instance_id.clone(),
            availability_zone: facts.availability_zone.clone(),
            autoscaling_group: facts.autoscaling_group.clone(),
            hostname: hostname.to_owned(),
        })
    }
}

fn validate_workspace_id(ws: &str) -> Result<(), String> {
    let ok = ws.starts_with("ws-")
        && ws.len() > 3
        && ws.len() <= 64
        && ws.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "workspace_id: `{ws}` is not an AMP workspace id (ws-…)"
        ))
    }
}

/// The config path: `--config`, else `MONINIT_CONFIG` (clap reads both), else the default.
pub fn path_or_default(path: Option<PathBuf>) -> PathBuf {
    path.unwrap_or_else(|| PathBuf::from(DEFAULT_PATH))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "region: us-east-1\nworkspace_id: ws-0b1c2d3e-aaaa-bbbb-cccc-123456789012\nsources:\n  - s3://my-bucket/monitoring/\n  - ssm:/monitoring/prod/\n";

    #[test]
    fn the_minimal_config_is_enough() {
        let c = Config::parse(MINIMAL, Path::new("m.yaml")).unwrap();
        assert_eq!(c.sources.len(), 2);
        assert_eq!(
            c.amp_endpoint("us-east-1"),
            "https://aps-workspaces.us-east-1.amazonaws.com"
        );
        assert_eq!(c.proxy, proxy::Config::default());
        assert_eq!(c.prometheus.mode, render::prometheus::Mode::Agent);
    }

    #[test]
    fn unknown_keys_are_errors_with_line_and_column() {
        let text = format!("{MINIMAL}prometheus:\n  mdoe: server\n");
        let err = Config::parse(&text, Path::new("m.yaml"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("m.yaml: "), "{err}");
        assert!(
            err.contains("unknown field `mdoe`") && err.contains("line 7 column 3"),
            "{err}"
        );
    }

    #[test]
    fn a_bad_source_url_says_what_forms_exist() {
        let text = MINIMAL.replace("ssm:/monitoring/prod/", "ftp://x/");
        let err = Config::parse(&text, Path::new("m.yaml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("s3://BUCKET/PREFIX/, ssm:/PATH/ or file:///DIR/"),
            "{err}"
        );
    }

    #[test]
    fn identity_falls_back_from_asg_to_instance_to_hostname() {
        let c = Config::parse(
            &MINIMAL.replace(
                "workspace_id: ws-0b1c2d3e-aaaa-bbbb-cccc-123456789012\n",
                "",
            ),
            Path::new("m"),
        )
        .unwrap();
        let mut params = Params::default();
        params
            .insert(
                "workspace_id",
                source::ParamValue::Plain {
                    value: "ws-abc".into(),
                    origin: "/p/workspace_id".into(),
                },
            )
            .unwrap();
        let id = c
            .identity("us-east-1", &imds::Facts::default(), &params, "host1")
            .unwrap();
        assert_eq!(
            (
                id.workspace_id.as_str(),
                id.cluster.as_str(),
                id.replica.as_str()
            ),
            ("ws-abc", "host1", "host1")
        );
        let facts = imds::Facts {
            instance_id: Some("i-1".into()),
            autoscaling_group: Some("asg".into()),
            ..Default::default()
        };
        let id = c.identity("us-east-1", &facts, &params, "host1").unwrap();
        assert_eq!((id.cluster.as_str(), id.replica.as_str()), ("asg", "i-1"));
    }
}
