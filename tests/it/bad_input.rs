//! One test per kind of bad input: each asserts the exit code, that the error names the
//! input at fault, and that the output directory is byte-for-byte unchanged.

use std::path::Path;
use std::process::Output;

use crate::support::{self, Moto, Seed};

/// Renders good inputs into a fresh output dir, applies `breakage`, renders again, checks the
/// failure and that nothing under the output dir changed. Returns the failing run's text.
fn fails_and_leaves_output_untouched(
    endpoint: Option<&str>,
    config_yaml: impl Fn(&Path) -> String,
    breakage: impl FnOnce(&Path, &Path),
    code: i32,
) -> String {
    let inputs = support::inputs_copy();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let config = support::write_config(work.path(), &config_yaml(inputs.path()));
    let good = support::render(endpoint, &config, &out, &[]);
    assert!(good.status.success(), "{}", support::text(&good));
    let before = support::snapshot(&out);

    breakage(inputs.path(), &config);
    let bad: Output = support::render(endpoint, &config, &out, &[]);
    let text = support::text(&bad);
    assert_eq!(bad.status.code(), Some(code), "{text}");
    assert_eq!(
        support::snapshot(&out),
        before,
        "output changed after a failed render"
    );
    text
}

fn local(dir: &Path) -> String {
    support::file_config(dir)
}

#[test]
fn malformed_yaml_in_an_s3_scrape_config_names_the_object() {
    let seed = Seed::examples();
    let moto = Moto::start(&seed);
    let text = fails_and_leaves_output_untouched(
        Some(&moto.endpoint),
        |_| support::moto_config(&seed),
        |_, _| {
            let status = std::process::Command::new(support::python())
                .arg("-c")
                .arg(format!(
                    "import boto3; boto3.client('s3', endpoint_url='{}', region_name='us-east-1', \
                     aws_access_key_id='t', aws_secret_access_key='t').put_object(Bucket='moninit-test', \
                     Key='monitoring/prometheus/scrape_configs/broken.yml', Body=b'job_name: x\\n  static_configs: [\\n')",
                    moto.endpoint
                ))
                .status()
                .unwrap();
            assert!(status.success());
        },
        5,
    );
    assert!(
        text.contains(
            "s3://moninit-test/monitoring/prometheus/scrape_configs/broken.yml: invalid YAML"
        ),
        "{text}"
    );
    assert!(text.contains("line 2"), "{text}");
}

#[test]
fn unknown_config_key_names_file_line_and_column() {
    let text = fails_and_leaves_output_untouched(
        None,
        local,
        |_, config| {
            let mut yaml = std::fs::read_to_string(config).unwrap();
            yaml.push_str("prometheus:\n  scrape_intervall: 15s\n");
            std::fs::write(config, yaml).unwrap();
        },
        3,
    );
    assert!(
        text.contains("moninit.yaml: prometheus: unknown field `scrape_intervall`"),
        "{text}"
    );
    assert!(text.contains("line 7 column 3"), "{text}");
}

#[test]
fn undefined_template_variable_names_template_and_line() {
    let text = fails_and_leaves_output_untouched(
        None,
        local,
        |inputs, _| {
            std::fs::create_dir_all(inputs.join("templates")).unwrap();
            std::fs::write(
                inputs.join("templates/grafana.ini.tera"),
                "[server]\nhttp_port = 3000\ndomain = {{ params.domain }}\n",
            )
            .unwrap();
        },
        5,
    );
    assert!(text.contains("template `grafana.ini`"), "{text}");
    assert!(
        text.contains("templates/grafana.ini.tera), line 3"),
        "{text}"
    );
    assert!(text.contains("params.domain"), "{text}");
}

#[test]
fn duplicate_dashboard_uid_names_both_dashboards() {
    let text = fails_and_leaves_output_untouched(
        None,
        local,
        |inputs, _| {
            std::fs::create_dir_all(inputs.join("grafana/dashboards/Copies")).unwrap();
            std::fs::write(
                inputs.join("grafana/dashboards/Copies/copy.json"),
                r#"{"uid": "moninit-node", "title": "Copy"}"#,
            )
            .unwrap();
        },
        6,
    );
    assert!(
        text.contains("dashboard uid `moninit-node` is also used by"),
        "{text}"
    );
    assert!(
        text.contains("Copies/copy.json") && text.contains("Node/node-overview.json"),
        "{text}"
    );
}

