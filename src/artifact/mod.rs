//! Programs as inputs: Prometheus (with promtool), Grafana and Grafana plugins provisioned
//! from pinned release archives, so a node is defined entirely by its inputs.
//!
//! Each archive is named by a URL (`s3://`, `https://` or `http://`, `file://`) and a
//! mandatory SHA-256. The pipeline, per archive:
//! 1. [`store::Store::ensure`]: if `STATE/programs/<sha256>/` exists and holds what its kind
//!    needs, use it: a restart or SIGHUP with unchanged pins costs no download;
//! 2. otherwise [`fetch`] streams it into a temporary file beside the store, hashing as it
//!    goes and refusing anything past the size cap; a wrong digest is refused before a single
//!    entry is unpacked;
//! 3. [`unpack`] extracts it into a temporary sibling directory, refusing absolute paths,
//!    `..`, links that leave the tree, device files and more than one top directory, then
//!    checks the layout its kind needs (`prometheus` + `promtool`; `bin/grafana`,
//!    `conf/defaults.ini`, `public/`; a plugin's `plugin.json` whose id names its directory);
//! 4. only then is the tree renamed to `programs/<sha256>/`, so a crash mid-unpack never
//!    leaves a half tree that a later boot trusts.
//!
//! After a successful boot or reload, [`store::Store::retire`] keeps the trees in use and
//! those of the previous run (to go back to), and removes the rest.

pub mod fetch;
pub mod store;
pub mod unpack;

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

/// One pinned archive: `{url, sha256}` in the agent config.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Pin {
    /// Where the archive is: `s3://BUCKET/KEY`, `https://…` (or `http://…`: the SHA-256, not
    /// the transport, is what makes it trustworthy), `file:///PATH`.
    pub url: Url,
    /// The archive's SHA-256, 64 hex digits. Mandatory: an unpinned program is not an input.
    pub sha256: Sha256,
}

/// Where an archive comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Url {
    S3 { bucket: String, key: String },
    Http(String),
    File(PathBuf),
}

impl Url {
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some(rest) = text.strip_prefix("s3://") {
            return match rest.split_once('/') {
                Some((bucket, key))
                    if !bucket.is_empty() && !key.is_empty() && !key.ends_with('/') =>
                {
                    Ok(Url::S3 {
                        bucket: bucket.to_owned(),
                        key: key.to_owned(),
                    })
                }
                _ => Err(format!("`{text}`: an S3 archive is s3://BUCKET/KEY")),
            };
        }
        if text.starts_with("https://") || text.starts_with("http://") {
            return text
                .parse::<http::Uri>()
                .ok()
                .filter(|u| u.host().is_some_and(|h| !h.is_empty()))
                .map(|_| Url::Http(text.to_owned()))
                .ok_or_else(|| format!("`{text}`: not a valid URL"));
        }
        if let Some(rest) = text.strip_prefix("file://") {
            if rest.starts_with('/') {
                return Ok(Url::File(PathBuf::from(rest)));
            }
            return Err(format!("`{text}`: a local archive is file:///PATH"));
        }
        Err(format!(
            "`{text}`: an archive URL is s3://BUCKET/KEY, https://HOST/PATH or file:///PATH"
        ))
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Url::S3 { bucket, key } => write!(f, "s3://{bucket}/{key}"),
            Url::Http(u) => f.write_str(u),
            Url::File(p) => write!(f, "file://{}", p.display()),
        }
    }
}

impl<'de> Deserialize<'de> for Url {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Url::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// A SHA-256 digest as 64 lowercase hex digits.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sha256(String);

impl Sha256 {
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim().to_ascii_lowercase();
        if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Sha256(t))
        } else {
            Err(format!(
                "sha256 `{text}` is not 64 hexadecimal digits (take it from the release's sha256sums.txt, or `sha256sum FILE`)"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Sha256 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Sha256::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// What an archive must hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `prometheus-X.Y.Z.linux-ARCH.tar.gz`: `prometheus` and `promtool` in the top directory.
    Prometheus,
    /// `grafana-X.Y.Z.linux-ARCH.tar.gz`: the top directory is Grafana's homepath.
    Grafana,
    /// A plugin zip: the top directory is the plugin id and holds `plugin.json`.
    Plugin,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Prometheus => "prometheus",
            Kind::Grafana => "grafana",
            Kind::Plugin => "grafana plugin",
        }
    }
}

