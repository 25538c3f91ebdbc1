//! The permissions and resources boot needs, each proven by the smallest real call that
//! needs it: the credential chain, the workspace, every S3 prefix and SSM path (and KMS for
//! SecureStrings), the pinned archives in S3, AMP's rule groups and Alertmanager (when
//! `amp.sync` is on), and `SetInstanceHealth` on the group (when reporting is on).
//!
//! A denied call names the IAM action it needed and the resource, with a statement granting
//! it. Values read (SecureStrings included) are registered as secrets and never shown.

use super::report::{grant, grant_when, Check};
use crate::source::SourceUrl;

/// What a failed call said (read once for the whole project: [`crate::source::AwsFailure`]).
pub use crate::source::AwsFailure as Failure;

/// What the checks share: the AWS configuration and the account (for ARNs), once known.
pub struct Aws {
    pub sdk: aws_config::SdkConfig,
    pub region: String,
    /// From the workspace's ARN; `*` until then.
    pub account: String,
}

impl Aws {
    fn arn(&self, service: &str, resource: &str) -> String {
        format!(
            "arn:aws:{service}:{}:{}:{resource}",
            self.region, self.account
        )
    }

    /// The credential chain: which provider answered, and when the credentials expire.
    pub async fn credentials(&self) -> Check {
        use aws_credential_types::provider::ProvideCredentials;
        let name = "credentials";
        let Some(provider) = self.sdk.credentials_provider() else {
            return Check::fail(name, "no credential provider is configured", "run on an instance with an instance profile, or set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY");
        };
        match provider.provide_credentials().await {
            Ok(creds) => {
                // The provider's name is only in the redacted Debug form.
                let debug = format!("{creds:?}");
                let source = debug
                    .split("provider_name: \"")
                    .nth(1)
                    .and_then(|s| s.split('"').next())
                    .unwrap_or("unknown");
                let key: String = creds.access_key_id().chars().take(4).collect();
                let expiry = match creds.expiry() {
                    Some(t) => {
                        let left = t
                            .duration_since(std::time::SystemTime::now())
                            .unwrap_or_default();
                        format!("expire in {} min (refreshed before then)", left.as_secs() / 60)
                    }
                    None => "do not expire".into(),
                };
                Check::pass(
                    name,
                    format!("from {source} (access key {key}…); they {expiry}"),
                )
            }
            Err(e) => Check::fail(
                name,
                format!("no provider in the chain answered: {}", crate::source::chain(&e)),
                "attach an instance profile (IMDSv2 must be reachable), or set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY",
            ),
        }
    }

    /// The workspace exists in this region and is ACTIVE; learns the account from its ARN.
    pub async fn workspace(&mut self, workspace: &str) -> Check {
        let name = format!("workspace {workspace}");
        let client = aws_sdk_amp::Client::new(&self.sdk);
        match client
            .describe_workspace()
            .workspace_id(workspace)
            .send()
            .await
        {
            Ok(out) => {
                let Some(ws) = out.workspace() else {
                    return Check::fail(
                        name,
                        "DescribeWorkspace answered without a workspace",
                        "check the workspace id",
                    );
                };
                if let Some(account) = ws.arn().split(':').nth(4).filter(|a| !a.is_empty()) {
                    self.account = account.to_owned();
                }
                let status = ws
                    .status()
                    .map(|s| s.status_code().as_str().to_owned())
                    .unwrap_or_default();
                if status == "UPDATING" {
                    return Check::warn(
                        name,
                        format!("UPDATING in {} ({}): usable", self.region, ws.arn()),
                        "nothing to do unless it stays UPDATING",
                    );
                }
                if status == "ACTIVE" {
                    Check::pass(name, format!("ACTIVE in {} ({})", self.region, ws.arn()))
                } else {
                    Check::fail(
                        name,
                        format!("{status} in {}", self.region),
                        "wait until the workspace is ACTIVE, or use another",
                    )
                }
            }
            Err(e) => {
                let f = Failure::of(&e);
                if f.denied() {
                    Check::fail(
                        name,
                        format!("aps:DescribeWorkspace denied: {}", f.text()),
                        grant(
                            "aps:DescribeWorkspace",
                            &self.arn("aps", &format!("workspace/{workspace}")),
                        ),
                    )
                } else if f.status == Some(404) {
                    Check::fail(name, format!("not found in {}: {}", self.region, f.text()), format!("check `workspace_id` and `region` (aws amp list-workspaces --region {})", self.region))
                } else {
                    Check::fail(name, f.text(), "check the network path to AMP's control plane (aps.REGION.amazonaws.com) and the region")
                }
            }
        }
    }

