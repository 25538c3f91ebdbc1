//! Applying new inputs to a running node: guard, install, reload the children, prove them
//! healthy, or roll back.
//!
//! - **Guard.** A snapshot that would remove every scrape job or every dashboard is refused
//!   unless `watch.allow_removing_all` says otherwise.
//! - **Install** the rendered set atomically, as at boot.
//! - **Reload.** Prometheus reloads through `/-/reload` when its files changed: a 200 means
//!   it loaded them, anything else that it refused them. A new program restarts it. Grafana
//!   restarts when its files, its plugins or its program changed.
//! - **Prove.** Each restarted child must be ready (Prometheus' `/-/ready`, Grafana's
//!   `/api/health`, from the child's own socket) within `watch.health_timeout_secs`.
//! - **Roll back** when it is not: the previous file set is installed again, the previous
//!   programs restarted, Prometheus reloaded, and the snapshot is remembered as refused so it
//!   is not tried again until the sources change.
//!
//! One apply runs at a time (the caller's loop). Installation never awaits, so a stop asked
//! for during an apply leaves either the old set or the new one installed, never a mix.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use super::run::Started;
use super::Prepared;
use crate::admin::metrics;
use crate::config::Config;
use crate::install;
use crate::layout::Layout;
use crate::programs;
use crate::render::OutputFile;
use crate::supervise::{self, Spec};
use crate::watch::{self, Failure, Status};

/// What runs now.
pub(super) struct Live {
    /// The agent config it runs on (as read, before the programs' trees are applied).
    pub config: Config,
    /// The rendered set installed.
    pub files: Vec<OutputFile>,
    /// The digest of the inputs it was rendered from.
    pub digest: String,
    /// Scrape jobs and dashboards in those inputs ([`watch::counts`]).
    pub counts: (usize, usize),
    /// The digest of the last inputs that failed: not tried again until the sources change.
    pub refused: Option<String>,
    /// When the running inputs were last saved as last known good (`None`: not since boot,
    /// which ran from them).
    pub saved: Option<std::time::Instant>,
    /// What AMP should hold according to the running inputs (agent mode).
    pub amp: crate::amp::Desired,
}

impl Live {
    /// What boot installed from `prepared`, whose inputs' digest is `digest`.
    pub fn new(
        config: Config,
        prepared: &Prepared,
        digest: String,
        saved: Option<std::time::Instant>,
    ) -> Self {
        Live {
            config,
            files: prepared.files.clone(),
            digest,
            counts: watch::counts(&prepared.snapshot),
            refused: None,
            saved,
            amp: prepared.amp.clone(),
        }
    }
}

/// Where an apply reports to.
pub(super) struct Report<'a> {
    pub supervisor: &'a metrics::Supervisor,
    pub inputs: &'a metrics::Inputs,
    pub status: &'a Status,
}

impl Report<'_> {
    /// Records a failure: metrics, `/status` and the log.
    pub fn failed(&self, reason: &'static str, message: &str, snapshot: &str, rolled_back: bool) {
        let message = crate::secret::mask(message);
        tracing::error!(
            reason,
            rolled_back,
            "reload failed, running configuration kept: {message}"
        );
        self.inputs.failed(reason, rolled_back);
        self.status.failed(Failure {
            reason,
            message,
            snapshot: snapshot.to_owned(),
            rolled_back,
            at: watch::status::now(),
        });
    }
}

/// Which children an apply touched, so a rollback undoes exactly that.
#[derive(Default)]
struct Touched {
    prometheus: Option<Spec>,
    prometheus_reloaded: bool,
    grafana: Option<Spec>,
}

