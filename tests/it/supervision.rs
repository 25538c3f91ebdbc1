//! Supervision that tells the truth: readiness proves it is moninit's own child, no child
//! outlives moninit, sporadic crashes never take the node down while crash loops do, and a
//! node that must go tells its autoscaling group (but never for bad inputs).

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::prometheus_e2e::prometheus;
use crate::support::agent::{wrapper, Agent, Setup};
use crate::support::http;
use crate::support::process::{self, Owned};
use crate::support::stand_ins::Imds;
use crate::support::{self, Moto, Seed};

/// A notify socket for moninit and every message it got so far.
struct Notify {
    socket: UnixDatagram,
    path: std::path::PathBuf,
}

impl Notify {
    fn bind(dir: &Path) -> Notify {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket.set_nonblocking(true).unwrap();
        Notify { socket, path }
    }

    fn env(&self) -> (String, String) {
        ("NOTIFY_SOCKET".into(), self.path.display().to_string())
    }

    fn messages(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = self.socket.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        out
    }
}

/// Gone, or a zombie waiting for a parent that is not moninit.
fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.split_whitespace().next() == Some("Z")),
    }
}

fn kill(pid: i32) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL).unwrap();
}

#[test]
fn a_foreign_prometheus_on_the_listen_port_fails_boot_with_exit_8_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let (stranger, addr) = prometheus(
        dir.path(),
        "stranger",
        "global: {}\n",
        &[&format!(
            "--storage.tsdb.path={}",
            dir.path().join("tsdb").display()
        )],
    );
    let notify = Notify::bind(dir.path());
    let started = Instant::now();
    let mut agent = Agent::start(Setup {
        prometheus_port: Some(addr.port()),
        env: vec![notify.env()],
        ..Setup::local()
    });
    let log = agent.exits_with(8, Duration::from_secs(30));
    let took = started.elapsed();
    assert!(
        log.contains(&format!(
            "prometheus: not started: port {addr} is already in use by pid {} (prometheus)",
            stranger.pid()
        )),
        "{log}"
    );
    assert!(took < Duration::from_secs(5), "boot took {took:?} to fail");
    let messages = notify.messages();
    assert!(
        messages.iter().all(|m| !m.contains("READY=1")),
        "READY sent with a stranger on the port: {messages:?}"
    );
    assert!(agent.leftovers().is_empty(), "{:?}", agent.leftovers());
    // The stranger was left alone.
    assert!(http::get(addr, "/-/ready").is_ok_and(|r| r.status == 200));
}

#[test]
fn an_impostor_answering_the_readiness_probe_is_never_taken_for_the_child() {
    let dir = tempfile::tempdir().unwrap();
    let notify = Notify::bind(dir.path());
    let fake = wrapper(
        dir.path(),
        "prometheus",
        "fake_child.py",
        "FAKE_CHILD=impostor,exit-after=20 ",
    );
    let mut agent = Agent::start(Setup {
        prometheus_binary: Some(fake),
        env: vec![notify.env()],
        extra: "supervise:\n  ready_timeout_secs: 3\n  stop_timeout_secs: 2\n",
        ..Setup::local()
    });
    let log = agent.exits_with(9, Duration::from_secs(30));
    assert!(
        log.contains("not ready at http://")
            && log.contains("(the port is answered by pid")
            && log.contains("not by the child)"),
        "{log}"
    );
    assert!(notify.messages().iter().all(|m| !m.contains("READY=1")));
}

