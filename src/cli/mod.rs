//! The `quorate` admin CLI, in the style of CipherMail's `cfg-cm-cluster`.
//!
//! Every action asks the daemon over the admin socket first and falls back
//! to the files in `data_dir` when the daemon is not running. The decisions
//! (may this node bootstrap, how to start the daemon, when is a start done)
//! are pure functions in [`files`] and [`start`]; the rest is plumbing.

pub mod args;
pub mod demo;
pub mod files;
mod http;
pub mod shell;
pub mod start;
#[cfg(test)]
mod testutil;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

use crate::admin::{self, AdminError, Command, Response};
use crate::config::Config;
use crate::status::{ClusterStatus, BOOTSTRAP_REFUSED_BANNER};

pub use args::{Action, Cli, Sub, TlsCommand};

/// Exit status: success.
pub const EXIT_OK: u8 = 0;
/// Exit status: any error not listed below.
pub const EXIT_ERROR: u8 = 1;
/// Exit status: bad command line (clap's own code).
pub const EXIT_USAGE: u8 = 2;
/// Exit status: `--bootstrap-node` refused because the node is not safe to
/// bootstrap (the banner is printed).
pub const EXIT_BOOTSTRAP_REFUSED: u8 = 3;
/// Exit status: the daemon is not running (or exited while we waited) and
/// the action needs it.
pub const EXIT_NOT_RUNNING: u8 = 4;
/// Exit status: timed out waiting for the node.
pub const EXIT_TIMEOUT: u8 = 5;

/// How long a single admin request may take before the CLI gives up.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Why an action failed; each kind has its own exit status.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The bootstrap guard said no; `main` prints the banner.
    #[error("bootstrap refused: {reason}")]
    BootstrapRefused { reason: String },
    #[error("{0}")]
    NotRunning(String),
    #[error("{0}")]
    Timeout(String),
    #[error("{}", chain_message(.0))]
    Failed(#[from] anyhow::Error),
}

/// The error and its causes, joined by ": ". A cause whose text the message
/// already holds is skipped: many error types print their source inside
/// their own message and also expose it as `source()`.
fn chain_message(e: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if message.contains(&text) {
            continue;
        }
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&text);
    }
    message
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::BootstrapRefused { .. } => EXIT_BOOTSTRAP_REFUSED,
            CliError::NotRunning(_) => EXIT_NOT_RUNNING,
            CliError::Timeout(_) => EXIT_TIMEOUT,
            CliError::Failed(_) => EXIT_ERROR,
        }
    }
}

fn failed(message: impl Into<String>) -> CliError {
    CliError::Failed(anyhow::anyhow!(message.into()))
}

/// Where an action writes: stdout for results, stderr for notes. Tests pass
/// buffers.
pub struct Console<'a> {
    pub out: &'a mut dyn Write,
    pub err: &'a mut dyn Write,
}

impl Console<'_> {
    /// Writes a result line. A closed stdout (`quorate ... | head`) is not
    /// worth failing an action that already did its work.
    fn out(&mut self, text: impl std::fmt::Display) {
        let _ = writeln!(self.out, "{text}");
    }
    fn note(&mut self, text: impl std::fmt::Display) {
        let _ = writeln!(self.err, "{text}");
    }
}

/// Everything an action needs to know about this invocation.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub config: Config,
    pub config_path: PathBuf,
    pub json: bool,
    pub wait: Duration,
    pub no_systemd: bool,
}

impl Ctx {
    fn socket(&self) -> PathBuf {
        self.config.socket_path()
    }

    /// Asks the daemon; `Ok(None)` when it is not running. An error the
    /// daemon reports is an error of the action.
    async fn ask(&self, cmd: Command, timeout: Duration) -> Result<Option<Response>, CliError> {
        match admin::request(&self.socket(), cmd, timeout).await {
            Ok(Response::Error(message)) => Err(failed(format!("quorated: {message}"))),
            Ok(response) => Ok(Some(response)),
            Err(AdminError::NotRunning { .. }) => Ok(None),
            Err(e @ AdminError::Timeout { .. }) => Err(CliError::Timeout(e.to_string())),
            Err(e) => Err(CliError::Failed(e.into())),
        }
    }
}

