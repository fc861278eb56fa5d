//! The node's QUIC endpoint: dialling peers, the per-peer connection cache,
//! and the calling side of RPCs and uploads.
//!
//! Calls to one address share one connection. A dial is guarded per peer so
//! concurrent first calls do not open duplicates. A call that fails at the
//! connection level (timeout, loss, refusal) evicts that connection and
//! closes it, so the next call dials afresh: a crashed peer does not linger
//! as a zombie until the idle timeout, and a restarted one is found again.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use quinn::{ConnectError, ReadError, RecvStream, SendStream, VarInt, WriteError};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::task::JoinHandle;

use super::frame::{
    expect_frame, note_finished, write_frame, FrameError, FrameType, Hello, WireError,
    HELLO_MAX_BYTES,
};
use super::session::{SessionReceiver, SessionSender};
use super::tls::{
    check_hello, classify, negotiated_alpn, peer_certificate, quic_configs, shown, CLOSE_DUPLICATE,
    CLOSE_EVICTED, CLOSE_REFUSED, CLOSE_SHUTDOWN, UNKNOWN_PEER_SNI,
};
use super::{
    server, PeerIdentity, RpcHandler, TransportError, TransportOptions, CHUNK_BYTES,
    PROTOCOL_VERSION,
};
use crate::tls::NodeIdentity;

/// Stream reset code: the upload's local data could not be read.
pub(super) const STREAM_ABORTED: VarInt = VarInt::from_u32(1);

/// A node's replication endpoint. Cheap to clone; call [`Transport::close`]
/// to stop it (the accept loop keeps the endpoint alive until then).
#[derive(Clone)]
pub struct Transport {
    inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub endpoint: quinn::Endpoint,
    pub opts: TransportOptions,
    /// Our Hello, encoded once.
    pub hello: Bytes,
    local_addr: SocketAddr,
    client_any_name: quinn::ClientConfig,
    peers: Mutex<HashMap<SocketAddr, Arc<PeerSlot>>>,
    closed: AtomicBool,
    /// Payload bytes received from peers: requests, upload chunks, answers.
    pub received_bytes: AtomicU64,
    stream_server: OnceLock<StreamServer>,
}

#[derive(Default)]
struct PeerSlot {
    conn: Mutex<Option<PeerConn>>,
    /// Held while dialling, so one dial serves every waiting caller.
    dial: Arc<tokio::sync::Mutex<()>>,
    /// The last failed dial: when it ended, the name it expected, the error.
    failure: Mutex<Option<DialFailure>>,
}

struct DialFailure {
    at: Instant,
    expected: Option<String>,
    error: TransportError,
}

#[derive(Clone)]
pub(super) struct PeerConn {
    pub conn: quinn::Connection,
    /// Verified: in the peer's certificate and in its Hello.
    pub name: Arc<str>,
    /// We dialled it (else the peer did, and we adopted it).
    pub dialled: bool,
    /// Streams open on it, both ways: a connection no longer used for new
    /// calls is closed only once this is zero.
    pub active: Arc<AtomicUsize>,
    /// When its handshake and Hello completed.
    pub since: Instant,
}

impl PeerConn {
    pub(super) fn new(conn: quinn::Connection, name: &str, dialled: bool) -> PeerConn {
        PeerConn {
            conn,
            name: name.into(),
            dialled,
            active: Arc::new(AtomicUsize::new(0)),
            since: Instant::now(),
        }
    }

    /// Counts a stream as open until the guard drops.
    pub(super) fn stream_open(&self) -> ActiveStream {
        self.active.fetch_add(1, Ordering::SeqCst);
        ActiveStream(self.active.clone())
    }
}

pub(super) struct ActiveStream(Arc<AtomicUsize>);

impl Drop for ActiveStream {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Serves the peer's RPCs on a connection we dialled (set by `serve`).
type StreamServer = Box<dyn Fn(PeerConn, PeerIdentity) + Send + Sync>;

impl Transport {
    /// Binds the node's UDP port. `opts.node_name` must be a name in the
    /// identity's certificate: peers would refuse us otherwise.
    pub async fn bind(
        listen: SocketAddr,
        identity: NodeIdentity,
        opts: TransportOptions,
    ) -> Result<Transport, TransportError> {
        identity.check_node_name(&opts.node_name).map_err(|e| {
            TransportError::Identity(format!(
                "node_name {} does not match this node's certificate: {e}",
                shown(&opts.node_name)
            ))
        })?;
        Self::bind_unchecked(listen, identity, opts).await
    }

