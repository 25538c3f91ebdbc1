//! Telling the autoscaling group the truth about this instance.
//!
//! An autoscaling group with EC2 health checks sees a running instance as healthy even when
//! moninit has given up and its monitoring is gone. So when moninit gives up on a child
//! *after a healthy boot* (a crash loop that began on a node that once worked: a full disk, a
//! wedged volume, something a fresh instance would not have), it calls `SetInstanceHealth`
//! with `Unhealthy` (respecting the group's grace period) before it exits, and the group
//! replaces the instance.
//!
//! It never does so for a boot that fails (bad config, inputs, templates, validation: exits
//! 3–7, or a child that never became ready at boot): a new instance would fetch the same
//! inputs and fail the same way, and the group would replace instances forever. Such an
//! instance stays in service, failing loudly in its logs and `systemctl status`.
//!
//! The group is the `aws:autoscaling:groupName` instance tag (IMDS), else
//! `DescribeAutoScalingInstances`; off EC2, or outside any group, there is nothing to tell.

use std::time::Duration;

use serde::Deserialize;

use crate::source::{self, imds};

/// The `autoscaling:` section.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Mark this instance `Unhealthy` in its autoscaling group when moninit gives up on a
    /// child after a healthy boot.
    pub report_unhealthy: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            report_unhealthy: true,
        }
    }
}

/// The longest the report may hold up moninit's exit.
const DEADLINE: Duration = Duration::from_secs(20);

/// What happened to the report, for the log and for tests.
#[derive(Debug, PartialEq, Eq)]
pub enum Reported {
    /// `SetInstanceHealth(Unhealthy)` was accepted for this instance in this group.
    Unhealthy { instance: String, group: String },
    /// Nothing to tell: why.
    Skipped(String),
}

/// Marks this instance unhealthy in its autoscaling group, because of `reason`. Never fails
/// the caller: moninit is exiting anyway, so errors are logged and returned as text.
pub async fn report_unhealthy(
    region: &str,
    known: &imds::Facts,
    reason: &str,
) -> Result<Reported, String> {
    match tokio::time::timeout(DEADLINE, report(region, known, reason)).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "SetInstanceHealth did not finish within {} s",
            DEADLINE.as_secs()
        )),
    }
}

async fn report(region: &str, known: &imds::Facts, reason: &str) -> Result<Reported, String> {
    let mut facts = known.clone();
    if facts.instance_id.is_none() || facts.autoscaling_group.is_none() {
        let asked = imds::discover(imds::Needs {
            region: false,
            instance_id: true,
            autoscaling_group: true,
        })
        .await
        .map_err(|e| e.to_string())?;
        facts.instance_id = facts.instance_id.or(asked.instance_id);
        facts.autoscaling_group = facts.autoscaling_group.or(asked.autoscaling_group);
    }
    let Some(instance) = facts.instance_id else {
        return Ok(Reported::Skipped(
            "no instance id (not on EC2, or instance metadata disabled)".into(),
        ));
    };
    let sdk = source::aws_config(region).await;
    let client = aws_sdk_autoscaling::Client::new(&sdk);
    let group = match facts.autoscaling_group {
        Some(g) => g,
        None => {
            let out = client
                .describe_auto_scaling_instances()
                .instance_ids(&instance)
                .send()
                .await
                .map_err(|e| {
                    format!(
                        "DescribeAutoScalingInstances for {instance}: {}",
                        source::chain(&e)
                    )
                })?;
            match out
                .auto_scaling_instances()
                .first()
                .and_then(|i| i.auto_scaling_group_name())
            {
                Some(g) => g.to_owned(),
                None => {
                    return Ok(Reported::Skipped(format!(
                        "instance {instance} is not in an autoscaling group"
                    )))
                }
            }
        }
    };
    tracing::warn!(
        instance,
        group,
        reason,
        "marking this instance Unhealthy in its autoscaling group so that it is replaced"
    );
    client
        .set_instance_health()
        .instance_id(&instance)
        .health_status("Unhealthy")
        .should_respect_grace_period(true)
        .send()
        .await
        .map_err(|e| {
            format!(
                "SetInstanceHealth for {instance} in {group}: {}",
                source::chain(&e)
            )
        })?;
    Ok(Reported::Unhealthy { instance, group })
}
