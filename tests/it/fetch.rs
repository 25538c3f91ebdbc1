//! Fetching from real moto (S3 + SSM) and rendering a full, promtool-valid file set.

use crate::support::{self, Seed};

const SECRET: &str = "demo-Adm1n-#pass;word";

#[test]
fn renders_every_file_from_s3_and_ssm_with_securestring_decrypted() {
    let (_moto, _work, out) = support::render_from_moto(&Seed::examples());

    let prom = support::read(&out, "prometheus/prometheus.yml");
    assert!(
        prom.contains("cluster: \"test\"") && prom.contains("__replica__: \"r1\""),
        "{prom}"
    );
    assert!(prom.contains(
        "url: \"http://127.0.0.1:8005/workspaces/ws-0b1c2d3e-aaaa-bbbb-cccc-123456789012/api/v1/remote_write\""
    ));
    for job in [
        "job_name: prometheus",
        "job_name: node",
        "job_name: grafana",
    ] {
        assert!(prom.contains(job), "{job} missing:\n{prom}");
    }
    // The real promtool agrees, independently of moninit's own run of it.
    let check = std::process::Command::new("promtool")
        .args(["check", "config", "--agent"])
        .arg(out.join("prometheus/prometheus.yml"))
        .output()
        .expect("promtool is installed by scripts/prereqs");
    assert!(check.status.success(), "{}", support::text(&check));

    let ini = support::read(&out, "grafana/grafana.ini");
    assert!(
        ini.contains(&format!("admin_password = \"\"\"{SECRET}\"\"\"")),
        "SecureString not decrypted:\n{ini}"
    );
    assert!(ini.contains("[auth]\nsigv4_auth_enabled = true"));
    assert!(ini.contains("allowed_auth_providers = default,ec2_iam_role"));
    assert!(ini.contains(&format!(
        "provisioning = {}",
        out.join("grafana/provisioning").display()
    )));
    assert_eq!(
        support::mode(&out.join("grafana/grafana.ini")) & 0o007,
        0,
        "secret file readable by others"
    );

    let ds = support::read(&out, "grafana/provisioning/datasources/moninit.yaml");
    assert!(
        ds.contains("sigV4Auth: true") && ds.contains("sigV4Region: us-east-1"),
        "{ds}"
    );
    assert!(ds.contains("url: \"https://aps-workspaces.us-east-1.amazonaws.com/workspaces/ws-0b1c2d3e-aaaa-bbbb-cccc-123456789012/\""));
    assert!(out
        .join("grafana/dashboards/Node/node-overview.json")
        .exists());
    assert!(out.join("grafana/dashboards/AMP/ingestion.json").exists());
}

#[test]
fn ssm_paging_follows_next_token_past_ten_parameters() {
    let inputs = support::inputs_copy();
    let builtin =
        std::fs::read_to_string(support::repo().join("templates/prometheus.yml.tera")).unwrap();
    std::fs::create_dir_all(inputs.path().join("templates")).unwrap();
    std::fs::write(
        inputs.path().join("templates/prometheus.yml.tera"),
        format!("{builtin}\n# extra parameters: {{{{ params.extra | length }}}}, last {{{{ params.extra.p0024 }}}}\n"),
    )
    .unwrap();
    let seed = Seed {
        dir: Some(inputs.path().to_owned()),
        extra_params: 25,
        ..Seed::examples()
    };
    let (_moto, _work, out) = support::render_from_moto(&seed);
    let prom = support::read(&out, "prometheus/prometheus.yml");
    assert!(
        prom.contains("# extra parameters: 25, last value-24"),
        "{prom}"
    );
}

#[test]
fn rerendering_unchanged_inputs_touches_no_file_and_removed_inputs_are_removed() {
    let inputs = support::inputs_copy();
    let work = tempfile::tempdir().unwrap();
    let config = support::write_config(work.path(), &support::file_config(inputs.path()));
    let out = work.path().join("out");
    assert!(support::render(None, &config, &out, &[]).status.success());
    let before = support::snapshot(&out);
    std::thread::sleep(std::time::Duration::from_millis(20));
    let again = support::render(None, &config, &out, &[]);
    assert!(again.status.success());
    assert_eq!(
        support::snapshot(&out),
        before,
        "an unchanged re-render rewrote files"
    );

    std::fs::remove_file(inputs.path().join("grafana/dashboards/AMP/ingestion.json")).unwrap();
    assert!(support::render(None, &config, &out, &[]).status.success());
    assert!(!out.join("grafana/dashboards/AMP/ingestion.json").exists());
    assert!(out
        .join("grafana/dashboards/Node/node-overview.json")
        .exists());
}

#[test]
fn diff_shows_changes_masked_and_writes_nothing() {
    let inputs = support::inputs_copy();
    let work = tempfile::tempdir().unwrap();
    let config = support::write_config(work.path(), &support::file_config(inputs.path()));
    let out = work.path().join("out");
    assert!(support::render(None, &config, &out, &[]).status.success());
    let before = support::snapshot(&out);
    std::fs::write(
        inputs.path().join("secrets.yaml"),
        "grafana:\n  admin_password: \"n3w-Secret-value\"\n",
    )
    .unwrap();
    let output = support::render(None, &config, &out, &["--diff"]);
    let text = support::text(&output);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("+++ b/grafana/grafana.ini"), "{text}");
    assert!(text.contains("-admin_password = ********"), "{text}");
    assert!(
        text.contains("+admin_password = \"\"\"********\"\"\""),
        "{text}"
    );
    assert!(
        !text.contains("n3w-Secret-value") && !text.contains(SECRET),
        "{text}"
    );
    assert_eq!(support::snapshot(&out), before, "--diff wrote files");
}

#[test]
fn check_validates_without_writing() {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("never");
    let yaml = format!(
        "{}output:\n  config_dir: {}\n",
        support::file_config(&support::examples()),
        out.display()
    );
    let config = support::write_config(work.path(), &yaml);
    let output = support::moninit(None)
        .arg("check")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", support::text(&output));
    assert!(!out.exists());
}

#[test]
fn version_flag_prints_the_version() {
    let output = support::moninit(None).arg("--version").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("moninit {}", env!("CARGO_PKG_VERSION"))
    );
}
