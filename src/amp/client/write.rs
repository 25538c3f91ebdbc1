//! Making a plan's changes: one write call each (409 from a resource AMP is still changing
//! is tried again; a create answered 409 is settled as the group's or refused as a
//! collision), then `Describe…` until AMP says ACTIVE, or gone for a delete.

use aws_sdk_amp::primitives::Blob;
use futures::StreamExt;

use super::super::desired::Desired;
use super::super::plan::{Action, Change, Plan, Target};
use super::super::{Error, MANAGED_TAG};
use super::{is_conflict, judge, Amp, CONCURRENCY, POLL_FIRST, POLL_MAX};

impl Amp {
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
        match self.describe_namespace(name).await {
            Ok(Some(d)) if d.managed => Ok(()),
            Ok(Some(_)) => Err(Some(Error::Input {
                origin: origin.unwrap_or_default().to_owned(),
                message: format!(
                    "AMP got a rule groups namespace `{name}` that moninit did not create while this sync ran; moninit never changes it"
                ),
            })),
            Ok(None) => Err(None),
            Err(e) => Err(Some(e)),
        }
    }

    /// Waits until AMP has finished the change: ACTIVE (or gone, for a delete); a FAILED
    /// status is the error, with AMP's reason.
    async fn settle(&self, change: &Change) -> Result<(), Error> {
        let mut pause = POLL_FIRST;
        loop {
            let state = match &change.target {
                Target::Namespace(name) => self.describe_namespace(name).await?,
                Target::Alertmanager => self.describe_alertmanager().await?,
            }
            .map(|d| (d.status.unwrap_or_default(), d.reason.unwrap_or_default()));
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
