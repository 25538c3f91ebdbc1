//! SIGHUP: read the agent config again, fetch every source whole, render, validate, and
//! apply through the same guard, health gate and rollback as a watch round
//! ([`super::apply`]).
//!
//! The agent config is read again so that new program pins and render settings take effect.
//! What the running process itself is built on (`proxy`, `admin`, `supervise`, `output`) is
//! kept as it runs, and a change there is reported as needing a restart.
//!
//! - A pinned archive that changed (new URL and SHA-256) is downloaded, verified and unpacked
//!   by `prepare`, the rendered config is validated with the new promtool, and the child is
//!   restarted on the new tree. A failed download or verification fails the reload: the
//!   running version and the installed files stay.
//! - Otherwise Prometheus reloads through `/-/reload` when its files changed, and Grafana
//!   restarts when its files or its plugins changed; a child that does not prove healthy
//!   brings the previous configuration back.
//! - After a good reload the program store keeps the trees now in use and the previous ones.

use super::apply::{self, Live, Report};
use super::round::{reason, Outcome};
use super::run::Started;
use super::{prepare, Error};
use crate::config::Config;
use crate::layout::Layout;
use crate::source;
use crate::systemd::status;

pub(super) async fn reload(
    config_path: &std::path::Path,
    live: &mut Live,
    layout: &Layout,
    started: &Started,
    report: &Report<'_>,
) -> Outcome {
    status("reloading configuration");
    tracing::info!("SIGHUP: fetching and rendering again");
    let config = match reread(config_path, &live.config) {
        Ok(c) => c,
        Err(e) => {
            report.failed(reason(&e), &e.to_string(), "", false);
            return Outcome::NotTried;
        }
    };
    let prepared = match prepare(&config, layout.clone(), source::Occasion::Reload).await {
        Ok(p) => p,
        Err(e) => {
            report.supervisor.rendered(false);
            report.failed(reason(&e), &e.to_string(), "", false);
            return if super::round::passing(&e) || matches!(e, Error::Source(_)) {
                Outcome::FetchFailed
            } else {
                Outcome::Refused
            };
        }
    };
    report.supervisor.rendered(true);
    let previous = std::mem::replace(&mut live.config, config.clone());
    // The guard, install and health gate judge the new inputs against what runs; the new
    // agent config is kept only if they run.
    let digest = crate::watch::last_good::digest(&prepared.snapshot);
    if apply::apply(prepared, digest, live, layout, started, report).await {
        Outcome::Applied
    } else {
        live.config = previous;
        Outcome::Refused
    }
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
