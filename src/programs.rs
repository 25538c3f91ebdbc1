//! How Prometheus and Grafana are started: binaries, versions and command lines.
//!
//! Prometheus runs with `--web.enable-lifecycle` (SIGHUP reloads go through `/-/reload`), a
//! short `--storage.remote.flush-deadline` (a stopping Prometheus flushes remote_write through
//! the still-running proxy, but not forever), and agent mode spelt as its version needs:
//! `--enable-feature=agent` on 2.x, `--agent` on 3.x.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::layout::{self, Layout};
use crate::render::grafana::{self, Enabled};
use crate::render::prometheus::{self, Mode};
use crate::supervise::Spec;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("prometheus: binary `{0}` not found (prometheus.binary)")]
    NoPrometheus(String),
    #[error("grafana: `grafana.enabled: true` but no Grafana binary found (grafana.binary, or grafana / grafana-server on PATH)")]
    NoGrafana,
    #[error("{0}")]
    Invalid(String),
}

/// A program's path, if it can be found: a path as given, or a name on PATH.
pub fn find_program(program: &Path) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return program.is_file().then(|| program.to_owned());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// Prometheus' major version from `prometheus --version` (`prometheus, version 2.42.0+ds …`).
pub fn prometheus_major(binary: &Path) -> Option<u32> {
    let text = version_output(binary)?;
    let rest = text.split("version ").nth(1)?;
    rest.split('.').next()?.trim().parse().ok()
}

/// What `BINARY --version` prints (stdout and stderr), or `None` if it fails or takes more
/// than 5 seconds (a wrapper that ignores `--version` must not hang boot).
pub fn version_output(binary: &Path) -> Option<String> {
    use std::io::Read;
    let mut child = std::process::Command::new(binary)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .ok()?;
    let _tracked = crate::supervise::reaper::track(Some(child.id()));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                tracing::warn!(binary = %binary.display(), "`--version` did not answer within 5 s");
                return None;
            }
        }
    }
    let mut text = String::new();
    child.stdout.take()?.read_to_string(&mut text).ok()?;
    let _ = child.stderr.take()?.read_to_string(&mut text);
    Some(text)
}

/// The command line for Prometheus (pure: the version is passed in).
pub fn prometheus_args(config: &prometheus::Config, layout: &Layout, major: u32) -> Vec<OsString> {
    let data = layout.state("prometheus");
    let mut args: Vec<OsString> = vec![
        format!(
            "--config.file={}",
            layout.rendered(layout::PROMETHEUS_YML).display()
        )
        .into(),
        format!("--web.listen-address={}", config.listen).into(),
        "--web.enable-lifecycle".into(),
        format!("--storage.remote.flush-deadline={}", config.flush_deadline).into(),
    ];
    match config.mode {
        Mode::Agent => {
            args.push(if major >= 3 {
                "--agent".into()
            } else {
                "--enable-feature=agent".into()
            });
            args.push(format!("--storage.agent.path={}", data.display()).into());
        }
        Mode::Server => args.push(format!("--storage.tsdb.path={}", data.display()).into()),
    }
    args.extend(config.extra_args.iter().map(OsString::from));
    args
}

/// Prometheus' supervision spec.
pub fn prometheus(config: &prometheus::Config, layout: &Layout) -> Result<Spec, Error> {
    let program = find_program(&config.binary)
        .ok_or_else(|| Error::NoPrometheus(config.binary.display().to_string()))?;
    let major = prometheus_major(&program).unwrap_or(2);
    let addr: SocketAddr = config
        .listen
        .parse()
        .map_err(|_| Error::Invalid(format!("prometheus.listen `{}`", config.listen)))?;
    Ok(Spec {
        name: "prometheus",
        args: prometheus_args(config, layout, major),
        program,
        ready: Some((addr, "/-/ready".into())),
        listen: Some(addr),
        // Its data directory, in either mode: two Prometheus on one WAL must never happen.
        markers: ["--storage.agent.path", "--storage.tsdb.path"]
            .iter()
            .map(|flag| format!("{flag}={}", layout.state("prometheus").display()).into())
            .collect(),
    })
}

/// Prometheus' spec, built off the async runtime (`--version` runs a process).
pub async fn prometheus_spec(config: &prometheus::Config, layout: &Layout) -> Result<Spec, Error> {
    let (config, layout) = (config.clone(), layout.clone());
    tokio::task::spawn_blocking(move || prometheus(&config, &layout))
        .await
        .map_err(|e| Error::Invalid(e.to_string()))?
}

/// Links the pinned plugins into Grafana's plugins directory (`STATE/grafana/plugins`);
/// whether anything changed there. The error names the path.
pub fn link_plugins(
    layout: &Layout,
    provisioned: &crate::artifact::Provisioned,
) -> Result<bool, (String, std::io::Error)> {
    let dir = layout.state("grafana/plugins");
    let store = crate::artifact::store::Store::new(&layout.state_dir);
    crate::artifact::link_plugins(&dir, &provisioned.plugins, &store)
        .map_err(|e| (dir.display().to_string(), e))
}

/// The Grafana binary to run, per `grafana.enabled` and `grafana.binary`; `None` = skip.
pub fn grafana_binary(config: &grafana::Config) -> Result<Option<PathBuf>, Error> {
    if config.enabled == Enabled::False {
        return Ok(None);
    }
    let found = match &config.binary {
        Some(b) => find_program(b),
        None => {
            find_program(Path::new("grafana")).or_else(|| find_program(Path::new("grafana-server")))
        }
    };
    match (found, config.enabled) {
        (Some(p), _) => Ok(Some(p)),
        (None, Enabled::True) => Err(Error::NoGrafana),
        (None, _) => Ok(None),
    }
}

