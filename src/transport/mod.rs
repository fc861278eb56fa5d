//! Node-to-node RPC over QUIC with mutual TLS: the wire the Raft layer
//! (votes, append-entries, snapshots) and write-set forwarding sit on.
//!
//! The transport knows nothing about Raft. A request is an opaque body
//! tagged with a `u8` kind; the answer is a body or an [`RpcFailure`].
//!
//! - One QUIC endpoint per node both listens and dials. Calls to a peer
//!   share one cached connection (`endpoint`); each RPC is one
//!   bidirectional stream. A call that times out or hits a connection error
//!   evicts the connection, so a dead peer never leaves a zombie behind.
//! - One connection per pair of nodes: the listener adopts the connection
//!   a peer dialled for its own calls to that peer, and the dialler serves
//!   the peer's calls on it. When both dial at once, both keep the one
//!   dialled by the node whose name sorts first; the dialler of the other
//!   closes it once no stream is open on it. A connection from the peer
//!   arriving later (it restarted) replaces the one we had.
//! - TLS 1.3 only, both sides present a certificate of the cluster CA, and
//!   ALPN `quorate/1` gates the protocol version (`tls`).
//! - A CA signature is not an identity: the first stream of every
//!   connection carries a `Hello` each way (cluster name, node
//!   name), and the claimed node name must be in the peer's certificate
//!   (`server` and `endpoint` both check).
//! - Frames are length-delimited and bounded (`frame`), and buffered as
//!   their bytes arrive, not at the size their prefix claims; a bad frame
//!   fails its stream, never the node, and a peer that sends more than
//!   `max_bad_frames` of them (or undecodable requests) within a minute has
//!   its connection closed ([`RpcFailure::malformed`]). Snapshots and SST go
//!   as a header, bounded chunks and an end frame, pulled by the handler
//!   from a [`ChunkStream`].
//! - A session ([`Transport::open_session`]) is one stream carrying
//!   messages each way in order for as long as both keep it open: Raft's
//!   pipelined replication runs on one per follower.
//! - At most `max_incoming_connections` incoming connections are served;
//!   more are refused before their handshake (logged every 10 s at most).

mod chunks;
mod endpoint;
mod frame;
mod server;
mod session;
mod tls;

/// Also the certificate harness of other modules' transport tests.
#[cfg(test)]
pub(crate) mod tests;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;

pub use chunks::{ChunkError, ChunkStream};
pub use endpoint::Transport;
pub use frame::FrameError;
pub use session::{SessionReceiver, SessionSender};

/// The ALPN protocol name: a peer of another wire version fails the TLS
/// handshake instead of misreading our frames.
pub const ALPN: &[u8] = b"quorate/1";
/// Carried in the Hello frame; bump together with [`ALPN`].
pub const PROTOCOL_VERSION: u32 = 1;
/// Size of the data frames of a streamed upload.
pub const CHUNK_BYTES: usize = 256 * 1024;

/// Settings of the replication transport. `cluster_name` and `node_name`
/// come from the top of the config; the rest are the `[transport]`-style
/// knobs (see [`TransportOptions::new`] for the defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportOptions {
    /// Peers of another cluster are refused.
    pub cluster_name: String,
    /// Must be a name in this node's certificate, or every peer refuses us.
    pub node_name: String,
    /// Bound on dialling a peer: QUIC + TLS handshake and the Hello exchange.
    pub connect_timeout: Duration,
    /// Bound on one RPC once connected; for streamed uploads, on each step
    /// (a stall of this long fails the upload).
    pub rpc_timeout: Duration,
    /// QUIC keep-alive interval: keeps idle connections to live peers open.
    pub keep_alive: Duration,
    /// A connection that hears nothing for this long is dead.
    pub idle_timeout: Duration,
    /// Largest frame payload accepted or sent (an RPC body, a response, a
    /// chunk). Must exceed the largest Raft message (a batch of write-sets).
    pub max_frame_bytes: usize,
    /// Incoming connections served at once, handshakes included; more are
    /// refused until one closes.
    pub max_incoming_connections: usize,
    /// Malformed frames a peer may send within [`BAD_FRAME_WINDOW`] before
    /// its whole connection is closed (not only the bad streams).
    pub max_bad_frames: u32,
    /// `false` answers a session frame as builds before sessions did: as
    /// an unexpected frame (`Rejected`). Only tests set it, to stand in for
    /// an older peer during a rolling upgrade.
    #[doc(hidden)]
    pub serve_sessions: bool,
}

/// The window [`TransportOptions::max_bad_frames`] counts within.
pub const BAD_FRAME_WINDOW: Duration = Duration::from_secs(60);

