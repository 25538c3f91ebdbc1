//! AMP's control plane through `aws-sdk-amp` (SigV4 for `aps`, the standard retry mode for
//! throttling): reading what the workspace holds, and making a plan's changes.
//!
//! Reads are `ListRuleGroupsNamespaces` (tags included), `DescribeRuleGroupsNamespace` for the
//! namespaces the inputs name (to compare their data), `DescribeAlertManagerDefinition`.
//! A change is one `Create…`/`Put…`/`Delete…` call, then `Describe…` until AMP says ACTIVE
//! (or gone), because AMP accepts a change before it checks it: a rule AMP refuses shows up
//! only as `CREATION_FAILED`/`UPDATE_FAILED` with a status reason, which is reported with the
//! input file it came from. A change to something AMP is still changing (409) is tried
//! again until the sync's deadline.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aws_sdk_amp::error::{ProvideErrorMetadata, SdkError};
use futures::{StreamExt, TryStreamExt};

use super::desired::Desired;
use super::plan::{Current, Existing};
use super::{Error, MANAGED_TAG};

mod write;

/// Calls made at once: AMP's control-plane quotas are a few per second per workspace.
const CONCURRENCY: usize = 4;
/// Between two looks at a change in progress, at first (doubling up to [`POLL_MAX`]).
const POLL_FIRST: Duration = Duration::from_millis(250);
const POLL_MAX: Duration = Duration::from_secs(5);

/// One workspace's control plane.
pub struct Amp {
    client: aws_sdk_amp::Client,
    pub workspace: String,
    reads: AtomicUsize,
    writes: AtomicUsize,
    /// Changes begun and not finished, for a deadline's error.
    pending: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

type HttpResponse = aws_sdk_amp::config::http::HttpResponse;

/// A namespace or the Alertmanager definition, as Describe shows it.
struct Described {
    data: Vec<u8>,
    status: Option<String>,
    reason: Option<String>,
    /// Tagged as moninit's (namespaces only).
    managed: bool,
}

/// Whether a resource's tags mark it as moninit's.
fn managed(tags: Option<&std::collections::HashMap<String, String>>) -> bool {
    tags.and_then(|t| t.get(MANAGED_TAG.0))
        .is_some_and(|v| v == MANAGED_TAG.1)
}

/// An SDK error as an [`Error::Aws`], with the IAM action that was refused.
fn aws<E>(
    operation: &str,
    target: &str,
    origin: Option<&str>,
    err: &SdkError<E, HttpResponse>,
) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let crate::source::AwsFailure { code, message, .. } = crate::source::AwsFailure::of(err);
    Error::Aws {
        operation: format!("aps:{operation}"),
        target: target.to_owned(),
        origin: origin.map(str::to_owned),
        code,
        message,
    }
}

/// A write call's result: done, busy (`Err(None)`: 409, try again), or failed.
fn judge<O, E>(
    sent: Result<O, SdkError<E, HttpResponse>>,
    missing_is_done: bool,
    operation: &str,
    target: &str,
    origin: Option<&str>,
) -> Result<(), Option<Error>>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match sent {
        Ok(_) => Ok(()),
        Err(e) if missing_is_done && is_not_found(&e) => Ok(()),
        Err(e) if is_conflict(&e) => Err(None),
        Err(e) => Err(Some(aws(operation, target, origin, &e))),
    }
}

fn is_conflict<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> bool {
    err.as_service_error()
        .is_some_and(|e| e.code() == Some("ConflictException"))
        || matches!(err, SdkError::ServiceError(e) if e.raw().status().as_u16() == 409)
}

fn is_not_found<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> bool {
    err.as_service_error()
        .is_some_and(|e| e.code() == Some("ResourceNotFoundException"))
        || matches!(err, SdkError::ServiceError(e) if e.raw().status().as_u16() == 404)
}

impl Amp {
    pub fn new(sdk: &aws_config::SdkConfig, workspace: &str) -> Self {
        Amp {
            client: aws_sdk_amp::Client::new(sdk),
            workspace: workspace.to_owned(),
            reads: AtomicUsize::new(0),
            writes: AtomicUsize::new(0),
            pending: Default::default(),
        }
    }

    /// The changes begun and not finished (empty while reading the workspace).
    pub fn pending(&self) -> Vec<String> {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    fn track(&self, target: String, begun: bool) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if begun {
            pending.insert(target);
        } else {
            pending.remove(&target);
        }
    }

    /// (read calls, write calls) made so far.
    pub fn calls(&self) -> (usize, usize) {
        (
            self.reads.load(Ordering::Relaxed),
            self.writes.load(Ordering::Relaxed),
        )
    }

