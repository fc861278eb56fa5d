//! The actions that read or repair the node's state: `--safe-to-bootstrap`,
//! `--force-safe-to-bootstrap`, `--recover`, `--show-cluster-status`. Each
//! asks the daemon first and works on `grastate.dat` / `db.sqlite` when the
//! daemon is not running.

use std::path::PathBuf;

use anyhow::Context;
use uuid::Uuid;

use super::{failed, print_status, unexpected, CliError, Console, Ctx, REQUEST_TIMEOUT};
use crate::admin::{Command, Response};
use crate::config::Config;
use crate::grastate::GrastateFile;
use crate::status::{ClusterStatus, ComponentStatus, LocalState};
use crate::writeset::Position;

/// The replicated database inside `data_dir`.
pub const DB_FILE: &str = "db.sqlite";

pub(crate) fn db_path(config: &Config) -> PathBuf {
    config.data_dir.join(DB_FILE)
}

/// The bootstrap guard on the files: a node that never started (no
/// grastate.dat) may found a new cluster; otherwise safe_to_bootstrap must
/// be 1. `Err` holds the reason for the refusal.
pub fn bootstrap_guard(grastate: Option<&GrastateFile>) -> Result<(), String> {
    match grastate {
        None => Ok(()),
        Some(g) if g.safe_to_bootstrap => Ok(()),
        Some(g) => Err(format!(
            "safe_to_bootstrap is 0 (state {}:{}): another node may hold newer data",
            g.uuid, g.seqno
        )),
    }
}

/// What `--force-safe-to-bootstrap` does to the files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForcePlan {
    /// No grastate.dat: nothing to force (and nothing needed: such a node
    /// may bootstrap anyway).
    Missing,
    AlreadySafe,
    /// Write this state.
    Write(GrastateFile),
}

pub fn force_plan(grastate: Option<GrastateFile>) -> ForcePlan {
    match grastate {
        None => ForcePlan::Missing,
        Some(g) if g.safe_to_bootstrap => ForcePlan::AlreadySafe,
        Some(g) => ForcePlan::Write(GrastateFile {
            safe_to_bootstrap: true,
            ..g
        }),
    }
}

/// The status of a node whose daemon is stopped, from its files: not
/// connected, not ready, no cluster; the position from the database when
/// there is one (it is the truth), else from grastate.dat.
pub fn offline_status(
    config: &Config,
    grastate: Option<&GrastateFile>,
    position: Option<Position>,
) -> ClusterStatus {
    let state_uuid = position
        .map(|p| p.state_uuid)
        .or(grastate.map(|g| g.uuid))
        .unwrap_or(Uuid::nil());
    let last_committed = position
        .map(|p| p.seqno)
        .or(grastate.map(|g| g.seqno))
        .unwrap_or(-1);
    ClusterStatus {
        node_name: config.node_name.clone(),
        cluster_name: config.cluster_name.clone(),
        cluster_conf_id: 0,
        cluster_size: 0,
        cluster_state_uuid: state_uuid,
        cluster_status: ComponentStatus::Disconnected,
        connected: false,
        gcomm_uuid: Uuid::nil(),
        last_committed,
        local_state_uuid: state_uuid,
        ready: false,
        local_state: LocalState::Initialized,
        local_cert_failures: 0,
        incoming_addresses: Vec::new(),
        flow_control_paused: 0.0,
        incarnation: position.map(|p| p.incarnation).unwrap_or(0),
        leader: None,
        safe_to_bootstrap: grastate.is_some_and(|g| g.safe_to_bootstrap),
        peers: Vec::new(),
        fenced: None,
        fence_saved: None,
        not_primary_reason: None,
        arbitrator: false,
    }
}

pub(crate) fn read_grastate(config: &Config) -> Result<Option<GrastateFile>, CliError> {
    Ok(GrastateFile::read(&config.grastate_path()).context("cannot read the node state")?)
}

fn flag(b: bool) -> u8 {
    u8::from(b)
}

fn print_safe(ctx: &Ctx, safe: bool, console: &mut Console<'_>) {
    if ctx.json {
        console.out(serde_json::json!({ "safe_to_bootstrap": flag(safe) }));
    } else {
        console.out(flag(safe));
    }
}

