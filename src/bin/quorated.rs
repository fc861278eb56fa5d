//! `quorated`: the quorate node daemon.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use quorate::config::{Config, DEFAULT_CONFIG_PATH};
use quorate::node::{run, StartOptions};

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
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
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
