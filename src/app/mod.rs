//! Boot order, in one place: config → instance facts → fetch → render → validate → install.
//! The one module that knows all the others; each step's errors keep their own type so the
//! exit code says which step failed.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::config::{self, Config};
use crate::install::{self, validate};
use crate::layout::Layout;
use crate::render::{self, OutputFile};
use crate::source::{self, imds};

mod amp_sync;
mod apply;
mod fallback;
mod reload;
mod round;
mod run;
pub use amp_sync::amp_sync;
pub use run::run;

/// Why a command failed. [`Error::exit_code`] is the one mapping to exit codes.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("config: {0}")]
    Config(#[from] config::Error),
    #[error("fetch: {0}")]
    Source(source::Error),
    #[error("render: {0}")]
    Render(#[from] render::Error),
    #[error("validate: {0}")]
    Validate(install::Error),
    #[error("install: {0}")]
    Install(install::Error),
    #[error("{0}")]
    Proxy(#[from] crate::proxy::server::Error),
    #[error("{0}")]
    Supervise(#[from] crate::supervise::Error),
    #[error("{0}")]
    Programs(#[from] crate::programs::Error),
    #[error("program archive: {0}")]
    Artifact(#[from] crate::artifact::Error),
    #[error("amp: {0}")]
    Amp(#[from] crate::amp::Error),
    #[error("doctor: {0} checks failed")]
    Doctor(usize),
    #[error("{path}: {source}")]
    State {
        path: String,
        source: std::io::Error,
    },
}

impl From<source::Error> for Error {
    /// A fetch that worked but brought a malformed parameters file, or parameter names that
    /// cannot form one tree, is the input's fault: a render error (exit 5), like any other
    /// malformed input file. Everything else is the fetch's (exit 4).
    fn from(e: source::Error) -> Self {
        match e {
            source::Error::Malformed { origin, message } => {
                Error::Render(render::Error::Input { origin, message })
            }
            source::Error::Params(message) => Error::Render(render::Error::Input {
                origin: "parameters".into(),
                message,
            }),
            other => Error::Source(other),
        }
    }
}

impl Error {
    /// Documented in the README: 2 usage (clap), 3 config, 4 fetch, 5 render, 6 validation,
    /// 7 install, 8 proxy or admin set-up (port taken, non-loopback bind, no credentials
    /// chain), 9 a child could not be started, made ready or kept running, 10 AMP refused or
    /// failed a sync (`moninit amp sync`), 11 a `moninit doctor` check failed.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_) => 3,
            Error::Source(_) => 4,
            Error::Render(_) => 5,
            Error::Validate(_)
            | Error::Amp(crate::amp::Error::Input { .. } | crate::amp::Error::Setup(_)) => 6,
            Error::Amp(_) => 10,
            Error::Doctor(_) => 11,
            Error::Install(_) => 7,
            Error::Proxy(_) | Error::Supervise(crate::supervise::Error::PortTaken { .. }) => 8,
            Error::Artifact(crate::artifact::Error::Fetch { .. }) => 4,
            Error::Artifact(crate::artifact::Error::Rejected { .. }) => 5,
            Error::Artifact(crate::artifact::Error::Io { .. }) => 7,
            Error::Supervise(_) | Error::Programs(_) | Error::State { .. } => 9,
        }
    }
}

/// Rendered and validated files, ready to install.
pub struct Prepared {
    /// The agent config with the programs as they will run (archive trees applied).
    pub config: Config,
    /// The pinned archives' trees.
    pub programs: crate::artifact::Provisioned,
    pub files: Vec<OutputFile>,
    pub layout: Layout,
    pub identity: render::Identity,
    pub amp_endpoint: String,
    /// (phase, duration) for fetch, render and validate.
    pub phases: Vec<(&'static str, std::time::Duration)>,
    /// The inputs it was rendered from.
    pub snapshot: source::Snapshot,
    /// What AMP should hold (agent mode; checked): rule groups namespaces, Alertmanager.
    pub amp: crate::amp::Desired,
}

/// Fetches, renders and validates for `layout`; writes nothing.
pub async fn prepare(
    config: &Config,
    layout: Layout,
    occasion: source::Occasion,
) -> Result<Prepared, Error> {
    prepare_from(config, layout, occasion, None).await
}

/// [`prepare`], from `inputs` when given (the last known good ones) instead of fetching.
pub async fn prepare_from(
    config: &Config,
    layout: Layout,
    occasion: source::Occasion,
    inputs: Option<source::Snapshot>,
) -> Result<Prepared, Error> {
    let started = Instant::now();
    let facts = imds::discover(config.imds_needs()).await?;
    let region = config.region(&facts)?;
    // One AWS configuration (credentials, endpoints) for the inputs and the archives, which
    // are fetched at the same time, within the same deadline.
    let pins = config.pins();
    let needs_aws = config.sources.iter().any(source::SourceUrl::needs_aws)
        || pins
            .iter()
            .any(|p| matches!(p.url, crate::artifact::Url::S3 { .. }));
    let sdk = if needs_aws {
        Some(source::aws_config(&region).await)
    } else {
        None
    };
    let s3 = sdk.as_ref().map(source::s3::client);
    let store = crate::artifact::store::Store::new(&layout.state_dir);
    let archives = async {
        let provision = crate::artifact::provision(
            config.prometheus.archive.as_ref(),
            config.grafana.archive.as_ref(),
            &config.grafana.plugins,
            &store,
            s3.as_ref(),
            config.fetch.max_archive_bytes,
        );
        match tokio::time::timeout(config.fetch.deadline(), provision).await {
            Ok(r) => r,
            Err(_) => Err(crate::artifact::Error::Fetch {
                url: pins
                    .iter()
                    .map(|p| p.url.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                message: format!(
                    "not downloaded within the {occasion} deadline of {} s (fetch.deadline_secs)",
                    config.fetch.deadline_secs
                ),
            }),
        }
    };
    let snapshot = async {
        match inputs {
            Some(given) => Ok(given),
            None => source::fetch_all(&config.sources, sdk.as_ref(), &config.fetch, occasion).await,
        }
    };
    let (snapshot, programs) = tokio::join!(snapshot, archives);
    let (snapshot, programs) = (snapshot?, programs?);
    let fetched = Instant::now();
    tracing::info!(
        files = snapshot.files.len(),
        archives = pins.len(),
        downloaded = programs.downloaded(),
        ms = fetched.duration_since(started).as_millis() as u64,
        "fetched inputs"
    );
    let mut effective = config.clone();
    programs.apply(&mut effective.prometheus, &mut effective.grafana);
    let config = &effective;

    let hostname = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let identity = config.identity(&region, &facts, &snapshot.params, &hostname)?;
    let grafana_version = crate::programs::grafana_version(&config.grafana);
    let amp_endpoint = config.amp_endpoint(&region);
    let settings = render::Settings {
        identity: &identity,
        sources: &config.sources,
        amp_endpoint: &amp_endpoint,
        proxy_port: config.proxy.port,
        admin_port: config.admin.port,
        prometheus: &config.prometheus,
        grafana: &config.grafana,
        grafana_version,
        amp_plugin: programs.has_plugin(crate::render::grafana::AMP_PLUGIN),
        layout: &layout,
    };
    let render::Rendered { files, job_origins } = render::render(&snapshot, &settings)?;
    let rendered = Instant::now();

    let options = validate::Options {
        promtool: crate::programs::find_program(&config.prometheus.promtool),
        agent: config.prometheus.mode == render::prometheus::Mode::Agent,
        job_origins,
    };
    validate::validate(&files, &options)
        .await
        .map_err(Error::Validate)?;
    let amp = if options.agent {
        let desired = crate::amp::desired(&snapshot)?;
        let amtool = crate::programs::find_program(&config.amp.amtool);
        crate::amp::check::check(&desired, options.promtool.as_deref(), amtool.as_deref()).await?;
        desired
    } else {
        crate::amp::Desired::default()
    };
    let phases = vec![
        ("fetch", fetched.duration_since(started)),
        ("render", rendered.duration_since(fetched)),
        ("validate", rendered.elapsed()),
    ];
    tracing::info!(
        files = files.len(),
        render_ms = rendered.duration_since(fetched).as_millis() as u64,
        validate_ms = rendered.elapsed().as_millis() as u64,
        "rendered and validated"
    );
    Ok(Prepared {
        config: effective.clone(),
        programs,
        files,
        layout,
        identity,
        amp_endpoint,
        phases,
        snapshot,
        amp,
    })
}

/// `moninit render`: prepare, then install under `out` (or show the diff).
pub async fn render(config_path: &Path, out: Option<PathBuf>, diff: bool) -> Result<(), Error> {
    let config = Config::load(config_path)?;
    let mut layout = Layout::new(&config.output);
    if let Some(out) = out {
        layout = layout.with_config_dir(&absolute(&out));
    }
    let prepared = prepare(&config, layout, source::Occasion::Command).await?;
    let root = &prepared.layout.config_dir;
    if diff {
        let text = install::diff(root, &prepared.files).map_err(Error::Install)?;
        if text.is_empty() {
            println!("no changes under {}", root.display());
        } else {
            print!("{text}");
        }
        return Ok(());
    }
    let started = Instant::now();
    let outcome = install::install(root, &prepared.files).map_err(Error::Install)?;
    tracing::info!(
        dir = %root.display(),
        written = outcome.report.written.len(),
        unchanged = outcome.report.unchanged.len(),
        removed = outcome.removed.len(),
        ms = started.elapsed().as_millis() as u64,
        "installed"
    );
    Ok(())
}

/// `moninit check`: prepare and report; write nothing.
pub async fn check(config_path: &Path) -> Result<(), Error> {
    let config = Config::load(config_path)?;
    let prepared = prepare(
        &config,
        Layout::new(&config.output),
        source::Occasion::Command,
    )
    .await?;
    println!("ok: {} files rendered and valid", prepared.files.len());
    Ok(())
}

/// `moninit doctor`: every check, printed; an error (exit 11) when any failed.
pub async fn doctor(config_path: &Path, json: bool) -> Result<(), Error> {
    let report = crate::doctor::run(config_path).await?;
    if json {
        print!("{}", report.json());
    } else {
        print!("{}", report.text());
    }
    match report.count(crate::doctor::Status::Fail) {
        0 => Ok(()),
        failed => Err(Error::Doctor(failed)),
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}
