//! Programs as inputs: Prometheus, promtool, Grafana and the AMP plugin provisioned from
//! pinned archives built from real parts (Debian's Prometheus, the Grafana stand-in), with a
//! PATH that holds none of them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::prometheus_e2e::amp_stand_in;
use crate::support::agent::{Agent, Setup};
use crate::support::archives::{self, Archive, AMP_PLUGIN};
use crate::support::process::{self, Owned};
use crate::support::stand_ins::{KEY, SECRET};
use crate::support::{self, Moto, Seed};

fn upload(moto: &Moto, key: &str, archive: &Archive) -> String {
    moto.python(&format!(
        "boto3.client('s3', **kw).put_object(Bucket='moninit-test', Key='{key}', Body=open('{}', 'rb').read())",
        archive.path.display()
    ));
    format!("s3://moninit-test/{key}")
}

fn aws_env(moto: &Moto) -> Vec<(String, String)> {
    vec![
        ("AWS_ENDPOINT_URL".into(), moto.endpoint.clone()),
        ("AWS_ACCESS_KEY_ID".into(), KEY.into()),
        ("AWS_SECRET_ACCESS_KEY".into(), SECRET.into()),
    ]
}

/// A directory to use as PATH that holds no program at all.
fn empty_path(dir: &Path) -> PathBuf {
    let p = dir.join("empty-bin");
    std::fs::create_dir_all(&p).unwrap();
    p
}

fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{metrics}"))
}

/// The JSON the Grafana stand-in printed when it loaded, the last time.
fn grafana_loaded(log: &str) -> serde_json::Value {
    let line = log
        .lines()
        .filter_map(|l| l.split_once("grafana stand-in: loaded ").map(|(_, j)| j))
        .next_back()
        .unwrap_or_else(|| panic!("the Grafana stand-in did not load:\n{log}"));
    // The line went through moninit's log: the JSON is its message, quotes as written.
    serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("{e}: {line}"))
}

