//! What moninit changes in AWS, when configured to: AMP's rule groups namespaces and
//! Alertmanager definition (`amp.sync`), and this instance's health in its autoscaling group
//! (`autoscaling.report_unhealthy`).
//!
//! The sync is proven with its read calls (the ones a no-op sync makes) and its plan; its
//! write calls are proven by the first sync, which names any action it is denied. The group
//! is proven with the call itself, `SetInstanceHealth(Healthy)` on this instance, respecting
//! the grace period: doctor runs before or during a healthy boot, where that changes nothing.

use super::access::{Aws, Failure};
use super::report::{grant, Check};

/// `amp.sync`: the reads of a sync, and what it would change.
pub async fn amp_sync(aws: &Aws, workspace: &str, desired: Option<&crate::amp::Desired>) -> Check {
    let name = "amp sync (rules, alertmanager)";
    let client = crate::amp::client::Amp::new(&aws.sdk, workspace);
    let empty = crate::amp::Desired::default();
    let desired = desired.unwrap_or(&empty);
    match client.current(desired).await {
        Ok(current) => {
            let managed = current.namespaces.values().filter(|n| n.managed).count();
            let plan = crate::amp::plan(desired, &current)
                .map(|p| p.to_string().lines().last().unwrap_or_default().to_owned())
                .unwrap_or_else(|e| format!("the sync would fail: {e}"));
            Check::pass(
                name,
                format!(
                    "{} namespaces ({managed} moninit's) readable; {plan} Write permissions are proven by the first sync",
                    current.namespaces.len()
                ),
            )
        }
        Err(crate::amp::Error::Aws {
            operation,
            code,
            message,
            ..
        }) => {
            let resource = format!(
                "arn:aws:aps:{}:{}:workspace/{workspace}",
                aws.region, aws.account
            );
            if code.contains("AccessDenied") || code == "403" {
                Check::fail(
                    name,
                    format!("{operation} denied: {message}"),
                    grant(&operation, &resource),
                )
            } else {
                Check::fail(name, format!("{operation}: {code}: {message}"), "check AMP's control plane endpoint (aps.REGION.amazonaws.com) and the workspace")
            }
        }
        Err(e) => Check::fail(
            name,
            e.to_string(),
            "check AMP's control plane endpoint and the workspace",
        ),
    }
}

/// `autoscaling.report_unhealthy`: `SetInstanceHealth` is allowed on this instance's group.
pub async fn set_instance_health(aws: &Aws, instance: Option<&str>, group: Option<&str>) -> Check {
    let name = "autoscaling SetInstanceHealth";
    let (Some(instance), Some(group)) = (instance, group) else {
        return Check::skip(
            name,
            "no autoscaling group known (off EC2, IMDS disabled, or no aws:autoscaling:groupName instance tag): nothing to report to",
        );
    };
    let client = aws_sdk_autoscaling::Client::new(&aws.sdk);
    let sent = client
        .set_instance_health()
        .instance_id(instance)
        .health_status("Healthy")
        .should_respect_grace_period(true)
        .send()
        .await;
    match sent {
        Ok(_) => Check::pass(name, format!("allowed for {instance} in group {group}")),
        Err(e) => {
            let f = Failure::of(&e);
            if f.denied() {
                Check::fail(
                    name,
                    format!("denied for {instance} in group {group}: {}", f.text()),
                    grant(
                        "autoscaling:SetInstanceHealth",
                        &format!("arn:aws:autoscaling:{}:{}:autoScalingGroup:*:autoScalingGroupName/{group}", aws.region, aws.account),
                    ),
                )
            } else {
                Check::fail(
                    name,
                    f.text(),
                    "or set `autoscaling.report_unhealthy: false`",
                )
            }
        }
    }
}
