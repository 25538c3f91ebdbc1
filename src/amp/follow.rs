//! `amp.sync: true` in `moninit run`: one task that keeps AMP in step with the running
//! inputs, beside the children, never in their way.
//!
//! It syncs after boot and after every applied change (the rule files and Alertmanager
//! config were checked with the rest of the inputs, so a bad file never gets this far). A
//! node that booted from its last known good inputs does not sync until the sources have
//! answered: those inputs may be days old, and AMP may hold newer rules. A failure is
//! logged, counted and shown in `/status`, and tried again with backoff when a later try
//! could succeed (throttling, AccessDenied being fixed, AMP unreachable), but not when AMP
//! refused the content: that waits for the inputs to change. It never stops the node or
//! reports it unhealthy: a fresh instance would fail the same way. Only the latest inputs
//! count: a change that arrives during a sync is synced next.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::client::Amp;
use super::plan::Action;
use super::{Config, Desired};
use crate::admin::metrics;

/// After a failure a later try could fix, the next try comes after this, doubling up to
/// [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_secs(30);
const RETRY_MAX: Duration = Duration::from_secs(600);

/// Hands new inputs to the task.
pub struct Follower {
    tx: watch::Sender<Option<Arc<Desired>>>,
}

impl Follower {
    /// The inputs now running, fresh from the sources: synced next, unless AMP already was
    /// given the same.
    pub fn offer(&self, desired: &Desired) {
        self.tx.send_if_modified(|current| {
            if current.as_deref() == Some(desired) {
                return false;
            }
            *current = Some(Arc::new(desired.clone()));
            true
        });
    }
}

/// Starts following; nothing is synced until the first [`Follower::offer`].
pub fn spawn(
    client: Amp,
    config: Config,
    metrics: metrics::Amp,
    status: Arc<crate::watch::Status>,
    stop: CancellationToken,
) -> Follower {
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        tokio::select! {
            _ = follow(client, config, rx, metrics, status) => {}
            _ = stop.cancelled() => {}
        }
    });
    Follower { tx }
}

async fn follow(
    client: Amp,
    config: Config,
    mut rx: watch::Receiver<Option<Arc<Desired>>>,
    metrics: metrics::Amp,
    status: Arc<crate::watch::Status>,
) {
    let mut retry = RETRY_FIRST;
    loop {
        let Some(desired) = rx.borrow_and_update().clone() else {
            if rx.changed().await.is_err() {
                return;
            }
            continue;
        };
        let outcome = super::sync(&client, &desired, &config, false, |_: &super::Plan| {}).await;
        let again = match outcome {
            Ok(synced) => {
                let plan = &synced.plan;
                let changes = [
                    ("create", plan.count(Action::Create)),
                    ("update", plan.count(Action::Update)),
                    ("delete", plan.count(Action::Delete)),
                ];
                metrics.synced(true, &changes);
                let summary = plan.to_string();
                let summary = summary.lines().last().unwrap_or_default();
                status.amp_synced(true, summary);
                if plan.is_empty() {
                    tracing::debug!(
                        workspace = client.workspace,
                        "AMP holds the inputs' rules and Alertmanager config"
                    );
                } else {
                    tracing::info!(workspace = client.workspace, plan = %plan, "AMP synced");
                }
                retry = RETRY_FIRST;
                None
            }
            Err(e) => {
                metrics.synced(false, &[]);
                let message = crate::secret::mask(&e.to_string());
                status.amp_synced(false, &message);
                tracing::error!(workspace = client.workspace, error = %message, "AMP sync failed; the running node is not affected");
                e.retryable().then(|| {
                    let wait = retry;
                    retry = (retry * 2).min(RETRY_MAX);
                    wait
                })
            }
        };
        let retry_after = async {
            match again {
                Some(wait) => tokio::time::sleep(wait).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return },
            _ = retry_after => {}
        }
    }
}