fn unexpected(cmd: &str, response: &Response) -> CliError {
    failed(format!(
        "unexpected answer from quorated to {cmd}: {response:?}"
    ))
}

/// Entry point of the `quorate` binary.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Prints help/version to stdout and errors to stderr, with
            // clap's own exit status (0 for --help, 2 for usage errors).
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(EXIT_USAGE));
        }
    };
    // Multi-threaded for `quorate bench`, which drives many clients at once.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("quorate: error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    let mut console = Console {
        out: &mut stdout,
        err: &mut stderr,
    };
    match runtime.block_on(run(cli, &mut console)) {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(e) => {
            report(&e, &mut console);
            ExitCode::from(e.exit_code())
        }
    }
}

fn report(e: &CliError, console: &mut Console<'_>) {
    match e {
        CliError::BootstrapRefused { reason } => {
            console.note(BOOTSTRAP_REFUSED_BANNER);
            console.note(format!("quorate: bootstrap refused: {reason}"));
        }
        other => console.note(format!("quorate: error: {other}")),
    }
}

/// Runs one parsed command line.
pub async fn run(cli: Cli, console: &mut Console<'_>) -> Result<(), CliError> {
    if let Some(sub) = cli.command {
        return run_sub(sub, console).await;
    }
    let Some(action) = cli.action.action() else {
        // clap's `action` group requires one flag when there is no subcommand.
        return Err(failed("no action given; see quorate --help"));
    };
    if action == Action::Version {
        console.out(format!("quorate {}", env!("CARGO_PKG_VERSION")));
        return Ok(());
    }
    let config = Config::load(&cli.config).context("cannot load the configuration")?;
    let ctx = Ctx {
        config,
        config_path: cli.config,
        json: cli.json,
        wait: Duration::from_secs(cli.wait),
        no_systemd: cli.no_systemd,
    };
    run_action(action, &ctx, console).await
}

/// Runs one action against the node `ctx` describes.
pub async fn run_action(
    action: Action,
    ctx: &Ctx,
    console: &mut Console<'_>,
) -> Result<(), CliError> {
    match action {
        Action::SafeToBootstrap => files::safe_to_bootstrap(ctx, console).await,
        Action::ForceSafeToBootstrap => files::force_safe_to_bootstrap(ctx, console).await,
        Action::Recover => files::recover(ctx, console).await,
        Action::ShowClusterStatus => files::show_cluster_status(ctx, console).await,
        Action::BootstrapNode => start::bootstrap_node(ctx, console).await,
        Action::RestartNode => start::restart_node(ctx, console).await,
        Action::Members => files::members(ctx, console).await,
        Action::RemoveNode(name) => files::remove_node(ctx, &name, console).await,
        Action::Version => {
            console.out(format!("quorate {}", env!("CARGO_PKG_VERSION")));
            Ok(())
        }
    }
}

async fn run_sub(sub: Sub, console: &mut Console<'_>) -> Result<(), CliError> {
    match sub {
        Sub::Tls {
            command: TlsCommand::Ca { out },
        } => {
            let (cert, key) = crate::tls::write_ca(&out)
                .with_context(|| format!("cannot write the cluster CA into {}", out.display()))?;
            console.out(format!("wrote {}\nwrote {}", cert.display(), key.display()));
            console.note("keep ca.key secret: whoever has it can join nodes to the cluster");
            Ok(())
        }
        Sub::Tls {
            command:
                TlsCommand::Node {
                    name,
                    addrs,
                    ca_dir,
                    out,
                },
        } => {
            let (cert, key) = crate::tls::write_node_cert(&name, &addrs, &ca_dir, &out)
                .with_context(|| {
                    format!(
                        "cannot write the certificate of node {name} into {} (CA from {})",
                        out.display(),
                        ca_dir.display()
                    )
                })?;
            console.out(format!("wrote {}\nwrote {}", cert.display(), key.display()));
            Ok(())
        }
        Sub::Bench(args) => Ok(crate::bench::run_cli(args).await.context("bench failed")?),
        Sub::Demo(args) => demo::run(args, console).await,
        Sub::Shell(args) => shell::run(args, console).await,
    }
}

