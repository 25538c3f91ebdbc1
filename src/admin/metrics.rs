//! Every metric moninit exports, defined in one place so names, help texts and buckets stay
//! consistent. Metrics are Prometheus text exposition via the `prometheus-client` crate.

use std::time::{Duration, SystemTime};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteCode {
    pub route: &'static str,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    pub route: &'static str,
}

/// The signing proxy's metrics.
#[derive(Clone)]
pub struct Proxy {
    requests: Family<RouteCode, Counter>,
    upstream_latency: Family<RouteLabel, Histogram, fn() -> Histogram>,
    body_bytes: Histogram,
    signing_seconds: Histogram,
    in_flight: Gauge,
    credential_expiry: Gauge,
    refresh_failures: Counter,
    clock_skew: Gauge<f64, std::sync::atomic::AtomicU64>,
}

fn latency_histogram() -> Histogram {
    // 1 ms .. ~33 s
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

impl Proxy {
    pub fn new() -> Self {
        Proxy {
            requests: Family::default(),
            upstream_latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            // 256 B .. 64 MiB
            body_bytes: Histogram::new(exponential_buckets(256.0, 4.0, 10)),
            // 1 µs .. ~16 ms
            signing_seconds: Histogram::new(exponential_buckets(0.000_001, 2.0, 15)),
            in_flight: Gauge::default(),
            credential_expiry: Gauge::default(),
            refresh_failures: Counter::default(),
            clock_skew: Gauge::default(),
        }
    }

    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("moninit_proxy");
        r.register(
            "requests",
            "Requests handled, by route and HTTP status code",
            self.requests.clone(),
        );
        r.register(
            "upstream_latency_seconds",
            "Time to the upstream's response headers",
            self.upstream_latency.clone(),
        );
        r.register(
            "request_body_bytes",
            "Size of request bodies forwarded",
            self.body_bytes.clone(),
        );
        r.register(
            "signing_seconds",
            "Time spent computing SigV4 signatures",
            self.signing_seconds.clone(),
        );
        r.register(
            "in_flight_requests",
            "Requests being handled now",
            self.in_flight.clone(),
        );
        r.register(
            "credential_expiry_timestamp_seconds",
            "Unix time at which the signing credentials expire (0: they do not)",
            self.credential_expiry.clone(),
        );
        r.register(
            "credential_refresh_failures",
            "Failed credential refreshes",
            self.refresh_failures.clone(),
        );
        r.register(
            "clock_skew_seconds",
            "How far this host's clock is ahead of the upstream's Date (negative: behind); SigV4 refuses 5 minutes",
            self.clock_skew.clone(),
        );
    }

    pub fn clock_skew(&self, seconds: f64) {
        self.clock_skew.set(seconds);
    }

    pub fn request(&self, route: &'static str, code: u16) {
        self.requests
            .get_or_create(&RouteCode { route, code })
            .inc();
    }

    pub fn upstream_latency(&self, route: &'static str, elapsed: Duration) {
        self.upstream_latency
            .get_or_create(&RouteLabel { route })
            .observe(elapsed.as_secs_f64());
    }

    pub fn body_size(&self, bytes: usize) {
        self.body_bytes.observe(bytes as f64);
    }

    pub fn signing(&self, elapsed: Duration) {
        self.signing_seconds.observe(elapsed.as_secs_f64());
    }

    /// Counts a request in flight until the guard drops.
    pub fn in_flight(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    pub fn credential_expiry(&self, expiry: Option<SystemTime>) {
        let secs = expiry
            .and_then(|e| e.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        self.credential_expiry.set(secs as i64);
    }

    pub fn credential_refresh_failed(&self) {
        self.refresh_failures.inc();
    }
}

impl Default for Proxy {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChildLabel {
    pub child: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CrashLabel {
    pub child: &'static str,
    /// `fast` (part of a possible crash loop) or `sporadic` (after a stable run).
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabel {
    pub phase: &'static str,
}

/// The agent's own metrics: children and boot phases.
#[derive(Clone, Default)]
pub struct Supervisor {
    up: Family<ChildLabel, Gauge>,
    restarts: Family<ChildLabel, Counter>,
    crashes: Family<CrashLabel, Counter>,
    last_exit_code: Family<ChildLabel, Gauge>,
    last_exit_signal: Family<ChildLabel, Gauge>,
    phase_seconds: Family<PhaseLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    renders: Counter,
    render_failures: Counter,
    archives_downloaded: Counter,
    archives_reused: Counter,
}

impl Supervisor {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("moninit");
        r.register(
            "child_up",
            "1 when the child is running and ready",
            self.up.clone(),
        );
        r.register(
            "child_restarts",
            "Restarts after a crash or failed readiness",
            self.restarts.clone(),
        );
        r.register(
            "child_crashes",
            "Failed runs by kind: fast (never ready, or gone within supervise.fast_failure_secs of ready) or sporadic",
            self.crashes.clone(),
        );
        r.register(
            "child_last_exit_code",
            "Exit code of the child's last exit (-1: killed by a signal)",
            self.last_exit_code.clone(),
        );
        r.register(
            "child_last_exit_signal",
            "Signal that ended the child's last run (0: none)",
            self.last_exit_signal.clone(),
        );
        r.register(
            "boot_phase_seconds",
            "Duration of each boot phase",
            self.phase_seconds.clone(),
        );
        r.register(
            "renders",
            "Completed fetch-render-validate-install runs",
            self.renders.clone(),
        );
        r.register(
            "archives_downloaded",
            "Program archives downloaded, verified and unpacked",
            self.archives_downloaded.clone(),
        );
        r.register(
            "archives_reused",
            "Program archives found already unpacked in the store (no download)",
            self.archives_reused.clone(),
        );
        r.register(
            "render_failures",
            "Failed fetch-render-validate-install runs",
            self.render_failures.clone(),
        );
    }

    pub fn child_up(&self, child: &'static str, up: bool) {
        self.up.get_or_create(&ChildLabel { child }).set(up as i64);
    }

    pub fn restarted(&self, child: &'static str) {
        self.restarts.get_or_create(&ChildLabel { child }).inc();
    }

    pub fn crashed(&self, child: &'static str, kind: &'static str) {
        self.crashes
            .get_or_create(&CrashLabel { child, kind })
            .inc();
    }

    pub fn exited(&self, child: &'static str, code: Option<i32>, signal: Option<i32>) {
        self.last_exit_code
            .get_or_create(&ChildLabel { child })
            .set(code.map_or(-1, i64::from));
        self.last_exit_signal
            .get_or_create(&ChildLabel { child })
            .set(signal.map_or(0, i64::from));
    }

    pub fn phase(&self, phase: &'static str, elapsed: Duration) {
        self.phase_seconds
            .get_or_create(&PhaseLabel { phase })
            .set(elapsed.as_secs_f64());
    }

    /// Counts a boot's or reload's archives: downloaded or reused from the store.
    pub fn archives(&self, programs: &crate::artifact::Provisioned) {
        for a in programs.all() {
            if a.downloaded {
                self.archives_downloaded.inc();
            } else {
                self.archives_reused.inc();
            }
        }
    }

    pub fn rendered(&self, ok: bool) {
        if ok {
            self.renders.inc();
        } else {
            self.render_failures.inc();
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SnapshotLabel {
    sha256: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabel {
    call: &'static str,
}

/// The running configuration and the watch: generation, snapshot, applies, failures and
/// rollbacks, the last known good inputs, and what watch rounds cost.
#[derive(Clone, Default)]
pub struct Inputs {
    degraded: Gauge,
    last_good_saved: Gauge,
    generation: Gauge,
    snapshot: Family<SnapshotLabel, Gauge>,
    last_apply: Gauge,
    failures: Family<ReasonLabel, Counter>,
    rollbacks: Family<ReasonLabel, Counter>,
    round_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    rounds: Counter,
    calls: Family<CallLabel, Counter>,
}

impl Inputs {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("moninit_config");
        r.register(
            "degraded",
            "1 when the running configuration came from the last known good inputs because the sources could not answer",
            self.degraded.clone(),
        );
        r.register(
            "last_good_timestamp_seconds",
            "When the last known good inputs were saved (the running config's age is time() minus this while degraded)",
            self.last_good_saved.clone(),
        );
        r.register(
            "generation",
            "Configurations applied since start (1: the boot's)",
            self.generation.clone(),
        );
        r.register(
            "snapshot_info",
            "The running inputs' SHA-256 (value always 1)",
            self.snapshot.clone(),
        );
        r.register(
            "last_apply_timestamp_seconds",
            "When the running configuration was applied",
            self.last_apply.clone(),
        );
        r.register(
            "apply_failures",
            "Rounds or applies that failed, by reason (the running configuration kept)",
            self.failures.clone(),
        );
        r.register(
            "rollbacks",
            "Applied configurations that did not prove healthy and were rolled back, by reason",
            self.rollbacks.clone(),
        );
        r.register(
            "watch_round_seconds",
            "Duration of the last watch round (listing and fetching what changed)",
            self.round_seconds.clone(),
        );
        r.register("watch_rounds", "Watch rounds made", self.rounds.clone());
        r.register(
            "watch_api_calls",
            "AWS API calls made by watch rounds, by call",
            self.calls.clone(),
        );
    }

    pub fn degraded(&self, on: bool) {
        self.degraded.set(on as i64);
    }

    pub fn last_good_saved(&self, at: SystemTime) {
        self.last_good_saved.set(unix(at));
    }

    /// A configuration now runs (`generation`, the inputs' digest).
    pub fn applied(&self, generation: u64, sha256: &str) {
        self.generation.set(generation as i64);
        self.snapshot.clear();
        self.snapshot
            .get_or_create(&SnapshotLabel {
                sha256: sha256.to_owned(),
            })
            .set(1);
        self.last_apply.set(unix(SystemTime::now()));
    }

    pub fn failed(&self, reason: &'static str, rolled_back: bool) {
        self.failures.get_or_create(&ReasonLabel { reason }).inc();
        if rolled_back {
            self.rollbacks.get_or_create(&ReasonLabel { reason }).inc();
        }
    }

    pub fn round(&self, took: Duration, calls: &[(&'static str, u64)]) {
        self.round_seconds.set(took.as_secs_f64());
        self.rounds.inc();
        for (call, n) in calls {
            self.calls.get_or_create(&CallLabel { call }).inc_by(*n);
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabel {
    action: &'static str,
}

/// Syncs of rules and the Alertmanager config to AMP (`amp.sync: true`).
#[derive(Clone, Default)]
pub struct Amp {
    syncs: Family<ResultLabel, Counter>,
    changes: Family<ActionLabel, Counter>,
    last_success: Gauge,
}

impl Amp {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("moninit_amp");
        r.register(
            "syncs",
            "Syncs of rule groups namespaces and the Alertmanager definition, by result (ok, failed)",
            self.syncs.clone(),
        );
        r.register(
            "changes",
            "Changes made in AMP by syncs, by action (create, update, delete)",
            self.changes.clone(),
        );
        r.register(
            "last_sync_success_timestamp_seconds",
            "When AMP last held what the inputs say",
            self.last_success.clone(),
        );
    }

    /// A sync ended; `changes` are (action, count) when it succeeded.
    pub fn synced(&self, ok: bool, changes: &[(&'static str, usize)]) {
        let result = if ok { "ok" } else { "failed" };
        self.syncs.get_or_create(&ResultLabel { result }).inc();
        for (action, n) in changes {
            self.changes
                .get_or_create(&ActionLabel { action })
                .inc_by(*n as u64);
        }
        if ok {
            self.last_success.set(unix(SystemTime::now()));
        }
    }
}

fn unix(at: SystemTime) -> i64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Renders `registry` in the Prometheus/OpenMetrics text format.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)
        .expect("writing to a String cannot fail");
    out
}
