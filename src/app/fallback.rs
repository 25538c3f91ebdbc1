//! Boot when the sources cannot answer: from the last known good inputs.
//!
//! A boot fetch that fails for a reason a later try could fix ([`source::Error::retryable`])
//! falls back to the snapshot a healthy boot or apply last ran on ([`last_good`]), when one
//! exists, is intact and is younger than `fetch.last_good_max_age_secs`. The node then runs
//! degraded: it says so in STATUS, the log, `/readyz`'s body and the metrics, and the watch
//! keeps trying the sources. Without a usable snapshot, the boot fails as it would have.

use std::time::Duration;

use super::{prepare, prepare_from, Error, Prepared};
use crate::config::Config;
use crate::layout::Layout;
use crate::source;
use crate::watch::last_good;

/// Why and from what a node booted without its sources.
#[derive(Clone, Debug)]
pub struct Degraded {
    /// The fetch error that made boot fall back.
    pub reason: String,
    /// The last-good snapshot's digest and when it was saved.
    pub sha256: String,
    pub saved_at: std::time::SystemTime,
}

/// Fetches, renders and validates for boot; falls back to the last known good inputs when
/// the fetch fails for a reason a later try could fix.
pub(super) async fn prepare_boot(
    config: &Config,
    layout: &Layout,
) -> Result<(Prepared, Option<Degraded>), Error> {
    let fetch_error = match prepare(config, layout.clone(), source::Occasion::Boot).await {
        Ok(prepared) => return Ok((prepared, None)),
        Err(Error::Source(e)) if e.retryable() => e,
        Err(e) => return Err(e),
    };
    let max_age = Duration::from_secs(config.fetch.last_good_max_age_secs);
    let sources: Vec<String> = config.sources.iter().map(|s| s.to_string()).collect();
    let last = match last_good::load(&layout.state_dir) {
        Ok(Some(last)) if last.sources != sources => {
            tracing::error!(
                path = %last_good::path(&layout.state_dir).display(),
                saved_from = last.sources.join(", "),
                "the last known good inputs came from other sources than the agent config names: not used"
            );
            return Err(Error::Source(fetch_error));
        }
        Ok(Some(last)) if last.age() <= max_age => last,
        Ok(Some(last)) => {
            tracing::error!(
                path = %last_good::path(&layout.state_dir).display(),
                age_s = last.age().as_secs(),
                max_age_s = max_age.as_secs(),
                "the last known good inputs are older than fetch.last_good_max_age_secs: not used"
            );
            return Err(Error::Source(fetch_error));
        }
        Ok(None) => return Err(Error::Source(fetch_error)),
        Err(e) => {
            tracing::error!("last known good inputs unusable: {e}");
            return Err(Error::Source(fetch_error));
        }
    };
    let reason = crate::secret::mask(&fetch_error.to_string());
    tracing::warn!(
        reason,
        age_s = last.age().as_secs(),
        sha256 = last.sha256,
        "the sources cannot answer: booting from the last known good inputs (degraded); the sources are retried in the background"
    );
    let degraded = Degraded {
        reason,
        sha256: last.sha256.clone(),
        saved_at: last.saved_at,
    };
    let prepared = prepare_from(
        config,
        layout.clone(),
        source::Occasion::Boot,
        Some(last.snapshot),
    )
    .await?;
    Ok((prepared, Some(degraded)))
}

/// Keeps what a healthy boot or apply ran on; a failure to save is logged, not fatal.
pub(super) fn keep(layout: &Layout, prepared: &Prepared) -> Option<String> {
    let sources: Vec<String> = prepared
        .config
        .sources
        .iter()
        .map(|s| s.to_string())
        .collect();
    match last_good::save(&layout.state_dir, &prepared.snapshot, &sources) {
        Ok(sha256) => {
            tracing::debug!(sha256, "last known good inputs saved");
            Some(sha256)
        }
        Err(e) => {
            tracing::warn!("could not save the last known good inputs: {e}");
            None
        }
    }
}
