//! The deb and rpm packages (built by `scripts/package`, which `scripts/test` runs first), the
//! systemd unit, the cloud-init user-data and the CloudFormation stack.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support;

fn package(ext: &str) -> PathBuf {
    let path = support::repo().join(format!("target/packages/moninit.{ext}"));
    assert!(
        path.exists(),
        "{} missing: run scripts/package (scripts/test does)",
        path.display()
    );
    path
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        support::text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn packaging(relative: &str) -> PathBuf {
    support::repo().join("packaging").join(relative)
}

#[test]
fn deb_holds_the_binary_unit_conffile_and_maintainer_scripts() {
    let deb = package("deb");
    let listing = run(Command::new("dpkg-deb").arg("-c").arg(&deb));
    for (mode, path) in [
        ("-rwxr-xr-x", "./usr/bin/moninit"),
        ("-rw-r--r--", "./lib/systemd/system/moninit.service"),
        ("-rw-r--r--", "./etc/moninit/moninit.yaml"),
        ("-rw-r--r--", "./usr/share/doc/moninit/README.md"),
    ] {
        assert!(
            listing
                .lines()
                .any(|l| l.starts_with(mode) && l.ends_with(path)),
            "{mode} {path} not in:\n{listing}"
        );
    }
    let info = run(Command::new("dpkg-deb").arg("-I").arg(&deb));
    for field in [
        "Package: moninit",
        "Suggests: prometheus, grafana",
        "postinst",
        "prerm",
        "postrm",
    ] {
        assert!(info.contains(field), "{field} not in:\n{info}");
    }
    let control = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb")
        .arg("-e")
        .arg(&deb)
        .arg(control.path()));
    let conffiles = std::fs::read_to_string(control.path().join("conffiles")).unwrap();
    assert_eq!(conffiles.trim(), "/etc/moninit/moninit.yaml");
}

#[test]
fn rpm_holds_the_binary_unit_noreplace_config_and_scriptlets() {
    let rpm = package("rpm");
    let files = run(Command::new("rpm").arg("-qlp").arg(&rpm));
    for path in [
        "/usr/bin/moninit",
        "/usr/lib/systemd/system/moninit.service",
        "/etc/moninit/moninit.yaml",
    ] {
        assert!(files.lines().any(|l| l == path), "{path} not in:\n{files}");
    }
    let info = run(Command::new("rpm").arg("-qip").arg(&rpm));
    assert!(info.contains("Name        : moninit"), "{info}");
    let flags = run(Command::new("rpm")
        .args([
            "-qp",
            "--queryformat",
            "[%{FILEFLAGS:fflags} %{FILEMODES:perms} %{FILENAMES}\n]",
        ])
        .arg(&rpm));
    assert!(
        flags
            .lines()
            .any(|l| l.starts_with("cn ") && l.ends_with(" /etc/moninit/moninit.yaml")),
        "{flags}"
    );
    assert!(
        flags
            .lines()
            .any(|l| l.contains("-rwxr-xr-x /usr/bin/moninit")),
        "{flags}"
    );
    let scripts = run(Command::new("rpm").args(["-qp", "--scripts"]).arg(&rpm));
    for section in [
        "postinstall scriptlet",
        "preuninstall scriptlet",
        "postuninstall scriptlet",
        "systemctl enable moninit.service",
    ] {
        assert!(scripts.contains(section), "{section} not in:\n{scripts}");
    }
    // Never pulled in: a distribution Prometheus would take moninit's port (:9090).
    let recommends = run(Command::new("rpm").args(["-qp", "--recommends"]).arg(&rpm));
    assert!(!recommends.contains("prometheus"), "{recommends}");
    let suggests = run(Command::new("rpm").args(["-qp", "--suggests"]).arg(&rpm));
    assert!(
        suggests.contains("prometheus") && suggests.contains("grafana"),
        "{suggests}"
    );
}

