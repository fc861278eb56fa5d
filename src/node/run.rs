//! The daemon's life: open, serve the API and the admin socket, start, and
//! stop gracefully on SIGTERM/SIGINT.

use std::sync::Arc;

use tokio::signal::unix::{signal, SignalKind};

use super::{Node, NodeError, StartOptions};
use crate::config::Config;

/// Run `quorated` until a signal stops it.
pub async fn run(config: Config, opts: StartOptions) -> Result<(), NodeError> {
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
    node.start(opts).await?;
    node.spawn_grastate_keeper();
    node.spawn_notifier();
    tracing::info!(api = %cfg.api.listen, admin = %cfg.socket_path().display(), "quorated serving");

    let mut term = signal(SignalKind::terminate()).map_err(|source| NodeError::Io {
        context: "cannot install SIGTERM handler".into(),
        source,
    })?;
    let mut int = signal(SignalKind::interrupt()).map_err(|source| NodeError::Io {
        context: "cannot install SIGINT handler".into(),
        source,
    })?;
    let admin_failed = tokio::select! {
        _ = term.recv() => { tracing::info!("SIGTERM: stopping gracefully"); None }
        _ = int.recv() => { tracing::info!("SIGINT: stopping gracefully"); None }
        r = admin => Some(r),
    };
    node.stop().await?;
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
