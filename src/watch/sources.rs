//! Watch rounds over the sources: what changed is fetched, nothing else.
//!
//! - S3: one `ListObjectsV2` page per 1,000 objects; an object is downloaded again only when
//!   its ETag or size differs from the copy held.
//! - SSM: one `DescribeParameters` page per 50 parameters (names and versions, no values, no
//!   KMS); only new or changed versions are read, 10 at a time, with `GetParameters`
//!   (decrypted). Where `ssm:DescribeParameters` is denied, the path is read whole with
//!   `GetParametersByPath` each round (said once in the log).
//! - `file://` directories are read again whole: they are local.
//!
//! Sources are read at once, as at boot. The first round fetches everything. A source with
//! nothing in it is an error, as at boot.

use std::collections::BTreeMap;

use futures::stream::{self, StreamExt, TryStreamExt};

use crate::source::{self, file, s3, ssm, InputFile, ParamValue, Params, Snapshot, SourceUrl};

/// The API calls a round made, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Calls {
    pub s3_list: u64,
    pub s3_get: u64,
    pub ssm_describe: u64,
    pub ssm_get: u64,
    pub ssm_get_by_path: u64,
}

impl Calls {
    fn add(&mut self, other: &Calls) {
        self.s3_list += other.s3_list;
        self.s3_get += other.s3_get;
        self.ssm_describe += other.ssm_describe;
        self.ssm_get += other.ssm_get;
        self.ssm_get_by_path += other.ssm_get_by_path;
    }

    pub fn total(&self) -> u64 {
        self.s3_list + self.s3_get + self.ssm_describe + self.ssm_get + self.ssm_get_by_path
    }

    /// (label, count) pairs, for metrics and logs.
    pub fn by_kind(&self) -> [(&'static str, u64); 5] {
        [
            ("s3_list_objects_v2", self.s3_list),
            ("s3_get_object", self.s3_get),
            ("ssm_describe_parameters", self.ssm_describe),
            ("ssm_get_parameters", self.ssm_get),
            ("ssm_get_parameters_by_path", self.ssm_get_by_path),
        ]
    }
}

/// What is held of one source between rounds.
enum Held {
    S3 {
        bucket: String,
        prefix: String,
        /// Key → (ETag, size, file).
        objects: BTreeMap<String, (String, i64, InputFile)>,
    },
    Ssm {
        path: String,
        /// Full name → (version, value).
        params: BTreeMap<String, (i64, ParamValue)>,
        describe_denied: bool,
    },
    File {
        dir: std::path::PathBuf,
    },
}

/// The sources, as last seen.
pub struct Tracker {
    held: Vec<Held>,
}

/// The clients a round needs; always built, since a SIGHUP may add S3 or SSM sources to a
/// node that booted from files (building them makes no request).
pub struct Clients {
    pub s3: aws_sdk_s3::Client,
    pub ssm: aws_sdk_ssm::Client,
}

impl Clients {
    pub fn new(sdk: &aws_config::SdkConfig) -> Self {
        Clients {
            s3: s3::client(sdk),
            ssm: aws_sdk_ssm::Client::new(sdk),
        }
    }
}

impl Tracker {
    pub fn new(sources: &[SourceUrl]) -> Self {
        let held = sources
            .iter()
            .map(|s| match s {
                SourceUrl::S3 { bucket, prefix } => Held::S3 {
                    bucket: bucket.clone(),
                    prefix: prefix.clone(),
                    objects: BTreeMap::new(),
                },
                SourceUrl::Ssm { path } => Held::Ssm {
                    path: path.clone(),
                    params: BTreeMap::new(),
                    describe_denied: false,
                },
                SourceUrl::File { dir } => Held::File { dir: dir.clone() },
            })
            .collect();
        Tracker { held }
    }

