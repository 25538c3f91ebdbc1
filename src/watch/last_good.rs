//! The last known good inputs: the fetched snapshot that a healthy boot or apply ran on, kept
//! under the state dir so that a boot which cannot reach S3 or SSM can still start from it.
//!
//! The file is `STATE/last-good.json`, mode 0600 (it holds SecureString values), written
//! atomically: a temporary file is written and fsynced, renamed over the old one, and the
//! directory is fsynced. Its first line is a header (format, SHA-256 of the rest, the time it
//! was saved, the sources); the rest is the snapshot: each input file (path, origin, bytes in
//! hex) and each parameter (name, origin, value, whether it is a secret). A file whose hash
//! does not match (truncated, edited, corrupted) is never used.
//!
//! [`digest`] is the snapshot's identity: the same SHA-256, computed without writing, so a
//! watch round can tell a changed snapshot from the running one.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::secret::Secret;
use crate::source::{InputFile, ParamValue, Snapshot};

/// The file's name under the state dir.
pub const FILE: &str = "last-good.json";

const FORMAT: u32 = 1;

/// A last-good snapshot read back, verified.
#[derive(Debug)]
pub struct LastGood {
    pub snapshot: Snapshot,
    /// The SHA-256 of the snapshot ([`digest`]).
    pub sha256: String,
    pub saved_at: SystemTime,
    /// The sources it was fetched from, as the agent config named them.
    pub sources: Vec<String>,
}

impl LastGood {
    /// How old it is (zero if the clock went back).
    pub fn age(&self) -> Duration {
        SystemTime::now()
            .duration_since(self.saved_at)
            .unwrap_or_default()
    }
}

/// Why a last-good file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {why}; not used (it is replaced after the next successful apply)")]
    Corrupt { path: PathBuf, why: String },
}

#[derive(Serialize, Deserialize)]
struct Header {
    format: u32,
    sha256: String,
    /// Seconds since the Unix epoch.
    saved_at: u64,
    sources: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct Body {
    files: Vec<FileEntry>,
    params: Vec<ParamEntry>,
}

#[derive(Serialize, Deserialize)]
struct FileEntry {
    path: String,
    origin: String,
    hex: String,
}

#[derive(Serialize, Deserialize)]
struct ParamEntry {
    name: String,
    origin: String,
    value: String,
    secret: bool,
}

/// The snapshot encoded: files in path order, parameters in name order, so equal snapshots
/// encode (and hash) equally.
fn encode(snapshot: &Snapshot) -> Vec<u8> {
    let body = Body {
        files: snapshot
            .files
            .iter()
            .map(|(path, f)| FileEntry {
                path: path.clone(),
                origin: f.origin.clone(),
                hex: hex::encode(&f.bytes),
            })
            .collect(),
        params: snapshot
            .params
            .clone()
            .flatten()
            .into_iter()
            .map(|(name, v)| match v {
                ParamValue::Plain { value, origin } => ParamEntry {
                    name,
                    origin,
                    value,
                    secret: false,
                },
                ParamValue::Secret { value, origin } => ParamEntry {
                    name,
                    origin,
                    value: value.expose().to_owned(),
                    secret: true,
                },
            })
            .collect(),
    };
    serde_json::to_vec(&body).expect("a snapshot always encodes")
}

/// The snapshot's identity: the SHA-256 of its encoding.
pub fn digest(snapshot: &Snapshot) -> String {
    hex::encode(Sha256::digest(encode(snapshot)))
}

/// Where the file lives under `state_dir`.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE)
}

