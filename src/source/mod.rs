//! Where inputs come from: S3 prefixes, SSM Parameter Store paths and local directories,
//! fetched in parallel into one immutable [`Snapshot`].
//!
//! Invariants:
//! - every input file and parameter remembers its origin (`s3://bucket/key`, an SSM name, a
//!   local path), so any later error can name it;
//! - sources are overlaid in the order the config lists them: a later source's file or
//!   parameter replaces an earlier one with the same path (logged at debug);
//! - SecureString values (and `secrets.yaml` values of local sources) are registered with
//!   [`crate::secret`] the moment they are read, before anything could log them.

pub mod file;
pub mod imds;
pub mod params;
pub mod s3;
pub mod ssm;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

pub use params::{ParamValue, Params};

/// One entry of the agent config's `sources:` list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceUrl {
    /// `s3://BUCKET/PREFIX/`: every object under the prefix is an input file.
    S3 { bucket: String, prefix: String },
    /// `ssm:/PATH/`: every parameter under the path (recursively) is a template parameter.
    Ssm { path: String },
    /// `file:///DIR/`: a local directory with the same layout as an S3 prefix, plus
    /// `params.yaml` (parameters) and `secrets.yaml` (parameters treated as SecureStrings).
    File { dir: PathBuf },
}

impl SourceUrl {
    /// Parses `s3://`, `ssm:/` and `file:///` URLs; the message says what form is expected.
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some(rest) = text.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(format!(
                    "`{text}`: an S3 source needs a bucket: s3://BUCKET/PREFIX/"
                ));
            }
            let mut prefix = prefix.to_owned();
            if !prefix.is_empty() && !prefix.ends_with('/') {
                prefix.push('/');
            }
            return Ok(SourceUrl::S3 {
                bucket: bucket.to_owned(),
                prefix,
            });
        }
        if let Some(rest) = text.strip_prefix("ssm:") {
            if !rest.starts_with('/') {
                return Err(format!("`{text}`: an SSM source is a path: ssm:/PATH/"));
            }
            let mut path = rest.to_owned();
            if !path.ends_with('/') {
                path.push('/');
            }
            return Ok(SourceUrl::Ssm { path });
        }
        if let Some(rest) = text.strip_prefix("file://") {
            if !rest.starts_with('/') {
                return Err(format!(
                    "`{text}`: a local source is an absolute path: file:///DIR/"
                ));
            }
            return Ok(SourceUrl::File {
                dir: PathBuf::from(rest),
            });
        }
        Err(format!(
            "`{text}`: a source is s3://BUCKET/PREFIX/, ssm:/PATH/ or file:///DIR/"
        ))
    }

    /// Whether fetching this source needs AWS credentials and a region.
    pub fn needs_aws(&self) -> bool {
        !matches!(self, SourceUrl::File { .. })
    }
}

impl fmt::Display for SourceUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceUrl::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
            SourceUrl::Ssm { path } => write!(f, "ssm:{path}"),
            SourceUrl::File { dir } => write!(f, "file://{}", dir.display()),
        }
    }
}

impl<'de> Deserialize<'de> for SourceUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        SourceUrl::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// How inputs are fetched.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// How many S3 objects are downloaded at once.
    pub concurrency: usize,
    /// Seconds the whole fetch may take, retries included, before boot fails.
    pub deadline_secs: u64,
    /// Largest accepted S3 object, in bytes; a bigger input is an error, not an OOM.
    pub max_object_bytes: u64,
    /// Largest accepted program archive, in bytes (Grafana's is about 200 MB).
    pub max_archive_bytes: u64,
    /// The oldest last-known-good snapshot a boot may start from when the sources cannot
    /// answer, in seconds (0: never boot from it).
    pub last_good_max_age_secs: u64,
}

impl Config {
    pub const DEFAULT_CONCURRENCY: usize = 32;
    pub const DEFAULT_DEADLINE_SECS: u64 = 60;
    pub const DEFAULT_MAX_OBJECT_BYTES: u64 = 16 * 1024 * 1024;
    pub const DEFAULT_MAX_ARCHIVE_BYTES: u64 = 1024 * 1024 * 1024;
    /// A week: longer than any regional outage, shorter than a configuration goes stale.
    pub const DEFAULT_LAST_GOOD_MAX_AGE_SECS: u64 = 7 * 24 * 3600;

    pub fn deadline(&self) -> Duration {
        Duration::from_secs(self.deadline_secs)
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            concurrency: Self::DEFAULT_CONCURRENCY,
            deadline_secs: Self::DEFAULT_DEADLINE_SECS,
            max_object_bytes: Self::DEFAULT_MAX_OBJECT_BYTES,
            max_archive_bytes: Self::DEFAULT_MAX_ARCHIVE_BYTES,
            last_good_max_age_secs: Self::DEFAULT_LAST_GOOD_MAX_AGE_SECS,
        }
    }
}

/// One input file and where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputFile {
    /// Where the file came from, as a user would write it (`s3://bucket/key`, a local path).
    pub origin: String,
    pub bytes: Vec<u8>,
}

