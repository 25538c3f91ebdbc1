//! Local directory sources (`file:///DIR/`), and the `params.yaml` / `secrets.yaml`
//! convention that gives file-layout sources their parameters.
//!
//! A local source lets moninit run with no AWS at all: the same layout as an S3 prefix, with
//! parameters in `params.yaml` and secret parameters in `secrets.yaml` (treated exactly like
//! SSM SecureStrings: masked everywhere, written only to 0600/0640 files).

use std::path::Path;

use serde_yaml_ng::Value;

use super::{Config, Error, InputFile, ParamValue, Params, Snapshot};
use crate::secret::Secret;

/// File names at the root of a source that hold parameters rather than inputs.
pub const PARAMS_FILE: &str = "params.yaml";
pub const SECRETS_FILE: &str = "secrets.yaml";

/// Reads every file under `dir` (following no symlinks out of it).
pub async fn fetch(dir: &Path, config: &Config) -> Result<Snapshot, Error> {
    let dir = dir.to_owned();
    let dir_name = dir.display().to_string();
    let max = config.max_object_bytes;
    let files = tokio::task::spawn_blocking(move || walk(&dir, max))
        .await
        .map_err(|e| Error::Io {
            path: dir_name.clone(),
            source: std::io::Error::other(e),
        })??;
    let mut snapshot = Snapshot::default();
    snapshot.files.extend(files);
    extract_params(&mut snapshot)?;
    Ok(snapshot)
}

fn walk(root: &Path, max: u64) -> Result<Vec<(String, InputFile)>, Error> {
    let io = |path: &Path, source| Error::Io {
        path: path.display().to_string(),
        source,
    };
    let meta = std::fs::metadata(root).map_err(|e| io(root, e))?;
    if !meta.is_dir() {
        return Err(Error::Input {
            origin: root.display().to_string(),
            message: "not a directory".into(),
        });
    }
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(|e| io(&dir, e))? {
            let entry = entry.map_err(|e| io(&dir, e))?;
            let path = entry.path();
            let kind = entry.file_type().map_err(|e| io(&path, e))?;
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                let len = entry.metadata().map_err(|e| io(&path, e))?.len();
                if len > max {
                    return Err(Error::Input {
                        origin: path.display().to_string(),
                        message: format!(
                            "file is {len} bytes, over the limit of {max} (fetch.max_object_bytes)"
                        ),
                    });
                }
                let bytes = std::fs::read(&path).map_err(|e| io(&path, e))?;
                let relative = path.strip_prefix(root).unwrap_or(&path);
                let relative = relative.to_string_lossy().replace('\\', "/");
                out.push((
                    relative,
                    InputFile {
                        origin: path.display().to_string(),
                        bytes,
                    },
                ));
            }
        }
    }
    Ok(out)
}

/// Moves `params.yaml` and `secrets.yaml` out of the snapshot's files into its parameters.
///
/// Every file-layout source (S3 prefix or local directory) may hold both. A `secrets.yaml`
/// is never an ordinary input file: dropped silently it would be a surprise, and served to
/// templates as `files["secrets.yaml"]` its values would escape masking. Its values are
/// registered as secrets the moment they are parsed, like SSM SecureStrings.
pub fn extract_params(snapshot: &mut Snapshot) -> Result<(), Error> {
    if let Some(file) = snapshot.files.remove(PARAMS_FILE) {
        parse_params(&file, false, &mut snapshot.params)?;
    }
    if let Some(file) = snapshot.files.remove(SECRETS_FILE) {
        parse_params(&file, true, &mut snapshot.params)?;
    }
    Ok(())
}

fn parse_params(file: &InputFile, secret: bool, params: &mut Params) -> Result<(), Error> {
    let text = std::str::from_utf8(&file.bytes).map_err(|_| Error::Malformed {
        origin: file.origin.clone(),
        message: "not UTF-8 text".into(),
    })?;
    let doc: Value = serde_yaml_ng::from_str(text).map_err(|e| Error::Malformed {
        origin: file.origin.clone(),
        // The YAML error may quote the offending text; for secrets.yaml that could be a secret.
        message: if secret {
            yaml_location(&e)
        } else {
            format!("invalid YAML: {e}")
        },
    })?;
    if doc.is_null() {
        return Ok(());
    }
    let Value::Mapping(map) = doc else {
        return Err(Error::Malformed {
            origin: file.origin.clone(),
            message: "must be a mapping of names to values".into(),
        });
    };
    let mut flat = Vec::new();
    flatten(&file.origin, "", &Value::Mapping(map), &mut flat)?;
    for (name, value) in flat {
        let origin = format!("{}#{name}", file.origin);
        let value = if secret {
            ParamValue::Secret {
                value: Secret::new(value),
                origin,
            }
        } else {
            ParamValue::Plain { value, origin }
        };
        params.insert(&name, value)?;
    }
    Ok(())
}

fn flatten(
    origin: &str,
    prefix: &str,
    value: &Value,
    out: &mut Vec<(String, String)>,
) -> Result<(), Error> {
    match value {
        Value::Mapping(map) => {
            for (k, v) in map {
                let key = match k {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    _ => {
                        return Err(Error::Malformed {
                            origin: origin.to_owned(),
                            message: format!("{prefix}: keys must be strings"),
                        })
                    }
                };
                let name = if prefix.is_empty() { key } else { format!("{prefix}/{key}") };
                flatten(origin, &name, v, out)?;
            }
            Ok(())
        }
        Value::String(s) => {
            out.push((prefix.to_owned(), s.clone()));
            Ok(())
        }
        Value::Number(n) => {
            out.push((prefix.to_owned(), n.to_string()));
            Ok(())
        }
        Value::Bool(b) => {
            out.push((prefix.to_owned(), b.to_string()));
            Ok(())
        }
        _ => Err(Error::Malformed {
            origin: origin.to_owned(),
            message: format!("{prefix}: values must be strings, numbers, booleans or mappings (SSM parameters are strings)"),
        }),
    }
}

/// Only the position of a YAML error, never its text.
fn yaml_location(e: &serde_yaml_ng::Error) -> String {
    match e.location() {
        Some(l) => format!("invalid YAML at line {} column {}", l.line(), l.column()),
        None => "invalid YAML".to_owned(),
    }
}
