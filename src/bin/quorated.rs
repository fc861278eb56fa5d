//! `quorated`: the quorate node daemon.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use quorate::config::{Config, DEFAULT_CONFIG_PATH};
use quorate::node::{run, LogReload, StartOptions};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter};

/// glibc's malloc took about 8% of the machine under a 16-client benchmark
/// (3 nodes on 2 cores): the write path allocates many short-lived buffers
/// on several threads. mimalloc's thread-local free lists are cheaper.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The quorate node daemon: one per machine, started by systemd.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Configuration file.
    #[arg(long, default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    /// Start a new primary component from this node (refused when not safe).
    #[arg(long)]
    bootstrap: bool,
    /// Run as an arbitrator (Galera's garbd): vote, keep no database, serve
    /// no clients, never lead. Same as `arbitrator = true` in the config.
    #[arg(long)]
    arbitrator: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("quorated: {e}");
            return ExitCode::from(78); // EX_CONFIG: systemd does not restart-loop on it
        }
    };
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log_level));
    // Behind a reload layer, so SIGHUP can apply a new log_level.
    let (filter, filter_handle) = reload::Layer::new(filter);
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .init();
    let log_reload = LogReload(Arc::new(move |spec: &str| {
        let filter = EnvFilter::try_new(spec).map_err(|e| format!("bad filter {spec:?}: {e}"))?;
        filter_handle
            .reload(filter)
            .map_err(|e| format!("cannot replace the log filter: {e}"))
    }));
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    // 0 keeps tokio's default: one worker per core.
    if config.worker_threads > 0 {
        runtime.worker_threads(config.worker_threads);
    }
    let runtime = match runtime.build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("quorated: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(
        config,
        StartOptions {
            bootstrap: args.bootstrap,
            arbitrator: args.arbitrator,
            config_path: Some(args.config.clone()),
            log_reload: Some(log_reload),
        },
    )) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("quorated stopped: {e}");
            eprintln!("quorated: {e}");
            ExitCode::FAILURE
        }
    }
}
