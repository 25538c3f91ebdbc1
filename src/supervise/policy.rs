//! Restart decisions, pure: given when a child started and when it exited, restart it after a
//! jittered exponential delay, or give up. No processes, no clock: times are passed in.
//!
//! A run that lasted `healthy_after` or longer resets the backoff: a child that crashes once
//! a day restarts quickly every time. Failures are counted in a sliding `window`; reaching
//! `max_failures` means this instance cannot run its workload, so moninit gives up and exits
//! non-zero for systemd and the autoscaling group to replace it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use serde::Deserialize;

/// The `supervise:` section.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// First restart delay, in seconds (then doubling, with up to +100% jitter).
    pub restart_floor_secs: f64,
    /// Largest restart delay, in seconds (before jitter).
    pub restart_ceiling_secs: f64,
    /// Failures within `failure_window_secs` after which moninit gives up and exits.
    pub max_failures: usize,
    /// The sliding window failures are counted in, in seconds.
    pub failure_window_secs: u64,
    /// A run at least this long (seconds) resets the backoff.
    pub healthy_after_secs: u64,
    /// Seconds a child may take to become ready before it counts as failed.
    pub ready_timeout_secs: u64,
    /// Seconds a child may take to stop after SIGTERM before its process group gets SIGKILL.
    pub stop_timeout_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            restart_floor_secs: 1.0,
            restart_ceiling_secs: 60.0,
            max_failures: 5,
            failure_window_secs: 300,
            healthy_after_secs: 600,
            ready_timeout_secs: 120,
            stop_timeout_secs: 30,
        }
    }
}

impl Config {
    pub fn validate(&self) -> Result<(), String> {
        if !(self.restart_floor_secs > 0.0 && self.restart_ceiling_secs >= self.restart_floor_secs)
        {
            return Err("supervise: need 0 < restart_floor_secs <= restart_ceiling_secs".into());
        }
        if self.max_failures == 0
            || self.failure_window_secs == 0
            || self.ready_timeout_secs == 0
            || self.stop_timeout_secs == 0
        {
            return Err("supervise: max_failures, failure_window_secs, ready_timeout_secs and stop_timeout_secs must be positive".into());
        }
        Ok(())
    }

    pub fn ready_timeout(&self) -> Duration {
        Duration::from_secs(self.ready_timeout_secs)
    }

    pub fn stop_timeout(&self) -> Duration {
        Duration::from_secs(self.stop_timeout_secs)
    }
}

/// What to do after a child exited.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Decision {
    Restart { delay: Duration },
    GiveUp { failures: usize },
}

/// One child's failure history.
pub struct History {
    config: Config,
    failures: VecDeque<Instant>,
    backoff: ExponentialBackoff,
    seed: Option<u64>,
}

impl History {
    pub fn new(config: &Config) -> Self {
        Self::build(config, None)
    }

    /// With a fixed jitter seed, for reproducible tests.
    pub fn with_seed(config: &Config, seed: u64) -> Self {
        Self::build(config, Some(seed))
    }

    fn build(config: &Config, seed: Option<u64>) -> Self {
        History {
            config: config.clone(),
            failures: VecDeque::new(),
            backoff: backoff(config, seed),
            seed,
        }
    }

    /// Records an exit of a run that started at `started` and ended at `now`.
    pub fn exited(&mut self, started: Instant, now: Instant) -> Decision {
        if now.duration_since(started) >= Duration::from_secs(self.config.healthy_after_secs) {
            self.backoff = backoff(&self.config, self.seed);
        }
        let window = Duration::from_secs(self.config.failure_window_secs);
        self.failures.push_back(now);
        while self
            .failures
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            self.failures.pop_front();
        }
        if self.failures.len() >= self.config.max_failures {
            return Decision::GiveUp {
                failures: self.failures.len(),
            };
        }
        let ceiling = Duration::from_secs_f64(self.config.restart_ceiling_secs);
        Decision::Restart {
            delay: self.backoff.next().unwrap_or(ceiling),
        }
    }
}

fn backoff(config: &Config, seed: Option<u64>) -> ExponentialBackoff {
    let mut builder = ExponentialBuilder::new()
        .with_min_delay(Duration::from_secs_f64(config.restart_floor_secs))
        .with_max_delay(Duration::from_secs_f64(config.restart_ceiling_secs))
        .with_factor(2.0)
        .without_max_times()
        .with_jitter();
    if let Some(seed) = seed {
        builder = builder.with_jitter_seed(seed);
    }
    builder.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config {
            restart_floor_secs: 1.0,
            restart_ceiling_secs: 8.0,
            max_failures: 5,
            failure_window_secs: 60,
            healthy_after_secs: 30,
            ..Config::default()
        }
    }

    fn delay(d: Decision) -> Duration {
        match d {
            Decision::Restart { delay } => delay,
            other => panic!("expected a restart, got {other:?}"),
        }
    }

    #[test]
    fn delays_grow_exponentially_with_jitter_up_to_the_ceiling() {
        let mut c = config();
        c.max_failures = 100;
        c.failure_window_secs = 1;
        let mut h = History::with_seed(&c, 7);
        let t0 = Instant::now();
        let mut t = t0;
        let mut delays = Vec::new();
        for _ in 0..6 {
            t += Duration::from_secs(5);
            delays.push(delay(h.exited(t - Duration::from_secs(1), t)));
        }
        let base = [1.0, 2.0, 4.0, 8.0, 8.0, 8.0];
        for (d, b) in delays.iter().zip(base) {
            let s = d.as_secs_f64();
            assert!(
                s >= b && s <= 2.0 * b,
                "delay {s} outside [{b}, {}]",
                2.0 * b
            );
        }
    }

    #[test]
    fn gives_up_after_max_failures_within_the_window() {
        let mut h = History::with_seed(&config(), 1);
        let t0 = Instant::now();
        for i in 0..4 {
            let t = t0 + Duration::from_secs(i);
            assert!(matches!(h.exited(t, t), Decision::Restart { .. }));
        }
        let t = t0 + Duration::from_secs(4);
        assert_eq!(h.exited(t, t), Decision::GiveUp { failures: 5 });
    }

    #[test]
    fn failures_outside_the_window_are_forgotten() {
        let mut h = History::with_seed(&config(), 1);
        let t0 = Instant::now();
        for i in 0..10u64 {
            let t = t0 + Duration::from_secs(i * 20);
            assert!(
                matches!(h.exited(t, t), Decision::Restart { .. }),
                "failure {i}"
            );
        }
    }

    #[test]
    fn a_healthy_run_resets_the_backoff() {
        let mut h = History::with_seed(&config(), 3);
        let t0 = Instant::now();
        let first = delay(h.exited(t0, t0));
        let second = delay(h.exited(t0, t0 + Duration::from_secs(1)));
        assert!(second.as_secs_f64() >= 2.0 && first.as_secs_f64() < 2.0);
        let after_healthy = delay(h.exited(t0, t0 + Duration::from_secs(40)));
        assert!(after_healthy.as_secs_f64() < 2.0, "{after_healthy:?}");
    }
}
