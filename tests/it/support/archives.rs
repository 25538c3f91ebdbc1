//! Release-layout archives built from real parts, as the official ones are laid out:
//! - `prometheus-2.42.0.linux-amd64.tar.gz`: one top directory holding Debian's real
//!   `prometheus` and `promtool`;
//! - `grafana-12.1.0.linux-amd64.tar.gz`: one top directory (the homepath) with
//!   `bin/grafana` (the Grafana stand-in), `conf/defaults.ini` and `public/`;
//! - a plugin zip whose top directory is the plugin id, with a real-shaped `plugin.json`.
//!
//! The Prometheus archive is about 30 MB compressed; each variant is built once per target
//! directory and reused by every test (built under a temporary name, then renamed).

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::Digest;

pub const AMP_PLUGIN: &str = "grafana-amazonprometheus-datasource";

/// A built archive and its digest.
pub struct Archive {
    pub path: PathBuf,
    pub sha256: String,
}

fn cache_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("archives");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn sha256(path: &Path) -> String {
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

/// Builds `name` in the cache with `build` unless it is there already. Each builder writes
/// its own temporary file (tests run in parallel, as threads or processes) and renames it into
/// place; identical builds make identical files, so whichever rename lands last is fine.
fn cached(name: &str, build: impl FnOnce(&Path)) -> Archive {
    let path = cache_dir().join(name);
    if !path.exists() {
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .tempfile_in(cache_dir())
            .unwrap()
            .into_temp_path();
        build(&tmp);
        tmp.persist(&path).unwrap();
    }
    Archive {
        sha256: sha256(&path),
        path,
    }
}

fn tar_gz(
    out: &Path,
    add: impl FnOnce(&mut tar::Builder<flate2::write::GzEncoder<std::fs::File>>),
) {
    let gz = flate2::write::GzEncoder::new(
        std::fs::File::create(out).unwrap(),
        flate2::Compression::fast(),
    );
    let mut b = tar::Builder::new(gz);
    add(&mut b);
    b.into_inner().unwrap().finish().unwrap();
}

fn add_bytes<W: Write>(b: &mut tar::Builder<W>, path: &str, data: &[u8], mode: u32) {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(mode);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, path, data).unwrap();
}

/// Debian's Prometheus in the release layout; `variant` makes a different archive (an
/// extra `VERSION` file), as a new release would be.
pub fn prometheus(variant: &str) -> Archive {
    cached(&format!("prometheus-{variant}.linux-amd64.tar.gz"), |out| {
        let top = format!("prometheus-{variant}.linux-amd64");
        tar_gz(out, |b| {
            for bin in ["prometheus", "promtool"] {
                let real = super::find_on_path(bin);
                b.append_path_with_name(&real, format!("{top}/{bin}"))
                    .unwrap();
            }
            add_bytes(b, &format!("{top}/VERSION"), variant.as_bytes(), 0o644);
        })
    })
}

/// A Grafana release layout whose `bin/grafana` runs the stand-in.
pub fn grafana() -> Archive {
    cached("grafana-12.1.0.linux-amd64.tar.gz", |out| {
        let top = "grafana-12.1.0";
        let script = format!(
            "#!/bin/sh\nexec {} {} \"$@\"\n",
            super::python().display(),
            super::repo()
                .join("tests/support/grafana_stand_in.py")
                .display()
        );
        tar_gz(out, |b| {
            add_bytes(b, &format!("{top}/bin/grafana"), script.as_bytes(), 0o755);
            add_bytes(b, &format!("{top}/conf/defaults.ini"), b"[paths]\n", 0o644);
            add_bytes(
                b,
                &format!("{top}/public/index.html"),
                b"<html></html>\n",
                0o644,
            );
        })
    })
}

/// The AMP data source plugin's zip, shaped like Grafana's plugin zips.
pub fn amp_plugin() -> Archive {
    cached(&format!("{AMP_PLUGIN}-2.0.0.zip"), |out| {
        let mut w = zip::ZipWriter::new(std::fs::File::create(out).unwrap());
        let o = zip::write::SimpleFileOptions::default().unix_permissions(0o644);
        w.add_directory(format!("{AMP_PLUGIN}/"), o).unwrap();
        w.start_file(format!("{AMP_PLUGIN}/plugin.json"), o)
            .unwrap();
        w.write_all(
            serde_json::json!({
                "type": "datasource",
                "name": "Amazon Managed Service for Prometheus",
                "id": AMP_PLUGIN,
                "backend": true,
                "executable": "gpx_amazonprometheus",
                "info": {"version": "2.0.0"},
                "dependencies": {"grafanaDependency": ">=10.4.0"}
            })
            .to_string()
            .as_bytes(),
        )
        .unwrap();
        w.start_file(
            format!("{AMP_PLUGIN}/gpx_amazonprometheus_linux_amd64"),
            o.unix_permissions(0o755),
        )
        .unwrap();
        w.write_all(b"#!/bin/sh\nexit 0\n").unwrap();
        w.finish().unwrap();
    })
}

/// A tar.gz of arbitrary `(path, bytes, mode)` entries (raw names: may be hostile).
pub fn custom(dir: &Path, name: &str, entries: &[(&str, &[u8], u32)]) -> Archive {
    let path = dir.join(name);
    tar_gz(&path, |b| {
        for (p, data, mode) in entries {
            let mut h = tar::Header::new_gnu();
            if mode & 0o170000 == 0o120000 {
                // A symbolic link: `data` is its target.
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, p, std::str::from_utf8(data).unwrap())
                    .unwrap();
                continue;
            }
            h.set_size(data.len() as u64);
            h.set_mode(*mode);
            h.set_entry_type(tar::EntryType::Regular);
            let raw = &mut h.as_old_mut().name;
            raw[..p.len()].copy_from_slice(p.as_bytes());
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
    });
    Archive {
        sha256: sha256(&path),
        path,
    }
}

/// The agent config lines pinning `archive` at `url`.
pub fn pin(url: &str, archive: &Archive) -> String {
    format!("{{url: \"{url}\", sha256: \"{}\"}}", archive.sha256)
}
