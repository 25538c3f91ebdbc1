//! Children: start each one gated on its readiness, restart crashes with jittered
//! exponential backoff, give up after repeated fast failures, stop on request.
//!
//! - [`policy`]: restart and give-up decisions (pure) and the `supervise:` config;
//! - [`child`]: one process at runtime (spawn, readiness probe, stop by process group);
//! - [`ports`]: who holds a port, so readiness proves it is our child answering;
//! - [`leftover`]: children of an earlier run on the same root, ended before a start;
//! - [`reaper`]: subreaping of orphans without stealing our children's statuses.
//!
//! While a child is down between restarts, `/readyz` answers 503 "degraded" naming it and
//! why, systemd's STATUS says the same, and `moninit_child_crashes_total{kind}` counts it.
//!
//! Each child has its own task; the order in which children start and stop belongs to
//! [`crate::app`], which asks each task to stop and waits for it, one after the other.

pub mod child;
pub mod leftover;
pub mod policy;
pub mod ports;
pub mod procfs;
pub mod reaper;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use child::Spec;
pub use policy::Config;

use crate::admin::metrics;
use crate::systemd::status;

/// Why a child could not be kept running.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{child}: cannot start {program}: {source}")]
    Spawn {
        child: &'static str,
        program: String,
        source: std::io::Error,
    },
    #[error("{child}: {why} (at boot: nothing was left running)")]
    NotReady { child: &'static str, why: String },
    #[error("{child}: not started: {taken}. Stop that process, or move {child} with its listen setting (prometheus.listen, grafana.http_port)")]
    PortTaken {
        child: &'static str,
        taken: ports::Taken,
    },
    #[error("{child}: its supervisor failed ({why}); stopping so this instance can be replaced")]
    Panicked { child: &'static str, why: String },
    #[error("{child}: crash loop: gave up after {failures} failures within {window_s} s, each within seconds of its start (last: {last}); stopping so this instance can be replaced")]
    GaveUp {
        child: &'static str,
        failures: usize,
        window_s: u64,
        last: String,
    },
}

/// Which children are ready, for `/readyz`: `None` while starting, `Some(why)` while down
/// between restarts.
#[derive(Default)]
pub struct Readiness {
    children: Mutex<BTreeMap<&'static str, Result<(), Option<String>>>>,
    booted: std::sync::atomic::AtomicBool,
}

impl Readiness {
    pub fn set(&self, child: &'static str, ready: bool) {
        self.children
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(child, if ready { Ok(()) } else { Err(None) });
    }

    /// `child` is down and being restarted, because `why`.
    pub fn down(&self, child: &'static str, why: &str) {
        self.children
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(child, Err(Some(why.to_owned())));
    }

    /// Whether every child is ready now (boot finished or not).
    pub fn children_ready(&self) -> bool {
        self.children
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .all(|r| r.is_ok())
    }

    /// Whether boot has finished (so anything not ready now is a degradation).
    pub fn is_booted(&self) -> bool {
        self.booted.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn booted(&self) {
        self.booted.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Ready when boot finished and every child is ready; otherwise the names not ready.
    pub fn check(&self) -> Result<(), Vec<String>> {
        let children = self.children.lock().unwrap_or_else(|e| e.into_inner());
        let mut waiting: Vec<String> = children
            .iter()
            .filter_map(|(n, r)| match r {
                Ok(()) => None,
                Err(None) => Some(n.to_string()),
                Err(Some(why)) => Some(format!("{n} down ({why}), restarting")),
            })
            .collect();
        if !self.booted.load(std::sync::atomic::Ordering::SeqCst) {
            waiting.insert(0, "boot".into());
        }
        if waiting.is_empty() {
            Ok(())
        } else {
            Err(waiting)
        }
    }
}

/// Shared by every child task.
#[derive(Clone)]
pub struct Shared {
    pub config: Config,
    pub readiness: Arc<Readiness>,
    pub metrics: metrics::Supervisor,
}

/// A supervised child's task and its controls.
pub struct Handle {
    pub name: &'static str,
    stop: CancellationToken,
    /// Restart requests, counted: a request made while the child is not running yet is
    /// satisfied by its next start, not by a second restart after it.
    restart: watch::Sender<u64>,
    /// What the next start runs: replaced to move the child to a new binary.
    spec: watch::Sender<Spec>,
    /// 0 until the child is first ready; then 1 + the restart requests its latest ready run
    /// fulfils.
    ready: watch::Receiver<u64>,
    /// `None` once joined: a finished task is awaited exactly once.
    task: Option<JoinHandle<Result<(), Error>>>,
}

impl Handle {
    /// Waits until the child is ready for the first time, or its task ended (an error).
    pub async fn first_ready(&mut self) -> Result<(), Error> {
        if self.ready.wait_for(|r| *r > 0).await.is_ok() {
            return Ok(());
        }
        match self.join().await {
            Err(e) => Err(e),
            Ok(()) => Err(Error::NotReady {
                child: self.name,
                why: "its supervisor ended".into(),
            }),
        }
    }

    /// Awaits the task if it has not been awaited yet.
    async fn join(&mut self) -> Result<(), Error> {
        match self.task.as_mut() {
            Some(task) => {
                let result = match task.await {
                    Ok(r) => r,
                    Err(e) => Err(Error::Panicked {
                        child: self.name,
                        why: e.to_string(),
                    }),
                };
                self.task = None;
                result
            }
            None => Ok(()),
        }
    }

    /// Restarts the child (not counted as a failure), e.g. after its config changed; returns
    /// the request's number for [`Handle::ready_since`].
    pub fn restart(&self) -> u64 {
        self.restart.send_modify(|n| *n += 1);
        *self.restart.borrow()
    }

    /// Waits until a run started for restart request `request` (or a later one) is ready:
    /// `true`; `false` when the supervisor gave up on the child first. Never resolves while
    /// the child keeps restarting: the caller bounds the wait.
    pub async fn ready_since(&self, request: u64) -> bool {
        let mut ready = self.ready.clone();
        let served = ready.wait_for(|r| *r > request).await.is_ok();
        served
    }

    /// What the child runs now (program and arguments).
    pub fn spec(&self) -> Spec {
        self.spec.borrow().clone()
    }

    /// Restarts the child on `spec` (a new binary, a new homepath), not counted as a failure.
    pub fn restart_with(&self, spec: Spec) -> u64 {
        self.spec.send_replace(spec);
        self.restart()
    }

    /// Stops the child and waits for it to be gone.
    pub async fn stop(mut self) -> Result<(), Error> {
        self.stop.cancel();
        self.join().await
    }

    /// Resolves when the task ends on its own (only by giving up).
    pub async fn ended(&mut self) -> Result<(), Error> {
        self.join().await
    }
}

/// Starts supervising `spec`.
pub fn start(spec: Spec, shared: Shared) -> Handle {
    let stop = CancellationToken::new();
    let (restart, restarts) = watch::channel(0u64);
    let (ready_tx, ready) = watch::channel(0u64);
    let name = spec.name;
    shared.readiness.set(name, false);
    let (spec_tx, spec_rx) = watch::channel(spec);
    let task = tokio::spawn(manage(spec_rx, shared, stop.clone(), restarts, ready_tx));
    Handle {
        name,
        stop,
        restart,
        spec: spec_tx,
        ready,
        task: Some(task),
    }
}

async fn manage(
    specs: watch::Receiver<Spec>,
    shared: Shared,
    stop: CancellationToken,
    mut restarts: watch::Receiver<u64>,
    ready_tx: watch::Sender<u64>,
) -> Result<(), Error> {
    let name = specs.borrow().name;
    let config = &shared.config;
    let mut history = policy::History::new(config);
    let mut booting = true;
    loop {
        // Whatever restart was asked for until now, this start fulfils.
        let request = *restarts.borrow_and_update();
        let spec = specs.borrow().clone();
        let started = Instant::now();
        let mut ready_at = None;
        let last = match start_once(&spec, booting).await {
            Err(Start::Taken(taken)) if booting => {
                return Err(Error::PortTaken { child: name, taken })
            }
            Err(Start::Taken(taken)) => {
                tracing::warn!(child = name, reason = %taken, "not started");
                format!("not started: {taken}")
            }
            Err(Start::Spawn(source)) => {
                let error = Error::Spawn {
                    child: name,
                    program: spec.program.display().to_string(),
                    source,
                };
                if booting {
                    return Err(error);
                }
                // After boot a failed exec (EAGAIN, ENOMEM, ETXTBSY) is one more failure.
                tracing::warn!(child = name, reason = %error, "not started");
                error.to_string()
            }
            Ok(mut running) => {
                let outcome = tokio::select! {
                    r = child::wait_ready(&spec, &mut running, config.ready_timeout()) => Some(r),
                    _ = stop.cancelled() => None,
                };
                match outcome {
                    None => {
                        child::stop(name, &mut running, config.stop_timeout()).await;
                        return Ok(());
                    }
                    Some(Err(why)) => {
                        child::stop(name, &mut running, config.stop_timeout()).await;
                        if booting {
                            return Err(Error::NotReady { child: name, why });
                        }
                        tracing::warn!(child = name, reason = %why, "not ready");
                        why
                    }
                    Some(Ok(())) => {
                        booting = false;
                        ready_at = Some(Instant::now());
                        became_ready(&shared, name, &running, &ready_tx, request);
                        match run_until_exit(&spec, &shared, &mut running, &stop, &mut restarts)
                            .await
                        {
                            Exit::Stopped => return Ok(()),
                            Exit::Restart => continue,
                            Exit::Crashed(why) => why,
                        }
                    }
                }
            }
        };
        shared.readiness.down(name, &last);
        shared.metrics.child_up(name, false);
        let run = policy::Run { started, ready_at };
        match history.exited(run, Instant::now()) {
            policy::Decision::GiveUp { failures } => {
                return Err(Error::GaveUp {
                    child: name,
                    failures,
                    window_s: config.failure_window_secs,
                    last,
                });
            }
            policy::Decision::Restart { delay, kind } => {
                shared.metrics.restarted(name);
                shared.metrics.crashed(name, kind.as_str());
                status(&format!(
                    "degraded: {name} down ({last}); restarting in {:.1} s",
                    delay.as_secs_f64()
                ));
                tracing::info!(
                    child = name,
                    failure = kind.as_str(),
                    delay_ms = delay.as_millis() as u64,
                    "restarting after backoff"
                );
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.cancelled() => return Ok(()),
                }
            }
        }
    }
}

/// Why a start did not produce a running child.
enum Start {
    Taken(ports::Taken),
    Spawn(std::io::Error),
}

/// At boot, ends leftovers of an earlier run; then checks the port is free, then spawns.
async fn start_once(spec: &Spec, booting: bool) -> Result<child::Running, Start> {
    if booting && !spec.markers.is_empty() {
        leftover::end(spec.name, &spec.markers).await;
    }
    child::check_port(spec).map_err(Start::Taken)?;
    child::spawn(spec).map_err(Start::Spawn)
}

fn became_ready(
    shared: &Shared,
    name: &'static str,
    running: &child::Running,
    ready_tx: &watch::Sender<u64>,
    request: u64,
) {
    let was_down = shared.readiness.is_booted() && shared.readiness.check().is_err();
    shared.readiness.set(name, true);
    shared.metrics.child_up(name, true);
    let _ = ready_tx.send(request + 1);
    tracing::info!(
        child = name,
        ready_ms = running.started.elapsed().as_millis() as u64,
        "ready"
    );
    if was_down && shared.readiness.check().is_ok() {
        status("running");
    }
}

/// How a ready child's run ended.
enum Exit {
    /// moninit asked it to stop.
    Stopped,
    /// Restarted on request (new configuration): not a failure.
    Restart,
    /// It exited by itself; why, for the log and the give-up message.
    Crashed(String),
}

async fn run_until_exit(
    spec: &Spec,
    shared: &Shared,
    running: &mut child::Running,
    stop: &CancellationToken,
    restarts: &mut watch::Receiver<u64>,
) -> Exit {
    let name = spec.name;
    let config = &shared.config;
    tokio::select! {
        status = running.child.wait() => {
            // The leader is gone; whatever it left in its group goes too.
            child::kill_group(running.pid, nix::sys::signal::Signal::SIGKILL);
            use std::os::unix::process::ExitStatusExt;
            let (code, signal) = status.as_ref().map(|s| (s.code(), s.signal())).unwrap_or((None, None));
            shared.metrics.exited(name, code, signal);
            let mut text = status.map(child::describe).unwrap_or_else(|e| e.to_string());
            tracing::warn!(child = name, status = %text, "exited");
            // Give the output forwarder a moment to read what the child wrote last.
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            if let Some(line) = running.last_stderr() {
                text.push_str(&format!("; last stderr line: {line}"));
            }
            Exit::Crashed(text)
        }
        _ = stop.cancelled() => {
            shared.readiness.set(name, false);
            shared.metrics.child_up(name, false);
            child::stop(name, running, config.stop_timeout()).await;
            Exit::Stopped
        }
        Ok(()) = restarts.changed() => {
            tracing::info!(child = name, "restarting for new configuration");
            shared.readiness.set(name, false);
            shared.metrics.child_up(name, false);
            child::stop(name, running, config.stop_timeout()).await;
            Exit::Restart
        }
    }
}
