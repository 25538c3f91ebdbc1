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
    let (root, port, last_good) = booted_once_then_sources_gone(dir.path(), &amp);
    let endpoint = format!("http://127.0.0.1:{port}");
    let saved_at = |path: &Path| -> u64 {
        let text = std::fs::read_to_string(path).unwrap();
        let header: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        header["saved_at"].as_u64().unwrap()
    };
    let first_saved = saved_at(&last_good);
    std::thread::sleep(Duration::from_millis(1100));
    let second_boot = unix_now();

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
    // The sources confirmed the inputs: the last-good copy's age starts again from now.
    support::wait_for(
        Duration::from_secs(10),
        Duration::from_millis(200),
        || format!("last-good.json not saved again (first saved at {first_saved})"),
        || (saved_at(&last_good) >= second_boot).then_some(()),
    );

    // Samples flow through the node all along.
    crate::prometheus_e2e::wait_for_agent_samples(receiver, || agent.log_text());
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

/// A node following moto (examples seeded) with rounds every second, the real Prometheus
/// (or a fake one) and the Grafana stand-in.
struct Watched {
    moto: Moto,
    agent: Agent,
    prometheus: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl Watched {
    fn start(fake_prometheus: Option<&str>, interval_secs: u64) -> Watched {
        Watched::start_with(
            fake_prometheus,
            interval_secs,
            "  health_timeout_secs: 20\nsupervise:\n  max_failures: 20\n",
        )
    }

    /// `extra` follows `watch:\n  interval_secs: N\n` in the agent config.
    fn start_with(fake_prometheus: Option<&str>, interval_secs: u64, extra: &str) -> Watched {
        let seed = Seed::examples();
        let moto = Moto::start(&seed);
        let dir = tempfile::tempdir().unwrap();
        let grafana =
            crate::support::agent::wrapper(dir.path(), "grafana", "grafana_stand_in.py", "");
        let prometheus_binary = fake_prometheus.map(|behaviour| {
            crate::support::agent::wrapper(
                dir.path(),
                "prometheus",
                "fake_child.py",
                &format!("FAKE_CHILD={behaviour} "),
            )
        });
        let port = process::free_port();
        let extra = format!("watch:\n  interval_secs: {interval_secs}\n{extra}");
        let extra: &'static str = Box::leak(extra.into_boxed_str());
        let mut agent = Agent::start(Setup {
            sources: format!(
                "  - s3://{}/{}\n  - ssm:{}\n",
                seed.bucket, seed.prefix, seed.ssm_path
            ),
            grafana_binary: Some(grafana),
            prometheus_binary,
            prometheus_port: Some(port),
            extra,
            env: vec![
                ("AWS_ENDPOINT_URL".into(), moto.endpoint.clone()),
                ("AWS_ACCESS_KEY_ID".into(), "AKIDMONINITTEST".into()),
                (
                    "AWS_SECRET_ACCESS_KEY".into(),
                    "moninit-test-secret-key-0123456789abcdef".into(),
                ),
                ("RUST_LOG".into(), "trace".into()),
            ],
            ..Setup::local()
        });
        agent.wait_ready(Duration::from_secs(60));
        Watched {
            moto,
            agent,
            prometheus: format!("127.0.0.1:{port}").parse().unwrap(),
            _dir: dir,
        }
    }

    fn put(&self, key: &str, body: &str) {
        self.moto.python(&format!(
            "boto3.client('s3', **kw).put_object(Bucket='moninit-test', Key='monitoring/{key}', Body={body:?}.encode())"
        ));
    }

    fn delete(&self, key: &str) {
        self.moto.python(&format!(
            "boto3.client('s3', **kw).delete_object(Bucket='moninit-test', Key='monitoring/{key}')"
        ));
    }

    fn status(&self) -> serde_json::Value {
        http::get(self.agent.admin, "/status").unwrap().json()
    }

    fn config_dir(&self) -> PathBuf {
        self.agent.root.join("etc/moninit/rendered")
    }

    /// Every installed file's bytes and mode (a reinstalled file has a new mtime).
    fn tree(&self) -> std::collections::BTreeMap<PathBuf, (Vec<u8>, u32)> {
        support::snapshot(&self.config_dir())
            .into_iter()
            .map(|(path, (bytes, mode, _))| (path, (bytes, mode)))
            .collect()
    }

    /// Waits until `/status` shows a failure with `reason` (newer than `after`, a Unix time).
    /// A rollback waits for the health timeout (20 s) and then for the previous set to be
    /// ready again (up to 20 s more, with the supervisor's backoff after fast failures): the
    /// wait allows for both on a loaded machine.
    fn failure(&self, reason: &str, after: u64) -> serde_json::Value {
        support::wait_for(
            Duration::from_secs(90),
            Duration::from_millis(200),
            || {
                format!(
                    "no {reason} failure in /status: {}\n{}",
                    self.status(),
                    self.agent.log_text()
                )
            },
            || {
                let failure = self.status()["last_failure"].clone();
                (failure["reason"] == reason && failure["at"].as_u64() >= Some(after))
                    .then_some(failure)
            },
        )
    }

    fn generation(&self) -> u64 {
        self.status()["generation"].as_u64().unwrap()
    }

    fn wait_generation(&self, generation: u64) {
        support::wait_for(
            Duration::from_secs(40),
            Duration::from_millis(200),
            || {
                format!(
                    "generation {generation} not reached: {}\n{}",
                    self.status(),
                    self.agent.log_text()
                )
            },
            || (self.generation() >= generation).then_some(()),
        );
    }

    fn assert_ready(&self) {
        let r = http::get(self.agent.admin, "/readyz").unwrap();
        assert_eq!(r.status, 200, "{}\n{}", r.text(), self.agent.log_text());
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn a_scrape_job_added_in_s3_goes_live_without_a_restart_and_a_dashboard_restarts_grafana() {
    let node = Watched::start(None, 1);
    assert_eq!(node.generation(), 1);
    let prometheus = node.agent.child_pid("--config.file=").unwrap();
    let grafana = node.agent.child_pid("grafana_stand_in.py").unwrap();

    node.put(
        "prometheus/scrape_configs/added.yml",
        "- job_name: added-by-watch\n  static_configs:\n    - targets: ['127.0.0.1:9']\n",
    );
    support::wait_for(
        Duration::from_secs(20),
        Duration::from_millis(200),
        || format!("the new job is not live:\n{}", node.agent.log_text()),
        || {
            let r = http::get(node.prometheus, "/api/v1/status/config").ok()?;
            r.text().contains("added-by-watch").then_some(())
        },
    );
    assert_eq!(
        node.agent.child_pid("--config.file="),
        Some(prometheus),
        "Prometheus was restarted"
    );
    assert_eq!(node.generation(), 2);
    assert!(node.agent.metrics().contains("moninit_config_generation 2"));

    node.put(
        "grafana/dashboards/Node/added.json",
        r#"{"title": "Added by watch", "uid": "added-by-watch", "panels": []}"#,
    );
    node.wait_generation(3);
    let restarted = node.agent.child_pid("grafana_stand_in.py").unwrap();
    assert_ne!(restarted, grafana, "Grafana was not restarted");
    assert!(node
        .config_dir()
        .join("grafana/dashboards/Node/added.json")
        .is_file());
    node.assert_ready();
    let status = node.status();
    assert_eq!(status["snapshot"].as_str().unwrap().len(), 64, "{status}");
    assert!(node.agent.metrics().contains(&format!(
        "moninit_config_snapshot_info{{sha256=\"{}\"}} 1",
        status["snapshot"].as_str().unwrap()
    )));
}

#[test]
fn bad_inputs_in_a_round_keep_the_running_configuration_and_say_why() {
    let node = Watched::start(None, 1);
    let before = node.tree();

    // Malformed YAML in a changed object: named by its key.
    let t = unix_now();
    node.put(
        "prometheus/scrape_configs/node.yml",
        "- job_name: [unclosed\n",
    );
    let failure = node.failure("render", t);
    assert!(
        failure["message"]
            .as_str()
            .unwrap()
            .contains("s3://moninit-test/monitoring/prometheus/scrape_configs/node.yml"),
        "{failure}"
    );
    assert_eq!(node.tree(), before);
    node.assert_ready();
    let original =
        std::fs::read_to_string(support::examples().join("prometheus/scrape_configs/node.yml"))
            .unwrap();
    node.put("prometheus/scrape_configs/node.yml", &original);

    // A config promtool rejects.
    let t = unix_now();
    node.put(
        "prometheus/scrape_configs/bad.yml",
        "job_name: bad\nbogus_key: 1\nstatic_configs: [{targets: ['a:1']}]\n",
    );
    let failure = node.failure("validate", t);
    let message = failure["message"].as_str().unwrap();
    assert!(message.contains("field bogus_key not found"), "{failure}");
    assert!(
        message.contains("s3://moninit-test/monitoring/prometheus/scrape_configs/bad.yml"),
        "{failure}"
    );
    node.delete("prometheus/scrape_configs/bad.yml");
    assert_eq!(node.tree(), before);
    node.assert_ready();

    // A template that does not render: named with its line.
    let t = unix_now();
    node.put(
        "templates/grafana.ini.tera",
        "[server]\nhttp_port = {{ no_such_variable }}\n",
    );
    let failure = node.failure("render", t);
    let message = failure["message"].as_str().unwrap();
    assert!(message.contains("grafana.ini.tera"), "{failure}");
    assert!(message.contains("line 2"), "{failure}");
    assert_eq!(node.tree(), before);
    node.assert_ready();
    node.delete("templates/grafana.ini.tera");

    // Every scrape job removed: refused.
    let t = unix_now();
    node.delete("prometheus/scrape_configs/node.yml");
    node.delete("prometheus/scrape_configs/prometheus.yml");
    let failure = node.failure("mass_removal", t);
    assert!(
        failure["message"]
            .as_str()
            .unwrap()
            .contains("every scrape job"),
        "{failure}"
    );
    assert_eq!(node.tree(), before);
    node.assert_ready();

    // The whole prefix emptied: an error, not an empty configuration.
    let t = unix_now();
    node.moto.python(
        "s3 = boto3.client('s3', **kw)\n\
         for o in s3.list_objects_v2(Bucket='moninit-test', Prefix='monitoring/').get('Contents', []):\n    \
         s3.delete_object(Bucket='moninit-test', Key=o['Key'])",
    );
    let failure = node.failure("fetch", t);
    assert!(
        failure["message"]
            .as_str()
            .unwrap()
            .contains("no objects under this prefix"),
        "{failure}"
    );
    assert_eq!(node.tree(), before);
    node.assert_ready();
    assert_eq!(node.generation(), 1);
    let metrics = node.agent.metrics();
    for reason in ["render", "validate", "mass_removal", "fetch"] {
        assert!(
            metrics.contains(&format!(
                "moninit_config_apply_failures_total{{reason=\"{reason}\"}}"
            )),
            "{metrics}"
        );
    }
}

#[test]
fn a_configuration_prometheus_or_grafana_refuses_is_rolled_back() {
    let node = Watched::start(Some("reload-refuses=refused-by-fake-prometheus"), 1);
    let before = node.tree();

    // promtool accepts it; Prometheus refuses it on /-/reload.
    let t = unix_now();
    node.put(
        "prometheus/scrape_configs/refused.yml",
        "- job_name: refused-by-fake-prometheus\n  static_configs:\n    - targets: ['127.0.0.1:9']\n",
    );
    let failure = node.failure("prometheus_reload", t);
    assert_eq!(failure["rolled_back"], true, "{failure}");
    assert_eq!(node.tree(), before, "the previous set is not back");
    node.assert_ready();
    node.delete("prometheus/scrape_configs/refused.yml");

    // Grafana does not come back healthy on a new dashboard.
    let t = unix_now();
    node.put(
        "grafana/dashboards/Node/refused.json",
        r#"{"title": "refused-by-stand-in", "uid": "refused", "panels": []}"#,
    );
    let failure = node.failure("grafana_not_healthy", t);
    assert_eq!(failure["rolled_back"], true, "{failure}");
    assert_eq!(node.tree(), before, "the previous set is not back");
    support::wait_for(
        Duration::from_secs(30),
        Duration::from_millis(200),
        || format!("not ready after the rollback:\n{}", node.agent.log_text()),
        || (http::get(node.agent.admin, "/readyz").ok()?.status == 200).then_some(()),
    );
    let metrics = node.agent.metrics();
    assert!(
        metrics.contains("moninit_config_rollbacks_total{reason=\"prometheus_reload\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("moninit_config_rollbacks_total{reason=\"grafana_not_healthy\"} 1"),
        "{metrics}"
    );
    // The same refused inputs are not tried again.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        node.agent
            .metrics()
            .matches("moninit_config_rollbacks_total{reason=\"grafana_not_healthy\"} 1")
            .count(),
        1
    );
}

#[test]
fn sources_unreachable_during_a_round_keep_the_node_running() {
    let mut node = Watched::start(None, 1);
    let before = node.tree();
    let t = unix_now();
    // Stop moto: every round now fails to reach it.
    let moto = std::mem::replace(&mut node.moto, Moto::start(&Seed::default()));
    drop(moto);
    let failure = node.failure("fetch", t);
    assert!(
        failure["message"]
            .as_str()
            .unwrap()
            .contains("s3://moninit-test/monitoring/"),
        "{failure}"
    );
    assert_eq!(node.tree(), before);
    node.assert_ready();
}

#[test]
fn an_idle_round_makes_only_the_documented_calls_and_never_logs_a_secret() {
    let node = Watched::start(None, 1);
    let rounds = |text: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with("moninit_config_watch_rounds_total "))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    };
    // The first round fetches everything; count from the next one on.
    support::wait_for(
        Duration::from_secs(20),
        Duration::from_millis(100),
        || "no watch round".into(),
        || (rounds(&node.agent.metrics()) >= 1).then_some(()),
    );
    let moto: std::net::SocketAddr = node
        .moto
        .endpoint
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let calls = |method: &str| {
        http::request(moto, method, "/__moninit/calls", &[], b"")
            .unwrap()
            .json()
    };
    calls("DELETE");
    let start = rounds(&node.agent.metrics());
    std::thread::sleep(Duration::from_secs(5));
    let counted = calls("GET");
    let end = rounds(&node.agent.metrics());
    let made = end - start;
    assert!(made >= 2, "only {made} rounds");
    // Per idle round: one ListObjectsV2 (under 1,000 objects), one DescribeParameters (under
    // 50 parameters); nothing downloaded, nothing decrypted. A round in flight at either end
    // may add one of each.
    let n = |call: &str| counted[call].as_u64().unwrap_or(0);
    assert!(
        n("ListObjectsV2") >= made && n("ListObjectsV2") <= made + 1,
        "{counted} over {made} rounds"
    );
    assert!(
        n("DescribeParameters") >= made && n("DescribeParameters") <= made + 1,
        "{counted} over {made} rounds"
    );
    let others: Vec<_> = counted
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| *k != "ListObjectsV2" && *k != "DescribeParameters" && *k != "bytes")
        .collect();
    assert!(others.is_empty(), "{counted}");