#[test]
fn a_node_with_nothing_on_path_runs_everything_from_pinned_s3_archives() {
    let seed = Seed::examples();
    let moto = Moto::start(&seed);
    let (prom, graf, plugin) = (
        archives::prometheus("2.42.0"),
        archives::grafana(),
        archives::amp_plugin(),
    );
    let prom_url = upload(
        &moto,
        "artifacts/prometheus-2.42.0.linux-amd64.tar.gz",
        &prom,
    );
    let graf_url = upload(&moto, "artifacts/grafana-12.1.0.linux-amd64.tar.gz", &graf);
    let plugin_url = upload(&moto, "artifacts/amp-plugin.zip", &plugin);

    let dir = tempfile::tempdir().unwrap();
    let (_receiver, receiver, verifier) = amp_stand_in(dir.path());
    let setup = || Setup {
        sources: format!(
            "  - s3://{}/{}\n  - ssm:{}\n",
            seed.bucket, seed.prefix, seed.ssm_path
        ),
        amp_endpoint: format!("http://{}", verifier.addr),
        env: aws_env(&moto),
        path: Some(empty_path(dir.path())),
        prometheus_lines: format!("  archive: {}\n", archives::pin(&prom_url, &prom)),
        grafana_lines: Some(format!(
            "  archive: {}\n  plugins:\n    - {}\n",
            archives::pin(&graf_url, &graf),
            archives::pin(&plugin_url, &plugin)
        )),
        ..Setup::local()
    };
    let mut first = Agent::start(setup());
    first.wait_ready(Duration::from_secs(90));
    let store = first.root.join("var/lib/moninit/programs");

    // Prometheus runs from its tree, and its samples arrive, signed.
    let prometheus_cmd = crate::support::agent::children(first.process.pid() as i32)
        .into_iter()
        .find(|(_, cmd, _)| cmd.contains("--web.listen-address"))
        .map(|(_, cmd, _)| cmd)
        .expect("prometheus running");
    assert!(
        prometheus_cmd.starts_with(&format!(
            "{}/{}/prometheus-2.42.0.linux-amd64/prometheus ",
            store.display(),
            prom.sha256
        )),
        "{prometheus_cmd}"
    );
    crate::prometheus_e2e::wait_for_agent_samples(receiver, || first.log_text());
    assert!(verifier.requests().iter().all(|e| e["verified"] == true));

    // Grafana runs from its tree with the plugin, and the data source uses the plugin type.
    let loaded = grafana_loaded(&first.log_text());
    assert_eq!(
        loaded["homepath"],
        format!("{}/{}/grafana-12.1.0", store.display(), graf.sha256)
    );
    assert_eq!(loaded["defaults_ini"], true);
    assert_eq!(
        loaded["plugins"][AMP_PLUGIN],
        format!("{}/{}/{AMP_PLUGIN}", store.display(), plugin.sha256)
    );
    assert_eq!(loaded["datasource_types"], serde_json::json!([AMP_PLUGIN]));
    // Nothing is fetched from grafana.com at start: the plugins are pinned.
    let ini = support::read(
        &first.root.join("etc/moninit/rendered"),
        "grafana/grafana.ini",
    );
    assert!(
        ini.contains("[plugins]\n") && ini.contains("\npreinstall_disabled = true\n"),
        "{ini}"
    );
    let metrics = first.metrics();
    assert_eq!(counter(&metrics, "moninit_archives_downloaded_total"), 3);

    // A second boot on the same root with the same pins downloads nothing.
    first.process.signal(Signal::SIGTERM);
    first.process.wait_timeout(Duration::from_secs(30)).unwrap();
    let mut second = Agent::start(Setup {
        root: Some(first.root.clone()),
        ..setup()
    });
    second.wait_ready(Duration::from_secs(60));
    let metrics = second.metrics();
    assert_eq!(counter(&metrics, "moninit_archives_downloaded_total"), 0);
    assert_eq!(counter(&metrics, "moninit_archives_reused_total"), 3);
    assert!(
        !second.log_text().contains("archive downloaded"),
        "{}",
        second.log_text()
    );

    // A new Prometheus pin and SIGHUP: Prometheus restarts on the new tree.
    let next = archives::prometheus("2.42.1");
    let next_url = upload(
        &moto,
        "artifacts/prometheus-2.42.1.linux-amd64.tar.gz",
        &next,
    );
    let config = std::fs::read_to_string(&second.config).unwrap().replace(
        &archives::pin(&prom_url, &prom),
        &archives::pin(&next_url, &next),
    );
    std::fs::write(&second.config, config).unwrap();
    second.process.signal(Signal::SIGHUP);
    // The running Prometheus, not a `--version` probe of the new binary.
    let new_tree = format!(
        "{}/{}/prometheus-2.42.1.linux-amd64/prometheus --config.file=",
        store.display(),
        next.sha256
    );
    support::wait_for(
        Duration::from_secs(60),
        Duration::from_millis(100),
        || {
            format!(
                "prometheus not moved to the new tree:\n{}",
                second.log_text()
            )
        },
        || second.child_pid(&new_tree),
    );
    second.wait_ready(Duration::from_secs(30));
    // The tree that ran before is kept to go back to.
    assert!(store.join(&prom.sha256).is_dir());
    assert!(store.join(&next.sha256).is_dir());

    // A pin that fails verification on SIGHUP (a digest no tree in the store has, so the
    // archive is downloaded and checked): the running version stays, and the log says why.
    let running = second.child_pid(&new_tree).unwrap();
    let wrong = Archive {
        path: PathBuf::new(),
        sha256: "0123456789abcdef".repeat(4),
    };
    let config = std::fs::read_to_string(&second.config).unwrap().replace(
        &archives::pin(&next_url, &next),
        &archives::pin(&next_url, &wrong),
    );
    std::fs::write(&second.config, config).unwrap();
    second.process.signal(Signal::SIGHUP);
    support::wait_for(
        Duration::from_secs(30),
        Duration::from_millis(100),
        || format!("the bad pin was not refused:\n{}", second.log_text()),
        || {
            let log = second.log_text();
            (log.contains("reload failed, running configuration kept")
                && log.contains("SHA-256 mismatch"))
            .then_some(())
        },
    );
    assert_eq!(
        second.child_pid(&new_tree),
        Some(running),
        "{}",
        second.log_text()
    );
}

