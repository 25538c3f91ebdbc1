//! One child process at runtime: spawn it in its own process group with its output captured
//! line by line into moninit's log, probe its readiness, stop it (SIGTERM to the group, then
//! SIGKILL to the group after the stop timeout), and never leave a zombie.
//!
//! `NOTIFY_SOCKET` is removed from the child's environment: Grafana (and any sd_notify-aware
//! program) would otherwise tell systemd "ready" before moninit has checked everything.
//!
//! Trust nothing moninit did not start:
//! - before a start, the child's listen address must be free ([`ports::check_free`]): a
//!   stranger on the port is named, and the child is not started against it;
//! - readiness counts only when the answering socket belongs to the child's process group
//!   ([`ports::group_listens`]), so a stranger answering `/-/ready` never makes moninit ready;
//! - every child gets `PR_SET_PDEATHSIG` = SIGKILL, so it dies with moninit whatever kills
//!   moninit (`kill -9` included). SIGKILL, not SIGTERM: a moninit that died took the
//!   signing proxy with it, so a Prometheus told to stop would spend its whole flush deadline
//!   failing to send; its WAL keeps the unsent samples for the next boot instead.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

use super::ports;

/// What to run and how to tell it is ready.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    pub name: &'static str,
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// `GET http://ADDR/PATH` answering 200 means ready; `None`: ready once started.
    pub ready: Option<(SocketAddr, String)>,
    /// The address the child binds: must be free before each start, and its listening
    /// socket must be the child's for readiness to count.
    pub listen: Option<SocketAddr>,
    /// Arguments only a child of this moninit's layout has (`--storage.agent.path=DIR`,
    /// `--config=FILE`): a process carrying one that moninit did not start is left over from
    /// an earlier run, and is ended before the child's first start.
    pub markers: Vec<OsString>,
}

/// A started child.
pub struct Running {
    pub child: Child,
    pub pid: i32,
    pub started: Instant,
    /// The child's last line on stderr: what a give-up message quotes.
    pub last_stderr: Arc<Mutex<Option<String>>>,
    /// Registered with the reaper for as long as this handle lives, so its exit status is
    /// tokio's to collect.
    _tracked: super::reaper::Tracked,
}

/// Starts `spec` in a new process group, forwarding its output to the log.
pub fn spawn(spec: &Spec) -> std::io::Result<Running> {
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        // Normally every child is stopped and waited for; this only matters if its
        // supervisor task dies, and then the child must not outlive it.
        .kill_on_drop(true);
    die_with_parent(&mut cmd);
    let mut child = cmd.spawn()?;
    let _tracked = super::reaper::track(child.id());
    let pid = child.id().map(|p| p as i32).unwrap_or(0);
    let name = spec.name;
    let last_stderr = Arc::new(Mutex::new(None));
    if let Some(out) = child.stdout.take() {
        tokio::spawn(forward_lines(name, "stdout", out, None));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(forward_lines(
            name,
            "stderr",
            err,
            Some(last_stderr.clone()),
        ));
    }
    tracing::info!(child = name, pid, program = %spec.program.display(), "started");
    Ok(Running {
        child,
        pid,
        started: Instant::now(),
        last_stderr,
        _tracked,
    })
}

/// Makes the child receive SIGKILL when moninit dies (`PR_SET_PDEATHSIG`), set in the child
/// between fork and exec.
///
/// The one `unsafe` of the crate: `pre_exec` runs in the forked child, where only
/// async-signal-safe calls are allowed; `prctl` and `getppid` are plain system calls, and
/// the errors are built from raw OS codes, so nothing allocates. The signal fires when the *thread* that forked exits, not only the
/// process: children are spawned from tokio worker threads, which live as long as the
/// runtime (moninit never uses `block_in_place`, which could retire one). If moninit died
/// between fork and `prctl`, the child is already orphaned and gives up before exec.
#[allow(unsafe_code)]
fn die_with_parent(cmd: &mut Command) {
    let parent = nix::unistd::getpid();
    // SAFETY: the closure only makes async-signal-safe system calls and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
                .map_err(|e| std::io::Error::from_raw_os_error(e as i32))?;
            // moninit died between fork and prctl: the child is already an orphan.
            if nix::unistd::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(nix::libc::ESRCH));
            }
            Ok(())
        });
    }
}

async fn forward_lines(
    name: &'static str,
    stream: &'static str,
    reader: impl tokio::io::AsyncRead + Unpin,
    last: Option<Arc<Mutex<Option<String>>>>,
) {
    let mut lines = BufReader::new(reader).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::info!(target: "moninit::child", child = name, stream, "{line}");
        if let Some(last) = &last {
            if !line.trim().is_empty() {
                *last.lock().unwrap_or_else(|e| e.into_inner()) = Some(line);
            }
        }
    }
}

