//! One sync: read, plan, and (unless it is a dry run) apply, within one deadline. The inputs
//! were checked before ([`super::check`]): nothing is sent for inputs that fail.

use super::client::Amp;
use super::plan::Action;
use super::{plan, Config, Desired, Error, Plan};

/// What a sync did.
#[derive(Debug)]
pub struct Synced {
    pub plan: Plan,
    /// The plan's changes were made (false for a dry run or an empty plan).
    pub applied: bool,
    /// Read and write calls made.
    pub reads: usize,
    pub writes: usize,
}

/// Brings the workspace to `desired`; `show` sees the plan before anything changes.
pub async fn sync(
    amp: &Amp,
    desired: &Desired,
    config: &Config,
    dry_run: bool,
    show: impl FnOnce(&Plan),
) -> Result<Synced, Error> {
    let work = async {
        let current = amp.current(desired).await?;
        let plan = plan(desired, &current)?;
        show(&plan);
        let deletes = plan.count(Action::Delete);
        if desired.namespaces.is_empty() && deletes > 0 && !config.allow_removing_all {
            return Err(Error::Input {
                origin: crate::render::inputs::RULES_DIR.into(),
                message: format!(
                    "no rule file in the inputs: the sync would delete all {deletes} namespaces \
                     moninit created; set `amp.allow_removing_all: true` if that is meant"
                ),
            });
        }
        let apply = !dry_run && !plan.is_empty();
        if apply {
            amp.apply(&plan, desired).await?;
        }
        Ok::<_, Error>((plan, apply))
    };
    let timeout = config.sync_timeout();
    let (plan, applied) = tokio::time::timeout(timeout, work).await.map_err(|_| {
        let pending = amp.pending();
        Error::Deadline {
            secs: timeout.as_secs(),
            pending: if pending.is_empty() {
                format!("reading workspace {}", amp.workspace)
            } else {
                pending.join(", ")
            },
        }
    })??;
    let (reads, writes) = amp.calls();
    Ok(Synced {
        plan,
        applied,
        reads,
        writes,
    })
}
