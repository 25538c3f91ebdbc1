//! Safe extraction of a verified archive into a directory that nothing trusts yet.
//!
//! The format is told by its first bytes (gzip: `1f 8b`, zip: `PK\x03\x04`), not by its name.
//! Every entry is checked before anything is written for it:
//! - its path is relative, has no `..`, and lies under the one top directory all entries
//!   share (a second top directory is refused: the archive is not the release layout);
//! - only files, directories and links are accepted: device files and FIFOs are refused;
//! - a symbolic link's target, resolved from the link's own directory, stays inside the top
//!   directory; a hard link names a file already extracted;
//! - nothing is ever written, created or linked *through* a symbolic link: an entry whose
//!   path (or a hard link whose target) passes through a link already extracted is refused.
//!   Each link is checked alone, so without this a chain of links that each stay "inside"
//!   (`p/s -> .`, `p/s/u -> ..`, …) could climb out of the tree;
//! - the bytes unpacked are capped ([`unpack`]'s `max_bytes`): a small archive cannot fill
//!   the disk;
//! - modes keep their permission bits only (no setuid, setgid or sticky bit).
//!
//! Then [`check_layout`] asks for what the archive's kind must hold. The caller renames the
//! directory into the store only when all of this passed.

use std::fs::File;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use super::Kind;

/// Why an archive was refused, or the I/O error that stopped the unpacking.
#[derive(Debug)]
pub enum Refusal {
    /// The archive itself is at fault: its name is in the message.
    Bad(String),
    /// Writing the tree failed (disk full, permissions).
    Io(PathBuf, std::io::Error),
}

type Result<T> = std::result::Result<T, Refusal>;

fn bad<T>(message: impl Into<String>) -> Result<T> {
    Err(Refusal::Bad(message.into()))
}

/// Unpacks `archive` into `into` (an empty directory), writing at most `max_bytes`;
/// returns the top directory's name.
pub fn unpack(archive: &Path, into: &Path, kind: Kind, max_bytes: u64) -> Result<String> {
    let mut budget = Budget(max_bytes);
    let mut magic = [0u8; 4];
    let mut f = File::open(archive).map_err(|e| Refusal::Io(archive.to_owned(), e))?;
    let n = f
        .read(&mut magic)
        .map_err(|e| Refusal::Io(archive.to_owned(), e))?;
    let top = match &magic[..n] {
        [0x1f, 0x8b, ..] => untar(archive, into, &mut budget)?,
        [b'P', b'K', 3, 4] => unzip(archive, into, &mut budget)?,
        _ => return bad("not a gzip-compressed tar archive nor a zip archive"),
    };
    check_layout(&into.join(&top), &top, kind)?;
    Ok(top)
}

/// A checked entry path: its components, the first being the top directory.
fn checked_path(raw: &Path, top: &mut Option<String>) -> Result<Vec<String>> {
    let mut parts = Vec::new();
    for c in raw.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
            Component::CurDir => {}
            Component::ParentDir => {
                return bad(format!("entry `{}` has a `..` component", raw.display()))
            }
            Component::RootDir | Component::Prefix(_) => {
                return bad(format!("entry `{}` is an absolute path", raw.display()))
            }
        }
    }
    let Some(first) = parts.first() else {
        return Ok(parts);
    };
    match top {
        None => *top = Some(first.clone()),
        Some(t) if t == first => {}
        Some(t) => {
            return bad(format!(
                "more than one top directory (`{t}` and `{first}`): expected the release layout, one directory holding everything"
            ))
        }
    }
    Ok(parts)
}