    // A SecureString changed during watching: applied, and neither value is ever logged.
    node.moto.python(
        "boto3.client('ssm', **kw).put_parameter(Name='/monitoring/test/grafana/admin_password', \
         Value='n3w-Secr3t-value!', Type='SecureString', Overwrite=True)",
    );
    node.wait_generation(2);
    let log = node.agent.log_text();
    for secret in ["demo-Adm1n-#pass;word", "n3w-Secr3t-value!"] {
        assert!(!log.contains(secret), "a secret reached the log");
    }
    assert!(
        log.contains("TRACE") || log.contains("trace"),
        "not a trace-level log"
    );
    let last_good = find(&node.agent.root, "last-good.json").unwrap();
    assert_eq!(support::mode(&last_good) & 0o777, 0o600);
}

#[test]
fn a_sighup_storm_applies_one_round_at_a_time_and_the_last_state_wins() {
    let mut node = Watched::start(None, 0);
    let pid = node.agent.process.pid() as i32;
    for i in 0..5 {
        node.put(
            "prometheus/scrape_configs/storm.yml",
            &format!("- job_name: storm-{i}\n  static_configs:\n    - targets: ['127.0.0.1:9']\n"),
        );
        for _ in 0..4 {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGHUP).unwrap();
            std::thread::sleep(Duration::from_millis(30));
        }
    }
    support::wait_for(
        Duration::from_secs(60),
        Duration::from_millis(200),
        || format!("the last state did not win:\n{}", node.agent.log_text()),
        || {
            let r = http::get(node.prometheus, "/api/v1/status/config").ok()?;
            r.text().contains("storm-4").then_some(())
        },
    );
    let installed =
        std::fs::read_to_string(node.config_dir().join("prometheus/prometheus.yml")).unwrap();
    assert!(
        installed.contains("storm-4") && !installed.contains("storm-3"),
        "{installed}"
    );
    node.assert_ready();
    assert!(
        node.agent.process.child.try_wait().unwrap().is_none(),
        "moninit exited"
    );
}