/// `--safe-to-bootstrap`: prints 0 or 1.
pub async fn safe_to_bootstrap(ctx: &Ctx, console: &mut Console<'_>) -> Result<(), CliError> {
    match ctx.ask(Command::SafeToBootstrap, REQUEST_TIMEOUT).await? {
        Some(Response::SafeToBootstrap(safe)) => print_safe(ctx, safe, console),
        Some(other) => return Err(unexpected("SafeToBootstrap", &other)),
        None => match read_grastate(&ctx.config)? {
            Some(g) => print_safe(ctx, g.safe_to_bootstrap, console),
            None => {
                print_safe(ctx, false, console);
                console.note("no grastate.dat: this node has never started");
            }
        },
    }
    Ok(())
}

/// `--force-safe-to-bootstrap`: sets safe_to_bootstrap to 1 and says what
/// changed.
pub async fn force_safe_to_bootstrap(ctx: &Ctx, console: &mut Console<'_>) -> Result<(), CliError> {
    // Ask first so the report can say whether anything changed.
    match ctx.ask(Command::SafeToBootstrap, REQUEST_TIMEOUT).await? {
        Some(Response::SafeToBootstrap(true)) => {
            console.out("safe_to_bootstrap is already 1 (running node); nothing changed");
            return Ok(());
        }
        Some(Response::SafeToBootstrap(false)) => {
            match ctx
                .ask(Command::ForceSafeToBootstrap, REQUEST_TIMEOUT)
                .await?
            {
                Some(Response::Done | Response::SafeToBootstrap(true)) => {
                    console.out("safe_to_bootstrap: 0 -> 1 (running node)");
                    return Ok(());
                }
                Some(other) => return Err(unexpected("ForceSafeToBootstrap", &other)),
                // It stopped between the two requests: do it on the files.
                None => {}
            }
        }
        Some(other) => return Err(unexpected("SafeToBootstrap", &other)),
        None => {}
    }
    let path = ctx.config.grastate_path();
    match force_plan(read_grastate(&ctx.config)?) {
        ForcePlan::Missing => Err(failed(format!(
            "no grastate.dat at {}: this node has never started, so there is nothing to force (it may bootstrap as it is)",
            path.display()
        ))),
        ForcePlan::AlreadySafe => {
            console.out(format!("safe_to_bootstrap is already 1 in {}; nothing changed", path.display()));
            Ok(())
        }
        ForcePlan::Write(g) => {
            g.write_atomic(&path).context("cannot set safe_to_bootstrap")?;
            console.out(format!("safe_to_bootstrap: 0 -> 1 in {}", path.display()));
            console.note(
                "bootstrap this node only if no other node of the cluster runs a primary component: \
                 a forced bootstrap starts a new incarnation and fences the others",
            );
            Ok(())
        }
    }
}

fn print_position(ctx: &Ctx, p: Position, console: &mut Console<'_>) {
    if ctx.json {
        console.out(serde_json::json!({
            "uuid": p.state_uuid,
            "seqno": p.seqno,
            "incarnation": p.incarnation,
        }));
    } else {
        // Galera's --wsrep-recover form.
        console.out(p);
    }
}

/// `--recover`: prints `uuid:seqno` of the local data.
pub async fn recover(ctx: &Ctx, console: &mut Console<'_>) -> Result<(), CliError> {
    match ctx.ask(Command::Recover, REQUEST_TIMEOUT).await? {
        Some(Response::Position(p)) => {
            print_position(ctx, p, console);
            return Ok(());
        }
        Some(other) => return Err(unexpected("Recover", &other)),
        None => {}
    }
    let db = db_path(&ctx.config);
    let nothing = || {
        failed(format!(
            "no database in {}: nothing to recover",
            ctx.config.data_dir.display()
        ))
    };
    if !db.exists() {
        return Err(nothing());
    }
    let position = crate::store::read_position(&db)
        .with_context(|| format!("cannot read the position of {}", db.display()))?
        .ok_or_else(nothing)?;
    print_position(ctx, position, console);
    Ok(())
}

