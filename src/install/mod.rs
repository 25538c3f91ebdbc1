//! Validate, skip unchanged, install atomically: the only module that writes rendered files.
//!
//! Order is fixed: [`validate::validate`] checks every file first; only then does
//! [`install`] touch the destination, all or nothing. moninit keeps a manifest
//! (`.moninit-manifest`) of the files it installed, so a file that disappears from the inputs
//! (a deleted dashboard) is removed on the next install instead of lingering forever; files it
//! never installed are never removed.

pub mod atomic;
mod grafana_schema;
mod promtool;
pub mod validate;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::render::OutputFile;
use crate::secret;

pub use atomic::Report;

const MANIFEST: &str = ".moninit-manifest";

/// Why validation or installation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path} (from {origin}): {message}")]
    Invalid {
        path: String,
        origin: String,
        message: String,
    },
    #[error("{0}")]
    Promtool(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// The mode and group a rendered file gets: 0644 normally; files holding secrets 0640 with
/// the consuming service's group when running as root and that group exists, else 0600.
fn permissions(file: &OutputFile) -> (u32, Option<nix::unistd::Gid>) {
    if !file.secret {
        return (0o644, None);
    }
    let group = if file.path.starts_with("grafana") {
        "grafana"
    } else {
        "prometheus"
    };
    let gid = nix::unistd::geteuid()
        .is_root()
        .then(|| nix::unistd::Group::from_name(group).ok().flatten())
        .flatten()
        .map(|g| g.gid);
    match gid {
        Some(gid) => (0o640, Some(gid)),
        None => (0o600, None),
    }
}

fn entries(root: &Path, files: &[OutputFile]) -> Vec<atomic::Entry> {
    files
        .iter()
        .map(|f| {
            let (mode, group) = permissions(f);
            atomic::Entry {
                path: root.join(&f.path),
                contents: f.contents.clone(),
                mode,
                group,
            }
        })
        .collect()
}

fn read_manifest(root: &Path) -> BTreeSet<PathBuf> {
    std::fs::read_to_string(root.join(MANIFEST))
        .map(|t| {
            // Only plain relative paths: a tampered manifest must not name files elsewhere.
            t.lines()
                .map(PathBuf::from)
                .filter(|p| {
                    !p.as_os_str().is_empty()
                        && p.components()
                            .all(|c| matches!(c, std::path::Component::Normal(_)))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// What [`install`] did, including files removed because they left the inputs.
#[derive(Debug, Default)]
pub struct Outcome {
    pub report: Report,
    pub removed: Vec<PathBuf>,
}

impl Outcome {
    pub fn changed(&self) -> bool {
        !self.report.written.is_empty() || !self.removed.is_empty()
    }
}

/// Installs `files` under `root`, all or nothing, then removes files a previous install put
/// there that are no longer rendered.
pub fn install(root: &Path, files: &[OutputFile]) -> Result<Outcome, Error> {
    let io = |(path, source): (PathBuf, std::io::Error)| Error::Io {
        path: path.display().to_string(),
        source,
    };
    let previous = read_manifest(root);
    let mut all = entries(root, files);
    let current: BTreeSet<PathBuf> = files.iter().map(|f| f.path.clone()).collect();
    let manifest: String = current
        .iter()
        .map(|p| format!("{}\n", p.display()))
        .collect();
    all.push(atomic::Entry {
        path: root.join(MANIFEST),
        contents: manifest.into_bytes(),
        mode: 0o644,
        group: None,
    });
    let report = atomic::install(&all).map_err(io)?;

    let mut removed = Vec::new();
    for stale in previous.difference(&current) {
        let path = root.join(stale);
        match std::fs::remove_file(&path) {
            Ok(()) => removed.push(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "could not remove a file no longer rendered")
            }
        }
    }
    Ok(Outcome { report, removed })
}

/// `old` with the value part (after the first `=` or `:`) of each line absent from `new`
/// replaced by the mask.
fn mask_removed_values(old: &str, new: &str) -> String {
    let kept: BTreeSet<&str> = new.lines().collect();
    let mut out = String::with_capacity(old.len());
    for line in old.lines() {
        if kept.contains(line) {
            out.push_str(line);
        } else {
            match line.find(['=', ':']) {
                Some(at) => {
                    out.push_str(line[..=at].trim_end());
                    out.push(' ');
                    out.push_str(secret::MASK);
                }
                None => out.push_str(secret::MASK),
            }
        }
        out.push('\n');
    }
    out
}

/// A unified diff of what [`install`] would change under `root`, secrets masked.
pub fn diff(root: &Path, files: &[OutputFile]) -> Result<String, Error> {
    let mut out = String::new();
    let previous = read_manifest(root);
    let current: BTreeSet<PathBuf> = files.iter().map(|f| f.path.clone()).collect();
    for file in files {
        let path = root.join(&file.path);
        let old = atomic::current(&path).map_err(|e| Error::Io {
            path: path.display().to_string(),
            source: e,
        })?;
        let old_text = old
            .as_ref()
            .map(|(b, _)| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default();
        let new_text = String::from_utf8_lossy(&file.contents).into_owned();
        let (mode, _) = permissions(file);
        if old
            .as_ref()
            .is_some_and(|(b, m)| *b == file.contents && *m == mode)
        {
            continue;
        }
        // The old version may hold secrets that are no longer registered (a rotated
        // password): in a file that was or is private, hide the value of every removed line.
        let private = file.secret || old.as_ref().is_some_and(|(_, m)| m & 0o077 == 0);
        let old_text = if private {
            mask_removed_values(&old_text, &new_text)
        } else {
            old_text
        };
        let (old_text, new_text) = (secret::mask(&old_text), secret::mask(&new_text));
        let old_name = if old.is_some() {
            format!("a/{}", file.path.display())
        } else {
            "/dev/null".into()
        };
        let text = similar::TextDiff::from_lines(&old_text, &new_text)
            .unified_diff()
            .context_radius(3)
            .header(&old_name, &format!("b/{}", file.path.display()))
            .to_string();
        if text.is_empty() {
            out.push_str(&format!("mode {} -> {:o}\n", file.path.display(), mode));
        } else {
            out.push_str(&text);
        }
    }
    for stale in previous.difference(&current) {
        if root.join(stale).exists() {
            out.push_str(&format!("removed {}\n", stale.display()));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removed_lines_of_private_files_lose_their_values() {
        let old = "[security]\nadmin_user = admin\nadmin_password = old-secret\nnote\n";
        let new = "[security]\nadmin_user = admin\nadmin_password = new\n";
        let masked = mask_removed_values(old, new);
        assert_eq!(
            masked,
            format!(
                "[security]\nadmin_user = admin\nadmin_password = {0}\n{0}\n",
                secret::MASK
            )
        );
    }
}
