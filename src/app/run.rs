//! `moninit run`: the main job. Boot order and shutdown order are written down here, once.
//!
//! Boot: config → admin port bound (a taken port fails at once) → fetch, render, validate,
//! install → the signing proxy (in-process, bound) → Prometheus (until `/-/ready`) → Grafana
//! (until `/api/health`, when installed) → `READY=1`. A step that fails stops whatever was
//! already started, in shutdown order, and moninit exits non-zero.
//!
//! Shutdown (SIGTERM/SIGINT, or a child given up on): Grafana, then Prometheus (SIGTERM: it
//! flushes remote_write through the proxy, which is still running), then the proxy, then the
//! admin endpoint. Each child past its stop timeout gets SIGKILL to its whole process group.
//! A child given up on after a healthy boot then marks this instance `Unhealthy` in its
//! autoscaling group ([`crate::asg`]); a boot that fails never does, since a fresh instance
//! would fail the same way.
//!
//! SIGHUP: fetch, render, validate and install again; Prometheus reloads through
//! `/-/reload` when its files changed, Grafana restarts when its files changed. A failed
//! reload leaves the running configuration (and the installed files) untouched.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::systemd::{notify, status, NotifyState};
use tokio_util::sync::CancellationToken;

use super::Error;
use crate::admin::{self, metrics};
use crate::config::Config;
use crate::install;
use crate::layout::Layout;
use crate::programs;
use crate::proxy::{self, Settings};
use crate::signals::Signals;
use crate::source;
use crate::supervise::{self, reaper, Handle, Readiness};

/// Everything started so far, stopped in the documented order.
pub(super) struct Started {
    pub(super) grafana: Option<Handle>,
    pub(super) prometheus: Option<Handle>,
    proxy: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
    admin: CancellationToken,
    reaper: CancellationToken,
}

impl Started {
    async fn stop(mut self) -> Result<(), Error> {
        notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
        let mut first_error = None;
        for handle in [self.grafana.take(), self.prometheus.take()]
            .into_iter()
            .flatten()
        {
            tracing::info!(child = handle.name, "stopping");
            if let Err(e) = handle.stop().await {
                first_error.get_or_insert(e);
            }
        }
        if let Some((token, task)) = self.proxy.take() {
            tracing::info!("stopping the signing proxy");
            token.cancel();
            let _ = task.await;
        }
        self.admin.cancel();
        self.reaper.cancel();
        // Anything the children left behind (adopted as subreaper) goes too.
        reaper::end_adopted(Duration::from_secs(5)).await;
        first_error.map_or(Ok(()), |e| Err(e.into()))
    }
}

