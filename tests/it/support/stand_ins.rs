//! Rust handles on the Python stand-ins and on `moninit proxy`: the botocore-verifying AMP
//! stand-in (`amp_stand_in.py`) and a proxy process in front of any upstream.

use std::net::SocketAddr;
use std::time::Duration;

use super::http::{self, Response};
use super::process::{self, Owned};

pub const KEY: &str = "AKIDMONINITTEST";
pub const SECRET: &str = "moninit-test-secret-key-0123456789abcdef";
pub const WS: &str = "ws-0b1c2d3e-aaaa-bbbb-cccc-123456789012";

pub struct Verifier {
    _process: Owned,
    pub addr: SocketAddr,
}

impl Verifier {
    pub fn start(args: &[&str]) -> Verifier {
        let mut all: Vec<String> = vec!["--key".into(), format!("{KEY}:{SECRET}")];
        all.extend(args.iter().map(|s| s.to_string()));
        let (process, info) = process::stand_in("amp_stand_in.py", &all);
        let addr = info["endpoint"]
            .as_str()
            .unwrap()
            .trim_start_matches("http://")
            .parse()
            .unwrap();
        Verifier {
            _process: process,
            addr,
        }
    }

    /// Every request the verifier received, as it logged them.
    pub fn log(&self) -> Vec<serde_json::Value> {
        http::get(self.addr, "/_stand_in/log")
            .unwrap()
            .json()
            .as_array()
            .unwrap()
            .clone()
    }

    pub fn requests(&self) -> Vec<serde_json::Value> {
        self.log()
            .into_iter()
            .filter(|e| e.get("method").is_some())
            .collect()
    }
}

pub struct Proxy {
    /// Where the proxy's stdout and stderr go.
    pub log: std::path::PathBuf,
    pub process: Owned,
    pub addr: SocketAddr,
    pub metrics: SocketAddr,
}

impl Proxy {
    /// `moninit proxy` in front of `upstream` (host:port, http), with the test key unless
    /// `env` overrides the credentials.
    pub fn start(upstream: SocketAddr, args: &[&str], env: &[(&str, &str)]) -> Proxy {
        let (port, metrics_port) = (process::free_port(), process::free_port());
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let metrics: SocketAddr = format!("127.0.0.1:{metrics_port}").parse().unwrap();
        let mut cmd = super::moninit(None);
        cmd.env("AWS_ACCESS_KEY_ID", KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET)
            .env("RUST_LOG", "info");
        for (k, v) in env {
            if v.is_empty() {
                cmd.env_remove(k);
            } else {
                cmd.env(k, v);
            }
        }
        cmd.args([
            "proxy",
            "--region",
            "us-east-1",
            "--upstream-url-scheme",
            "http",
        ])
        .arg("--host")
        .arg(upstream.to_string())
        .arg("--port")
        .arg(addr.to_string())
        .arg("--metrics-listen")
        .arg(metrics.to_string())
        .args(args);
        let log = std::env::temp_dir().join(format!("moninit-proxy-{port}.log"));
        let mut process = process::spawn(cmd, Some(log.clone()));
        if !process::wait_listening(addr, Duration::from_secs(10)) {
            let status = process.wait_timeout(Duration::from_millis(10));
            panic!(
                "proxy did not start ({status:?}): {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        Proxy {
            log,
            process,
            addr,
            metrics,
        }
    }

    pub fn send(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        http::request(self.addr, method, target, headers, body).unwrap()
    }

    pub fn metrics(&self) -> String {
        http::get(self.metrics, "/metrics").unwrap().text()
    }
}

/// The IMDSv2 stand-in (`imds_stand_in.py`): point moninit at it with
/// `AWS_EC2_METADATA_SERVICE_ENDPOINT` (and `AWS_EC2_METADATA_DISABLED=false`).
pub struct Imds {
    _process: Owned,
    pub endpoint: String,
}

impl Imds {
    pub fn start(instance_id: &str, group: Option<&str>) -> Imds {
        let mut args = vec!["--instance-id".to_owned(), instance_id.to_owned()];
        if let Some(g) = group {
            args.extend(["--group".to_owned(), g.to_owned()]);
        }
        let (process, info) = process::stand_in("imds_stand_in.py", &args);
        Imds {
            _process: process,
            endpoint: info["endpoint"].as_str().unwrap().to_owned(),
        }
    }

    /// moninit's environment for this stand-in.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_EC2_METADATA_DISABLED".into(), "false".into()),
            (
                "AWS_EC2_METADATA_SERVICE_ENDPOINT".into(),
                self.endpoint.clone(),
            ),
        ]
    }
}