#[test]
fn a_port_taken_between_restarts_is_the_restart_reason_and_readyz_says_degraded() {
    let port = process::free_port();
    let mut agent = Agent::start(Setup {
        prometheus_port: Some(port),
        extra: "supervise:\n  restart_floor_secs: 1.5\n  restart_ceiling_secs: 1.5\n",
        ..Setup::local()
    });
    agent.wait_ready(Duration::from_secs(30));
    let pid = agent.child_pid("prometheus").unwrap();
    kill(pid);
    let taken = support::wait_for(
        Duration::from_secs(5),
        Duration::from_millis(10),
        || "the port was never released".into(),
        || std::net::TcpListener::bind(("127.0.0.1", port)).ok(),
    );
    let reason = format!(
        "port 127.0.0.1:{port} is already in use by pid {}",
        std::process::id()
    );
    support::wait_for(
        Duration::from_secs(20),
        Duration::from_millis(100),
        || format!("no restart reason naming the port:\n{}", agent.log_text()),
        || agent.log_text().contains(&reason).then_some(()),
    );
    let expected = format!("degraded: prometheus down (not started: {reason}");
    support::wait_for(
        Duration::from_secs(5),
        Duration::from_millis(20),
        || format!("/readyz never said {expected:?}:\n{}", agent.log_text()),
        || {
            let r = http::get(agent.admin, "/readyz").ok()?;
            (r.status == 503 && r.text().starts_with(&expected)).then_some(())
        },
    );
    assert!(
        agent.child_pid("prometheus").is_none(),
        "started against a taken port"
    );
    drop(taken);
    agent.wait_ready(Duration::from_secs(20));
    let metrics = agent.metrics();
    let fast: u64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("moninit_child_crashes_total{child=\"prometheus\",kind=\"fast\"} ")
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{metrics}"));
    // The kill, and at least one start refused for the taken port.
    assert!(fast >= 2, "{metrics}");
}

#[test]
fn a_killed_moninit_takes_its_children_along_and_a_new_run_boots_on_the_same_root() {
    let dir = tempfile::tempdir().unwrap();
    let grafana = wrapper(dir.path(), "grafana", "grafana_stand_in.py", "");
    let mut first = Agent::start(Setup {
        grafana_binary: Some(grafana.clone()),
        ..Setup::local()
    });
    first.wait_ready(Duration::from_secs(60));
    let children = [
        first.child_pid("prometheus").unwrap(),
        first.child_pid("grafana_stand_in").unwrap(),
    ];
    first.process.signal(Signal::SIGKILL);
    let killed = Instant::now();
    support::wait_for(
        Duration::from_secs(2),
        Duration::from_millis(20),
        || format!("children outlived moninit by 2 s: {children:?}"),
        || children.iter().all(|p| gone(*p)).then_some(()),
    );
    let took = killed.elapsed();

    let mut second = Agent::start(Setup {
        grafana_binary: Some(grafana),
        root: Some(first.root.clone()),
        ..Setup::local()
    });
    second.wait_ready(Duration::from_secs(60));
    assert!(
        !second.log_text().contains("from an earlier run"),
        "nothing should have been left over: {}",
        second.log_text()
    );
    eprintln!("children gone {took:?} after moninit was killed");
}

#[test]
fn a_prometheus_left_over_from_an_earlier_run_is_ended_before_boot() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let port = process::free_port();
    // What a previous moninit on this root started, still running: same data directory,
    // same port. Without it being ended, the new boot would find the port taken.
    let config = dir.path().join("old.yml");
    std::fs::write(&config, "global: {}\n").unwrap();
    let mut cmd = std::process::Command::new("prometheus");
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--enable-feature=agent")
        .arg(format!(
            "--storage.agent.path={}",
            root.join("var/lib/moninit/prometheus").display()
        ));
    let mut leftover: Owned = process::spawn(cmd, Some(dir.path().join("old.log")));
    assert!(process::wait_listening(
        format!("127.0.0.1:{port}").parse().unwrap(),
        Duration::from_secs(20)
    ));
    let mut agent = Agent::start(Setup {
        prometheus_port: Some(port),
        root: Some(root),
        ..Setup::local()
    });
    agent.wait_ready(Duration::from_secs(60));
    let log = agent.log_text();
    assert!(
        log.contains("a prometheus from an earlier run still uses this root; ending it")
            && log.contains(&format!("pid {}", leftover.pid())),
        "{log}"
    );
    assert!(
        leftover.wait_timeout(Duration::from_secs(1)).is_some(),
        "the leftover still runs"
    );
}