/// Runs until SIGTERM/SIGINT (exit 0) or until a child is given up on (an error).
pub async fn run(config_path: &Path, root: Option<PathBuf>) -> Result<(), Error> {
    let boot = Instant::now();
    let mut signals = Signals::install().map_err(|e| Error::State {
        path: "signal handlers".into(),
        source: e,
    })?;
    status("loading config");
    let config = Config::load(config_path)?;
    let layout = match &root {
        Some(r) => Layout::rooted(
            &config.output,
            &std::path::absolute(r).unwrap_or_else(|_| r.clone()),
        ),
        None => Layout::new(&config.output),
    };
    reaper::become_subreaper();

    let proxy_metrics = metrics::Proxy::new();
    let sup_metrics = metrics::Supervisor::default();
    let input_metrics = metrics::Inputs::default();
    let amp_metrics = metrics::Amp::default();
    let mut registry = prometheus_client::registry::Registry::default();
    proxy_metrics.register(&mut registry);
    sup_metrics.register(&mut registry);
    input_metrics.register(&mut registry);
    if config.amp.sync {
        amp_metrics.register(&mut registry);
    }
    let readiness = Arc::new(Readiness::default());
    let status_doc = Arc::new(crate::watch::Status::default());
    status_doc.interval(config.watch.interval_secs);

    let admin_addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), config.admin.port);
    let admin_listener = proxy::server::bind(admin_addr, false).await?;
    let mut started = Started {
        grafana: None,
        prometheus: None,
        proxy: None,
        admin: CancellationToken::new(),
        reaper: CancellationToken::new(),
    };
    tokio::spawn(admin::serve(
        admin_listener,
        Arc::new(registry),
        Some(readiness.clone()),
        Some(status_doc.clone()),
        started.admin.clone(),
    ));
    tokio::spawn(reaper::run(started.reaper.clone()));

    // A stop asked for during boot stops whatever has started, in order, and exits 0.
    let result = tokio::select! {
        r = boot_children(&config, &layout, &mut started, &proxy_metrics, &sup_metrics, &readiness) => Some(r),
        _ = signals.terminated() => None,
    };
    let booted = match result {
        Some(Ok(b)) => b,
        Some(Err(e)) => {
            let _ = started.stop().await;
            return Err(e);
        }
        None => {
            tracing::info!("stop requested during boot");
            return started.stop().await;
        }
    };
    readiness.booted();
    sup_metrics.phase("total", boot.elapsed());
    sup_metrics.archives(&booted.programs);
    crate::artifact::store::Store::new(&layout.state_dir).retire(&booted.programs.digests());
    tracing::info!(
        boot_ms = boot.elapsed().as_millis() as u64,
        grafana = booted.grafana,
        "ready"
    );
    status_doc.applied(
        &booted.live.digest,
        config.sources.iter().map(|s| s.to_string()).collect(),
        booted
            .degraded
            .as_ref()
            .map_or_else(std::time::SystemTime::now, |d| d.saved_at),
    );
    input_metrics.applied(status_doc.generation(), &booted.live.digest);
    status_doc.degraded(booted.degraded.as_ref().map(degraded_status));
    let running = match &booted.degraded {
        Some(d) => {
            input_metrics.degraded(true);
            input_metrics.last_good_saved(d.saved_at);
            degraded_status(d)
        }
        None => {
            if booted.live.saved.is_some() {
                input_metrics.last_good_saved(std::time::SystemTime::now());
            }
            "running".to_owned()
        }
    };
    notify(&[NotifyState::Ready, NotifyState::Status(&running)]);
    let watchdog = CancellationToken::new();
    if let Some(interval) = sd_notify::watchdog_enabled() {
        tokio::spawn(watchdog_loop(interval / 2, watchdog.clone()));
    }

    let sdk = source::aws_config(&booted.identity.region).await;
    let amp_stop = CancellationToken::new();
    let follower = config.amp.sync.then(|| {
        crate::amp::follow::spawn(
            crate::amp::client::Amp::new(&sdk, &booted.identity.workspace_id),
            config.amp.clone(),
            amp_metrics.clone(),
            status_doc.clone(),
            amp_stop.clone(),
        )
    });
    // Inputs from the last known good copy may be days old: AMP may hold newer rules. They
    // are synced once the sources have answered.
    if let (Some(follower), None) = (&follower, &booted.degraded) {
        follower.offer(&booted.live.amp);
    }
    let outcome = supervise_loop(
        config_path,
        Watching {
            live: booted.live,
            clients: crate::watch::sources::Clients::new(&sdk),
            degraded: booted.degraded.clone(),
            amp: follower,
        },
        &layout,
        &mut started,
        super::apply::Report {
            supervisor: &sup_metrics,
            inputs: &input_metrics,
            status: &status_doc,
        },
        &readiness,
        &mut signals,
    )
    .await;
    watchdog.cancel();
    amp_stop.cancel();
    let stopped = started.stop().await;
    // Only here, after a healthy boot: a child given up on now is this instance's trouble,
    // which a fresh one would not have. Boot failures above never get this far.
    if let Err(e) = &outcome {
        if config.autoscaling.report_unhealthy {
            tell_the_group(&booted.identity, &e.to_string()).await;
        }
    }
    outcome.and(stopped)
}

/// What a successful boot learnt.
struct Booted {
    grafana: bool,
    identity: crate::render::Identity,
    programs: crate::artifact::Provisioned,
    /// Set when it ran from the last known good inputs.
    degraded: Option<super::fallback::Degraded>,
    /// What runs now: the base for watch rounds and reloads.
    live: super::apply::Live,
}

/// What a boot ran on, once every child is ready. Its inputs are kept as last known good,
/// unless they came from there; their digest is computed once, by that save.
fn booted(
    grafana: bool,
    config: &Config,
    prepared: super::Prepared,
    degraded: Option<super::fallback::Degraded>,
    layout: &Layout,
) -> Booted {
    let (digest, saved) = match &degraded {
        Some(d) => (d.sha256.clone(), None),
        None => match super::fallback::keep(layout, &prepared) {
            Some(digest) => (digest, Some(Instant::now())),
            None => (crate::watch::last_good::digest(&prepared.snapshot), None),
        },
    };
    let live = super::apply::Live::new(config.clone(), &prepared, digest, saved);
    Booted {
        grafana,
        identity: prepared.identity,
        programs: prepared.programs,
        degraded,
        live,
    }
}

/// What the loop after boot follows: the running configuration, the sources, and whether
/// it runs from the last known good inputs.
struct Watching {
    live: super::apply::Live,
    clients: crate::watch::sources::Clients,
    degraded: Option<super::fallback::Degraded>,
    /// Keeps AMP's rules and Alertmanager config in step (`amp.sync: true`).
    amp: Option<crate::amp::follow::Follower>,
}

