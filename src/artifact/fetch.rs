//! Downloads an archive into a temporary file, hashing every byte as it arrives.
//!
//! The SHA-256 is computed while streaming, so a wrong archive is refused without a second
//! read and before any entry is unpacked. The size cap is checked against the announced
//! length first and against the bytes received as they come, so an oversized archive never
//! fills the disk. A body shorter than announced is a truncated download, reported as such.
//!
//! Sources: S3 with the same client (credentials, endpoint) as the inputs; HTTP(S) through
//! hyper with rustls, following up to 5 redirects (release downloads redirect to a CDN), never
//! from `https://` down to `http://`, and for `https://` honouring `HTTPS_PROXY` and
//! `NO_PROXY` (CONNECT tunnels); local files.

use std::path::Path;

use bytes::Bytes;
use http_body_util::BodyExt;
use sha2::Digest;
use tokio::io::AsyncWriteExt;

use super::{Error, Pin, Sha256, Url};

/// Redirects followed before giving up.
const MAX_REDIRECTS: usize = 5;

/// Where a download lands, and what it was.
pub struct Downloaded {
    pub file: tempfile::NamedTempFile,
    pub bytes: u64,
}

/// Downloads `pin` into a temporary file in `dir`, verifying its SHA-256 and size.
pub async fn download(
    pin: &Pin,
    s3: Option<&aws_sdk_s3::Client>,
    dir: &Path,
    max_bytes: u64,
) -> Result<Downloaded, Error> {
    let url = &pin.url;
    let tmp = tempfile::Builder::new()
        .prefix(".download-")
        .tempfile_in(dir)
        .map_err(|e| Error::io(url, dir, e))?;
    let std_file = tmp.reopen().map_err(|e| Error::io(url, tmp.path(), e))?;
    let mut sink = Sink {
        url,
        path: tmp.path().to_owned(),
        file: tokio::fs::File::from_std(std_file),
        hasher: sha2::Sha256::new(),
        bytes: 0,
        max_bytes,
    };
    match url {
        Url::S3 { bucket, key } => {
            let client = s3.ok_or_else(|| Error::fetch(url, "no S3 client (internal)"))?;
            from_s3(client, bucket, key, &mut sink).await?
        }
        Url::Http(u) => from_http(u, &mut sink).await?,
        Url::File(p) => from_file(p, &mut sink).await?,
    }
    sink.file
        .flush()
        .await
        .map_err(|e| Error::io(url, &sink.path, e))?;
    sink.file
        .sync_all()
        .await
        .map_err(|e| Error::io(url, &sink.path, e))?;
    let actual = hex::encode(sink.hasher.finalize());
    if actual != pin.sha256.as_str() {
        return Err(Error::rejected(
            url,
            format!(
                "SHA-256 mismatch: the pin says {}, the {} bytes downloaded hash to {actual}; nothing was unpacked",
                pin.sha256, sink.bytes
            ),
        ));
    }
    Ok(Downloaded {
        file: tmp,
        bytes: sink.bytes,
    })
}

struct Sink<'a> {
    url: &'a Url,
    path: std::path::PathBuf,
    file: tokio::fs::File,
    hasher: sha2::Sha256,
    bytes: u64,
    max_bytes: u64,
}

impl Sink<'_> {
    fn announce(&self, length: Option<u64>) -> Result<(), Error> {
        match length {
            Some(n) if n > self.max_bytes => Err(self.too_large(n)),
            _ => Ok(()),
        }
    }

    fn too_large(&self, n: u64) -> Error {
        Error::rejected(
            self.url,
            format!(
                "the archive is {n} bytes or more, over the cap of {} (fetch.max_archive_bytes)",
                self.max_bytes
            ),
        )
    }

    async fn write(&mut self, chunk: &[u8]) -> Result<(), Error> {
        self.bytes += chunk.len() as u64;
        if self.bytes > self.max_bytes {
            return Err(self.too_large(self.bytes));
        }
        self.hasher.update(chunk);
        self.file
            .write_all(chunk)
            .await
            .map_err(|e| Error::io(self.url, &self.path, e))
    }

    /// A transfer that failed part-way, with what had arrived.
    fn interrupted(&self, e: &dyn std::error::Error) -> Error {
        Error::fetch(
            self.url,
            format!(
                "download interrupted after {} bytes: {}",
                self.bytes,
                crate::source::chain(e)
            ),
        )
    }

    /// A body that ended before its announced length.
    fn check_complete(&self, announced: Option<u64>) -> Result<(), Error> {
        match announced {
            Some(n) if self.bytes < n => Err(Error::fetch(
                self.url,
                format!(
                    "truncated download: the connection ended after {} of {n} bytes",
                    self.bytes
                ),
            )),
            _ => Ok(()),
        }
    }
}

async fn from_s3(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    sink: &mut Sink<'_>,
) -> Result<(), Error> {
    let url = sink.url;
    let out = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(
            |e| match crate::source::Error::aws(url.to_string(), "GetObject", &e) {
                crate::source::Error::Aws { code, message, .. } => {
                    Error::fetch(url, format!("GetObject failed: {code}: {message}"))
                }
                other => Error::fetch(url, other.to_string()),
            },
        )?;
    let announced = out.content_length().map(|n| n.max(0) as u64);
    sink.announce(announced)?;
    let mut body = out.body;
    loop {
        match body.try_next().await {
            Ok(Some(chunk)) => sink.write(&chunk).await?,
            Ok(None) => break,
            Err(e) => return Err(sink.interrupted(&e)),
        }
    }
    sink.check_complete(announced)
}

