//! `--bootstrap-node` and `--restart-node`: start the daemon (through
//! systemd when it manages quorated, else detached) and wait for the node.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::files::{bootstrap_guard, read_grastate};
use super::{failed, print_status, unexpected, CliError, Console, Ctx, REQUEST_TIMEOUT};
use crate::admin::{self, AdminError, Command, Response};
use crate::config::DEFAULT_CONFIG_PATH;
use crate::status::{ClusterStatus, ComponentStatus, LocalState};

/// The marker the daemon consumes at start (defined with the daemon).
pub use crate::node::BOOTSTRAP_REQUEST_FILE;
/// Where a daemon started without systemd writes its output, in `data_dir`.
pub const LOG_FILE: &str = "quorated.log";
pub const SYSTEMD_UNIT: &str = "quorated.service";
/// The flag of `quorated` that starts it in bootstrap mode.
pub const QUORATED_BOOTSTRAP_FLAG: &str = "--bootstrap";

/// A node that stays out of the primary component this long after a
/// restart is waiting (for peers or a bootstrap), not still starting.
pub const SETTLE: Duration = Duration::from_secs(3);

const POLL_INTERVAL: Duration = Duration::from_millis(250);
const POLL_TIMEOUT: Duration = Duration::from_secs(2);
/// Status requests cut off in a row (the daemon closed the connection)
/// before the CLI reports the cut itself: a daemon on its way out is gone
/// by the next poll, and its exit is the better report.
const BROKEN_ANSWERS_TOLERATED: u32 = 3;
/// Log lines shown when a started daemon dies.
const LOG_TAIL_LINES: usize = 20;

/// Whether to go through systemd: only when it has a quorated unit and that
/// unit runs the node this `--config` describes (the default file, or one
/// the unit names), so a test or a second node on the machine is never
/// started with the wrong configuration.
pub fn use_systemd(unit_text: Option<&str>, config_path: &Path, no_systemd: bool) -> bool {
    let Some(unit) = unit_text else { return false };
    if no_systemd {
        return false;
    }
    config_path == Path::new(DEFAULT_CONFIG_PATH)
        || config_path.to_str().is_some_and(|p| unit.contains(p))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPlan {
    /// `systemctl restart quorated`.
    Systemctl,
    /// The daemon runs outside systemd; the operator must stop it.
    RefuseRunning { pid: i32 },
    /// Start a detached daemon.
    Spawn,
}

pub fn restart_plan(systemd: bool, running_pid: Option<i32>) -> RestartPlan {
    match (systemd, running_pid) {
        (true, _) => RestartPlan::Systemctl,
        (false, Some(pid)) => RestartPlan::RefuseRunning { pid },
        (false, None) => RestartPlan::Spawn,
    }
}

/// What a start waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goal {
    /// `--bootstrap-node`: the node is Primary.
    Primary,
    /// `--restart-node`: Primary and serving (Synced or Donor), or settled
    /// outside the primary component (waiting for peers or a bootstrap).
    Settled,
}

impl std::fmt::Display for Goal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Goal::Primary => f.write_str("become Primary"),
            Goal::Settled => f.write_str("become Synced or settle in a waiting state"),
        }
    }
}

/// Whether `status` ends the wait; `non_primary_for` is how long the node
/// has been seen outside the primary component without a break.
pub fn goal_reached(goal: Goal, status: &ClusterStatus, non_primary_for: Duration) -> bool {
    let primary = status.cluster_status == ComponentStatus::Primary;
    match goal {
        Goal::Primary => primary,
        Goal::Settled if primary => {
            matches!(status.local_state, LocalState::Synced | LocalState::Donor)
        }
        // A daemon that just started is Disconnected for a moment before it
        // reaches its peers; only a lasting non-Primary state is "waiting".
        Goal::Settled => non_primary_for >= SETTLE,
    }
}

/// systemd's `ActiveState` for a unit that will not come up by itself.
pub fn systemd_gave_up(active_state: &str) -> bool {
    matches!(active_state.trim(), "failed" | "inactive")
}

