//! Fetches every object under an S3 prefix: `ListObjectsV2` (paginated), then `GetObject`
//! for each key with a bounded number in flight.
//!
//! Keys ending in `/` (folder markers made by the console) are skipped. Objects larger than
//! `fetch.max_object_bytes` are refused before download, naming the key. A prefix with no
//! objects is an error.

use futures::stream::{self, StreamExt, TryStreamExt};

use super::{Config, Error, InputFile, Snapshot};

/// Builds the S3 client: path-style addressing whenever an endpoint override is in effect,
/// since local stand-ins (moto) do not serve virtual-hosted buckets.
pub fn client(sdk: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    let overridden = ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()));
    let conf = aws_sdk_s3::config::Builder::from(sdk)
        .force_path_style(overridden)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// One listed object.
pub(crate) struct Listed {
    pub key: String,
    pub etag: String,
    pub size: i64,
}

/// Lists every object under `s3://bucket/prefix` (`ListObjectsV2`, paginated): folder
/// markers skipped, an object over `fetch.max_object_bytes` refused naming its key, an empty
/// prefix an error. Returns the objects and the pages it took.
pub(crate) async fn list(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
    config: &Config,
) -> Result<(Vec<Listed>, u64), Error> {
    let origin = format!("s3://{bucket}/{prefix}");
    let mut listed = Vec::new();
    let mut pages_read = 0;
    let mut pages = client
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        pages_read += 1;
        let page = page.map_err(|e| Error::aws(&origin, "ListObjectsV2", &e))?;
        for object in page.contents() {
            let Some(key) = object.key() else { continue };
            if key.ends_with('/') {
                continue;
            }
            let size = object.size().unwrap_or(0);
            if size.max(0) as u64 > config.max_object_bytes {
                return Err(Error::Input {
                    origin: format!("s3://{bucket}/{key}"),
                    message: format!(
                        "object is {size} bytes, over the limit of {} (fetch.max_object_bytes)",
                        config.max_object_bytes
                    ),
                });
            }
            listed.push(Listed {
                key: key.to_owned(),
                etag: object.e_tag().unwrap_or_default().to_owned(),
                size,
            });
        }
    }
    // An emptied prefix (a wrong prefix in a deploy script, a `sync --delete` from the wrong
    // folder) would install a configuration without a dashboard or a scrape job: an error, as
    // an empty SSM path is.
    if listed.is_empty() {
        return Err(Error::Input {
            origin,
            message: "no objects under this prefix (check the prefix, and s3:ListBucket permission on it)".into(),
        });
    }
    tracing::debug!(source = %origin, objects = listed.len(), "listed S3 prefix");
    Ok((listed, pages_read))
}

/// Lists and downloads every object under `s3://bucket/prefix`.
pub async fn fetch(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
    config: &Config,
) -> Result<Snapshot, Error> {
    let (listed, _) = list(client, bucket, prefix, config).await?;
    let keys = listed.into_iter().map(|o| o.key);
    let files: Vec<(String, InputFile)> = stream::iter(keys)
        .map(|key| get(client, bucket, prefix, key, config.max_object_bytes))
        .buffer_unordered(config.concurrency.max(1))
        .try_collect()
        .await?;
    let mut snapshot = Snapshot::default();
    snapshot.files.extend(files);
    Ok(snapshot)
}

/// Downloads one object: its path relative to `prefix`, and the file.
pub(crate) async fn get(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
    key: String,
    max_bytes: u64,
) -> Result<(String, InputFile), Error> {
    let origin = format!("s3://{bucket}/{key}");
    let out = client
        .get_object()
        .bucket(bucket)
        .key(&key)
        .send()
        .await
        .map_err(|e| Error::aws(&origin, "GetObject", &e))?;
    // Checked again here: the object may have been replaced since it was listed.
    let size = out.content_length().unwrap_or(0).max(0) as u64;
    if size > max_bytes {
        return Err(Error::Input {
            origin,
            message: format!(
                "object is {size} bytes, over the limit of {max_bytes} (fetch.max_object_bytes)"
            ),
        });
    }
    let bytes = out.body.collect().await.map_err(|e| Error::Input {
        origin: origin.clone(),
        message: format!("reading the object failed: {}", super::chain(&e)),
    })?;
    let relative = key.strip_prefix(prefix).unwrap_or(&key).to_owned();
    Ok((
        relative,
        InputFile {
            origin,
            bytes: bytes.into_bytes().to_vec(),
        },
    ))
}
