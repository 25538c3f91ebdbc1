//! SIGHUP: read the agent config again, fetch, render, validate and install again, then bring
//! the children in line.
//!
//! The agent config is read again so that new program pins and render settings take effect.
//! What the running process itself is built on (`proxy`, `admin`, `supervise`, `output`) is
//! kept as it runs, and a change there is reported as needing a restart.
//!
//! - A pinned archive that changed (new URL and SHA-256) is downloaded, verified and unpacked
//!   by `prepare`, the rendered config is validated with the new promtool, and the child is
//!   restarted on the new tree. A failed download or verification fails the reload: the
//!   running version and the installed files stay.
//! - Otherwise Prometheus reloads through `/-/reload` when its files changed (restarted only
//!   if that fails), and Grafana restarts when its files or its plugins changed.
//! - After a good reload the program store keeps the trees now in use and the previous ones.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::run::Started;
use super::{prepare, Error, Prepared};
use crate::admin::metrics;
use crate::config::Config;
use crate::install;
use crate::layout::Layout;
use crate::programs;
use crate::source;
use crate::supervise;
use crate::systemd::status;

pub(super) async fn reload(
    config_path: &std::path::Path,
    running: &Config,
    layout: &Layout,
    started: &mut Started,
    sup_metrics: &metrics::Supervisor,
    readiness: &supervise::Readiness,
) -> bool {
    status("reloading configuration");
    tracing::info!("SIGHUP: fetching and rendering again");
    let outcome = async {
        let config = reread(config_path, running)?;
        let prepared = prepare(&config, layout.clone(), source::Occasion::Reload).await?;
        let outcome =
            install::install(&layout.config_dir, &prepared.files).map_err(Error::Install)?;
        // The files are installed now: a failure to link the plugins must not pretend that
        // nothing changed. Grafana is restarted either way and loads what is there.
        let plugins_changed = match programs::link_plugins(layout, &prepared.programs) {
            Ok(changed) => changed,
            Err((path, e)) => {
                tracing::error!(path, error = %e, "could not link the pinned Grafana plugins");
                true
            }
        };
        Ok::<_, Error>((prepared, outcome, plugins_changed))
    }
    .await;
    let applied = outcome.is_ok();
    match outcome {
        Err(e) => {
            sup_metrics.rendered(false);
            tracing::error!(
                "reload failed, running configuration kept: {}",
                crate::secret::mask(&e.to_string())
            );
        }
        Ok((prepared, outcome, plugins_changed)) => {
            sup_metrics.rendered(true);
            sup_metrics.archives(&prepared.programs);
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
            tracing::info!(changed = changed.len(), "reload installed");
            prometheus(&prepared, layout, started, touches("prometheus")).await;
            grafana(
                &prepared,
                layout,
                started,
                touches("grafana") || plugins_changed,
            );
            let store = crate::artifact::store::Store::new(&layout.state_dir);
            let mut keep = prepared.programs.digests();
            keep.extend(in_use(&store, layout, started));
            store.retire(&keep);
            super::fallback::keep(layout, &prepared);
        }
    }
    match readiness.check() {
        Ok(()) => status("running"),
        Err(down) => status(&format!("degraded: {}", down.join(", "))),
    }
    applied
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

/// The agent config as written now, with the parts the running process is built on kept.
fn reread(path: &std::path::Path, running: &Config) -> Result<Config, Error> {
    let mut config = Config::load(path)?;
    let kept = [
        ("proxy", config.proxy != running.proxy),
        ("admin", config.admin != running.admin),
        ("supervise", config.supervise != running.supervise),
        ("output", config.output != running.output),
    ];
    for (section, changed) in kept {
        if changed {
            tracing::warn!(section, "changed in the agent config: takes effect at the next start (systemctl restart moninit)");
        }
    }
    config.proxy = running.proxy.clone();
    config.admin = running.admin.clone();
    config.supervise = running.supervise.clone();
    config.output = running.output.clone();
    Ok(config)
}

/// A new binary means a restart; new files only, a `/-/reload`.
async fn prometheus(prepared: &Prepared, layout: &Layout, started: &Started, files: bool) {
    let Some(handle) = &started.prometheus else {
        return;
    };
    match programs::prometheus_spec(&prepared.config.prometheus, layout).await {
        Ok(spec) if spec != handle.spec() => {
            tracing::info!(program = %spec.program.display(), "prometheus: new program; restarting it on the new tree");
            handle.restart_with(spec);
            return;
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(error = %e, "prometheus: cannot build its new command line; it keeps running as it is")
        }
    }
    if !files {
        return;
    }
    let addr: Option<SocketAddr> = prepared.config.prometheus.listen.parse().ok();
    let ok = match addr {
        Some(a) => supervise::child::http_post_ok(a, "/-/reload").await,
        None => false,
    };
    if ok {
        tracing::info!("prometheus reloaded its configuration");
    } else {
        tracing::warn!("prometheus /-/reload failed; restarting it");
        handle.restart();
    }
}

/// Grafana reads its files and plugins only at start: any change is a restart.
fn grafana(prepared: &Prepared, layout: &Layout, started: &Started, files: bool) {
    let Some(handle) = &started.grafana else {
        return;
    };
    let spec = match programs::grafana_binary(&prepared.config.grafana) {
        Ok(Some(binary)) => programs::grafana(&prepared.config.grafana, layout, binary),
        _ => handle.spec(),
    };
    if spec != handle.spec() {
        tracing::info!(program = %spec.program.display(), "grafana: new program; restarting it on the new tree");
        handle.restart_with(spec);
    } else if files {
        handle.restart();
    }
}
