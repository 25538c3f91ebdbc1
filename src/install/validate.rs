//! Checks every rendered file before anything is installed.
//!
//! - YAML and JSON files must parse; errors name the template or input file behind them.
//! - Grafana provisioning files must match typed mirrors of Grafana's own structures.
//! - Dashboards need a title; uids must be unique across all dashboards.
//! - `grafana.ini` must be well-formed INI (sections, `key = value`, closed `"""` quotes).
//! - When promtool is found, the Prometheus tree is written to a private temporary directory
//!   and checked with `promtool check config` (`--agent` in agent mode), exactly as
//!   Prometheus will read it, rule files included.
//!
//! Any message that could quote file contents is passed through the secret registry.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::grafana_schema;
use super::Error;
use crate::layout;
use crate::render::OutputFile;
use crate::secret;

/// How long promtool may take before validation fails.
const PROMTOOL_TIMEOUT: Duration = Duration::from_secs(20);

/// What validation needs to know beyond the files.
#[derive(Clone, Debug)]
pub struct Options {
    /// promtool to run; `None` skips the check (logged).
    pub promtool: Option<PathBuf>,
    /// Prometheus runs in agent mode.
    pub agent: bool,
}

fn invalid(file: &OutputFile, message: impl AsRef<str>) -> Error {
    Error::Invalid {
        path: file.path.display().to_string(),
        origin: file.origin.clone(),
        message: secret::mask(message.as_ref()),
    }
}

/// Validates all files; returns the first problem found.
pub async fn validate(files: &[OutputFile], options: &Options) -> Result<(), Error> {
    let mut dashboard_uids: BTreeMap<String, String> = BTreeMap::new();
    for file in files {
        let path = file.path.to_string_lossy();
        let text =
            std::str::from_utf8(&file.contents).map_err(|_| invalid(file, "not UTF-8 text"))?;
        if path == layout::GRAFANA_DATASOURCES {
            let d: grafana_schema::Datasources = parse_yaml(file, text)?;
            grafana_schema::check_datasources(&d).map_err(|m| invalid(file, m))?;
        } else if path == layout::GRAFANA_DASHBOARD_PROVIDERS {
            let d: grafana_schema::DashboardProviders = parse_yaml(file, text)?;
            grafana_schema::check_dashboard_providers(&d).map_err(|m| invalid(file, m))?;
        } else if path == layout::GRAFANA_INI {
            check_ini(text).map_err(|m| invalid(file, m))?;
        } else if path.ends_with(".json") {
            check_dashboard(file, text, &mut dashboard_uids)?;
        } else if path.ends_with(".yml") || path.ends_with(".yaml") {
            parse_yaml::<serde_yaml_ng::Value>(file, text)?;
        }
    }
    match &options.promtool {
        Some(promtool) => promtool_check(promtool, files, options.agent).await,
        None => {
            tracing::info!("promtool not found; Prometheus config checked for YAML syntax only");
            Ok(())
        }
    }
}

fn parse_yaml<T: serde::de::DeserializeOwned>(file: &OutputFile, text: &str) -> Result<T, Error> {
    serde_yaml_ng::from_str(text).map_err(|e| invalid(file, format!("invalid: {e}")))
}

fn check_dashboard(
    file: &OutputFile,
    text: &str,
    uids: &mut BTreeMap<String, String>,
) -> Result<(), Error> {
    let doc: serde_json::Value =
        serde_json::from_str(text).map_err(|e| invalid(file, format!("invalid JSON: {e}")))?;
    let obj = doc
        .as_object()
        .ok_or_else(|| invalid(file, "a dashboard must be a JSON object"))?;
    match obj.get("title").and_then(|t| t.as_str()) {
        Some(t) if !t.trim().is_empty() => {}
        _ => return Err(invalid(file, "dashboard has no `title`")),
    }
    if let Some(uid) = obj.get("uid").and_then(|u| u.as_str()) {
        if uid.len() > 40 {
            return Err(invalid(
                file,
                format!("dashboard uid `{uid}` is longer than 40 characters"),
            ));
        }
        if let Some(other) = uids.insert(uid.to_owned(), file.origin.clone()) {
            return Err(invalid(
                file,
                format!("dashboard uid `{uid}` is also used by {other}"),
            ));
        }
    }
    Ok(())
}