#[test]
fn deb_installs_into_a_throwaway_root_with_the_right_modes_and_the_unit_enabled() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    for dir in [
        "var/lib/dpkg/info",
        "var/lib/dpkg/updates",
        "var/lib/dpkg/triggers",
        "etc/systemd/system",
    ] {
        std::fs::create_dir_all(r.join(dir)).unwrap();
    }
    std::fs::write(r.join("var/lib/dpkg/status"), "").unwrap();
    std::fs::write(r.join("var/lib/dpkg/available"), "").unwrap();
    run(Command::new("dpkg")
        .arg(format!("--root={}", r.display()))
        .args([
            "--force-script-chrootless",
            "--force-depends",
            "--log=/dev/null",
            "-i",
        ])
        .arg(package("deb")));
    let mode = |p: &str| {
        std::fs::metadata(r.join(p))
            .unwrap_or_else(|e| panic!("{p}: {e}"))
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("usr/bin/moninit"), 0o755);
    assert_eq!(mode("etc/moninit/moninit.yaml"), 0o644);
    assert_eq!(mode("lib/systemd/system/moninit.service"), 0o644);
    assert_eq!(mode("etc/moninit/rendered"), 0o755);
    assert_eq!(mode("var/lib/moninit"), 0o750);
    // Enabled (for the next boot), never started.
    // (postinst enables through `systemctl --root`; every target system has systemctl.)
    if Command::new("systemctl").arg("--version").output().is_ok() {
        let wants = r.join("etc/systemd/system/multi-user.target.wants/moninit.service");
        assert!(
            wants.symlink_metadata().is_ok(),
            "unit not enabled: {}",
            wants.display()
        );
    }
    // The installed binary runs.
    let version = run(Command::new(r.join("usr/bin/moninit")).arg("--version"));
    assert_eq!(
        version.trim(),
        format!("moninit {}", env!("CARGO_PKG_VERSION"))
    );
}

/// `key=value` lines of the unit's sections.
fn unit_keys() -> Vec<(String, String)> {
    std::fs::read_to_string(packaging("systemd/moninit.service"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains('='))
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect()
}

fn secs(v: &str) -> u64 {
    v.trim_end_matches('s').parse().unwrap()
}

#[test]
fn the_unit_is_a_notify_service_with_sane_timeouts_and_hardening() {
    let keys = unit_keys();
    let get = |k: &str| {
        keys.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("{k} missing"))
    };
    assert_eq!(get("Type"), "notify");
    assert_eq!(
        get("ExecStart"),
        "/usr/bin/moninit run --config /etc/moninit/moninit.yaml"
    );
    assert_eq!(get("ExecReload"), "/bin/kill -HUP $MAINPID");
    assert_eq!(get("Restart"), "on-failure");
    assert_eq!(get("KillMode"), "mixed");
    assert_eq!(get("WantedBy"), "multi-user.target");
    assert!(
        get("After").contains("network-online.target") && !get("After").contains("cloud-final")
    );
    assert!(secs(get("RestartSec")) >= 5);
    assert!(secs(get("WatchdogSec")) > 0);
    // Above moninit's own stop sequence with default timeouts: two children × 30 s + 10 s drain.
    let defaults = moninit::supervise::Config::default();
    assert!(secs(get("TimeoutStopSec")) > 2 * defaults.stop_timeout_secs + 10);
    for (k, v) in [
        ("ProtectSystem", "strict"),
        ("ProtectHome", "true"),
        ("PrivateTmp", "true"),
        ("NoNewPrivileges", "true"),
    ] {
        assert_eq!(get(k), v);
    }
    assert!(get("ReadWritePaths").contains("/etc/moninit/rendered"));
    assert_eq!(get("StateDirectory"), "moninit");
}

#[test]
fn systemd_analyze_verifies_the_unit() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("systemd-analyze not installed: unit keys are checked by the other test only");
        return;
    }
    // Verify a copy whose ExecStart points at the built binary, so the check is about the
    // unit, not about where moninit is installed on this machine.
    let dir = tempfile::tempdir().unwrap();
    let binary = support::repo().join("target/release/moninit");
    let unit = std::fs::read_to_string(packaging("systemd/moninit.service"))
        .unwrap()
        .replace("/usr/bin/moninit", &binary.display().to_string());
    let path = dir.path().join("moninit.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .unwrap();
    let text = support::text(&out);
    let problems: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("moninit.service"))
        // The test machine has no moninit user; the package creates it at install.
        .filter(|l| !l.contains("user") && !l.contains("User"))
        .collect();
    assert!(problems.is_empty(), "systemd-analyze verify:\n{text}");
}

fn cloudformation() -> serde_yaml_ng::Value {
    serde_yaml_ng::from_str(
        &std::fs::read_to_string(packaging("cloudformation/moninit.yaml")).unwrap(),
    )
    .unwrap()
}

