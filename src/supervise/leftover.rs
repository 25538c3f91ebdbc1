//! Children left over from an earlier run of moninit on the same root: found and ended
//! before a new child starts.
//!
//! A leftover is normally impossible (children die with moninit: `PR_SET_PDEATHSIG`), but a
//! moninit from an older version, one whose child was started by hand with moninit's command
//! line, or a kernel that lost the signal, leaves a Prometheus holding the WAL and the port.
//! It is recognised by an argument that only a child of this layout has (the data directory
//! or the config file path: see [`super::Spec::marker`]) and by not being moninit's own child,
//! and ended: SIGTERM, then SIGKILL after `grace`.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Whether a NUL-separated command line carries `marker` as an argument, or as the value of
/// an `--option=VALUE` argument.
pub fn carries(cmdline: &[u8], marker: &OsStr) -> bool {
    let marker = marker.as_bytes();
    cmdline.split(|b| *b == 0).any(|arg| {
        arg == marker
            || arg
                .iter()
                .position(|b| *b == b'=')
                .is_some_and(|at| &arg[at + 1..] == marker)
    })
}

/// PIDs of live processes carrying `marker`, other than moninit and its own children.
pub fn find(marker: &OsStr) -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| parent(*pid) != Some(me))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| carries(&c, marker))
        })
        .collect()
}

fn parent(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Ends every leftover carrying `marker`; returns how many there were.
pub async fn end(child: &'static str, marker: &OsStr, grace: Duration) -> usize {
    let found = find(marker);
    if found.is_empty() {
        return 0;
    }
    for pid in &found {
        let who = super::ports::describe(*pid);
        tracing::warn!(child, leftover = %who, marker = %marker.to_string_lossy(), "a {child} from an earlier run still uses this root; ending it");
        let _ = kill(Pid::from_raw(*pid), Signal::SIGTERM);
    }
    let deadline = tokio::time::Instant::now() + grace;
    let alive = |pid: &i32| kill(Pid::from_raw(*pid), None).is_ok() && !is_zombie(*pid);
    while tokio::time::Instant::now() < deadline && found.iter().any(alive) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for pid in found.iter().filter(|p| alive(p)) {
        tracing::warn!(child, pid, "leftover ignored SIGTERM; killing it");
        let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
    }
    found.len()
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| Some(s.rsplit_once(')')?.1.split_whitespace().next()? == "Z"))
        .unwrap_or(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_marker_matches_whole_arguments_and_option_values_only() {
        let cmd = b"/usr/bin/prometheus\0--config.file=/r/etc/p.yml\0--storage.agent.path=/r/var/prometheus\0";
        assert!(carries(cmd, OsStr::new("/r/var/prometheus")));
        assert!(!carries(cmd, OsStr::new("/r/var/prom")));
        assert!(!carries(cmd, OsStr::new("/r/var/prometheus/wal")));
        assert!(carries(
            b"x\0/r/var/prometheus\0",
            OsStr::new("/r/var/prometheus")
        ));
    }
}