#[test]
fn a_leftover_that_ignores_sigterm_is_killed_and_gone_before_the_port_check() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let port = process::free_port();
    // A leftover holding the port that ignores SIGTERM: without SIGKILL and waiting for it
    // to be gone, the boot would find the port taken (exit 8).
    let fake = wrapper(
        dir.path(),
        "old-prometheus",
        "fake_child.py",
        "FAKE_CHILD=ignore-term,exit-after=60 ",
    );
    let mut cmd = std::process::Command::new(&fake);
    cmd.arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg(format!(
            "--storage.agent.path={}",
            root.join("var/lib/moninit/prometheus").display()
        ));
    let mut leftover = process::spawn(cmd, None);
    assert!(process::wait_listening(
        format!("127.0.0.1:{port}").parse().unwrap(),
        Duration::from_secs(20)
    ));
    let mut agent = Agent::start(Setup {
        prometheus_port: Some(port),
        root: Some(root),
        ..Setup::local()
    });
    agent.wait_ready(Duration::from_secs(60));
    let log = agent.log_text();
    assert!(
        log.contains("leftover ignored SIGTERM for 5 s; killing it"),
        "{log}"
    );
    assert!(leftover.wait_timeout(Duration::from_secs(1)).is_some());
}

#[test]
fn sporadic_kills_of_a_ready_prometheus_keep_the_node_running() {
    // Five SIGKILLs, each after Prometheus was ready for a while (what the OOM killer does
    // under a cardinality spike): with max_failures 5 this is where a count of failures alone
    // would give up.
    let mut agent = Agent::start(Setup {
        extra: "supervise:\n  fast_failure_secs: 2\n  restart_floor_secs: 0.2\n  restart_ceiling_secs: 1\n  max_failures: 5\n",
        ..Setup::local()
    });
    agent.wait_ready(Duration::from_secs(30));
    for kill_number in 1..=5 {
        std::thread::sleep(Duration::from_millis(2500));
        let pid = agent.child_pid("prometheus").expect("prometheus running");
        kill(pid);
        support::wait_for(
            Duration::from_secs(20),
            Duration::from_millis(20),
            || {
                format!(
                    "not restarted after kill {kill_number}:\n{}",
                    agent.log_text()
                )
            },
            || agent.child_pid("prometheus").filter(|p| *p != pid),
        );
        agent.wait_ready(Duration::from_secs(20));
    }
    assert!(
        agent.process.child.try_wait().unwrap().is_none(),
        "moninit exited"
    );
    let metrics = agent.metrics();
    assert!(
        metrics.contains("moninit_child_crashes_total{child=\"prometheus\",kind=\"sporadic\"} 5"),
        "{metrics}"
    );
}

/// moto with an autoscaling group holding one instance, and IMDS saying this is it.
fn in_an_autoscaling_group() -> (Moto, Imds, String, Vec<(String, String)>) {
    let moto = Moto::start(&Seed {
        asg: Some("moninit-asg".into()),
        ..Seed::default()
    });
    let instance = moto.asg_instance.clone().unwrap();
    // Instance metadata tags off: the group is found with DescribeAutoScalingInstances.
    let imds = Imds::start(&instance, None);
    let mut env = imds.env();
    env.extend([
        ("AWS_ENDPOINT_URL".into(), moto.endpoint.clone()),
        ("AWS_ACCESS_KEY_ID".into(), "AKIDMONINITTEST".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "moninit-test-secret".into()),
    ]);
    (moto, imds, instance, env)
}

fn health(moto: &Moto, instance: &str) -> String {
    moto.python(&format!(
        "print(boto3.client('autoscaling', **kw).describe_auto_scaling_instances(\
         InstanceIds=['{instance}'])['AutoScalingInstances'][0]['HealthStatus'])"
    ))
    .trim()
    .to_owned()
}

