//! Restart decisions, pure: given how a child's run went, restart it after a jittered
//! exponential delay, or give up. No processes, no clock: times are passed in.
//!
//! What failed decides what happens:
//! - a **fast failure** is a run that never became ready, or ended less than
//!   `fast_failure_secs` after it became ready. `max_failures` fast failures in a row are a
//!   **crash loop**: this instance cannot run its workload, and moninit gives up (exit 9).
//!   "In a row" means no stable run between them, and each run starting within
//!   `failure_window_secs` of the previous failure: the gap is the restart delay, so a run
//!   that spends its whole `ready_timeout_secs` failing still counts, however long that is;
//! - a **sporadic crash** is a run that stayed up at least `fast_failure_secs` after it
//!   became ready (an OOM kill under a cardinality spike, a rare bug). It proves the child
//!   can run here, so it clears the fast-failure count and is restarted, with capped backoff,
//!   for as long as crashes stay sporadic. It never makes moninit give up.
//!
//! A run that lasted `healthy_after_secs` resets the backoff: a child that crashes once a day
//! restarts quickly every time.

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
    /// Fast failures in a row after which moninit gives up and exits.
    pub max_failures: usize,
    /// A run starting more than this many seconds after the previous failure begins a new
    /// count of fast failures.
    pub failure_window_secs: u64,
    /// A run that ends less than this many seconds after becoming ready (or never becomes
    /// ready) is a fast failure; a later crash is sporadic.
    pub fast_failure_secs: u64,
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
            fast_failure_secs: 10,
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
        // The gap between two failures in a row is at most twice the ceiling (jitter).
        if (self.failure_window_secs as f64) < 2.0 * self.restart_ceiling_secs {
            return Err("supervise: failure_window_secs must be at least twice restart_ceiling_secs, or restarts could never count as a loop".into());
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
    Restart { delay: Duration, kind: Failure },
    GiveUp { failures: usize },
}

/// How a run ended, for the decision and for metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Never ready, or gone within `fast_failure_secs` of becoming ready.
    Fast,
    /// Gone after running ready for at least `fast_failure_secs`.
    Sporadic,
}

impl Failure {
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Fast => "fast",
            Failure::Sporadic => "sporadic",
        }
    }
}

/// One run of a child: when it started and, if it did, when it became ready.
#[derive(Clone, Copy, Debug)]
pub struct Run {
    pub started: Instant,
    pub ready_at: Option<Instant>,
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

    /// Records the end, at `now`, of `run`.
    pub fn exited(&mut self, run: Run, now: Instant) -> Decision {
        if now.duration_since(run.started) >= Duration::from_secs(self.config.healthy_after_secs) {
            self.backoff = backoff(&self.config, self.seed);
        }
        let stable = Duration::from_secs(self.config.fast_failure_secs);
        let kind = match run.ready_at {
            Some(ready) if now.duration_since(ready) >= stable => Failure::Sporadic,
            _ => Failure::Fast,
        };
        match kind {
            // It ran well: whatever failed fast before is not a loop any more.
            Failure::Sporadic => self.failures.clear(),
            Failure::Fast => {
                // A run that began long after the previous failure is a fresh start.
                let window = Duration::from_secs(self.config.failure_window_secs);
                if self
                    .failures
                    .back()
                    .is_some_and(|last| run.started.saturating_duration_since(*last) > window)
                {
                    self.failures.clear();
                }
                self.failures.push_back(now);
                if self.failures.len() >= self.config.max_failures {
                    return Decision::GiveUp {
                        failures: self.failures.len(),
                    };
                }
            }
        }
        let ceiling = Duration::from_secs_f64(self.config.restart_ceiling_secs);
        Decision::Restart {
            delay: self.backoff.next().unwrap_or(ceiling),
            kind,
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
            Decision::Restart { delay, .. } => delay,
            other => panic!("expected a restart, got {other:?}"),
        }
    }

    /// A run from `start` that never became ready.
    fn never_ready(start: Instant) -> Run {
        Run {
            started: start,
            ready_at: None,
        }
    }