#[test]
fn sigterm_during_an_apply_stops_cleanly_with_the_old_or_the_new_set_installed() {
    let mut node = Watched::start(None, 0);
    let before = node.tree();
    node.put(
        "grafana/dashboards/Node/late.json",
        r#"{"title": "Late", "uid": "late", "panels": []}"#,
    );
    node.agent.process.signal(Signal::SIGHUP);
    // Grafana is restarting for the new dashboard when the stop comes.
    support::wait_for(
        Duration::from_secs(20),
        Duration::from_millis(20),
        || format!("no apply started:\n{}", node.agent.log_text()),
        || {
            node.agent
                .log_text()
                .contains("new configuration installed")
                .then_some(())
        },
    );
    node.agent.process.signal(Signal::SIGTERM);
    node.agent.exits_with(0, Duration::from_secs(30));
    let after = node.tree();
    let added = node.config_dir().join("grafana/dashboards/Node/late.json");
    let manifest = node.config_dir().join(".moninit-manifest");
    let without = |t: &std::collections::BTreeMap<PathBuf, (Vec<u8>, u32)>| {
        let mut t = t.clone();
        t.remove(&added);
        t.remove(&manifest);
        t
    };
    // Either nothing changed, or exactly the new dashboard (and the manifest naming it).
    assert_eq!(without(&after), without(&before));
    if after.contains_key(&added) {
        let listed = String::from_utf8(after[&manifest].0.clone()).unwrap();
        assert!(
            listed.contains("grafana/dashboards/Node/late.json"),
            "{listed}"
        );
    } else {
        assert_eq!(after, before);
    }
    assert!(
        node.agent.leftovers().is_empty(),
        "{:?}",
        node.agent.leftovers()
    );
}

