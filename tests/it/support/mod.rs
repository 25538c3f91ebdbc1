//! The rig shared by the integration tests: the moto stand-in, running the moninit binary
//! with a clean AWS environment, and byte-for-byte snapshots of output directories.
//!
//! Every server started here listens on 127.0.0.1, lives at most a few minutes, and is killed
//! by its own PID when its handle drops (and exits by itself when our stdin pipe closes).

#![allow(dead_code)]

pub mod agent;
pub mod archives;
pub mod http;
pub mod process;
pub mod stand_ins;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};

/// The absolute path of `program` on PATH (the tests' own PATH).
pub fn find_on_path(program: &str) -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{program} not on PATH: run scripts/prereqs"))
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn examples() -> PathBuf {
    repo().join("examples/inputs")
}

/// The virtualenv's Python (MONINIT_VENV or ./.venv, made by scripts/prereqs).
pub fn python() -> PathBuf {
    let venv = std::env::var_os("MONINIT_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".venv"));
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "{} missing: run scripts/prereqs (scripts/test does)",
        python.display()
    );
    python
}

/// A running moto server seeded for one test.
pub struct Moto {
    child: Child,
    _stdin: ChildStdin,
    pub endpoint: String,
    /// Keys of an IAM user with no permissions (only with `auth`).
    pub denied_keys: Option<(String, String)>,
    /// Keys of an IAM user allowed `SERVICE:*` (only with `auth` and `allowed_policy`).
    pub allowed_keys: Option<(String, String)>,
    /// The one instance of the autoscaling group (only with `asg`).
    pub asg_instance: Option<String>,
    /// The AMP workspace created for the test (only with `amp_workspace`).
    pub amp_workspace: Option<String>,
}

/// What to put in moto before the test runs.
#[derive(Default, Clone)]
pub struct Seed {
    pub dir: Option<PathBuf>,
    pub bucket: String,
    pub prefix: String,
    pub ssm_path: String,
    pub extra_params: usize,
    pub extra_objects: usize,
    pub auth: bool,
    /// With `auth`: also create a user allowed every action of this service.
    pub allowed_policy: Option<String>,
    /// Create an autoscaling group of this name holding one instance.
    pub asg: Option<String>,
    /// Listen on this port (a free one when `None`), e.g. to start moto again where it was.
    pub port: Option<u16>,
    /// Create an AMP workspace.
    pub amp_workspace: bool,
}

impl Seed {
    /// examples/inputs in s3://moninit-test/monitoring/ and ssm:/monitoring/test/.
    pub fn examples() -> Self {
        Seed {
            dir: Some(examples()),
            bucket: "moninit-test".into(),
            prefix: "monitoring/".into(),
            ssm_path: "/monitoring/test/".into(),
            ..Default::default()
        }
    }
}

impl Moto {
    pub fn start(seed: &Seed) -> Moto {
        let mut cmd = Command::new(python());
        cmd.arg(repo().join("tests/support/moto_stand_in.py"))
            .args([
                "--bucket",
                &seed.bucket,
                "--prefix",
                &seed.prefix,
                "--ssm-path",
                &seed.ssm_path,
            ])
            .args(["--extra-params", &seed.extra_params.to_string()])
            .args(["--extra-objects", &seed.extra_objects.to_string()])
            .args(["--lifetime", "300"]);
        if let Some(dir) = &seed.dir {
            cmd.arg("--seed").arg(dir);
        }
        if seed.auth {
            cmd.arg("--auth");
        }
        if let Some(service) = &seed.allowed_policy {
            cmd.args(["--allow-user", service]);
        }
        if let Some(group) = &seed.asg {
            cmd.args(["--asg", group]);
        }
        if seed.amp_workspace {
            cmd.arg("--amp-workspace");
        }
        if let Some(port) = seed.port {
            cmd.args(["--port", &port.to_string()]);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let info: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("moto stand-in did not start: {e}: {line:?}"));
        assert!(info.get("error").is_none(), "moto seeding failed: {info}");
        let denied_keys = info.get("access_key").map(|k| {
            (
                k.as_str().unwrap().to_owned(),
                info["secret_key"].as_str().unwrap().to_owned(),
            )
        });
        let allowed_keys = info.get("allowed_access_key").map(|k| {
            (
                k.as_str().unwrap().to_owned(),
                info["allowed_secret_key"].as_str().unwrap().to_owned(),
            )
        });
        Moto {
            child,
            _stdin: stdin,
            endpoint: info["endpoint"].as_str().unwrap().to_owned(),
            denied_keys,
            allowed_keys,
            asg_instance: info
                .get("asg_instance")
                .and_then(|i| i.as_str())
                .map(str::to_owned),
            amp_workspace: info
                .get("amp_workspace")
                .and_then(|i| i.as_str())
                .map(str::to_owned),
        }
    }