    /// A run from `start`, ready 1 s later.
    fn ready(start: Instant) -> Run {
        Run {
            started: start,
            ready_at: Some(start + Duration::from_secs(1)),
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
            delays.push(delay(h.exited(never_ready(t - Duration::from_secs(1)), t)));
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
            assert!(matches!(
                h.exited(never_ready(t), t),
                Decision::Restart { .. }
            ));
        }
        let t = t0 + Duration::from_secs(4);
        assert_eq!(
            h.exited(never_ready(t), t),
            Decision::GiveUp { failures: 5 }
        );
    }

    #[test]
    fn failures_outside_the_window_are_forgotten() {
        let mut h = History::with_seed(&config(), 1);
        let t0 = Instant::now();
        for i in 0..10u64 {
            let t = t0 + Duration::from_secs(i * 70);
            assert!(
                matches!(h.exited(never_ready(t), t), Decision::Restart { .. }),
                "failure {i}"
            );
        }
    }

    /// Each run waits its whole readiness deadline (120 s by default) before failing: five
    /// of them take ten minutes, longer than the window, and are still a crash loop.
    #[test]
    fn runs_that_each_time_out_on_readiness_are_a_crash_loop() {
        let c = Config::default();
        let mut h = History::with_seed(&c, 2);
        let mut t = Instant::now();
        let mut last = None;
        for _ in 0..5 {
            let run = never_ready(t);
            t += Duration::from_secs(c.ready_timeout_secs);
            last = Some(h.exited(run, t));
            t += Duration::from_secs(2);
        }
        assert_eq!(last, Some(Decision::GiveUp { failures: 5 }));
    }

    #[test]
    fn a_healthy_run_resets_the_backoff() {
        let mut h = History::with_seed(&config(), 3);
        let t0 = Instant::now();
        let first = delay(h.exited(never_ready(t0), t0));
        let second = delay(h.exited(never_ready(t0), t0 + Duration::from_secs(1)));
        assert!(second.as_secs_f64() >= 2.0 && first.as_secs_f64() < 2.0);
        let after_healthy = delay(h.exited(ready(t0), t0 + Duration::from_secs(40)));
        assert!(after_healthy.as_secs_f64() < 2.0, "{after_healthy:?}");
    }

    /// Kills spaced like the OOM killer's under a cardinality spike: each run was ready and
    /// served for a while. However many, moninit keeps restarting.
    #[test]
    fn sporadic_crashes_after_ready_runs_never_give_up() {
        let mut h = History::with_seed(&config(), 5);
        let mut t = Instant::now();
        for i in 0..50 {
            let run = ready(t);
            t += Duration::from_secs(20);
            match h.exited(run, t) {
                Decision::Restart { kind, delay } => {
                    assert_eq!(kind, Failure::Sporadic, "crash {i}");
                    assert!(delay <= Duration::from_secs(16), "{delay:?}");
                    t += delay;
                }
                other => panic!("crash {i}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_child_dying_seconds_after_ready_is_a_crash_loop() {
        let mut h = History::with_seed(&config(), 5);
        let mut t = Instant::now();
        let mut decisions = Vec::new();
        for _ in 0..5 {
            let run = ready(t);
            t += Duration::from_secs(3);
            decisions.push(h.exited(run, t));
            t += Duration::from_secs(1);
        }
        assert!(decisions[..4].iter().all(|d| matches!(
            d,
            Decision::Restart {
                kind: Failure::Fast,
                ..
            }
        )));
        assert_eq!(decisions[4], Decision::GiveUp { failures: 5 });
    }

    #[test]
    fn a_sporadic_crash_breaks_a_run_of_fast_failures() {
        let mut h = History::with_seed(&config(), 9);
        let mut t = Instant::now();
        for round in 0..3 {
            for _ in 0..4 {
                assert!(
                    matches!(h.exited(never_ready(t), t), Decision::Restart { .. }),
                    "round {round}"
                );
                t += Duration::from_secs(1);
            }
            let run = ready(t);
            t += Duration::from_secs(15);
            assert!(matches!(
                h.exited(run, t),
                Decision::Restart {
                    kind: Failure::Sporadic,
                    ..
                }
            ));
        }
    }
}