/// Saves `snapshot` atomically (0600) and returns its digest.
pub fn save(state_dir: &Path, snapshot: &Snapshot, sources: &[String]) -> Result<String, Error> {
    let body = encode(snapshot);
    let sha256 = hex::encode(Sha256::digest(&body));
    let header = Header {
        format: FORMAT,
        sha256: sha256.clone(),
        saved_at: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        sources: sources.to_vec(),
    };
    let target = path(state_dir);
    let io = |source| Error::Io {
        path: target.clone(),
        source,
    };
    std::fs::create_dir_all(state_dir).map_err(io)?;
    let tmp = state_dir.join(format!(".{FILE}.{}.tmp", std::process::id()));
    let written = (|| {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        serde_json::to_writer(&mut f, &header)?;
        f.write_all(b"\n")?;
        f.write_all(&body)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &target)?;
        crate::install::atomic::sync_dir(state_dir)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map_err(io)?;
    Ok(sha256)
}

/// Reads the last-good snapshot: `Ok(None)` when there is none, an error when there is one
/// that cannot be trusted. SecureString values are registered for masking as they are read.
pub fn load(state_dir: &Path) -> Result<Option<LastGood>, Error> {
    let target = path(state_dir);
    let text = match std::fs::read(&target) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::Io {
                path: target,
                source,
            })
        }
    };
    let corrupt = |why: String| Error::Corrupt {
        path: target.clone(),
        why,
    };
    let Some(split) = text.iter().position(|&b| b == b'\n') else {
        return Err(corrupt("no header line (truncated?)".into()));
    };
    let (header, body) = (&text[..split], &text[split + 1..]);
    let header: Header =
        serde_json::from_slice(header).map_err(|e| corrupt(format!("unreadable header: {e}")))?;
    if header.format != FORMAT {
        return Err(corrupt(format!("unknown format {}", header.format)));
    }
    let actual = hex::encode(Sha256::digest(body));
    if actual != header.sha256 {
        return Err(corrupt(format!(
            "its SHA-256 is {actual}, the header says {} (truncated or modified)",
            header.sha256
        )));
    }
    let body: Body =
        serde_json::from_slice(body).map_err(|e| corrupt(format!("unreadable snapshot: {e}")))?;
    let mut snapshot = Snapshot::default();
    for f in body.files {
        let bytes = hex::decode(&f.hex).map_err(|e| corrupt(format!("file {}: {e}", f.path)))?;
        snapshot.files.insert(
            f.path,
            InputFile {
                origin: f.origin,
                bytes,
            },
        );
    }
    for p in body.params {
        let value = if p.secret {
            ParamValue::Secret {
                value: Secret::new(p.value),
                origin: p.origin,
            }
        } else {
            ParamValue::Plain {
                value: p.value,
                origin: p.origin,
            }
        };
        snapshot
            .params
            .insert(&p.name, value)
            .map_err(|e| corrupt(e.to_string()))?;
    }
    Ok(Some(LastGood {
        snapshot,
        sha256: header.sha256,
        saved_at: SystemTime::UNIX_EPOCH + Duration::from_secs(header.saved_at),
        sources: header.sources,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> Snapshot {
        let mut s = Snapshot::default();
        s.files.insert(
            "prometheus/scrape_configs/node.yml".into(),
            InputFile {
                origin: "s3://b/m/prometheus/scrape_configs/node.yml".into(),
                bytes: b"- job_name: node\n".to_vec(),
            },
        );
        s.params
            .insert(
                "grafana/admin_password",
                ParamValue::Secret {
                    value: Secret::new("s3cr3t-value"),
                    origin: "/m/grafana/admin_password".into(),
                },
            )
            .unwrap();
        s.params
            .insert(
                "workspace_id",
                ParamValue::Plain {
                    value: "ws-1".into(),
                    origin: "/m/workspace_id".into(),
                },
            )
            .unwrap();
        s
    }

    #[test]
    fn a_saved_snapshot_reads_back_equal_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let sha = save(dir.path(), &snapshot(), &["s3://b/m/".into()]).unwrap();
        let mode = std::fs::metadata(path(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let back = load(dir.path()).unwrap().unwrap();
        assert_eq!(back.sha256, sha);
        assert_eq!(digest(&back.snapshot), sha);
        assert_eq!(back.snapshot.files, snapshot().files);
        assert!(matches!(
            back.snapshot.params.get("grafana/admin_password"),
            Some(ParamValue::Secret { .. })
        ));
        assert_eq!(back.sources, ["s3://b/m/"]);
        assert!(back.age() < Duration::from_secs(5));
    }

    #[test]
    fn a_truncated_or_modified_file_is_never_used() {
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), &snapshot(), &[]).unwrap();
        let file = path(dir.path());
        let full = std::fs::read(&file).unwrap();
        std::fs::write(&file, &full[..full.len() - 10]).unwrap();
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("truncated or modified"), "{err}");
        std::fs::write(&file, &full[..20]).unwrap();
        assert!(load(dir.path()).is_err());
        let edited = String::from_utf8(full).unwrap().replace("ws-1", "ws-2");
        std::fs::write(&file, edited).unwrap();
        assert!(load(dir.path()).is_err());
    }

    #[test]
    fn no_file_is_no_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().is_none());
    }

    #[test]
    fn the_digest_follows_content_not_order_of_insertion() {
        let a = snapshot();
        let mut b = Snapshot {
            params: a.params.clone(),
            files: a.files.clone(),
        };
        assert_eq!(digest(&a), digest(&b));
        b.files
            .get_mut("prometheus/scrape_configs/node.yml")
            .unwrap()
            .bytes
            .push(b'\n');
        assert_ne!(digest(&a), digest(&b));
    }
}
