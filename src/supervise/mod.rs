//! Children: start each one gated on its readiness, restart crashes with jittered
//! exponential backoff, give up after repeated fast failures, stop on request.
//!
//! - [`policy`]: restart and give-up decisions (pure) and the `supervise:` config;
//! - [`child`]: one process at runtime (spawn, readiness probe, stop by process group);
//! - [`reaper`]: subreaping of orphans without stealing our children's statuses.
//!
//! Each child has its own task; the order in which children start and stop belongs to
//! [`crate::app`], which asks each task to stop and waits for it, one after the other.

pub mod child;
pub mod policy;
pub mod reaper;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use child::Spec;
pub use policy::Config;

use crate::admin::metrics;

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
    #[error("{child}: its supervisor failed ({why}); stopping so this instance can be replaced")]
    Panicked { child: &'static str, why: String },
    #[error("{child}: gave up after {failures} failures within {window_s} s (last: {last}); stopping so this instance can be replaced")]
    GaveUp {
        child: &'static str,
        failures: usize,
        window_s: u64,
        last: String,
    },
}

/// Which children are ready, for `/readyz`.
#[derive(Default)]
pub struct Readiness {
    children: Mutex<BTreeMap<&'static str, bool>>,
    booted: std::sync::atomic::AtomicBool,
}

impl Readiness {
    pub fn set(&self, child: &'static str, ready: bool) {
        self.children
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(child, ready);
    }

    pub fn booted(&self) {
        self.booted.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Ready when boot finished and every child is ready; otherwise the names not ready.
    pub fn check(&self) -> Result<(), Vec<String>> {
        let children = self.children.lock().unwrap_or_else(|e| e.into_inner());
        let mut waiting: Vec<String> = children
            .iter()
            .filter(|(_, r)| !**r)
            .map(|(n, _)| n.to_string())
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
    restart: Arc<Notify>,
    ready: watch::Receiver<bool>,
    /// `None` once joined: a finished task is awaited exactly once.
    task: Option<JoinHandle<Result<(), Error>>>,
}

impl Handle {
    /// Waits until the child is ready for the first time, or its task ended (an error).
    pub async fn first_ready(&mut self) -> Result<(), Error> {
        if self.ready.wait_for(|r| *r).await.is_ok() {
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

    /// Restarts the child (not counted as a failure), e.g. after its config changed.
    pub fn restart(&self) {
        self.restart.notify_one();
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
    let restart = Arc::new(Notify::new());
    let (ready_tx, ready) = watch::channel(false);
    let name = spec.name;
    shared.readiness.set(name, false);
    let task = tokio::spawn(manage(
        spec,
        shared,
        stop.clone(),
        restart.clone(),
        ready_tx,
    ));
    Handle {
        name,
        stop,
        restart,
        ready,
        task: Some(task),
    }
}

async fn manage(
    spec: Spec,
    shared: Shared,
    stop: CancellationToken,
    restart: Arc<Notify>,
    ready_tx: watch::Sender<bool>,
) -> Result<(), Error> {
    let name = spec.name;
    let config = &shared.config;
    let mut history = policy::History::new(config);
    let mut booting = true;
    loop {
        let mut running = child::spawn(&spec).map_err(|source| Error::Spawn {
            child: name,
            program: spec.program.display().to_string(),
            source,
        })?;
        let outcome = tokio::select! {
            r = child::wait_ready(&spec, &mut running, config.ready_timeout()) => Some(r),
            _ = stop.cancelled() => None,
        };
        let last = match outcome {
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
                shared.readiness.set(name, true);
                shared.metrics.child_up(name, true);
                let _ = ready_tx.send(true);
                tracing::info!(
                    child = name,
                    ready_ms = running.started.elapsed().as_millis() as u64,
                    "ready"
                );
                tokio::select! {
                    status = running.child.wait() => {
                        // The leader is gone; whatever it left in its group goes too.
                        child::kill_group(running.pid, nix::sys::signal::Signal::SIGKILL);
                        use std::os::unix::process::ExitStatusExt;
                        let (code, signal) = status.as_ref().map(|s| (s.code(), s.signal())).unwrap_or((None, None));
                        shared.metrics.exited(name, code, signal);
                        let text = status.map(child::describe).unwrap_or_else(|e| e.to_string());
                        tracing::warn!(child = name, status = %text, "exited");
                        text
                    }
                    _ = stop.cancelled() => {
                        shared.readiness.set(name, false);
                        shared.metrics.child_up(name, false);
                        child::stop(name, &mut running, config.stop_timeout()).await;
                        return Ok(());
                    }
                    _ = restart.notified() => {
                        tracing::info!(child = name, "restarting for new configuration");
                        shared.readiness.set(name, false);
                        shared.metrics.child_up(name, false);
                        child::stop(name, &mut running, config.stop_timeout()).await;
                        continue;
                    }
                }
            }
        };
        shared.readiness.set(name, false);
        shared.metrics.child_up(name, false);
        match history.exited(running.started, Instant::now()) {
            policy::Decision::GiveUp { failures } => {
                return Err(Error::GaveUp {
                    child: name,
                    failures,
                    window_s: config.failure_window_secs,
                    last,
                });
            }
            policy::Decision::Restart { delay } => {
                shared.metrics.restarted(name);
                tracing::info!(
                    child = name,
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