impl TransportOptions {
    /// Defaults: connect 3 s, RPC 5 s, keep-alive 2 s, idle 10 s, frames of
    /// at most 64 MiB, 64 incoming connections, 8 bad frames a minute.
    pub fn new(cluster_name: impl Into<String>, node_name: impl Into<String>) -> Self {
        TransportOptions {
            cluster_name: cluster_name.into(),
            node_name: node_name.into(),
            connect_timeout: Duration::from_secs(3),
            rpc_timeout: Duration::from_secs(5),
            keep_alive: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(10),
            max_frame_bytes: 64 * 1024 * 1024,
            max_incoming_connections: 64,
            max_bad_frames: 8,
            serve_sessions: true,
        }
    }

    fn validate(&self) -> Result<(), TransportError> {
        let bad = |m: String| Err(TransportError::Config(m));
        for (name, d) in [
            ("connect_timeout", self.connect_timeout),
            ("rpc_timeout", self.rpc_timeout),
            ("keep_alive", self.keep_alive),
            ("idle_timeout", self.idle_timeout),
        ] {
            if d.is_zero() {
                return bad(format!("{name} must be more than zero"));
            }
        }
        if self.keep_alive >= self.idle_timeout {
            return bad(format!(
                "keep_alive ({} ms) must be shorter than idle_timeout ({} ms), or live idle \
                 connections time out",
                self.keep_alive.as_millis(),
                self.idle_timeout.as_millis()
            ));
        }
        if self.max_frame_bytes < 1024 || self.max_frame_bytes > frame::MAX_FRAME_LIMIT {
            return bad(format!(
                "max_frame_bytes must be between 1024 and {}, got {}",
                frame::MAX_FRAME_LIMIT,
                self.max_frame_bytes
            ));
        }
        if self.max_incoming_connections == 0 {
            return bad("max_incoming_connections must be at least 1".into());
        }
        if self.max_bad_frames == 0 {
            return bad("max_bad_frames must be at least 1".into());
        }
        for (key, name) in [
            ("cluster_name", &self.cluster_name),
            ("node_name", &self.node_name),
        ] {
            if name.is_empty() || name.len() > frame::MAX_NAME_BYTES {
                return bad(format!(
                    "{key} must be 1 to {} bytes long",
                    frame::MAX_NAME_BYTES
                ));
            }
        }
        Ok(())
    }
}

/// An authenticated peer: its certificate names `node_name`, and it is in
/// our cluster.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerIdentity {
    pub node_name: String,
    pub addr: SocketAddr,
}

/// A handler's refusal to answer, sent back to the caller as
/// [`TransportError::Remote`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RpcFailure {
    pub message: String,
    /// The request itself was junk (undecodable, unknown kind): counts
    /// towards [`TransportOptions::max_bad_frames`] like a bad frame.
    pub malformed: bool,
}

impl RpcFailure {
    pub fn new(message: impl Into<String>) -> Self {
        RpcFailure {
            message: message.into(),
            malformed: false,
        }
    }

    /// A refusal of a request that could not be read at all.
    pub fn malformed(message: impl Into<String>) -> Self {
        RpcFailure {
            message: message.into(),
            malformed: true,
        }
    }
}

