//! `moninit doctor` against moto with IAM enforcement (S3, SSM, AMP's control plane) and the
//! botocore-verifying AMP stand-in (data plane), as a user would run it before a first boot.

use crate::support::stand_ins::{Imds, Verifier};
use crate::support::{self, Moto, Seed};

/// Everything a full role needs in moto (which checks actions, not resources).
const FULL: &str = "s3,ssm,aps";

struct Rig {
    moto: Moto,
    verifier: Verifier,
    dir: tempfile::TempDir,
}

/// moto seeded with the examples (SecureStrings included), an AMP workspace, and an IAM user
/// allowed `allowed`; the AMP data-plane stand-in accepts that user's key, with its clock
/// shifted by `clock_offset` seconds.
fn rig(allowed: &str, clock_offset: i64) -> Rig {
    rig_in(allowed, clock_offset, None)
}

/// [`rig`], with an autoscaling group of one instance when `group` is given.
fn rig_in(allowed: &str, clock_offset: i64, group: Option<&str>) -> Rig {
    let moto = Moto::start(&Seed {
        auth: true,
        allowed_policy: Some(allowed.into()),
        amp_workspace: true,
        asg: group.map(str::to_owned),
        ..Seed::examples()
    });
    let (key, secret) = moto.allowed_keys.clone().unwrap();
    let verifier = Verifier::start(&[
        "--key",
        &format!("{key}:{secret}"),
        "--clock-offset",
        &clock_offset.to_string(),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "{}workspace_id: {}\namp_endpoint: http://{}\namp:\n  sync: true\n",
        support::moto_config(&Seed::examples()),
        moto.amp_workspace.as_ref().unwrap(),
        verifier.addr
    );
    support::write_config(dir.path(), &config);
    Rig {
        moto,
        verifier,
        dir,
    }
}

impl Rig {
    fn doctor(&self, extra: &[&str], env: &[(&str, &str)]) -> (i32, String) {
        let (key, secret) = self.moto.allowed_keys.clone().unwrap();
        let mut cmd = support::moninit(Some(&self.moto.endpoint));
        cmd.env("AWS_ACCESS_KEY_ID", key)
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .args(["doctor", "--config"])
            .arg(self.dir.path().join("moninit.yaml"))
            .args(extra);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        (out.status.code().unwrap_or(-1), support::text(&out))
    }
}

fn line<'a>(text: &'a str, start: &str) -> &'a str {
    text.lines()
        .find(|l| l.starts_with(start))
        .unwrap_or_else(|| panic!("no line starting with {start:?}:\n{text}"))
}

#[test]
fn a_full_role_passes_every_check() {
    let rig = rig(FULL, 0);
    let (code, out) = rig.doctor(&[], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains('✗'), "{out}");
    for start in [
        "✓ config:",
        "✓ region: us-east-1",
        "✓ credentials: from Environment",
        "✓ s3://moninit-test/monitoring/: read 4 files",
        "✓ ssm:/monitoring/test/: ",
        "✓ workspace ws-",
        "✓ amp remote_write: ",
        "✓ amp query: vector(1) answered HTTP 200",
        "✓ clock: ",
        "✓ amp sync (rules, alertmanager): ",
    ] {
        line(&out, start);
    }
    assert!(
        line(&out, "✓ ssm:/monitoring/test/").contains("1 SecureStrings decrypted"),
        "{out}"
    );
    assert!(
        line(&out, "- imds").contains("AWS_EC2_METADATA_DISABLED"),
        "{out}"
    );
    // The data-plane probes were signed with the role's key and verified by botocore.
    let requests = rig.verifier.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert!(
        requests.iter().all(|r| r["verified"] == true),
        "{requests:?}"
    );
    assert!(requests.iter().any(|r| r["path"]
        .as_str()
        .unwrap()
        .ends_with("/api/v1/remote_write")
        && r["body_len"] == 0));
}

#[test]
fn a_role_without_get_parameters_by_path_fails_naming_the_action_with_a_policy_snippet() {
    let rig = rig("s3,ssm:GetParameters,ssm:DescribeParameters,aps", 0);
    let (code, out) = rig.doctor(&[], &[]);
    assert_eq!(code, 11, "{out}");
    let failed = line(&out, "✗ ssm:/monitoring/test/:");
    assert!(failed.contains("ssm:GetParametersByPath denied"), "{out}");
    assert!(
        out.contains("    fix: the role needs `ssm:GetParametersByPath` on arn:aws:ssm:us-east-1:123456789012:parameter/monitoring/test/*;"),
        "{out}"
    );
    assert!(
        out.contains("\"Action\": \"ssm:GetParametersByPath\""),
        "{out}"
    );
    assert!(out.contains(":parameter/monitoring/test/*\""), "{out}");
    // Every other check still ran: one run shows every problem.
    line(&out, "✓ s3://moninit-test/monitoring/");
    line(&out, "✓ amp query:");
    assert!(out.contains("1 failed"), "{out}");

    let (code, json) = rig.doctor(&["--json"], &[]);
    assert_eq!(code, 11);
    let start = json.find('{').unwrap();
    let end = json.rfind('}').unwrap();
    let report: serde_json::Value = serde_json::from_str(&json[start..=end]).unwrap();
    assert_eq!(report["ok"], false);
    let ssm = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "ssm:/monitoring/test/")
        .unwrap();
    assert_eq!(ssm["status"], "fail");
    assert!(ssm["fix"]
        .as_str()
        .unwrap()
        .contains("ssm:GetParametersByPath"));
}

