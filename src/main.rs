//! Thin entry point: parse the command line, start logging, run the library, map the error
//! to an exit code. Everything else lives in the library so tests can call it.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

use moninit::cli::{Cli, Command};

/// mimalloc (v2, without transparent huge pages): against glibc's malloc it cuts the proxy's
/// CPU per small request by about a fifth and keeps the memory of bodies in flight within
/// 1.2 times their size (glibc: 1.5); idle RSS is unchanged. See `scripts/bench proxy`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Raises the soft limit on open files to the hard one, as the Go runtime does: a shell's
/// soft limit of 1024 would make `moninit proxy` stall (and warn in a loop) past 1000 idle
/// connections. The systemd unit raises it already; by hand, this does.
fn raise_open_files_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    raise_open_files_limit();
    let verbose = matches!(&cli.command, Command::Proxy(args) if args.verbose);
    moninit::logging::init(verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        // Two workers for fetching, supervision and the admin port; the proxy serves on
        // threads of its own (`proxy::server::Threads`).
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("moninit: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Render(args) => {
                moninit::app::render(&args.config.config, args.out, args.diff).await
            }
            Command::Check(args) => moninit::app::check(&args.config).await,
            Command::Doctor(args) => moninit::app::doctor(&args.config.config, args.json).await,
            Command::Amp(moninit::cli::AmpCommand::Sync(args)) => {
                moninit::app::amp_sync(&args.config.config, args.dry_run).await
            }
            Command::Run(args) => moninit::app::run(&args.config.config, args.root).await,
            Command::Proxy(args) => moninit::proxy::standalone::run(&args)
                .await
                .map_err(Into::into),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let message = moninit::secret::mask(&e.to_string());
            // One line per fatal error: the log's when errors are logged (it goes to
            // stderr too), else a plain one.
            if tracing::enabled!(tracing::Level::ERROR) {
                tracing::error!(exit_code = e.exit_code(), "{message}");
            } else {
                eprintln!("moninit: error: {message}");
            }
            ExitCode::from(e.exit_code())
        }
    }
}