#[test]
fn a_child_given_up_on_during_the_health_wait_is_a_failure_not_a_healthy_apply() {
    // Grafana exits at once on the new dashboard; the supervisor gives up after 2 fast
    // failures, long before the 60 s health timeout.
    let mut node = Watched::start_with(
        None,
        1,
        "  health_timeout_secs: 60\nsupervise:\n  max_failures: 2\n",
    );
    let last_good = find(&node.agent.root, "last-good.json").unwrap();
    let saved = std::fs::read(&last_good).unwrap();
    node.put(
        "grafana/dashboards/Node/refused.json",
        r#"{"title": "refused-by-stand-in", "uid": "refused", "panels": []}"#,
    );
    let log = node.agent.exits_with(9, Duration::from_secs(60));
    assert!(log.contains("grafana_not_healthy"), "{log}");
    assert!(
        !log.contains("new configuration applied and healthy"),
        "{log}"
    );
    // The inputs that brought Grafana down were never kept as last known good.
    assert_eq!(std::fs::read(&last_good).unwrap(), saved);
}

#[test]
fn last_good_inputs_from_other_sources_are_never_used() {
    let dir = tempfile::tempdir().unwrap();
    let amp = format!("http://127.0.0.1:{}", process::free_port());
    let port = process::free_port();
    let seed = seed(port);
    let moto = Moto::start(&seed);
    let root = dir.path().join("root");
    let mut first = agent(&seed, &moto.endpoint, &amp, &root);
    first.wait_ready(Duration::from_secs(60));
    first.process.signal(Signal::SIGTERM);
    first.exits_with(0, Duration::from_secs(30));

    // The agent config now names another bucket, which does not exist (NoSuchBucket, a
    // reason a later try could fix): the snapshot from the old bucket must not stand in.
    let moved = Seed {
        bucket: "moved-elsewhere".into(),
        ..seed.clone()
    };
    let mut second = agent(&moved, &moto.endpoint, &amp, &root);
    let log = second.exits_with(4, Duration::from_secs(60));
    assert!(log.contains("NoSuchBucket"), "{log}");
    assert!(log.contains("came from other sources"), "{log}");
}

