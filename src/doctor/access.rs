//! The permissions and resources boot needs, each proven by the smallest real call that
//! needs it: the credential chain, the workspace, every S3 prefix and SSM path (and KMS for
//! SecureStrings), the pinned archives in S3, AMP's rule groups and Alertmanager (when
//! `amp.sync` is on), and `SetInstanceHealth` on the group (when reporting is on).
//!
//! A denied call names the IAM action it needed and the resource, with a statement granting
//! it. Values read (SecureStrings included) are registered as secrets and never shown.

use super::report::{grant, grant_when, Check};
use crate::source::{Snapshot, SourceUrl};

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

    /// A source read as boot reads it ([`crate::source::fetch_one`]): an S3 prefix listed and
    /// every object fetched, an SSM path with its SecureStrings decrypted (after a first page
    /// without decryption, which tells `ssm:GetParametersByPath` from `kms:Decrypt`), a local
    /// directory. Returns the check and, when it passed, what was read.
    pub async fn source(
        &self,
        source: &SourceUrl,
        config: &crate::source::Config,
    ) -> (Check, Option<Snapshot>) {
        let name = source.to_string();
        if let SourceUrl::Ssm { path } = source {
            if let Some(refused) = self.ssm_without_decryption(&name, path).await {
                return (refused, None);
            }
        }
        let s3 = crate::source::s3::client(&self.sdk);
        let ssm = aws_sdk_ssm::Client::new(&self.sdk);
        match crate::source::fetch_one(source, Some(&s3), Some(&ssm), config).await {
            Ok(snapshot) => {
                let evidence = match source {
                    SourceUrl::Ssm { .. } => {
                        let secrets = snapshot.params.secrets().len();
                        let total = snapshot.params.clone().flatten().len();
                        format!("{total} parameters, {secrets} SecureStrings decrypted")
                    }
                    _ => format!("read {} files", snapshot.files.len()),
                };
                (Check::pass(name, evidence), Some(snapshot))
            }
            Err(e) => (self.refused(name, source, e), None),
        }
    }

    /// The first page of an SSM path without decryption: `None` when it is readable.
    async fn ssm_without_decryption(&self, name: &str, path: &str) -> Option<Check> {
        let query = crate::source::ssm::query_path(path);
        let first = aws_sdk_ssm::Client::new(&self.sdk)
            .get_parameters_by_path()
            .path(query)
            .recursive(true)
            .with_decryption(false)
            .max_results(10)
            .send()
            .await;
        let f = Failure::of(&first.err()?);
        let resource = self.arn(
            "ssm",
            &format!("parameter{}/*", query.trim_end_matches('/')),
        );
        Some(if f.denied() {
            Check::fail(
                name,
                format!("ssm:GetParametersByPath denied: {}", f.text()),
                grant("ssm:GetParametersByPath", &resource),
            )
        } else {
            Check::fail(
                name,
                f.text(),
                "check the network path to SSM (a VPC endpoint, a proxy) and the region",
            )
        })
    }

    /// A source boot could not read: what was refused and the fix.
    fn refused(&self, name: String, source: &SourceUrl, e: crate::source::Error) -> Check {
        let crate::source::Error::Aws {
            operation,
            code,
            message,
            ..
        } = &e
        else {
            let fix = match source {
                SourceUrl::File { .. } => "create the directory or fix `sources`",
                _ => "fix the input named (boot would refuse it too)",
            };
            return Check::fail(name, e.to_string(), fix);
        };
        let denied = code.contains("AccessDenied") || message.contains("not authorized");
        let evidence = format!("{operation}: {code}: {message}");
        match source {
            SourceUrl::S3 { bucket, prefix } if denied && *operation == "ListObjectsV2" => Check::fail(
                name,
                evidence,
                grant_when("s3:ListBucket", &format!("arn:aws:s3:::{bucket}"), Some(serde_json::json!({"StringLike": {"s3:prefix": [prefix, format!("{prefix}*")]}}))),
            ),
            SourceUrl::S3 { bucket, prefix } if denied => Check::fail(name, evidence, grant("s3:GetObject", &format!("arn:aws:s3:::{bucket}/{prefix}*"))),
            SourceUrl::S3 { .. } if code == "NoSuchBucket" => Check::fail(name, evidence, "check the bucket name in `sources` (and the region)"),
            // The path was readable without decryption: a refusal now is the key's.
            SourceUrl::Ssm { .. } if denied || message.contains("KMS") => Check::fail(
                name,
                format!("readable, but decrypting SecureStrings failed: {evidence}"),
                format!(
                    "{}\n(a customer managed key's key policy must allow the role too)",
                    grant_when("kms:Decrypt", "*", Some(serde_json::json!({"StringEquals": {"kms:ViaService": format!("ssm.{}.amazonaws.com", self.region)}})))
                ),
            ),
            _ => Check::fail(name, evidence, "check the network path to the service (a VPC endpoint policy, a proxy) and the region"),
        }
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
