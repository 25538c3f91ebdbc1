//! Checks everything before anything is sent: rule files with `promtool check rules`, the
//! Alertmanager config with `amtool check-config` where amtool is found (else its shape).
//!
//! Both tools read copies in a private temporary directory, laid out as AMP will see them
//! (templates next to the config under their names, which is what `templates:` refers to);
//! their complaints are shown with the input files' origins instead of those copies' paths.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use super::desired::{Definition, Desired};
use super::Error;
use crate::secret;

/// How long one tool may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Checks every rule file and the Alertmanager definition of `desired`.
pub async fn check(
    desired: &Desired,
    promtool: Option<&Path>,
    amtool: Option<&Path>,
) -> Result<(), Error> {
    if let Some(definition) = &desired.alertmanager {
        shape(definition)?;
    }
    let dir = tempfile::Builder::new()
        .prefix("moninit-amp-check-")
        .tempdir()
        .map_err(|e| Error::Setup(format!("a temporary directory: {e}")))?;
    if !desired.namespaces.is_empty() {
        match promtool {
            Some(promtool) => rules(desired, promtool, dir.path()).await?,
            None => tracing::warn!(
                "promtool not found: rule files are sent to AMP unchecked (AMP checks them)"
            ),
        }
    }
    if let (Some(definition), Some(amtool)) = (&desired.alertmanager, amtool) {
        alertmanager(definition, amtool, dir.path()).await?;
    }
    Ok(())
}

async fn rules(desired: &Desired, promtool: &Path, dir: &Path) -> Result<(), Error> {
    let mut copies: Vec<(PathBuf, &str)> = Vec::new();
    for ns in desired.namespaces.values() {
        let path = dir.join(format!("{}.yml", ns.name));
        crate::install::atomic::write_private(&path, &ns.data)
            .map_err(|e| Error::Setup(format!("{}: {e}", path.display())))?;
        copies.push((path, &ns.origin));
    }
    let mut cmd = tokio::process::Command::new(promtool);
    cmd.args(["check", "rules"])
        .args(copies.iter().map(|(p, _)| p));
    let (ok, text) = run(cmd, promtool).await?;
    if ok {
        return Ok(());
    }
    // promtool prefixes each complaint with the file's path: blame the first file named.
    let detail: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty()
                && !l.starts_with("Checking ")
                && !l.starts_with("SUCCESS")
                && !l.starts_with("FAILED")
        })
        .collect();
    let mut message = if detail.is_empty() {
        text.trim().to_owned()
    } else {
        detail.join("; ")
    };
    let blamed = copies
        .iter()
        .find(|(p, _)| message.contains(&*p.to_string_lossy()));
    let origin = blamed.map_or("rule files", |(_, o)| *o).to_owned();
    if let Some((path, _)) = blamed {
        message = message.replace(&format!("{}: ", path.display()), "");
    }
    for (path, origin) in &copies {
        message = message.replace(&*path.to_string_lossy(), origin);
    }
    Err(Error::Input {
        origin,
        message: format!(
            "promtool check rules rejected it: {}",
            secret::mask(&message)
        ),
    })
}

/// What amtool cannot be asked when it is missing: the config is a YAML mapping with a
/// `route` and `receivers`, and each `templates:` entry is a template that is sent.
fn shape(definition: &Definition) -> Result<(), Error> {
    let bad = |message: String| Error::Input {
        origin: definition.origin.clone(),
        message,
    };
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&definition.config)
        .map_err(|e| bad(format!("invalid YAML: {e}")))?;
    let map = doc.as_mapping().ok_or_else(|| {
        bad("expected an Alertmanager config (a mapping with `route` and `receivers`)".into())
    })?;
    for key in ["route", "receivers"] {
        if !map.contains_key(key) {
            return Err(bad(format!(
                "no `{key}`: an Alertmanager config needs `route` and `receivers`"
            )));
        }
    }
    if let Some(list) = map.get("templates") {
        let names = list
            .as_sequence()
            .ok_or_else(|| bad("`templates` must be a list of template names".into()))?;
        for name in names {
            let Some(name) = name.as_str() else {
                return Err(bad(format!(
                    "`templates` entries must be template names (strings), not {name:?}"
                )));
            };
            let known = definition.templates.keys().any(|t| glob_matches(name, t));
            if !known {
                return Err(bad(format!(
                    "`templates` names `{name}`, but no alertmanager/templates/ file matches it (AMP knows templates by file name)"
                )));
            }
        }
    }
    Ok(())
}

