//! The `moninit run` rig: an agent under test with its own ports and root, wrappers that
//! run stand-in scripts as "binaries", and process-table checks for what is left behind.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::http;
use super::process::{self, Owned};

/// Ports and paths of one agent under test.
pub struct Agent {
    pub process: Owned,
    /// The agent config file (rewrite it and send SIGHUP to change pins).
    pub config: PathBuf,
    pub admin: SocketAddr,
    pub root: PathBuf,
    pub log: PathBuf,
    pub _dir: tempfile::TempDir,
}

/// What the agent's config should say beyond the defaults.
pub struct Setup<'a> {
    pub sources: String,
    pub amp_endpoint: String,
    pub prometheus_binary: Option<PathBuf>,
    pub grafana_binary: Option<PathBuf>,
    pub extra: &'a str,
    pub env: Vec<(String, String)>,
    pub proxy_port: Option<u16>,
    /// `prometheus.listen`'s port; a free one when `None`.
    pub prometheus_port: Option<u16>,
    /// Run on this root (a fresh one in the agent's temporary directory when `None`).
    pub root: Option<PathBuf>,
    /// Extra lines inside the `prometheus:` section (two-space indented).
    pub prometheus_lines: String,
    /// Run Grafana with these extra lines in its section (two-space indented), with no
    /// `binary` unless `grafana_binary` says so.
    pub grafana_lines: Option<String>,
    /// PATH for moninit (the tests' own when `None`).
    pub path: Option<PathBuf>,
}

impl<'a> Setup<'a> {
    pub fn local() -> Self {
        Setup {
            sources: format!("  - file://{}/\n", super::examples().display()),
            amp_endpoint: format!("http://127.0.0.1:{}", process::free_port()),
            prometheus_binary: None,
            grafana_binary: None,
            extra: "",
            env: Vec::new(),
            proxy_port: None,
            prometheus_port: None,
            root: None,
            prometheus_lines: String::new(),
            grafana_lines: None,
            path: None,
        }
    }
}

/// An executable `NAME` in `dir` that runs a tests/support Python script with the venv.
pub fn wrapper(dir: &Path, name: &str, script: &str, env: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    let text = format!(
        "#!/bin/sh\n{env}exec {} {} \"$@\"\n",
        super::python().display(),
        super::repo().join("tests/support").join(script).display()
    );
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// An agent whose "Prometheus" is tests/support/fake_child.py with `behaviour` (its
/// FAKE_CHILD value) and `extra` config; the temporary directory holds the wrapper.
pub fn with_fake_prometheus(behaviour: &str, extra: &'static str) -> (Agent, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let fake = wrapper(
        dir.path(),
        "prometheus",
        "fake_child.py",
        &format!("FAKE_CHILD={behaviour} "),
    );
    (
        Agent::start(Setup {
            prometheus_binary: Some(fake),
            extra,
            ..Setup::local()
        }),
        dir,
    )
}

impl Agent {
    /// Waits for moninit to exit by itself; asserts its exit code; returns its log.
    pub fn exits_with(&mut self, code: i32, timeout: Duration) -> String {
        let status = self
            .process
            .wait_timeout(timeout)
            .unwrap_or_else(|| panic!("moninit still running:\n{}", self.log_text()));
        assert_eq!(status.code(), Some(code), "{}", self.log_text());
        self.log_text()
    }

    pub fn start(setup: Setup<'_>) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let root = setup
            .root
            .clone()
            .unwrap_or_else(|| dir.path().join("root"));
        let (admin_port, prom_port, grafana_port) = (
            process::free_port(),
            setup.prometheus_port.unwrap_or_else(process::free_port),
            process::free_port(),
        );
        let proxy_port = setup.proxy_port.unwrap_or_else(process::free_port);
        let grafana = match (&setup.grafana_binary, &setup.grafana_lines) {
            (Some(b), lines) => format!(
                "grafana:\n  enabled: true\n  binary: {}\n  http_port: {grafana_port}\n{}",
                b.display(),
                lines.as_deref().unwrap_or("")
            ),
            (None, Some(lines)) => {
                format!("grafana:\n  enabled: true\n  http_port: {grafana_port}\n{lines}")
            }
            (None, None) => "grafana:\n  enabled: false\n".into(),
        };
        let prometheus_binary = setup
            .prometheus_binary
            .as_ref()
            .map(|b| format!("  binary: {}\n", b.display()))
            .unwrap_or_default();
        let yaml = format!(
            "region: us-east-1\nsources:\n{}amp_endpoint: {}\ncluster: test\nreplica: r1\n\
             prometheus:\n  listen: 127.0.0.1:{prom_port}\n  flush_deadline: 2s\n  scrape_interval: 1s\n  scrape_timeout: 1s\n{prometheus_binary}{}\
             {grafana}proxy:\n  port: {proxy_port}\nadmin:\n  port: {admin_port}\n{}",
            setup.sources, setup.amp_endpoint, setup.prometheus_lines, setup.extra
        );
        let config = super::write_config(dir.path(), &yaml);
        let log = dir.path().join("moninit.log");
        let mut cmd = super::moninit(None);
        cmd.env("RUST_LOG", "info")
            .args(["run", "--config"])
            .arg(&config)
            .arg("--root")
            .arg(&root);
        for (k, v) in &setup.env {
            cmd.env(k, v);
        }
        if let Some(path) = &setup.path {
            cmd.env("PATH", path);
        }
        let process = process::spawn(cmd, Some(log.clone()));
        Agent {
            process,
            config,
            admin: format!("127.0.0.1:{admin_port}").parse().unwrap(),
            root,
            log,
            _dir: dir,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for `/readyz` to answer 200.
    pub fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if http::get(self.admin, "/readyz").is_ok_and(|r| r.status == 200) {
                return;
            }
            if let Ok(Some(status)) = self.process.child.try_wait() {
                panic!(
                    "moninit exited ({status}) before ready:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("moninit not ready within {timeout:?}:\n{}", self.log_text());
    }

    pub fn metrics(&self) -> String {
        http::get(self.admin, "/metrics")
            .map(|r| r.text())
            .unwrap_or_default()
    }

    /// PIDs of live processes whose command line mentions the agent's root, other than moninit.
    pub fn leftovers(&self) -> Vec<String> {
        leftovers(&self.root)
    }

    /// The PID of moninit's child whose command line contains `needle`.
    pub fn child_pid(&self, needle: &str) -> Option<i32> {
        children(self.process.pid() as i32)
            .into_iter()
            .find(|(_, cmd, _)| cmd.contains(needle))
            .map(|(p, _, _)| p)
    }
}

/// (pid, command line, state) of the children of `parent`.
pub fn children(parent: i32) -> Vec<(i32, String, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.get(1).and_then(|p| p.parse::<i32>().ok()) == Some(parent) {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            out.push((
                pid,
                String::from_utf8_lossy(&cmd).replace('\0', " "),
                f[0].to_owned(),
            ));
        }
    }
    out
}

pub fn leftovers(root: &Path) -> Vec<String> {
    let needle = root.display().to_string();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(
            &std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default(),
        )
        .replace('\0', " ");
        if cmd.contains(&needle) && !cmd.contains(" run --config") {
            out.push(format!("{pid} {cmd}"));
        }
    }
    out
}
