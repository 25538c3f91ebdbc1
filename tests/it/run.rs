//! `moninit run` end to end: boot order, supervision, shutdown, boot failures.

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::prometheus_e2e::amp_stand_in;
use crate::support::agent::{children, with_fake_prometheus, wrapper, Agent, Setup};
use crate::support::http;
use crate::support::process;
use crate::support::{self, Moto, Seed};

#[test]
fn boots_in_order_ships_signed_samples_and_stops_in_reverse_order() {
    let seed = Seed::examples();
    let moto = Moto::start(&seed);
    let dir = tempfile::tempdir().unwrap();
    let (_receiver, receiver, verifier) = amp_stand_in(dir.path());
    let grafana = wrapper(dir.path(), "grafana", "grafana_stand_in.py", "");
    let mut agent = Agent::start(Setup {
        sources: format!(
            "  - s3://{}/{}\n  - ssm:{}\n",
            seed.bucket, seed.prefix, seed.ssm_path
        ),
        amp_endpoint: format!("http://{}", verifier.addr),
        grafana_binary: Some(grafana),
        env: vec![
            ("AWS_ENDPOINT_URL".into(), moto.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID".into(), "AKIDMONINITTEST".into()),
            (
                "AWS_SECRET_ACCESS_KEY".into(),
                "moninit-test-secret-key-0123456789abcdef".into(),
            ),
        ],
        ..Setup::local()
    });
    agent.wait_ready(Duration::from_secs(60));
    let log = agent.log_text();
    support::assert_in_order(
        &log,
        &[
            "fetched inputs",
            "signing proxy",
            "child=\"prometheus\"",
            "grafana stand-in: serving",
            "grafana=true ready",
        ],
    );
    assert!(agent
        .metrics()
        .contains("moninit_child_up{child=\"grafana\"} 1"));

    // Samples arrive at the AMP stand-in, signed and verified.
    crate::prometheus_e2e::wait_for_agent_samples(receiver, || agent.log_text());

    // SIGTERM: Grafana, then Prometheus (flushing), then the proxy; exit 0; nothing left.
    std::thread::sleep(Duration::from_secs(2));
    let stop_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    agent.process.signal(Signal::SIGTERM);
    let status = agent
        .process
        .wait_timeout(Duration::from_secs(30))
        .expect("moninit did not exit after SIGTERM");
    assert_eq!(status.code(), Some(0), "{}", agent.log_text());
    let log = agent.log_text();
    support::assert_in_order(
        &log,
        &[
            "grafana stand-in: stopping",
            "child=\"prometheus\" status=exit code 0 stopped",
            "stopping the signing proxy",
        ],
    );
    assert!(
        agent.leftovers().is_empty(),
        "left behind: {:?}",
        agent.leftovers()
    );
    // remote_write was flushed: samples scraped in the last seconds before the stop arrived.
    let r = http::get(
        receiver,
        "/api/v1/query?query=max(timestamp(up%7Bcluster%3D%22test%22%7D))",
    )
    .unwrap();
    let last: f64 = r.json()["data"]["result"][0]["value"][1]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        stop_at - last < 3.0,
        "last sample {:.1} s before the stop",
        stop_at - last
    );
    assert!(verifier.requests().iter().all(|e| e["verified"] == true));
}

#[test]
fn a_killed_prometheus_is_restarted_with_growing_delays() {
    let mut agent = Agent::start(Setup {
        extra:
            "supervise:\n  restart_floor_secs: 0.3\n  restart_ceiling_secs: 5\n  max_failures: 10\n",
        ..Setup::local()
    });
    agent.wait_ready(Duration::from_secs(30));
    let mut delays = Vec::new();
    for _ in 0..3 {
        let pid = agent.child_pid("prometheus").expect("prometheus running");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL).unwrap();
        let killed = Instant::now();
        support::wait_for(
            Duration::from_secs(20),
            Duration::from_millis(20),
            || format!("prometheus not restarted:\n{}", agent.log_text()),
            || agent.child_pid("prometheus").filter(|p| *p != pid),
        );
        delays.push(killed.elapsed());
        agent.wait_ready(Duration::from_secs(20));
    }
    // Floor 0.3 s doubling with up to +100% jitter: [0.3,0.6], [0.6,1.2], [1.2,2.4] s.
    assert!(delays[2] > delays[0], "delays did not grow: {delays:?}");
    assert!(
        delays[0] >= Duration::from_millis(300) && delays[2] >= Duration::from_millis(1200),
        "{delays:?}"
    );
    let metrics = agent.metrics();
    assert!(
        metrics.contains("moninit_child_restarts_total{child=\"prometheus\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("moninit_child_last_exit_signal{child=\"prometheus\"} 9"),
        "{metrics}"
    );
}

