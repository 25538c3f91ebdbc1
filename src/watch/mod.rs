//! Live configuration: moninit follows its sources after boot.
//!
//! - [`sources`]: cheap rounds over the sources (listings, versions), fetching only what
//!   changed;
//! - [`last_good`]: the last known good inputs, kept on disk for a boot that cannot reach
//!   S3 or SSM;
//! - [`status`]: what `GET /status` shows;
//! - [`Config`]: the `watch:` section; [`next_round`]: when the next round is due.

pub mod last_good;
pub mod sources;
pub mod status;

pub use status::{Failure, Status};

use std::time::Duration;

use serde::Deserialize;

/// The `watch:` section of the agent config.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Seconds between rounds (each jittered by ±20% so a fleet does not poll in step);
    /// 0 turns watching off (SIGHUP still applies the sources at once).
    pub interval_secs: u64,
    /// Apply a snapshot that removes every scrape job or every dashboard (refused otherwise).
    pub allow_removing_all: bool,
    /// How long a new configuration has to prove healthy before it is rolled back.
    pub health_timeout_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            interval_secs: 60,
            allow_removing_all: false,
            health_timeout_secs: 60,
        }
    }
}

/// The wait before the next round: the interval, ±20% at random; `None` when watching is
/// off.
pub fn next_round(config: &Config) -> Option<Duration> {
    if config.interval_secs == 0 {
        return None;
    }
    let base = config.interval_secs as f64;
    Some(Duration::from_secs_f64(
        base * (0.8 + 0.4 * fastrand::f64()),
    ))
}

/// How many scrape jobs and dashboards a snapshot holds (input files under
/// `prometheus/scrape_configs/` and `grafana/dashboards/`).
pub fn counts(snapshot: &crate::source::Snapshot) -> (usize, usize) {
    let count = |dir: &str| snapshot.files.keys().filter(|p| p.starts_with(dir)).count();
    (
        count("prometheus/scrape_configs/"),
        count("grafana/dashboards/"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_are_jittered_within_a_fifth_of_the_interval() {
        let config = Config::default();
        let waits: Vec<Duration> = (0..200).map(|_| next_round(&config).unwrap()).collect();
        assert!(waits
            .iter()
            .all(|w| *w >= Duration::from_secs(48) && *w <= Duration::from_secs(72)));
        assert!(waits.iter().any(|w| *w != waits[0]));
        let off = Config {
            interval_secs: 0,
            ..Config::default()
        };
        assert_eq!(next_round(&off), None);
    }
}
