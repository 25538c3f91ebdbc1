//! The content-addressed store of unpacked programs: `STATE/programs/<sha256>/<top>/`.
//!
//! A tree is trusted only when its directory exists under its digest: it is renamed there
//! as the last step, after the download was verified and the unpacking and layout checks
//! passed, so a crash at any point leaves at most a `.download-*` or `.unpack-*` temporary
//! entry, which the next [`Store::retire`] removes. The file `in-use` lists the digests the
//! last successful boot or reload ran; [`Store::retire`] keeps those and the current ones
//! (the version to go back to, and the one running) and removes every other tree.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::{fetch, unpack, Error, Kind, Pin, Sha256, Unpacked};

/// The record of the digests the last good run used.
const IN_USE: &str = "in-use";

/// The store under a state directory.
#[derive(Clone, Debug)]
pub struct Store {
    pub dir: PathBuf,
}

impl Store {
    pub fn new(state_dir: &Path) -> Self {
        Store {
            dir: state_dir.join("programs"),
        }
    }

    fn tree(&self, sha: &Sha256) -> PathBuf {
        self.dir.join(sha.as_str())
    }

    /// The unpacked tree for `pin`, from the store or else downloaded, verified and unpacked.
    pub async fn ensure(
        &self,
        pin: &Pin,
        kind: Kind,
        s3: Option<&aws_sdk_s3::Client>,
        max_bytes: u64,
    ) -> Result<Unpacked, Error> {
        if let Some(dir) = self.present(pin, kind) {
            tracing::debug!(url = %pin.url, sha256 = %pin.sha256, dir = %dir.display(), "archive already unpacked");
            return Ok(Unpacked {
                kind,
                sha256: pin.sha256.clone(),
                dir,
                downloaded: false,
            });
        }
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::io(&pin.url, &self.dir, e))?;
        self.check_owner(pin)?;
        let started = std::time::Instant::now();
        let downloaded = fetch::download(pin, s3, &self.dir, max_bytes).await?;
        let fetched_ms = started.elapsed().as_millis() as u64;
        let (store, pin2) = (self.clone(), pin.clone());
        let archive = downloaded.file;
        let unpacked_cap = max_bytes.saturating_mul(4);
        let dir = tokio::task::spawn_blocking(move || {
            store.unpack(&pin2, kind, archive.path(), unpacked_cap)
        })
        .await
        .map_err(|e| Error::rejected(&pin.url, format!("unpacking stopped: {e}")))??;
        tracing::info!(
            url = %pin.url,
            sha256 = %pin.sha256,
            bytes = downloaded.bytes,
            download_ms = fetched_ms,
            total_ms = started.elapsed().as_millis() as u64,
            dir = %dir.display(),
            "archive downloaded, verified and unpacked"
        );
        Ok(Unpacked {
            kind,
            sha256: pin.sha256.clone(),
            dir,
            downloaded: true,
        })
    }

    /// The tree of `pin` if it is in the store and holds what `kind` needs.
    fn present(&self, pin: &Pin, kind: Kind) -> Option<PathBuf> {
        let tree = self.tree(&pin.sha256);
        let mut entries = std::fs::read_dir(&tree).ok()?.flatten();
        let top = entries.next()?;
        if entries.next().is_some() {
            return None;
        }
        let name = top.file_name().to_string_lossy().into_owned();
        let dir = top.path();
        unpack::check_layout(&dir, &name, kind).ok().map(|_| dir)
    }

    /// Unpacks a verified `archive` into a temporary sibling, then renames it into place.
    fn unpack(
        &self,
        pin: &Pin,
        kind: Kind,
        archive: &Path,
        max_bytes: u64,
    ) -> Result<PathBuf, Error> {
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".unpack-{}-", pin.sha256))
            .tempdir_in(&self.dir)
            .map_err(|e| Error::io(&pin.url, &self.dir, e))?;
        let top = unpack::unpack(archive, tmp.path(), kind, max_bytes).map_err(|r| match r {
            unpack::Refusal::Bad(m) => Error::rejected(&pin.url, m),
            unpack::Refusal::Io(path, e) => Error::io(&pin.url, &path, e),
        })?;
        // Every file of the tree on disk before its name says it is complete.
        if let Ok(dir) = std::fs::File::open(tmp.path()) {
            if let Err(e) = nix::unistd::syncfs(&dir) {
                return Err(Error::io(&pin.url, tmp.path(), e.into()));
            }
        }
        let tree = self.tree(&pin.sha256);
        // Another moninit (a `moninit check` beside the service, a duplicated pin) may have
        // finished the same digest meanwhile: its complete tree is as good as ours.
        if let Some(dir) = self.present(pin, kind) {
            return Ok(dir);
        }
        // A tree left in place without its layout (tampered, or from an older moninit) goes.
        if tree.exists() {
            std::fs::remove_dir_all(&tree).map_err(|e| Error::io(&pin.url, &tree, e))?;
        }
        let staged = tmp.keep();
        if let Err(e) = std::fs::rename(&staged, &tree) {
            let _ = std::fs::remove_dir_all(&staged);
            // Lost a race to an identical tree: use it.
            return self
                .present(pin, kind)
                .ok_or_else(|| Error::io(&pin.url, &tree, e));
        }
        if let Ok(dir) = std::fs::File::open(&self.dir) {
            let _ = dir.sync_all();
        }
        Ok(tree.join(top))
    }

    /// Refuses to write into a store owned by another user: a `moninit check` run as root
    /// would leave trees the service (user `moninit`) can neither use nor remove.
    fn check_owner(&self, pin: &Pin) -> Result<(), Error> {
        use std::os::unix::fs::MetadataExt;
        let me = nix::unistd::geteuid().as_raw();
        match std::fs::metadata(&self.dir) {
            Ok(m) if m.uid() != me => Err(Error::io(
                &pin.url,
                &self.dir,
                std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!(
                        "the program store belongs to uid {}; run moninit as that user (e.g. sudo -u moninit moninit check)",
                        m.uid()
                    ),
                ),
            )),
            _ => Ok(()),
        }
    }

    /// The digest of the store tree `path` lies in, if it lies in one.
    pub fn digest_of(&self, path: &Path) -> Option<Sha256> {
        let rest = path.strip_prefix(&self.dir).ok()?;
        Sha256::parse(&rest.components().next()?.as_os_str().to_string_lossy()).ok()
    }

    /// After a good boot or reload that runs `current`: removes every tree but those and the
    /// ones the previous good run used, and temporary leftovers; then records `current`.
    pub fn retire(&self, current: &BTreeSet<Sha256>) {
        let previous: BTreeSet<String> = std::fs::read_to_string(self.dir.join(IN_USE))
            .map(|t| t.lines().map(str::to_owned).collect())
            .unwrap_or_default();
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let keep = name == IN_USE
                || previous.contains(&name)
                || current.iter().any(|s| s.as_str() == name);
            let ours = name.starts_with(".download-")
                || name.starts_with(".unpack-")
                || Sha256::parse(&name).is_ok();
            if !keep && ours {
                let path = entry.path();
                let removed = if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
                match removed {
                    Ok(()) => {
                        tracing::info!(path = %path.display(), "removed a program tree no longer pinned")
                    }
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "could not remove an old program tree")
                    }
                }
            }
        }
        if current.is_empty() && previous.is_empty() {
            return;
        }
        let text: String = current.iter().map(|s| format!("{s}\n")).collect();
        if let Err(e) =
            crate::install::atomic::write_private(&self.dir.join(IN_USE), text.as_bytes())
        {
            tracing::warn!(error = %e, "could not record the programs in use");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(c: char) -> Sha256 {
        Sha256::parse(&c.to_string().repeat(64)).unwrap()
    }

    #[test]
    fn retire_keeps_the_running_and_the_previous_trees_and_removes_the_rest() {
        let state = tempfile::tempdir().unwrap();
        let store = Store::new(state.path());
        let add = |c| std::fs::create_dir_all(store.tree(&sha(c)).join("top")).unwrap();
        add('a');
        add('c');
        // A good run with `a`: `c` (older) goes.
        store.retire(&[sha('a')].into());
        assert!(!store.tree(&sha('c')).exists());
        // The next boot downloads `b`, crashes mid-way leave temporaries, and it runs well.
        add('b');
        std::fs::create_dir_all(store.dir.join(".unpack-x-1")).unwrap();
        std::fs::write(store.dir.join(".download-y"), "partial").unwrap();
        std::fs::create_dir_all(store.dir.join("not-ours")).unwrap();
        store.retire(&[sha('b')].into());
        let mut left: Vec<String> = std::fs::read_dir(&store.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            vec![
                "a".repeat(64),
                "b".repeat(64),
                IN_USE.to_owned(),
                "not-ours".to_owned()
            ]
        );
        // The next good run with `b` again: `a` is no longer the previous one.
        store.retire(&[sha('b')].into());
        assert!(!store.tree(&sha('a')).exists() && store.tree(&sha('b')).exists());
    }
}
