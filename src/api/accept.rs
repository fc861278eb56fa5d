//! Accepting client API connections, plain or HTTPS, in one loop: the
//! connection limit (`api.max_connections`), the TLS handshake deadline,
//! the idle timeout (`api.idle_timeout_ms`) and, at shutdown, finishing the
//! requests under way.
//!
//! The idle timeout is hyper's header read timeout: it runs whenever the
//! connection waits for a request header, between keep-alive requests too,
//! and never while a request is being answered. Without it an idle or
//! trickling client held its connection slot for as long as it liked.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};

use super::limit::{self, ConnectionLimit, LimitedStream};

/// A client that does not finish its TLS handshake in this time is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests still running this long after the stop began are cut.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Serve `app` on `listener` (over TLS when `tls` is given) until
/// `shutdown` completes.
pub(super) async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    limit: ConnectionLimit,
    idle_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors, say: wait rather than spin.
                    tracing::warn!("client API: cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(permit) = limit.admit(peer) else {
            // Over HTTPS the socket is closed unanswered: a 503 would first
            // cost a TLS handshake, which is what a flood wants us to spend.
            if acceptor.is_none() {
                tokio::spawn(limit::refuse(tcp, limit.refusal_body()));
            }
            continue;
        };
        // Requests and answers are small and each waits for the other:
        // Nagle's algorithm would only hold them back.
        let _ = tcp.set_nodelay(true);
        let tcp = LimitedStream::new(tcp, permit);
        let service = TowerToHyperService::new(app.clone());
        let watcher = graceful.watcher();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            match acceptor {
                None => serve_connection(tcp, service, watcher, idle_timeout, peer).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            serve_connection(stream, service, watcher, idle_timeout, peer).await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, "client API: TLS handshake failed: {e}")
                        }
                        Err(_) => tracing::debug!(%peer, "client API: TLS handshake timed out"),
                    }
                }
            }
        });
    }
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "client API: requests still running {DRAIN_TIMEOUT:?} after the stop began were cut"
        );
    }
    Ok(())
}

async fn serve_connection<I>(
    io: I,
    service: TowerToHyperService<Router>,
    watcher: Watcher,
    idle_timeout: Duration,
    peer: SocketAddr,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(idle_timeout);
    let connection = http.serve_connection(TokioIo::new(io), service);
    if let Err(e) = watcher.watch(connection).await {
        tracing::debug!(%peer, "client API connection ended: {e}");
    }
}