#[test]
fn a_child_that_keeps_crashing_makes_moninit_give_up_and_exit_non_zero() {
    let (mut agent, _dir) = with_fake_prometheus(
        "exit-after=0.3,exit-code=3",
        "supervise:\n  restart_floor_secs: 0.1\n  restart_ceiling_secs: 0.2\n  max_failures: 4\n  failure_window_secs: 60\n",
    );
    let log = agent.exits_with(9, Duration::from_secs(30));
    assert!(
        log.contains("prometheus: crash loop: gave up after 4 failures within 60 s")
            && log.contains(
                "(last: exit code 3; last stderr line: fake child: fatal: exiting with code 3)"
            ),
        "{log}"
    );
    assert!(agent.leftovers().is_empty(), "{:?}", agent.leftovers());
}

#[test]
fn an_orphaned_grandchild_is_reaped() {
    let (mut agent, _dir) = with_fake_prometheus("orphan", "");
    agent.wait_ready(Duration::from_secs(30));
    // The grandchild was re-parented to moninit (a subreaper) and exits after 1 s.
    std::thread::sleep(Duration::from_millis(2500));
    let kids = children(agent.process.pid() as i32);
    assert!(
        kids.iter().all(|(_, _, state)| state != "Z"),
        "zombies left: {kids:?}"
    );
    assert_eq!(
        kids.len(),
        1,
        "only the fake prometheus should remain: {kids:?}"
    );
}

#[test]
fn a_child_ignoring_sigterm_is_killed_after_its_stop_timeout() {
    let (mut agent, _dir) =
        with_fake_prometheus("ignore-term", "supervise:\n  stop_timeout_secs: 2\n");
    agent.wait_ready(Duration::from_secs(30));
    let pid = agent.child_pid("fake_child").unwrap();
    let started = Instant::now();
    agent.process.signal(Signal::SIGTERM);
    let log = agent.exits_with(0, Duration::from_secs(20));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(8),
        "stop took {took:?}"
    );
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the child survived"
    );
    assert!(log.contains("did not stop after SIGTERM; killing its process group"));
}

#[test]
fn unreachable_s3_fails_boot_at_the_deadline_with_a_clear_error() {
    let mut agent = Agent::start(Setup {
        sources: "  - s3://some-bucket/monitoring/\n".into(),
        extra: "fetch:\n  deadline_secs: 3\n",
        env: vec![(
            "AWS_ENDPOINT_URL".into(),
            format!("http://127.0.0.1:{}", process::free_port()),
        )],
        ..Setup::local()
    });
    let started = Instant::now();
    let log = agent.exits_with(4, Duration::from_secs(30));
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "gave up before retrying"
    );
    assert!(
        log.contains("boot deadline of 3 s") && log.contains("s3://some-bucket/monitoring/")
            || log.contains("s3://some-bucket/monitoring/: ListObjectsV2 failed: DispatchFailure"),
        "{log}"
    );
    assert!(agent.leftovers().is_empty());
}

#[test]
fn a_child_that_never_becomes_ready_fails_boot_and_nothing_is_left() {
    let (mut agent, _dir) = with_fake_prometheus(
        "never-ready",
        "supervise:\n  ready_timeout_secs: 2\n  stop_timeout_secs: 2\n",
    );
    let log = agent.exits_with(9, Duration::from_secs(30));
    assert!(
        log.contains("prometheus: not ready at http://") && log.contains("within 2 s"),
        "{log}"
    );
    assert!(agent.leftovers().is_empty(), "{:?}", agent.leftovers());
}

#[test]
fn a_taken_port_fails_boot_naming_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut agent = Agent::start(Setup {
        proxy_port: Some(port),
        ..Setup::local()
    });
    let log = agent.exits_with(8, Duration::from_secs(30));
    assert!(
        log.contains(&format!("proxy: cannot listen on 127.0.0.1:{port}")),
        "{log}"
    );
    assert!(agent.leftovers().is_empty());
}

