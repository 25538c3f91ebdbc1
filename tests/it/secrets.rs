//! The SecureString value never reaches a log line, at any level.

use crate::support::{self, Moto, Seed};

const SECRET: &str = "demo-Adm1n-#pass;word";

#[test]
fn securestring_never_appears_in_logs_at_trace_level() {
    let seed = Seed::examples();
    let moto = Moto::start(&seed);
    let work = tempfile::tempdir().unwrap();
    let config = support::write_config(work.path(), &support::moto_config(&seed));
    let out = work.path().join("out");

    for extra in [&[][..], &["--diff"][..]] {
        let output = support::moninit(Some(&moto.endpoint))
            .env("RUST_LOG", "trace")
            .arg("render")
            .arg("--config")
            .arg(&config)
            .arg("--out")
            .arg(&out)
            .args(extra)
            .output()
            .unwrap();
        let text = support::text(&output);
        assert!(output.status.success(), "{text}");
        assert!(
            text.lines().count() > 20,
            "trace logging produced almost nothing: {text}"
        );
        assert!(!text.contains(SECRET), "secret leaked with {extra:?}");
    }
    // It is in the one place it belongs, which is not world-readable.
    assert!(support::read(&out, "grafana/grafana.ini").contains(SECRET));
    assert_eq!(support::mode(&out.join("grafana/grafana.ini")) & 0o007, 0);
}

#[test]
fn a_secret_in_an_error_message_is_masked() {
    // A template that fails after using the secret: the error must not quote it.
    let inputs = support::inputs_copy();
    std::fs::create_dir_all(inputs.path().join("templates")).unwrap();
    std::fs::write(
        inputs.path().join("templates/grafana.ini.tera"),
        "[security]\nadmin_password = {{ params.grafana.admin_password }}\n[x\n",
    )
    .unwrap();
    let work = tempfile::tempdir().unwrap();
    let config = support::write_config(work.path(), &support::file_config(inputs.path()));
    let output = support::render(None, &config, &work.path().join("out"), &[]);
    let text = support::text(&output);
    assert_eq!(output.status.code(), Some(6), "{text}");
    assert!(text.contains("malformed section header"), "{text}");
    assert!(!text.contains(SECRET), "{text}");
}

#[test]
fn a_secrets_yaml_in_s3_is_honoured_as_secrets() {
    let moto = Moto::start(&Seed {
        bucket: "moninit-test".into(),
        ..Seed::default()
    });
    moto.python(&format!(
        "import os\ns3 = boto3.client('s3', **kw)\nroot = '{}'\n\
         for d, _, names in os.walk(root):\n    for n in names:\n        p = os.path.join(d, n)\n        \
         s3.put_object(Bucket='moninit-test', Key='monitoring/' + os.path.relpath(p, root), Body=open(p, 'rb').read())",
        support::examples().display()
    ));
    let work = tempfile::tempdir().unwrap();
    let config = support::write_config(
        work.path(),
        "region: us-east-1\nsources:\n  - s3://moninit-test/monitoring/\n",
    );
    let out = work.path().join("out");
    let output = support::moninit(Some(&moto.endpoint))
        .env("RUST_LOG", "trace")
        .args(["render", "--config"])
        .arg(&config)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let text = support::text(&output);
    assert!(output.status.success(), "{text}");
    assert!(!text.contains(SECRET), "secret from S3 leaked: {text}");
    let ini = out.join("grafana/grafana.ini");
    assert!(support::read(&out, "grafana/grafana.ini").contains(SECRET));
    assert_eq!(
        support::mode(&ini) & 0o077,
        0,
        "grafana.ini is readable by others"
    );
    assert!(
        !out.join("secrets.yaml").exists(),
        "secrets.yaml is not an input file"
    );
}
