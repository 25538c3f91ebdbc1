//! Alerting for agent mode: rule files and the Alertmanager config from the inputs become
//! AMP's rule groups namespaces and the workspace's Alertmanager definition.
//!
//! Prometheus in agent mode evaluates no rules; AMP does, from what is sent to its control
//! plane. A sync is four steps, and nothing in AMP changes until the first three pass for
//! every file:
//!
//! 1. [`desired`] (pure): the snapshot → one namespace per rule file, named from its path, and
//!    the Alertmanager definition in AMP's format; bad names and collisions name their files;
//! 2. [`check`]: `promtool check rules` on every rule file, `amtool check-config` (when
//!    present) on the Alertmanager config;
//! 3. [`client::Amp::current`] reads what AMP holds (read calls only), and [`plan()`] (pure)
//!    compares: create, update, delete (only namespaces tagged as moninit's), unchanged; a
//!    namespace of the same name that moninit did not create is a collision, not a target;
//! 4. [`client::Amp::apply`] makes the changes and waits for each to become ACTIVE,
//!    reporting AMP's status reason when it does not.
//!
//! One writer by design: `amp.sync: true` on the instances of one group (they push the
//! same content, and a no-op sync only reads), or on none, with `moninit amp sync` in a CI
//! pipeline instead.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

pub mod check;
pub mod client;
pub mod desired;
pub mod follow;
pub mod plan;
mod sync;

pub use desired::{desired, Desired};
pub use plan::{plan, Plan};
pub use sync::{sync, Synced};

/// The tag that marks a namespace as moninit's: only such namespaces are ever deleted.
pub const MANAGED_TAG: (&str, &str) = ("managed-by", "moninit");

/// The `amp:` section.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// In agent mode, send rule files and the Alertmanager config to AMP after boot and after
    /// every applied change. One writer: set it on the instances of one group, or on none
    /// and run `moninit amp sync` from a pipeline.
    pub sync: bool,
    /// Let a sync delete every namespace moninit created when the inputs hold no rule file
    /// (otherwise refused: an emptied `prometheus/rules/` is more often a mistake).
    pub allow_removing_all: bool,
    /// The longest one sync may take, waits for ACTIVE and retries included.
    pub sync_timeout_secs: u64,
    /// amtool, to check the Alertmanager config when it is found (Debian:
    /// `prometheus-alertmanager`); without it the config is checked for shape only.
    pub amtool: PathBuf,
}

impl Config {
    pub const DEFAULT_SYNC_TIMEOUT_SECS: u64 = 300;

    pub fn sync_timeout(&self) -> Duration {
        Duration::from_secs(self.sync_timeout_secs)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.sync_timeout_secs == 0 {
            return Err("amp.sync_timeout_secs: must be positive".into());
        }
        Ok(())
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            sync: false,
            allow_removing_all: false,
            sync_timeout_secs: Self::DEFAULT_SYNC_TIMEOUT_SECS,
            amtool: PathBuf::from("amtool"),
        }
    }
}

/// Why a sync could not be done; every variant names the input file or the AMP resource.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An input file that cannot become what AMP holds (a bad name, a collision, a file
    /// promtool or amtool rejects). Nothing was sent.
    #[error("{origin}: {message}")]
    Input { origin: String, message: String },
    /// AMP (or the way to it) refused or failed a call.
    #[error("{operation} {target}{origin}: {code}: {message}{hint}",
        origin = origin.as_ref().map(|o| format!(" (from {o})")).unwrap_or_default(),
        hint = hint(code, operation, target))]
    Aws {
        /// The IAM action, e.g. `aps:PutRuleGroupsNamespace`.
        operation: String,
        /// What it was called on: `namespace NAME`, `alertmanager definition`, the workspace.
        target: String,
        origin: Option<String>,
        code: String,
        message: String,
    },
    /// A change was accepted, then AMP marked it failed (its status reason says why).
    #[error("{target} (from {origin}) is {status} in AMP: {reason}")]
    Failed {
        target: String,
        origin: String,
        status: String,
        reason: String,
    },
    #[error(
        "the sync did not finish within {secs} s (amp.sync_timeout_secs); still pending: {pending}"
    )]
    Deadline { secs: u64, pending: String },
    #[error("{0}")]
    Setup(String),
}

fn hint(code: &str, operation: &str, target: &str) -> String {
    if code.contains("AccessDenied") || code == "403" {
        format!("\n  the role needs `{operation}` on {target} (see the README's IAM table)")
    } else {
        String::new()
    }
}

impl Error {
    /// Whether a later try could succeed with the same inputs: AMP or the way to it failing
    /// (throttling, AccessDenied being fixed, unreachable, a deadline), or this host (a
    /// checker that could not run). Not bad input, and not content AMP refused: sending it
    /// again would fail again, on every instance.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            Error::Aws { .. } | Error::Deadline { .. } | Error::Setup(_)
        )
    }
}
