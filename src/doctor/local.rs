//! What the instance itself must provide: IMDSv2 (when the config leaves something `auto`),
//! and the programs moninit runs, with their versions.

use super::report::Check;
use crate::config::Config;
use crate::programs;
use crate::render::grafana::{DatasourceMode, Enabled};
use crate::render::prometheus::Mode;
use crate::source::imds;

/// IMDSv2: a token and the facts the config leaves `auto`. A token that never comes back,
/// in a container, is the hop limit.
pub async fn imds(config: &Config) -> (Check, imds::Facts) {
    let name = "imds (IMDSv2)";
    let needs = imds::Needs {
        region: config.region == "auto",
        instance_id: true,
        autoscaling_group: true,
    };
    // Only `region: auto` needs IMDS to boot; `cluster`/`replica: auto` fall back to the
    // hostname (and HA deduplication then keys on it).
    let labels = config.imds_needs().any();
    let fallback = "cluster/replica `auto` become the hostname: set them (or allow IMDS) so HA deduplication keys on the instance";
    if imds::disabled() {
        let check = if config.region == "auto" {
            Check::fail(
                name,
                "AWS_EC2_METADATA_DISABLED=true, but `region` is `auto`",
                "set `region:` in the config, or allow IMDS",
            )
        } else if labels {
            Check::warn(name, "disabled (AWS_EC2_METADATA_DISABLED=true)", fallback)
        } else {
            Check::skip(
                name,
                "disabled (AWS_EC2_METADATA_DISABLED=true); the config needs nothing from it",
            )
        };
        return (check, imds::Facts::default());
    }
    match imds::discover(needs).await {
        Ok(facts) if facts.instance_id.is_some() => {
            let group = facts
                .autoscaling_group
                .as_deref()
                .map_or("no autoscaling group tag".to_owned(), |g| format!("group {g}"));
            let evidence = format!(
                "token and metadata answered: instance {}, {group}",
                facts.instance_id.as_deref().unwrap_or_default()
            );
            (Check::pass(name, evidence), facts)
        }
        Ok(facts) if labels => (
            Check::warn(
                name,
                "unreachable (off EC2, or the hop limit in a container)",
                format!(
                    "on EC2: enable the metadata service with tokens (IMDSv2) and, in a container, a hop limit of 2 \
                     (aws ec2 modify-instance-metadata-options --http-endpoint enabled --http-tokens required \
                     --http-put-response-hop-limit 2); off EC2: {fallback}"
                ),
            ),
            facts,
        ),
        Ok(facts) => (
            Check::skip(name, "unreachable (off EC2?); the config needs nothing from it"),
            facts,
        ),
        Err(e) => (
            Check::fail(
                name,
                e.to_string(),
                "in a container the IMDSv2 token needs a hop limit of 2 \
                 (aws ec2 modify-instance-metadata-options --http-put-response-hop-limit 2); or set `region:`",
            ),
            imds::Facts::default(),
        ),
    }
}

/// `prometheus, version 2.42.0+ds (branch: …)` → (2, 42).
fn major_minor(text: &str) -> Option<(u32, u32)> {
    let rest = text.split("version ").nth(1)?;
    let mut parts = rest.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// Prometheus (and promtool): found, and a version that can run the configured mode.
pub fn prometheus(config: &Config) -> Check {
    let name = "prometheus";
    if let Some(pin) = &config.prometheus.archive {
        return Check::pass(
            name,
            format!(
                "pinned archive {} (sha256 {}), provisioned at boot",
                pin.url, pin.sha256
            ),
        );
    }
    let Some(binary) = programs::find_program(&config.prometheus.binary) else {
        return Check::fail(
            name,
            format!("`{}` not found", config.prometheus.binary.display()),
            "pin a release archive (`prometheus.archive`), or install Prometheus (Amazon Linux 2023 packages none)",
        );
    };
    let version = programs::version_output(&binary).unwrap_or_default();
    let first = version.lines().next().unwrap_or_default().to_owned();
    let promtool = programs::find_program(&config.prometheus.promtool).map_or(
        "promtool not found: configs are not checked before install".to_owned(),
        |p| format!("promtool {}", p.display()),
    );
    let evidence = format!("{} ({first}); {promtool}", binary.display());
    match major_minor(&version) {
        Some((2, minor)) if config.prometheus.mode == Mode::Agent && minor < 32 => Check::fail(
            name,
            evidence,
            "agent mode needs Prometheus 2.32 or later (Ubuntu 22.04 ships 2.31): pin a release archive",
        ),
        Some((2, 42)) if first.contains("+ds") => Check::warn(
            name,
            evidence,
            "Debian's 2.42 build has broken SigV4: moninit signs through its proxy, so remote_write works; \
             never configure `sigv4` in Prometheus itself, and prefer a pinned release archive",
        ),
        Some(_) => Check::pass(name, evidence),
        None => Check::warn(name, evidence, "the version could not be read: check the binary"),
    }
}

/// Grafana: found (when it should run), and a data source it can use with AMP.
pub fn grafana(config: &Config) -> Check {
    let name = "grafana";
    let g = &config.grafana;
    if g.enabled == Enabled::False {
        return Check::skip(name, "grafana.enabled: false");
    }
    let plugin = !g.plugins.is_empty();
    let (what, version) = if let Some(pin) = &g.archive {
        (format!("pinned archive {}", pin.url), g.version)
    } else {
        match programs::grafana_binary(g) {
            Ok(Some(binary)) => (
                binary.display().to_string(),
                Some(programs::grafana_version(g)),
            ),
            Ok(None) => {
                return Check::skip(
                    name,
                    "not installed (grafana.enabled: auto): Grafana will not run",
                )
            }
            Err(e) => {
                return Check::fail(
                    name,
                    e.to_string(),
                    "install Grafana, pin `grafana.archive`, or set `grafana.enabled: auto`",
                )
            }
        }
    };
    let evidence = match version {
        Some(v) => format!("{what}, major version {v}"),
        None => format!("{what}, version known after provisioning"),
    };
    if version.unwrap_or(0) >= 13 && g.datasource == DatasourceMode::Native && !plugin {
        return Check::fail(
            name,
            evidence,
            "Grafana 13 removed SigV4 from its core Prometheus data source: pin the \
             grafana-amazonprometheus-datasource plugin (`grafana.plugins`), or set `grafana.datasource: proxy`",
        );
    }
    Check::pass(name, evidence)
}

#[cfg(test)]
mod tests {
    use super::major_minor;

    #[test]
    fn versions_are_read_from_prometheus_version_output() {
        assert_eq!(
            major_minor("prometheus, version 2.42.0+ds (branch: debian/sid)"),
            Some((2, 42))
        );
        assert_eq!(
            major_minor("prometheus, version 3.5.0 (branch: HEAD)"),
            Some((3, 5))
        );
        assert_eq!(major_minor("garbage"), None);
    }
}
