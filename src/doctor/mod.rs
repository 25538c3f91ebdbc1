//! `moninit doctor --config FILE`: proves, before a first boot, everything a boot needs from
//! AWS and from the machine, each check with ✓/✗, the evidence, and for each ✗ the exact fix
//! (the IAM action and a statement granting it, the setting to change).
//!
//! Order follows a boot's: the config, IMDSv2, the region, the credential chain, the
//! workspace (exists, ACTIVE; first when the config names it, since its ARN gives the
//! account the fixes' ARNs name), every source (S3 list and read, SSM read and KMS decrypt,
//! local directories), AMP's data plane through the signing proxy (remote_write and query
//! permission, this clock against AWS's), AMP's rules and Alertmanager when `amp.sync` is
//! on, `SetInstanceHealth` when reporting is on, the pinned archives, and the programs with
//! their versions. Each check runs whatever failed before it: one run shows every problem.
//!
//! It never prints a secret: values are never evidence, SecureStrings read are registered as
//! secrets, and the report is masked on its way out ([`report`]).

use std::path::Path;

use crate::config::Config;
use crate::source::{self, ParamValue};

mod access;
mod data_plane;
mod local;
pub mod report;
mod writers;

pub use report::{Check, Report, Status};

/// Runs every check for the config at `config_path`.
pub async fn run(config_path: &Path) -> Result<Report, crate::config::Error> {
    let config = Config::load(config_path)?;
    let mut report = Report {
        config: config_path.display().to_string(),
        ..Default::default()
    };
    report.push(Check::pass(
        "config",
        format!(
            "{} sources, prometheus.mode {:?}, amp.sync {}",
            config.sources.len(),
            config.prometheus.mode,
            config.amp.sync
        ),
    ));
    let (imds, facts) = local::imds(&config).await;
    report.push(imds);
    let region = match config.region(&facts) {
        Ok(region) => {
            report.push(Check::pass("region", region.clone()));
            region
        }
        Err(e) => {
            report.push(Check::fail(
                "region",
                e.to_string(),
                "set `region:` in the config",
            ));
            // Nothing in AWS can be asked without a region; the machine still can.
            report.push(local::prometheus(&config));
            report.push(local::grafana(&config));
            return Ok(report);
        }
    };
    let mut aws = access::Aws {
        sdk: source::aws_config(&region).await,
        region: region.clone(),
        account: "*".into(),
    };
    report.push(aws.credentials().await);
    // A workspace named in the config is checked first: its ARN gives the account, which
    // the fixes' ARNs then name.
    if let Some(ws) = &config.workspace_id {
        report.push(aws.workspace(ws).await);
    }

    // Each source read as boot reads it, overlaid in order: the inputs boot would see (for a
    // workspace id held in the parameters, and for the sync's plan), read once.
    let mut snapshot = Some(source::Snapshot::default());
    for source in &config.sources {
        let (check, fetched) = aws.source(source, &config.fetch).await;
        report.push(check);
        snapshot = match (snapshot, fetched) {
            (Some(mut all), Some(one)) => all.overlay(one).ok().map(|()| all),
            _ => None,
        };
    }
    let from_inputs = snapshot
        .as_ref()
        .and_then(|s| match s.params.get("workspace_id") {
            Some(ParamValue::Plain { value, .. }) => Some(value.clone()),
            _ => None,
        });
    let workspace = config.workspace_id.clone().or(from_inputs);

    match &workspace {
        Some(ws) => {
            if config.workspace_id.is_none() {
                report.push(aws.workspace(ws).await);
            }
            let endpoint = config.amp_endpoint(&region);
            for check in data_plane::probe(&config, &endpoint, &region, ws, &aws.account).await {
                report.push(check);
            }
        }
        None => report.push(Check::fail(
            "workspace",
            "no `workspace_id` in the config, and no `workspace_id` parameter could be read from the sources",
            "set `workspace_id:` in the config, or create the `workspace_id` parameter under the SSM path",
        )),
    }

    let sync = "amp sync (rules, alertmanager)";
    match (&workspace, config.amp.sync) {
        (_, false) => report.push(Check::skip(sync, "amp.sync is off")),
        (None, true) => report.push(Check::skip(sync, "no workspace to check")),
        (Some(ws), true) => {
            let desired = snapshot.as_ref().and_then(|s| crate::amp::desired(s).ok());
            report.push(writers::amp_sync(&aws, ws, desired.as_ref()).await);
        }
    }
    if config.autoscaling.report_unhealthy {
        report.push(
            writers::set_instance_health(
                &aws,
                facts.instance_id.as_deref(),
                facts.autoscaling_group.as_deref(),
            )
            .await,
        );
    } else {
        report.push(Check::skip(
            "autoscaling SetInstanceHealth",
            "autoscaling.report_unhealthy is off",
        ));
    }
    for pin in config.pins() {
        if let crate::artifact::Url::S3 { bucket, key } = &pin.url {
            report.push(aws.archive(&pin.url.to_string(), bucket, key).await);
        }
    }
    report.push(local::prometheus(&config));
    report.push(local::grafana(&config));
    Ok(report)
}
