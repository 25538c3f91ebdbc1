//! Children left over from an earlier run of moninit on the same root: found and ended
//! before the first start of a new child.
//!
//! A leftover is normally impossible (children die with moninit: `PR_SET_PDEATHSIG`), but a
//! moninit from an older version, a child started by hand with moninit's command line, or a
//! kernel that lost the signal, leaves a Prometheus holding the WAL and the port. It is
//! recognised by an exact argument that only a child of this root has
//! (`--storage.agent.path=DIR`, `--config=FILE`: see [`super::Spec::markers`]), by running
//! as moninit's own user, and by not being moninit's child; then ended: SIGTERM, SIGKILL
//! after [`GRACE`], and waited for until it is gone, so its port is free when moninit checks.
//! A tool that merely names the directory (`du DIR`, `promtool tsdb analyze DIR`) never
//! matches. Between the scan and the signal a PID could in theory be reused; the scan is
//! repeated just before SIGKILL to keep that window small.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::procfs;

/// How long a leftover may take to stop after SIGTERM.
pub const GRACE: Duration = Duration::from_secs(5);

/// How long to wait for a leftover to be gone after SIGKILL.
const AFTER_KILL: Duration = Duration::from_secs(2);

/// Whether a NUL-separated command line carries one of `markers` as a whole argument.
pub fn carries(cmdline: &[u8], markers: &[OsString]) -> bool {
    cmdline
        .split(|b| *b == 0)
        .any(|arg| markers.iter().any(|m| m.as_bytes() == arg))
}

/// PIDs of live processes of this user carrying a marker, other than moninit's children.
pub fn find(markers: &[OsString]) -> Vec<i32> {
    let me = std::process::id() as i32;
    let uid = nix::unistd::geteuid().as_raw();
    procfs::pids()
        .filter(|pid| {
            *pid != me && std::fs::metadata(format!("/proc/{pid}")).is_ok_and(|m| m.uid() == uid)
        })
        .filter(|pid| procfs::stat(*pid).is_some_and(|s| s.ppid != me) && !gone(*pid))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| carries(&c, markers))
        })
        .collect()
}

/// Gone, or a zombie whose every thread has exited: only then are its files (its port, its
/// lock) released. The leader of a killed multi-threaded process shows `Z` while its other
/// threads, which share its open files, are still on their way out.
fn gone(pid: i32) -> bool {
    match procfs::stat(pid).map(|s| s.state == 'Z') {
        None => true,
        Some(false) => false,
        Some(true) => std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|tasks| tasks.count() <= 1)
            .unwrap_or(true),
    }
}

async fn wait_gone(pids: &[i32], within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if pids.iter().all(|p| gone(*p)) {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Ends every leftover carrying a marker; returns how many there were.
pub async fn end(child: &'static str, markers: &[OsString]) -> usize {
    let found = find(markers);
    if found.is_empty() {
        return 0;
    }
    for pid in &found {
        let who = super::ports::describe(*pid);
        tracing::warn!(child, leftover = %who, "a {child} from an earlier run still uses this root; ending it");
        let _ = kill(Pid::from_raw(*pid), Signal::SIGTERM);
    }
    if !wait_gone(&found, GRACE).await {
        // Only those that still carry the marker: never a process that took a freed PID.
        let stubborn = find(markers);
        for pid in found.iter().filter(|p| stubborn.contains(p)) {
            tracing::warn!(
                child,
                pid,
                "leftover ignored SIGTERM for {} s; killing it",
                GRACE.as_secs()
            );
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
        if !wait_gone(&found, AFTER_KILL).await {
            tracing::warn!(child, "a leftover survived SIGKILL");
        }
    }
    found.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_whole_marker_arguments_match() {
        let markers: Vec<OsString> = vec!["--storage.agent.path=/r/var/prometheus".into()];
        let cmd = b"/usr/bin/prometheus\0--config.file=/r/etc/p.yml\0--storage.agent.path=/r/var/prometheus\0";
        assert!(carries(cmd, &markers));
        assert!(!carries(b"du\0/r/var/prometheus\0", &markers));
        assert!(!carries(
            b"promtool\0tsdb\0analyze\0/r/var/prometheus\0",
            &markers
        ));
        assert!(!carries(
            b"prometheus\0--storage.agent.path=/r/var/prometheus/wal\0",
            &markers
        ));
    }
}