/// An archive ready to use: its tree under the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unpacked {
    pub kind: Kind,
    pub sha256: Sha256,
    /// `STATE/programs/<sha256>/<top>`: Prometheus' directory, Grafana's homepath, or the
    /// plugin's directory (named by its id).
    pub dir: PathBuf,
    /// Whether it was downloaded now (false: found in the store).
    pub downloaded: bool,
}

impl Unpacked {
    /// The top directory's name: for a plugin, its id.
    pub fn top(&self) -> String {
        self.dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// Why an archive could not be used. Every variant names the URL.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Could not be downloaded: missing, denied, unreachable, cut short (exit 4).
    #[error("{url}: {message}")]
    Fetch { url: String, message: String },
    /// Downloaded, but not what the pin says, or not a usable archive (exit 5).
    #[error("{url}: {message}")]
    Rejected { url: String, message: String },
    /// The store could not be written, e.g. the disk is full (exit 7).
    #[error("{url}: {path}: {source}")]
    Io {
        url: String,
        path: String,
        source: std::io::Error,
    },
}

impl Error {
    pub fn fetch(url: &Url, message: impl Into<String>) -> Self {
        Error::Fetch {
            url: url.to_string(),
            message: message.into(),
        }
    }

    pub fn rejected(url: &Url, message: impl Into<String>) -> Self {
        Error::Rejected {
            url: url.to_string(),
            message: message.into(),
        }
    }

    pub fn io(url: &Url, path: &std::path::Path, source: std::io::Error) -> Self {
        Error::Io {
            url: url.to_string(),
            path: path.display().to_string(),
            source,
        }
    }
}

/// What the pins of one boot or reload provide.
#[derive(Clone, Debug, Default)]
pub struct Provisioned {
    pub prometheus: Option<Unpacked>,
    pub grafana: Option<Unpacked>,
    pub plugins: Vec<Unpacked>,
}

impl Provisioned {
    /// The digests in use, for [`store::Store::retire`].
    pub fn digests(&self) -> std::collections::BTreeSet<Sha256> {
        self.all().map(|u| u.sha256.clone()).collect()
    }

    /// How many archives were downloaded (the rest came from the store).
    pub fn downloaded(&self) -> usize {
        self.all().filter(|u| u.downloaded).count()
    }

    pub fn all(&self) -> impl Iterator<Item = &Unpacked> {
        self.prometheus
            .iter()
            .chain(self.grafana.iter())
            .chain(self.plugins.iter())
    }

    /// Whether a plugin with this id is provisioned.
    pub fn has_plugin(&self, id: &str) -> bool {
        self.plugins.iter().any(|p| p.top() == id)
    }