/// A file server for archives over HTTP.
struct Files {
    _process: Owned,
    endpoint: String,
}

impl Files {
    fn start(dir: &Path) -> Files {
        let (process, info) = process::stand_in(
            "file_server_stand_in.py",
            &["--dir".into(), dir.display().to_string()],
        );
        Files {
            _process: process,
            endpoint: info["endpoint"].as_str().unwrap().to_owned(),
        }
    }
}

/// Renders with a good Prometheus pin, then with `bad` pin lines: the failure's exit code
/// and text; the store and the installed files must be byte-identical afterwards.
fn bad_pin_fails_and_changes_nothing(
    bad: impl FnOnce(&Path, &Archive) -> String,
    extra: &str,
    code: i32,
    wrapper: Option<&str>,
) -> String {
    let work = tempfile::tempdir().unwrap();
    let good = archives::prometheus("2.42.0");
    let good_lines = format!(
        "  archive: {}\n",
        archives::pin(&format!("file://{}", good.path.display()), &good)
    );
    let state = work.path().join("state");
    let out = work.path().join("out");
    let yaml = |lines: &str, extra: &str| {
        format!(
            "{}output:\n  state_dir: {}\nprometheus:\n{lines}grafana:\n  enabled: false\n{extra}",
            support::file_config(&support::examples()),
            state.display()
        )
    };
    let config = support::write_config(work.path(), &yaml(&good_lines, ""));
    let ok = support::render(None, &config, &out, &[]);
    assert!(ok.status.success(), "{}", support::text(&ok));
    let before = (support::snapshot(&out), support::snapshot(&state));

    let bad_lines = bad(work.path(), &good);
    std::fs::write(&config, yaml(&bad_lines, extra)).unwrap();
    let output = match wrapper {
        None => support::render(None, &config, &out, &[]),
        Some(shell) => {
            let mut cmd = support::moninit(None);
            let program = cmd.get_program().to_owned();
            let mut sh = std::process::Command::new("bash");
            sh.arg("-c")
                .arg(format!("{shell}; exec \"$0\" \"$@\""))
                .arg(program)
                .args(["render", "--config"])
                .arg(&config)
                .arg("--out")
                .arg(&out);
            for (k, v) in cmd.get_envs() {
                match v {
                    Some(v) => sh.env(k, v),
                    None => sh.env_remove(k),
                };
            }
            cmd = sh;
            cmd.output().unwrap()
        }
    };
    let text = support::text(&output);
    assert_eq!(output.status.code(), Some(code), "{text}");
    assert_eq!(
        (support::snapshot(&out), support::snapshot(&state)),
        before,
        "the failed render changed the installed files or the program store:\n{text}"
    );
    text
}

fn file_pin(path: &Path, sha: &str) -> String {
    format!(
        "  archive: {{url: \"file://{}\", sha256: \"{sha}\"}}\n",
        path.display()
    )
}

#[test]
fn a_wrong_sha256_is_refused_before_unpacking() {
    let text = bad_pin_fails_and_changes_nothing(
        |_, good| {
            let other = archives::grafana();
            file_pin(&good.path, &other.sha256)
        },
        "",
        5,
        None,
    );
    assert!(
        text.contains("SHA-256 mismatch") && text.contains("nothing was unpacked"),
        "{text}"
    );
    assert!(
        text.contains("prometheus-2.42.0.linux-amd64.tar.gz"),
        "{text}"
    );
}

#[test]
fn a_pin_without_sha256_is_a_config_error() {
    let text = bad_pin_fails_and_changes_nothing(
        |_, good| format!("  archive: {{url: \"file://{}\"}}\n", good.path.display()),
        "",
        3,
        None,
    );
    assert!(text.contains("missing field `sha256`"), "{text}");
}

