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
    /// The main job: render, then start and supervise the proxy, Prometheus and Grafana.
    Run(RunArgs),
    /// Fetch the inputs, render, validate and install every file under --out.
    Render(RenderArgs),
    /// Fetch the inputs, render and validate; write nothing.
    Check(ConfigArg),
    /// Run the SigV4 signing proxy alone (a native replacement for aws-sigv4-proxy).
    Proxy(Box<ProxyArgs>),
    /// AMP's control plane: rule groups namespaces and the Alertmanager definition.
    #[command(subcommand)]
    Amp(AmpCommand),
    /// Check every permission, endpoint, version and the clock a boot needs; say how to fix each failure.
    Doctor(DoctorArgs),
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum AmpCommand {
    /// Send the inputs' rule files and Alertmanager config to AMP, changing only what differs.
    Sync(AmpSyncArgs),
}

#[derive(Debug, Args)]
pub struct AmpSyncArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Print the plan (what would be created, updated, deleted) and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// aws-sigv4-proxy's core flags, with safer defaults: loopback only, a route table, limits.
#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// AWS service name to sign for.
    #[arg(long, default_value = "aps")]
    pub name: String,
    /// AWS region to sign for (default: AWS_REGION).
    #[arg(long, env = "AWS_REGION")]
    pub region: String,
    /// Upstream host (default for `aps`: aps-workspaces.REGION.amazonaws.com).
    #[arg(long)]
    pub host: Option<String>,
    /// Address to listen on: `127.0.0.1:8005`, or `:8005` (loopback, unlike aws-sigv4-proxy).
    #[arg(long, default_value = "127.0.0.1:8005")]
    pub port: String,
    /// Role to assume for signing.
    #[arg(long)]
    pub role_arn: Option<String>,
    /// External id for --role-arn.
    #[arg(long)]
    pub external_id: Option<String>,
    /// Host to sign (and send) instead of --host.
    #[arg(long)]
    pub sign_host: Option<String>,
    /// Scheme of the upstream.
    #[arg(long, default_value = "https", value_parser = ["https", "http"])]
    pub upstream_url_scheme: String,
    /// Sign with UNSIGNED-PAYLOAD instead of the body's SHA-256.
    #[arg(long)]
    pub unsigned_payload: bool,
    /// Request header to drop before signing (repeatable).
    #[arg(long = "strip", value_name = "HEADER")]
    pub strip: Vec<String>,
    /// Log at debug level.
    #[arg(short = 'v', long)]
    pub verbose: bool,
    /// Allowed route: `METHODS:PATTERN`, e.g. `GET,PUT:/bucket/**` (`{name}` is one path
    /// segment, `**` the rest). Required for services other than `aps`, which has AMP's.
    #[arg(long = "allow-path", value_name = "METHODS:PATTERN")]
    pub allow_path: Vec<String>,
    /// Forward only this AMP workspace.
    #[arg(long)]
    pub workspace: Option<String>,
    /// Listen on a non-loopback address even though anyone who can reach it gets requests signed.
    #[arg(long)]
    pub allow_non_loopback: bool,
    /// Largest request body, in bytes.
    #[arg(long, default_value_t = crate::proxy::Config::DEFAULT_BODY_LIMIT)]
    pub body_limit: usize,
    /// Requests handled at once.
    #[arg(long, default_value_t = crate::proxy::Config::DEFAULT_MAX_CONCURRENT)]
    pub max_concurrent: usize,
    /// Serve /metrics on this loopback address (e.g. 127.0.0.1:9105).
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
}

#[derive(Debug, Args)]
pub struct ConfigArg {
    /// The agent config file.
    #[arg(long, short = 'c', env = "MONINIT_CONFIG", value_name = "FILE", default_value = crate::config::DEFAULT_PATH)]
    pub config: PathBuf,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Move every path moninit writes (rendered config, Prometheus WAL, Grafana data) under
    /// DIR, so it runs unprivileged anywhere.
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
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