/// Whether a link at `link` (components from the archive root) pointing at `target` stays
/// inside the top directory, resolved lexically from the link's own directory.
fn link_stays_inside(link: &[String], target: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    // Start in the link's directory: everything but its own name.
    let mut depth: Vec<String> = link[..link.len().saturating_sub(1)].to_vec();
    for c in target.components() {
        match c {
            Component::Normal(p) => depth.push(p.to_string_lossy().into_owned()),
            Component::CurDir => {}
            Component::ParentDir => {
                depth.pop();
                // Above the top directory is outside the tree.
                if depth.is_empty() {
                    return false;
                }
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    !depth.is_empty()
}

fn dest(into: &Path, parts: &[String]) -> PathBuf {
    parts.iter().fold(into.to_owned(), |p, c| p.join(c))
}

/// Refuses a path that passes through a symbolic link already extracted (every component
/// but the last is checked; the last too when `last_too`).
fn not_through_links(into: &Path, parts: &[String], raw: &Path, last_too: bool) -> Result<()> {
    let upto = if last_too {
        parts.len()
    } else {
        parts.len().saturating_sub(1)
    };
    let mut p = into.to_owned();
    for part in &parts[..upto] {
        p.push(part);
        if std::fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_symlink()) {
            return bad(format!(
                "entry `{}` goes through the link `{}`; nothing is written through a link",
                raw.display(),
                p.strip_prefix(into).unwrap_or(&p).display()
            ));
        }
    }
    Ok(())
}

/// Bytes still allowed to be written.
struct Budget(u64);

/// An I/O error while writing the tree: a clash between entries (a file where a directory
/// is, or the reverse) is the archive's fault; anything else (a full disk) is not.
fn io<T>(path: &Path, r: std::io::Result<T>) -> Result<T> {
    use std::io::ErrorKind::{AlreadyExists, IsADirectory, NotADirectory};
    r.map_err(|e| match e.kind() {
        NotADirectory | IsADirectory | AlreadyExists => Refusal::Bad(format!(
            "`{}`: entries clash (a file and a directory of one name): {e}",
            path.display()
        )),
        _ => Refusal::Io(path.to_owned(), e),
    })
}

fn untar(archive: &Path, into: &Path, budget: &mut Budget) -> Result<String> {
    use tar::EntryType;
    let file = io(archive, File::open(archive))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(file)));
    let mut top = None;
    let entries = tar
        .entries()
        .or_else(|e| bad(format!("not a tar archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.or_else(|e| bad(format!("corrupt archive: {e}")))?;
        let kind = entry.header().entry_type();
        if matches!(kind, EntryType::XGlobalHeader | EntryType::XHeader) {
            continue;
        }
        let raw = entry
            .path()
            .or_else(|e| bad(format!("unreadable entry name: {e}")))?
            .into_owned();
        let parts = checked_path(&raw, &mut top)?;
        if parts.is_empty() {
            continue;
        }
        let path = dest(into, &parts);
        not_through_links(into, &parts, &raw, true)?;
        let mode = entry.header().mode().unwrap_or(0o644) & 0o777;
        match kind {
            EntryType::Directory => {
                io(&path, std::fs::create_dir_all(&path))?;
                set_mode(&path, mode | 0o700)?;
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                make_parent(&path)?;
                write_file(&mut entry, &path, &raw, budget)?;
                set_mode(&path, mode)?;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .ok()
                    .flatten()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                if !link_stays_inside(&parts, &target) {
                    return bad(format!(
                        "link `{}` points outside the archive's directory (to `{}`)",
                        raw.display(),
                        target.display()
                    ));
                }
                make_parent(&path)?;
                io(&path, std::os::unix::fs::symlink(&target, &path))?;
            }
            EntryType::Link => {
                let target = entry
                    .link_name()
                    .ok()
                    .flatten()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                let mut same_top = top.clone();
                let target_parts = checked_path(&target, &mut same_top).map_err(|_| {
                    Refusal::Bad(format!(
                        "hard link `{}` points outside the archive's directory (to `{}`)",
                        raw.display(),
                        target.display()
                    ))
                })?;
                let source = dest(into, &target_parts);
                not_through_links(into, &target_parts, &target, true)?;
                if target_parts.is_empty() || !source.is_file() {
                    return bad(format!(
                        "hard link `{}` names `{}`, which is not a file extracted before it",
                        raw.display(),
                        target.display()
                    ));
                }
                make_parent(&path)?;
                io(&path, std::fs::hard_link(&source, &path))?;
            }
            other => {
                return bad(format!(
                    "entry `{}` is a {} (device files, FIFOs and the like are refused)",
                    raw.display(),
                    describe(other)
                ))
            }
        }
    }
    top.ok_or_else(|| Refusal::Bad("the archive is empty".into()))
}

fn describe(kind: tar::EntryType) -> &'static str {
    use tar::EntryType;
    match kind {
        EntryType::Char => "character device",
        EntryType::Block => "block device",
        EntryType::Fifo => "FIFO",
        _ => "special entry",
    }
}

fn unzip(archive: &Path, into: &Path, budget: &mut Budget) -> Result<String> {
    let file = io(archive, File::open(archive))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file))
        .or_else(|e| bad(format!("not a zip archive: {e}")))?;
    let mut top = None;
    for i in 0..zip.len() {
        let mut entry = zip
            .by_index(i)
            .or_else(|e| bad(format!("corrupt zip entry {i}: {e}")))?;
        let raw = PathBuf::from(
            entry
                .name()
                .or_else(|e| bad(format!("zip entry {i} has an unreadable name: {e}")))?
                .into_owned(),
        );
        let parts = checked_path(&raw, &mut top)?;
        if parts.is_empty() {
            continue;
        }
        let path = dest(into, &parts);
        not_through_links(into, &parts, &raw, true)?;
        let mode = entry.unix_mode().map(|m| m & 0o777);
        if entry.is_symlink() {
            return bad(format!(
                "entry `{}` is a link; links are refused in zip archives",
                raw.display()
            ));
        }
        if entry.is_dir() {
            io(&path, std::fs::create_dir_all(&path))?;
            set_mode(&path, mode.unwrap_or(0o755) | 0o700)?;
        } else {
            if let Some(m) = entry.unix_mode() {
                let file_type = m & 0o170000;
                if file_type != 0 && file_type != 0o100000 {
                    return bad(format!(
                        "entry `{}` is not a regular file (device files, FIFOs and the like are refused)",
                        raw.display()
                    ));
                }
            }
            make_parent(&path)?;
            write_file(&mut entry, &path, &raw, budget)?;
            set_mode(&path, mode.unwrap_or(0o644))?;
        }
    }
    top.ok_or_else(|| Refusal::Bad("the archive is empty".into()))
}