#[test]
fn a_clock_four_minutes_off_fails_the_skew_check() {
    let rig = rig(FULL, 600);
    let (code, out) = rig.doctor(&[], &[]);
    assert_eq!(code, 11, "{out}");
    let clock = line(&out, "✗ clock: ");
    // Date has one-second resolution.
    let skew: i64 = clock["✗ clock: ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!((-601..=-599).contains(&skew), "{out}");
    assert!(
        out.contains(&format!("this clock is {} s behind AWS's", -skew)),
        "{out}"
    );
    assert!(
        line(&out, "✗ amp remote_write:").contains("Signature expired"),
        "{out}"
    );
}

#[test]
fn doctor_never_prints_a_secure_string_value() {
    let secret = "demo-Adm1n-#pass;word";
    assert!(
        std::fs::read_to_string(support::examples().join("secrets.yaml"))
            .unwrap()
            .contains(secret)
    );
    let rig = rig(FULL, 0);
    for extra in [&[][..], &["--json"][..]] {
        let (code, out) = rig.doctor(extra, &[("RUST_LOG", "trace")]);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("SecureStrings decrypted"), "{out}");
        assert!(
            !out.contains(secret),
            "a SecureString value was printed:\n{out}"
        );
        assert!(!out.contains("Adm1n"), "{out}");
    }
}

#[test]
fn on_an_instance_of_a_group_imds_and_set_instance_health_are_proven_only_on_a_healthy_instance() {
    enum Want {
        Allowed,
        Denied,
        NotTried(&'static str),
    }
    for (allowed, unhealthy, want) in [
        ("s3,ssm,aps,autoscaling", false, Want::Allowed),
        (
            "s3,ssm,aps,autoscaling:DescribeAutoScalingInstances",
            false,
            Want::Denied,
        ),
        (FULL, false, Want::NotTried("could not be read first")),
        (
            "s3,ssm,aps,autoscaling",
            true,
            Want::NotTried("would cancel its replacement"),
        ),
    ] {
        let rig = rig_in(allowed, 0, Some("moninit-asg"));
        let instance = rig.moto.asg_instance.clone().unwrap();
        let (key, secret) = rig.moto.allowed_keys.clone().unwrap();
        let health = |set: Option<&str>| {
            let change = set
                .map(|h| {
                    format!("c.set_instance_health(InstanceId='{instance}', HealthStatus='{h}')\n")
                })
                .unwrap_or_default();
            rig.moto
                .python(&format!(
                    "kw.update(aws_access_key_id='{key}', aws_secret_access_key='{secret}')\n\
                     c = boto3.client('autoscaling', **kw)\n{change}\
                     print(c.describe_auto_scaling_instances(InstanceIds=['{instance}'])['AutoScalingInstances'][0]['HealthStatus'])"
                ))
                .trim()
                .to_ascii_uppercase()
        };
        if unhealthy {
            assert_eq!(health(Some("Unhealthy")), "UNHEALTHY");
        }
        let imds = Imds::start(&instance, Some("moninit-asg"));
        let env: Vec<(String, String)> = imds.env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let (code, out) = rig.doctor(&[], &env);
        assert!(
            line(&out, "✓ imds (IMDSv2):")
                .contains(&format!("instance {instance}, group moninit-asg")),
            "{out}"
        );
        match want {
            Want::Allowed => {
                assert_eq!(code, 0, "{out}");
                assert!(
                    line(&out, "✓ autoscaling SetInstanceHealth:")
                        .contains(&format!("allowed for {instance} in group moninit-asg")),
                    "{out}"
                );
            }
            Want::Denied => {
                assert_eq!(code, 11, "{out}");
                line(&out, "✗ autoscaling SetInstanceHealth: denied");
                assert!(out.contains("the role needs `autoscaling:SetInstanceHealth` on arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:*:autoScalingGroupName/moninit-asg"), "{out}");
            }
            Want::NotTried(why) => {
                assert_eq!(code, 0, "{out}");
                assert!(
                    line(&out, "! autoscaling SetInstanceHealth: not tried").contains(why),
                    "{out}"
                );
            }
        }
        if unhealthy {
            assert_eq!(
                health(None),
                "UNHEALTHY",
                "doctor must not mark an unhealthy instance healthy"
            );
        }
    }
}

#[test]
fn without_imds_only_region_auto_fails_and_auto_labels_warn() {
    let inputs = support::inputs_copy();
    let dir = tempfile::tempdir().unwrap();
    for (config, want) in [
        (
            format!(
                "region: auto\nsources: [file://{}/]\n",
                inputs.path().display()
            ),
            "✗ imds (IMDSv2): AWS_EC2_METADATA_DISABLED=true, but `region` is `auto`",
        ),
        (
            format!(
                "region: us-east-1\nsources: [file://{}/]\n",
                inputs.path().display()
            ),
            "! imds (IMDSv2): disabled",
        ),
    ] {
        let path = support::write_config(dir.path(), &config);
        let out = support::moninit(None)
            .args(["doctor", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let text = support::text(&out);
        assert_eq!(out.status.code(), Some(11), "{text}");
        line(&text, want);
    }
}

#[test]
fn a_role_without_s3_fails_the_prefix_with_a_statement_limited_to_it() {
    let rig = rig("ssm,aps", 0);
    let (code, out) = rig.doctor(&[], &[]);
    assert_eq!(code, 11, "{out}");
    assert!(
        line(&out, "✗ s3://moninit-test/monitoring/:").contains("ListObjectsV2: AccessDenied"),
        "{out}"
    );
    assert!(
        out.contains("the role needs `s3:ListBucket` on arn:aws:s3:::moninit-test"),
        "{out}"
    );
    assert!(out.contains("\"s3:prefix\""), "{out}");
    line(&out, "✓ ssm:/monitoring/test/");
}