    /// Lists an S3 prefix and reads one byte of its first object.
    pub async fn s3(&self, bucket: &str, prefix: &str) -> Check {
        let name = format!("s3://{bucket}/{prefix}");
        let client = crate::source::s3::client(&self.sdk);
        let listed = client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .max_keys(1000)
            .send()
            .await;
        let page = match listed {
            Ok(page) => page,
            Err(e) => {
                let f = Failure::of(&e);
                return if f.denied() {
                    Check::fail(
                        &name,
                        format!("s3:ListBucket denied: {}", f.text()),
                        grant_when(
                            "s3:ListBucket",
                            &format!("arn:aws:s3:::{bucket}"),
                            Some(
                                serde_json::json!({"StringLike": {"s3:prefix": [prefix, format!("{prefix}*")]}}),
                            ),
                        ),
                    )
                } else if f.code == "NoSuchBucket" {
                    Check::fail(
                        &name,
                        format!("no such bucket: {}", f.text()),
                        "check the bucket name in `sources` (and the region)",
                    )
                } else {
                    Check::fail(
                        &name,
                        f.text(),
                        "check the network path to S3 (a VPC endpoint policy, a proxy)",
                    )
                };
            }
        };
        if page.contents().is_empty() {
            return Check::fail(
                &name,
                "no objects under the prefix: boot would refuse an empty source",
                "upload the inputs, or fix the prefix in `sources`",
            );
        }
        // The S3 console's `prefix/` folder markers are empty: a range read of them is 416.
        let Some(first) = page
            .contents()
            .iter()
            .filter(|o| o.size().unwrap_or_default() > 0)
            .find_map(|o| o.key().filter(|k| !k.ends_with('/')))
        else {
            return Check::pass(
                &name,
                "listed: only empty objects or folder markers on the first page",
            );
        };
        let count = page.key_count().unwrap_or_default();
        let more = if page.is_truncated() == Some(true) {
            "+"
        } else {
            ""
        };
        match client
            .get_object()
            .bucket(bucket)
            .key(first)
            .range("bytes=0-0")
            .send()
            .await
        {
            Ok(_) => Check::pass(&name, format!("listed {count}{more} objects; read {first}")),
            Err(e) => {
                let f = Failure::of(&e);
                if f.denied() {
                    Check::fail(
                        &name,
                        format!(
                            "listed {count}{more} objects, but s3:GetObject on {first} denied: {}",
                            f.text()
                        ),
                        grant("s3:GetObject", &format!("arn:aws:s3:::{bucket}/{prefix}*")),
                    )
                } else {
                    Check::fail(
                        &name,
                        format!("reading {first}: {}", f.text()),
                        "check the object (KMS key policy for SSE-KMS objects)",
                    )
                }
            }
        }
    }