    /// Runs Python `code` with `boto3` imported and `kw` holding this server's client
    /// arguments; returns what it printed.
    pub fn python(&self, code: &str) -> String {
        let out = Command::new(python())
            .arg("-c")
            .arg(format!(
                "import boto3, json\nkw = dict(endpoint_url='{}', region_name='us-east-1', \
                 aws_access_key_id='t', aws_secret_access_key='t')\n{code}",
                self.endpoint
            ))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A moninit command with a clean, local-only AWS environment.
pub fn moninit(endpoint: Option<&str>) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_moninit"));
    for var in [
        "AWS_PROFILE",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_SESSION_TOKEN",
        "RUST_LOG",
        "MONINIT_CONFIG",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null");
    match endpoint {
        Some(e) => cmd.env("AWS_ENDPOINT_URL", e),
        None => cmd.env("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
    };
    cmd
}

/// Runs `moninit render --config CONFIG --out OUT` (plus `extra`).
pub fn render(endpoint: Option<&str>, config: &Path, out: &Path, extra: &[&str]) -> Output {
    moninit(endpoint)
        .arg("render")
        .arg("--config")
        .arg(config)
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Writes an agent config into `dir` and returns its path.
pub fn write_config(dir: &Path, yaml: &str) -> PathBuf {
    let path = dir.join("moninit.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

/// The agent config for moto seeded with [`Seed::examples`].
pub fn moto_config(seed: &Seed) -> String {
    format!(
        "region: us-east-1\nsources:\n  - s3://{}/{}\n  - ssm:{}\ncluster: test\nreplica: r1\n",
        seed.bucket, seed.prefix, seed.ssm_path
    )
}

/// An agent config for a local directory source.
pub fn file_config(dir: &Path) -> String {
    format!(
        "region: us-east-1\nsources:\n  - file://{}/\ncluster: test\nreplica: r1\n",
        dir.display()
    )
}

/// A copy of examples/inputs in a fresh temporary directory, to be changed by a test.
pub fn inputs_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&examples(), dir.path());
    dir
}

pub fn copy_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
            copy_tree(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), dest).unwrap();
        }
    }
}

/// Every file under `dir` with its bytes, mode and mtime, and every directory with its mode
/// (its mtime moves with any temporary file, so it is left out): equal snapshots mean
/// untouched, directories included.
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, u32, std::time::SystemTime)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let e = e.unwrap();
            let meta = e.metadata().unwrap();
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(e.path()).unwrap();
                out.insert(
                    e.path(),
                    (
                        target.into_os_string().into_encoded_bytes(),
                        0o120000,
                        std::time::UNIX_EPOCH,
                    ),
                );
            } else if meta.is_dir() {
                stack.push(e.path());
                out.insert(
                    e.path(),
                    (Vec::new(), meta.permissions().mode(), std::time::UNIX_EPOCH),
                );
            } else {
                out.insert(
                    e.path(),
                    (
                        std::fs::read(e.path()).unwrap(),
                        meta.permissions().mode(),
                        meta.modified().unwrap(),
                    ),
                );
            }
        }
    }
    out
}

pub fn read(dir: &Path, relative: &str) -> String {
    std::fs::read_to_string(dir.join(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

pub fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Asserts that every needle occurs in `log`, in the given order.
pub fn assert_in_order(log: &str, needles: &[&str]) {
    let at: Vec<usize> = needles
        .iter()
        .map(|needle| {
            log.find(needle)
                .unwrap_or_else(|| panic!("{needle} not in log:\n{log}"))
        })
        .collect();
    assert!(
        at.windows(2).all(|w| w[0] < w[1]),
        "out of order ({needles:?} at {at:?}):\n{log}"
    );
}

/// Renders from a moto seeded with `seed` into a fresh output dir; returns the moto (alive
/// for the caller), the work dir and the output dir. Asserts the render succeeded.
pub fn render_from_moto(seed: &Seed) -> (Moto, tempfile::TempDir, PathBuf) {
    let moto = Moto::start(seed);
    let work = tempfile::tempdir().unwrap();
    let config = write_config(work.path(), &moto_config(seed));
    let out = work.path().join("out");
    let output = render(Some(&moto.endpoint), &config, &out, &[]);
    assert!(output.status.success(), "{}", text(&output));
    (moto, work, out)
}

/// Polls `probe` every `every` until it yields a value; panics with `what()` after `timeout`.
pub fn wait_for<T>(
    timeout: std::time::Duration,
    every: std::time::Duration,
    what: impl Fn() -> String,
    mut probe: impl FnMut() -> Option<T>,
) -> T {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {timeout:?}: {}",
            what()
        );
        std::thread::sleep(every);
    }
}