    fn read(&self) {
        self.reads.fetch_add(1, Ordering::Relaxed);
    }

    fn write(&self) {
        self.writes.fetch_add(1, Ordering::Relaxed);
    }

    fn ns_target(&self, name: &str) -> String {
        format!(
            "rule groups namespace `{name}` in workspace {}",
            self.workspace
        )
    }

    /// The read permissions a sync needs beyond listing, proven whatever the workspace holds:
    /// a Describe of a namespace that does not exist (404 is an answer, 403 is not), and of
    /// the Alertmanager definition. For `moninit doctor`.
    pub async fn probe_reads(&self) -> Result<(), Error> {
        self.describe_namespace("moninit-doctor-probe").await?;
        self.describe_alertmanager().await?;
        Ok(())
    }

    /// What the workspace holds, as far as `desired` needs to know (read calls only).
    pub async fn current(&self, desired: &Desired) -> Result<Current, Error> {
        let mut current = Current::default();
        let mut token = None;
        loop {
            self.read();
            let page = self
                .client
                .list_rule_groups_namespaces()
                .workspace_id(&self.workspace)
                .set_next_token(token)
                .max_results(1000)
                .send()
                .await
                .map_err(|e| {
                    aws(
                        "ListRuleGroupsNamespaces",
                        &format!("workspace {}", self.workspace),
                        None,
                        &e,
                    )
                })?;
            for ns in page.rule_groups_namespaces() {
                current.namespaces.insert(
                    ns.name().to_owned(),
                    Existing {
                        managed: managed(ns.tags()),
                        data: None,
                        status: ns
                            .status()
                            .map(|s| s.status_code().as_str().to_owned())
                            .unwrap_or_default(),
                    },
                );
            }
            token = page.next_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        let wanted: Vec<String> = current
            .namespaces
            .iter()
            .filter(|(name, e)| e.managed && desired.namespaces.contains_key(*name))
            .map(|(name, _)| name.clone())
            .collect();
        let described: Vec<(String, Option<Described>)> =
            futures::stream::iter(wanted.into_iter().map(|name| async move {
                let found = self.describe_namespace(&name).await?;
                Ok::<_, Error>((name, found))
            }))
            .buffer_unordered(CONCURRENCY)
            .try_collect()
            .await?;
        for (name, found) in described {
            match found {
                Some(d) => {
                    let e = current.namespaces.get_mut(&name).expect("listed");
                    e.data = Some(d.data);
                    e.status = d.status.unwrap_or_default();
                }
                // Deleted between the list and the look: it is not there.
                None => {
                    current.namespaces.remove(&name);
                }
            }
        }
        if desired.alertmanager.is_some() {
            current.alertmanager = self
                .describe_alertmanager()
                .await?
                .map(|d| (d.data, d.status.unwrap_or_default()));
        }
        Ok(current)
    }

    /// A namespace as Describe shows it; `None` when it does not exist.
    async fn describe_namespace(&self, name: &str) -> Result<Option<Described>, Error> {
        self.read();
        let found = self
            .client
            .describe_rule_groups_namespace()
            .workspace_id(&self.workspace)
            .name(name)
            .send()
            .await;
        match found {
            Ok(out) => Ok(out.rule_groups_namespace().map(|d| Described {
                data: d.data().as_ref().to_vec(),
                status: d.status().map(|s| s.status_code().as_str().to_owned()),
                reason: d
                    .status()
                    .and_then(|s| s.status_reason())
                    .map(str::to_owned),
                managed: managed(d.tags()),
            })),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(aws(
                "DescribeRuleGroupsNamespace",
                &self.ns_target(name),
                None,
                &e,
            )),
        }
    }

    /// The Alertmanager definition as Describe shows it; `None` when there is none.
    async fn describe_alertmanager(&self) -> Result<Option<Described>, Error> {
        self.read();
        let found = self
            .client
            .describe_alert_manager_definition()
            .workspace_id(&self.workspace)
            .send()
            .await;
        match found {
            Ok(out) => Ok(out.alert_manager_definition().map(|d| Described {
                data: d.data().as_ref().to_vec(),
                status: d.status().map(|s| s.status_code().as_str().to_owned()),
                reason: d
                    .status()
                    .and_then(|s| s.status_reason())
                    .map(str::to_owned),
                managed: false,
            })),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(aws(
                "DescribeAlertManagerDefinition",
                &format!("workspace {}", self.workspace),
                None,
                &e,
            )),
        }
    }
}
