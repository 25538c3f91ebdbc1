//! moninit turns a blank EC2 instance into a disposable monitoring node.
//!
//! Boot order (see [`app`]):
//!
//! ```text
//! config ─► imds (only what is `auto`) ─► source::fetch_all (S3 ∥ SSM ∥ file, one Snapshot)
//!                                         ∥ artifact::provision (pinned program archives)
//!        ─► render (pure: Snapshot + templates → files in memory)
//!        ─► install::validate (YAML/JSON, Grafana mirrors, promtool)
//!        ─► install (atomic, all or nothing, unchanged files untouched)
//! ```
//!
//! Module map:
//! - [`cli`]: clap structs; [`app`]: the order of steps and the exit-code mapping;
//! - [`config`]: the agent config, composing each module's `Config`;
//! - [`source`]: S3, SSM, local directories and IMDSv2 → [`source::Snapshot`];
//! - [`render`]: Tera templates (built-in, overridable) → [`render::OutputFile`]s;
//! - [`install`]: validation and atomic installation; [`layout`]: where files go;
//! - [`proxy`]: the SigV4 signing proxy; [`secret`]: values that never reach a log;
//! - [`logging`]: the tracing subscriber, which masks secrets in every line;
//! - [`supervise`]: children, readiness with identity, restart policy;
//! - [`amp`]: rule files and the Alertmanager config → AMP (agent mode), with a plan;
//! - [`doctor`]: every permission, endpoint, version and the clock, proven before a boot;
//! - [`asg`]: telling the autoscaling group when this instance cannot recover;
//! - [`artifact`]: Prometheus, Grafana and plugins from pinned, checksummed archives;
//! - `fuzzing`: the fuzz harnesses (cargo-fuzz in `fuzz/`, corpus replayed by the tests).

// One narrowly scoped exception: `supervise::child::die_with_parent` (PR_SET_PDEATHSIG
// between fork and exec), documented where it lives.
#![deny(unsafe_code)]

pub mod admin;
pub mod amp;
pub mod app;
pub mod artifact;
pub mod asg;
pub mod cli;
pub mod config;
pub mod doctor;
#[doc(hidden)]
pub mod fuzzing;
pub mod install;
pub mod layout;
pub mod logging;
pub mod programs;
pub mod proxy;
pub mod render;
pub mod secret;
pub mod signals;
pub mod source;
pub mod supervise;
pub mod systemd;
pub mod watch;