    /// The programs as they will run: an archive's tree wins over `binary`, `promtool` and
    /// `homepath` (said once, when both are set).
    pub fn apply(
        &self,
        prometheus: &mut crate::render::prometheus::Config,
        grafana: &mut crate::render::grafana::Config,
    ) {
        if let Some(p) = &self.prometheus {
            let defaults = crate::render::prometheus::Config::default();
            if prometheus.binary != defaults.binary || prometheus.promtool != defaults.promtool {
                tracing::info!(archive = %p.dir.display(), "prometheus.archive is set: it wins over prometheus.binary and prometheus.promtool");
            }
            prometheus.binary = p.dir.join("prometheus");
            prometheus.promtool = p.dir.join("promtool");
        }
        if let Some(g) = &self.grafana {
            let defaults = crate::render::grafana::Config::default();
            if grafana.binary.is_some() || grafana.homepath != defaults.homepath {
                tracing::info!(archive = %g.dir.display(), "grafana.archive is set: it wins over grafana.binary and grafana.homepath");
            }
            grafana.binary = Some(g.dir.join("bin/grafana"));
            grafana.homepath = g.dir.clone();
        }
    }
}

/// Provisions every pinned archive concurrently (each from the store, or downloaded).
pub async fn provision(
    prometheus: Option<&Pin>,
    grafana: Option<&Pin>,
    plugins: &[Pin],
    store: &store::Store,
    s3: Option<&aws_sdk_s3::Client>,
    max_bytes: u64,
) -> Result<Provisioned, Error> {
    let one = |pin: &Pin, kind: Kind| {
        let pin = pin.clone();
        async move { store.ensure(&pin, kind, s3, max_bytes).await }
    };
    let prometheus = async {
        match prometheus {
            Some(p) => one(p, Kind::Prometheus).await.map(Some),
            None => Ok(None),
        }
    };
    let grafana = async {
        match grafana {
            Some(p) => one(p, Kind::Grafana).await.map(Some),
            None => Ok(None),
        }
    };
    let plugins = futures::future::try_join_all(plugins.iter().map(|p| one(p, Kind::Plugin)));
    let (prometheus, grafana, plugins) =
        futures::future::try_join3(prometheus, grafana, plugins).await?;
    Ok(Provisioned {
        prometheus,
        grafana,
        plugins,
    })
}

/// Makes Grafana's plugins directory hold exactly the pinned plugins moninit provides: a
/// link `DIR/<id>` to each plugin's tree in the store, and no link to a tree no longer
/// pinned. Plugins installed there by other means (real directories) are left alone; one
/// with the id of a pinned plugin is reported, since Grafana would load either.
pub fn link_plugins(
    plugins_dir: &std::path::Path,
    plugins: &[Unpacked],
    store: &store::Store,
) -> std::io::Result<bool> {
    std::fs::create_dir_all(plugins_dir)?;
    let mut changed = false;
    let mut wanted = std::collections::BTreeSet::new();
    for plugin in plugins {
        let id = plugin.top();
        let link = plugins_dir.join(&id);
        wanted.insert(id.clone());
        match std::fs::symlink_metadata(&link) {
            Ok(m) if m.file_type().is_symlink() => {
                if std::fs::read_link(&link)? == plugin.dir {
                    continue;
                }
                std::fs::remove_file(&link)?;
            }
            Ok(_) => {
                tracing::warn!(plugin = id, dir = %link.display(), "a plugin with this id is already installed there (not by moninit); the pinned one is not linked");
                continue;
            }
            Err(_) => {}
        }
        std::os::unix::fs::symlink(&plugin.dir, &link)?;
        changed = true;
    }
    for entry in std::fs::read_dir(plugins_dir)?.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let ours = std::fs::read_link(&path).is_ok_and(|t| t.starts_with(&store.dir));
        if ours && !wanted.contains(&name) {
            std::fs::remove_file(&path)?;
            changed = true;
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_of_each_scheme_parse_and_print_back() {
        for text in [
            "s3://bucket/artifacts/prometheus-2.53.4.linux-amd64.tar.gz",
            "https://github.com/prometheus/prometheus/releases/download/v2.53.4/prometheus-2.53.4.linux-amd64.tar.gz",
            "file:///opt/archives/grafana.tar.gz",
        ] {
            assert_eq!(Url::parse(text).unwrap().to_string(), text);
        }
        assert!(Url::parse("s3://bucket/").is_err());
        assert!(Url::parse("ftp://x/y")
            .unwrap_err()
            .contains("s3://BUCKET/KEY"));
        assert!(Url::parse("file://relative").is_err());
    }

    #[test]
    fn a_sha256_is_64_hex_digits_any_case() {
        let upper = "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855";
        assert_eq!(Sha256::parse(upper).unwrap().as_str(), upper.to_lowercase());
        assert!(Sha256::parse("abc")
            .unwrap_err()
            .contains("64 hexadecimal digits"));
    }
}