    /// [`Transport::bind`] without the name check: tests use it to play a
    /// node that lies about its name.
    pub(super) async fn bind_unchecked(
        listen: SocketAddr,
        identity: NodeIdentity,
        opts: TransportOptions,
    ) -> Result<Transport, TransportError> {
        opts.validate()?;
        let configs = quic_configs(&identity, &opts)?;
        let hello = Hello {
            protocol: PROTOCOL_VERSION,
            cluster_name: opts.cluster_name.clone(),
            node_name: opts.node_name.clone(),
        }
        .encode()
        .map_err(|e| TransportError::Config(e.to_string()))?;
        let bind_error = |source| TransportError::Bind {
            addr: listen,
            source,
        };
        let mut endpoint = quinn::Endpoint::server(configs.server, listen).map_err(bind_error)?;
        endpoint.set_default_client_config(configs.client);
        let local_addr = endpoint.local_addr().map_err(bind_error)?;
        Ok(Transport {
            inner: Arc::new(Inner {
                endpoint,
                opts,
                hello,
                local_addr,
                client_any_name: configs.client_any_name,
                peers: Mutex::new(HashMap::new()),
                closed: AtomicBool::new(false),
                received_bytes: AtomicU64::new(0),
                stream_server: OnceLock::new(),
            }),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    pub fn options(&self) -> &TransportOptions {
        &self.inner.opts
    }

    /// Accepts peers and answers their RPCs with `handler` until
    /// [`Transport::close`].
    pub fn serve<H: RpcHandler>(&self, handler: Arc<H>) -> JoinHandle<()> {
        // A peer may call us on the connection we dialled, as we call it on
        // the one it dialled: one connection per pair of nodes.
        let weak = Arc::downgrade(&self.inner);
        let h = handler.clone();
        let stream_server: StreamServer = Box::new(move |pc, peer| {
            if let Some(inner) = weak.upgrade() {
                tokio::spawn(server::serve_streams(inner, h.clone(), pc, peer));
            }
        });
        if self.inner.stream_server.set(stream_server).is_ok() {
            // Connections dialled before now get served too.
            let slots: Vec<_> = lock(&self.inner.peers)
                .iter()
                .map(|(addr, slot)| (*addr, slot.clone()))
                .collect();
            for (addr, slot) in slots {
                if let Some(pc) = slot.live().filter(|pc| pc.dialled) {
                    self.inner.serve_dialled(pc, addr);
                }
            }
        }
        tokio::spawn(server::accept_loop(self.inner.clone(), handler))
    }

    /// QUIC connections of this endpoint, incoming and outgoing (closed
    /// ones count until they have drained).
    pub fn connection_count(&self) -> usize {
        self.inner.endpoint.open_connections()
    }

    /// The QUIC statistics of our connection to `addr`, for tests that
    /// count what went over the wire.
    #[cfg(test)]
    pub(super) fn connection_stats(&self, addr: SocketAddr) -> Option<quinn::ConnectionStats> {
        let slot = lock(&self.inner.peers).get(&addr).cloned()?;
        slot.live().map(|pc| pc.conn.stats())
    }

    /// Peers this node has a live connection to, dialled or adopted.
    pub fn connected_peers(&self) -> Vec<PeerIdentity> {
        let slots: Vec<_> = lock(&self.inner.peers)
            .iter()
            .map(|(addr, slot)| (*addr, slot.clone()))
            .collect();
        let mut peers: Vec<_> = slots
            .into_iter()
            .filter_map(|(addr, slot)| {
                slot.live().map(|pc| PeerIdentity {
                    node_name: pc.name.to_string(),
                    addr,
                })
            })
            .collect();
        peers.sort_by_key(|p| p.addr);
        peers
    }

    /// One request and its answer, on a fresh stream of the connection to
    /// `peer`, within the configured `rpc_timeout` (dialling included). With `expected_name`, the peer
    /// must be that node; without, any node of the cluster will do.
    pub async fn call(
        &self,
        peer: SocketAddr,
        expected_name: Option<&str>,
        kind: u8,
        body: Bytes,
    ) -> Result<Bytes, TransportError> {
        self.call_timeout(peer, expected_name, kind, body, self.inner.opts.rpc_timeout)
            .await
    }

    /// [`Transport::call`] with its own timeout (Raft gives each RPC one).
    pub async fn call_timeout(
        &self,
        peer: SocketAddr,
        expected_name: Option<&str>,
        kind: u8,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, TransportError> {
        let max = self.inner.opts.max_frame_bytes;
        check_size(peer, 1 + body.len(), max)?;
        let deadline = Instant::now() + timeout;
        let pc = match tokio::time::timeout_at(deadline, self.connection(peer, expected_name)).await
        {
            Ok(pc) => pc?,
            Err(_) => return Err(not_connected(peer, timeout)),
        };
        let open = pc.stream_open();
        let result =
            match tokio::time::timeout_at(deadline, request(&pc.conn, peer, kind, body, max)).await
            {
                Ok(r) => r,
                Err(_) => Err(TransportError::Timeout {
                    peer,
                    after: timeout,
                }),
            };
        drop(open);
        self.inner.evict_on_failure(peer, &pc, &result);
        self.inner.count_received(&result);
        result
    }

    /// Payload bytes received from peers so far (requests and uploads they
    /// sent us, answers to ours).
    pub fn received_bytes(&self) -> u64 {
        self.inner.received_bytes.load(Ordering::Relaxed)
    }

    /// Uploads `header`, then all of `body` in chunks, on one stream, and
    /// returns the peer's answer. `progress` gets the bytes sent so far after
    /// each chunk. Each step (a chunk, the answer) must finish within
    /// `rpc_timeout`; the upload as a whole is not bounded.
    pub async fn call_stream<R, P>(
        &self,
        peer: SocketAddr,
        expected_name: Option<&str>,
        kind: u8,
        header: Bytes,
        body: R,
        progress: P,
    ) -> Result<Bytes, TransportError>
    where
        R: AsyncRead + Unpin + Send,
        P: Fn(u64) + Send,
    {
        check_size(peer, 1 + header.len(), self.inner.opts.max_frame_bytes)?;
        let step = self.inner.opts.rpc_timeout;
        let pc = match tokio::time::timeout(step, self.connection(peer, expected_name)).await {
            Ok(pc) => pc?,
            Err(_) => return Err(not_connected(peer, step)),
        };
        let open = pc.stream_open();
        let result = upload(
            &pc.conn,
            peer,
            &self.inner.opts,
            kind,
            header,
            body,
            progress,
        )
        .await;
        drop(open);
        self.inner.evict_on_failure(peer, &pc, &result);
        self.inner.count_received(&result);
        result
    }

    /// Opens a session with `peer` on a fresh stream: `header` goes with the
    /// opening frame, then messages flow each way in order (see
    /// `session`). Dialling and opening are bounded by `rpc_timeout`; the
    /// session itself is not, its user decides how long an answer may take.
    pub async fn open_session(
        &self,
        peer: SocketAddr,
        expected_name: Option<&str>,
        kind: u8,
        header: Bytes,
    ) -> Result<(SessionSender, SessionReceiver), TransportError> {
        let max = self.inner.opts.max_frame_bytes;
        check_size(peer, 1 + header.len(), max)?;
        let step = self.inner.opts.rpc_timeout;
        let deadline = Instant::now() + step;
        let pc = match tokio::time::timeout_at(deadline, self.connection(peer, expected_name)).await
        {
            Ok(pc) => pc?,
            Err(_) => return Err(not_connected(peer, step)),
        };
        let open = pc.stream_open();
        let opening = async {
            let (mut send, recv) = pc.conn.open_bi().await.map_err(|e| classify(peer, e))?;
            write_frame(&mut send, FrameType::Session, &[kind], header, max)
                .await
                .map_err(|e| wire_error(peer, e))?;
            Ok((send, recv))
        };
        let result = match tokio::time::timeout_at(deadline, opening).await {
            Ok(r) => r,
            Err(_) => Err(TransportError::Timeout { peer, after: step }),
        };
        self.inner.evict_on_failure(peer, &pc, &result);
        let (send, recv) = result?;
        Ok((
            SessionSender::new(send, peer, max, Some(open)),
            SessionReceiver::new(recv, peer, max, self.inner.clone(), None),
        ))
    }

    /// Closes every connection (peers see "shutting down") and stops the
    /// accept loop; waits a moment for the goodbyes to go out.
    pub async fn close(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        lock(&self.inner.peers).clear();
        self.inner
            .endpoint
            .close(CLOSE_SHUTDOWN, b"node shutting down");
        let _ = tokio::time::timeout(Duration::from_secs(1), self.inner.endpoint.wait_idle()).await;
    }

    /// The cached connection to `peer`, dialling it if there is none.
    ///
    /// The dial runs in its own task, bounded by `connect_timeout`: a caller
    /// with a shorter deadline may give up waiting, but the dial goes on
    /// and serves the next call. Callers that queued behind a failed dial
    /// get its error instead of each dialling a dead peer in turn.
    async fn connection(
        &self,
        peer: SocketAddr,
        expected: Option<&str>,
    ) -> Result<PeerConn, TransportError> {
        let inner = &self.inner;
        if inner.closed.load(Ordering::SeqCst) {
            return Err(TransportError::Closed);
        }
        let slot = lock(&inner.peers).entry(peer).or_default().clone();
        if let Some(pc) = slot.live() {
            return check_expected(peer, pc, expected);
        }
        let asked = Instant::now();
        let dialing = slot.dial.clone().lock_owned().await;
        if let Some(pc) = slot.live() {
            return check_expected(peer, pc, expected);
        }
        if let Some(e) = slot.failed_since(asked, expected) {
            return Err(e);
        }
        let task = {
            let inner = inner.clone();
            let slot = slot.clone();
            let expected = expected.map(str::to_owned);
            tokio::spawn(async move {
                let result = inner.dial_into(&slot, peer, expected.as_deref()).await;
                drop(dialing);
                result
            })
        };
        match task.await {
            Ok(result) => check_expected(peer, result?, expected),
            Err(e) => Err(TransportError::Unreachable {
                peer,
                reason: format!("the dial task failed: {e}"),
            }),
        }
    }

    /// The cached connection to `peer` (tests open raw streams on it).
    #[cfg(test)]
    pub(super) async fn raw_connection(
        &self,
        peer: SocketAddr,
    ) -> Result<quinn::Connection, TransportError> {
        Ok(self.connection(peer, None).await?.conn)
    }
}

impl Inner {
    fn count_received(&self, answer: &Result<Bytes, TransportError>) {
        if let Ok(body) = answer {
            self.received_bytes
                .fetch_add(body.len() as u64, Ordering::Relaxed);
        }
    }

    pub(super) fn count(&self, bytes: usize) {
        self.received_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Dials within `connect_timeout` and records the outcome in `slot`.
    async fn dial_into(
        &self,
        slot: &PeerSlot,
        peer: SocketAddr,
        expected: Option<&str>,
    ) -> Result<PeerConn, TransportError> {
        let timeout = self.opts.connect_timeout;
        let result = match tokio::time::timeout(timeout, self.dial(peer, expected)).await {
            Ok(r) => r,
            Err(_) => Err(TransportError::Unreachable {
                peer,
                reason: format!("no connection within {} ms", timeout.as_millis()),
            }),
        };
        match &result {
            Ok(pc) if self.closed.load(Ordering::SeqCst) => {
                pc.conn.close(CLOSE_SHUTDOWN, b"node shutting down");
                return Err(TransportError::Closed);
            }
            Ok(pc) => {
                *lock(&slot.failure) = None;
                let kept = self.install(slot, pc.clone());
                if kept.conn.stable_id() != pc.conn.stable_id() {
                    // The peer's own connection arrived meanwhile and wins.
                    close_duplicate(pc);
                    return Ok(kept);
                }
                self.serve_dialled(pc.clone(), peer);
            }
            Err(e) => {
                *lock(&slot.failure) = Some(DialFailure {
                    at: Instant::now(),
                    expected: expected.map(str::to_owned),
                    error: e.duplicate(),
                })
            }
        }
        result
    }

    async fn dial(
        &self,
        peer: SocketAddr,
        expected: Option<&str>,
    ) -> Result<PeerConn, TransportError> {
        let connecting = match expected {
            Some(name) => self.endpoint.connect(peer, name),
            None => {
                self.endpoint
                    .connect_with(self.client_any_name.clone(), peer, UNKNOWN_PEER_SNI)
            }
        }
        .map_err(|e| match e {
            ConnectError::EndpointStopping => TransportError::Closed,
            ConnectError::InvalidServerName(name) => TransportError::Config(format!(
                "cannot dial {peer} as node {}: not a valid certificate name",
                shown(&name)
            )),
            other => TransportError::Unreachable {
                peer,
                reason: other.to_string(),
            },
        })?;
        let conn = connecting.await.map_err(|e| classify(peer, e))?;
        match self.exchange_hello(&conn, peer, expected).await {
            Ok(name) => Ok(PeerConn::new(conn, &name, true)),
            Err(e) => {
                // Tells the listener why, when the refusal is ours; a no-op
                // when the connection is already gone.
                conn.close(CLOSE_REFUSED, e.to_string().as_bytes());
                Err(e)
            }
        }
    }

    /// The dialler's side of the Hello: ours first, then the listener's,
    /// checked. The client may learn only here that the server refused its
    /// certificate (TLS 1.3 sends that verdict after the client's Finished).
    async fn exchange_hello(
        &self,
        conn: &quinn::Connection,
        peer: SocketAddr,
        expected: Option<&str>,
    ) -> Result<String, TransportError> {
        let refused = |reason: String| TransportError::Refused { peer, reason };
        if !negotiated_alpn(conn) {
            return Err(refused(
                "the handshake did not settle on our ALPN protocol".into(),
            ));
        }
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| classify(peer, e))?;
        write_frame(
            &mut send,
            FrameType::Hello,
            &[],
            self.hello.clone(),
            HELLO_MAX_BYTES,
        )
        .await
        .map_err(|e| wire_error(peer, e))?;
        let _ = send.finish();
        let frame = expect_frame(&mut recv, HELLO_MAX_BYTES, "the peer's hello")
            .await
            .map_err(|e| wire_error(peer, e))?;
        if frame.ty != FrameType::Hello {
            return Err(refused(frame.unexpected("a hello").to_string()));
        }
        let theirs = Hello::decode(&frame.payload).map_err(|e| refused(e.to_string()))?;
        check_hello(
            &self.opts,
            peer,
            &theirs,
            peer_certificate(conn).as_ref(),
            expected,
        )
        .map_err(refused)?;
        Ok(theirs.node_name)
    }

    /// Answers the peer's calls on a connection we dialled to `addr`, once
    /// `Transport::serve` gave us a handler.
    fn serve_dialled(&self, pc: PeerConn, addr: SocketAddr) {
        if let Some(serve) = self.stream_server.get() {
            let identity = PeerIdentity {
                node_name: pc.name.to_string(),
                addr,
            };
            serve(pc, identity);
        }
    }

    /// Offers a connection the peer at `addr` dialled and we accepted, for
    /// our calls to it too (the listener's side of one connection per pair).
    pub(super) fn adopt(&self, addr: SocketAddr, pc: PeerConn) {
        if self.closed.load(Ordering::SeqCst) {
            return;
        }
        let slot = lock(&self.peers).entry(addr).or_default().clone();
        self.install(&slot, pc);
    }

    /// Puts `new` in `slot` unless the connection there should stay (see
    /// [`old_stays`]), and returns the one that is there afterwards. A
    /// connection we dialled that loses its place is closed once no stream
    /// is open on it.
    fn install(&self, slot: &PeerSlot, new: PeerConn) -> PeerConn {
        let mut cached = lock(&slot.conn);
        let keep_old = cached.as_ref().is_some_and(|old| {
            old.conn.close_reason().is_none()
                && old.conn.stable_id() != new.conn.stable_id()
                && old_stays(
                    &self.opts.node_name,
                    Candidate::of(old),
                    Candidate::of(&new),
                    self.opts.connect_timeout,
                )
        });
        if keep_old {
            if let Some(old) = cached.as_ref() {
                return old.clone();
            }
        }
        if let Some(old) = cached.replace(new.clone()) {
            if old.conn.stable_id() != new.conn.stable_id() {
                tokio::spawn(retire(old, self.opts.rpc_timeout));
            }
        }
        new
    }

    fn evict_on_failure<T>(
        &self,
        peer: SocketAddr,
        pc: &PeerConn,
        result: &Result<T, TransportError>,
    ) {
        let Err(e) = result else { return };
        if !e.is_connection_failure() {
            return;
        }
        let slot = lock(&self.peers).get(&peer).cloned();
        let mut dropped = false;
        if let Some(slot) = slot {
            let mut cached = lock(&slot.conn);
            // Only this connection: a concurrent caller may already have
            // dialled a fresh one (and retired this one).
            if cached
                .as_ref()
                .is_some_and(|c| c.conn.stable_id() == pc.conn.stable_id())
            {
                *cached = None;
                dropped = true;
            }
        }
        // A slow answer (a heartbeat with a tight deadline on a loaded
        // machine) does not prove the connection dead: new calls dial afresh,
        // but calls still in flight on it may finish. Both nodes serve each
        // other's calls on it, so neither lets go of it by itself and
        // keep-alives would hold it open for ever: it is closed once no
        // stream is open on it. Other failures mean it is dead.
        if !matches!(e, TransportError::Timeout { .. }) {
            pc.conn
                .close(CLOSE_EVICTED, b"an RPC failed; dropping the connection");
        } else if dropped {
            tokio::spawn(retire(pc.clone(), self.opts.rpc_timeout));
        }
        tracing::debug!(peer = %peer, node = %pc.name, error = %e, "dropped the connection to a peer");
    }
}

impl PeerSlot {
    /// The error of a dial for the same name that ended after `since`.
    fn failed_since(&self, since: Instant, expected: Option<&str>) -> Option<TransportError> {
        lock(&self.failure)
            .as_ref()
            .filter(|f| f.at >= since && f.expected.as_deref() == expected)
            .map(|f| f.error.duplicate())
    }

    fn live(&self) -> Option<PeerConn> {
        lock(&self.conn)
            .as_ref()
            .filter(|pc| pc.conn.close_reason().is_none())
            .cloned()
    }
}

/// What [`old_stays`] weighs of a connection.
#[derive(Debug, Clone, Copy)]
struct Candidate<'a> {
    /// The peer's verified name.
    name: &'a str,
    /// We dialled it (else the peer did).
    dialled: bool,
    /// Since its handshake and Hello completed.
    age: Duration,
}

impl<'a> Candidate<'a> {
    fn of(pc: &'a PeerConn) -> Candidate<'a> {
        Candidate {
            name: &pc.name,
            dialled: pc.dialled,
            age: pc.since.elapsed(),
        }
    }
}

/// Whether the live connection `old` in a peer's slot stays when `new`
/// arrives for the same address, as seen by node `me`.
///
/// - Another node at that address does not displace a working connection
///   to the node we know there.
/// - Both nodes dialled each other at once: both keep the connection
///   dialled by the node whose name sorts first. A dial crossing ours
///   arrives within one handshake (`race_window`, the connect timeout) of
///   ours completing, since the peer dials only while it holds no
///   connection to us.
/// - A connection from the peer arriving later means the peer restarted
///   (a crashed process sends no close, so ours would look alive until its
///   idle timeout) or gave ours up: the new one wins.
fn old_stays(me: &str, old: Candidate<'_>, new: Candidate<'_>, race_window: Duration) -> bool {
    if old.name != new.name {
        return true;
    }
    match (old.dialled, new.dialled) {
        (true, false) => old.age < race_window && me < new.name,
        (false, true) => old.name < me,
        _ => false,
    }
}

/// Closes a connection that another one replaced, or that a timed-out call
/// gave up, once no stream is open on it (an upload may take a while).
async fn retire(pc: PeerConn, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        if pc.conn.close_reason().is_some() {
            return;
        }
        if pc.active.load(Ordering::SeqCst) == 0 {
            return close_duplicate(&pc);
        }
    }
}

fn close_duplicate(pc: &PeerConn) {
    tracing::debug!(node = %pc.name, "closed a connection to a peer that is no longer used");
    pc.conn.close(
        CLOSE_DUPLICATE,
        b"another connection to this node replaces this one",
    );
}

/// A poisoned lock only means another task panicked mid-update of a cache
/// entry; the map itself stays consistent, so keep using it.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn check_expected(
    peer: SocketAddr,
    pc: PeerConn,
    expected: Option<&str>,
) -> Result<PeerConn, TransportError> {
    match expected {
        Some(want) if *want != *pc.name => Err(TransportError::Refused {
            peer,
            reason: format!(
                "peer at {peer} is node {}, expected {}",
                shown(&pc.name),
                shown(want)
            ),
        }),
        _ => Ok(pc),
    }
}

fn not_connected(peer: SocketAddr, after: Duration) -> TransportError {
    TransportError::Unreachable {
        peer,
        reason: format!("no connection within {} ms", after.as_millis()),
    }
}

fn check_size(peer: SocketAddr, payload: usize, max: usize) -> Result<(), TransportError> {
    if payload > max {
        return Err(TransportError::Frame {
            peer,
            source: FrameError::TooLarge {
                len: payload as u64,
                max,
            },
        });
    }
    Ok(())
}

pub(super) fn wire_error(peer: SocketAddr, e: WireError) -> TransportError {
    match e {
        WireError::Frame(source) => TransportError::Frame { peer, source },
        WireError::Read(ReadError::ConnectionLost(e))
        | WireError::Write(WriteError::ConnectionLost(e)) => classify(peer, e),
        WireError::Read(e) => TransportError::Stream {
            peer,
            reason: e.to_string(),
        },
        WireError::Write(e) => TransportError::Stream {
            peer,
            reason: e.to_string(),
        },
    }
}

async fn request(
    conn: &quinn::Connection,
    peer: SocketAddr,
    kind: u8,
    body: Bytes,
    max: usize,
) -> Result<Bytes, TransportError> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| classify(peer, e))?;
    send_frame(
        &mut send,
        &mut recv,
        peer,
        FrameType::Request,
        &[kind],
        body,
        max,
    )
    .await?;
    let _ = send.finish();
    read_answer(&mut recv, peer, max).await
}

async fn upload<R, P>(
    conn: &quinn::Connection,
    peer: SocketAddr,
    opts: &TransportOptions,
    kind: u8,
    header: Bytes,
    mut body: R,
    progress: P,
) -> Result<Bytes, TransportError>
where
    R: AsyncRead + Unpin + Send,
    P: Fn(u64) + Send,
{
    let max = opts.max_frame_bytes;
    let step = opts.rpc_timeout;
    let stalled = |_| TransportError::Timeout { peer, after: step };
    let (mut send, mut recv) = tokio::time::timeout(step, conn.open_bi())
        .await
        .map_err(stalled)?
        .map_err(|e| classify(peer, e))?;
    tokio::time::timeout(
        step,
        send_frame(
            &mut send,
            &mut recv,
            peer,
            FrameType::UploadHeader,
            &[kind],
            header,
            max,
        ),
    )
    .await
    .map_err(stalled)??;

    let chunk_len = CHUNK_BYTES.min(max);
    let mut total = 0u64;
    loop {
        let mut buf = vec![0u8; chunk_len];
        let filled = match fill(&mut body, &mut buf).await {
            Ok(n) => n,
            Err(source) => {
                // An explicit reset: a plain drop would finish the stream,
                // and the receiver must not mistake that for the end.
                let _ = send.reset(STREAM_ABORTED);
                return Err(TransportError::Source { peer, source });
            }
        };
        if filled == 0 {
            break;
        }
        buf.truncate(filled);
        tokio::time::timeout(
            step,
            send_frame(
                &mut send,
                &mut recv,
                peer,
                FrameType::Chunk,
                &[],
                Bytes::from(buf),
                max,
            ),
        )
        .await
        .map_err(stalled)??;
        total += filled as u64;
        progress(total);
    }
    let end = Bytes::copy_from_slice(&total.to_be_bytes());
    tokio::time::timeout(
        step,
        send_frame(&mut send, &mut recv, peer, FrameType::End, &[], end, max),
    )
    .await
    .map_err(stalled)??;
    let _ = send.finish();
    tokio::time::timeout(step, read_answer(&mut recv, peer, max))
        .await
        .map_err(stalled)?
}

/// Reads until `buf` is full or the source ends.
async fn fill<R: AsyncRead + Unpin>(src: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match src.read(&mut buf[filled..]).await? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// Writes a frame; if the peer stopped reading (it answered early, or
/// rejected an earlier frame), its answer is the error to report.
async fn send_frame(
    send: &mut SendStream,
    recv: &mut RecvStream,
    peer: SocketAddr,
    ty: FrameType,
    prefix: &[u8],
    body: Bytes,
    max: usize,
) -> Result<(), TransportError> {
    match write_frame(send, ty, prefix, body, max).await {
        Ok(()) => Ok(()),
        Err(WireError::Write(WriteError::Stopped(code))) => {
            match read_answer(recv, peer, max).await {
                Err(e) => Err(e),
                Ok(_) => Err(TransportError::Stream {
                    peer,
                    reason: format!(
                        "the peer answered before reading all of the request (code {code})"
                    ),
                }),
            }
        }
        Err(e) => Err(wire_error(peer, e)),
    }
}

async fn read_answer(
    recv: &mut RecvStream,
    peer: SocketAddr,
    max: usize,
) -> Result<Bytes, TransportError> {
    let frame = expect_frame(recv, max, "the answer")
        .await
        .map_err(|e| wire_error(peer, e))?;
    note_finished(recv);
    let text = || String::from_utf8_lossy(&frame.payload).into_owned();
    match frame.ty {
        FrameType::Response => Ok(frame.payload),
        FrameType::Failure => Err(TransportError::Remote {
            peer,
            message: text(),
        }),
        FrameType::Rejected => Err(TransportError::Frame {
            peer,
            source: FrameError::Rejected(text()),
        }),
        _ => Err(TransportError::Frame {
            peer,
            source: frame.unexpected("an answer"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::{old_stays, Candidate};
    use std::time::Duration;

    const WINDOW: Duration = Duration::from_secs(3);

    fn conn(name: &str, dialled: bool, age_ms: u64) -> Candidate<'_> {
        Candidate {
            name,
            dialled,
            age: Duration::from_millis(age_ms),
        }
    }

    #[test]
    fn crossing_dials_keep_the_connection_of_the_node_that_sorts_first() {
        // node-a dialled node-b while node-b dialled node-a.
        // On node-a: its own stays, node-b's inbound is refused.
        assert!(old_stays(
            "node-a",
            conn("node-b", true, 5),
            conn("node-b", false, 0),
            WINDOW
        ));
        // On node-b: its own gives way to node-a's inbound ...
        assert!(!old_stays(
            "node-b",
            conn("node-a", true, 5),
            conn("node-a", false, 0),
            WINDOW
        ));
        // ... and node-a's adopted one stays when node-b's dial completes
        // after it.
        assert!(old_stays(
            "node-b",
            conn("node-a", false, 5),
            conn("node-a", true, 0),
            WINDOW
        ));
        // On node-a, when node-b's inbound came first and node-a's own dial
        // completes after it: node-a's own takes the slot.
        assert!(!old_stays(
            "node-a",
            conn("node-b", false, 5),
            conn("node-b", true, 0),
            WINDOW
        ));
    }

    #[test]
    fn a_restarted_peer_replaces_the_connection_we_dialled_to_its_old_self() {
        // Past one handshake, an inbound from the peer means it restarted:
        // our connection to the crashed process only looks alive.
        assert!(!old_stays(
            "node-a",
            conn("node-b", true, 3_001),
            conn("node-b", false, 0),
            WINDOW
        ));
        // The same for a connection it had dialled before.
        assert!(!old_stays(
            "node-a",
            conn("node-b", false, 60_000),
            conn("node-b", false, 0),
            WINDOW
        ));
    }

    #[test]
    fn another_node_at_a_known_address_does_not_displace_the_one_we_know() {
        for (old_dialled, new_dialled) in [(true, false), (false, false), (true, true)] {
            assert!(old_stays(
                "node-a",
                conn("node-b", old_dialled, 60_000),
                conn("node-c", new_dialled, 0),
                WINDOW
            ));
        }
    }
}
