//! Raft RPCs between nodes over the QUIC transport.
//!
//! Outgoing: openraft's `RaftNetworkV2` calls become transport calls (one
//! stream each; snapshots stream the SQLite file), except replication:
//! openraft's stream of append-entries to a follower goes on one transport
//! session, pipelined, so the next batch of write-sets never waits for the
//! answer to the last one (nor for the entry-less request that only
//! carries the commit index). Incoming: the node's transport handler passes
//! Raft kinds to [`serve_rpc`] / [`serve_snapshot`], and append sessions to
//! [`serve_append_session`].
//! A node without peers has no transport, and every call is `Unreachable`.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{OptionalSend, RaftNetworkFactory, RaftNetworkV2};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::AsyncWriteExt;

use super::fence::{Fence, Reply, Stamp};
use super::state_machine::SnapshotFile;
use super::types::{NodeId, NodeInfo, Raft, SnapshotMeta, TypeConfig, Vote};
use crate::transport::{ChunkStream, Transport, TransportError};

/// Transport kinds of the Raft RPCs (the node owns the other kinds).
pub mod kind {
    pub const VOTE: u8 = 1;
    pub const APPEND: u8 = 2;
    pub const PRE_VOTE: u8 = 3;
    pub const TRANSFER_LEADER: u8 = 4;
    pub const SNAPSHOT: u8 = 5;
    /// A session of pipelined append-entries (not a unary RPC kind).
    pub const APPEND_STREAM: u8 = 6;

