//! Child processes owned by a test: stand-ins that announce themselves with one JSON line,
//! and moninit itself. Each is killed by its PID when its handle drops.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// A process killed (by PID) when dropped.
pub struct Owned {
    pub child: Child,
    _stdin: Option<ChildStdin>,
}

impl Owned {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), signal);
    }

    /// Waits up to `timeout` for the process to exit; its status if it did.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns a stand-in script from tests/support and reads its JSON announcement.
pub fn stand_in(script: &str, args: &[String]) -> (Owned, serde_json::Value) {
    let mut child = Command::new(super::python())
        .arg(super::repo().join("tests/support").join(script))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let info: serde_json::Value = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("{script} did not start: {e}: {line:?}"));
    assert!(info.get("error").is_none(), "{script} failed: {info}");
    (
        Owned {
            child,
            _stdin: stdin,
        },
        info,
    )
}

/// Starts a process with output to `log` (inherit if None).
pub fn spawn(mut cmd: Command, log: Option<PathBuf>) -> Owned {
    match log {
        Some(path) => {
            let f = std::fs::File::create(path).unwrap();
            cmd.stdout(f.try_clone().unwrap()).stderr(f);
        }
        None => {
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
        }
    }
    Owned {
        child: cmd.stdin(Stdio::null()).spawn().unwrap(),
        _stdin: None,
    }
}

/// A loopback port free right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something accepts connections on `addr`.
pub fn wait_listening(addr: SocketAddr, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}

/// Resident set size high-water mark of `pid`, in KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}