/// Everything fetched from all sources, overlaid in order.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Input files by their path under the source (`prometheus/scrape_configs/node.yml`).
    pub files: BTreeMap<String, InputFile>,
    /// Template parameters, nested by `/`.
    pub params: Params,
}

impl Snapshot {
    /// Adds `other` on top of `self`: same-path files and parameters are replaced.
    pub fn overlay(&mut self, other: Snapshot) -> Result<(), Error> {
        for (path, file) in other.files {
            if let Some(old) = self.files.insert(path.clone(), file) {
                tracing::debug!(path, replaced = %old.origin, "input file overridden by a later source");
            }
        }
        self.params.merge(other.params)
    }
}

/// Why fetching failed; every variant names the source and what a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{origin}: {operation} failed: {code}: {message}")]
    Aws {
        origin: String,
        operation: &'static str,
        code: String,
        message: String,
    },
    #[error("{origin}: {message}")]
    Input { origin: String, message: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// An input fetched fine but cannot be read as what it claims to be (a malformed
    /// `params.yaml`): the input is wrong, not the fetch, so it is a render error (exit 5).
    #[error("{origin}: {message}")]
    Malformed { origin: String, message: String },
    /// Parameters whose names cannot form one tree: also the input's fault (exit 5).
    #[error("{0}")]
    Params(String),
    #[error("fetching the inputs did not finish within the {occasion} deadline of {secs} s (fetch.deadline_secs); last sources pending: {pending}")]
    Deadline {
        occasion: Occasion,
        secs: u64,
        pending: String,
    },
    #[error("instance metadata (IMDSv2): {0}")]
    Imds(String),
}

impl Error {
    /// Whether a later try could succeed with the same inputs: the service unreachable, a
    /// deadline, throttling, a 5xx, AccessDenied or NoSuchBucket (an IAM policy or a bucket
    /// being fixed). Bad input (an empty prefix, an oversized object, a malformed file) is
    /// not: a later try would fetch the same.
    pub fn retryable(&self) -> bool {
        match self {
            Error::Deadline { .. } => true,
            Error::Aws { code, .. } => {
                let code = code.as_str();
                matches!(
                    code,
                    "DispatchFailure"
                        | "Timeout"
                        | "RequestFailed"
                        | "AccessDenied"
                        | "AccessDeniedException"
                        | "NoSuchBucket"
                        | "InternalError"
                        | "InternalServerError"
                        | "InternalServerErrorException"
                        | "ServiceUnavailable"
                        | "SlowDown"
                        | "RequestLimitExceeded"
                        | "TooManyRequestsException"
                        | "Unknown"
                ) || code.contains("Throttl")
            }
            _ => false,
        }
    }

    /// Builds an [`Error::Aws`] from an SDK error, keeping the AWS error code and message.
    pub fn aws<E>(origin: impl Into<String>, operation: &'static str, err: &SdkError<E>) -> Self
    where
        E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
    {
        let AwsFailure { code, message, .. } = AwsFailure::of(err);
        Error::Aws {
            origin: origin.into(),
            operation,
            code,
            message,
        }
    }
}

/// An AWS SDK error, as every service's client returns it.
pub type SdkError<E> = aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>;

/// What a failed AWS call said, read once for every caller (the fetch, AMP's control plane,
/// `moninit doctor`): the HTTP status, the AWS error code and its message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AwsFailure {
    pub status: Option<u16>,
    /// The service's code; `AccessDenied` for a 403 without one; else `Timeout`,
    /// `DispatchFailure` (unreachable) or `RequestFailed`.
    pub code: String,
    pub message: String,
}

impl AwsFailure {
    /// Longest part of an unparsed answer quoted in a message.
    const QUOTED: usize = 300;

    pub fn of<E>(err: &SdkError<E>) -> Self
    where
        E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
    {
        let status = err.raw_response().map(|r| r.status().as_u16());
        let default_code = |kind: &str| match status {
            Some(403) => "AccessDenied".to_owned(),
            _ => kind.to_owned(),
        };
        let (code, message) = match err {
            aws_sdk_s3::error::SdkError::ServiceError(e) => (
                e.err()
                    .code()
                    .map(str::to_owned)
                    .unwrap_or_else(|| default_code("Unknown")),
                e.err()
                    .message()
                    .map(str::to_owned)
                    .unwrap_or_else(|| e.err().to_string()),
            ),
            aws_sdk_s3::error::SdkError::TimeoutError(_) => {
                ("Timeout".to_owned(), "the request timed out".to_owned())
            }
            aws_sdk_s3::error::SdkError::DispatchFailure(_) => (
                "DispatchFailure".to_owned(),
                format!("could not reach the service: {}", chain(err)),
            ),
            // An answer the SDK could not read as the service's error (a proxy's page, an XML
            // error from a JSON service): an error answer's body says more than the parse
            // error. A 2xx body is never quoted: it may hold decrypted values.
            other => {
                let quoted = err
                    .raw_response()
                    .filter(|r| !r.status().is_success())
                    .and_then(|r| r.body().bytes())
                    .map(|b| {
                        String::from_utf8_lossy(b)
                            .trim()
                            .chars()
                            .take(Self::QUOTED)
                            .collect::<String>()
                    })
                    .filter(|b| !b.is_empty());
                (
                    default_code("RequestFailed"),
                    quoted.unwrap_or_else(|| chain(other)),
                )
            }
        };
        AwsFailure {
            status,
            code,
            message,
        }
    }