/// `quorated` beside the running `quorate` (an installed or a build tree),
/// else the one on `PATH`.
pub fn quorated_path(current_exe: Option<&Path>, is_file: impl Fn(&Path) -> bool) -> PathBuf {
    current_exe
        .map(|exe| exe.with_file_name("quorated"))
        .filter(|p| is_file(p))
        .unwrap_or_else(|| PathBuf::from("quorated"))
}

pub fn daemon_args(config_path: &Path, bootstrap: bool) -> Vec<OsString> {
    let mut args = vec![
        OsString::from("--config"),
        config_path.as_os_str().to_owned(),
    ];
    if bootstrap {
        args.push(QUORATED_BOOTSTRAP_FLAG.into());
    }
    args
}

/// The last `n` lines of `text`.
pub fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `--bootstrap-node`.
pub async fn bootstrap_node(ctx: &Ctx, console: &mut Console<'_>) -> Result<(), CliError> {
    match ctx
        .ask(Command::Bootstrap, ctx.wait.max(REQUEST_TIMEOUT))
        .await?
    {
        Some(Response::Bootstrapped { state_uuid }) => {
            console.note(format!(
                "bootstrapped a new primary component (state {state_uuid})"
            ));
            return wait_for_node(ctx, console, Goal::Primary, &mut Watch::Nothing).await;
        }
        Some(Response::BootstrapRefused { reason }) => {
            return Err(CliError::BootstrapRefused { reason })
        }
        Some(other) => return Err(unexpected("Bootstrap", &other)),
        None => {}
    }
    // The daemon is stopped: the guard runs on the files before anything
    // starts, so a refusal leaves them exactly as they were.
    if ctx.config.arbitrator {
        return Err(CliError::BootstrapRefused {
            reason: format!(
                "this node is an arbitrator (arbitrator = true in {}): it holds no database, so a \
                 primary component started from it would have no data. Bootstrap a data node \
                 instead; the arbitrator rejoins it when started with `quorate --restart-node`",
                ctx.config_path.display()
            ),
        });
    }
    let grastate = read_grastate(&ctx.config)?;
    bootstrap_guard(grastate.as_ref()).map_err(|reason| CliError::BootstrapRefused { reason })?;
    let mut watch = if use_systemd(
        systemd_unit_text(ctx).as_deref(),
        &ctx.config_path,
        ctx.no_systemd,
    ) {
        systemd_bootstrap(ctx, console)?
    } else {
        let exe = quorated_path(std::env::current_exe().ok().as_deref(), Path::is_file);
        spawn_daemon(&exe, ctx, true, console)?
    };
    wait_for_node(ctx, console, Goal::Primary, &mut watch).await
}

/// `--restart-node`.
pub async fn restart_node(ctx: &Ctx, console: &mut Console<'_>) -> Result<(), CliError> {
    let systemd = use_systemd(
        systemd_unit_text(ctx).as_deref(),
        &ctx.config_path,
        ctx.no_systemd,
    );
    let running = if systemd {
        None
    } else {
        match admin::daemon_pid(&ctx.config.socket_path()).await {
            Ok(pid) => Some(pid),
            Err(AdminError::NotRunning { .. }) => None,
            Err(e) => return Err(CliError::Failed(e.into())),
        }
    };
    let mut watch = match restart_plan(systemd, running) {
        RestartPlan::Systemctl => {
            console.note(format!("restarting {SYSTEMD_UNIT}"));
            systemctl(&["restart", SYSTEMD_UNIT])?;
            Watch::Systemd
        }
        RestartPlan::RefuseRunning { pid } => {
            return Err(failed(format!(
                "quorated is running (pid {pid}); stop it (SIGTERM) first"
            )));
        }
        RestartPlan::Spawn => {
            let exe = quorated_path(std::env::current_exe().ok().as_deref(), Path::is_file);
            spawn_daemon(&exe, ctx, false, console)?
        }
    };
    wait_for_node(ctx, console, Goal::Settled, &mut watch).await
}