fn degraded_status(d: &super::fallback::Degraded) -> String {
    let age = std::time::SystemTime::now()
        .duration_since(d.saved_at)
        .unwrap_or_default();
    format!(
        "running degraded: from the last known good inputs ({} min old, sha256 {}), because {}",
        age.as_secs() / 60,
        &d.sha256[..d.sha256.len().min(12)],
        d.reason
    )
}

async fn tell_the_group(identity: &crate::render::Identity, reason: &str) {
    status("marking this instance unhealthy in its autoscaling group");
    let known = source::imds::Facts {
        instance_id: identity.instance_id.clone(),
        autoscaling_group: identity.autoscaling_group.clone(),
        ..Default::default()
    };
    match crate::asg::report_unhealthy(&identity.region, &known, reason).await {
        Ok(crate::asg::Reported::Unhealthy { instance, group }) => {
            tracing::warn!(
                instance,
                group,
                "autoscaling group told: this instance is Unhealthy"
            )
        }
        Ok(crate::asg::Reported::Skipped(why)) => {
            tracing::info!(why, "no autoscaling group to tell")
        }
        Err(e) => {
            tracing::error!(error = %e, "could not mark this instance unhealthy in its autoscaling group")
        }
    }
}

async fn boot_children(
    config: &Config,
    layout: &Layout,
    started: &mut Started,
    proxy_metrics: &metrics::Proxy,
    sup_metrics: &metrics::Supervisor,
    readiness: &Arc<Readiness>,
) -> Result<Booted, Error> {
    // `prometheus --version` runs while the inputs are fetched, unless an archive pins
    // Prometheus: then the binary is known only once it is provisioned.
    let early_spec = config
        .prometheus
        .archive
        .is_none()
        .then(|| programs::prometheus_spec(&config.prometheus, layout));
    status("fetching and rendering configuration");
    let (prepared, degraded) = super::fallback::prepare_boot(config, layout)
        .await
        .inspect_err(|_| sup_metrics.rendered(false))?;
    for (phase, took) in &prepared.phases {
        sup_metrics.phase(phase, *took);
    }
    let t = Instant::now();
    install::install(&layout.config_dir, &prepared.files).map_err(Error::Install)?;
    sup_metrics.phase("install", t.elapsed());
    sup_metrics.rendered(true);
    for dir in ["prometheus", "grafana"] {
        let path = layout.state(dir);
        std::fs::create_dir_all(&path).map_err(|source| Error::State {
            path: path.display().to_string(),
            source,
        })?;
    }
    programs::link_plugins(layout, &prepared.programs)
        .map_err(|(path, source)| Error::State { path, source })?;
    let config_as_read = config;
    let config = &prepared.config;

    status("starting the signing proxy");
    let t = Instant::now();
    let settings = Settings::for_amp(
        &config.proxy,
        &prepared.amp_endpoint,
        &prepared.identity.region,
        &prepared.identity.workspace_id,
    )
    .map_err(proxy::server::Error::Setup)?;
    let upstream = format!(
        "{}://{}",
        settings.upstream.scheme, settings.upstream.authority
    );
    let proxy = proxy::Proxy::new(settings, false, proxy_metrics.clone()).await?;
    if let Ok(listen) = proxy.local_addr() {
        tracing::info!(%listen, %upstream, "signing proxy ready");
    }
    let token = CancellationToken::new();
    started.proxy = Some((token.clone(), tokio::spawn(proxy.serve(token))));
    readiness.set("proxy", true);
    sup_metrics.phase("proxy", t.elapsed());

    let shared = supervise::Shared {
        config: config.supervise.clone(),
        readiness: readiness.clone(),
        metrics: sup_metrics.clone(),
    };
    status("starting prometheus");
    let t = Instant::now();
    let spec = match early_spec {
        Some(spec) => spec.await?,
        None => programs::prometheus_spec(&config.prometheus, layout).await?,
    };
    let handle = started
        .prometheus
        .insert(supervise::start(spec, shared.clone()));
    handle.first_ready().await?;
    sup_metrics.phase("prometheus", t.elapsed());

    let Some(binary) = programs::grafana_binary(&config.grafana)? else {
        tracing::info!("Grafana is not installed (grafana.enabled: auto): skipping it; its files are rendered for when it is");
        all_ready(started, readiness).await?;
        return Ok(booted(false, config_as_read, prepared, degraded, layout));
    };
    status("starting grafana");
    let t = Instant::now();
    let grafana = started.grafana.insert(supervise::start(
        programs::grafana(&config.grafana, layout, binary),
        shared,
    ));
    // Prometheus is watched meanwhile: giving up on it now is a boot failure.
    tokio::select! {
        r = grafana.first_ready() => r?,
        r = ended(&mut started.prometheus) => r?,
    }
    sup_metrics.phase("grafana", t.elapsed());
    all_ready(started, readiness).await?;
    Ok(booted(true, config_as_read, prepared, degraded, layout))
}

