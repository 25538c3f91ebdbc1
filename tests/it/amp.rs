//! `moninit amp sync` against moto's AMP control plane (rule groups namespaces) and the
//! Alertmanager definition stand-in beside it (signatures checked with botocore).

use crate::support::{self, Moto, Seed};

const NODE_RULES: &str = "groups:\n  - name: node\n    rules:\n      - alert: NodeDown\n        expr: up{job=\"node\"} == 0\n        for: 5m\n";
const APP_RULES: &str = "groups:\n  - name: app\n    rules:\n      - record: job:up:sum\n        expr: sum by (job) (up)\n";
const AM_CONFIG: &str = "route:\n  receiver: default\nreceivers:\n  - name: default\n    sns_configs:\n      - topic_arn: arn:aws:sns:us-east-1:123456789012:alerts\n        sigv4:\n          region: us-east-1\ntemplates:\n  - default.tmpl\n";
const AM_TEMPLATE: &str =
    "{{ define \"sns.default.message\" }}{{ .CommonAnnotations.summary }}{{ end }}\n";

struct Rig {
    moto: Moto,
    workspace: String,
    inputs: tempfile::TempDir,
    dir: tempfile::TempDir,
}

impl Rig {
    fn new() -> Rig {
        let moto = Moto::start(&Seed {
            amp_workspace: true,
            ..Default::default()
        });
        let workspace = moto.amp_workspace.clone().expect("workspace");
        let inputs = support::inputs_copy();
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            "{}workspace_id: {workspace}\n",
            support::file_config(inputs.path())
        );
        support::write_config(dir.path(), &config);
        Rig {
            moto,
            workspace,
            inputs,
            dir,
        }
    }

    fn put(&self, relative: &str, text: &str) {
        let path = self.inputs.path().join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    /// `alertmanager.yml` with the template it names.
    fn alertmanager(&self, config: &str) {
        self.put("alertmanager/alertmanager.yml", config);
        self.put("alertmanager/templates/default.tmpl", AM_TEMPLATE);
    }

    /// The config with `amp.sync_timeout_secs` set; its path.
    fn with_sync_timeout(&self, secs: u64) -> std::path::PathBuf {
        let config = self.dir.path().join("moninit.yaml");
        let text = std::fs::read_to_string(&config).unwrap();
        std::fs::write(
            &config,
            format!("{text}amp:\n  sync_timeout_secs: {secs}\n"),
        )
        .unwrap();
        config
    }

    fn remove(&self, relative: &str) {
        std::fs::remove_file(self.inputs.path().join(relative)).unwrap();
    }

    fn origin(&self, relative: &str) -> String {
        self.inputs.path().join(relative).display().to_string()
    }

    fn sync(&self, extra: &[&str]) -> (i32, String) {
        let out = support::moninit(Some(&self.moto.endpoint))
            .args(["amp", "sync", "--config"])
            .arg(self.dir.path().join("moninit.yaml"))
            .args(extra)
            .output()
            .unwrap();
        (out.status.code().unwrap_or(-1), support::text(&out))
    }

    /// name → (tags, data) of every namespace in the workspace, as boto3 sees them.
    fn namespaces(&self) -> serde_json::Value {
        let out = self.moto.python(&format!(
            "c = boto3.client('amp', **kw)\nout = {{}}\n\
             for n in c.list_rule_groups_namespaces(workspaceId='{ws}')['ruleGroupsNamespaces']:\n\
             \x20   d = c.describe_rule_groups_namespace(workspaceId='{ws}', name=n['name'])['ruleGroupsNamespace']\n\
             \x20   out[n['name']] = {{'tags': d.get('tags', {{}}), 'data': d['data'].decode()}}\n\
             print(json.dumps(out))",
            ws = self.workspace
        ));
        serde_json::from_str(&out).unwrap()
    }

    /// Creates a namespace as someone else would: without moninit's tag.
    fn create_foreign(&self, name: &str, data: &str) {
        self.moto.python(&format!(
            "boto3.client('amp', **kw).create_rule_groups_namespace(workspaceId='{}', name='{name}', data={data:?}.encode())",
            self.workspace
        ));
    }

    /// API calls moto served since the last reset (by method and first path segment).
    fn calls(&self, reset: bool) -> serde_json::Value {
        let method = if reset { "DELETE" } else { "GET" };
        let addr = self
            .moto
            .endpoint
            .trim_start_matches("http://")
            .parse()
            .unwrap();
        let response = support::http::request(addr, method, "/__moninit/calls", &[], b"").unwrap();
        response.json()
    }

    fn alertmanager_received(&self) -> Vec<serde_json::Value> {
        let addr = self
            .moto
            .endpoint
            .trim_start_matches("http://")
            .parse()
            .unwrap();
        let response = support::http::get(addr, "/__moninit/alertmanager").unwrap();
        response.json().as_array().unwrap().clone()
    }
}

