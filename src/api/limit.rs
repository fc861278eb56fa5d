//! The bound on client API connections (`api.max_connections`).
//!
//! Every accepted connection holds a permit until it closes. Past the
//! limit a connection is answered at once with `503` and a body naming the
//! limit and the key that raises it (over HTTPS it is closed before the
//! handshake: answering would cost a TLS handshake per flooding connection),
//! so a flood of idle sockets costs this node a bounded number of file
//! descriptors and buffers, and a warning every few seconds.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::log_limit::LogLimiter;

/// How long a refused connection may take to receive its `503`.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// Counts the open client API connections against the configured limit.
#[derive(Debug, Clone)]
pub struct ConnectionLimit {
    permits: Arc<Semaphore>,
    max: usize,
    log: Arc<LogLimiter>,
}

impl ConnectionLimit {
    pub fn new(max: usize) -> Self {
        ConnectionLimit {
            permits: Arc::new(Semaphore::new(max)),
            max,
            log: Arc::new(LogLimiter::new(Duration::from_secs(10))),
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.max - self.permits.available_permits()
    }

    /// A permit for one more connection, or `None` (logged, rate-limited)
    /// when `max_connections` are open.
    pub(super) fn admit(&self, peer: SocketAddr) -> Option<OwnedSemaphorePermit> {
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => {
                if let Some(held_back) = self.log.allow() {
                    tracing::warn!(
                        %peer,
                        limit = self.max,
                        refused_since_last_warning = held_back,
                        "client API: refused a connection: {} connections are open, the limit \
                         (raise api.max_connections to allow more)",
                        self.max
                    );
                }
                None
            }
        }
    }

    pub(super) fn refusal_body(&self) -> String {
        format!(
            "{{\"error\":\"too many connections: this node serves at most {} client API \
             connections at once (api.max_connections); retry later or close idle \
             connections\"}}",
            self.max
        )
    }
}

/// Answers a connection over the limit with `503` and closes it.
pub(super) async fn refuse(mut stream: TcpStream, body: String) {
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let answer = async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, answer).await;
}

/// A client connection and its permit, released when the connection drops.
pub(super) struct LimitedStream {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl LimitedStream {
    pub(super) fn new(stream: TcpStream, permit: OwnedSemaphorePermit) -> Self {
        LimitedStream {
            stream,
            _permit: permit,
        }
    }
}

impl AsyncRead for LimitedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for LimitedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn permits_come_back_when_connections_close() {
        let limit = ConnectionLimit::new(2);
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let a = limit.admit(peer).unwrap();
        let _b = limit.admit(peer).unwrap();
        assert_eq!(limit.open(), 2);
        assert!(limit.admit(peer).is_none());
        drop(a);
        assert_eq!(limit.open(), 1);
        assert!(limit.admit(peer).is_some());
        assert!(limit.refusal_body().contains("api.max_connections"));
    }
}