/// Prints a status as the table, or as JSON with `--json`.
fn print_status(ctx: &Ctx, status: &ClusterStatus, console: &mut Console<'_>) {
    if ctx.json {
        console.out(status_json(status));
    } else {
        console.out(status.render_table().trim_end());
    }
}

/// The `--json` form of a status.
// At merge: `status.to_json()` (being added to `ClusterStatus` by the
// status engineer) replaces the serde form used here.
fn status_json(status: &ClusterStatus) -> serde_json::Value {
    status.to_json()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn exit_codes_are_distinct_and_documented() {
        let codes = [
            EXIT_OK,
            EXIT_ERROR,
            EXIT_USAGE,
            EXIT_BOOTSTRAP_REFUSED,
            EXIT_NOT_RUNNING,
            EXIT_TIMEOUT,
        ];
        assert_eq!(codes, [0, 1, 2, 3, 4, 5]);
        let help = Cli::command().render_long_help().to_string();
        for code in codes {
            assert!(
                help.contains(&format!("\n  {code}  ")),
                "exit status {code} not in --help"
            );
        }
    }

    #[test]
    fn errors_map_to_exit_codes() {
        assert_eq!(
            CliError::BootstrapRefused {
                reason: String::new()
            }
            .exit_code(),
            3
        );
        assert_eq!(CliError::NotRunning(String::new()).exit_code(), 4);
        assert_eq!(CliError::Timeout(String::new()).exit_code(), 5);
        assert_eq!(failed("x").exit_code(), 1);
    }

    #[test]
    fn error_chain_is_printed_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("cannot read {path}: {source}")]
        struct Repeats {
            path: String,
            source: std::io::Error,
        }
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = anyhow::Error::new(Repeats {
            path: "/q.toml".into(),
            source: io,
        })
        .context("cannot load");
        assert_eq!(
            CliError::Failed(e).to_string(),
            "cannot load: cannot read /q.toml: no such file"
        );

        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = anyhow::Error::new(io).context("cannot open x");
        assert_eq!(
            CliError::Failed(e).to_string(),
            "cannot open x: no such file"
        );
    }

    #[test]
    fn refusal_prints_the_banner() {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut console = Console {
            out: &mut out,
            err: &mut err,
        };
        report(
            &CliError::BootstrapRefused {
                reason: "safe_to_bootstrap is 0".into(),
            },
            &mut console,
        );
        let err = String::from_utf8(err).unwrap();
        assert!(err.starts_with(BOOTSTRAP_REFUSED_BANNER), "{err}");
        assert!(err.contains("safe_to_bootstrap is 0"));
        assert!(out.is_empty());
    }

    #[tokio::test]
    async fn version_needs_no_config() {
        let cli = Cli::try_parse_from(["quorate", "--config", "/nonexistent/q.toml", "--version"])
            .unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        run(
            cli,
            &mut Console {
                out: &mut out,
                err: &mut err,
            },
        )
        .await
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("quorate {}\n", env!("CARGO_PKG_VERSION"))
        );
    }

    #[tokio::test]
    async fn missing_config_is_an_error_naming_it() {
        let cli = Cli::try_parse_from(["quorate", "--config", "/nonexistent/q.toml", "--recover"])
            .unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let e = run(
            cli,
            &mut Console {
                out: &mut out,
                err: &mut err,
            },
        )
        .await
        .unwrap_err();
        assert_eq!(e.exit_code(), EXIT_ERROR);
        assert!(e.to_string().contains("/nonexistent/q.toml"), "{e}");
    }
}