/// Implemented by the node: answers requests from authenticated peers.
/// Every call runs in its own task, so handlers may run concurrently.
pub trait RpcHandler: Send + Sync + 'static {
    /// One request, one answer.
    fn handle(
        &self,
        peer: PeerIdentity,
        kind: u8,
        body: Bytes,
    ) -> impl Future<Output = Result<Bytes, RpcFailure>> + Send;

    /// A streamed upload (snapshot, SST): a header, then chunks pulled from
    /// `chunks` until it yields `Ok(None)`. An `Err` from `chunks` means the
    /// upload broke off: whatever arrived is incomplete and must be dropped.
    fn handle_stream(
        &self,
        peer: PeerIdentity,
        kind: u8,
        header: Bytes,
        chunks: ChunkStream,
    ) -> impl Future<Output = Result<Bytes, RpcFailure>> + Send;

    /// A session: `messages` from the peer, in order, and `replies` to it,
    /// until either side finishes. A node that serves no session of this
    /// kind refuses it.
    fn handle_session(
        &self,
        peer: PeerIdentity,
        kind: u8,
        header: Bytes,
        messages: SessionReceiver,
        replies: SessionSender,
    ) -> impl Future<Output = ()> + Send {
        let _ = (peer, header, messages);
        async move {
            replies
                .fail(&format!("this node serves no sessions of kind {kind}"))
                .await
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot listen for peers on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("unusable TLS identity for the replication transport: {0}")]
    Identity(String),
    #[error("invalid transport setting: {0}")]
    Config(String),
    /// No connection could be made (no answer, handshake timeout).
    #[error("peer {peer} is unreachable: {reason}")]
    Unreachable { peer: SocketAddr, reason: String },
    /// The TLS handshake failed: a certificate of another CA on either side,
    /// an expired certificate, or a name that is not the expected node.
    #[error("TLS handshake with peer {peer} failed: {reason}")]
    Tls { peer: SocketAddr, reason: String },
    /// Authenticated but not accepted: another cluster, a Hello name that
    /// is not in the certificate, another node than expected, another
    /// protocol version.
    #[error("connection with peer {peer} refused: {reason}")]
    Refused { peer: SocketAddr, reason: String },
    /// An established connection broke (peer closed, restarted, timed out).
    #[error("connection to peer {peer} lost: {reason}")]
    Connection { peer: SocketAddr, reason: String },
    #[error("no answer from peer {peer} within {} ms", after.as_millis())]
    Timeout { peer: SocketAddr, after: Duration },
    /// One stream failed; the connection is fine.
    #[error("RPC stream with peer {peer} failed: {reason}")]
    Stream { peer: SocketAddr, reason: String },
    #[error("bad frame on an RPC stream with peer {peer}: {source}")]
    Frame {
        peer: SocketAddr,
        source: FrameError,
    },
    /// The peer's handler answered with an [`RpcFailure`].
    #[error("peer {peer} failed the request: {message}")]
    Remote { peer: SocketAddr, message: String },
    /// Reading the local data of a streamed upload failed.
    #[error("upload to peer {peer} aborted: cannot read its data: {source}")]
    Source { peer: SocketAddr, source: io::Error },
    #[error("the replication transport is closed")]
    Closed,
}

impl TransportError {
    /// Whether the connection to the peer is suspect, so it is dropped and
    /// the next call dials again. Also what the Raft layer reports as
    /// "unreachable" (back off) rather than as a failed request.
    pub fn is_connection_failure(&self) -> bool {
        matches!(
            self,
            TransportError::Unreachable { .. }
                | TransportError::Tls { .. }
                | TransportError::Refused { .. }
                | TransportError::Connection { .. }
                | TransportError::Timeout { .. }
        )
    }

    /// A copy for every caller that waited on the same failed dial (an
    /// `io::Error` cannot be cloned, so it is rebuilt from its kind and text).
    pub(crate) fn duplicate(&self) -> TransportError {
        use TransportError as E;
        let io_copy = |e: &io::Error| io::Error::new(e.kind(), e.to_string());
        match self {
            E::Bind { addr, source } => E::Bind {
                addr: *addr,
                source: io_copy(source),
            },
            E::Identity(m) => E::Identity(m.clone()),
            E::Config(m) => E::Config(m.clone()),
            E::Unreachable { peer, reason } => E::Unreachable {
                peer: *peer,
                reason: reason.clone(),
            },
            E::Tls { peer, reason } => E::Tls {
                peer: *peer,
                reason: reason.clone(),
            },
            E::Refused { peer, reason } => E::Refused {
                peer: *peer,
                reason: reason.clone(),
            },
            E::Connection { peer, reason } => E::Connection {
                peer: *peer,
                reason: reason.clone(),
            },
            E::Timeout { peer, after } => E::Timeout {
                peer: *peer,
                after: *after,
            },
            E::Stream { peer, reason } => E::Stream {
                peer: *peer,
                reason: reason.clone(),
            },
            E::Frame { peer, source } => E::Frame {
                peer: *peer,
                source: source.clone(),
            },
            E::Remote { peer, message } => E::Remote {
                peer: *peer,
                message: message.clone(),
            },
            E::Source { peer, source } => E::Source {
                peer: *peer,
                source: io_copy(source),
            },
            E::Closed => E::Closed,
        }
    }

    /// The peer the error is about, when there is one.
    pub fn peer(&self) -> Option<SocketAddr> {
        match self {
            TransportError::Unreachable { peer, .. }
            | TransportError::Tls { peer, .. }
            | TransportError::Refused { peer, .. }
            | TransportError::Connection { peer, .. }
            | TransportError::Timeout { peer, .. }
            | TransportError::Stream { peer, .. }
            | TransportError::Frame { peer, .. }
            | TransportError::Remote { peer, .. }
            | TransportError::Source { peer, .. } => Some(*peer),
            TransportError::Bind { .. }
            | TransportError::Identity(_)
            | TransportError::Config(_)
            | TransportError::Closed => None,
        }
    }
}