/// Grafana's major version: as configured, else from the binary moninit would run
/// (`grafana.binary`, or `grafana`/`grafana-server` on PATH), else the assumed one.
pub fn grafana_version(config: &grafana::Config) -> u32 {
    let detected = || {
        let binary = grafana_binary(config).ok().flatten()?;
        parse_grafana_version(&version_output(&binary)?)
    };
    config
        .version
        .or_else(detected)
        .unwrap_or(grafana::Config::ASSUMED_VERSION)
}

/// `grafana version 12.1.0` (or `Version 12.1.0 (commit: …)`) → 12.
fn parse_grafana_version(text: &str) -> Option<u32> {
    let lower = text.to_ascii_lowercase();
    let rest = lower
        .split("version")
        .nth(1)?
        .trim_start()
        .trim_start_matches('v');
    rest.split('.').next()?.trim().parse().ok()
}

/// Grafana's supervision spec: `grafana server` (or the older `grafana-server`).
pub fn grafana(config: &grafana::Config, layout: &Layout, program: PathBuf) -> Spec {
    let mut args: Vec<OsString> = Vec::new();
    if program.file_name().is_some_and(|n| n != "grafana-server") {
        args.push("server".into());
    }
    args.push(
        format!(
            "--config={}",
            layout.rendered(layout::GRAFANA_INI).display()
        )
        .into(),
    );
    args.push(format!("--homepath={}", config.homepath.display()).into());
    args.extend(config.extra_args.iter().map(OsString::from));
    let ready = grafana_probe_addr(&config.http_addr, config.http_port)
        .map(|a| (a, "/api/health".to_owned()));
    let listen = grafana_listen_addr(&config.http_addr, config.http_port);
    Spec {
        name: "grafana",
        program,
        args,
        ready,
        listen,
        markers: vec![format!(
            "--config={}",
            layout.rendered(layout::GRAFANA_INI).display()
        )
        .into()],
    }
}

/// The address Grafana binds: every interface when `http_addr` is empty.
fn grafana_listen_addr(http_addr: &str, port: u16) -> Option<SocketAddr> {
    use std::net::ToSocketAddrs;
    match http_addr.trim_matches(['[', ']']) {
        "" => Some(SocketAddr::from(([0, 0, 0, 0], port))),
        host => (host, port).to_socket_addrs().ok()?.next(),
    }
}

/// Where to probe Grafana: loopback when it listens on every interface, else the configured
/// address (a name is resolved). `None` (no probe: ready once started) only if it cannot be
/// resolved at all, which Grafana itself would then fail on.
fn grafana_probe_addr(http_addr: &str, port: u16) -> Option<SocketAddr> {
    use std::net::ToSocketAddrs;
    match http_addr.trim_matches(['[', ']']) {
        "" | "0.0.0.0" => Some(SocketAddr::from(([127, 0, 0, 1], port))),
        "::" => Some(SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port))),
        host => (host, port).to_socket_addrs().ok()?.next(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        Layout {
            config_dir: "/r/etc".into(),
            state_dir: "/r/var".into(),
        }
    }

    #[test]
    fn agent_mode_is_spelt_per_major_version() {
        let c = prometheus::Config::default();
        let v2: Vec<String> = prometheus_args(&c, &layout(), 2)
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        assert!(v2.contains(&"--enable-feature=agent".into()) && !v2.contains(&"--agent".into()));
        assert!(v2.contains(&"--storage.agent.path=/r/var/prometheus".into()));
        assert!(v2.contains(&"--web.enable-lifecycle".into()));
        let v3: Vec<String> = prometheus_args(&c, &layout(), 3)
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        assert!(v3.contains(&"--agent".into()) && !v3.contains(&"--enable-feature=agent".into()));
        let server = prometheus::Config {
            mode: Mode::Server,
            ..Default::default()
        };
        let s: Vec<String> = prometheus_args(&server, &layout(), 2)
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        assert!(s.contains(&"--storage.tsdb.path=/r/var/prometheus".into()));
    }

    #[test]
    fn grafana_version_strings_give_the_major() {
        assert_eq!(parse_grafana_version("grafana version 12.1.0\n"), Some(12));
        assert_eq!(
            parse_grafana_version("Version 13.0.0 (commit: abc, branch: HEAD)"),
            Some(13)
        );
        assert_eq!(parse_grafana_version("nothing"), None);
        let pinned = grafana::Config {
            version: Some(13),
            ..Default::default()
        };
        assert_eq!(grafana_version(&pinned), 13);
    }

    #[test]
    fn grafana_probe_addresses_follow_http_addr() {
        assert_eq!(
            grafana_probe_addr("", 3000),
            Some("127.0.0.1:3000".parse().unwrap())
        );
        assert_eq!(
            grafana_probe_addr("::", 3000),
            Some("[::1]:3000".parse().unwrap())
        );
        assert_eq!(
            grafana_probe_addr("10.1.2.3", 3000),
            Some("10.1.2.3:3000".parse().unwrap())
        );
        assert_eq!(
            grafana_probe_addr("localhost", 3000).map(|a| a.port()),
            Some(3000)
        );
    }

    #[test]
    fn grafana_readiness_is_probed_on_loopback() {
        let spec = grafana(
            &grafana::Config::default(),
            &layout(),
            "/usr/sbin/grafana".into(),
        );
        assert_eq!(spec.args[0], "server");
        assert_eq!(spec.ready.unwrap().0, "127.0.0.1:3000".parse().unwrap());
        let old = grafana(
            &grafana::Config::default(),
            &layout(),
            "/usr/sbin/grafana-server".into(),
        );
        assert!(old.args[0].to_string_lossy().starts_with("--config="));
    }
}
