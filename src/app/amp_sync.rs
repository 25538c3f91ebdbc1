//! `moninit amp sync`: the inputs' rule files and Alertmanager config → AMP, from a pipeline
//! or by hand, with `--dry-run` printing the plan and changing nothing.
//!
//! The inputs go through the same fetch, render and checks as a boot, so what a pipeline
//! sends is exactly what an instance would accept.

use std::path::Path;

use super::{prepare, Error};
use crate::amp;
use crate::config::Config;
use crate::layout::Layout;
use crate::render::prometheus::Mode;
use crate::source;

pub async fn amp_sync(config_path: &Path, dry_run: bool) -> Result<(), Error> {
    let config = Config::load(config_path)?;
    if config.prometheus.mode != Mode::Agent {
        return Err(amp::Error::Setup(
            "`prometheus.mode` is `server`: Prometheus evaluates the rule files itself, and \
             nothing is sent to AMP (amp sync is for agent mode)"
                .into(),
        )
        .into());
    }
    let prepared = prepare(
        &config,
        Layout::new(&config.output),
        source::Occasion::Command,
    )
    .await?;
    let identity = &prepared.identity;
    let sdk = source::aws_config(&identity.region).await;
    let client = amp::client::Amp::new(&sdk, &identity.workspace_id);
    let synced = amp::sync(&client, &prepared.amp, &config.amp, dry_run, |plan| {
        println!(
            "AMP workspace {} in {}:\n{plan}",
            identity.workspace_id, identity.region
        )
    })
    .await?;
    if dry_run {
        println!("Dry run: nothing was changed.");
    } else if synced.applied {
        println!(
            "Applied: every change is ACTIVE in AMP ({} read and {} write calls).",
            synced.reads, synced.writes
        );
    } else {
        println!("Nothing to change ({} read calls).", synced.reads);
    }
    Ok(())
}