/// `--show-cluster-status`: the wsrep table (or JSON).
/// `--members`: every member and every node seen recently, as the local
/// daemon sees them. Needs the daemon: the membership lives in its Raft state.
pub async fn members(ctx: &Ctx, console: &mut Console<'_>) -> Result<(), CliError> {
    match ctx.ask(Command::Members, REQUEST_TIMEOUT).await? {
        Some(Response::Members(rows)) => {
            if ctx.json {
                console.out(serde_json::json!({ "members": rows }));
            } else {
                console.out(crate::status::render_members(&rows).trim_end());
            }
            Ok(())
        }
        Some(other) => Err(unexpected("Members", &other)),
        None => Err(CliError::NotRunning(format!(
            "quorated is not running (admin socket {}); --members asks the running daemon. \
             `quorate --show-cluster-status` shows the peers' positions without it",
            ctx.config.socket_path().display()
        ))),
    }
}

/// `--remove-node NAME`: Consul's force-leave, done by the leader.
pub async fn remove_node(ctx: &Ctx, name: &str, console: &mut Console<'_>) -> Result<(), CliError> {
    // The leader may wait up to 10 s for the change to commit, after probing.
    match ctx
        .ask(
            Command::RemoveNode {
                name: name.to_string(),
            },
            REQUEST_TIMEOUT * 4,
        )
        .await?
    {
        Some(Response::Removed { summary }) => {
            console.out(summary);
            Ok(())
        }
        Some(other) => Err(unexpected("RemoveNode", &other)),
        None => Err(CliError::NotRunning(format!(
            "quorated is not running (admin socket {}); run --remove-node on a running member of \
             the primary component",
            ctx.config.socket_path().display()
        ))),
    }
}

