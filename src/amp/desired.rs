//! What AMP should hold, from the inputs alone (pure).
//!
//! - Every `prometheus/rules/**/*.yml` (or `.yaml`) is one rule groups namespace. Its name is
//!   the path under `prometheus/rules/` without the extension, with `/` turned into `.`:
//!   `prometheus/rules/team-a/node.yml` → `team-a.node`. The name is stable as long as the
//!   file keeps its path, which is what makes update and delete safe. AMP allows letters,
//!   digits, `-`, `.` and `_`, starting with a letter or digit, up to 64 characters; a path
//!   that cannot be a name, or two paths that give one name, are errors naming the files.
//! - `alertmanager/alertmanager.yml` plus `alertmanager/templates/*.tmpl` are the Alertmanager
//!   definition, in the document AMP expects: `template_files` (template name → text, the
//!   name being the file name, which is what `templates:` in the config refers to) and
//!   `alertmanager_config` (the config's text, unchanged).

use std::collections::BTreeMap;

use serde::Serialize;

use super::Error;
use crate::render::inputs::{self, RULES_DIR};
use crate::source::Snapshot;

pub const ALERTMANAGER_CONFIG: &str = "alertmanager/alertmanager.yml";
pub const ALERTMANAGER_TEMPLATES: &str = "alertmanager/templates/";
/// AMP's longest namespace name (the stricter of its documented limits).
pub const MAX_NAME: usize = 64;

/// One rule file as a namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Namespace {
    pub name: String,
    /// Where the file came from (`s3://bucket/key`, a local path).
    pub origin: String,
    /// The rule file's bytes, sent as they are.
    pub data: Vec<u8>,
}

/// The Alertmanager definition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Definition {
    /// The origin of `alertmanager.yml`.
    pub origin: String,
    /// `alertmanager.yml` as written.
    pub config: String,
    /// Template name → (origin, text).
    pub templates: BTreeMap<String, (String, String)>,
    /// The document sent to AMP.
    pub data: Vec<u8>,
}

/// Everything moninit would have AMP hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Desired {
    /// By namespace name.
    pub namespaces: BTreeMap<String, Namespace>,
    pub alertmanager: Option<Definition>,
}

impl Desired {
    pub fn is_empty(&self) -> bool {
        self.namespaces.is_empty() && self.alertmanager.is_none()
    }
}

/// The namespace name for a rule file at `relative` (the path under `prometheus/rules/`).
pub fn namespace_name(relative: &str) -> Result<String, String> {
    let stem = relative
        .strip_suffix(".yml")
        .or_else(|| relative.strip_suffix(".yaml"))
        .unwrap_or(relative);
    if stem
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err("the path has empty, `.` or `..` segments".into());
    }
    let name = stem.replace('/', ".");
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
    if let Some(bad) = name.chars().find(|c| !allowed(*c)) {
        return Err(format!(
            "its namespace name would be `{name}`, and AMP does not allow {bad:?} in one \
             (letters, digits, `-`, `.` and `_` only): rename the file"
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(format!(
            "its namespace name would be `{name}`, and AMP needs a letter or digit first: rename the file"
        ));
    }
    if name.len() > MAX_NAME {
        return Err(format!(
            "its namespace name would be `{name}`, longer than AMP's {MAX_NAME} characters: use a shorter path"
        ));
    }
    Ok(name)
}

/// What AMP should hold for `snapshot`.
pub fn desired(snapshot: &Snapshot) -> Result<Desired, Error> {
    let mut out = Desired::default();
    for (path, file) in &snapshot.files {
        let Some(relative) = path.strip_prefix(RULES_DIR) else {
            continue;
        };
        if !(relative.ends_with(".yml") || relative.ends_with(".yaml")) {
            continue;
        }
        let bad = |message: String| Error::Input {
            origin: file.origin.clone(),
            message,
        };
        let name = namespace_name(relative).map_err(bad)?;
        inputs::text(file).map_err(|e| bad(e.to_string()))?;
        if let Some(other) = out.namespaces.get(&name) {
            return Err(bad(format!(
                "its namespace name `{name}` is also the name of {}: rename one of them",
                other.origin
            )));
        }
        out.namespaces.insert(
            name.clone(),
            Namespace {
                name,
                origin: file.origin.clone(),
                data: file.bytes.clone(),
            },
        );
    }
    out.alertmanager = alertmanager(snapshot)?;
    Ok(out)
}

#[derive(Serialize)]
struct Document<'a> {
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    template_files: BTreeMap<&'a str, &'a str>,
    alertmanager_config: &'a str,
}