#[test]
fn cfn_lint_accepts_the_stack() {
    let cfn_lint = support::python().parent().unwrap().join("cfn-lint");
    assert!(cfn_lint.exists(), "cfn-lint missing: run scripts/prereqs");
    let out = Command::new(cfn_lint)
        .arg(packaging("cloudformation/moninit.yaml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "cfn-lint:\n{}", support::text(&out));
}

/// The role's statements as granted when the `SyncToAmp` condition is `sync` (each
/// `Fn::If` on it resolved; no other condition is used).
fn role_statements(stack: &serde_yaml_ng::Value, sync: bool) -> Vec<serde_yaml_ng::Value> {
    stack["Resources"]["InstanceRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|s| match s.get("Fn::If") {
            Some(branches) => {
                assert_eq!(branches[0], "SyncToAmp", "{s:?}");
                let chosen = &branches[if sync { 1 } else { 2 }];
                (chosen.get("Ref").is_none()).then(|| chosen.clone())
            }
            None => Some(s.clone()),
        })
        .collect()
}

fn actions_of(statements: &[serde_yaml_ng::Value]) -> BTreeSet<String> {
    let mut actions = BTreeSet::new();
    for s in statements {
        assert_eq!(s["Effect"], "Allow");
        match &s["Action"] {
            serde_yaml_ng::Value::String(a) => {
                actions.insert(a.clone());
            }
            serde_yaml_ng::Value::Sequence(list) => {
                actions.extend(list.iter().map(|a| a.as_str().unwrap().to_owned()))
            }
            other => panic!("unexpected Action {other:?}"),
        }
    }
    actions
}

#[test]
fn amp_sync_on_adds_exactly_the_rule_and_alertmanager_actions_on_the_stacks_workspace() {
    let stack = cloudformation();
    assert_eq!(stack["Parameters"]["AmpSync"]["Default"], "false");
    let off = actions_of(&role_statements(&stack, false));
    let on_statements = role_statements(&stack, true);
    let on = actions_of(&on_statements);
    let added: BTreeSet<String> = on.difference(&off).cloned().collect();
    let want: BTreeSet<String> = [
        "aps:ListRuleGroupsNamespaces",
        "aps:DescribeRuleGroupsNamespace",
        "aps:CreateRuleGroupsNamespace",
        "aps:PutRuleGroupsNamespace",
        "aps:DeleteRuleGroupsNamespace",
        "aps:TagResource",
        "aps:DescribeAlertManagerDefinition",
        "aps:CreateAlertManagerDefinition",
        "aps:PutAlertManagerDefinition",
    ]
    .map(String::from)
    .into();
    assert_eq!(added, want);
    assert!(off.is_subset(&on));
    let sync = on_statements
        .iter()
        .find(|s| s["Sid"] == "SyncRulesAndAlertmanagerOfThisWorkspace")
        .unwrap();
    assert_eq!(sync["Resource"][0]["Fn::GetAtt"][0], "Workspace");
    assert!(sync["Resource"][1]["Fn::Sub"]
        .as_str()
        .unwrap()
        .ends_with(":rulegroupsnamespace/${Workspace.WorkspaceId}/*"));
    // What the instances run says the same as the role.
    let user_data = stack["Resources"]["LaunchTemplate"]["Properties"]["LaunchTemplateData"]
        ["UserData"]["Fn::Base64"]["Fn::Sub"][0]
        .as_str()
        .unwrap();
    assert!(user_data.contains("      amp:\n        sync: ${AmpSync}\n"));
}

#[test]
fn the_instance_role_grants_exactly_what_moninit_needs() {
    let stack = cloudformation();
    let statements = role_statements(&stack, false);
    let actions = actions_of(&statements);
    let want: BTreeSet<String> = [
        "aps:RemoteWrite",
        "aps:QueryMetrics",
        "aps:GetSeries",
        "aps:GetLabels",
        "aps:GetMetricMetadata",
        "aps:DescribeWorkspace",
        "s3:GetObject",
        "s3:ListBucket",
        "ssm:GetParametersByPath",
        "ssm:GetParameters",
        "ssm:DescribeParameters",
        "kms:Decrypt",
        "autoscaling:SetInstanceHealth",
    ]
    .map(String::from)
    .into();
    assert_eq!(actions, want);
    assert!(actions.iter().all(|a| !a.contains('*')));
    // kms:Decrypt only through SSM; aps only on the stack's workspace.
    let kms = statements
        .iter()
        .find(|s| s["Action"] == "kms:Decrypt")
        .unwrap();
    assert!(kms["Condition"]["StringEquals"]["kms:ViaService"].is_mapping());
    let aps = statements
        .iter()
        .find(|s| s["Sid"] == "RemoteWriteAndQueryThisWorkspace")
        .unwrap();
    assert_eq!(aps["Resource"]["Fn::GetAtt"][0], "Workspace");
    // Only DescribeParameters (no resource-level permissions) and kms:Decrypt (conditioned)
    // are granted on every resource.
    let on_everything: Vec<String> = statements
        .iter()
        .filter(|s| s["Resource"] == "*")
        .map(|s| format!("{:?}", s["Action"]))
        .collect();
    assert_eq!(on_everything.len(), 2, "{on_everything:?}");
    assert!(on_everything
        .iter()
        .any(|a| a.contains("ssm:DescribeParameters")));
    assert!(on_everything.iter().any(|a| a.contains("kms:Decrypt")));
    // Program archives: read-only, under artifacts/ only.
    let archives = statements
        .iter()
        .find(|s| s["Sid"] == "ReadProgramArchives")
        .unwrap();
    assert_eq!(archives["Action"], "s3:GetObject");
    assert_eq!(
        archives["Resource"]["Fn::Sub"],
        "${InputsBucket.Arn}/artifacts/*"
    );
    // SetInstanceHealth only on the stack's own group, whose name the stack fixes.
    let health = statements
        .iter()
        .find(|s| s["Action"] == "autoscaling:SetInstanceHealth")
        .unwrap();
    let group_name = stack["Resources"]["Group"]["Properties"]["AutoScalingGroupName"]["Fn::Sub"]
        .as_str()
        .unwrap();
    let arn = health["Resource"]["Fn::Sub"].as_str().unwrap();
    assert!(
        arn.starts_with("arn:${AWS::Partition}:autoscaling:${AWS::Region}:${AWS::AccountId}:autoScalingGroup:*:autoScalingGroupName/")
            && arn.ends_with(&format!("autoScalingGroupName/{group_name}")),
        "{arn}"
    );
    let lt = &stack["Resources"]["LaunchTemplate"]["Properties"]["LaunchTemplateData"]
        ["MetadataOptions"];
    assert_eq!(
        (
            lt["HttpTokens"].as_str(),
            lt["HttpPutResponseHopLimit"].as_u64()
        ),
        (Some("required"), Some(2))
    );
}

#[test]
fn the_stack_embeds_the_shipped_cloud_init_user_data() {
    let stack = cloudformation();
    let embedded = stack["Resources"]["LaunchTemplate"]["Properties"]["LaunchTemplateData"]
        ["UserData"]["Fn::Base64"]["Fn::Sub"][0]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        embedded,
        std::fs::read_to_string(packaging("cloud-init/user-data.yaml")).unwrap()
    );
}