/// Applies `prepared` (whose inputs' digest is `digest`) on top of `live`; `true` when it
/// runs now and proved healthy.
pub(super) async fn apply(
    prepared: Prepared,
    digest: String,
    live: &mut Live,
    layout: &Layout,
    started: &Started,
    report: &Report<'_>,
) -> bool {
    let counts = watch::counts(&prepared.snapshot);
    let watch_config = &prepared.config.watch;
    if !watch_config.allow_removing_all {
        let removed: Vec<&str> = [
            (live.counts.0 > 0 && counts.0 == 0, "every scrape job"),
            (live.counts.1 > 0 && counts.1 == 0, "every dashboard"),
        ]
        .iter()
        .filter_map(|(gone, what)| gone.then_some(*what))
        .collect();
        if !removed.is_empty() {
            report.failed(
                "mass_removal",
                &format!(
                    "the new inputs would remove {} (none left under prometheus/scrape_configs/ or grafana/dashboards/ in {}); refused (watch.allow_removing_all: true allows it)",
                    removed.join(" and "),
                    sources(&prepared.config)
                ),
                &digest,
                false,
            );
            live.refused = Some(digest);
            return false;
        }
    }
    let outcome = match install::install(&layout.config_dir, &prepared.files) {
        Ok(o) => o,
        Err(e) => {
            report.failed("install", &e.to_string(), &digest, false);
            live.refused = Some(digest);
            return false;
        }
    };
    // The files are installed now: a failure to link the plugins must not pretend that
    // nothing changed. Grafana is restarted either way and loads what is there.
    let plugins_changed = match programs::link_plugins(layout, &prepared.programs) {
        Ok(changed) => changed,
        Err((path, e)) => {
            tracing::error!(path, error = %e, "could not link the pinned Grafana plugins");
            true
        }
    };
    let changed: Vec<PathBuf> = outcome
        .report
        .written
        .iter()
        .chain(&outcome.removed)
        .cloned()
        .collect();
    let touches = |dir: &str| {
        changed
            .iter()
            .any(|p| p.starts_with(layout.config_dir.join(dir)))
    };
    tracing::info!(changed = changed.len(), "new configuration installed");
    let timeout = Duration::from_secs(watch_config.health_timeout_secs);
    let mut touched = Touched::default();
    let proven = async {
        prometheus(
            &prepared,
            layout,
            started,
            touches("prometheus"),
            timeout,
            &mut touched,
        )
        .await?;
        grafana(
            &prepared,
            layout,
            started,
            touches("grafana") || plugins_changed,
            timeout,
            &mut touched,
        )
        .await
    }
    .await;
    if let Err((reason, why)) = proven {
        tracing::warn!(reason, "{why}: rolling back");
        rollback(live, layout, &prepared.config, started, touched, timeout).await;
        report.failed(reason, &why, &digest, true);
        live.refused = Some(digest);
        return false;
    }
    report.supervisor.archives(&prepared.programs);
    let store = crate::artifact::store::Store::new(&layout.state_dir);
    let mut keep = prepared.programs.digests();
    keep.extend(in_use(&store, layout, started));
    store.retire(&keep);
    super::fallback::keep(layout, &prepared);
    report.inputs.last_good_saved(SystemTime::now());
    report.status.applied(
        &digest,
        prepared
            .config
            .sources
            .iter()
            .map(|s| s.to_string())
            .collect(),
        SystemTime::now(),
    );
    report.inputs.applied(report.status.generation(), &digest);
    live.files = prepared.files;
    live.amp = prepared.amp;
    live.digest = digest;
    live.counts = counts;
    live.refused = None;
    live.saved = Some(std::time::Instant::now());
    tracing::info!(
        generation = report.status.generation(),
        sha256 = live.digest,
        "new configuration applied and healthy"
    );
    true
}