fn alertmanager(snapshot: &Snapshot) -> Result<Option<Definition>, Error> {
    let mut templates = BTreeMap::new();
    for (path, file) in &snapshot.files {
        let Some(name) = path.strip_prefix(ALERTMANAGER_TEMPLATES) else {
            continue;
        };
        if name.contains('/') || !name.ends_with(".tmpl") {
            continue;
        }
        let text = inputs::text(file).map_err(|e| Error::Input {
            origin: file.origin.clone(),
            message: e.to_string(),
        })?;
        templates.insert(name.to_owned(), (file.origin.clone(), text.to_owned()));
    }
    let Some(file) = snapshot.files.get(ALERTMANAGER_CONFIG) else {
        if let Some((_, (origin, _))) = templates.iter().next() {
            return Err(Error::Input {
                origin: origin.clone(),
                message: format!(
                    "an Alertmanager template without {ALERTMANAGER_CONFIG}: add the config or remove the template"
                ),
            });
        }
        return Ok(None);
    };
    let config = inputs::text(file)
        .map_err(|e| Error::Input {
            origin: file.origin.clone(),
            message: e.to_string(),
        })?
        .to_owned();
    let document = Document {
        template_files: templates
            .iter()
            .map(|(name, (_, text))| (name.as_str(), text.as_str()))
            .collect(),
        alertmanager_config: &config,
    };
    let data = serde_yaml_ng::to_string(&document)
        .map_err(|e| Error::Input {
            origin: file.origin.clone(),
            message: format!("cannot be written as AMP's definition document: {e}"),
        })?
        .into_bytes();
    Ok(Some(Definition {
        origin: file.origin.clone(),
        config,
        templates,
        data,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::InputFile;

    fn snapshot(files: &[(&str, &str)]) -> Snapshot {
        let mut s = Snapshot::default();
        for (path, text) in files {
            s.files.insert(
                (*path).to_owned(),
                InputFile {
                    origin: format!("s3://b/{path}"),
                    bytes: text.as_bytes().to_vec(),
                },
            );
        }
        s
    }

    #[test]
    fn names_follow_the_path_under_rules() {
        assert_eq!(namespace_name("node.yml").unwrap(), "node");
        assert_eq!(namespace_name("team-a/node.yaml").unwrap(), "team-a.node");
        assert_eq!(namespace_name("a/b/c_d.yml").unwrap(), "a.b.c_d");
    }

    #[test]
    fn names_amp_cannot_hold_are_refused() {
        assert!(namespace_name("my rules.yml").unwrap_err().contains("' '"));
        assert!(namespace_name("_x.yml")
            .unwrap_err()
            .contains("letter or digit"));
        assert!(namespace_name(&format!("{}.yml", "a".repeat(65)))
            .unwrap_err()
            .contains("64"));
        assert!(namespace_name("a//b.yml").is_err());
    }

    #[test]
    fn one_namespace_per_rule_file_in_any_directory() {
        let d = desired(&snapshot(&[
            ("prometheus/rules/node.yml", "groups: []\n"),
            ("prometheus/rules/team/app.yaml", "groups: []\n"),
            ("prometheus/rules/README.md", "not a rule file"),
            ("prometheus/scrape_configs/x.yml", "job_name: x\n"),
        ]))
        .unwrap();
        assert_eq!(
            d.namespaces.keys().collect::<Vec<_>>(),
            vec!["node", "team.app"]
        );
        assert_eq!(
            d.namespaces["node"].origin,
            "s3://b/prometheus/rules/node.yml"
        );
        assert!(d.alertmanager.is_none());
    }

    #[test]
    fn two_files_with_one_name_are_an_error_naming_both() {
        let err = desired(&snapshot(&[
            ("prometheus/rules/a/b.yml", "groups: []\n"),
            ("prometheus/rules/a.b.yml", "groups: []\n"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("prometheus/rules/a/b.yml"), "{err}");
        assert!(err.contains("prometheus/rules/a.b.yml"), "{err}");
    }

    #[test]
    fn the_definition_is_the_document_amp_documents() {
        let config = "route:\n  receiver: default\nreceivers:\n  - name: default\ntemplates:\n  - default.tmpl\n";
        let d = desired(&snapshot(&[
            ("alertmanager/alertmanager.yml", config),
            (
                "alertmanager/templates/default.tmpl",
                "{{ define \"x\" }}y{{ end }}\n",
            ),
        ]))
        .unwrap();
        let def = d.alertmanager.unwrap();
        let doc: serde_yaml_ng::Value = serde_yaml_ng::from_slice(&def.data).unwrap();
        assert_eq!(doc["alertmanager_config"].as_str().unwrap(), config);
        assert_eq!(
            doc["template_files"]["default.tmpl"].as_str().unwrap(),
            "{{ define \"x\" }}y{{ end }}\n"
        );
        assert_eq!(doc.as_mapping().unwrap().len(), 2);
    }

    #[test]
    fn a_template_without_a_config_is_an_error() {
        let err = desired(&snapshot(&[("alertmanager/templates/x.tmpl", "x")])).unwrap_err();
        assert!(err.to_string().contains("alertmanager/templates/x.tmpl"));
    }
}