fn assert_managed(ns: &serde_json::Value, data: &str) {
    assert_eq!(ns["tags"]["managed-by"], "moninit", "{ns}");
    assert_eq!(ns["data"], data);
}

#[test]
fn sync_creates_one_tagged_namespace_per_rule_file_then_only_reads() {
    let rig = Rig::new();
    rig.put("prometheus/rules/node.yml", NODE_RULES);
    rig.put("prometheus/rules/team/app.yaml", APP_RULES);

    let (code, out) = rig.sync(&[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!(
            "+ create rule groups namespace `node` from {}",
            rig.origin("prometheus/rules/node.yml")
        )),
        "{out}"
    );
    assert!(
        out.contains("+ create rule groups namespace `team.app`"),
        "{out}"
    );
    assert!(
        out.contains("Plan: 2 to create, 0 to update, 0 to delete, 0 unchanged."),
        "{out}"
    );
    let namespaces = rig.namespaces();
    assert_eq!(namespaces.as_object().unwrap().len(), 2, "{namespaces}");
    assert_managed(&namespaces["node"], NODE_RULES);
    assert_managed(&namespaces["team.app"], APP_RULES);

    rig.calls(true);
    let (code, out) = rig.sync(&[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("Plan: 0 to create, 0 to update, 0 to delete, 2 unchanged."),
        "{out}"
    );
    assert!(out.contains("Nothing to change"), "{out}");
    let calls = rig.calls(false);
    let amp_calls: Vec<_> = calls
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| k.ends_with(" workspaces"))
        .collect();
    assert!(!amp_calls.is_empty(), "{calls}");
    assert!(
        amp_calls.iter().all(|k| k.starts_with("GET ")),
        "a no-op sync wrote: {calls}"
    );
}