fn sources(config: &Config) -> String {
    config
        .sources
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn prometheus_addr(config: &Config) -> Option<SocketAddr> {
    config.prometheus.listen.parse().ok()
}

/// A new binary means a restart, proven by readiness; new files only, a `/-/reload`.
async fn prometheus(
    prepared: &Prepared,
    layout: &Layout,
    started: &Started,
    files: bool,
    timeout: Duration,
    touched: &mut Touched,
) -> Result<(), (&'static str, String)> {
    let Some(handle) = &started.prometheus else {
        return Ok(());
    };
    match programs::prometheus_spec(&prepared.config.prometheus, layout).await {
        Ok(spec) if spec != handle.spec() => {
            tracing::info!(program = %spec.program.display(), "prometheus: new program; restarting it on the new tree");
            touched.prometheus = Some(handle.spec());
            let request = handle.restart_with(spec);
            return match tokio::time::timeout(timeout, handle.ready_since(request)).await {
                Ok(true) => Ok(()),
                _ => Err((
                    "prometheus_not_ready",
                    format!(
                        "prometheus on its new program was not ready within {} s (watch.health_timeout_secs)",
                        timeout.as_secs()
                    ),
                )),
            };
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(error = %e, "prometheus: cannot build its new command line; it keeps running as it is")
        }
    }
    if !files {
        return Ok(());
    }
    touched.prometheus_reloaded = true;
    let reloaded = match prometheus_addr(&prepared.config) {
        Some(a) => supervise::child::http_post_ok(a, "/-/reload").await,
        None => false,
    };
    if reloaded {
        tracing::info!("prometheus reloaded its configuration");
        Ok(())
    } else {
        Err((
            "prometheus_reload",
            "prometheus refused the new configuration (POST /-/reload did not answer 200; its log says why)".into(),
        ))
    }
}

/// Grafana reads its files and plugins only at start: any change is a restart, proven by
/// its health.
async fn grafana(
    prepared: &Prepared,
    layout: &Layout,
    started: &Started,
    files: bool,
    timeout: Duration,
    touched: &mut Touched,
) -> Result<(), (&'static str, String)> {
    let Some(handle) = &started.grafana else {
        return Ok(());
    };
    let spec = match programs::grafana_binary(&prepared.config.grafana) {
        Ok(Some(binary)) => programs::grafana(&prepared.config.grafana, layout, binary),
        _ => handle.spec(),
    };
    let request = if spec != handle.spec() {
        tracing::info!(program = %spec.program.display(), "grafana: new program; restarting it on the new tree");
        touched.grafana = Some(handle.spec());
        handle.restart_with(spec)
    } else if files {
        touched.grafana = Some(handle.spec());
        handle.restart()
    } else {
        return Ok(());
    };
    match tokio::time::timeout(timeout, handle.ready_since(request)).await {
        Ok(true) => Ok(()),
        _ => Err((
            "grafana_not_healthy",
            format!(
                "grafana was not healthy within {} s of its restart on the new configuration (watch.health_timeout_secs)",
                timeout.as_secs()
            ),
        )),
    }
}

/// Puts back what ran before: the previous file set, then the children an apply touched.
async fn rollback(
    live: &Live,
    layout: &Layout,
    config: &Config,
    started: &Started,
    touched: Touched,
    timeout: Duration,
) {
    if let Err(e) = install::install(&layout.config_dir, &live.files) {
        tracing::error!("rollback: could not reinstall the previous configuration: {e}");
    }
    if let Some(handle) = &started.prometheus {
        if let Some(spec) = touched.prometheus {
            let request = handle.restart_with(spec);
            let _ = tokio::time::timeout(timeout, handle.ready_since(request)).await;
        } else if touched.prometheus_reloaded {
            let reloaded = match prometheus_addr(config) {
                Some(a) => supervise::child::http_post_ok(a, "/-/reload").await,
                None => false,
            };
            if !reloaded {
                tracing::warn!("rollback: prometheus /-/reload failed; restarting it");
                let request = handle.restart();
                let _ = tokio::time::timeout(timeout, handle.ready_since(request)).await;
            }
        }
    }
    if let (Some(handle), Some(spec)) = (&started.grafana, touched.grafana) {
        let request = handle.restart_with(spec);
        let _ = tokio::time::timeout(timeout, handle.ready_since(request)).await;
    }
    tracing::info!("rolled back to the previous configuration");
}

/// The store trees the running children use (their program, Grafana's homepath and its
/// plugin links), whatever the pins say now: a tree is never removed under a running child.
fn in_use(
    store: &crate::artifact::store::Store,
    layout: &Layout,
    started: &Started,
) -> std::collections::BTreeSet<crate::artifact::Sha256> {
    let mut paths: Vec<PathBuf> = Vec::new();
    for handle in [&started.prometheus, &started.grafana]
        .into_iter()
        .flatten()
    {
        let spec = handle.spec();
        paths.push(spec.program.clone());
        paths.extend(
            spec.args
                .iter()
                .filter_map(|a| a.to_str()?.strip_prefix("--homepath=").map(PathBuf::from)),
        );
    }
    if let Ok(links) = std::fs::read_dir(layout.state("grafana/plugins")) {
        paths.extend(
            links
                .flatten()
                .filter_map(|l| std::fs::read_link(l.path()).ok()),
        );
    }
    paths.iter().filter_map(|p| store.digest_of(p)).collect()
}