/// Renders from moto, then again with `from` replaced by `to` in the config's sources.
fn moto_source_renamed(from: &str, to: &str) -> String {
    let seed = Seed::examples();
    let moto = Moto::start(&seed);
    fails_and_leaves_output_untouched(
        Some(&moto.endpoint),
        |_| support::moto_config(&seed),
        |_, config| {
            let yaml = std::fs::read_to_string(config).unwrap().replace(from, to);
            std::fs::write(config, yaml).unwrap();
        },
        4,
    )
}

#[test]
fn missing_bucket_names_the_bucket_and_aws_error_code() {
    let text = moto_source_renamed("s3://moninit-test/", "s3://no-such-bucket/");
    assert!(
        text.contains("s3://no-such-bucket/monitoring/: ListObjectsV2 failed: NoSuchBucket"),
        "{text}"
    );
}

#[test]
fn missing_ssm_path_names_the_path() {
    let text = moto_source_renamed("ssm:/monitoring/test/", "ssm:/monitoring/nope/");
    assert!(
        text.contains("ssm:/monitoring/nope/: no parameters under this path"),
        "{text}"
    );
}

#[test]
fn an_empty_s3_prefix_is_an_error_not_an_empty_configuration() {
    // A wrong prefix in a deploy script would otherwise install a node without a dashboard
    // or a scrape job.
    let text = moto_source_renamed(
        "s3://moninit-test/monitoring/",
        "s3://moninit-test/emptied/",
    );
    assert!(
        text.contains("s3://moninit-test/emptied/: no objects under this prefix"),
        "{text}"
    );
}

#[test]
fn access_denied_names_the_source_and_aws_error_code() {
    let seed = Seed {
        auth: true,
        ..Seed::examples()
    };
    let moto = Moto::start(&seed);
    let (key, secret) = moto.denied_keys.clone().unwrap();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("keep.txt"), "existing").unwrap();
    let before = support::snapshot(&out);
    let config = support::write_config(work.path(), &support::moto_config(&seed));
    let output = support::moninit(Some(&moto.endpoint))
        .env("AWS_ACCESS_KEY_ID", key)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .args(["render", "--config"])
        .arg(&config)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let text = support::text(&output);
    assert_eq!(output.status.code(), Some(4), "{text}");
    assert!(
        text.contains("s3://moninit-test/monitoring/: ListObjectsV2 failed: AccessDenied")
            || text.contains("ssm:/monitoring/test/: GetParametersByPath failed: AccessDenied"),
        "{text}"
    );
    assert_eq!(support::snapshot(&out), before);
}

#[test]
fn a_rule_file_promtool_rejects_in_agent_mode_is_refused_naming_the_file() {
    let text = fails_and_leaves_output_untouched(
        None,
        local,
        |inputs, _| {
            std::fs::create_dir_all(inputs.join("prometheus/rules/team")).unwrap();
            std::fs::write(
                inputs.join("prometheus/rules/team/alerts.yml"),
                "groups:\n  - name: a\n    rules:\n      - alert: A\n        expr: rate(up[5m]\n",
            )
            .unwrap();
        },
        6,
    );
    assert!(
        text.contains("prometheus/rules/team/alerts.yml: promtool check rules rejected it"),
        "{text}"
    );
}

#[test]
fn invalid_prometheus_config_is_caught_by_promtool() {
    let text = fails_and_leaves_output_untouched(
        None,
        local,
        |inputs, _| {
            std::fs::write(
                inputs.join("prometheus/scrape_configs/bad.yml"),
                "job_name: bad\nscrape_interval: banana\nstatic_configs: [{targets: ['a:1']}]\n",
            )
            .unwrap();
        },
        6,
    );
    assert!(
        text.contains("promtool check config --agent rejected prometheus/prometheus.yml"),
        "{text}"
    );
    assert!(text.contains("banana"), "{text}");
}

