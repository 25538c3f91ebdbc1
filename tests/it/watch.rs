//! Live configuration: the last known good inputs, and booting from them when the sources
//! cannot answer.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::prometheus_e2e::amp_stand_in;
use crate::support::agent::{Agent, Setup};
use crate::support::http;
use crate::support::process;
use crate::support::{self, Moto, Seed};

fn seed(port: u16) -> Seed {
    Seed {
        port: Some(port),
        ..Seed::examples()
    }
}

fn agent(seed: &Seed, endpoint: &str, amp: &str, root: &Path) -> Agent {
    Agent::start(Setup {
        sources: format!(
            "  - s3://{}/{}\n  - ssm:{}\n",
            seed.bucket, seed.prefix, seed.ssm_path
        ),
        amp_endpoint: amp.to_owned(),
        root: Some(root.to_owned()),
        extra: "fetch:\n  deadline_secs: 10\n",
        env: vec![
            ("AWS_ENDPOINT_URL".into(), endpoint.to_owned()),
            ("AWS_ACCESS_KEY_ID".into(), "AKIDMONINITTEST".into()),
            (
                "AWS_SECRET_ACCESS_KEY".into(),
                "moninit-test-secret-key-0123456789abcdef".into(),
            ),
        ],
        ..Setup::local()
    })
}

fn find(dir: &Path, name: &str) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.file_name().is_some_and(|n| n == name) {
            return Some(path);
        }
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            if let Some(found) = find(&path, name) {
                return Some(found);
            }
        }
    }
    None
}

/// Boots once with moto up (which saves the last known good inputs), stops, and stops moto.
/// Returns the root, the moto port and the last-good file.
fn booted_once_then_sources_gone(dir: &Path, amp: &str) -> (PathBuf, u16, PathBuf) {
    let port = process::free_port();
    let seed = seed(port);
    let moto = Moto::start(&seed);
    let root = dir.join("root");
    let mut first = agent(&seed, &moto.endpoint, amp, &root);
    first.wait_ready(Duration::from_secs(60));
    let last_good = find(&root, "last-good.json").expect("no last-good.json after a healthy boot");
    assert_eq!(support::mode(&last_good) & 0o777, 0o600);
    first.process.signal(Signal::SIGTERM);
    first.exits_with(0, Duration::from_secs(30));
    drop(moto);
    (root, port, last_good)
}

#[test]
fn a_boot_without_its_sources_runs_from_the_last_good_inputs_until_they_answer() {
    let dir = tempfile::tempdir().unwrap();
    let (_receiver, receiver, verifier) = amp_stand_in(dir.path());
    let amp = format!("http://{}", verifier.addr);
    let (root, port, _) = booted_once_then_sources_gone(dir.path(), &amp);
    let endpoint = format!("http://127.0.0.1:{port}");

    // The sources cannot answer: READY from the last known good inputs, degraded.
    let mut agent = agent(&seed(port), &endpoint, &amp, &root);
    agent.wait_ready(Duration::from_secs(60));
    assert!(
        agent.metrics().contains("moninit_config_degraded 1"),
        "{}",
        agent.metrics()
    );
    assert!(agent
        .log_text()
        .contains("booting from the last known good inputs"));

    // The sources answer again: the next try applies and the degraded flag clears.
    let _moto = Moto::start(&seed(port));
    support::wait_for(
        Duration::from_secs(60),
        Duration::from_millis(500),
        || format!("still degraded:\n{}", agent.log_text()),
        || {
            agent
                .metrics()
                .contains("moninit_config_degraded 0")
                .then_some(())
        },
    );
    assert!(agent.log_text().contains("no longer degraded"));

    // Samples flow through the node all along.
    let query = "/api/v1/query?query=up%7Bcluster%3D%22test%22%2Cjob%3D%22moninit%22%7D";
    support::wait_for(
        Duration::from_secs(40),
        Duration::from_millis(500),
        || format!("no samples arrived:\n{}", agent.log_text()),
        || {
            let r = http::get(receiver, query).unwrap();
            (!r.json()["data"]["result"].as_array().unwrap().is_empty()).then_some(())
        },
    );
}

#[test]
fn a_truncated_last_good_file_is_never_used_and_boot_fails_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let amp = format!("http://127.0.0.1:{}", process::free_port());
    let (root, port, last_good) = booted_once_then_sources_gone(dir.path(), &amp);
    let full = std::fs::read(&last_good).unwrap();
    std::fs::write(&last_good, &full[..full.len() / 2]).unwrap();

    let endpoint = format!("http://127.0.0.1:{port}");
    let mut agent = agent(&seed(port), &endpoint, &amp, &root);
    let log = agent.exits_with(4, Duration::from_secs(60));
    assert!(log.contains("last-good.json"), "{log}");
    assert!(log.contains("truncated or modified"), "{log}");
}