pub async fn show_cluster_status(ctx: &Ctx, console: &mut Console<'_>) -> Result<(), CliError> {
    match ctx.ask(Command::Status, REQUEST_TIMEOUT).await? {
        Some(Response::Status(status)) => {
            print_status(ctx, &status, console);
            return Ok(());
        }
        Some(other) => return Err(unexpected("Status", &other)),
        None => {}
    }
    console.note(format!(
        "quorated is not running: status read from the files in {}",
        ctx.config.data_dir.display()
    ));
    let grastate = read_grastate(&ctx.config)?;
    let db = db_path(&ctx.config);
    let position = if db.exists() {
        match crate::store::read_position(&db) {
            Ok(p) => p,
            // The status is still worth showing from grastate.dat alone.
            Err(e) => {
                console.note(format!(
                    "warning: cannot read the position of {}: {e}",
                    db.display()
                ));
                None
            }
        }
    } else {
        None
    };
    let mut status = offline_status(&ctx.config, grastate.as_ref(), position);
    // The operator deciding which node to bootstrap wants every peer's position.
    match crate::node::probe_peers_offline(&ctx.config).await {
        Ok(peers) => status.peers = peers,
        Err(e) => console.note(format!("warning: cannot ask the peers: {e}")),
    }
    match crate::order::fence::read_marker(&ctx.config.data_dir) {
        Ok(Some(n)) => {
            status.fenced = Some(format!(
                "yes: {n}; `quorate --restart-node` saves what this node holds and rejoins by SST"
            ))
        }
        Ok(None) => {}
        Err(e) => console.note(format!("warning: {e}")),
    }
    status.fence_saved = crate::order::fence::newest_saved_dir(&ctx.config.data_dir)
        .map(|d| d.display().to_string());
    print_status(ctx, &status, console);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::status_json;
    use super::super::testutil::{capture, ctx_in, sample_status, FakeDaemon};
    use super::*;

    fn grastate(safe: bool) -> GrastateFile {
        GrastateFile {
            uuid: Uuid::from_u128(0x8348d5ea_5664_11e7_8628_262d8bf5ad3d),
            seqno: 4,
            safe_to_bootstrap: safe,
        }
    }

    #[test]
    fn guard_allows_a_fresh_node_and_a_safe_one() {
        assert_eq!(bootstrap_guard(None), Ok(()));
        assert_eq!(bootstrap_guard(Some(&grastate(true))), Ok(()));
        let reason = bootstrap_guard(Some(&grastate(false))).unwrap_err();
        assert!(reason.contains("safe_to_bootstrap is 0"), "{reason}");
        assert!(
            reason.contains("8348d5ea-5664-11e7-8628-262d8bf5ad3d:4"),
            "{reason}"
        );
    }

    #[test]
    fn force_plans() {
        assert_eq!(force_plan(None), ForcePlan::Missing);
        assert_eq!(force_plan(Some(grastate(true))), ForcePlan::AlreadySafe);
        assert_eq!(
            force_plan(Some(grastate(false))),
            ForcePlan::Write(grastate(true))
        );
    }

    #[test]
    fn offline_status_prefers_the_database() {
        let (_dir, ctx) = ctx_in();
        let db = Position {
            state_uuid: Uuid::from_u128(7),
            seqno: 9,
            incarnation: 2,
        };
        let s = offline_status(&ctx.config, Some(&grastate(true)), Some(db));
        assert_eq!(s.cluster_status, ComponentStatus::Disconnected);
        assert_eq!(s.local_state, LocalState::Initialized);
        assert!(!s.connected && !s.ready);
        assert_eq!(s.cluster_size, 0);
        assert_eq!(
            (s.cluster_state_uuid, s.local_state_uuid),
            (db.state_uuid, db.state_uuid)
        );
        assert_eq!(s.last_committed, 9);
        assert_eq!(s.incarnation, 2);
        assert!(s.safe_to_bootstrap);
        assert_eq!(s.node_name, "node-a");

        let s = offline_status(&ctx.config, Some(&grastate(false)), None);
        assert_eq!(s.last_committed, 4);
        assert_eq!(s.cluster_state_uuid, grastate(false).uuid);
        assert!(!s.safe_to_bootstrap);

        let s = offline_status(&ctx.config, None, None);
        assert_eq!(s.last_committed, -1);
        assert!(s.cluster_state_uuid.is_nil());
        assert!(!s.safe_to_bootstrap);
    }

    #[tokio::test]
    async fn safe_to_bootstrap_asks_the_daemon() {
        let (_dir, mut ctx) = ctx_in();
        let _daemon = FakeDaemon::start(&ctx, |cmd| match cmd {
            Command::SafeToBootstrap => Response::SafeToBootstrap(true),
            _ => Response::Error("unexpected".into()),
        })
        .await;
        let (r, out, err) = capture!(safe_to_bootstrap, &ctx);
        r.unwrap();
        assert_eq!((out.as_str(), err.as_str()), ("1\n", ""));
        ctx.json = true;
        let (r, out, _) = capture!(safe_to_bootstrap, &ctx);
        r.unwrap();
        assert_eq!(out, "{\"safe_to_bootstrap\":1}\n");
    }

    #[tokio::test]
    async fn daemon_error_is_an_action_error() {
        let (_dir, ctx) = ctx_in();
        let _daemon = FakeDaemon::start(&ctx, |_| {
            Response::Error("permission denied: uid 1000".into())
        })
        .await;
        let (r, out, _) = capture!(recover, &ctx);
        let e = r.unwrap_err();
        assert_eq!(e.exit_code(), super::super::EXIT_ERROR);
        assert!(e.to_string().contains("permission denied: uid 1000"), "{e}");
        assert!(out.is_empty());
    }

    #[tokio::test]
    async fn unexpected_answer_is_an_error() {
        let (_dir, ctx) = ctx_in();
        let _daemon = FakeDaemon::start(&ctx, |_| Response::Done).await;
        let (r, _, _) = capture!(recover, &ctx);
        assert!(r.unwrap_err().to_string().contains("unexpected answer"));
    }

    #[tokio::test]
    async fn force_through_the_daemon_reports_the_change() {
        let (_dir, ctx) = ctx_in();
        let daemon = FakeDaemon::start(&ctx, |cmd| match cmd {
            Command::SafeToBootstrap => Response::SafeToBootstrap(false),
            Command::ForceSafeToBootstrap => Response::Done,
            _ => Response::Error("unexpected".into()),
        })
        .await;
        let (r, out, _) = capture!(force_safe_to_bootstrap, &ctx);
        r.unwrap();
        assert_eq!(out, "safe_to_bootstrap: 0 -> 1 (running node)\n");
        assert_eq!(
            daemon.commands(),
            [Command::SafeToBootstrap, Command::ForceSafeToBootstrap]
        );
    }

    #[tokio::test]
    async fn force_through_the_daemon_when_already_safe_changes_nothing() {
        let (_dir, ctx) = ctx_in();
        let daemon = FakeDaemon::start(&ctx, |_| Response::SafeToBootstrap(true)).await;
        let (r, out, _) = capture!(force_safe_to_bootstrap, &ctx);
        r.unwrap();
        assert!(out.contains("already 1"), "{out}");
        assert_eq!(daemon.commands(), [Command::SafeToBootstrap]);
    }

    #[tokio::test]
    async fn recover_through_the_daemon_prints_galera_form() {
        let (_dir, mut ctx) = ctx_in();
        let p = Position {
            state_uuid: Uuid::from_u128(0x8348d5ea_5664_11e7_8628_262d8bf5ad3d),
            seqno: 4,
            incarnation: 3,
        };
        let _daemon = FakeDaemon::start(&ctx, move |_| Response::Position(p)).await;
        let (r, out, _) = capture!(recover, &ctx);
        r.unwrap();
        assert_eq!(out, "8348d5ea-5664-11e7-8628-262d8bf5ad3d:4\n");
        ctx.json = true;
        let (r, out, _) = capture!(recover, &ctx);
        r.unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"uuid": "8348d5ea-5664-11e7-8628-262d8bf5ad3d", "seqno": 4, "incarnation": 3})
        );
    }

    #[tokio::test]
    async fn recover_without_daemon_or_database_is_an_error() {
        let (_dir, ctx) = ctx_in();
        let (r, out, _) = capture!(recover, &ctx);
        let e = r.unwrap_err();
        assert_eq!(e.exit_code(), super::super::EXIT_ERROR);
        assert_eq!(
            e.to_string(),
            format!(
                "no database in {}: nothing to recover",
                ctx.config.data_dir.display()
            )
        );
        assert!(out.is_empty());
    }

    #[tokio::test]
    async fn status_through_the_daemon_as_json() {
        let (_dir, mut ctx) = ctx_in();
        ctx.json = true;
        let status = sample_status();
        let _daemon = FakeDaemon::start(&ctx, {
            let status = status.clone();
            move |_| Response::Status(Box::new(status.clone()))
        })
        .await;
        let (r, out, err) = capture!(show_cluster_status, &ctx);
        r.unwrap();
        assert!(err.is_empty(), "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v, status_json(&status));
    }

    // The tests below read real grastate.dat files and need the grastate
    // implementation (a stub in this tree); enable them at merge.

    fn write_grastate_text(ctx: &Ctx, safe: u8) -> PathBuf {
        let path = ctx.config.grastate_path();
        std::fs::create_dir_all(&ctx.config.data_dir).unwrap();
        std::fs::write(
            &path,
            format!(
                "# GALERA saved state\nversion: 2.1\nuuid:    8348d5ea-5664-11e7-8628-262d8bf5ad3d\nseqno:   4\nsafe_to_bootstrap: {safe}\n"
            ),
        )
        .unwrap();
        path
    }

    #[tokio::test]
    async fn safe_to_bootstrap_from_files() {
        let (_dir, ctx) = ctx_in();
        let (r, out, err) = capture!(safe_to_bootstrap, &ctx);
        r.unwrap();
        assert_eq!(out, "0\n");
        assert!(
            err.contains("no grastate.dat: this node has never started"),
            "{err}"
        );

        write_grastate_text(&ctx, 1);
        let (r, out, err) = capture!(safe_to_bootstrap, &ctx);
        r.unwrap();
        assert_eq!((out.as_str(), err.as_str()), ("1\n", ""));
    }

    #[tokio::test]
    async fn force_on_files() {
        let (_dir, ctx) = ctx_in();
        let (r, _, _) = capture!(force_safe_to_bootstrap, &ctx);
        assert!(r.unwrap_err().to_string().contains("never started"));

        let path = write_grastate_text(&ctx, 0);
        let (r, out, _) = capture!(force_safe_to_bootstrap, &ctx);
        r.unwrap();
        assert!(out.contains("0 -> 1"), "{out}");
        let g = GrastateFile::read(&path).unwrap().unwrap();
        assert_eq!(g, grastate(true));

        let (r, out, _) = capture!(force_safe_to_bootstrap, &ctx);
        r.unwrap();
        assert!(out.contains("already 1"), "{out}");
    }

    #[tokio::test]
    async fn status_from_files_says_the_daemon_is_down() {
        let (_dir, mut ctx) = ctx_in();
        ctx.json = true;
        write_grastate_text(&ctx, 1);
        let (r, out, err) = capture!(show_cluster_status, &ctx);
        r.unwrap();
        assert!(err.contains("quorated is not running"), "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            v,
            status_json(&offline_status(&ctx.config, Some(&grastate(true)), None))
        );
    }
}