#[test]
fn sync_updates_and_deletes_only_its_own_namespaces_and_dry_run_changes_nothing() {
    let rig = Rig::new();
    rig.create_foreign("theirs", "groups: []\n");
    rig.put("prometheus/rules/node.yml", NODE_RULES);
    rig.put("prometheus/rules/old.yml", APP_RULES);
    assert_eq!(rig.sync(&[]).0, 0);

    let changed = NODE_RULES.replace("5m", "10m");
    rig.put("prometheus/rules/node.yml", &changed);
    rig.remove("prometheus/rules/old.yml");
    let before = rig.namespaces();
    let (code, out) = rig.sync(&["--dry-run"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("~ update rule groups namespace `node`"),
        "{out}"
    );
    assert!(out.contains("(+1 −1 lines)"), "{out}");
    assert!(
        out.contains(
            "- delete rule groups namespace `old` (created by moninit, no longer in the inputs)"
        ),
        "{out}"
    );
    assert!(
        out.contains("Left alone (not created by moninit): theirs."),
        "{out}"
    );
    assert!(out.contains("Dry run: nothing was changed."), "{out}");
    assert_eq!(rig.namespaces(), before);

    let (code, out) = rig.sync(&[]);
    assert_eq!(code, 0, "{out}");
    let after = rig.namespaces();
    assert_managed(&after["node"], &changed);
    assert!(after.get("old").is_none(), "{after}");
    assert_eq!(after["theirs"]["data"], "groups: []\n");
    assert_eq!(after["theirs"]["tags"], serde_json::json!({}));
}

#[test]
fn a_rule_file_promtool_rejects_changes_nothing_in_amp() {
    let rig = Rig::new();
    rig.put("prometheus/rules/good.yml", NODE_RULES);
    rig.put(
        "prometheus/rules/bad.yml",
        "groups:\n  - name: bad\n    rules:\n      - alert: Broken\n        expr: up{ == 0\n",
    );
    let (code, out) = rig.sync(&[]);
    assert_eq!(code, 6, "{out}");
    assert!(
        out.contains(&format!(
            "{}: promtool check rules rejected it",
            rig.origin("prometheus/rules/bad.yml")
        )),
        "{out}"
    );
    assert_eq!(rig.namespaces(), serde_json::json!({}));
}

#[test]
fn a_rule_file_named_like_a_namespace_moninit_did_not_create_is_a_collision() {
    let rig = Rig::new();
    rig.create_foreign("node", "groups: []\n");
    rig.put("prometheus/rules/node.yml", NODE_RULES);
    rig.put("prometheus/rules/other.yml", APP_RULES);
    let (code, out) = rig.sync(&[]);
    assert_eq!(code, 6, "{out}");
    assert!(
        out.contains(&format!(
            "{}: AMP already has a rule groups namespace `node` that moninit did not create",
            rig.origin("prometheus/rules/node.yml")
        )),
        "{out}"
    );
    let namespaces = rig.namespaces();
    assert!(
        namespaces.get("other").is_none(),
        "nothing may be created: {namespaces}"
    );
    assert_eq!(namespaces["node"]["data"], "groups: []\n");
}

#[test]
fn an_emptied_rules_directory_does_not_delete_every_namespace() {
    let rig = Rig::new();
    rig.put("prometheus/rules/node.yml", NODE_RULES);
    assert_eq!(rig.sync(&[]).0, 0);
    rig.remove("prometheus/rules/node.yml");
    let (code, out) = rig.sync(&[]);
    assert_eq!(code, 6, "{out}");
    assert!(out.contains("amp.allow_removing_all"), "{out}");
    assert!(rig.namespaces().get("node").is_some());
}

#[test]
fn the_alertmanager_definition_is_sent_signed_in_amps_format_and_updated_only_when_changed() {
    let rig = Rig::new();
    rig.alertmanager(AM_CONFIG);
    let (code, out) = rig.sync(&[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!(
            "+ create alertmanager definition from {}",
            rig.origin("alertmanager/alertmanager.yml")
        )),
        "{out}"
    );
    let received = rig.alertmanager_received();
    let created: Vec<_> = received.iter().filter(|r| r["method"] == "POST").collect();
    assert_eq!(created.len(), 1, "{received:?}");
    assert!(
        received.iter().all(|r| r["verified"] == true),
        "{received:?}"
    );
    // AMP's documented shape: `template_files` (name → text) and `alertmanager_config` (text).
    let document: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(created[0]["document"].as_str().unwrap()).unwrap();
    assert_eq!(document["alertmanager_config"].as_str(), Some(AM_CONFIG));
    assert_eq!(
        document["template_files"]["default.tmpl"].as_str(),
        Some(AM_TEMPLATE)
    );
    assert_eq!(document.as_mapping().unwrap().len(), 2);

    let (code, out) = rig.sync(&[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("1 unchanged"), "{out}");
    let writes = |r: &[serde_json::Value]| r.iter().filter(|r| r["method"] != "GET").count();
    assert_eq!(writes(&rig.alertmanager_received()), 1);

    rig.put(
        "alertmanager/alertmanager.yml",
        &AM_CONFIG.replace("alerts", "pager"),
    );
    let (code, out) = rig.sync(&[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("~ update alertmanager definition"), "{out}");
    let received = rig.alertmanager_received();
    assert_eq!(received.iter().filter(|r| r["method"] == "PUT").count(), 1);
}

#[test]
fn amp_refusing_a_definition_is_reported_with_its_status_reason_and_file() {
    let rig = Rig::new();
    rig.alertmanager(&AM_CONFIG.replace(
        "receiver: default\n",
        "receiver: default\n  group_by: [stand_in_refuses]\n",
    ));
    let (code, out) = rig.sync(&[]);
    assert_eq!(code, 10, "{out}");
    assert!(out.contains("alertmanager definition"), "{out}");
    assert!(out.contains("CREATION_FAILED"), "{out}");
    assert!(
        out.contains("stand-in: the definition contains stand_in_refuses"),
        "{out}"
    );
    assert!(
        out.contains(&rig.origin("alertmanager/alertmanager.yml")),
        "{out}"
    );
}

#[test]
fn an_alertmanager_config_that_does_not_parse_is_refused_before_anything_is_sent() {
    let rig = Rig::new();
    rig.put("prometheus/rules/node.yml", NODE_RULES);
    rig.put("alertmanager/alertmanager.yml", "route: [\n");
    let (code, out) = rig.sync(&[]);
    assert_eq!(code, 6, "{out}");
    assert!(
        out.contains(&format!(
            "{}: invalid YAML",
            rig.origin("alertmanager/alertmanager.yml")
        )),
        "{out}"
    );
    assert_eq!(rig.namespaces(), serde_json::json!({}));
    assert!(rig.alertmanager_received().is_empty());
}

#[test]
fn access_denied_names_the_action_to_grant() {
    let moto = Moto::start(&Seed {
        amp_workspace: true,
        auth: true,
        ..Default::default()
    });
    let workspace = moto.amp_workspace.clone().unwrap();
    let (key, secret) = moto.denied_keys.clone().unwrap();
    let inputs = support::inputs_copy();
    std::fs::create_dir_all(inputs.path().join("prometheus/rules")).unwrap();
    std::fs::write(inputs.path().join("prometheus/rules/node.yml"), NODE_RULES).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = support::write_config(
        dir.path(),
        &format!(
            "{}workspace_id: {workspace}\n",
            support::file_config(inputs.path())
        ),
    );
    let out = support::moninit(Some(&moto.endpoint))
        .env("AWS_ACCESS_KEY_ID", key)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .args(["amp", "sync", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let text = support::text(&out);
    assert_eq!(out.status.code(), Some(10), "{text}");
    assert!(text.contains("aps:ListRuleGroupsNamespaces"), "{text}");
    assert!(
        text.contains("the role needs `aps:ListRuleGroupsNamespaces`"),
        "{text}"
    );
}

#[test]
fn run_with_amp_sync_sends_the_rules_at_boot_and_each_applied_change_and_a_bad_file_changes_nothing(
) {
    use crate::support::agent::{Agent, Setup};
    use std::time::Duration;
    let rig = Rig::new();
    rig.put("prometheus/rules/node.yml", NODE_RULES);
    let extra = format!(
        "workspace_id: {}\namp:\n  sync: true\nwatch:\n  interval_secs: 1\n",
        rig.workspace
    );
    let mut agent = Agent::start(Setup {
        sources: format!("  - file://{}/\n", rig.inputs.path().display()),
        extra: &extra,
        env: vec![("AWS_ENDPOINT_URL_AMP".into(), rig.moto.endpoint.clone())],
        ..Setup::local()
    });
    agent.wait_ready(Duration::from_secs(30));
    let data = |rig: &Rig| rig.namespaces()["node"]["data"].as_str().map(str::to_owned);
    support::wait_for(
        Duration::from_secs(20),
        Duration::from_millis(200),
        || agent.log_text(),
        || (data(&rig).as_deref() == Some(NODE_RULES)).then_some(()),
    );
    assert_managed(&rig.namespaces()["node"], NODE_RULES);
    let status = support::http::get(agent.admin, "/status").unwrap().json();
    assert_eq!(status["amp_sync"]["ok"], true, "{status}");
    assert!(agent
        .metrics()
        .contains("moninit_amp_syncs_total{result=\"ok\"} 1"));

    // A change the node applies is synced.
    let changed = NODE_RULES.replace("5m", "10m");
    rig.put("prometheus/rules/node.yml", &changed);
    support::wait_for(
        Duration::from_secs(20),
        Duration::from_millis(200),
        || agent.log_text(),
        || (data(&rig).as_deref() == Some(changed.as_str())).then_some(()),
    );

    // A rule file promtool rejects is refused with the rest of the inputs: AMP keeps the
    // last good rules, the node keeps running, /status names the file.
    rig.put(
        "prometheus/rules/node.yml",
        "groups:\n  - name: x\n    rules:\n      - alert: X\n        expr: up{ == 0\n",
    );
    let status = support::wait_for(
        Duration::from_secs(20),
        Duration::from_millis(200),
        || agent.log_text(),
        || {
            let s = support::http::get(agent.admin, "/status").ok()?.json();
            s["last_failure"]["message"]
                .as_str()?
                .contains("promtool check rules")
                .then_some(s)
        },
    );
    assert!(
        status["last_failure"]["message"]
            .as_str()
            .unwrap()
            .contains(&rig.origin("prometheus/rules/node.yml")),
        "{status}"
    );
    assert_eq!(data(&rig).as_deref(), Some(changed.as_str()));
    assert!(support::http::get(agent.admin, "/readyz").unwrap().status == 200);
}

#[test]
fn an_alertmanager_config_amtool_rejects_is_refused_naming_the_file() {
    let rig = Rig::new();
    // The shape is right (route, receivers); the route names a receiver that does not exist.
    rig.put(
        "alertmanager/alertmanager.yml",
        "route:\n  receiver: missing\nreceivers:\n  - name: default\n",
    );
    let (code, out) = rig.sync(&[]);
    assert_eq!(code, 6, "{out}");
    assert!(
        out.contains(&format!(
            "{}: amtool check-config rejected it",
            rig.origin("alertmanager/alertmanager.yml")
        )),
        "{out}"
    );
    assert!(out.contains("missing"), "{out}");
    assert!(rig.alertmanager_received().is_empty());
}

#[test]
fn instances_of_a_group_creating_the_same_definition_at_once_all_succeed() {
    let rig = Rig::new();
    rig.alertmanager(AM_CONFIG);
    let config = rig.with_sync_timeout(20);
    // Started together, they all plan a create; one wins, the others get 409 and update.
    let syncs: Vec<_> = (0..4)
        .map(|_| {
            support::moninit(Some(&rig.moto.endpoint))
                .args(["amp", "sync", "--config"])
                .arg(&config)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for sync in syncs {
        let out = sync.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", support::text(&out));
    }
    let received = rig.alertmanager_received();
    let posts = received.iter().filter(|r| r["method"] == "POST").count();
    assert!(posts >= 1, "{received:?}");
}

#[test]
fn a_change_amp_never_finishes_ends_at_the_deadline_naming_it() {
    let rig = Rig::new();
    rig.alertmanager(&AM_CONFIG.replace(
        "receiver: default\n",
        "receiver: default\n  group_by: [stand_in_stays_pending]\n",
    ));
    rig.with_sync_timeout(3);
    let (code, out) = rig.sync(&[]);
    assert_eq!(code, 10, "{out}");
    assert!(
        out.contains("the sync did not finish within 3 s (amp.sync_timeout_secs); still pending: create alertmanager definition"),
        "{out}"
    );
}