impl Running {
    /// The child's last stderr line, if it wrote one.
    pub fn last_stderr(&self) -> Option<String> {
        self.last_stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Refuses to start `spec` while its listen address is taken (the child would only fail
/// to bind, and a stranger could pass its readiness probe).
pub fn check_port(spec: &Spec) -> Result<(), ports::Taken> {
    spec.listen.map_or(Ok(()), ports::check_free)
}

/// Waits until `spec`'s readiness check passes, the child exits, or `timeout` passes.
pub async fn wait_ready(
    spec: &Spec,
    running: &mut Running,
    timeout: Duration,
) -> Result<(), String> {
    let Some((addr, path)) = &spec.ready else {
        return Ok(());
    };
    let deadline = Instant::now() + timeout;
    // Probe every 10 ms for the first 2 s (readiness usually takes tens of milliseconds and
    // every probe is one loopback connection), then every 100 ms.
    let fast_until = Instant::now() + Duration::from_secs(2);
    let port = spec.listen.map_or(addr.port(), |l| l.port());
    let mut stranger = None;
    loop {
        if let Ok(Some(status)) = running.child.try_wait() {
            let mut why = format!("exited before becoming ready ({})", describe(status));
            if let Some(line) = running.last_stderr() {
                why.push_str(&format!("; last stderr line: {line}"));
            }
            // Most often the reason: someone else holds the port.
            if let Some(holder) = ports::holder(port) {
                why.push_str(&format!("; port {port} is held by {holder}"));
            }
            return Err(why);
        }
        if http_ok(*addr, path).await {
            if ports::group_listens(running.pid, port) {
                return Ok(());
            }
            // Someone answered, but not our child: keep waiting for the child (it will
            // most likely fail to bind and exit), and say who it was if time runs out.
            if stranger.is_none() {
                stranger = Some(ports::holder(port).map_or_else(
                    || "a process that is not moninit's child".to_owned(),
                    |h| h.to_string(),
                ));
                tracing::warn!(child = spec.name, %addr, answered_by = stranger.as_deref().unwrap_or(""), "a process that moninit did not start answers the readiness probe; not counted");
            }
        }
        if Instant::now() >= deadline {
            let mut why = format!(
                "not ready at http://{addr}{path} within {} s",
                timeout.as_secs()
            );
            if let Some(who) = &stranger {
                why.push_str(&format!(
                    " (the port is answered by {who}, not by the child)"
                ));
            }
            return Err(why);
        }
        let pause = if Instant::now() < fast_until { 10 } else { 100 };
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}

/// Whether `GET http://addr/path` answers 200 within a second.
pub async fn http_ok(addr: SocketAddr, path: &str) -> bool {
    http_status_ok(addr, "GET", path, Duration::from_secs(1)).await
}

/// Whether `POST http://addr/path` (empty body) answers 200 within 10 seconds.
pub async fn http_post_ok(addr: SocketAddr, path: &str) -> bool {
    http_status_ok(addr, "POST", path, Duration::from_secs(10)).await
}

async fn http_status_ok(addr: SocketAddr, method: &str, path: &str, timeout: Duration) -> bool {
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let request =
            format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await.ok()?;
        Some(&head[9..12] == b"200")
    };
    tokio::time::timeout(timeout, probe)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// Sends SIGTERM to the child's process group, waits up to `timeout`, then SIGKILLs the
/// group. Returns the child's exit status (it is always reaped).
pub async fn stop(name: &str, running: &mut Running, timeout: Duration) -> Option<ExitStatus> {
    if let Ok(Some(status)) = running.child.try_wait() {
        kill_group(running.pid, Signal::SIGKILL);
        return Some(status);
    }
    kill_group(running.pid, Signal::SIGTERM);
    match tokio::time::timeout(timeout, running.child.wait()).await {
        Ok(status) => {
            // Anything the child left in its group goes too.
            kill_group(running.pid, Signal::SIGKILL);
            let status = status.ok();
            tracing::info!(child = name, status = %status.map(describe).unwrap_or_default(), "stopped");
            status
        }
        Err(_) => {
            tracing::warn!(
                child = name,
                timeout_s = timeout.as_secs(),
                "did not stop after SIGTERM; killing its process group"
            );
            kill_group(running.pid, Signal::SIGKILL);
            running.child.wait().await.ok()
        }
    }
}

pub fn kill_group(pid: i32, signal: Signal) {
    if pid > 0 {
        let _ = killpg(Pid::from_raw(pid), signal);
    }
}

/// `exit code 3` / `signal 9 (SIGKILL)`.
pub fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => match Signal::try_from(sig) {
            Ok(s) => format!("signal {sig} ({})", s.as_str()),
            Err(_) => format!("signal {sig}"),
        },
        _ => "unknown status".into(),
    }
}