/// Grafana's INI dialect (go-ini): `[section]`, `key = value`, `;`/`#` comments, and
/// `"""` quoting for values containing `#` or `;`.
fn check_ini(text: &str) -> Result<(), String> {
    let mut saw_section = false;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
            continue;
        }
        if line.starts_with('[') {
            if !line.ends_with(']') || line.len() < 3 {
                return Err(format!("line {n}: malformed section header"));
            }
            saw_section = true;
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!("line {n}: expected `key = value`"));
        };
        if key.trim().is_empty() {
            return Err(format!("line {n}: empty key"));
        }
        if !saw_section {
            return Err(format!(
                "line {n}: key `{}` before any [section]",
                key.trim()
            ));
        }
        let value = value.trim();
        if value.starts_with("\"\"\"") && (value.len() < 6 || !value.ends_with("\"\"\"")) {
            return Err(format!("line {n}: `{}`: unclosed \"\"\" quote", key.trim()));
        }
    }
    Ok(())
}

async fn promtool_check(promtool: &Path, files: &[OutputFile], agent: bool) -> Result<(), Error> {
    let dir = tempfile::Builder::new()
        .prefix("moninit-check-")
        .tempdir()
        .map_err(|e| Error::Io {
            path: std::env::temp_dir().display().to_string(),
            source: e,
        })?;
    let io = |path: &Path, e| Error::Io {
        path: path.display().to_string(),
        source: e,
    };
    for file in files
        .iter()
        .filter(|f| f.path.starts_with(layout::PROMETHEUS_DIR))
    {
        let dest = dir.path().join(&file.path);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
        }
        super::atomic::write_private(&dest, &file.contents).map_err(|e| io(&dest, e))?;
    }
    let config = dir.path().join(layout::PROMETHEUS_YML);
    let mut cmd = tokio::process::Command::new(promtool);
    cmd.arg("check").arg("config");
    if agent {
        cmd.arg("--agent");
    }
    cmd.arg(&config)
        .kill_on_drop(true)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd
        .spawn()
        .map_err(|e| Error::Promtool(format!("running {}: {e}", promtool.display())))?;
    let _tracked = crate::supervise::reaper::track(child.id());
    let output = tokio::time::timeout(PROMTOOL_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| {
            Error::Promtool(format!(
                "promtool did not finish within {} s",
                PROMTOOL_TIMEOUT.as_secs()
            ))
        })?
        .map_err(|e| Error::Promtool(format!("running {}: {e}", promtool.display())))?;
    if output.status.success() {
        tracing::debug!("promtool check config passed");
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    // Show the paths as the user knows them, not the temporary copy.
    let text = text.replace(&format!("{}/", dir.path().display()), "");
    let detail: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    Err(Error::Promtool(secret::mask(&format!(
        "promtool check config{} rejected {}: {}",
        if agent { " --agent" } else { "" },
        layout::PROMETHEUS_YML,
        detail.join("; ")
    ))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ini_accepts_grafana_syntax_and_rejects_broken_lines() {
        assert!(check_ini("; c\n[auth]\nsigv4_auth_enabled = true\n[security]\nadmin_password = \"\"\"#x;\"\"\"\n").is_ok());
        assert!(check_ini("key = 1\n")
            .unwrap_err()
            .contains("before any [section]"));
        assert!(check_ini("[a]\nnot a pair\n")
            .unwrap_err()
            .contains("line 2"));
        assert!(check_ini("[a]\np = \"\"\"open\n")
            .unwrap_err()
            .contains("unclosed"));
    }

    #[test]
    fn duplicate_dashboard_uids_name_both_files() {
        let mut uids = BTreeMap::new();
        let a = OutputFile::new(
            "grafana/dashboards/a.json",
            br#"{"title":"A","uid":"x"}"#.to_vec(),
            "s3://b/a.json",
        );
        let b = OutputFile::new(
            "grafana/dashboards/b.json",
            br#"{"title":"B","uid":"x"}"#.to_vec(),
            "s3://b/b.json",
        );
        check_dashboard(&a, std::str::from_utf8(&a.contents).unwrap(), &mut uids).unwrap();
        let err = check_dashboard(&b, std::str::from_utf8(&b.contents).unwrap(), &mut uids)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("s3://b/b.json") && err.contains("s3://b/a.json"),
            "{err}"
        );
    }
}
