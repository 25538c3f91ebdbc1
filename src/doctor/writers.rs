//! What moninit changes in AWS, when configured to: AMP's rule groups namespaces and
//! Alertmanager definition (`amp.sync`), and this instance's health in its autoscaling group
//! (`autoscaling.report_unhealthy`).
//!
//! The sync is proven with its read calls (the ones a no-op sync makes) and its plan; its
//! write calls are proven by the first sync, which names any action it is denied. The group
//! is proven with the call itself, `SetInstanceHealth(Healthy)` on this instance, respecting
//! the grace period, and only when the group already sees it healthy
//! (`DescribeAutoScalingInstances` first), where that changes nothing.

use super::access::{Aws, Failure};
use super::report::{grant, Check};

/// `amp.sync`: the read permissions of a sync (each Describe proven on a name that exists or
/// not: 404 is an answer, 403 is not), and what it would change.
pub async fn amp_sync(aws: &Aws, workspace: &str, desired: Option<&crate::amp::Desired>) -> Check {
    let name = "amp sync (rules, alertmanager)";
    let client = crate::amp::client::Amp::new(&aws.sdk, workspace);
    let empty = crate::amp::Desired::default();
    let read = async {
        client.probe_reads().await?;
        client.current(desired.unwrap_or(&empty)).await
    };
    let current = match read.await {
        Ok(current) => current,
        Err(crate::amp::Error::Aws {
            operation,
            code,
            message,
            ..
        }) => {
            let resource =
                if operation.contains("RuleGroupsNamespace") && !operation.contains("List") {
                    format!(
                        "arn:aws:aps:{}:{}:rulegroupsnamespace/{workspace}/*",
                        aws.region, aws.account
                    )
                } else {
                    format!(
                        "arn:aws:aps:{}:{}:workspace/{workspace}",
                        aws.region, aws.account
                    )
                };
            return if code.contains("AccessDenied") || code == "403" {
                Check::fail(
                    name,
                    format!("{operation} denied: {message}"),
                    grant(&operation, &resource),
                )
            } else {
                Check::fail(name, format!("{operation}: {code}: {message}"), "check AMP's control plane endpoint (aps.REGION.amazonaws.com) and the workspace")
            };
        }
        Err(e) => {
            return Check::fail(
                name,
                e.to_string(),
                "check AMP's control plane endpoint and the workspace",
            )
        }
    };
    let managed = current.namespaces.values().filter(|n| n.managed).count();
    let reads = format!(
        "reads allowed: {} namespaces ({managed} moninit's), the alertmanager definition",
        current.namespaces.len()
    );
    let Some(desired) = desired else {
        return Check::warn(
            name,
            format!("{reads}; the inputs could not be read, so there is no plan"),
            "see the sources' checks above",
        );
    };
    match crate::amp::plan(desired, &current) {
        Ok(plan) => Check::pass(
            name,
            format!(
                "{reads}; {} (write permissions are proven by the first sync)",
                plan.to_string().lines().last().unwrap_or_default()
            ),
        ),
        Err(e) => Check::fail(
            name,
            format!("{reads}; the sync would fail: {e}"),
            "rename the rule file, or delete or tag that namespace",
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
    // Healthy is sent only to an instance the group already sees as healthy: to one marked
    // Unhealthy (by moninit giving up, a load balancer or an operator) it would cancel its
    // replacement.
    let described = client
        .describe_auto_scaling_instances()
        .instance_ids(instance)
        .send()
        .await;
    let health = match described {
        Ok(out) => out
            .auto_scaling_instances()
            .first()
            .and_then(|i| i.health_status())
            .unwrap_or_default()
            .to_ascii_uppercase(),
        Err(e) => {
            let f = Failure::of(&e);
            return Check::warn(
                name,
                format!(
                    "not tried: the instance's health could not be read first ({})",
                    f.text()
                ),
                grant("autoscaling:DescribeAutoScalingInstances", "*"),
            );
        }
    };
    if health != "HEALTHY" {
        return Check::warn(
            name,
            format!("not tried: {instance} is {health:?} in group {group}, and SetInstanceHealth(Healthy) would cancel its replacement"),
            "run doctor again on a healthy instance",
        );
    }
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