#[test]
fn a_truncated_download_and_a_missing_object_are_fetch_errors_naming_the_url() {
    let work = tempfile::tempdir().unwrap();
    // Another release than the one in the store, so it must be downloaded.
    let other = archives::prometheus("2.42.1");
    std::fs::copy(&other.path, work.path().join("p.tar.gz")).unwrap();
    let files = Files::start(work.path());
    let url = format!("{}/p.tar.gz?truncate", files.endpoint);
    let good = archives::prometheus("2.42.0");
    let text = bad_pin_fails_and_changes_nothing(
        |_, _| format!("  archive: {}\n", archives::pin(&url, &other)),
        "",
        4,
        None,
    );
    assert!(
        text.contains(&url) && text.contains("truncated download"),
        "{text}"
    );

    let seed = Seed {
        bucket: "moninit-test".into(),
        ..Seed::default()
    };
    let moto = Moto::start(&seed);
    let missing = "s3://moninit-test/artifacts/missing.tar.gz";
    let text = {
        let endpoint = moto.endpoint.clone();
        let work = tempfile::tempdir().unwrap();
        let config = support::write_config(
            work.path(),
            &format!(
                "{}output:\n  state_dir: {}\nprometheus:\n  archive: {}\ngrafana:\n  enabled: false\n",
                support::file_config(&support::examples()),
                work.path().join("state").display(),
                archives::pin(missing, &good)
            ),
        );
        let out = support::render(Some(&endpoint), &config, &work.path().join("out"), &[]);
        assert_eq!(out.status.code(), Some(4), "{}", support::text(&out));
        assert!(!work.path().join("out").exists());
        support::text(&out)
    };
    assert!(
        text.contains(missing) && text.contains("NoSuchKey"),
        "{text}"
    );

    // AccessDenied: moto checks IAM, and this user may do nothing.
    let moto = Moto::start(&Seed {
        bucket: "moninit-test".into(),
        auth: true,
        ..Seed::default()
    });
    let (key, secret) = moto.denied_keys.clone().unwrap();
    let denied = "s3://moninit-test/artifacts/prometheus.tar.gz";
    let work = tempfile::tempdir().unwrap();
    let config = support::write_config(
        work.path(),
        &format!(
            "{}output:\n  state_dir: {}\nprometheus:\n  archive: {}\ngrafana:\n  enabled: false\n",
            support::file_config(&support::examples()),
            work.path().join("state").display(),
            archives::pin(denied, &good)
        ),
    );
    let out = support::moninit(Some(&moto.endpoint))
        .env("AWS_ACCESS_KEY_ID", key)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .args(["render", "--config"])
        .arg(&config)
        .arg("--out")
        .arg(work.path().join("out"))
        .output()
        .unwrap();
    let text = support::text(&out);
    assert_eq!(out.status.code(), Some(4), "{text}");
    assert!(
        text.contains(denied) && text.contains("AccessDenied"),
        "{text}"
    );
}

#[test]
fn archives_that_are_not_the_release_layout_are_refused() {
    type Entries = &'static [(&'static str, &'static [u8], u32)];
    let cases: [(&str, Entries, &str); 5] = [
        (
            "traversal.tar.gz",
            &[("p/prometheus", b"x", 0o755), ("p/../../evil", b"x", 0o644)],
            "`..`",
        ),
        (
            "absolute.tar.gz",
            &[("p/prometheus", b"x", 0o755), ("/etc/evil", b"x", 0o644)],
            "absolute path",
        ),
        (
            "link.tar.gz",
            &[
                ("p/prometheus", b"x", 0o755),
                ("p/escape", b"../../etc/passwd", 0o120777),
            ],
            "points outside",
        ),
        (
            "two-tops.tar.gz",
            &[("p/prometheus", b"x", 0o755), ("q/promtool", b"x", 0o755)],
            "more than one top directory",
        ),
        (
            "no-promtool.tar.gz",
            &[("p/prometheus", b"x", 0o755)],
            "no `p/promtool`",
        ),
    ];
    for (name, entries, expected) in cases {
        let text = bad_pin_fails_and_changes_nothing(
            |dir, _| {
                let a = archives::custom(dir, name, entries);
                file_pin(&a.path, &a.sha256)
            },
            "",
            5,
            None,
        );
        assert!(
            text.contains(expected) && text.contains(name),
            "{name}: {text}"
        );
    }
    let text = bad_pin_fails_and_changes_nothing(
        |dir, _| {
            let p = dir.join("not-an-archive.tar.gz");
            std::fs::write(&p, "<html>an error page</html>\n").unwrap();
            file_pin(&p, &archives::sha256(&p))
        },
        "",
        5,
        None,
    );
    assert!(
        text.contains("not a gzip-compressed tar archive nor a zip archive"),
        "{text}"
    );
}

