//! All-or-nothing installation of a set of files.
//!
//! Each changed file is staged as a temporary file in its destination directory (same
//! filesystem, so the final rename is atomic), written, given its mode and owner, and fsynced.
//! Only when every file is staged are they renamed into place, and then each directory is
//! fsynced. If staging fails, the temporary files are removed and nothing changed. If a rename
//! fails part-way, the files already replaced are put back from the contents read before, so
//! a reader sees either the old set or the new one. Unchanged files (same bytes, same mode)
//! are not touched, so their mtimes stay and nothing watching them is woken.
//!
//! Directories that did not exist are created first and recorded; a failure removes them
//! again (deepest first), so a failed install leaves the tree as it found it, directories
//! included.

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

/// One file to install, with its final mode and optional group.
#[derive(Clone, Debug)]
pub struct Entry {
    pub path: PathBuf,
    pub contents: Vec<u8>,
    pub mode: u32,
    pub group: Option<nix::unistd::Gid>,
}

/// A file's contents and mode before the install, if it existed: what a rollback restores.
type Previous = Option<(Vec<u8>, u32)>;

/// What an installation did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub written: Vec<PathBuf>,
    pub unchanged: Vec<PathBuf>,
}

/// The file's current contents and mode, if it exists.
pub fn current(path: &Path) -> std::io::Result<Previous> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let mode = std::fs::metadata(path)?.permissions().mode() & 0o7777;
            Ok(Some((bytes, mode)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Installs `entries` all or nothing. The error names the path that failed.
pub fn install(entries: &[Entry]) -> Result<Report, (PathBuf, std::io::Error)> {
    let mut created = Vec::new();
    let result = install_in(entries, &mut created);
    if result.is_err() {
        remove_created(&created);
    }
    result
}

/// Creates `dir` and its missing ancestors, recording each one created (outermost first).
fn create_dirs(dir: &Path, created: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let missing: Vec<&Path> = dir.ancestors().take_while(|d| !d.exists()).collect();
    for d in missing.into_iter().rev() {
        match std::fs::create_dir(d) {
            Ok(()) => created.push(d.to_owned()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Removes directories an install created, deepest first; only if they are empty again.
fn remove_created(created: &[PathBuf]) {
    for dir in created.iter().rev() {
        if let Err(e) = std::fs::remove_dir(dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "could not remove a directory created by a failed install");
        }
    }
}

fn install_in(
    entries: &[Entry],
    created: &mut Vec<PathBuf>,
) -> Result<Report, (PathBuf, std::io::Error)> {
    let mut report = Report::default();
    let mut changed: Vec<(&Entry, Previous)> = Vec::new();
    for entry in entries {
        match current(&entry.path).map_err(|e| (entry.path.clone(), e))? {
            Some((bytes, mode)) if bytes == entry.contents && mode == entry.mode => {
                report.unchanged.push(entry.path.clone());
            }
            Some(old) => changed.push((entry, Some(old))),
            None => changed.push((entry, None)),
        }
    }

    // Stage: nothing visible changes yet (new directories aside, removed again on failure).
    let mut staged: Vec<(NamedTempFile, &Entry, Previous)> = Vec::new();
    for (entry, old) in changed {
        if let Some(dir) = entry.path.parent() {
            create_dirs(dir, created).map_err(|e| (dir.to_owned(), e))?;
        }
        let tmp = stage(entry).map_err(|e| (entry.path.clone(), e))?;
        staged.push((tmp, entry, old));
    }

    // Commit: rename each into place; on failure put back what was replaced.
    let mut done: Vec<(&Entry, Previous)> = Vec::new();
    for (tmp, entry, old) in staged.into_iter() {
        if let Err(e) = tmp.persist(&entry.path) {
            rollback(&done);
            return Err((entry.path.clone(), e.error));
        }
        done.push((entry, old));
    }
    let dirs: BTreeSet<&Path> = done.iter().filter_map(|(e, _)| e.path.parent()).collect();
    for dir in dirs {
        // The new files are in place: a failed fsync of the directory cannot be undone and
        // must not be reported as "nothing installed".
        if let Err(e) = sync_dir(dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "installed, but fsync of the directory failed");
        }
    }
    report.written = done.into_iter().map(|(e, _)| e.path.clone()).collect();
    Ok(report)
}

fn stage(entry: &Entry) -> std::io::Result<NamedTempFile> {
    let dir = entry.path.parent().unwrap_or(Path::new("."));
    let name = entry
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".moninit-tmp")
        .tempfile_in(dir)?;
    // Mode and owner before the contents land, so a secret is never readable by others.
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(entry.mode))?;
    if let Some(gid) = entry.group {
        nix::unistd::fchown(tmp.as_file(), None, Some(gid)).map_err(std::io::Error::from)?;
    }
    tmp.write_all(&entry.contents)?;
    tmp.as_file().sync_all()?;
    Ok(tmp)
}

fn rollback(done: &[(&Entry, Previous)]) {
    for (entry, old) in done.iter().rev() {
        let result = match old {
            Some((bytes, mode)) => {
                // The old contents with the old mode: a secret restored must stay private.
                let restore = Entry {
                    contents: bytes.clone(),
                    mode: *mode,
                    ..(*entry).clone()
                };
                stage(&restore)
                    .and_then(|t| t.persist(&entry.path).map(|_| ()).map_err(|e| e.error))
            }
            None => std::fs::remove_file(&entry.path),
        };
        if let Err(e) = result {
            tracing::error!(path = %entry.path.display(), error = %e, "could not roll back a partly installed file");
        }
    }
}

/// Makes a rename durable: fsync the directory that holds the new name.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Writes a file readable by its owner only (scratch copies of rendered files).
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(contents)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(dir: &Path, name: &str, contents: &str) -> Entry {
        Entry {
            path: dir.join(name),
            contents: contents.into(),
            mode: 0o644,
            group: None,
        }
    }

    #[test]
    fn unchanged_files_keep_their_mtime() {
        let dir = tempfile::tempdir().unwrap();
        let e = entry(dir.path(), "a/x.yml", "one");
        install(std::slice::from_ref(&e)).unwrap();
        let before = std::fs::metadata(&e.path).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let report = install(std::slice::from_ref(&e)).unwrap();
        assert_eq!(report.unchanged, vec![e.path.clone()]);
        assert!(report.written.is_empty());
        assert_eq!(
            std::fs::metadata(&e.path).unwrap().modified().unwrap(),
            before
        );
    }

    #[test]
    fn a_failing_file_installs_nothing_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let good = entry(dir.path(), "good.yml", "new");
        std::fs::write(&good.path, "old").unwrap();
        // A directory where a file should go: staging succeeds, the rename fails.
        std::fs::create_dir_all(dir.path().join("blocked.yml/inner")).unwrap();
        let bad = entry(dir.path(), "blocked.yml", "x");
        let (path, _) = install(&[good.clone(), bad]).unwrap_err();
        assert!(path.ends_with("blocked.yml"));
        assert_eq!(std::fs::read_to_string(&good.path).unwrap(), "old");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".moninit-tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn a_failed_install_removes_the_directories_it_created() {
        let dir = tempfile::tempdir().unwrap();
        // A dangling link where a directory must go: staging fails there, after `new/deeper`
        // was created for the first file.
        std::os::unix::fs::symlink("/nonexistent/moninit", dir.path().join("dangling")).unwrap();
        let deep = entry(dir.path(), "new/deeper/x.yml", "x");
        let bad = entry(dir.path(), "dangling/y.yml", "y");
        install(&[deep, bad]).unwrap_err();
        assert!(
            !dir.path().join("new").exists(),
            "new directories left behind"
        );
    }

    #[test]
    fn mode_is_set_before_contents_are_visible() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = entry(dir.path(), "secret.ini", "pw");
        e.mode = 0o600;
        install(&[e.clone()]).unwrap();
        assert_eq!(
            std::fs::metadata(&e.path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