fn shell_ok(script: &str, name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, script).unwrap();
    run(Command::new("bash").arg("-n").arg(&path));
    if Command::new("shellcheck").arg("--version").output().is_ok() {
        run(Command::new("shellcheck").args(["-s", "bash"]).arg(&path));
    }
}

#[test]
fn cloud_init_parses_and_its_shell_passes_bash_n_and_shellcheck() {
    let text = std::fs::read_to_string(packaging("cloud-init/user-data.yaml")).unwrap();
    assert!(text.starts_with("#cloud-config\n"));
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    let config = doc["write_files"][0]["content"].as_str().unwrap();
    assert_eq!(doc["write_files"][0]["path"], "/etc/moninit/moninit.yaml");
    // What user-data writes is a valid agent config once the placeholders are filled in.
    let sha = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    let filled = config
        .replace("${WorkspaceId}", "ws-0b1c2d3e-aaaa-bbbb-cccc-123456789012")
        .replace("${InputsUrl}", "s3://bucket/monitoring/")
        .replace("${ParameterPath}", "/monitoring/prod/")
        .replace(
            "${PrometheusArchiveUrl}",
            "s3://bucket/artifacts/prometheus.tar.gz",
        )
        .replace(
            "${GrafanaArchiveUrl}",
            "s3://bucket/artifacts/grafana.tar.gz",
        )
        .replace("${AmpPluginUrl}", "s3://bucket/artifacts/plugin.zip")
        .replace("${PrometheusArchiveSha256}", sha)
        .replace("${GrafanaArchiveSha256}", sha)
        .replace("${AmpPluginSha256}", sha)
        .replace("${AmpSync}", "true");
    let parsed = moninit::config::Config::parse(&filled, Path::new("user-data")).unwrap();
    // The node is complete from S3 alone: all three programs are pinned.
    assert_eq!(parsed.pins().len(), 3);
    let script = doc["runcmd"][0][2]
        .as_str()
        .unwrap()
        .replace("${PackageUrl}", "s3://bucket/packages/moninit");
    shell_ok(&script, "runcmd.sh");
    shell_ok(
        &std::fs::read_to_string(packaging("cloud-init/user-data.sh")).unwrap(),
        "user-data.sh",
    );
    for script in ["postinst", "prerm", "postrm"] {
        run(Command::new("sh")
            .arg("-n")
            .arg(packaging(&format!("scripts/{script}"))));
    }
}