#[test]
fn sighup_rerenders_reloads_prometheus_restarts_grafana_and_survives_bad_input() {
    let inputs = support::inputs_copy();
    let dir = tempfile::tempdir().unwrap();
    let grafana = wrapper(dir.path(), "grafana", "grafana_stand_in.py", "");
    let mut agent = Agent::start(Setup {
        sources: format!("  - file://{}/\n", inputs.path().display()),
        grafana_binary: Some(grafana),
        ..Setup::local()
    });
    agent.wait_ready(Duration::from_secs(60));
    let rendered = agent.root.join("etc/moninit/rendered");
    let grafana_pid = agent.child_pid("grafana_stand_in").unwrap();
    let prometheus_pid = agent.child_pid("prometheus").unwrap();

    // A new scrape job and a new dashboard.
    std::fs::write(
        inputs.path().join("prometheus/scrape_configs/extra.yml"),
        "job_name: extra\nstatic_configs: [{targets: ['127.0.0.1:1']}]\n",
    )
    .unwrap();
    std::fs::write(
        inputs.path().join("grafana/dashboards/Node/extra.json"),
        r#"{"uid": "extra", "title": "Extra"}"#,
    )
    .unwrap();
    agent.process.signal(Signal::SIGHUP);
    support::wait_for(
        Duration::from_secs(30),
        Duration::from_millis(100),
        || format!("reload incomplete:\n{}", agent.log_text()),
        || {
            let reloaded = agent
                .log_text()
                .contains("prometheus reloaded its configuration");
            let restarted = agent
                .child_pid("grafana_stand_in")
                .is_some_and(|p| p != grafana_pid);
            (reloaded && restarted).then_some(())
        },
    );
    agent.wait_ready(Duration::from_secs(30));
    assert!(support::read(&rendered, "prometheus/prometheus.yml").contains("job_name: extra"));
    assert!(rendered.join("grafana/dashboards/Node/extra.json").exists());
    assert_eq!(
        agent.child_pid("prometheus"),
        Some(prometheus_pid),
        "prometheus should reload, not restart"
    );

    // Bad input on reload: files untouched, children untouched, still ready.
    let before = support::snapshot(&rendered);
    std::fs::write(
        inputs.path().join("prometheus/scrape_configs/broken.yml"),
        "job_name: [\n",
    )
    .unwrap();
    agent.process.signal(Signal::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !agent
        .log_text()
        .contains("reload failed, running configuration kept")
    {
        assert!(Instant::now() < deadline, "{}", agent.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(agent
        .log_text()
        .contains("prometheus/scrape_configs/broken.yml: invalid YAML"));
    assert_eq!(support::snapshot(&rendered), before);
    assert!(http::get(agent.admin, "/readyz").unwrap().status == 200);
}

#[test]
fn tells_systemd_ready_only_when_every_child_is_and_hides_the_socket_from_children() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let fake = wrapper(
        dir.path(),
        "prometheus",
        "fake_child.py",
        "[ -n \"$NOTIFY_SOCKET\" ] && echo \"NOTIFY_SOCKET leaked to the child\"\n",
    );
    let mut agent = Agent::start(Setup {
        prometheus_binary: Some(fake),
        env: vec![("NOTIFY_SOCKET".into(), socket_path.display().to_string())],
        ..Setup::local()
    });
    let mut messages = Vec::new();
    let mut buf = [0u8; 4096];
    while !messages.iter().any(|m: &String| m.contains("READY=1")) {
        let n = socket.recv(&mut buf).expect("no READY=1 from moninit");
        messages.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    // READY=1 came after every STATUS of the boot, and /readyz agrees now.
    assert!(
        messages
            .iter()
            .any(|m| m.contains("STATUS=starting prometheus")),
        "{messages:?}"
    );
    assert_eq!(http::get(agent.admin, "/readyz").unwrap().status, 200);
    agent.process.signal(Signal::SIGTERM);
    agent.process.wait_timeout(Duration::from_secs(20)).unwrap();
    assert!(
        !agent.log_text().contains("NOTIFY_SOCKET leaked"),
        "{}",
        agent.log_text()
    );
}

#[test]
fn sigterm_during_boot_stops_what_started_and_exits_zero() {
    let (mut agent, _dir) = with_fake_prometheus(
        "never-ready",
        "supervise:\n  ready_timeout_secs: 60\n  stop_timeout_secs: 2\n",
    );
    // Wait until the fake Prometheus is up (and not ready), then ask moninit to stop.
    let deadline = Instant::now() + Duration::from_secs(20);
    while agent.child_pid("fake_child").is_none() {
        assert!(Instant::now() < deadline, "{}", agent.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    agent.process.signal(Signal::SIGTERM);
    let log = agent.exits_with(0, Duration::from_secs(15));
    assert!(log.contains("stop requested during boot"), "{log}");
    assert!(agent.leftovers().is_empty(), "{:?}", agent.leftovers());
}