#[test]
fn a_node_booted_from_last_good_inputs_syncs_amp_only_once_the_sources_answer() {
    const RULES: &str =
        "groups:\n  - name: node\n    rules:\n      - alert: NodeDown\n        expr: up == 0\n";
    let dir = tempfile::tempdir().unwrap();
    let inputs = support::inputs_copy();
    std::fs::create_dir_all(inputs.path().join("prometheus/rules")).unwrap();
    std::fs::write(inputs.path().join("prometheus/rules/node.yml"), RULES).unwrap();
    let port = process::free_port();
    let seed = Seed {
        dir: Some(inputs.path().to_owned()),
        port: Some(port),
        ..Seed::examples()
    };
    let amp = Moto::start(&Seed {
        amp_workspace: true,
        ..Default::default()
    });
    let workspace = amp.amp_workspace.clone().unwrap();
    let namespaces = || {
        amp.python(&format!(
            "print(len(boto3.client('amp', **kw).list_rule_groups_namespaces(workspaceId='{workspace}')['ruleGroupsNamespaces']))"
        ))
        .trim()
        .parse::<usize>()
        .unwrap()
    };
    let extra = format!(
        "fetch:\n  deadline_secs: 5\nworkspace_id: {workspace}\namp:\n  sync: true\nwatch:\n  interval_secs: 1\n"
    );
    let start = |root: &Path, endpoint: &str| {
        Agent::start(Setup {
            sources: format!(
                "  - s3://{}/{}\n  - ssm:{}\n",
                seed.bucket, seed.prefix, seed.ssm_path
            ),
            root: Some(root.to_owned()),
            extra: &extra,
            env: vec![
                ("AWS_ENDPOINT_URL".into(), endpoint.to_owned()),
                ("AWS_ENDPOINT_URL_AMP".into(), amp.endpoint.clone()),
                ("AWS_ACCESS_KEY_ID".into(), "AKIDMONINITTEST".into()),
                ("AWS_SECRET_ACCESS_KEY".into(), "moninit-test-secret".into()),
            ],
            ..Setup::local()
        })
    };
    let root = dir.path().join("root");
    // A healthy boot keeps the inputs as last known good, and syncs them.
    let moto = Moto::start(&seed);
    let mut first = start(&root, &moto.endpoint);
    first.wait_ready(Duration::from_secs(60));
    support::wait_for(
        Duration::from_secs(20),
        Duration::from_millis(200),
        || first.log_text(),
        || (namespaces() == 1).then_some(()),
    );
    first.process.signal(Signal::SIGTERM);
    first.exits_with(0, Duration::from_secs(30));
    drop(moto);
    // Meanwhile a pipeline removes the namespace from AMP (newer rules than the copy).
    amp.python(&format!(
        "boto3.client('amp', **kw).delete_rule_groups_namespace(workspaceId='{workspace}', name='node')"
    ));
    assert_eq!(namespaces(), 0);

    // Booted from the last known good inputs: AMP is left as it is.
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut agent = start(&root, &endpoint);
    agent.wait_ready(Duration::from_secs(60));
    assert!(agent.metrics().contains("moninit_config_degraded 1"));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        namespaces(),
        0,
        "a degraded node synced its old inputs:\n{}",
        agent.log_text()
    );

    // The sources answer: the inputs are fresh, and synced.
    let _moto = Moto::start(&seed);
    support::wait_for(
        Duration::from_secs(60),
        Duration::from_millis(300),
        || agent.log_text(),
        || (namespaces() == 1).then_some(()),
    );
    assert!(agent.metrics().contains("moninit_config_degraded 0"));
}