    /// Reads an SSM path, first without decryption (ssm:GetParametersByPath), then as boot
    /// does, decrypting SecureStrings (kms:Decrypt). Returns the check, and the path's
    /// `workspace_id` parameter when it has one.
    pub async fn ssm(&self, path: &str) -> (Check, Option<String>) {
        let name = format!("ssm:{path}");
        let client = aws_sdk_ssm::Client::new(&self.sdk);
        let query = crate::source::ssm::query_path(path);
        let resource = self.arn(
            "ssm",
            &format!("parameter{}/*", query.trim_end_matches('/')),
        );
        let first = client
            .get_parameters_by_path()
            .path(query)
            .recursive(true)
            .with_decryption(false)
            .max_results(10)
            .send()
            .await;
        if let Err(e) = first {
            let f = Failure::of(&e);
            let check = if f.denied() {
                Check::fail(
                    &name,
                    format!("ssm:GetParametersByPath denied: {}", f.text()),
                    grant("ssm:GetParametersByPath", &resource),
                )
            } else {
                Check::fail(
                    &name,
                    f.text(),
                    "check the network path to SSM (a VPC endpoint, a proxy) and the region",
                )
            };
            return (check, None);
        }
        let (mut total, mut secure, mut workspace) = (0usize, 0usize, None);
        let mut token = None;
        loop {
            let page = client
                .get_parameters_by_path()
                .path(query)
                .recursive(true)
                .with_decryption(true)
                .max_results(10)
                .set_next_token(token)
                .send()
                .await;
            let page = match page {
                Ok(p) => p,
                Err(e) => {
                    let f = Failure::of(&e);
                    let check = if f.denied() || f.message.contains("KMS") || f.code.contains("Kms")
                    {
                        Check::fail(
                            &name,
                            format!(
                                "readable, but decrypting SecureStrings failed: {}",
                                f.text()
                            ),
                            format!(
                                "{}\n(a customer managed key's key policy must allow the role too)",
                                grant_when(
                                    "kms:Decrypt",
                                    "*",
                                    Some(
                                        serde_json::json!({"StringEquals": {"kms:ViaService": format!("ssm.{}.amazonaws.com", self.region)}})
                                    )
                                )
                            ),
                        )
                    } else {
                        Check::fail(
                            &name,
                            f.text(),
                            "try again; if it persists, check SSM's service health and throttling",
                        )
                    };
                    return (check, None);
                }
            };
            for p in page.parameters() {
                total += 1;
                let Some(value) = p.value() else { continue };
                if p.r#type() == Some(&aws_sdk_ssm::types::ParameterType::SecureString) {
                    secure += 1;
                    // Registered with the forms a serializer may escape it into (--json).
                    drop(crate::secret::Secret::new(value));
                } else if p.name().map(|n| crate::source::ssm::relative(n, query))
                    == Some("/workspace_id")
                {
                    workspace = Some(value.to_owned());
                }
            }
            token = page.next_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        if total == 0 {
            return (
                Check::fail(
                    &name,
                    "no parameters under the path: boot would refuse an empty source",
                    "create the parameters, or fix the path in `sources`",
                ),
                None,
            );
        }
        let decrypted = if secure > 0 {
            format!(", {secure} SecureStrings decrypted")
        } else {
            String::new()
        };
        (
            Check::pass(&name, format!("{total} parameters{decrypted}")),
            workspace,
        )
    }

    /// A pinned archive in S3 exists and may be read (HEAD: nothing is downloaded).
    pub async fn archive(&self, url: &str, bucket: &str, key: &str) -> Check {
        let name = format!("archive {url}");
        let client = crate::source::s3::client(&self.sdk);
        match client.head_object().bucket(bucket).key(key).send().await {
            Ok(out) => Check::pass(
                name,
                format!(
                    "readable, {} bytes",
                    out.content_length().unwrap_or_default()
                ),
            ),
            Err(e) => {
                let f = Failure::of(&e);
                if f.denied() {
                    Check::fail(
                        name,
                        format!("s3:GetObject denied: {}", f.text()),
                        grant("s3:GetObject", &format!("arn:aws:s3:::{bucket}/{key}")),
                    )
                } else {
                    Check::fail(
                        name,
                        f.text(),
                        "upload the archive, or fix the url (its sha256 must match it)",
                    )
                }
            }
        }
    }
}

/// The S3 and SSM sources of the config, as (bucket, prefix) and paths; `file://` sources
/// are checked to be readable directories.
pub fn file_source(source: &SourceUrl) -> Option<Check> {
    let SourceUrl::File { dir } = source else {
        return None;
    };
    let name = format!("file://{}", dir.display());
    Some(match std::fs::read_dir(dir) {
        Ok(entries) => Check::pass(name, format!("readable, {} entries", entries.count())),
        Err(e) => Check::fail(
            name,
            e.to_string(),
            "create the directory, or fix `sources`",
        ),
    })
}