    /// One round over every source, all at once, within `config.deadline()`: the
    /// composite snapshot (sources overlaid in order) and the calls it took. A source that
    /// fails keeps what it held.
    pub async fn round(
        &mut self,
        clients: &Clients,
        config: &source::Config,
    ) -> Result<(Snapshot, Calls), source::Error> {
        let rounds = self.held.iter_mut().map(|held| async move {
            let mut calls = Calls::default();
            let part = match held {
                Held::S3 {
                    bucket,
                    prefix,
                    objects,
                } => s3_round(&clients.s3, bucket, prefix, objects, config, &mut calls).await?,
                Held::Ssm {
                    path,
                    params,
                    describe_denied,
                } => ssm_round(&clients.ssm, path, params, describe_denied, &mut calls).await?,
                Held::File { dir } => file::fetch(dir, config).await?,
            };
            Ok::<_, source::Error>((part, calls))
        });
        let work = async {
            let mut snapshot = Snapshot::default();
            let mut calls = Calls::default();
            for result in futures::future::join_all(rounds).await {
                let (part, c) = result?;
                calls.add(&c);
                snapshot.overlay(part)?;
            }
            Ok::<_, source::Error>((snapshot, calls))
        };
        match tokio::time::timeout(config.deadline(), work).await {
            Ok(r) => r,
            Err(_) => Err(source::Error::Deadline {
                occasion: source::Occasion::Reload,
                secs: config.deadline_secs,
                pending: "a watch round".into(),
            }),
        }
    }
}

async fn s3_round(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
    objects: &mut BTreeMap<String, (String, i64, InputFile)>,
    config: &source::Config,
    calls: &mut Calls,
) -> Result<Snapshot, source::Error> {
    let (objects_listed, pages) = s3::list(client, bucket, prefix, config).await?;
    calls.s3_list += pages;
    let listed: BTreeMap<String, (String, i64)> = objects_listed
        .into_iter()
        .map(|o| (o.key, (o.etag, o.size)))
        .collect();
    let changed: Vec<String> = listed
        .iter()
        .filter(|(key, (etag, size))| {
            objects
                .get(*key)
                .is_none_or(|(e, s, _)| e != etag || s != size || etag.is_empty())
        })
        .map(|(key, _)| key.clone())
        .collect();
    calls.s3_get += changed.len() as u64;
    let fetched: Vec<(String, InputFile)> = stream::iter(changed)
        .map(|key| async move {
            s3::get(client, bucket, prefix, key.clone(), config.max_object_bytes)
                .await
                .map(|(_, file)| (key, file))
        })
        .buffer_unordered(config.concurrency.max(1))
        .try_collect()
        .await?;
    let mut next: BTreeMap<String, (String, i64, InputFile)> = BTreeMap::new();
    let mut fetched: BTreeMap<String, InputFile> = fetched.into_iter().collect();
    for (key, (etag, size)) in listed {
        let file = match fetched.remove(&key) {
            Some(f) => f,
            None => match objects.remove(&key) {
                Some((_, _, f)) => f,
                None => continue,
            },
        };
        next.insert(key, (etag, size, file));
    }
    *objects = next;
    let mut snapshot = Snapshot::default();
    for (key, (_, _, file)) in objects.iter() {
        let relative = key.strip_prefix(prefix).unwrap_or(key).to_owned();
        snapshot.files.insert(relative, file.clone());
    }
    file::extract_params(&mut snapshot)?;
    Ok(snapshot)
}

async fn ssm_round(
    client: &aws_sdk_ssm::Client,
    path: &str,
    params: &mut BTreeMap<String, (i64, ParamValue)>,
    describe_denied: &mut bool,
    calls: &mut Calls,
) -> Result<Snapshot, source::Error> {
    let origin = format!("ssm:{path}");
    let query_path = ssm::query_path(path);
    if *describe_denied {
        calls.ssm_get_by_path += 1;
        return ssm::fetch(client, path).await;
    }
    let mut versions: BTreeMap<String, i64> = BTreeMap::new();
    let mut token: Option<String> = None;
    loop {
        calls.ssm_describe += 1;
        let filter = aws_sdk_ssm::types::ParameterStringFilter::builder()
            .key("Path")
            .option("Recursive")
            .values(query_path)
            .build()
            .map_err(|e| source::Error::Input {
                origin: origin.clone(),
                message: e.to_string(),
            })?;
        let page = client
            .describe_parameters()
            .parameter_filters(filter)
            .max_results(50)
            .set_next_token(token.take())
            .send()
            .await;
        let page = match page {
            Ok(p) => p,
            Err(e) => {
                let err = source::Error::aws(&origin, "DescribeParameters", &e);
                if matches!(&err, source::Error::Aws { code, .. } if code.starts_with("AccessDenied"))
                {
                    tracing::warn!(source = %origin, "ssm:DescribeParameters is denied: each watch round reads the whole path with GetParametersByPath instead (allow ssm:DescribeParameters on * for cheaper rounds)");
                    *describe_denied = true;
                    calls.ssm_get_by_path += 1;
                    return ssm::fetch(client, path).await;
                }
                return Err(err);
            }
        };
        for p in page.parameters() {
            if let Some(name) = p.name() {
                versions.insert(name.to_owned(), p.version());
            }
        }
        match page.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_owned()),
            _ => break,
        }
    }
    if versions.is_empty() {
        return Err(source::Error::Input {
            origin,
            message: "no parameters under this path (check the path and ssm:DescribeParameters / ssm:GetParametersByPath permission)".into(),
        });
    }
    let changed: Vec<String> = versions
        .iter()
        .filter(|(name, version)| params.get(*name).is_none_or(|(v, _)| v != *version))
        .map(|(name, _)| name.clone())
        .collect();
    let mut fetched: BTreeMap<String, (i64, ParamValue)> = BTreeMap::new();
    for batch in changed.chunks(10) {
        calls.ssm_get += 1;
        let out = client
            .get_parameters()
            .set_names(Some(batch.to_vec()))
            .with_decryption(true)
            .send()
            .await
            .map_err(|e| source::Error::aws(&origin, "GetParameters", &e))?;
        for p in out.parameters() {
            let version = p.version();
            if let Some((name, value)) = ssm::value(p) {
                fetched.insert(name, (version, value));
            }
        }
    }
    let mut next: BTreeMap<String, (i64, ParamValue)> = BTreeMap::new();
    for name in versions.keys() {
        let entry = match fetched.remove(name) {
            Some(e) => e,
            None => match params.remove(name) {
                Some(e) => e,
                // Deleted between the listing and the read: gone.
                None => continue,
            },
        };
        next.insert(name.clone(), entry);
    }
    *params = next;
    let mut tree = Params::default();
    for (name, (_, value)) in params.iter() {
        tree.insert(ssm::relative(name, query_path), value.clone())?;
    }
    Ok(Snapshot {
        files: Default::default(),
        params: tree,
    })
}