async fn from_file(path: &Path, sink: &mut Sink<'_>) -> Result<(), Error> {
    use tokio::io::AsyncReadExt;
    let url = sink.url;
    let mut f = tokio::fs::File::open(path)
        .await
        .map_err(|e| Error::fetch(url, e.to_string()))?;
    let len = f.metadata().await.ok().map(|m| m.len());
    sink.announce(len)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .await
            .map_err(|e| Error::fetch(url, e.to_string()))?;
        if n == 0 {
            return Ok(());
        }
        sink.write(&buf[..n]).await?;
    }
}

type Body = http_body_util::Empty<Bytes>;

async fn from_http(start: &str, sink: &mut Sink<'_>) -> Result<(), Error> {
    let url = sink.url;
    let mut target: http::Uri = start
        .parse()
        .map_err(|e| Error::fetch(url, format!("{e}")))?;
    for _ in 0..=MAX_REDIRECTS {
        let response = get(&target)
            .await
            .map_err(|e| Error::fetch(url, format!("GET {target}: {e}")))?;
        let status = response.status();
        if status.is_redirection() {
            let location = response
                .headers()
                .get(http::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .ok_or_else(|| Error::fetch(url, format!("{status} without a Location")))?;
            let next = resolve(&target, location)
                .ok_or_else(|| Error::fetch(url, format!("bad redirect to `{location}`")))?;
            if target.scheme_str() == Some("https") && next.scheme_str() != Some("https") {
                return Err(Error::fetch(
                    url,
                    format!("redirect from https down to `{next}` refused"),
                ));
            }
            target = next;
            continue;
        }
        if status != http::StatusCode::OK {
            return Err(Error::fetch(url, format!("GET {target}: HTTP {status}")));
        }
        let announced = response
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok());
        sink.announce(announced)?;
        let mut body = response.into_body();
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => {
                    if let Some(data) = frame.data_ref() {
                        sink.write(data).await?;
                    }
                }
                Err(e) => {
                    sink.check_complete(announced)?;
                    return Err(sink.interrupted(&e));
                }
            }
        }
        return sink.check_complete(announced);
    }
    Err(Error::fetch(
        url,
        format!("more than {MAX_REDIRECTS} redirects"),
    ))
}

/// `location` relative to `base`.
fn resolve(base: &http::Uri, location: &str) -> Option<http::Uri> {
    let loc: http::Uri = location.parse().ok()?;
    if loc.scheme().is_some() {
        return Some(loc);
    }
    let mut parts = base.clone().into_parts();
    parts.path_and_query = loc.path_and_query().cloned();
    http::Uri::from_parts(parts).ok()
}

/// One GET: directly, or for `https://` through the CONNECT proxy that `HTTPS_PROXY` names
/// (unless `NO_PROXY` covers the host). Plain `http://` always connects directly: it is for
/// mirrors on the local network.
async fn get(uri: &http::Uri) -> Result<http::Response<hyper::body::Incoming>, String> {
    use hyper_util::client::legacy::{connect::HttpConnector, Client};
    use hyper_util::rt::TokioExecutor;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(std::time::Duration::from_secs(10)));
    let request = http::Request::get(uri.clone())
        .header(
            http::header::USER_AGENT,
            concat!("moninit/", env!("CARGO_PKG_VERSION")),
        )
        .body(Body::new())
        .map_err(|e| e.to_string())?;
    let tls = || {
        hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(rustls::crypto::aws_lc_rs::default_provider())
            .map_err(|e| format!("no trusted CA certificates: {e}"))
    };
    let proxy = (uri.scheme_str() == Some("https"))
        .then(|| hyper_util::client::proxy::matcher::Matcher::from_env().intercept(uri))
        .flatten();
    let response = match proxy {
        Some(proxy) => {
            let mut tunnel =
                hyper_util::client::legacy::connect::proxy::Tunnel::new(proxy.uri().clone(), http);
            if let Some(auth) = proxy.basic_auth() {
                tunnel = tunnel.with_auth(auth.clone());
            }
            let https = tls()?.https_only().enable_http1().wrap_connector(tunnel);
            Client::builder(TokioExecutor::new())
                .build::<_, Body>(https)
                .request(request)
                .await
        }
        None => {
            let https = tls()?.https_or_http().enable_http1().wrap_connector(http);
            Client::builder(TokioExecutor::new())
                .build::<_, Body>(https)
                .request(request)
                .await
        }
    };
    response.map_err(|e| crate::source::chain(&e))
}

/// The digest a file has (for tests and the cache check).
pub fn sha256_of(path: &Path) -> std::io::Result<Sha256> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(Sha256::parse(&hex::encode(h.finalize())).expect("a digest is 64 hex digits"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_resolve_absolute_and_relative_locations() {
        let base: http::Uri = "https://github.com/p/releases/download/v1/a.tar.gz"
            .parse()
            .unwrap();
        assert_eq!(
            resolve(&base, "https://objects.example/x?sig=1")
                .unwrap()
                .to_string(),
            "https://objects.example/x?sig=1"
        );
        assert_eq!(
            resolve(&base, "/other/b.tar.gz").unwrap().to_string(),
            "https://github.com/other/b.tar.gz"
        );
    }
}