/// What to watch while waiting, to notice a daemon that died instead of
/// waiting out the whole timeout.
enum Watch {
    Nothing,
    Systemd,
    Child {
        child: Child,
        log: PathBuf,
        log_start: u64,
    },
}

impl Watch {
    fn check_alive(&mut self) -> Result<(), CliError> {
        match self {
            Watch::Nothing => Ok(()),
            Watch::Systemd => match systemd_active_state() {
                Some(state) if systemd_gave_up(&state) => Err(CliError::NotRunning(format!(
                    "{SYSTEMD_UNIT} is {}; see journalctl -u quorated",
                    state.trim()
                ))),
                _ => Ok(()),
            },
            Watch::Child { child, log, log_start } => match child.try_wait() {
                Ok(Some(status)) => Err(CliError::NotRunning(format!(
                    "quorated exited ({status}) before it answered on its admin socket; last lines of {}:\n{}",
                    log.display(),
                    read_log_tail(log, *log_start)
                ))),
                Ok(None) => Ok(()),
                Err(e) => Err(failed(format!("cannot check on the started quorated: {e}"))),
            },
        }
    }

    fn log_hint(&self) -> String {
        match self {
            Watch::Nothing => String::new(),
            Watch::Systemd => "; see journalctl -u quorated".into(),
            Watch::Child { log, .. } => format!("; see {}", log.display()),
        }
    }
}

