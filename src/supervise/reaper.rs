//! moninit as a child subreaper: processes orphaned below it (a child's daemonised helper,
//! a grandchild whose parent died) are re-parented to moninit instead of PID 1, and reaped
//! here so they never linger as zombies.
//!
//! Reaping must not steal the exit status of moninit's own children, which tokio waits for by
//! PID. So this never calls `waitpid(-1)`: it lists moninit's zombie children in /proc and
//! reaps, by PID, only those that are not in the managed set.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;
use tokio_util::sync::CancellationToken;

/// PIDs of the children moninit itself spawned and waits for (supervised children, and
/// short-lived helpers such as promtool and `--version` probes).
#[derive(Clone, Default)]
pub struct Managed(Arc<Mutex<HashSet<i32>>>);

/// The process-wide set: every spawn registers here, so the reaper never takes a status that
/// someone is waiting for.
pub fn managed() -> &'static Managed {
    static MANAGED: std::sync::OnceLock<Managed> = std::sync::OnceLock::new();
    MANAGED.get_or_init(Managed::default)
}

/// Keeps `pid` registered as managed until dropped.
pub struct Tracked(i32);

/// Registers a helper process spawned outside the supervisor.
pub fn track(pid: Option<u32>) -> Tracked {
    let pid = pid.map_or(0, |p| p as i32);
    managed().add(pid);
    Tracked(pid)
}

impl Drop for Tracked {
    fn drop(&mut self) {
        managed().remove(self.0);
    }
}

impl Managed {
    pub fn add(&self, pid: i32) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).insert(pid);
    }

    pub fn remove(&self, pid: i32) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&pid);
    }

    fn contains(&self, pid: i32) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&pid)
    }
}

/// Makes this process a child subreaper (Linux `PR_SET_CHILD_SUBREAPER`).
pub fn become_subreaper() {
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        tracing::warn!(error = %e, "could not become a child subreaper; orphans will go to PID 1");
    }
}

/// Reaps orphaned zombies on every SIGCHLD (and every few seconds) until `shutdown`.
pub async fn run(shutdown: CancellationToken) {
    let mut sigchld = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "no SIGCHLD handler; orphans are reaped every 5 s only");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = sigchld.recv() => {}
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = shutdown.cancelled() => {}
        }
        // Give tokio the first chance at its own children.
        tokio::time::sleep(Duration::from_millis(20)).await;
        reap_orphans(managed());
        if shutdown.is_cancelled() {
            return;
        }
    }
}

/// This process's children as (pid, state letter), read from /proc.
fn own_children() -> Vec<(i32, char)> {
    let me = std::process::id() as i32;
    super::procfs::pids()
        .filter_map(|pid| {
            let stat = super::procfs::stat(pid)?;
            (stat.ppid == me).then_some((pid, stat.state))
        })
        .collect()
}

/// Reaps every zombie child of this process that is not managed. Returns how many.
pub fn reap_orphans(managed: &Managed) -> usize {
    let mut reaped = 0;
    for (pid, state) in own_children() {
        if state == 'Z'
            && !managed.contains(pid)
            && waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)).is_ok()
        {
            tracing::debug!(pid, "reaped an orphaned process");
            reaped += 1;
        }
    }
    reaped
}

/// At exit: ends every process still parented to moninit that it does not manage (orphans it
/// adopted, such as a plugin left by a crashed Grafana): SIGTERM, up to `grace`, then SIGKILL,
/// then reaps them.
pub async fn end_adopted(grace: Duration) {
    use nix::sys::signal::{kill, Signal};
    let adopted = || -> Vec<i32> {
        own_children()
            .into_iter()
            .filter(|(pid, state)| *state != 'Z' && !managed().contains(*pid))
            .map(|(pid, _)| pid)
            .collect()
    };
    let pids = adopted();
    if pids.is_empty() {
        reap_orphans(managed());
        return;
    }
    tracing::info!(
        count = pids.len(),
        "ending processes left behind by children"
    );
    for pid in &pids {
        let _ = kill(Pid::from_raw(*pid), Signal::SIGTERM);
    }
    let deadline = tokio::time::Instant::now() + grace;
    while tokio::time::Instant::now() < deadline && !adopted().is_empty() {
        reap_orphans(managed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for pid in adopted() {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    reap_orphans(managed());
}
