//! Turns input files into the pieces templates use: merged scrape configs, rule files and
//! dashboards, each checked enough that an error can name the input file that caused it.

use std::collections::BTreeMap;

use serde_json::Value as Json;
use serde_yaml_ng::Value as Yaml;

use super::{Error, OutputFile};
use crate::source::{InputFile, Snapshot};

pub const SCRAPE_CONFIGS_DIR: &str = "prometheus/scrape_configs/";
pub const RULES_DIR: &str = "prometheus/rules/";
pub const DASHBOARDS_DIR: &str = "grafana/dashboards/";
pub const TEMPLATES_DIR: &str = "templates/";

fn is_yaml(path: &str) -> bool {
    path.ends_with(".yml") || path.ends_with(".yaml")
}

/// Files directly under `dir` (not in subdirectories) with a YAML extension, in path order.
fn yaml_files_in<'a>(
    snapshot: &'a Snapshot,
    dir: &'a str,
) -> impl Iterator<Item = (&'a str, &'a InputFile)> + 'a {
    snapshot.files.iter().filter_map(move |(path, file)| {
        let name = path.strip_prefix(dir)?;
        (!name.contains('/') && is_yaml(name)).then_some((path.as_str(), file))
    })
}

pub fn text(file: &InputFile) -> Result<&str, Error> {
    std::str::from_utf8(&file.bytes).map_err(|e| Error::Input {
        origin: file.origin.clone(),
        message: format!(
            "not UTF-8 text (invalid byte at offset {})",
            e.valid_up_to()
        ),
    })
}

/// One scrape config and the input file it came from.
pub struct Scrape {
    pub job: String,
    pub origin: String,
    pub config: Json,
}

/// Every scrape config from `prometheus/scrape_configs/*.yml`, as JSON values for templates.
///
/// A file holds one scrape config (a mapping with `job_name`), a list of them, or a mapping
/// with a `scrape_configs:` list, so a fragment cut from an existing prometheus.yml works.
/// Job names must be unique across all files; the error names both files.
pub fn scrape_configs(snapshot: &Snapshot) -> Result<Vec<Scrape>, Error> {
    let mut out = Vec::new();
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for (_, file) in yaml_files_in(snapshot, SCRAPE_CONFIGS_DIR) {
        let bad = |message: String| Error::Input {
            origin: file.origin.clone(),
            message,
        };
        let doc: Yaml =
            serde_yaml_ng::from_str(text(file)?).map_err(|e| bad(format!("invalid YAML: {e}")))?;
        let entries = match doc {
            Yaml::Null => continue,
            Yaml::Sequence(list) => list,
            Yaml::Mapping(mut map) => match map.remove("scrape_configs") {
                Some(Yaml::Sequence(list)) if map.is_empty() => list,
                Some(_) => {
                    return Err(bad(
                        "`scrape_configs` must be a list and the only key of the file".into(),
                    ))
                }
                None => vec![Yaml::Mapping(map)],
            },
            _ => {
                return Err(bad(
                    "expected a scrape config mapping or a list of them".into()
                ))
            }
        };
        for (i, entry) in entries.into_iter().enumerate() {
            let Yaml::Mapping(map) = &entry else {
                return Err(bad(format!(
                    "entry {}: expected a mapping with `job_name`",
                    i + 1
                )));
            };
            let Some(Yaml::String(job)) = map.get("job_name") else {
                return Err(bad(format!("entry {}: missing `job_name`", i + 1)));
            };
            if let Some(other) = seen.insert(job.clone(), file.origin.clone()) {
                return Err(bad(format!(
                    "job_name `{job}` is already defined in {other}"
                )));
            }
            let config =
                serde_json::to_value(&entry).map_err(|e| bad(format!("entry {}: {e}", i + 1)))?;
            out.push(Scrape {
                job: job.clone(),
                origin: file.origin.clone(),
                config,
            });
        }
    }
    Ok(out)
}

/// Rule files from `prometheus/rules/*.yml`, as output files under `prometheus/rules/`.
/// Prometheus reads them in server mode only; in agent mode AMP evaluates them, and
/// [`crate::amp`] sends them there (none is written locally).
pub fn rule_files(snapshot: &Snapshot, server_mode: bool) -> Result<Vec<OutputFile>, Error> {
    let mut out = Vec::new();
    if !server_mode {
        return Ok(out);
    }
    for (path, file) in yaml_files_in(snapshot, RULES_DIR) {
        text(file)?;
        out.push(OutputFile::new(path, file.bytes.clone(), &file.origin));
    }
    Ok(out)
}

/// Dashboards from `grafana/dashboards/**/*.json`, as output files with the same relative
/// paths (directories become Grafana folders).
pub fn dashboards(snapshot: &Snapshot) -> Result<Vec<OutputFile>, Error> {
    snapshot
        .files
        .iter()
        .filter(|(path, _)| path.starts_with(DASHBOARDS_DIR) && path.ends_with(".json"))
        .map(|(path, file)| {
            if !is_plain_relative(path) {
                return Err(Error::Input {
                    origin: file.origin.clone(),
                    message: "the path has empty, `.` or `..` segments; it would be written outside grafana/dashboards/".into(),
                });
            }
            Ok(OutputFile::new(path, file.bytes.clone(), &file.origin))
        })
        .collect()
}

/// Whether `path` is relative and made only of ordinary segments: an S3 key may contain
/// `..`, `.` or `//`, and such a key must never choose where a file is written.
fn is_plain_relative(path: &str) -> bool {
    !path.starts_with('/')
        && path
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
}

/// Template overrides and additions: `templates/NAME.tera` → (NAME, source text, origin).
pub fn templates(snapshot: &Snapshot) -> Result<Vec<(String, String, String)>, Error> {
    let mut out = Vec::new();
    for (path, file) in &snapshot.files {
        let Some(name) = path
            .strip_prefix(TEMPLATES_DIR)
            .and_then(|n| n.strip_suffix(".tera"))
        else {
            continue;
        };
        out.push((name.to_owned(), text(file)?.to_owned(), file.origin.clone()));
    }
    Ok(out)
}

/// Every other UTF-8 input file, by path, for templates (`files["extra/x.txt"]`).
pub fn other_files(snapshot: &Snapshot) -> serde_json::Map<String, Json> {
    snapshot
        .files
        .iter()
        .filter(|(path, _)| {
            ![SCRAPE_CONFIGS_DIR, RULES_DIR, DASHBOARDS_DIR, TEMPLATES_DIR]
                .iter()
                .any(|d| path.starts_with(d))
        })
        .filter_map(|(path, file)| {
            std::str::from_utf8(&file.bytes)
                .ok()
                .map(|t| (path.clone(), Json::String(t.to_owned())))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dashboard_keys_cannot_climb_out_of_the_output_tree() {
        let mut snapshot = Snapshot::default();
        let file = InputFile {
            origin: "s3://b/grafana/dashboards/../../../etc/x.json".into(),
            bytes: b"{}".to_vec(),
        };
        snapshot
            .files
            .insert("grafana/dashboards/../../../etc/x.json".into(), file);
        let err = dashboards(&snapshot).unwrap_err().to_string();
        assert!(
            err.starts_with("s3://b/grafana/dashboards/../../../etc/x.json: the path has"),
            "{err}"
        );
        assert!(is_plain_relative("grafana/dashboards/Folder/a.json"));
        assert!(
            !is_plain_relative("grafana/dashboards//a.json")
                && !is_plain_relative("grafana/dashboards/./a.json")
        );
    }
}
