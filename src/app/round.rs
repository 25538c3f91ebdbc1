//! One watch round: list the sources, and when the inputs changed, render, validate and
//! apply them ([`super::apply`]).
//!
//! A round whose inputs are the running ones, or the ones last refused, changes nothing.
//! A round that cannot fetch, render or validate keeps the running configuration and says
//! why (log, `/status`, `moninit_config_apply_failures_total{reason}`).

use std::time::Instant;

use super::apply::{self, Live, Report};
use super::run::Started;
use super::{prepare_from, Error};
use crate::layout::Layout;
use crate::source;
use crate::watch::last_good;
use crate::watch::sources::{Clients, Tracker};

/// What a round or a reload came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// The sources did not answer.
    FetchFailed,
    /// The inputs are the running ones (or the ones last refused).
    Unchanged,
    /// New inputs run now.
    Applied,
    /// New inputs were refused or rolled back.
    Refused,
    /// Nothing was fetched (the agent config itself is wrong).
    NotTried,
}

/// Whether a failed preparation is the sources' or the network's (tried again next round)
/// rather than the inputs' (refused until they change).
pub(super) fn passing(e: &Error) -> bool {
    match e {
        Error::Source(s) => s.retryable() || matches!(s, source::Error::Imds(_)),
        Error::Artifact(crate::artifact::Error::Fetch { .. }) => true,
        _ => false,
    }
}

/// The running inputs were fetched again unchanged: the last-good copy is saved again when
/// it is older than [`RESAVE_AFTER`] (or was never saved since a degraded boot), so its age
/// says when the sources last confirmed it, not when it last changed.
fn confirm(live: &mut Live, layout: &Layout, report: &Report<'_>, snapshot: &source::Snapshot) {
    report.status.confirmed();
    if live.saved.is_some_and(|at| at.elapsed() < RESAVE_AFTER) {
        return;
    }
    let sources: Vec<String> = live.config.sources.iter().map(|s| s.to_string()).collect();
    match last_good::save(&layout.state_dir, snapshot, &sources) {
        Ok(_) => {
            live.saved = Some(std::time::Instant::now());
            report.inputs.last_good_saved(std::time::SystemTime::now());
        }
        Err(e) => tracing::warn!("could not save the last known good inputs: {e}"),
    }
}

/// How often unchanged inputs are saved again as last known good.
const RESAVE_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);

/// The `reason` label of a failed preparation.
pub(super) fn reason(e: &Error) -> &'static str {
    match e {
        Error::Source(_) | Error::Artifact(_) => "fetch",
        Error::Render(_) => "render",
        Error::Validate(_) => "validate",
        Error::Config(_) => "config",
        _ => "prepare",
    }
}

pub(super) async fn round(
    tracker: &mut Tracker,
    clients: &Clients,
    live: &mut Live,
    layout: &Layout,
    started: &Started,
    report: &Report<'_>,
) -> Outcome {
    let t = Instant::now();
    let fetched = tracker.round(clients, &live.config.fetch).await;
    let calls = match &fetched {
        Ok((_, calls)) => *calls,
        Err(_) => Default::default(),
    };
    report.inputs.round(t.elapsed(), &calls.by_kind());
    report.status.round(calls.total());
    tracing::debug!(
        ms = t.elapsed().as_millis() as u64,
        calls = calls.total(),
        "watch round"
    );
    let snapshot = match fetched {
        Ok((snapshot, _)) => snapshot,
        Err(e) => {
            let e = Error::from(e);
            report.failed(reason(&e), &e.to_string(), "", false);
            return match e {
                Error::Source(_) => Outcome::FetchFailed,
                _ => Outcome::Refused,
            };
        }
    };
    let digest = last_good::digest(&snapshot);
    if digest == live.digest {
        confirm(live, layout, report, &snapshot);
        return Outcome::Unchanged;
    }
    if live.refused.as_deref() == Some(digest.as_str()) {
        return Outcome::Unchanged;
    }
    tracing::info!(sha256 = digest, "the inputs changed: applying them");
    let prepared = match prepare_from(
        &live.config,
        layout.clone(),
        source::Occasion::Reload,
        Some(snapshot),
    )
    .await
    {
        Ok(p) => p,
        Err(e) => {
            report.supervisor.rendered(false);
            report.failed(reason(&e), &e.to_string(), &digest, false);
            if passing(&e) {
                return Outcome::FetchFailed;
            }
            live.refused = Some(digest);
            return Outcome::Refused;
        }
    };
    report.supervisor.rendered(true);
    if apply::apply(prepared, digest, live, layout, started, report).await {
        Outcome::Applied
    } else {
        Outcome::Refused
    }
}
