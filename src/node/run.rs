//! The daemon's life: open, serve the API and the admin socket, start,
//! reload on SIGHUP, and stop gracefully on SIGTERM/SIGINT (leaving the
//! membership or keeping it, as `leave_on_terminate` and
//! `skip_leave_on_interrupt` say).

use std::sync::Arc;

use tokio::signal::unix::{signal, SignalKind};

use super::{Node, NodeError, StartOptions};
use crate::config::Config;

/// Run `quorated` until a signal stops it.
pub async fn run(mut config: Config, opts: StartOptions) -> Result<(), NodeError> {
    config.arbitrator |= opts.arbitrator;
    // Installed first: a signal that arrives while the node starts (the API
    // already answers then) must be handled, not kill the process.
    let mut term = signal(SignalKind::terminate()).map_err(|source| NodeError::Io {
        context: "cannot install SIGTERM handler".into(),
        source,
    })?;
    let mut int = signal(SignalKind::interrupt()).map_err(|source| NodeError::Io {
        context: "cannot install SIGINT handler".into(),
        source,
    })?;
    let mut hup = signal(SignalKind::hangup()).map_err(|source| NodeError::Io {
        context: "cannot install SIGHUP handler".into(),
        source,
    })?;
    let node = Node::open(config).await?;
    let cfg = node.config().clone();

    let listener = tokio::net::TcpListener::bind(cfg.api.listen)
        .await
        .map_err(|source| NodeError::Io {
            context: format!("cannot listen on api.listen {}", cfg.api.listen),
            source,
        })?;
    let api_opts =
        crate::api::ApiOptions::from_config(&cfg).map_err(|e| NodeError::Refused(e.to_string()))?;
    let mut stop_api = node.shutdown_signal();
    let api = tokio::spawn(crate::api::serve(
        listener,
        node.clone(),
        api_opts,
        async move {
            let _ = stop_api.changed().await;
        },
    ));

    let mut stop_admin = node.shutdown_signal();
    let admin_path = cfg.socket_path();
    let admin_node: Arc<Node> = node.clone();
    let admin = tokio::spawn(async move {
        crate::admin::serve(&admin_path, admin_node, async move {
            let _ = stop_admin.changed().await;
        })
        .await
    });

    let peer_server = node.transport().map(|t| t.serve(node.clone()));
    let (config_path, log_reload, arbitrator_flag) = (
        opts.config_path.clone(),
        opts.log_reload.clone(),
        opts.arbitrator,
    );
    node.start(opts).await?;
    node.spawn_grastate_keeper();
    node.spawn_notifier();
    tracing::info!(
        api = %cfg.api.listen,
        admin = %cfg.socket_path().display(),
        "quorated serving{}",
        if cfg.arbitrator { " as an arbitrator (votes, holds no data, serves no clients)" } else { "" }
    );

    let mut admin = admin;
    let (admin_failed, leave) = loop {
        tokio::select! {
            _ = term.recv() => {
                let leave = node.leave_on_terminate();
                tracing::info!("SIGTERM: stopping gracefully, {}", leave_words(leave, "leave_on_terminate"));
                break (None, leave);
            }
            _ = int.recv() => {
                let leave = node.leave_on_interrupt();
                tracing::info!("SIGINT: stopping gracefully, {}", leave_words(leave, "skip_leave_on_interrupt"));
                break (None, leave);
            }
            _ = hup.recv() => reload(&node, config_path.as_deref(), log_reload.as_ref(), arbitrator_flag),
            r = &mut admin => break (Some(r), node.leave_on_terminate()),
        }
    };
    node.stop(leave).await?;
    if let Some(t) = node.transport() {
        t.close().await;
    }
    if let Some(s) = peer_server {
        s.abort();
    }
    let _ = api.await;
    if let Some(Ok(Err(e))) = admin_failed {
        return Err(NodeError::Refused(format!("admin socket: {e}")));
    }
    Ok(())
}

fn leave_words(leave: bool, key: &str) -> String {
    if leave {
        "leaving the membership".into()
    } else {
        format!("staying a member ({key})")
    }
}

/// SIGHUP: one line for what changed, one for what needs a restart.
fn reload(
    node: &Node,
    path: Option<&std::path::Path>,
    log: Option<&super::LogReload>,
    arbitrator_flag: bool,
) {
    let Some(path) = path else {
        tracing::warn!("SIGHUP: this daemon was not started from a config file; nothing to reload");
        return;
    };
    let mut new = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("SIGHUP: cannot reload: {e}; the running settings stay as they were");
            return;
        }
    };
    new.arbitrator |= arbitrator_flag;
    let report = node.reload(&new, log);
    if report.applied.is_empty() && report.needs_restart.is_empty() {
        tracing::info!("SIGHUP: reloaded {}: nothing changed", path.display());
        return;
    }
    if report.applied.is_empty() {
        tracing::info!("SIGHUP: reloaded {}: nothing applied", path.display());
    } else {
        tracing::info!(
            "SIGHUP: reloaded {}: applied {}",
            path.display(),
            report.applied.join(", ")
        );
    }
    if !report.needs_restart.is_empty() {
        tracing::warn!(
            "SIGHUP: not applied, needs a restart (quorate --restart-node): {}; only {} change at \
             run time",
            report.needs_restart.join(", "),
            super::RELOADABLE.join(", ")
        );
    }
}
