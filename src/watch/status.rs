//! What `GET /status` on the admin port shows: the running snapshot, its sources and age,
//! the last failure with its reason, and whether moninit runs degraded.

use std::sync::Mutex;
use std::time::SystemTime;

use serde::Serialize;

/// A failed round or apply: why, from which input, and which snapshot it was.
#[derive(Clone, Debug, Serialize)]
pub struct Failure {
    /// A short label, also the `reason` label of the failure metrics: `fetch`, `render`,
    /// `validate`, `install`, `mass_removal`, `prometheus_reload`, `prometheus_not_ready`,
    /// `grafana_not_healthy`.
    pub reason: &'static str,
    /// The error, naming its input (bucket/key or parameter, file and line); secrets masked.
    pub message: String,
    /// The digest of the snapshot that failed (empty for a fetch failure).
    pub snapshot: String,
    /// Whether the previous configuration was reinstalled after it had been applied.
    pub rolled_back: bool,
    /// Seconds since the Unix epoch.
    pub at: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
struct Doc {
    /// The running snapshot's digest.
    snapshot: String,
    /// How many configurations have been applied since start (1 = the boot's).
    generation: u64,
    sources: Vec<String>,
    /// When the running snapshot was applied (seconds since the Unix epoch).
    applied_at: u64,
    /// When the inputs the node runs on were fetched (older than `applied_at` when booted
    /// from the last known good inputs).
    fetched_at: u64,
    /// Why the node runs from the last known good inputs, if it does.
    degraded: Option<String>,
    last_failure: Option<Failure>,
    /// The last watch round: when it ended and the API calls it made.
    last_round_at: u64,
    last_round_calls: u64,
    watch_interval_secs: u64,
    /// The last sync of rules and Alertmanager config to AMP (`amp.sync: true` only).
    amp_sync: Option<AmpSync>,
}

/// How the last AMP sync went.
#[derive(Clone, Debug, Serialize)]
pub struct AmpSync {
    pub ok: bool,
    /// The plan's summary line, or the error naming its input file.
    pub message: String,
    /// Seconds since the Unix epoch.
    pub at: u64,
}

/// The shared status document.
#[derive(Default)]
pub struct Status(Mutex<Doc>);

pub fn now() -> u64 {
    secs(SystemTime::now())
}

pub fn secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Status {
    fn with(&self, f: impl FnOnce(&mut Doc)) {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// A configuration now runs: from fresh inputs (`fetched_at` now) or the last good ones.
    pub fn applied(&self, snapshot: &str, sources: Vec<String>, fetched_at: SystemTime) {
        self.with(|d| {
            d.snapshot = snapshot.to_owned();
            d.generation += 1;
            d.sources = sources;
            d.applied_at = now();
            d.fetched_at = secs(fetched_at);
        });
    }

    /// The sources answered with the running inputs, unchanged.
    pub fn confirmed(&self) {
        self.with(|d| d.fetched_at = now());
    }

    pub fn degraded(&self, why: Option<String>) {
        self.with(|d| d.degraded = why);
    }

    pub fn failed(&self, failure: Failure) {
        self.with(|d| d.last_failure = Some(failure));
    }

    pub fn round(&self, calls: u64) {
        self.with(|d| {
            d.last_round_at = now();
            d.last_round_calls = calls;
        });
    }

    pub fn amp_synced(&self, ok: bool, message: &str) {
        let message = message.to_owned();
        self.with(|d| {
            d.amp_sync = Some(AmpSync {
                ok,
                message,
                at: now(),
            })
        });
    }

    pub fn interval(&self, secs: u64) {
        self.with(|d| d.watch_interval_secs = secs);
    }

    pub fn generation(&self) -> u64 {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).generation
    }

    /// The document as JSON, with the running configuration's age.
    pub fn to_json(&self) -> String {
        let doc = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut value = serde_json::to_value(&doc).unwrap_or_default();
        if let Some(obj) = value.as_object_mut() {
            obj.insert(
                "age_secs".into(),
                now().saturating_sub(doc.fetched_at).into(),
            );
        }
        let mut text = serde_json::to_string_pretty(&value).unwrap_or_default();
        text.push('\n');
        crate::secret::mask(&text)
    }
}
