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
use aws_sdk_amp::primitives::Blob;
use futures::{StreamExt, TryStreamExt};

use super::desired::Desired;
use super::plan::{Action, Change, Current, Existing, Plan, Target};
use super::{Error, MANAGED_TAG};

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

/// A resource's document and status code.
type DataAndStatus = (Vec<u8>, String);

/// An SDK error as an [`Error::Aws`]: the AWS code (or the HTTP status when the body has
/// none), and the IAM action that was refused.
fn aws<E>(
    operation: &str,
    target: &str,
    origin: Option<&str>,
    err: &SdkError<E, HttpResponse>,
) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let (code, message) = match err {
        SdkError::ServiceError(e) => {
            let status = e.raw().status().as_u16();
            let code = match e.err().code() {
                Some(code) => code.to_owned(),
                None if status == 403 => "AccessDenied".to_owned(),
                None => format!("HTTP {status}"),
            };
            let message = e
                .err()
                .message()
                .map(str::to_owned)
                .unwrap_or_else(|| crate::source::chain(e.err()));
            (code, message)
        }
        SdkError::TimeoutError(_) => ("Timeout".into(), "the request timed out".into()),
        SdkError::DispatchFailure(_) => (
            "DispatchFailure".into(),
            format!("could not reach AMP: {}", crate::source::chain(err)),
        ),
        other => ("RequestFailed".into(), crate::source::chain(other)),
    };
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
                let managed = ns
                    .tags()
                    .and_then(|t| t.get(MANAGED_TAG.0))
                    .is_some_and(|v| v == MANAGED_TAG.1);
                current.namespaces.insert(
                    ns.name().to_owned(),
                    Existing {
                        managed,
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
        let described: Vec<(String, Option<DataAndStatus>)> =
            futures::stream::iter(wanted.into_iter().map(|name| async move {
                let found = self.describe_namespace(&name).await?;
                Ok::<_, Error>((name, found))
            }))
            .buffer_unordered(CONCURRENCY)
            .try_collect()
            .await?;
        for (name, found) in described {
            match found {
                Some((data, status)) => {
                    let e = current.namespaces.get_mut(&name).expect("listed");
                    e.data = Some(data);
                    e.status = status;
                }
                // Deleted between the list and the look: it is not there.
                None => {
                    current.namespaces.remove(&name);
                }
            }
        }
        if desired.alertmanager.is_some() {
            current.alertmanager = self.describe_alertmanager().await?;
        }
        Ok(current)
    }

    /// (data, status code) of a namespace; `None` when it does not exist.
    async fn describe_namespace(&self, name: &str) -> Result<Option<DataAndStatus>, Error> {
        self.read();
        match self
            .client
            .describe_rule_groups_namespace()
            .workspace_id(&self.workspace)
            .name(name)
            .send()
            .await
        {
            Ok(out) => Ok(out.rule_groups_namespace().map(|d| {
                (
                    d.data().as_ref().to_vec(),
                    d.status()
                        .map(|s| s.status_code().as_str().to_owned())
                        .unwrap_or_default(),
                )
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

    /// (status code, reason) of a namespace; `None` when it does not exist.
    async fn namespace_status(&self, name: &str) -> Result<Option<(String, String)>, Error> {
        self.read();
        match self
            .client
            .describe_rule_groups_namespace()
            .workspace_id(&self.workspace)
            .name(name)
            .send()
            .await
        {
            Ok(out) => Ok(out
                .rule_groups_namespace()
                .and_then(|d| d.status())
                .map(|s| {
                    (
                        s.status_code().as_str().to_owned(),
                        s.status_reason().unwrap_or_default().to_owned(),
                    )
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

    /// (document, status code) of the definition; `None` when there is none.
    async fn describe_alertmanager(&self) -> Result<Option<DataAndStatus>, Error> {
        Ok(self
            .alertmanager_state()
            .await?
            .map(|(data, code, _)| (data, code)))
    }

    async fn alertmanager_state(&self) -> Result<Option<(Vec<u8>, String, String)>, Error> {
        self.read();
        match self
            .client
            .describe_alert_manager_definition()
            .workspace_id(&self.workspace)
            .send()
            .await
        {
            Ok(out) => Ok(out.alert_manager_definition().map(|d| {
                let status = d.status();
                (
                    d.data().as_ref().to_vec(),
                    status
                        .map(|s| s.status_code().as_str().to_owned())
                        .unwrap_or_default(),
                    status
                        .and_then(|s| s.status_reason())
                        .unwrap_or_default()
                        .to_owned(),
                )
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

    /// Makes every change of `plan` (at most [`CONCURRENCY`] at once), each until AMP says
    /// it is done. Returns the first failure after every change has been tried; the others
    /// are logged.
    pub async fn apply(&self, plan: &Plan, desired: &Desired) -> Result<(), Error> {
        // Collected first: a stream mapping borrowed changes to futures is not `Send`-general
        // enough for a spawned task.
        let changes: Vec<_> = plan
            .changes
            .iter()
            .map(|change| self.change(change, desired))
            .collect();
        let results: Vec<Result<(), Error>> = futures::stream::iter(changes)
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let mut first = None;
        for err in results.into_iter().filter_map(Result::err) {
            tracing::error!(error = %err, "AMP change failed");
            first.get_or_insert(err);
        }
        first.map_or(Ok(()), Err)
    }

    async fn change(&self, change: &Change, desired: &Desired) -> Result<(), Error> {
        let what = format!("{:?} {}", change.action, change.target).to_lowercase();
        self.track(what.clone(), true);
        let result = self.change_untracked(change, desired).await;
        self.track(what, false);
        result
    }

    async fn change_untracked(&self, change: &Change, desired: &Desired) -> Result<(), Error> {
        let mut pause = POLL_FIRST;
        loop {
            match self.send(change, desired).await {
                Ok(()) => break,
                Err(Some(e)) => return Err(e),
                // Conflict: AMP is still busy with an earlier change to it.
                Err(None) => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(POLL_MAX);
                }
            }
        }
        let result = self.settle(change).await;
        if result.is_ok() {
            tracing::info!(action = ?change.action, target = %change.target, "AMP change done");
        }
        result
    }

    /// One write call. `Err(None)`: AMP answered 409 (busy); try again.
    async fn send(&self, change: &Change, desired: &Desired) -> Result<(), Option<Error>> {
        self.write();
        let origin = change.origin.as_deref();
        match (&change.target, change.action) {
            (Target::Namespace(name), Action::Delete) => {
                let sent = self
                    .client
                    .delete_rule_groups_namespace()
                    .workspace_id(&self.workspace)
                    .name(name)
                    .send()
                    .await;
                // Already gone is as good as deleted.
                judge(
                    sent,
                    true,
                    "DeleteRuleGroupsNamespace",
                    &self.ns_target(name),
                    origin,
                )
            }
            (Target::Namespace(name), Action::Create) => {
                let sent = self
                    .client
                    .create_rule_groups_namespace()
                    .workspace_id(&self.workspace)
                    .name(name)
                    .data(Blob::new(desired.namespaces[name].data.clone()))
                    .tags(MANAGED_TAG.0, MANAGED_TAG.1)
                    .send()
                    .await;
                match sent {
                    // Created since the plan was made: by another instance of the group (the
                    // same content; settle it), or by someone else (a collision).
                    Err(e) if is_conflict(&e) => self.created_meanwhile(name, origin).await,
                    sent => judge(
                        sent,
                        false,
                        "CreateRuleGroupsNamespace",
                        &self.ns_target(name),
                        origin,
                    ),
                }
            }
            (Target::Namespace(name), Action::Update) => {
                let sent = self
                    .client
                    .put_rule_groups_namespace()
                    .workspace_id(&self.workspace)
                    .name(name)
                    .data(Blob::new(desired.namespaces[name].data.clone()))
                    .send()
                    .await;
                judge(
                    sent,
                    false,
                    "PutRuleGroupsNamespace",
                    &self.ns_target(name),
                    origin,
                )
            }
            (Target::Alertmanager, action) => {
                let data = Blob::new(
                    desired
                        .alertmanager
                        .as_ref()
                        .map(|d| d.data.clone())
                        .unwrap_or_default(),
                );
                let target = format!("alertmanager definition of workspace {}", self.workspace);
                let created = if action == Action::Create {
                    let sent = self
                        .client
                        .create_alert_manager_definition()
                        .workspace_id(&self.workspace)
                        .data(data.clone())
                        .send()
                        .await;
                    // A definition created since the plan was made (another instance of the
                    // group): the workspace has one, so this becomes an update.
                    match sent {
                        Err(e) if is_conflict(&e) => None,
                        sent => Some(judge(
                            sent,
                            false,
                            "CreateAlertManagerDefinition",
                            &target,
                            origin,
                        )),
                    }
                } else {
                    None
                };
                if let Some(created) = created {
                    created
                } else {
                    let sent = self
                        .client
                        .put_alert_manager_definition()
                        .workspace_id(&self.workspace)
                        .data(data)
                        .send()
                        .await;
                    judge(sent, false, "PutAlertManagerDefinition", &target, origin)
                }
            }
        }
    }

    /// A Create answered 409: the namespace exists now. Moninit's (another instance of the
    /// group made it): done, it is settled next. Someone else's: a collision. Gone again:
    /// try again.
    async fn created_meanwhile(
        &self,
        name: &str,
        origin: Option<&str>,
    ) -> Result<(), Option<Error>> {
        self.read();
        let found = self
            .client
            .describe_rule_groups_namespace()
            .workspace_id(&self.workspace)
            .name(name)
            .send()
            .await;
        match found {
            Ok(out) => {
                let managed = out
                    .rule_groups_namespace()
                    .and_then(|d| d.tags())
                    .and_then(|t| t.get(MANAGED_TAG.0))
                    .is_some_and(|v| v == MANAGED_TAG.1);
                if managed {
                    Ok(())
                } else {
                    Err(Some(Error::Input {
                        origin: origin.unwrap_or_default().to_owned(),
                        message: format!(
                            "AMP got a rule groups namespace `{name}` that moninit did not create while this sync ran; moninit never changes it"
                        ),
                    }))
                }
            }
            Err(e) if is_not_found(&e) => Err(None),
            Err(e) => Err(Some(aws(
                "DescribeRuleGroupsNamespace",
                &self.ns_target(name),
                origin,
                &e,
            ))),
        }
    }

    /// Waits until AMP has finished the change: ACTIVE (or gone, for a delete); a FAILED
    /// status is the error, with AMP's reason.
    async fn settle(&self, change: &Change) -> Result<(), Error> {
        let mut pause = POLL_FIRST;
        loop {
            let state = match &change.target {
                Target::Namespace(name) => self.namespace_status(name).await?,
                Target::Alertmanager => self
                    .alertmanager_state()
                    .await?
                    .map(|(_, code, reason)| (code, reason)),
            };
            match (change.action, state) {
                (Action::Delete, None) => return Ok(()),
                (Action::Delete, Some(_)) => {}
                (_, None) => {}
                (_, Some((code, _))) if code == "ACTIVE" => return Ok(()),
                (_, Some((code, reason))) if code.ends_with("FAILED") => {
                    return Err(Error::Failed {
                        target: change.target.to_string(),
                        origin: change.origin.clone().unwrap_or_default(),
                        status: code,
                        reason,
                    })
                }
                (_, Some(_)) => {}
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(POLL_MAX);
        }
    }
}