    /// AWS said no: the caller lacks a permission (IAM, a bucket policy, a key policy).
    pub fn denied(&self) -> bool {
        self.status == Some(403)
            || self.code.contains("AccessDenied")
            || self.code.contains("Unauthorized")
            || self.message.contains("not authorized")
    }

    /// `HTTP 403 AccessDenied: …`, or the message alone when nothing answered.
    pub fn text(&self) -> String {
        let message: String = self.message.chars().take(Self::QUOTED).collect();
        match self.status {
            Some(s) => format!("HTTP {s} {}: {message}", self.code),
            None => message,
        }
    }
}

/// The error and its causes on one line: SDK errors hide the useful part in `source()`.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut next = err.source();
    while let Some(e) = next {
        let s = e.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        next = e.source();
    }
    out
}

/// Loads the AWS SDK configuration from the standard chain (environment, profile, web
/// identity, ECS, IMDSv2), honouring `AWS_ENDPOINT_URL` and the service-specific endpoint
/// variables, with the standard retry mode and per-attempt timeouts.
pub async fn aws_config(region: &str) -> aws_config::SdkConfig {
    use aws_config::retry::RetryConfig;
    use aws_config::timeout::TimeoutConfig;
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(region.to_owned()))
        .retry_config(RetryConfig::standard().with_max_attempts(5))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .operation_attempt_timeout(Duration::from_secs(15))
                .build(),
        )
        .load()
        .await
}

/// Why inputs are being fetched, so a missed deadline says which one it was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Occasion {
    /// `moninit run` starting.
    Boot,
    /// `moninit run` re-fetching on SIGHUP.
    Reload,
    /// `moninit render` or `moninit check`.
    Command,
}

impl fmt::Display for Occasion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Occasion::Boot => "boot",
            Occasion::Reload => "reload",
            Occasion::Command => "fetch",
        })
    }
}

/// Fetches one source as boot does: an S3 prefix's objects (with its parameters files), an
/// SSM path's parameters (SecureStrings decrypted), a local directory. The clients are
/// needed for S3 and SSM sources.
pub async fn fetch_one(
    source: &SourceUrl,
    s3: Option<&aws_sdk_s3::Client>,
    ssm: Option<&aws_sdk_ssm::Client>,
    config: &Config,
) -> Result<Snapshot, Error> {
    match source {
        SourceUrl::S3 { bucket, prefix } => {
            let client = s3.expect("S3 client exists when an S3 source does");
            let mut snap = s3::fetch(client, bucket, prefix, config).await?;
            file::extract_params(&mut snap)?;
            Ok(snap)
        }
        SourceUrl::Ssm { path } => {
            ssm::fetch(
                ssm.expect("SSM client exists when an SSM source does"),
                path,
            )
            .await
        }
        SourceUrl::File { dir } => file::fetch(dir, config).await,
    }
}

/// Fetches every source concurrently and overlays them in the listed order, within
/// `config.deadline()`.
/// `sdk` is the AWS configuration ([`aws_config`]), needed when any source is S3 or SSM.
pub async fn fetch_all(
    sources: &[SourceUrl],
    sdk: Option<&aws_config::SdkConfig>,
    config: &Config,
    occasion: Occasion,
) -> Result<Snapshot, Error> {
    use std::collections::BTreeSet;
    use std::sync::Mutex;

    let s3 = sdk.map(s3::client);
    let ssm = sdk.map(aws_sdk_ssm::Client::new);
    let pending: Mutex<BTreeSet<String>> =
        Mutex::new(sources.iter().map(|s| s.to_string()).collect());

    let fetches = sources.iter().map(|source| {
        let (s3, ssm, pending) = (&s3, &ssm, &pending);
        async move {
            let result = fetch_one(source, s3.as_ref(), ssm.as_ref(), config).await;
            pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&source.to_string());
            result
        }
    });
    let results =
        match tokio::time::timeout(config.deadline(), futures::future::join_all(fetches)).await {
            Ok(results) => results,
            Err(_) => {
                let pending = pending.lock().unwrap_or_else(|e| e.into_inner());
                let pending = pending.iter().cloned().collect::<Vec<_>>().join(", ");
                return Err(Error::Deadline {
                    occasion,
                    secs: config.deadline_secs,
                    pending,
                });
            }
        };
    let mut snapshot = Snapshot::default();
    for result in results {
        snapshot.overlay(result?)?;
    }
    Ok(snapshot)
}
