//! Debian's real Prometheus, in agent mode, remote-writing through `moninit proxy` into a
//! Prometheus remote-write receiver that sits behind the botocore SigV4 verifier.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::process::{self, Owned};
use crate::support::stand_ins::{Proxy, Verifier};
use crate::support::{self, http};

const WS: &str = "ws-0b1c2d3e-aaaa-bbbb-cccc-123456789012";

/// A Prometheus on a free loopback port; `extra` flags select its role.
pub fn prometheus(
    dir: &std::path::Path,
    name: &str,
    config: &str,
    extra: &[&str],
) -> (Owned, SocketAddr) {
    let addr: SocketAddr = format!("127.0.0.1:{}", process::free_port())
        .parse()
        .unwrap();
    let config_path = dir.join(format!("{name}.yml"));
    std::fs::write(&config_path, config.replace("SELF", &addr.to_string())).unwrap();
    let mut cmd = Command::new("prometheus");
    cmd.arg(format!("--config.file={}", config_path.display()))
        .arg(format!("--web.listen-address={addr}"))
        .args(extra);
    let owned = process::spawn(cmd, Some(dir.join(format!("{name}.log"))));
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if http::get(addr, "/-/ready").is_ok_and(|r| r.status == 200) {
            return (owned, addr);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "{name} not ready: {}",
        std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default()
    );
}

/// Waits (up to 40 s) until the AMP stand-in's receiver holds the agent's own `up` samples
/// (`cluster="test"`, `job="moninit"`); `log` says what the agent did when they do not come.
pub fn wait_for_agent_samples(receiver: SocketAddr, log: impl Fn() -> String) {
    let query = "/api/v1/query?query=up%7Bcluster%3D%22test%22%2Cjob%3D%22moninit%22%7D";
    crate::support::wait_for(
        std::time::Duration::from_secs(40),
        std::time::Duration::from_millis(500),
        || format!("no samples arrived:\n{}", log()),
        || {
            let r = crate::support::http::get(receiver, query).ok()?;
            (!r.json()["data"]["result"].as_array()?.is_empty()).then_some(())
        },
    );
}

/// The AMP stand-in: a Prometheus remote-write receiver (its TSDB in `dir`) behind the
/// botocore SigV4 verifier. Returns the receiver (kept alive by the handle) and the verifier.
pub fn amp_stand_in(dir: &std::path::Path) -> (Owned, SocketAddr, Verifier) {
    let (receiver, addr) = prometheus(
        dir,
        "receiver",
        "global: {}\n",
        &[
            "--web.enable-remote-write-receiver",
            &format!("--storage.tsdb.path={}", dir.join("tsdb").display()),
        ],
    );
    let verifier = Verifier::start(&["--upstream", &format!("http://{addr}")]);
    (receiver, addr, verifier)
}

#[test]
fn prometheus_remote_writes_through_the_proxy_and_every_request_is_verified() {
    let dir = tempfile::tempdir().unwrap();
    let (_receiver, _, verifier) = amp_stand_in(dir.path());
    let proxy = Proxy::start(verifier.addr, &[], &[]);
    let sender_config = format!(
        "global:\n  scrape_interval: 1s\n  external_labels:\n    cluster: e2e\n    __replica__: sender-1\n\
         scrape_configs:\n  - job_name: sender\n    static_configs:\n      - targets: [\"SELF\"]\n\
         remote_write:\n  - url: http://{}/workspaces/{WS}/api/v1/remote_write\n    queue_config:\n      batch_send_deadline: 1s\n",
        proxy.addr
    );
    let (_sender, _) = prometheus(
        dir.path(),
        "sender",
        &sender_config,
        &[
            "--enable-feature=agent",
            &format!("--storage.agent.path={}", dir.path().join("wal").display()),
            "--storage.remote.flush-deadline=1s",
        ],
    );

    // Query the receiver through the proxy too: reads are signed and verified the same way.
    let query = format!(
        "/workspaces/{WS}/api/v1/query?query=up%7Bjob%3D%22sender%22%2Ccluster%3D%22e2e%22%7D"
    );
    let found = support::wait_for(
        Duration::from_secs(45),
        Duration::from_millis(500),
        || "no samples arrived through the proxy".into(),
        || {
            let resp = proxy.send("GET", &query, &[], b"");
            assert_eq!(resp.status, 200, "{}", resp.text());
            let result = resp.json()["data"]["result"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            (!result.is_empty()).then_some(result)
        },
    );
    assert_eq!(found[0]["metric"]["__replica__"], "sender-1");
    let log = verifier.requests();
    let writes = log
        .iter()
        .filter(|e| e["path"].as_str().unwrap().ends_with("/remote_write"))
        .count();
    assert!(writes >= 1, "no remote_write reached the verifier");
    let unverified: Vec<_> = log.iter().filter(|e| e["verified"] != true).collect();
    assert!(
        unverified.is_empty(),
        "requests failed verification: {unverified:?}"
    );
}