#[test]
fn giving_up_after_a_healthy_boot_marks_the_instance_unhealthy_in_its_group() {
    let (moto, _imds, instance, env) = in_an_autoscaling_group();
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken");
    let fake = wrapper(
        dir.path(),
        "prometheus",
        "fake_child.py",
        &format!("FAKE_CHILD=fail-if={} ", broken.display()),
    );
    let mut agent = Agent::start(Setup {
        prometheus_binary: Some(fake),
        env,
        extra: "supervise:\n  restart_floor_secs: 0.1\n  restart_ceiling_secs: 0.2\n  max_failures: 3\n",
        ..Setup::local()
    });
    agent.wait_ready(Duration::from_secs(30));
    assert_eq!(health(&moto, &instance), "Healthy");
    // Something breaks on this node after boot: every start now fails at once.
    std::fs::write(&broken, "").unwrap();
    kill(agent.child_pid("fake_child").unwrap());
    let log = agent.exits_with(9, Duration::from_secs(30));
    assert!(
        log.contains("prometheus: crash loop: gave up after 3 failures")
            && log.contains(&format!(
                "last stderr line: fake child: fatal: {} exists",
                broken.display()
            )),
        "{log}"
    );
    assert!(
        log.contains("autoscaling group told: this instance is Unhealthy")
            && log.contains("group=\"moninit-asg\"")
            && log.contains(&instance),
        "{log}"
    );
    assert_eq!(health(&moto, &instance), "Unhealthy");
}

#[test]
fn boots_that_fail_never_mark_the_instance_unhealthy() {
    let (moto, _imds, instance, env) = in_an_autoscaling_group();
    // Bad inputs (exit 5): a new instance would fetch the same and fail the same way.
    let inputs = support::inputs_copy();
    std::fs::write(inputs.path().join("params.yaml"), "workspace_id: [\n").unwrap();
    let mut bad_input = Agent::start(Setup {
        sources: format!("  - file://{}/\n", inputs.path().display()),
        env: env.clone(),
        ..Setup::local()
    });
    let log = bad_input.exits_with(5, Duration::from_secs(30));
    assert!(!log.contains("autoscaling group told"), "{log}");
    // A child that never becomes ready at boot (exit 9): not a healthy boot either.
    let dir = tempfile::tempdir().unwrap();
    let fake = wrapper(
        dir.path(),
        "prometheus",
        "fake_child.py",
        "FAKE_CHILD=never-ready ",
    );
    let mut never_ready = Agent::start(Setup {
        prometheus_binary: Some(fake),
        env,
        extra: "supervise:\n  ready_timeout_secs: 2\n  stop_timeout_secs: 2\n",
        ..Setup::local()
    });
    let log = never_ready.exits_with(9, Duration::from_secs(30));
    assert!(!log.contains("autoscaling group told"), "{log}");
    assert_eq!(health(&moto, &instance), "Healthy");
}

#[test]
fn a_reload_that_misses_its_deadline_says_reload() {
    let seed = Seed::examples();
    let moto = Moto::start(&seed);
    let endpoint = moto.endpoint.clone();
    let mut agent = Agent::start(Setup {
        sources: format!(
            "  - s3://{}/{}\n  - ssm:{}\n",
            seed.bucket, seed.prefix, seed.ssm_path
        ),
        extra: "fetch:\n  deadline_secs: 4\n",
        env: vec![
            ("AWS_ENDPOINT_URL".into(), endpoint.clone()),
            ("AWS_ACCESS_KEY_ID".into(), "AKIDMONINITTEST".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "moninit-test-secret".into()),
        ],
        ..Setup::local()
    });
    agent.wait_ready(Duration::from_secs(60));
    let rendered = agent.root.join("etc/moninit/rendered");
    let before = support::snapshot(&rendered);
    // S3 and SSM stop answering: the port accepts connections and says nothing.
    drop(moto);
    let addr = endpoint.trim_start_matches("http://").to_owned();
    let _silent = support::wait_for(
        Duration::from_secs(5),
        Duration::from_millis(20),
        || "moto's port was never released".into(),
        || std::net::TcpListener::bind(&addr).ok(),
    );
    agent.process.signal(Signal::SIGHUP);
    support::wait_for(
        Duration::from_secs(20),
        Duration::from_millis(100),
        || format!("reload did not fail:\n{}", agent.log_text()),
        || {
            agent
                .log_text()
                .contains("reload failed, running configuration kept")
                .then_some(())
        },
    );
    let log = agent.log_text();
    assert!(log.contains("within the reload deadline of 4 s"), "{log}");
    assert!(!log.contains("boot deadline"), "{log}");
    assert_eq!(support::snapshot(&rendered), before);
    assert_eq!(http::get(agent.admin, "/readyz").unwrap().status, 200);
}