/// Polls the daemon's status until `goal` is reached, the daemon dies or
/// `ctx.wait` runs out; prints the final status.
async fn wait_for_node(
    ctx: &Ctx,
    console: &mut Console<'_>,
    goal: Goal,
    watch: &mut Watch,
) -> Result<(), CliError> {
    let socket = ctx.config.socket_path();
    let deadline = Instant::now() + ctx.wait;
    let mut last: Option<ClusterStatus> = None;
    let mut non_primary_since: Option<Instant> = None;
    let mut broken_in_a_row = 0;
    loop {
        let answer = admin::request(&socket, Command::Status, POLL_TIMEOUT).await;
        if matches!(
            answer,
            Err(AdminError::Protocol { .. } | AdminError::Io { .. })
        ) {
            broken_in_a_row += 1;
        } else {
            broken_in_a_row = 0;
        }
        match answer {
            Ok(Response::Status(status)) => {
                let now = Instant::now();
                let non_primary_for = if status.cluster_status == ComponentStatus::Primary {
                    non_primary_since = None;
                    Duration::ZERO
                } else {
                    now - *non_primary_since.get_or_insert(now)
                };
                if goal_reached(goal, &status, non_primary_for) {
                    print_status(ctx, &status, console);
                    return Ok(());
                }
                last = Some(*status);
            }
            Ok(Response::Error(message)) => return Err(failed(format!("quorated: {message}"))),
            Ok(other) => return Err(unexpected("Status", &other)),
            // Not listening yet, or too busy starting to answer.
            Err(AdminError::NotRunning { .. }) => watch.check_alive()?,
            Err(AdminError::Timeout { .. }) => {}
            // A daemon that refuses to start (a bootstrap refused once it
            // heard its peers) closes the socket as it exits, maybe in the
            // middle of an answer: its exit and log say why, not the cut.
            Err(e @ (AdminError::Protocol { .. } | AdminError::Io { .. })) => {
                watch.check_alive()?;
                if broken_in_a_row >= BROKEN_ANSWERS_TOLERATED {
                    return Err(CliError::Failed(e.into()));
                }
            }
            Err(e) => return Err(CliError::Failed(e.into())),
        }
        if Instant::now() >= deadline {
            if let Some(status) = &last {
                console.note("last status:");
                print_status(ctx, status, console);
            }
            return Err(CliError::Timeout(format!(
                "quorated did not {goal} within {} s; it keeps starting in the background: check with quorate --show-cluster-status{}",
                ctx.wait.as_secs(),
                watch.log_hint()
            )));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Starts `exe` detached from this terminal (own session, stdin closed,
/// output appended to `data_dir/quorated.log`), so it outlives the CLI.
fn spawn_daemon(
    exe: &Path,
    ctx: &Ctx,
    bootstrap: bool,
    console: &mut Console<'_>,
) -> Result<Watch, CliError> {
    let data_dir = &ctx.config.data_dir;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(data_dir)
        .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
    let log = data_dir.join(LOG_FILE);
    let mut log_file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(&log)
        .with_context(|| format!("cannot open log file {}", log.display()))?;
    let log_start = log_file.metadata().map(|m| m.len()).unwrap_or(0);
    // An absolute path, so `ps` and the log show which node this is.
    let config = std::path::absolute(&ctx.config_path).unwrap_or_else(|_| ctx.config_path.clone());
    let args = daemon_args(&config, bootstrap);
    let _ = writeln!(
        log_file,
        "--- quorate: starting {} {} ---",
        exe.display(),
        args.iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let stdout = log_file
        .try_clone()
        .with_context(|| format!("cannot open log file {}", log.display()))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(&args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(log_file);
    // SAFETY: runs in the forked child before exec; setsid(2) is
    // async-signal-safe and the closure allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()
                .map(drop)
                .map_err(std::io::Error::from)
        });
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", exe.display()))?;
    console.note(format!(
        "started quorated{} (pid {}), output in {}",
        if bootstrap { " in bootstrap mode" } else { "" },
        child.id(),
        log.display()
    ));
    Ok(Watch::Child {
        child,
        log,
        log_start,
    })
}

/// Bootstrap through systemd: leave the request for the daemon, then start
/// the unit. A request left behind would bootstrap at the next boot, so it
/// is removed again when the start fails.
fn systemd_bootstrap(ctx: &Ctx, console: &mut Console<'_>) -> Result<Watch, CliError> {
    let marker = ctx.config.data_dir.join(BOOTSTRAP_REQUEST_FILE);
    std::fs::write(
        &marker,
        format!(
            "requested by quorate --bootstrap-node (uid {})\n",
            nix::unistd::getuid()
        ),
    )
    .with_context(|| format!("cannot write bootstrap request {}", marker.display()))?;
    console.note(format!("starting {SYSTEMD_UNIT} in bootstrap mode"));
    if let Err(e) = systemctl(&["start", SYSTEMD_UNIT]) {
        let _ = std::fs::remove_file(&marker);
        return Err(e);
    }
    Ok(Watch::Systemd)
}

fn systemctl(args: &[&str]) -> Result<(), CliError> {
    let status = std::process::Command::new("systemctl")
        .args(args)
        .stdin(Stdio::null())
        .status()
        .context("cannot run systemctl")?;
    if status.success() {
        Ok(())
    } else {
        Err(failed(format!(
            "systemctl {} failed ({status}); see journalctl -u quorated",
            args.join(" ")
        )))
    }
}

/// The text of the quorated unit, `None` when systemd does not know it (or
/// is not there at all).
fn systemd_unit_text(ctx: &Ctx) -> Option<String> {
    if ctx.no_systemd {
        return None;
    }
    systemctl_stdout(&["cat", SYSTEMD_UNIT])
}

fn systemd_active_state() -> Option<String> {
    systemctl_stdout(&["show", "--property=ActiveState", "--value", SYSTEMD_UNIT])
}

/// What `systemctl ARGS` printed, when it succeeded.
fn systemctl_stdout(args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("systemctl")
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The end of what the started daemon wrote (from `start` on, at most the
/// last 64 KiB).
fn read_log_tail(log: &Path, start: u64) -> String {
    const MAX: u64 = 64 * 1024;
    let read = || -> std::io::Result<String> {
        let mut f = std::fs::File::open(log)?;
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(start.max(len.saturating_sub(MAX))))?;
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    match read() {
        Ok(text) => last_lines(&text, LOG_TAIL_LINES),
        Err(e) => format!("(cannot read {}: {e})", log.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{capture, ctx_in, sample_status, FakeDaemon};
    use super::super::{
        status_json, EXIT_BOOTSTRAP_REFUSED, EXIT_ERROR, EXIT_NOT_RUNNING, EXIT_TIMEOUT,
    };
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const UNIT: &str = "[Service]\nExecStart=/usr/bin/quorated --config /srv/q/quorate.toml\n";

    #[test]
    fn systemd_only_for_the_node_it_runs() {
        let default = Path::new(DEFAULT_CONFIG_PATH);
        assert!(use_systemd(Some(UNIT), default, false));
        assert!(use_systemd(
            Some(UNIT),
            Path::new("/srv/q/quorate.toml"),
            false
        ));
        assert!(!use_systemd(
            Some(UNIT),
            Path::new("/tmp/test/quorate.toml"),
            false
        ));
        assert!(!use_systemd(Some(UNIT), default, true), "--no-systemd wins");
        assert!(!use_systemd(None, default, false), "no unit");
    }

    #[test]
    fn restart_plans() {
        assert_eq!(restart_plan(true, None), RestartPlan::Systemctl);
        assert_eq!(restart_plan(true, Some(7)), RestartPlan::Systemctl);
        assert_eq!(
            restart_plan(false, Some(7)),
            RestartPlan::RefuseRunning { pid: 7 }
        );
        assert_eq!(restart_plan(false, None), RestartPlan::Spawn);
    }

    fn status(cluster: ComponentStatus, local: LocalState) -> ClusterStatus {
        ClusterStatus {
            cluster_status: cluster,
            local_state: local,
            ..sample_status()
        }
    }

    #[test]
    fn goals() {
        use ComponentStatus::*;
        use LocalState::*;
        let zero = Duration::ZERO;
        let long = SETTLE;
        for local in [Initialized, Joining, Joiner, Joined, Synced, Donor] {
            assert!(goal_reached(Goal::Primary, &status(Primary, local), zero));
            for cluster in [NonPrimary, Disconnected] {
                assert!(
                    !goal_reached(Goal::Primary, &status(cluster, local), long),
                    "{cluster:?} {local:?}"
                );
                assert!(
                    !goal_reached(Goal::Settled, &status(cluster, local), zero),
                    "just started"
                );
                assert!(!goal_reached(
                    Goal::Settled,
                    &status(cluster, local),
                    SETTLE / 2
                ));
                assert!(
                    goal_reached(Goal::Settled, &status(cluster, local), long),
                    "waiting"
                );
            }
        }
        for (local, done) in [
            (Initialized, false),
            (Joining, false),
            (Joiner, false),
            (Joined, false),
            (Synced, true),
            (Donor, true),
        ] {
            assert_eq!(
                goal_reached(Goal::Settled, &status(Primary, local), long),
                done,
                "{local:?}"
            );
        }
    }

    #[test]
    fn systemd_states() {
        assert!(systemd_gave_up("failed\n"));
        assert!(systemd_gave_up("inactive"));
        assert!(!systemd_gave_up("activating"));
        assert!(!systemd_gave_up("active\n"));
    }

    #[test]
    fn quorated_is_found_beside_quorate_or_on_path() {
        let exe = Path::new("/opt/quorate/bin/quorate");
        assert_eq!(
            quorated_path(Some(exe), |_| true),
            PathBuf::from("/opt/quorate/bin/quorated")
        );
        assert_eq!(
            quorated_path(Some(exe), |_| false),
            PathBuf::from("quorated")
        );
        assert_eq!(quorated_path(None, |_| true), PathBuf::from("quorated"));
    }

    #[test]
    fn daemon_arguments() {
        let p = Path::new("/etc/q.toml");
        assert_eq!(daemon_args(p, false), ["--config", "/etc/q.toml"]);
        assert_eq!(
            daemon_args(p, true),
            ["--config", "/etc/q.toml", "--bootstrap"]
        );
    }

    #[test]
    fn tail_of_a_log() {
        assert_eq!(last_lines("a\nb\nc\n", 2), "b\nc");
        assert_eq!(last_lines("a", 5), "a");
        assert_eq!(last_lines("", 5), "");
    }

    #[tokio::test]
    async fn bootstrap_refused_by_the_daemon_exits_3() {
        let (_dir, ctx) = ctx_in();
        let daemon = FakeDaemon::start(&ctx, |_| Response::BootstrapRefused {
            reason: "safe_to_bootstrap is 0".into(),
        })
        .await;
        let (r, out, _) = capture!(bootstrap_node, &ctx);
        let e = r.unwrap_err();
        assert_eq!(e.exit_code(), EXIT_BOOTSTRAP_REFUSED);
        assert!(
            matches!(&e, CliError::BootstrapRefused { reason } if reason == "safe_to_bootstrap is 0")
        );
        assert!(out.is_empty());
        assert_eq!(daemon.commands(), [Command::Bootstrap]);
    }

    #[tokio::test]
    async fn bootstrap_through_the_daemon_waits_for_primary() {
        let (_dir, mut ctx) = ctx_in();
        ctx.json = true;
        let daemon = FakeDaemon::start(&ctx, |cmd| match cmd {
            Command::Bootstrap => Response::Bootstrapped {
                state_uuid: sample_status().cluster_state_uuid,
            },
            _ => Response::Status(Box::new(sample_status())),
        })
        .await;
        let (r, out, err) = capture!(bootstrap_node, &ctx);
        r.unwrap();
        assert!(
            err.contains("bootstrapped a new primary component"),
            "{err}"
        );
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v, status_json(&sample_status()));
        assert_eq!(daemon.commands(), [Command::Bootstrap, Command::Status]);
    }

    #[tokio::test]
    async fn waiting_times_out_with_exit_5_and_shows_the_last_status() {
        let (_dir, mut ctx) = ctx_in();
        ctx.json = true;
        ctx.wait = Duration::from_millis(300);
        let stuck = status(ComponentStatus::NonPrimary, LocalState::Initialized);
        let _daemon = FakeDaemon::start(&ctx, {
            let stuck = stuck.clone();
            move |cmd| match cmd {
                Command::Bootstrap => Response::Bootstrapped {
                    state_uuid: uuid::Uuid::nil(),
                },
                _ => Response::Status(Box::new(stuck.clone())),
            }
        })
        .await;
        let (r, out, err) = capture!(bootstrap_node, &ctx);
        let e = r.unwrap_err();
        assert_eq!(e.exit_code(), EXIT_TIMEOUT, "{e}");
        assert!(e.to_string().contains("did not become Primary"), "{e}");
        assert!(err.contains("last status:"), "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v, status_json(&stuck));
    }

    #[tokio::test]
    async fn restart_refuses_a_daemon_running_outside_systemd() {
        let (_dir, ctx) = ctx_in();
        let daemon = FakeDaemon::start(&ctx, |_| Response::Done).await;
        let (r, _, _) = capture!(restart_node, &ctx);
        let e = r.unwrap_err();
        assert_eq!(e.exit_code(), EXIT_ERROR);
        // The fake daemon runs in this process, so its pid is ours.
        assert_eq!(
            e.to_string(),
            format!(
                "quorated is running (pid {}); stop it (SIGTERM) first",
                std::process::id()
            )
        );
        assert!(daemon.commands().is_empty());
    }

    /// A stand-in for quorated that logs its arguments and its session, then
    /// dies: the CLI must notice and show the log.
    fn fake_quorated(dir: &Path) -> PathBuf {
        fake_daemon_script(
            dir,
            "echo \"args: $*\"\necho \"sid: $(cut -d' ' -f6 /proc/$$/stat) pid: $$\"\necho 'fatal: boom' >&2\nexit 7",
        )
    }

    /// An executable shell script `body` in `dir`.
    fn fake_daemon_script(dir: &Path, body: &str) -> PathBuf {
        let exe = dir.join("fake-quorated");
        std::fs::write(&exe, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        exe
    }

    /// Starts `exe` in bootstrap mode and waits for a Primary node, which
    /// must not come: the error, and what the CLI said on stderr.
    async fn bootstrap_fails(exe: &Path, ctx: &Ctx, out: &mut Vec<u8>) -> (CliError, String) {
        let mut err = Vec::new();
        let mut console = Console { out, err: &mut err };
        let mut watch = spawn_daemon(exe, ctx, true, &mut console).unwrap();
        let e = wait_for_node(ctx, &mut console, Goal::Primary, &mut watch)
            .await
            .unwrap_err();
        (e, String::from_utf8(err).unwrap())
    }

    #[tokio::test]
    async fn a_started_daemon_that_dies_is_reported_with_its_log() {
        let (dir, ctx) = ctx_in();
        let exe = fake_quorated(dir.path());
        let mut out = Vec::new();
        let (e, err) = bootstrap_fails(&exe, &ctx, &mut out).await;
        assert_eq!(e.exit_code(), EXIT_NOT_RUNNING, "{e}");
        let message = e.to_string();
        assert!(message.contains("exit status: 7"), "{message}");
        assert!(message.contains("fatal: boom"), "{message}");
        let config = ctx.config_path.display().to_string();
        assert!(
            message.contains(&format!("args: --config {config} --bootstrap")),
            "{message}"
        );
        // Detached: the child led its own session (sid == pid).
        let sid_line = message.lines().find(|l| l.starts_with("sid:")).unwrap();
        let words: Vec<&str> = sid_line.split_whitespace().collect();
        assert_eq!(words[1], words[3], "{sid_line}");
        assert!(err.contains("started quorated in bootstrap mode"), "{err}");

        // A second start appends; the report shows only the new run.
        let mut console = Console {
            out: &mut out,
            err: &mut Vec::new(),
        };
        let mut watch = spawn_daemon(&exe, &ctx, false, &mut console).unwrap();
        let e = wait_for_node(&ctx, &mut console, Goal::Settled, &mut watch)
            .await
            .unwrap_err();
        assert_eq!(e.to_string().matches("fatal: boom").count(), 1, "{e}");
        let log = std::fs::read_to_string(ctx.config.data_dir.join(LOG_FILE)).unwrap();
        assert_eq!(log.matches("fatal: boom").count(), 2);
    }

    /// A daemon that refuses to start once it heard its peers closes its
    /// admin socket as it exits, possibly in the middle of a status answer:
    /// the CLI reports the exit and the log's reason, not the cut answer.
    #[tokio::test]
    async fn a_daemon_that_exits_mid_answer_is_reported_by_its_exit() {
        let (dir, ctx) = ctx_in();
        let exe = fake_daemon_script(
            dir.path(),
            "sleep 0.5\necho 'refused: this node has no data' >&2\nexit 3",
        );
        let socket = ctx.config.socket_path();
        std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        // The first status request is cut off unanswered; then nobody listens.
        let cut = tokio::spawn(async move {
            let (conn, _) = listener.accept().await.unwrap();
            drop(conn);
        });
        let (e, _) = bootstrap_fails(&exe, &ctx, &mut Vec::new()).await;
        cut.await.unwrap();
        assert_eq!(e.exit_code(), EXIT_NOT_RUNNING, "{e}");
        let message = e.to_string();
        assert!(message.contains("exit status: 3"), "{message}");
        assert!(message.contains("this node has no data"), "{message}");
    }

    #[tokio::test]
    async fn bootstrap_refused_on_files_leaves_them_unchanged() {
        let (_dir, ctx) = ctx_in();
        std::fs::create_dir_all(&ctx.config.data_dir).unwrap();
        let text = "# GALERA saved state\nversion: 2.1\nuuid:    8348d5ea-5664-11e7-8628-262d8bf5ad3d\nseqno:   4\nsafe_to_bootstrap: 0\n";
        let path = ctx.config.grastate_path();
        std::fs::write(&path, text).unwrap();
        let (r, out, _) = capture!(bootstrap_node, &ctx);
        let e = r.unwrap_err();
        assert_eq!(e.exit_code(), EXIT_BOOTSTRAP_REFUSED);
        assert!(out.is_empty());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
        assert!(
            !ctx.config.data_dir.join(LOG_FILE).exists(),
            "nothing was started"
        );
    }
}