#[test]
fn server_mode_installs_rule_files_that_promtool_accepts() {
    let inputs = support::inputs_copy();
    std::fs::create_dir_all(inputs.path().join("prometheus/rules")).unwrap();
    std::fs::write(
        inputs.path().join("prometheus/rules/up.yml"),
        "groups:\n  - name: up\n    rules:\n      - alert: Down\n        expr: up == 0\n",
    )
    .unwrap();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let yaml = format!(
        "{}prometheus:\n  mode: server\n",
        support::file_config(inputs.path())
    );
    let config = support::write_config(work.path(), &yaml);
    let output = support::render(None, &config, &out, &[]);
    assert!(output.status.success(), "{}", support::text(&output));
    assert!(support::read(&out, "prometheus/prometheus.yml")
        .contains("rule_files:\n  - \"rules/up.yml\""));
    assert!(out.join("prometheus/rules/up.yml").exists());
}

#[test]
fn a_scrape_config_promtool_rejects_is_traced_to_its_s3_key_job_and_rendered_line() {
    let seed = Seed::examples();
    let moto = Moto::start(&seed);
    let text = fails_and_leaves_output_untouched(
        Some(&moto.endpoint),
        |_| support::moto_config(&seed),
        |_, _| {
            moto.python(
                "boto3.client('s3', **kw).put_object(Bucket='moninit-test', \
                 Key='monitoring/prometheus/scrape_configs/bad.yml', \
                 Body=b'job_name: bad\\nbogus_key: 1\\nstatic_configs: [{targets: [\"a:1\"]}]\\n')",
            );
        },
        6,
    );
    assert!(
        text.contains("field bogus_key not found"),
        "promtool's own words are kept: {text}"
    );
    assert!(
        text.contains(
            "in scrape job `bad` from s3://moninit-test/monitoring/prometheus/scrape_configs/bad.yml"
        ),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.trim_start().starts_with('>')
            && l.contains("| ")
            && l.contains("bogus_key: 1")),
        "the rendered line is quoted: {text}"
    );
    assert!(
        !text.contains("moninit-check-"),
        "a temporary path leaked: {text}"
    );
}

#[test]
fn a_malformed_params_yaml_is_a_render_error_naming_it() {
    let text = fails_and_leaves_output_untouched(
        None,
        local,
        |inputs, _| {
            std::fs::write(inputs.join("params.yaml"), "workspace_id: [\n").unwrap();
        },
        5,
    );
    assert!(text.contains("params.yaml: invalid YAML"), "{text}");
    assert!(text.contains("render: "), "{text}");
}

#[test]
fn a_failed_install_leaves_no_new_directories() {
    let inputs = support::inputs_copy();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    // A dangling link where the grafana directory must go: prometheus/ is created first,
    // then staging fails in grafana/.
    std::os::unix::fs::symlink("/nonexistent/moninit", out.join("grafana")).unwrap();
    let before = support::snapshot(&out);
    let config = support::write_config(work.path(), &support::file_config(inputs.path()));
    let output = support::render(None, &config, &out, &[]);
    let text = support::text(&output);
    assert_eq!(output.status.code(), Some(7), "{text}");
    assert!(text.contains("grafana"), "{text}");
    assert_eq!(
        support::snapshot(&out),
        before,
        "the failed install changed the tree"
    );
}

#[test]
fn a_rule_file_promtool_rejects_is_named_as_itself_not_as_prometheus_yml() {
    let text = fails_and_leaves_output_untouched(
        None,
        |dir| format!("{}prometheus:\n  mode: server\n", local(dir)),
        |inputs, _| {
            std::fs::create_dir_all(inputs.join("prometheus/rules")).unwrap();
            std::fs::write(
                inputs.join("prometheus/rules/up.yml"),
                "groups:\n  - name: up\n    rules:\n      - alert: Down\n        expr: up ==\n",
            )
            .unwrap();
        },
        6,
    );
    assert!(
        text.contains("in the rule file prometheus/rules/up.yml from")
            && text.contains("prometheus/rules/up.yml"),
        "{text}"
    );
    assert!(!text.contains("in scrape job"), "{text}");
}
