//! What the instance knows about itself, from IMDSv2: region, instance id, availability zone
//! and autoscaling group.
//!
//! IMDS is asked only for what the config leaves `auto`, and not at all when
//! `AWS_EC2_METADATA_DISABLED=true`. Timeouts are short and attempts few: off EC2 (or with the
//! hop limit too low for a container) the service does not answer at all, and boot must not
//! hang on it. A missing region is fatal; a missing instance id or group falls back to the
//! hostname, with a warning, because the node still works (only HA deduplication weakens).

use std::time::Duration;

use super::Error;

/// What the caller needs IMDS for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Needs {
    pub region: bool,
    pub instance_id: bool,
    pub autoscaling_group: bool,
}

impl Needs {
    pub fn any(&self) -> bool {
        self.region || self.instance_id || self.autoscaling_group
    }
}

/// The facts learnt; `None` where not asked for or not available.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    pub region: Option<String>,
    pub instance_id: Option<String>,
    pub availability_zone: Option<String>,
    pub autoscaling_group: Option<String>,
}

/// Whether the standard switch that disables IMDS is set.
pub fn disabled() -> bool {
    std::env::var("AWS_EC2_METADATA_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"))
}

/// Asks IMDSv2 for what `needs` names.
pub async fn discover(needs: Needs) -> Result<Facts, Error> {
    if !needs.any() {
        return Ok(Facts::default());
    }
    if disabled() {
        return if needs.region {
            Err(Error::Imds(
                "region is `auto` but AWS_EC2_METADATA_DISABLED=true; set `region:` in the config"
                    .into(),
            ))
        } else {
            Ok(Facts::default())
        };
    }
    let client = aws_config::imds::Client::builder()
        .connect_timeout(Duration::from_millis(500))
        .read_timeout(Duration::from_secs(1))
        .operation_timeout(Duration::from_secs(3))
        .max_attempts(2)
        .build();
    let get = |path: &'static str| {
        let client = client.clone();
        async move { client.get(path).await.map(|v| v.as_ref().trim().to_owned()) }
    };
    let mut facts = Facts::default();
    // The instance id doubles as the reachability probe: when it fails, nothing else will work.
    match get("/latest/meta-data/instance-id").await {
        Ok(id) => facts.instance_id = Some(id),
        Err(e) => {
            let why = super::chain(&e);
            if needs.region {
                return Err(Error::Imds(format!(
                    "region is `auto` but instance metadata is unreachable ({why}); set `region:` in the config"
                )));
            }
            tracing::warn!(error = %why, "instance metadata unreachable; using the hostname as instance id");
            return Ok(facts);
        }
    }
    if needs.region {
        let az = get("/latest/meta-data/placement/availability-zone")
            .await
            .map_err(|e| {
                Error::Imds(format!(
                    "reading the availability zone: {}",
                    super::chain(&e)
                ))
            })?;
        facts.region = Some(match get("/latest/meta-data/placement/region").await {
            Ok(r) => r,
            Err(_) => region_of_zone(&az).to_owned(),
        });
        facts.availability_zone = Some(az);
    }
    if needs.autoscaling_group {
        match get("/latest/meta-data/tags/instance/aws:autoscaling:groupName").await {
            Ok(g) if !g.is_empty() => facts.autoscaling_group = Some(g),
            _ => tracing::warn!(
                "autoscaling group name not in instance metadata (enable instance metadata tags \
                 in the launch template); `cluster` falls back to the instance id"
            ),
        }
    }
    Ok(facts)
}

/// `us-east-1a` → `us-east-1`; local zones (`us-west-2-lax-1a`) keep their parent region only
/// through the `placement/region` path, which is tried first.
fn region_of_zone(az: &str) -> &str {
    az.trim_end_matches(|c: char| c.is_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_is_the_zone_without_its_letter() {
        assert_eq!(region_of_zone("us-east-1a"), "us-east-1");
        assert_eq!(region_of_zone("eu-central-1c"), "eu-central-1");
    }

    #[tokio::test]
    async fn nothing_needed_means_no_request() {
        assert_eq!(discover(Needs::default()).await.unwrap(), Facts::default());
    }
}