/// Waits for a stop signal, a reload signal, a watch round or a child given up on. Rounds
/// come every `watch.interval_secs` (jittered); while running from the last known good
/// inputs, every [`RETRY_FIRST`] doubling up to [`RETRY_MAX`], and any round or reload whose
/// fetch succeeds ends the degraded state. One round or reload runs at a time; a stop asked
/// for during one abandons it (installation itself is never interrupted: it does not await).
async fn supervise_loop(
    config_path: &Path,
    mut watching: Watching,
    layout: &Layout,
    started: &mut Started,
    report: super::apply::Report<'_>,
    readiness: &Readiness,
    signals: &mut Signals,
) -> Result<(), Error> {
    use super::round::Outcome;
    let mut tracker = crate::watch::sources::Tracker::new(&watching.live.config.sources);
    let mut backoff = RETRY_FIRST;
    loop {
        let wait = match watching.degraded {
            Some(_) => Some(backoff),
            None => crate::watch::next_round(&watching.live.config.watch),
        };
        let next_round = async {
            match wait {
                Some(w) => tokio::time::sleep(w).await,
                None => std::future::pending().await,
            }
        };
        let reload = tokio::select! {
            reload = signals.next_is_reload() => {
                if !reload {
                    tracing::info!("stop requested");
                    return Ok(());
                }
                true
            }
            _ = next_round => false,
            r = ended(&mut started.prometheus) => return r,
            r = ended(&mut started.grafana) => return r,
        };
        let work = async {
            if reload {
                let outcome = super::reload::reload(
                    config_path,
                    &mut watching.live,
                    layout,
                    started,
                    &report,
                )
                .await;
                if outcome == Outcome::Applied {
                    tracker = crate::watch::sources::Tracker::new(&watching.live.config.sources);
                }
                outcome
            } else {
                super::round::round(
                    &mut tracker,
                    &watching.clients,
                    &mut watching.live,
                    layout,
                    started,
                    &report,
                )
                .await
            }
        };
        let outcome = tokio::select! {
            outcome = work => outcome,
            _ = signals.terminated() => {
                tracing::info!("stop requested during a round or reload; it is abandoned");
                return Ok(());
            }
        };
        let mut fresh = outcome == Outcome::Applied;
        if outcome == Outcome::FetchFailed {
            backoff = (backoff * 2).min(RETRY_MAX);
        } else if outcome != Outcome::NotTried {
            backoff = RETRY_FIRST;
            if watching.degraded.take().is_some() {
                report.inputs.degraded(false);
                report.status.degraded(None);
                tracing::info!("the sources answer again: no longer degraded");
                fresh = true;
            }
        }
        // Only while the running config still sends rules to AMP: a reload to server mode
        // (or to amp.sync: false) must not empty the workspace.
        let live = &watching.live.config;
        if let (true, Some(follower)) = (fresh, &watching.amp) {
            if live.amp.sync && live.prometheus.mode == crate::render::prometheus::Mode::Agent {
                follower.offer(&watching.live.amp);
            } else {
                tracing::warn!("amp.sync is off in the reloaded config (or Prometheus runs in server mode): AMP is no longer synced; restart moninit to stop following");
            }
        }
        match (&watching.degraded, readiness.check()) {
            (Some(d), _) => status(&degraded_status(d)),
            (None, Ok(())) => status("running"),
            (None, Err(down)) => status(&format!("degraded: {}", down.join(", "))),
        }
    }
}

/// While degraded, the sources are tried again after this, doubling up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_secs(5);
const RETRY_MAX: Duration = Duration::from_secs(300);

/// Waits until every child is ready at the same time (one may have crashed and be
/// restarting during boot): READY=1 is never sent for a node with a child down. A child
/// given up on meanwhile fails the boot.
async fn all_ready(started: &mut Started, readiness: &Readiness) -> Result<(), Error> {
    while !readiness.children_ready() {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            r = ended(&mut started.prometheus) => r?,
            r = ended(&mut started.grafana) => r?,
        }
    }
    Ok(())
}

/// Resolves when the child's supervisor ends on its own (it gave up); never for `None`.
async fn ended(handle: &mut Option<Handle>) -> Result<(), Error> {
    match handle {
        Some(h) => h.ended().await.map_err(Into::into),
        None => std::future::pending().await,
    }
}

async fn watchdog_loop(every: Duration, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => notify(&[NotifyState::Watchdog]),
            _ = stop.cancelled() => return,
        }
    }
}