    pub fn is_raft(kind: u8) -> bool {
        (VOTE..=SNAPSHOT).contains(&kind)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Msg(String);

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Bytes, String> {
    bincode::serialize(value)
        .map(Bytes::from)
        .map_err(|e| format!("cannot encode: {e}"))
}

/// Decodes what [`encode`] wrote (bincode's fixed-width layout). The bytes
/// come from peers: the limit keeps any length prefix inside them from
/// sizing a buffer larger than the message itself, and trailing bytes mean
/// the sender and we disagree about the type, so they are refused.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    use bincode::Options;
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_limit(bytes.len() as u64)
        .deserialize(bytes)
        .map_err(|e| format!("{MALFORMED} {e}"))
}

/// How every refusal of an undecodable request begins.
const MALFORMED: &str = "malformed message:";

/// The transport's form of a refusal: requests that could not even be
/// read count against the peer (too many and its connection is closed).
pub(crate) fn rpc_failure(message: String) -> crate::transport::RpcFailure {
    if message.starts_with(MALFORMED) || message.starts_with(UNKNOWN_KIND) {
        crate::transport::RpcFailure::malformed(message)
    } else {
        crate::transport::RpcFailure::new(message)
    }
}

const UNKNOWN_KIND: &str = "unknown Raft RPC kind";

/// SST transfers under way on this node, as donor and as joiner (status).
#[derive(Debug, Default)]
pub struct TransferCounters {
    pub donating: std::sync::atomic::AtomicUsize,
    pub receiving: std::sync::atomic::AtomicUsize,
    /// Bytes of the latest SST this node donated, sent so far.
    pub donor_sent_bytes: AtomicU64,
    /// Size of the latest SST this node donated.
    pub donor_total_bytes: AtomicU64,
    /// Bytes of the latest SST this node received, so far.
    pub joiner_received_bytes: AtomicU64,
}

/// Counts a transfer for as long as it lives.
struct Busy<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> Busy<'a> {
    fn new(c: &'a std::sync::atomic::AtomicUsize) -> Busy<'a> {
        c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Busy(c)
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A member the leader has not reached for this long is reported suspected
/// (Galera's "suspecting node"); a few missed heartbeats on a loaded
/// machine are not worth a warning.
const SUSPECT_AFTER: std::time::Duration = std::time::Duration::from_secs(3);

/// How long the leader waits for a member's answer to an append before it
/// calls the member unreachable; a dead member is still found at once by
/// the transport when its connection fails.
const APPEND_PATIENCE: std::time::Duration = std::time::Duration::from_secs(1);
/// ... plus the time its bytes take at this rate, well below what a slow
/// link and disk manage.
const SLOWEST_APPEND_BYTES_PER_SEC: f64 = 8.0 * 1024.0 * 1024.0;

/// How the leader's replication to each member fares, for the "member
/// suspected" and "member back" log lines.
#[derive(Debug, Default)]
struct MemberHealth {
    failing_since: Option<std::time::Instant>,
    suspected: bool,
}

type Health = std::sync::Arc<std::sync::Mutex<std::collections::HashMap<NodeId, MemberHealth>>>;

/// Members that refused an append session (a node of an older version
/// during a rolling upgrade): replication to them sends one request at a
/// time, each on its own stream, until this node restarts.
type NoSessions = std::sync::Arc<std::sync::Mutex<std::collections::HashSet<NodeId>>>;

/// The network of one node: the transport, when it has peers.
#[derive(Clone)]
pub struct RaftNetwork {
    transport: Option<Transport>,
    transfers: std::sync::Arc<TransferCounters>,
    fence: std::sync::Arc<Fence>,
    health: Health,
    no_sessions: NoSessions,
}

impl RaftNetwork {
    pub fn new(
        transport: Option<Transport>,
        transfers: std::sync::Arc<TransferCounters>,
        fence: std::sync::Arc<Fence>,
    ) -> RaftNetwork {
        RaftNetwork {
            transport,
            transfers,
            fence,
            health: Health::default(),
            no_sessions: NoSessions::default(),
        }
    }
}

#[derive(Clone)]
pub struct Connection {
    transport: Option<Transport>,
    transfers: std::sync::Arc<TransferCounters>,
    fence: std::sync::Arc<Fence>,
    target: NodeId,
    addr: Option<SocketAddr>,
    name: String,
    health: Health,
    no_sessions: NoSessions,
}

impl RaftNetworkFactory<TypeConfig> for RaftNetwork {
    type Network = Connection;
    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> Connection {
        Connection {
            transport: self.transport.clone(),
            transfers: self.transfers.clone(),
            fence: self.fence.clone(),
            target,
            addr: node.repl_addr.parse().ok(),
            name: node.name.clone(),
            health: self.health.clone(),
            no_sessions: self.no_sessions.clone(),
        }
    }
}

fn unreachable(e: impl std::fmt::Display) -> RPCError<TypeConfig> {
    RPCError::Unreachable(Unreachable::new(&Msg(e.to_string())))
}

fn rpc_error(e: TransportError) -> RPCError<TypeConfig> {
    if e.is_connection_failure() {
        unreachable(e)
    } else {
        RPCError::Network(NetworkError::new(&e))
    }
}

impl Connection {
    fn route(&self) -> Result<(&Transport, SocketAddr), RPCError<TypeConfig>> {
        let Some(t) = &self.transport else {
            return Err(unreachable(format!(
                "node {} ({}): this node has no replication transport",
                self.target, self.name
            )));
        };
        let Some(addr) = self.addr else {
            return Err(unreachable(format!(
                "node {} ({}) has no valid replication address",
                self.target, self.name
            )));
        };
        Ok((t, addr))
    }

    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        kind: u8,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<TypeConfig>> {
        let (t, addr) = self.route()?;
        self.check_not_fenced()?;
        let body = encode(&(self.fence.stamp(), req))
            .map_err(|e| RPCError::Network(NetworkError::new(&Msg(e))))?;
        let patience = if kind == kind::APPEND {
            append_patience(option, body.len())
        } else {
            option.hard_ttl()
        };
        let reply = t
            .call_timeout(addr, Some(&self.name), kind, body, patience)
            .await
            .map_err(rpc_error)?;
        let reply = decode::<Reply<Resp>>(&reply)
            .map_err(|e| RPCError::Network(NetworkError::new(&Msg(e))))?;
        self.unwrap_reply(reply).map_err(unreachable)
    }

    fn check_not_fenced(&self) -> Result<(), RPCError<TypeConfig>> {
        if !self.fence.is_fenced() {
            return Ok(());
        }
        let n = self
            .fence
            .fenced()
            .map(|n| n.to_string())
            .unwrap_or_default();
        Err(unreachable(format!("this node is fenced ({n})")))
    }

    fn sessions_refused(&self) -> bool {
        self.no_sessions
            .lock()
            .map(|s| s.contains(&self.target))
            .unwrap_or(false)
    }

    /// Opens the append session to this member and starts pumping
    /// `input` into it.
    async fn open_append_pipe<S>(
        &mut self,
        input: S,
        option: RPCOption,
    ) -> Result<AppendPipe, RPCError<TypeConfig>>
    where
        S: futures::Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + Unpin + 'static,
    {
        let (t, addr) = self.route()?;
        self.check_not_fenced()?;
        let opened = t
            .open_session(addr, Some(&self.name), kind::APPEND_STREAM, Bytes::new())
            .await
            .map_err(rpc_error);
        // Opening sends nothing yet: only a failure says how the member is.
        if opened.is_err() {
            self.note_health(&opened);
        }
        let (sender, receiver) = opened?;
        Ok(AppendPipe::start(
            self.clone(),
            sender,
            receiver,
            input,
            option,
        ))
    }

    /// Notes how an append (replication or heartbeat, sent only by the
    /// leader) to this member went, and logs when the member starts or
    /// stops being suspected.
    fn note_health<T>(&self, result: &Result<T, RPCError<TypeConfig>>) {
        let now = std::time::Instant::now();
        let mut all = self.health.lock().unwrap_or_else(|p| p.into_inner());
        let h = all.entry(self.target).or_default();
        match result {
            Ok(_) => {
                if h.suspected {
                    let silent = h.failing_since.map(|t| now - t).unwrap_or_default();
                    tracing::info!(
                        member = %self.name,
                        silent_ms = silent.as_millis() as u64,
                        "member back: {} answers the leader again after {} ms",
                        self.name,
                        silent.as_millis()
                    );
                }
                *h = MemberHealth::default();
            }
            Err(e) => {
                let since = *h.failing_since.get_or_insert(now);
                if !h.suspected && now - since >= SUSPECT_AFTER {
                    h.suspected = true;
                    tracing::warn!(
                        member = %self.name,
                        addr = ?self.addr,
                        error = %e,
                        "member suspected: the leader has not reached {} for {} ms",
                        self.name,
                        (now - since).as_millis()
                    );
                }
            }
        }
    }

    /// A refusal is reported to openraft as an unreachable peer: it retries
    /// later, and a fenced node stops its Raft meanwhile.
    fn unwrap_reply<T>(&self, reply: Reply<T>) -> Result<T, String> {
        match reply {
            Reply::Ok(r) => Ok(r),
            Reply::Fenced(notice) => {
                let why = format!("{} refused this node: {notice}", self.name);
                self.fence.fence_self(notice);
                Err(why)
            }
            Reply::Refused(why) => Err(why),
        }
    }
}

/// How long the leader waits for a member's answer to an append of
/// `bytes`. openraft offers one heartbeat interval for every call. An
/// append that outlives it is usually a busy follower (an fsync behind a
/// checkpoint), not a lost one, and failing it as unreachable parks
/// replication to that member for openraft's whole backoff. A large batch
/// (a member catching up on big write-sets) gets time to travel and be
/// synced too, or it would fail forever.
fn append_patience(option: &RPCOption, bytes: usize) -> std::time::Duration {
    let transfer = bytes as f64 / SLOWEST_APPEND_BYTES_PER_SEC;
    option
        .hard_ttl()
        .max(APPEND_PATIENCE + std::time::Duration::from_secs_f64(transfer))
}

type StreamItem = Result<openraft::raft::StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>;

/// What the session's reader task hands to the response stream.
type Received = Result<Option<Bytes>, crate::transport::TransportError>;

/// One append session to a member, as openraft's response stream sees it:
/// a writer task sends openraft's requests as they come (each stamped and
/// given a deadline), a reader task passes the answers on, in order.
struct AppendPipe {
    conn: Connection,
    peer: SocketAddr,
    received: tokio::sync::mpsc::Receiver<Received>,
    /// Deadline and patience of each request sent and not answered yet,
    /// oldest first.
    owed: std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<Owed>>>,
    sent: std::sync::Arc<tokio::sync::Notify>,
    /// Requests that may be unanswered at once.
    window: std::sync::Arc<tokio::sync::Semaphore>,
    _tasks: AbortOnDrop,
    ended: bool,
}

/// An answer the member owes: by when, after how long a wait.
#[derive(Clone, Copy)]
struct Owed {
    deadline: tokio::time::Instant,
    patience: std::time::Duration,
}

/// Stops the session's tasks when openraft drops the response stream (a
/// new leader, a new session): their halves of the stream are dropped too.
struct AbortOnDrop(Vec<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// Buffer of the follower's pipeline into openraft.
const APPEND_PIPELINE_DEPTH: usize = 64;

/// Append requests a member may owe answers to at once. Two let the next
/// batch of write-sets go while the last is being synced, or while an
/// entry-less request carries the commit index; more only made the batches
/// smaller on loopback (the same throughput for more CPU per write).
const APPEND_WINDOW: usize = 2;

impl AppendPipe {
    fn start<S>(
        conn: Connection,
        mut sender: crate::transport::SessionSender,
        mut receiver: crate::transport::SessionReceiver,
        mut input: S,
        option: RPCOption,
    ) -> AppendPipe
    where
        S: futures::Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + Unpin + 'static,
    {
        use futures::StreamExt;
        let peer = conn
            .addr
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        let (tx, received) = tokio::sync::mpsc::channel::<Received>(APPEND_PIPELINE_DEPTH);
        let deadlines =
            std::sync::Arc::new(std::sync::Mutex::new(std::collections::VecDeque::new()));
        let sent = std::sync::Arc::new(tokio::sync::Notify::new());
        let window = std::sync::Arc::new(tokio::sync::Semaphore::new(APPEND_WINDOW));
        let reader = {
            let tx = tx.clone();
            tokio::spawn(async move {
                loop {
                    let got = receiver.next().await;
                    let more = matches!(got, Ok(Some(_)));
                    if tx.send(got).await.is_err() || !more {
                        break;
                    }
                }
            })
        };
        let writer = {
            let fence = conn.fence.clone();
            let deadlines = deadlines.clone();
            let sent = sent.clone();
            let window = window.clone();
            tokio::spawn(async move {
                loop {
                    // Pulled only when the window has room: openraft builds
                    // the request at that moment, from every entry appended
                    // by then, so a busy leader sends fewer, larger ones.
                    match window.acquire().await {
                        Ok(permit) => permit.forget(),
                        Err(_) => return,
                    }
                    let Some(req) = input.next().await else { break };
                    let body = match encode(&(fence.stamp(), &req)) {
                        Ok(b) => b,
                        Err(e) => {
                            let e = crate::transport::TransportError::Stream { peer, reason: e };
                            let _ = tx.send(Err(e)).await;
                            return;
                        }
                    };
                    let patience = append_patience(&option, body.len());
                    let owed = Owed {
                        deadline: tokio::time::Instant::now() + patience,
                        patience,
                    };
                    if let Ok(mut d) = deadlines.lock() {
                        d.push_back(owed);
                    }
                    sent.notify_one();
                    if let Err(e) = sender.send(body).await {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
                sender.finish();
            })
        };
        AppendPipe {
            conn,
            peer,
            received,
            owed: deadlines,
            sent,
            window,
            _tasks: AbortOnDrop(vec![reader.abort_handle(), writer.abort_handle()]),
            ended: false,
        }
    }

    fn oldest_owed(&self) -> Option<Owed> {
        self.owed.lock().ok().and_then(|d| d.front().copied())
    }

    /// The next answer; `None` when the session is over.
    async fn next(&mut self) -> Option<StreamItem> {
        if self.ended {
            return None;
        }
        let got = loop {
            match self.oldest_owed() {
                Some(owed) => {
                    match tokio::time::timeout_at(owed.deadline, self.received.recv()).await {
                        Ok(got) => break got,
                        Err(_) => {
                            break Some(Err(crate::transport::TransportError::Timeout {
                                peer: self.peer,
                                after: owed.patience,
                            }))
                        }
                    }
                }
                // Nothing owed: wait for an answer (the end) or a request.
                None => tokio::select! {
                    got = self.received.recv() => break got,
                    _ = self.sent.notified() => continue,
                },
            }
        };
        let item = match got {
            None => {
                self.ended = true;
                return None;
            }
            Some(Ok(None)) => {
                if self.oldest_owed().is_none() {
                    self.ended = true;
                    return None;
                }
                Err(unreachable(format!(
                    "{} ended the append session with answers still owed",
                    self.conn.name
                )))
            }
            Some(Ok(Some(body))) => {
                if let Ok(mut d) = self.owed.lock() {
                    d.pop_front();
                }
                self.window.add_permits(1);
                match decode::<Reply<openraft::raft::StreamAppendResult<TypeConfig>>>(&body) {
                    Ok(reply) => self.conn.unwrap_reply(reply).map_err(unreachable),
                    Err(e) => Err(RPCError::Network(NetworkError::new(&Msg(e)))),
                }
            }
            Some(Err(e)) => {
                if matches!(
                    e,
                    crate::transport::TransportError::Frame {
                        source: crate::transport::FrameError::Rejected(_),
                        ..
                    }
                ) {
                    // A node of an older version: it does not know the
                    // session frame. Later sessions fall back to requests.
                    if let Ok(mut s) = self.conn.no_sessions.lock() {
                        s.insert(self.conn.target);
                    }
                    tracing::info!(member = %self.conn.name, "{} does not take append sessions (an older version); replicating to it one request at a time", self.conn.name);
                }
                Err(rpc_error(e))
            }
        };
        // openraft ends the session at a conflict, a higher vote or an error.
        if !matches!(item, Ok(Ok(_))) {
            self.ended = true;
        }
        self.conn.note_health(&item);
        Some(item)
    }
}

impl RaftNetworkV2<TypeConfig> for Connection {
    type SnapshotData = SnapshotFile;

    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> futures::future::BoxFuture<
        's,
        Result<futures::stream::BoxStream<'s, StreamItem>, RPCError<TypeConfig>>,
    >
    where
        S: futures::Stream<Item = AppendEntriesRequest<TypeConfig>>
            + OptionalSend
            + Unpin
            + 'static,
    {
        if self.sessions_refused() {
            return openraft::network::stream_append_sequential(self, input, option);
        }
        Box::pin(async move {
            let pipe = self.open_append_pipe(input, option).await?;
            let answers = futures::stream::unfold(pipe, |mut pipe| async move {
                pipe.next().await.map(|item| (item, pipe))
            });
            Ok(Box::pin(answers) as futures::stream::BoxStream<'s, StreamItem>)
        })
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let result = self.call(kind::APPEND, &rpc, &option).await;
        self.note_health(&result);
        result
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(kind::VOTE, &rpc, &option).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(kind::PRE_VOTE, &rpc, &option).await
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(kind::TRANSFER_LEADER, &req, &option).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: openraft::alias::SnapshotOf<TypeConfig, SnapshotFile>,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let (t, addr) = self.route().map_err(StreamingError::from)?;
        let _donor = Busy::new(&self.transfers.donating);
        let header = encode(&(self.fence.stamp(), vote, snapshot.meta.clone()))
            .map_err(|e| StreamingError::Network(NetworkError::new(&Msg(e))))?;
        let file = tokio::fs::File::open(&snapshot.snapshot.path)
            .await
            .map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
        let size = file.metadata().await.map(|m| m.len()).unwrap_or(0);
        let target = self.name.clone();
        tracing::info!(joiner = %target, bytes = size, "SST started: streaming a snapshot to {target}");
        let started = std::time::Instant::now();
        let last_log = std::sync::atomic::AtomicU64::new(0);
        let transfers = self.transfers.clone();
        transfers.donor_total_bytes.store(size, Ordering::Relaxed);
        transfers.donor_sent_bytes.store(0, Ordering::Relaxed);
        let progress = move |sent: u64| {
            transfers.donor_sent_bytes.store(sent, Ordering::Relaxed);
            let step = (size / 10).max(8 << 20);
            if sent >= last_log.load(std::sync::atomic::Ordering::Relaxed) + step {
                last_log.store(sent, std::sync::atomic::Ordering::Relaxed);
                tracing::info!("SST progress: {sent} of {size} bytes sent");
            }
        };
        let upload = t.call_stream(
            addr,
            Some(&self.name),
            kind::SNAPSHOT,
            header,
            file,
            progress,
        );
        let reply = tokio::select! {
            r = upload => r.map_err(|e| StreamingError::from(rpc_error(e)))?,
            closed = cancel => return Err(StreamingError::Closed(closed)),
        };
        let reply = decode::<Reply<SnapshotResponse<TypeConfig>>>(&reply)
            .map_err(|e| StreamingError::Network(NetworkError::new(&Msg(e))))?;
        let reply = self
            .unwrap_reply(reply)
            .map_err(|e| StreamingError::from(unreachable(e)))?;
        tracing::info!(joiner = %self.name, "SST done in {:.1} s", started.elapsed().as_secs_f64());
        Ok(reply)
    }
}

/// The judgement every stamped Raft message from a peer gets: its stamp
/// first (a message of another incarnation or cluster never reaches
/// openraft), then the member it claims to be against its certificate
/// name. `Ok(Err(refusal))` is an answer for the caller; `Err` a failure.
fn judge<T>(
    fence: &Fence,
    caller: &str,
    stamp: &Stamp,
    sender: Option<NodeId>,
    is_member: impl Fn(NodeId) -> bool,
    check_sender: impl Fn(NodeId) -> Result<(), String>,
) -> Result<Result<(), Reply<T>>, String> {
    if let Err(refusal) = fence.admit(stamp, caller, sender.is_some_and(is_member)) {
        return Ok(Err(refusal));
    }
    if let Some(sender) = sender {
        check_sender(sender)?;
    }
    Ok(Ok(()))
}

/// Answer one incoming Raft RPC: the sender's stamp is judged first (a
/// message of another incarnation or cluster never reaches openraft), then
/// the member it claims to be is checked against its certificate name.
/// The flag says whether openraft saw the message.
pub async fn serve_rpc(
    raft: &Raft,
    fence: &Fence,
    caller: &str,
    check_sender: impl Fn(NodeId) -> Result<(), String>,
    is_member: impl Fn(NodeId) -> bool,
    kind: u8,
    body: &[u8],
) -> Result<(Bytes, bool), String> {
    use openraft::vote::RaftLeaderId;
    fn stamped<T: DeserializeOwned>(body: &[u8]) -> Result<(Stamp, T), String> {
        decode(body)
    }
    macro_rules! answer {
        ($req:expr, $sender:expr, $call:expr) => {{
            let (stamp, req) = $req;
            let sender: Option<NodeId> = $sender(&req);
            if let Err(refusal) =
                judge::<()>(fence, caller, &stamp, sender, &is_member, &check_sender)?
            {
                return Ok((encode(&refusal)?, false));
            }
            let resp = $call(req).await.map_err(|e| e.to_string())?;
            Ok((encode(&Reply::Ok(resp))?, true))
        }};
    }
    match kind {
        kind::VOTE => answer!(
            stamped::<VoteRequest<TypeConfig>>(body)?,
            |r: &VoteRequest<TypeConfig>| Some(*r.vote.leader_id().node_id()),
            |r| raft.vote(r)
        ),
        kind::PRE_VOTE => answer!(
            stamped::<VoteRequest<TypeConfig>>(body)?,
            |r: &VoteRequest<TypeConfig>| Some(*r.vote.leader_id().node_id()),
            |r| raft.pre_vote(r)
        ),
        kind::APPEND => answer!(
            stamped::<AppendEntriesRequest<TypeConfig>>(body)?,
            |r: &AppendEntriesRequest<TypeConfig>| Some(*r.vote.leader_id().node_id()),
            |r| raft.append_entries(r)
        ),
        kind::TRANSFER_LEADER => answer!(
            stamped::<TransferLeaderRequest<TypeConfig>>(body)?,
            |_: &TransferLeaderRequest<TypeConfig>| None::<NodeId>,
            |r| raft.handle_transfer_leader(r)
        ),
        other => Err(format!("{UNKNOWN_KIND} {other}")),
    }
}

/// Serve one append session from the leader: each message is a stamped
/// append-entries request, judged like a unary one (stamp first, then the
/// member it claims to be), and handed to openraft's pipeline, which
/// answers them in order. A refusal is sent after the answers to the
/// requests before it, and ends the session. `seen` runs for every request
/// openraft gets.
#[allow(clippy::too_many_arguments)]
pub async fn serve_append_session(
    raft: &Raft,
    fence: &Fence,
    caller: &str,
    check_sender: impl Fn(NodeId) -> Result<(), String>,
    is_member: impl Fn(NodeId) -> bool,
    seen: impl Fn(),
    mut messages: crate::transport::SessionReceiver,
    mut replies: crate::transport::SessionSender,
) {
    use futures::StreamExt;
    use openraft::vote::RaftLeaderId;
    let (requests, pending) = tokio::sync::mpsc::channel(APPEND_PIPELINE_DEPTH);
    let input = futures::stream::unfold(pending, |mut rx| async move {
        rx.recv().await.map(|req| (req, rx))
    });
    let mut answers = Box::pin(raft.stream_append(input));
    // Why the session ends early: a refusal for the leader, or the text
    // of a failure.
    let feed = async move {
        loop {
            let body = match messages.next().await {
                Ok(Some(body)) => body,
                Ok(None) => return None,
                Err(e) => return Some(Err(e.to_string())),
            };
            let (stamp, req) = match decode::<(Stamp, AppendEntriesRequest<TypeConfig>)>(&body) {
                Ok(r) => r,
                Err(e) => return Some(Err(e)),
            };
            let sender = Some(*req.vote.leader_id().node_id());
            match judge::<openraft::raft::StreamAppendResult<TypeConfig>>(
                fence,
                caller,
                &stamp,
                sender,
                &is_member,
                &check_sender,
            ) {
                Ok(Ok(())) => {}
                Ok(Err(refusal)) => return Some(Ok(refusal)),
                Err(e) => return Some(Err(e)),
            }
            seen();
            if requests.send(req).await.is_err() {
                // openraft ended the pipeline (a conflict): its last answer
                // says why.
                return None;
            }
        }
    };
    let answer = async {
        while let Some(item) = answers.next().await {
            let (reply, last) = match item {
                Ok(r) => {
                    let last = r.is_err();
                    (Reply::Ok(r), last)
                }
                Err(fatal) => (Reply::Refused(fatal.to_string()), true),
            };
            let sent = match encode(&reply) {
                Ok(body) => replies.send(body).await.is_ok(),
                Err(_) => false,
            };
            if !sent || last {
                return false;
            }
        }
        true
    };
    let (early, drained) = tokio::join!(feed, answer);
    match early {
        Some(Ok(refusal)) if drained => {
            if let Ok(body) = encode(&refusal) {
                let _ = replies.send(body).await;
            }
            replies.finish();
        }
        Some(Err(why)) => replies.fail(&why).await,
        _ => replies.finish(),
    }
}

/// Whether `body` decodes as a (stamped) Raft request of `kind`, as
/// `serve_rpc` would read it; for tests of hostile input.
pub fn check_request(kind: u8, body: &[u8]) -> Result<(), String> {
    match kind {
        kind::VOTE | kind::PRE_VOTE => decode::<(Stamp, VoteRequest<TypeConfig>)>(body).map(|_| ()),
        kind::APPEND => decode::<(Stamp, AppendEntriesRequest<TypeConfig>)>(body).map(|_| ()),
        kind::TRANSFER_LEADER => {
            decode::<(Stamp, TransferLeaderRequest<TypeConfig>)>(body).map(|_| ())
        }
        kind::SNAPSHOT => decode::<(Stamp, Vote, SnapshotMeta)>(body).map(|_| ()),
        other => Err(format!("{UNKNOWN_KIND} {other}")),
    }
}

fn snapshot_too_large(max_bytes: u64) -> String {
    format!(
        "the donor's snapshot is larger than storage.max_snapshot_bytes ({max_bytes} bytes); \
         raise it on this node if the database really is that large"
    )
}

/// Receive a streamed snapshot (SST) into `dir`, and install it only once
/// every byte arrived: a broken-off transfer leaves nothing behind.
/// Where received snapshots go, and who counts them.
pub struct SnapshotInbox<'a> {
    pub dir: &'a Path,
    pub transfers: &'a TransferCounters,
    /// A donor sending more than this is cut off (`storage.max_snapshot_bytes`).
    pub max_bytes: u64,
}

pub async fn serve_snapshot(
    raft: &Raft,
    fence: &Fence,
    caller: &str,
    check_sender: impl Fn(NodeId) -> Result<(), String>,
    inbox: SnapshotInbox<'_>,
    header: &[u8],
    mut chunks: ChunkStream,
) -> Result<Bytes, String> {
    let SnapshotInbox {
        dir,
        transfers,
        max_bytes,
    } = inbox;
    let (stamp, vote, meta): (Stamp, Vote, SnapshotMeta) = decode(header)?;
    // Only a leader sends snapshots; one of an older incarnation is fenced.
    if let Err(refusal) = fence.admit::<SnapshotResponse<TypeConfig>>(&stamp, caller, false) {
        return encode(&refusal);
    }
    {
        use openraft::vote::RaftLeaderId;
        check_sender(*vote.leader_id().node_id())?;
    }
    let _joiner = Busy::new(&transfers.receiving);
    let path: PathBuf = dir.join(format!("receiving-{:016x}.tmp", rand::random::<u64>()));
    tracing::info!(index = ?meta.last_log_id.as_ref().map(|l| l.index), "SST: receiving a snapshot from the donor");
    let received = async {
        let mut file = tokio::fs::File::create(&path)
            .await
            .map_err(|e| e.to_string())?;
        transfers.joiner_received_bytes.store(0, Ordering::Relaxed);
        while let Some(chunk) = chunks.next().await.map_err(|e| e.to_string())? {
            transfers
                .joiner_received_bytes
                .store(chunks.bytes_received(), Ordering::Relaxed);
            // Checked before writing: an endless stream must not fill the disk.
            if chunks.bytes_received() > max_bytes {
                return Err(snapshot_too_large(max_bytes));
            }
            file.write_all(&chunk).await.map_err(|e| e.to_string())?;
        }
        file.sync_all().await.map_err(|e| e.to_string())?;
        Ok::<u64, String>(chunks.bytes_received())
    }
    .await;
    let bytes = match received {
        Ok(b) => b,
        Err(e) => {
            let _ = tokio::fs::remove_file(&path).await;
            tracing::warn!("SST broke off: {e}; the partial copy was discarded");
            return Err(format!("snapshot transfer broke off: {e}"));
        }
    };
    tracing::info!(bytes, "SST: snapshot received; installing");
    let snapshot = openraft::alias::SnapshotOf::<TypeConfig, SnapshotFile> {
        meta,
        snapshot: SnapshotFile { path: path.clone() },
    };
    let resp = raft
        .install_full_snapshot(vote, snapshot)
        .await
        .map_err(|e| e.to_string());
    if resp.is_err() {
        let _ = tokio::fs::remove_file(&path).await;
    }
    encode(&Reply::Ok(resp?))
}

#[cfg(test)]
mod tests {
    use openraft::entry::RaftEntry as _;
    use openraft::vote::RaftLeaderIdExt as _;
    use proptest::prelude::*;

    use super::*;
    use crate::order::types::{Entry, LogId, Request};
    use crate::sql::{Params, SqlValue, Statement};
    use crate::writeset::{CertKey, Payload, WriteSet};

    fn log_id(term: u64, index: u64) -> LogId {
        LogId::new(
            openraft::alias::LeaderIdOf::<TypeConfig>::new_committed(term, 7),
            index,
        )
    }

    fn writeset(payload: Payload) -> WriteSet {
        WriteSet {
            origin: "node-a".into(),
            trx_id: 42,
            snapshot_seqno: 9,
            keys: vec![CertKey(b"t\0\x01".to_vec()), CertKey(vec![0xff; 20])],
            payload,
        }
    }

    fn append_request() -> AppendEntriesRequest<TypeConfig> {
        let statements = Payload::Statements(vec![Statement {
            sql: "CREATE TABLE t(id INTEGER PRIMARY KEY, v)".into(),
            params: Params::Positional(vec![
                SqlValue::Null,
                SqlValue::Real(1.5),
                SqlValue::Text("é".into()),
                SqlValue::Blob(vec![1, 2, 3]),
            ]),
        }]);
        AppendEntriesRequest {
            vote: Vote::new_committed(3, 7),
            prev_log_id: Some(log_id(3, 10)),
            entries: vec![
                Entry::new_blank(log_id(3, 11)),
                Entry::new_normal(log_id(3, 12), Request::WriteSet(writeset(statements))),
                Entry::new_normal(
                    log_id(3, 13),
                    Request::WriteSet(writeset(Payload::Changeset(vec![0x54, 2, 1, 1, 0]))),
                ),
            ],
            leader_commit: Some(log_id(3, 12)),
        }
    }

    /// Every decoder of peer bytes that `serve_rpc`, `serve_snapshot` and
    /// the forwarders use; `Ok` or `Err`, never a panic.
    fn decode_every_kind(bytes: &[u8]) {
        let _ = decode::<(Stamp, AppendEntriesRequest<TypeConfig>)>(bytes);
        let _ = decode::<(Stamp, VoteRequest<TypeConfig>)>(bytes);
        let _ = decode::<(Stamp, TransferLeaderRequest<TypeConfig>)>(bytes);
        let _ = decode::<(Stamp, Vote, SnapshotMeta)>(bytes);
        let _ = decode::<Reply<AppendEntriesResponse<TypeConfig>>>(bytes);
        let _ = decode::<Reply<VoteResponse<TypeConfig>>>(bytes);
        let _ = decode::<Reply<SnapshotResponse<TypeConfig>>>(bytes);
        let _ = decode::<AppendEntriesRequest<TypeConfig>>(bytes);
        let _ = decode::<AppendEntriesResponse<TypeConfig>>(bytes);
        let _ = decode::<VoteRequest<TypeConfig>>(bytes);
        let _ = decode::<VoteResponse<TypeConfig>>(bytes);
        let _ = decode::<TransferLeaderRequest<TypeConfig>>(bytes);
        let _ = decode::<(Vote, SnapshotMeta)>(bytes);
        let _ = decode::<SnapshotResponse<TypeConfig>>(bytes);
        let _ = decode::<WriteSet>(bytes);
        let _ = decode::<crate::order::ForwardOutcome>(bytes);
        let _ = decode::<Vec<WriteSet>>(bytes);
        let _ = decode::<Vec<crate::order::ForwardOutcome>>(bytes);
        let _ = decode::<(Stamp, Vec<WriteSet>)>(bytes);
        let _ = decode::<Reply<Vec<crate::order::ForwardOutcome>>>(bytes);
        let _ = decode::<u64>(bytes);
    }

    #[test]
    fn decode_reads_what_encode_and_plain_bincode_write() {
        let req = append_request();
        let bytes = encode(&req).unwrap();
        // Peers of an earlier build encode with `bincode::serialize`.
        assert_eq!(&bytes[..], &bincode::serialize(&req).unwrap()[..]);
        let back: AppendEntriesRequest<TypeConfig> = decode(&bytes).unwrap();
        assert_eq!(back.entries, req.entries);
        assert_eq!(back.vote, req.vote);
    }

    #[test]
    fn truncated_or_padded_messages_are_refused() {
        let bytes = encode(&append_request()).unwrap();
        for cut in 0..bytes.len() {
            assert!(
                decode::<AppendEntriesRequest<TypeConfig>>(&bytes[..cut]).is_err(),
                "cut at {cut} of {}",
                bytes.len()
            );
        }
        let mut padded = bytes.to_vec();
        padded.push(0);
        let err = decode::<AppendEntriesRequest<TypeConfig>>(&padded).unwrap_err();
        assert!(err.contains("malformed message"), "{err}");
    }

    #[test]
    fn huge_length_prefixes_are_errors_not_allocations() {
        // Every 8-byte window of a valid message replaced by a length a
        // peer could claim: each must fail fast (a Vec of 2^60 entries
        // would abort the process if it were reserved).
        let bytes = encode(&append_request()).unwrap().to_vec();
        for claim in [u64::MAX, 1 << 60, 1 << 32, u64::from(u32::MAX)] {
            for at in 0..bytes.len().saturating_sub(8) {
                let mut b = bytes.clone();
                b[at..at + 8].copy_from_slice(&claim.to_le_bytes());
                decode_every_kind(&b);
            }
        }
        // A bare claim with nothing behind it.
        let err = decode::<WriteSet>(&[0u8; 0]).unwrap_err();
        assert!(err.contains("malformed message"), "{err}");
        let mut claim = vec![6, 0, 0, 0, 0, 0, 0, 0];
        claim.extend_from_slice(b"node-a");
        claim.extend_from_slice(&[0; 16]);
        claim.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode::<WriteSet>(&claim).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            decode_every_kind(&bytes);
        }

        #[test]
        fn damaged_messages_never_panic(
            flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..6),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut bytes = encode(&append_request()).unwrap().to_vec();
            for (at, mask) in flips {
                let i = at.index(bytes.len());
                bytes[i] ^= mask;
            }
            decode_every_kind(&bytes);
            let n = cut.index(bytes.len());
            decode_every_kind(&bytes[..n]);
            prop_assert!(decode::<AppendEntriesRequest<TypeConfig>>(&bytes[..n]).is_err());
        }
    }

    /// A member of a build before sessions (a rolling upgrade): it answers
    /// unary appends, and rejects the session frame as unknown.
    struct OlderMember {
        appends: std::sync::atomic::AtomicUsize,
    }

    impl crate::transport::RpcHandler for OlderMember {
        async fn handle(
            &self,
            _peer: crate::transport::PeerIdentity,
            kind: u8,
            body: bytes::Bytes,
        ) -> Result<bytes::Bytes, crate::transport::RpcFailure> {
            if kind != kind::APPEND {
                return Err(crate::transport::RpcFailure::new(format!(
                    "unknown kind {kind}"
                )));
            }
            decode::<(Stamp, AppendEntriesRequest<TypeConfig>)>(&body)
                .map_err(crate::transport::RpcFailure::new)?;
            self.appends
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let ok: Reply<AppendEntriesResponse<TypeConfig>> =
                Reply::Ok(AppendEntriesResponse::Success);
            encode(&ok).map_err(crate::transport::RpcFailure::new)
        }

        async fn handle_stream(
            &self,
            _peer: crate::transport::PeerIdentity,
            kind: u8,
            _header: bytes::Bytes,
            _chunks: crate::transport::ChunkStream,
        ) -> Result<bytes::Bytes, crate::transport::RpcFailure> {
            Err(crate::transport::RpcFailure::new(format!(
                "unknown upload kind {kind}"
            )))
        }
    }

    #[tokio::test]
    async fn a_member_that_rejects_sessions_gets_one_request_at_a_time() {
        use crate::transport::{Transport, TransportOptions};
        use futures::StreamExt as _;
        use std::sync::atomic::Ordering::SeqCst;

        let p = crate::transport::tests::pki();
        let identity = |name| crate::transport::tests::identity(&p, name);
        let dir = tempfile::tempdir().unwrap();
        let local = "127.0.0.1:0".parse().unwrap();
        let leader = Transport::bind(
            local,
            identity("node-a"),
            TransportOptions::new("c", "node-a"),
        )
        .await
        .unwrap();
        let older = Transport::bind(
            local,
            identity("node-b"),
            TransportOptions {
                serve_sessions: false,
                ..TransportOptions::new("c", "node-b")
            },
        )
        .await
        .unwrap();
        let member = std::sync::Arc::new(OlderMember {
            appends: Default::default(),
        });
        let _serving = older.serve(member.clone());

        let store = crate::store::Store::open_in_memory(crate::store::StoreOptions {
            read_connections: 1,
            max_writeset_bytes: 1 << 20,
            cert_window: 1000,
        })
        .unwrap();
        let fence = Fence::new(
            std::sync::Arc::new(store),
            None,
            "node-a",
            &leader.local_addr().to_string(),
            dir.path(),
            None,
        );
        let mut network = RaftNetwork::new(Some(leader.clone()), Default::default(), fence);
        let info = NodeInfo {
            name: "node-b".into(),
            repl_addr: older.local_addr().to_string(),
            api_addr: String::new(),
            arbitrator: false,
        };
        let mut conn = network.new_client(2, &info).await;
        let option = RPCOption::new(std::time::Duration::from_secs(2));

        // The session is refused: that round fails like an unreachable
        // member, and the member is remembered.
        let input = futures::stream::iter(vec![append_request()]);
        let mut answers = conn.stream_append(input, option.clone()).await.unwrap();
        let first = answers.next().await.expect("an answer or an error");
        assert!(first.is_err(), "a rejected session must fail the round");
        drop(answers);
        assert!(conn.sessions_refused());
        assert_eq!(member.appends.load(SeqCst), 0);

        // openraft's next round goes request by request, each on its own stream.
        let input = futures::stream::iter(vec![append_request(), append_request()]);
        let answers: Vec<_> = conn
            .stream_append(input, option)
            .await
            .unwrap()
            .collect()
            .await;
        assert_eq!(answers.len(), 2);
        for a in &answers {
            assert!(matches!(a, Ok(Ok(_))), "{a:?}");
        }
        assert_eq!(member.appends.load(SeqCst), 2);
        // A new connection object for the same member keeps the fallback.
        assert!(network.new_client(2, &info).await.sessions_refused());
    }
}
