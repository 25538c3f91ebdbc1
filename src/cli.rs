//! The command line: clap structs only.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "moninit",
    version,
    about = "Turns a blank EC2 instance into a disposable monitoring node: \
fetches config from S3/SSM, renders Prometheus and Grafana config, and signs remote_write to AMP"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Fetch the inputs, render, validate and install every file under --out.
    Render(RenderArgs),
    /// Fetch the inputs, render and validate; write nothing.
    Check(ConfigArg),
}

#[derive(Debug, Args)]
pub struct ConfigArg {
    /// The agent config file.
    #[arg(long, short = 'c', env = "MONINIT_CONFIG", value_name = "FILE", default_value = crate::config::DEFAULT_PATH)]
    pub config: PathBuf,
}

#[derive(Debug, Args)]
pub struct RenderArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Directory that receives the rendered files (default: `output.config_dir` of the config).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Show what would change (secrets masked) and write nothing.
    #[arg(long)]
    pub diff: bool,
}