/// Alertmanager's `templates:` entries are globs; `*` is the only wildcard used in practice.
fn glob_matches(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, tail)) => {
            name.len() >= head.len() + tail.len() && name.starts_with(head) && name.ends_with(tail)
        }
    }
}

async fn alertmanager(definition: &Definition, amtool: &Path, dir: &Path) -> Result<(), Error> {
    let am = dir.join("alertmanager");
    std::fs::create_dir_all(&am).map_err(|e| Error::Setup(format!("{}: {e}", am.display())))?;
    for (name, (_, text)) in &definition.templates {
        let path = am.join(name);
        crate::install::atomic::write_private(&path, text.as_bytes())
            .map_err(|e| Error::Setup(format!("{}: {e}", path.display())))?;
    }
    let config = am.join("alertmanager.yml");
    crate::install::atomic::write_private(&config, definition.config.as_bytes())
        .map_err(|e| Error::Setup(format!("{}: {e}", config.display())))?;
    let mut cmd = tokio::process::Command::new(amtool);
    cmd.arg("check-config").arg(&config);
    let (ok, text) = run(cmd, amtool).await?;
    if ok {
        return Ok(());
    }
    let text = text.replace(&format!("{}/", am.display()), "");
    // amtool prints `Checking 'FILE'  FAILED: REASON`, then a summary line.
    let detail: Vec<&str> = text
        .lines()
        .map(|l| {
            l.split_once("FAILED:")
                .map_or(l, |(_, reason)| reason)
                .trim()
        })
        .filter(|l| {
            !l.is_empty() && !l.starts_with("Checking ") && !l.starts_with("amtool: error:")
        })
        .collect();
    Err(Error::Input {
        origin: definition.origin.clone(),
        message: format!(
            "amtool check-config rejected it: {}",
            secret::mask(&detail.join("; "))
        ),
    })
}

/// Runs a checker; (whether it passed, what it printed).
async fn run(mut cmd: tokio::process::Command, program: &Path) -> Result<(bool, String), Error> {
    cmd.kill_on_drop(true)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let failed = |e: String| Error::Setup(format!("running {}: {e}", program.display()));
    let child = cmd.spawn().map_err(|e| failed(e.to_string()))?;
    let _tracked = crate::supervise::reaper::track(child.id());
    let output = tokio::time::timeout(TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| failed(format!("did not finish within {} s", TIMEOUT.as_secs())))?
        .map_err(|e| failed(e.to_string()))?;
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    Ok((output.status.success(), text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn definition(config: &str, templates: &[&str]) -> Definition {
        Definition {
            origin: "s3://b/alertmanager/alertmanager.yml".into(),
            config: config.into(),
            templates: templates
                .iter()
                .map(|t| ((*t).to_owned(), ("o".to_owned(), String::new())))
                .collect::<BTreeMap<_, _>>(),
            data: Vec::new(),
        }
    }

    #[test]
    fn a_config_without_route_or_receivers_is_refused_naming_the_file() {
        let err = shape(&definition("receivers: []\n", &[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("alertmanager/alertmanager.yml"), "{err}");
        assert!(err.contains("`route`"), "{err}");
        assert!(shape(&definition("route: [\n", &[]))
            .unwrap_err()
            .to_string()
            .contains("invalid YAML"));
    }

    #[test]
    fn templates_must_name_files_that_are_sent() {
        let config = "route: {receiver: a}\nreceivers: [{name: a}]\ntemplates: ['*.tmpl']\n";
        assert!(shape(&definition(config, &["default.tmpl"])).is_ok());
        assert!(shape(&definition(config, &[])).is_err());
        let exact = "route: {receiver: a}\nreceivers: [{name: a}]\ntemplates: [other.tmpl]\n";
        assert!(shape(&definition(exact, &["default.tmpl"])).is_err());
    }
}
