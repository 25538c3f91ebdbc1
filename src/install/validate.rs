//! Checks every rendered file before anything is installed.
//!
//! - YAML and JSON files must parse; errors name the template or input file behind them.
//! - Grafana provisioning files must match typed mirrors of Grafana's own structures.
//! - Dashboards need a title; uids must be unique across all dashboards.
//! - `grafana.ini` must be well-formed INI (sections, `key = value`, closed `"""` quotes).
//! - When promtool is found, the Prometheus tree is checked by [`super::promtool`].
//!
//! Any message that could quote file contents is passed through the secret registry.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::grafana_schema;
use super::Error;
use crate::layout;
use crate::render::OutputFile;
use crate::secret;

/// What validation needs to know beyond the files.
#[derive(Clone, Debug)]
pub struct Options {
    /// promtool to run; `None` skips the check (logged).
    pub promtool: Option<PathBuf>,
    /// Prometheus runs in agent mode.
    pub agent: bool,
    /// Scrape job name → the input file it came from ([`crate::render::job_origins`]).
    pub job_origins: BTreeMap<String, String>,
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
        Some(promtool) => {
            super::promtool::check(promtool, files, options.agent, &options.job_origins).await
        }
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