/// Copies an entry's bytes to `path`: a failed read is the archive's fault (corrupt,
/// truncated), a failed write the disk's (full, over a quota).
fn write_file(entry: &mut impl Read, path: &Path, raw: &Path, budget: &mut Budget) -> Result<()> {
    use std::io::Write;
    let mut out = io(path, File::create(path))?;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match entry.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return bad(format!("entry `{}`: {e}", raw.display())),
        };
        budget.0 = budget.0.checked_sub(n as u64).ok_or_else(|| {
            Refusal::Bad(
                "the archive unpacks to more than 4 times the archive size cap (fetch.max_archive_bytes)"
                    .into(),
            )
        })?;
        io(path, out.write_all(&buf[..n]))?;
    }
    // Durability comes from one syncfs before the tree is renamed into the store.
    Ok(())
}

fn make_parent(path: &Path) -> Result<()> {
    match path.parent() {
        Some(parent) => io(parent, std::fs::create_dir_all(parent)),
        None => Ok(()),
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    io(
        path,
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)),
    )
}

/// What `kind` must hold in its top directory `dir` (named `top`).
pub fn check_layout(dir: &Path, top: &str, kind: Kind) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |rel: &str| -> Result<()> {
        let p = dir.join(rel);
        match std::fs::metadata(&p) {
            Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(()),
            Ok(m) if m.is_file() => bad(format!("`{top}/{rel}` is not executable")),
            _ => bad(format!(
                "no `{top}/{rel}`: not a {} release archive",
                kind.as_str()
            )),
        }
    };
    match kind {
        Kind::Prometheus => {
            executable("prometheus")?;
            executable("promtool")
        }
        Kind::Grafana => {
            executable("bin/grafana")?;
            if !dir.join("conf/defaults.ini").is_file() {
                return bad(format!(
                    "no `{top}/conf/defaults.ini`: not a Grafana release archive"
                ));
            }
            if !dir.join("public").is_dir() {
                return bad(format!("no `{top}/public/`: not a Grafana release archive"));
            }
            Ok(())
        }
        Kind::Plugin => {
            let manifest = dir.join("plugin.json");
            let text = std::fs::read_to_string(&manifest).or_else(|_| {
                bad(format!(
                    "no `{top}/plugin.json`: not a Grafana plugin archive"
                ))
            })?;
            let json: serde_json::Value = serde_json::from_str(&text)
                .or_else(|e| bad(format!("`{top}/plugin.json` is not JSON: {e}")))?;
            match json.get("id").and_then(|i| i.as_str()) {
                Some(id) if id == top => Ok(()),
                Some(id) => bad(format!(
                    "`{top}/plugin.json` says id `{id}`: a plugin's directory must be named by its id"
                )),
                None => bad(format!("`{top}/plugin.json` has no `id`")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar.gz from (path, kind, data or link target, mode).
    fn targz(entries: &[(&str, tar::EntryType, &[u8], u32)]) -> Vec<u8> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut b = tar::Builder::new(gz);
        for (path, kind, data, mode) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(*mode);
            match kind {
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    h.set_size(0);
                    b.append_link(&mut h, path, std::str::from_utf8(data).unwrap())
                        .unwrap();
                }
                _ => {
                    h.set_size(data.len() as u64);
                    // Raw name bytes: `set_path` itself refuses `..` and absolute paths.
                    let name = &mut h.as_old_mut().name;
                    name[..path.len()].copy_from_slice(path.as_bytes());
                    h.set_cksum();
                    b.append(&h, *data).unwrap();
                }
            }
        }
        b.into_inner().unwrap().finish().unwrap()
    }

    fn run(bytes: &[u8], kind: Kind) -> (tempfile::TempDir, Result<String>) {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("a");
        std::fs::write(&archive, bytes).unwrap();
        let into = dir.path().join("into");
        std::fs::create_dir(&into).unwrap();
        let r = unpack(&archive, &into, kind, 1 << 30);
        (dir, r)
    }

    fn refusal(bytes: &[u8], kind: Kind) -> String {
        match run(bytes, kind).1 {
            Err(Refusal::Bad(m)) => m,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    use tar::EntryType::{Directory as D, Regular as F, Symlink as L};

    fn release(extra: &[(&'static str, tar::EntryType, &'static [u8], u32)]) -> Vec<u8> {
        let mut e: Vec<(&str, tar::EntryType, &[u8], u32)> = vec![
            ("prometheus-2.53.4.linux-amd64/", D, b"", 0o755),
            (
                "prometheus-2.53.4.linux-amd64/prometheus",
                F,
                b"#!/bin/sh\n",
                0o755,
            ),
            (
                "prometheus-2.53.4.linux-amd64/promtool",
                F,
                b"#!/bin/sh\n",
                0o4755,
            ),
        ];
        e.extend_from_slice(extra);
        targz(&e)
    }

    #[test]
    fn a_release_layout_unpacks_without_setuid_bits() {
        let (dir, r) = run(&release(&[]), Kind::Prometheus);
        assert_eq!(r.unwrap(), "prometheus-2.53.4.linux-amd64");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(
            dir.path()
                .join("into/prometheus-2.53.4.linux-amd64/promtool"),
        )
        .unwrap()
        .permissions()
        .mode();
        assert_eq!(mode & 0o7777, 0o755);
    }

    #[test]
    fn traversal_absolute_paths_and_escaping_links_are_refused() {
        let m = refusal(
            &release(&[("prometheus-2.53.4.linux-amd64/../../etc/x", F, b"x", 0o644)]),
            Kind::Prometheus,
        );
        assert!(m.contains("`..`"), "{m}");
        let m = refusal(&release(&[("/etc/x", F, b"x", 0o644)]), Kind::Prometheus);
        assert!(m.contains("absolute path"), "{m}");
        let m = refusal(
            &release(&[("prometheus-2.53.4.linux-amd64/etc", L, b"../../etc", 0o777)]),
            Kind::Prometheus,
        );
        assert!(m.contains("points outside"), "{m}");
        let m = refusal(
            &release(&[(
                "prometheus-2.53.4.linux-amd64/abs",
                L,
                b"/etc/passwd",
                0o777,
            )]),
            Kind::Prometheus,
        );
        assert!(m.contains("points outside"), "{m}");
        // A link that stays inside is fine.
        let (_d, r) = run(
            &release(&[(
                "prometheus-2.53.4.linux-amd64/p2",
                L,
                b"./prometheus",
                0o777,
            )]),
            Kind::Prometheus,
        );
        r.unwrap();
    }

    #[test]
    fn a_chain_of_links_cannot_climb_out_and_nothing_is_written_through_a_link() {
        // Each link alone stays inside; together they would reach the store and beyond.
        let m = refusal(
            &release(&[
                ("prometheus-2.53.4.linux-amd64/s", L, b".", 0o777),
                ("prometheus-2.53.4.linux-amd64/s/u", L, b"..", 0o777),
                ("prometheus-2.53.4.linux-amd64/s/u/evil", F, b"x", 0o644),
            ]),
            Kind::Prometheus,
        );
        assert!(m.contains("goes through the link"), "{m}");
        let m = refusal(
            &release(&[
                ("prometheus-2.53.4.linux-amd64/s", L, b".", 0o777),
                ("prometheus-2.53.4.linux-amd64/x", F, b"x", 0o644),
                (
                    "prometheus-2.53.4.linux-amd64/s",
                    F,
                    b"over the link",
                    0o644,
                ),
            ]),
            Kind::Prometheus,
        );
        assert!(m.contains("goes through the link"), "{m}");
        let m = refusal(
            &release(&[
                ("prometheus-2.53.4.linux-amd64/s", L, b".", 0o777),
                (
                    "prometheus-2.53.4.linux-amd64/h",
                    tar::EntryType::Link,
                    b"prometheus-2.53.4.linux-amd64/s/prometheus",
                    0o644,
                ),
            ]),
            Kind::Prometheus,
        );
        assert!(m.contains("goes through the link"), "{m}");
    }

    #[test]
    fn devices_two_top_directories_and_missing_binaries_are_refused() {
        let m = refusal(
            &release(&[(
                "prometheus-2.53.4.linux-amd64/dev",
                tar::EntryType::Char,
                b"",
                0o644,
            )]),
            Kind::Prometheus,
        );
        assert!(m.contains("character device"), "{m}");
        let m = refusal(&release(&[("other/x", F, b"x", 0o644)]), Kind::Prometheus);
        assert!(m.contains("more than one top directory"), "{m}");
        let m = refusal(
            &targz(&[("p/prometheus", F, b"x", 0o755)]),
            Kind::Prometheus,
        );
        assert!(m.contains("no `p/promtool`"), "{m}");
        let m = refusal(b"plain text, not an archive", Kind::Prometheus);
        assert!(
            m.contains("not a gzip-compressed tar archive nor a zip"),
            "{m}"
        );
    }

    #[test]
    fn a_plugin_zip_needs_its_id_as_its_directory() {
        let zip_of = |dir: &str, id: &str| {
            let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
            let o = zip::write::SimpleFileOptions::default();
            w.add_directory(format!("{dir}/"), o).unwrap();
            w.start_file(format!("{dir}/plugin.json"), o).unwrap();
            std::io::Write::write_all(
                &mut w,
                format!(r#"{{"id": "{id}", "type": "datasource"}}"#).as_bytes(),
            )
            .unwrap();
            w.finish().unwrap().into_inner()
        };
        let id = "grafana-amazonprometheus-datasource";
        let (_d, r) = run(&zip_of(id, id), Kind::Plugin);
        assert_eq!(r.unwrap(), id);
        let m = refusal(&zip_of("renamed", id), Kind::Plugin);
        assert!(m.contains("must be named by its id"), "{m}");
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        w.start_file("../evil", zip::write::SimpleFileOptions::default())
            .unwrap();
        let m = refusal(&w.finish().unwrap().into_inner(), Kind::Plugin);
        assert!(m.contains("`..`"), "{m}");
    }
}