#[test]
fn an_archive_over_the_size_cap_is_refused() {
    let text = bad_pin_fails_and_changes_nothing(
        |_, good| {
            let other = archives::prometheus("2.42.1");
            let _ = good;
            file_pin(&other.path, &other.sha256)
        },
        "fetch:\n  max_archive_bytes: 1000000\n",
        5,
        None,
    );
    assert!(
        text.contains("over the cap of 1000000 (fetch.max_archive_bytes)"),
        "{text}"
    );
}

#[test]
fn a_full_disk_while_unpacking_leaves_no_half_tree() {
    // A 4 MB file of zeros compresses to a few KB: the download fits, the unpacking does
    // not, under a 2 MiB limit on file size (writes fail as on a full disk).
    let zeros: &'static [u8] = Box::leak(vec![0u8; 4 << 20].into_boxed_slice());
    let text = bad_pin_fails_and_changes_nothing(
        |dir, _| {
            let a = archives::custom(
                dir,
                "big.tar.gz",
                &[("p/prometheus", zeros, 0o755), ("p/promtool", b"x", 0o755)],
            );
            file_pin(&a.path, &a.sha256)
        },
        "",
        7,
        Some("trap '' XFSZ; ulimit -f 2048"),
    );
    assert!(
        text.contains("big.tar.gz") && text.contains("File too large"),
        "{text}"
    );
}

#[test]
fn https_archives_go_through_https_proxy_unless_no_proxy_covers_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let archive = archives::prometheus("2.42.1");
    std::fs::copy(&archive.path, dir.path().join("p.tar.gz")).unwrap();
    let log = dir.path().join("proxy.log");
    let (_server, info) = process::stand_in(
        "https_stand_in.py",
        &[
            "--dir".into(),
            dir.path().display().to_string(),
            "--log".into(),
            log.display().to_string(),
        ],
    );
    let https = info["https"].as_str().unwrap();
    let url = format!("{https}/p.tar.gz");
    let render = |no_proxy: Option<&str>| {
        let work = tempfile::tempdir().unwrap();
        let config = support::write_config(
            work.path(),
            &format!(
                "{}output:\n  state_dir: {}\nprometheus:\n  archive: {}\ngrafana:\n  enabled: false\n",
                support::file_config(&support::examples()),
                work.path().join("state").display(),
                archives::pin(&url, &archive)
            ),
        );
        let mut cmd = support::moninit(None);
        cmd.env("SSL_CERT_FILE", info["ca"].as_str().unwrap())
            .env("HTTPS_PROXY", info["proxy"].as_str().unwrap())
            .env_remove("https_proxy")
            .env_remove("no_proxy")
            .env_remove("NO_PROXY")
            .args(["render", "--config"])
            .arg(&config)
            .arg("--out")
            .arg(work.path().join("out"));
        if let Some(n) = no_proxy {
            cmd.env("NO_PROXY", n);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", support::text(&out));
        assert!(work
            .path()
            .join("state/programs")
            .join(&archive.sha256)
            .is_dir());
    };
    render(None);
    let tunnels = std::fs::read_to_string(&log).unwrap_or_default();
    let target = https.trim_start_matches("https://");
    assert_eq!(tunnels, format!("CONNECT {target}\n"), "through the proxy");
    render(Some("127.0.0.1"));
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        tunnels,
        "NO_PROXY covers the host: no tunnel"
    );
}
