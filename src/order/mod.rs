//! Ordering: the total order of write-sets, sequenced by openraft.
//!
//! openraft is pinned exactly (`=0.10.0-alpha.37`) and used only inside this
//! module: `types` (what the log carries), `log_store` (the gcache),
//! `state_machine` (certify + apply into SQLite), `network` (RPCs). The rest
//! of quorate sees [`Sequencer`].

pub mod arbitrator;
pub mod fence;
pub mod flow;
pub mod forward;
pub mod log_store;
pub mod network;
pub mod propose;
pub mod recover;
mod shared_ask;
pub mod state_machine;
pub mod types;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::Instant as _;
use openraft::{Config as RaftConfig, ServerState, SnapshotPolicy};

use std::sync::atomic::{AtomicU64, Ordering};

use crate::store::Store;
use crate::transport::{PeerIdentity, Transport};
use crate::writeset::{ApplyOutcome, WriteSet};
pub use log_store::LogStore;
pub use state_machine::{ApplyWaiters, StateMachine};
pub use types::{NodeId, NodeInfo, Raft, Request, Response};

#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    #[error("cannot open the write-set log in {path}: {source}")]
    Log {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot start the Raft sequencer: {0}")]
    Start(String),
    #[error("bootstrap failed: {0}")]
    Bootstrap(String),
}

/// Why a submitted write-set has no verdict.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// Certainly not ordered: nothing was appended.
    #[error("{0}")]
    NotPrimary(String),
    /// Submitted, but no verdict arrived: it may or may not commit.
    #[error("{0}")]
    Unknown(String),
}

/// What the leader says about a forwarded write-set.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum ForwardOutcome {
    /// Ordered (and applied on the leader); the origin waits for its own apply.
    Ordered,
    /// Never appended: the receiver is not the leader.
    NotLeader,
    /// Appended or not: unknown.
    Failed(String),
    /// Refused unread, and would be again: the sender is fenced, of another
    /// cluster, or not a member (only in answers to `FORWARD_STAMPED`).
    Refused(String),
}

impl From<propose::Proposed> for ForwardOutcome {
    fn from(p: propose::Proposed) -> Self {
        match p {
            propose::Proposed::Ordered => ForwardOutcome::Ordered,
            propose::Proposed::NotLeader(_) => ForwardOutcome::NotLeader,
            propose::Proposed::Failed(m) => ForwardOutcome::Failed(m),
        }
    }
}

/// Tunables of the sequencer, from the config.
#[derive(Debug, Clone)]
pub struct SequencerOptions {
    pub cluster_name: String,
    pub heartbeat_ms: u64,
    pub election_timeout_ms: u64,
    pub snapshot_every_entries: u64,
    pub log_retain_entries: u64,
    pub flow_control_limit: usize,
    /// Largest snapshot accepted from a donor (`storage.max_snapshot_bytes`).
    pub max_snapshot_bytes: u64,
}

/// The node's handle on the total order.
pub struct Sequencer {
    /// Replaced (under this lock) only by a forced bootstrap, which restarts
    /// Raft on rewritten storage; everything else clones it per use.
    raft: Arc<std::sync::RwLock<Raft>>,
    /// Batches this node's proposals into openraft (see `propose`).
    proposer: propose::Proposer,
    /// Batches write-sets forwarded to the leader (with a transport).
    forwarder: Option<forward::Forwarder>,
    raft_config: Arc<RaftConfig>,
    store: Arc<Store>,
    fence: Arc<fence::Fence>,
    node_id: NodeId,
    node_info: NodeInfo,
    waiters: Arc<ApplyWaiters>,
    log: LogStore,
    transport: Option<Transport>,
    snapshot_dir: std::path::PathBuf,
    max_snapshot_bytes: u64,
    started: std::time::Instant,
    /// Milliseconds after `started` when a leader last reached us (0: never).
    last_leader_contact_ms: AtomicU64,
    transfers: Arc<network::TransferCounters>,
    flow: flow::FlowControl,
    data_dir: std::path::PathBuf,
    /// Set while Raft is stopped on a storage error (see `recover`): what
    /// failed and what to do.
    storage_fault: std::sync::Mutex<Option<String>>,
    /// Set by [`Sequencer::shutdown`]: Raft is not to be started again.
    stopping: std::sync::atomic::AtomicBool,
    /// Held while Raft is being replaced (a forced bootstrap, a restart
    /// after a storage fault), so that two never interleave.
    restarting: tokio::sync::Mutex<()>,
    /// The causal wait's question to the leader, shared by the writes of
    /// one turn (see `shared_ask`).
    commit_index_ask: shared_ask::SharedAsk<Result<Option<u64>, String>>,
}

/// Transport kinds of the node-level requests between members.
pub mod peer_kind {
    /// A follower hands a write-set to the leader to be ordered.
    pub const FORWARD_WRITE: u8 = 20;
    /// A follower asks the leader for a linearizable read index.
    pub const READ_INDEX: u8 = 21;
    /// A follower asks the leader what it knows to be committed (no quorum round).
    pub const COMMIT_INDEX: u8 = 22;
    /// A follower hands several write-sets to the leader at once.
    pub const FORWARD_WRITES: u8 = 23;
    /// Like `FORWARD_WRITES`, with the follower's fencing stamp first, as
    /// Raft messages carry it: a node of another cluster state or of an
    /// older incarnation is refused by what it is, not only by its name.
    pub const FORWARD_STAMPED: u8 = 24;
}

/// Node ids are made once per data directory and never reused.
fn load_or_make_node_id(raft_dir: &Path) -> std::io::Result<NodeId> {
    let path = raft_dir.join("node-id");
    match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().parse::<NodeId>().map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} is damaged: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Zero is avoided so that it can never be confused with "unset".
            let id = rand::random::<u64>().max(1);
            log_store::write_file_durably(&path, format!("{id}\n").as_bytes())?;
            Ok(id)
        }
        Err(e) => Err(e),
    }
}

impl Sequencer {
    pub async fn open(
        data_dir: &Path,
        node_info: NodeInfo,
        opts: &SequencerOptions,
        store: Arc<Store>,
        transport: Option<crate::transport::Transport>,
    ) -> Result<Sequencer, OrderError> {
        let raft_dir = data_dir.join("log");
        let io_err = |source| OrderError::Log {
            path: raft_dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(&raft_dir).map_err(io_err)?;
        let node_id = load_or_make_node_id(&raft_dir).map_err(io_err)?;
        let log = LogStore::open(&raft_dir).map_err(io_err)?;
        let waiters = Arc::new(ApplyWaiters::new(&node_info.name));
        // Incarnations the log holds beyond what was applied count for the stamp.
        if let Ok(Some(Ok(st))) = store
            .raft_state()
            .map(|b| b.map(|b| state_machine::RaftState::decode(&b)))
        {
            use openraft::storage::RaftLogReader;
            let from = st.last_applied.map(|l| l.index + 1).unwrap_or(0);
            let unapplied = log
                .clone()
                .try_get_log_entries(from..)
                .await
                .map_err(io_err)?;
            log.note_incarnations(&unapplied);
        }
        let fence = fence::Fence::new(
            store.clone(),
            Some(log.clone()),
            &node_info.name,
            &node_info.repl_addr,
            data_dir,
            None,
        );
        let sm = StateMachine::open(
            store.clone(),
            &data_dir.join("snapshots"),
            waiters.clone(),
            fence.clone(),
        )
        .map_err(io_err)?;
        let sm = if node_info.arbitrator {
            sm.for_arbitrator(data_dir.join(arbitrator::STATE_FILE))
        } else {
            sm
        };
        let config = RaftConfig {
            cluster_name: opts.cluster_name.clone(),
            heartbeat_interval: opts.heartbeat_ms,
            election_timeout_min: opts.election_timeout_ms,
            election_timeout_max: opts.election_timeout_ms * 2,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(opts.snapshot_every_entries),
            max_in_snapshot_log_to_keep: opts.log_retain_entries,
            // A node that rejoins with a stale view must not depose a healthy leader.
            enable_pre_vote: Some(true),
            // An arbitrator holds no data to lead with: it votes, never campaigns.
            enable_elect: !node_info.arbitrator,
            ..Default::default()
        };
        let config = Arc::new(
            config
                .validate()
                .map_err(|e| OrderError::Start(e.to_string()))?,
        );
        let transfers = Arc::new(network::TransferCounters::default());
        let raft = Raft::new(
            node_id,
            config.clone(),
            network::RaftNetwork::new(transport.clone(), transfers.clone(), fence.clone()),
            log.clone(),
            sm,
        )
        .await
        .map_err(|e| OrderError::Start(e.to_string()))?;
        let raft = Arc::new(std::sync::RwLock::new(raft));
        Ok(Sequencer {
            proposer: propose::Proposer::start(raft.clone()),
            forwarder: transport
                .clone()
                .map(|t| forward::Forwarder::start(t, fence.clone())),
            raft,
            raft_config: config,
            store,
            fence,
            node_id,
            node_info,
            waiters,
            log,
            transport,
            snapshot_dir: data_dir.join("snapshots"),
            max_snapshot_bytes: opts.max_snapshot_bytes,
            started: std::time::Instant::now(),
            last_leader_contact_ms: AtomicU64::new(0),
            transfers,
            flow: flow::FlowControl::new(opts.flow_control_limit),
            data_dir: data_dir.to_path_buf(),
            storage_fault: std::sync::Mutex::new(None),
            stopping: std::sync::atomic::AtomicBool::new(false),
            restarting: tokio::sync::Mutex::new(()),
            commit_index_ask: shared_ask::SharedAsk::default(),
        })
    }

    /// A new Raft instance on this node's storage as it is on disk, with
    /// a state machine that reads its position from the database again.
    async fn start_raft(&self) -> Result<Raft, OrderError> {
        let sm = StateMachine::open(
            self.store.clone(),
            &self.snapshot_dir,
            self.waiters.clone(),
            self.fence.clone(),
        )
        .map_err(|source| OrderError::Log {
            path: self.snapshot_dir.display().to_string(),
            source,
        })?;
        let sm = if self.node_info.arbitrator {
            sm.for_arbitrator(self.snapshot_dir.with_file_name(arbitrator::STATE_FILE))
        } else {
            sm
        };
        Raft::new(
            self.node_id,
            self.raft_config.clone(),
            network::RaftNetwork::new(
                self.transport.clone(),
                self.transfers.clone(),
                self.fence.clone(),
            ),
            self.log.clone(),
            sm,
        )
        .await
        .map_err(|e| OrderError::Start(e.to_string()))
    }

    /// Make `raft` the instance every caller of [`Self::raft`] gets.
    fn replace_raft(&self, raft: Raft) {
        match self.raft.write() {
            Ok(mut r) => *r = raft,
            Err(poisoned) => *poisoned.into_inner() = raft,
        }
    }

    /// Proposals to openraft and the write-sets in them.
    pub fn proposal_counts(&self) -> &propose::BatchCounts {
        self.proposer.counts()
    }

    /// Forward requests to the leader and the write-sets in them.
    pub fn forward_counts(&self) -> Option<&propose::BatchCounts> {
        self.forwarder.as_ref().map(|f| f.counts())
    }

    pub fn flow(&self) -> &flow::FlowControl {
        &self.flow
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The current Raft instance (a cheap handle).
    pub fn raft(&self) -> Raft {
        match self.raft.read() {
            Ok(r) => r.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn fence(&self) -> &Arc<fence::Fence> {
        &self.fence
    }

    pub fn waiters(&self) -> &ApplyWaiters {
        &self.waiters
    }

    pub fn log(&self) -> &LogStore {
        &self.log
    }

    /// Whether this node has ever been part of a cluster (it has a vote or a membership).
    pub async fn is_initialized(&self) -> bool {
        self.raft().is_initialized().await.unwrap_or(false)
    }

    /// Start a new primary component with this node as its only member, and
    /// order the entry that fixes the cluster state UUID.
    pub async fn bootstrap(
        &self,
        state_uuid: uuid::Uuid,
        incarnation: u64,
        cert_window: i64,
    ) -> Result<(), OrderError> {
        let members: BTreeMap<NodeId, NodeInfo> = [(self.node_id, self.node_info.clone())]
            .into_iter()
            .collect();
        self.raft()
            .initialize(members)
            .await
            .map_err(|e| OrderError::Bootstrap(e.to_string()))?;
        // initialize() returns before this node has won its (single-voter) election.
        let mut m = self.raft().metrics();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if m.borrow_watched().current_leader == Some(self.node_id) {
                break;
            }
            if tokio::time::timeout_at(deadline, m.changed())
                .await
                .is_err()
            {
                return Err(OrderError::Bootstrap(
                    "this node did not become leader within 30 s".into(),
                ));
            }
        }
        self.raft()
            .client_write(Request::Bootstrap {
                state_uuid,
                incarnation,
                cert_window,
            })
            .await
            .map_err(|e| OrderError::Bootstrap(e.to_string()))?;
        Ok(())
    }

    /// A forced bootstrap of a node that is (or was) a member of a larger
    /// cluster: a new incarnation from this node's data, with this node as
    /// the only member, Primary at once.
    ///
    /// openraft has no API for this, so Raft is stopped and its storage
    /// rewritten: a membership entry naming this node alone and the entry
    /// that starts the new incarnation are appended after everything this
    /// node holds, at a term above any it has seen, and the vote moves to
    /// that term. The term bump matters: at the old term this node could
    /// reuse the log index of an entry the others dropped and diverge
    /// silently. Entries this node holds beyond its last applied one are
    /// kept and committed by the new incarnation. Returns the new
    /// incarnation.
    pub async fn force_new_incarnation(&self, cert_window: i64) -> Result<u64, OrderError> {
        use openraft::entry::RaftEntry;
        use openraft::storage::{IOFlushed, RaftLogReader, RaftLogStorage};
        use openraft::type_config::TypeConfigExt;
        use openraft::vote::{RaftLeaderId, RaftLeaderIdExt};
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            OrderError::Bootstrap(format!("forced bootstrap: {what}: {e}"))
        };
        let _only_one = self.restarting.lock().await;
        let old = self.raft();
        if let Err(e) = old.shutdown().await {
            tracing::warn!("forced bootstrap: stopping Raft: {e}");
        }
        let mut log = self.log.clone();
        let vote = log
            .read_vote()
            .await
            .map_err(|e| fail("reading the vote", &e))?;
        let state = log
            .get_log_state()
            .await
            .map_err(|e| fail("reading the log", &e))?;
        let raft_state = match self.store.raft_state() {
            Ok(Some(b)) => {
                state_machine::RaftState::decode(&b).map_err(|e| fail("reading Raft state", &e))?
            }
            Ok(None) => state_machine::RaftState::default(),
            Err(e) => return Err(fail("reading Raft state", &e)),
        };
        let last_applied = raft_state.last_applied.map(|l| l.index).unwrap_or(0);
        let last_index = state.last_log_id.map(|l| l.index).unwrap_or(0);
        let seen_term = vote
            .as_ref()
            .map(|v| v.leader_id().term())
            .unwrap_or(0)
            .max(
                state
                    .last_log_id
                    .map(|l| l.committed_leader_id().term())
                    .unwrap_or(0),
            );
        let term = seen_term + 1;
        let position = self.store.position();
        let incarnation = position.incarnation + 1;
        let leader =
            <openraft::alias::LeaderIdOf<types::TypeConfig> as RaftLeaderIdExt>::new_committed(
                term,
                self.node_id,
            );
        let members: BTreeSet<NodeId> = [self.node_id].into_iter().collect();
        let nodes: BTreeMap<NodeId, NodeInfo> = [(self.node_id, self.node_info.clone())]
            .into_iter()
            .collect();
        let membership = openraft::Membership::new(vec![members], nodes)
            .map_err(|e| fail("making the membership", &e))?;
        let entries = vec![
            types::Entry::new_membership(types::LogId::new(leader, last_index + 1), membership),
            types::Entry::new_normal(
                types::LogId::new(leader, last_index + 2),
                Request::NewIncarnation {
                    state_uuid: position.state_uuid,
                    incarnation,
                    cert_window,
                    fork_index: last_applied,
                },
            ),
        ];
        let (tx, rx) = types::TypeConfig::oneshot();
        log.append(entries, IOFlushed::<types::TypeConfig>::signal(tx))
            .await
            .map_err(|e| fail("appending to the log", &e))?;
        rx.await
            .map_err(|e| fail("syncing the log", &e))?
            .map_err(|e| fail("syncing the log", &e))?;
        log.save_vote(&types::Vote::new(term, self.node_id))
            .await
            .map_err(|e| fail("saving the vote", &e))?;
        tracing::warn!(
            term,
            fork_index = last_applied,
            "forced bootstrap: incarnation {incarnation} of cluster {} starts from this node's data \
             (seqno {}); older-incarnation nodes that meet it are fenced",
            position.state_uuid,
            position.seqno
        );
        let raft = self
            .start_raft()
            .await
            .map_err(|e| fail("restarting Raft", &e))?;
        self.replace_raft(raft.clone());
        // Primary once it leads and applied the entry that bumps the incarnation.
        let target = last_index + 2;
        let mut m = raft.metrics();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            {
                let now = m.borrow_watched();
                if now.current_leader == Some(self.node_id)
                    && now.last_applied.as_ref().map(|l| l.index) >= Some(target)
                {
                    break;
                }
            }
            if tokio::time::timeout_at(deadline, m.changed())
                .await
                .is_err()
            {
                return Err(OrderError::Bootstrap(
                    "forced bootstrap: this node did not become leader within 30 s".into(),
                ));
            }
        }
        Ok(incarnation)
    }

    /// Order a write-set and wait until this node applied it.
    pub async fn submit(
        &self,
        ws: WriteSet,
        timeout: Duration,
    ) -> Result<ApplyOutcome, SubmitError> {
        // Held until this node applied the write-set (or gave up on it).
        let _slot = self.flow.admit().await;
        let trx_id = ws.trx_id;
        let verdict = self.waiters.register(trx_id);
        if let Some(leader) = self.other_leader() {
            // Straight to the leader: asking the local Raft first only
            // comes back with "forward to the leader".
            return self
                .forward_and_await(Some(&leader), &ws, verdict, timeout)
                .await;
        }
        let submitted = tokio::time::timeout(timeout, self.proposer.propose(ws.clone())).await;
        match submitted {
            Err(_) => {
                self.waiters.forget(trx_id);
                return Err(SubmitError::Unknown(format!(
                    "no verdict within {} ms: the transaction may or may not have committed",
                    timeout.as_millis()
                )));
            }
            Ok(propose::Proposed::NotLeader(leader)) => {
                // Not the leader: hand the write-set to the one that is.
                return self
                    .forward_and_await(leader.as_ref(), &ws, verdict, timeout)
                    .await;
            }
            Ok(propose::Proposed::Failed(e)) => {
                self.waiters.forget(trx_id);
                return Err(SubmitError::Unknown(format!(
                    "ordering failed after submission: {e}"
                )));
            }
            Ok(propose::Proposed::Ordered) => {}
        }
        self.await_verdict(trx_id, verdict, timeout).await
    }

    /// The leader's description when another node leads.
    fn other_leader(&self) -> Option<NodeInfo> {
        let raft = self.raft();
        let metrics = raft.metrics();
        let m = metrics.borrow_watched();
        match m.current_leader {
            Some(leader) if leader != self.node_id => {
                m.membership_config.membership().get_node(&leader).cloned()
            }
            _ => None,
        }
    }

    /// Forward `ws` to the leader and wait until this node applied it.
    /// The client is answered as soon as this node's own apply gives the
    /// verdict, whether or not the leader's answer to the forward came yet:
    /// the verdict is the final word (the leader only answers once it has
    /// applied the write-set, and this node applies the same log). A
    /// forward that fails before the verdict came is reported as before.
    async fn forward_and_await(
        &self,
        leader: Option<&NodeInfo>,
        ws: &WriteSet,
        mut verdict: tokio::sync::oneshot::Receiver<ApplyOutcome>,
        timeout: Duration,
    ) -> Result<ApplyOutcome, SubmitError> {
        let trx_id = ws.trx_id;
        let forwarded = self.forward_write(leader, ws, timeout);
        tokio::pin!(forwarded);
        tokio::select! {
            biased;
            applied = &mut verdict => match applied {
                Ok(outcome) => return Ok(outcome),
                // The waiter was dropped: the forward still says whether
                // the write-set was ordered.
                Err(_) => {
                    forwarded.await?;
                    return Err(SubmitError::Unknown(
                        "ordered, but this node did not apply it in time".into(),
                    ));
                }
            },
            sent = &mut forwarded => {
                if let Err(e) = sent {
                    self.waiters.forget(trx_id);
                    return Err(e);
                }
            }
        }
        self.await_verdict(trx_id, verdict, timeout).await
    }

    async fn await_verdict(
        &self,
        trx_id: u64,
        verdict: tokio::sync::oneshot::Receiver<ApplyOutcome>,
        timeout: Duration,
    ) -> Result<ApplyOutcome, SubmitError> {
        match tokio::time::timeout(timeout, verdict).await {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(_)) | Err(_) => {
                self.waiters.forget(trx_id);
                Err(SubmitError::Unknown(
                    "ordered, but this node did not apply it in time".into(),
                ))
            }
        }
    }

    /// Hand a write-set to the leader. A lost answer is retried: the
    /// state machine orders each (origin, trx id) once, so a second copy is
    /// harmless, and the origin's waiter sees the first one applied.
    async fn forward_write(
        &self,
        first_leader: Option<&NodeInfo>,
        ws: &WriteSet,
        timeout: Duration,
    ) -> Result<(), SubmitError> {
        use crate::transport::TransportError as T;
        let Some(forwarder) = &self.forwarder else {
            return Err(SubmitError::NotPrimary(
                "no leader is known; nothing was applied".into(),
            ));
        };
        let started = tokio::time::Instant::now();
        // Without a leader for this long the node is not Primary: say so.
        let give_up_unsent = started + timeout.min(Duration::from_secs(3));
        let give_up = started + timeout;
        let body = network::encode(ws).map_err(SubmitError::NotPrimary)?;
        let mut leader = first_leader.cloned();
        let mut maybe_sent = false;
        let mut last_error = String::from("no leader is known");
        loop {
            let target = match leader.take() {
                Some(l) => Some(l),
                None => {
                    let m = self.metrics();
                    m.current_leader
                        .and_then(|l| m.membership_config.membership().get_node(&l).cloned())
                }
            };
            match target {
                Some(l) if l.name == self.node_info.name => {
                    // Leadership came here meanwhile.
                    match self.proposer.propose(ws.clone()).await {
                        propose::Proposed::Ordered => return Ok(()),
                        propose::Proposed::NotLeader(_) => {}
                        propose::Proposed::Failed(e) => {
                            maybe_sent = true;
                            last_error = e;
                        }
                    }
                }
                Some(l) => match l.repl_addr.parse::<std::net::SocketAddr>() {
                    Err(_) => last_error = format!("leader {} has no valid address", l.name),
                    Ok(addr) => match tokio::select! {
                        r = forwarder.forward(addr, &l.name, body.clone(), timeout) => r,
                        // The leader died and another was elected: its answer
                        // will not come; retrying is safe (exactly-once apply).
                        () = self.leader_changed_from(&l.name) => Err(crate::transport::TransportError::Connection {
                            peer: addr,
                            reason: format!("{} is no longer the leader", l.name),
                        }),
                    } {
                        Ok(outcome) => match outcome {
                            Ok(ForwardOutcome::Ordered) => return Ok(()),
                            Ok(ForwardOutcome::NotLeader) => {
                                last_error = format!("{} is no longer the leader", l.name)
                            }
                            Ok(ForwardOutcome::Failed(m)) => {
                                maybe_sent = true;
                                last_error = format!("the leader could not order it: {m}");
                            }
                            Ok(ForwardOutcome::Refused(m)) => {
                                return Err(SubmitError::NotPrimary(format!(
                                    "the leader {} refused it: {m}; nothing was applied",
                                    l.name
                                )));
                            }
                            Err(m) => {
                                maybe_sent = true;
                                last_error = m;
                            }
                        },
                        // Never dialled, so never sent.
                        Err(e @ (T::Unreachable { .. } | T::Tls { .. } | T::Refused { .. })) => {
                            last_error = format!("cannot reach the leader {}: {e}", l.name);
                        }
                        Err(e) => {
                            maybe_sent = true;
                            last_error = format!("forwarding to the leader {} failed: {e}", l.name);
                        }
                    },
                },
                None => {}
            }
            let now = tokio::time::Instant::now();
            if now >= give_up || (!maybe_sent && now >= give_up_unsent) {
                return Err(if maybe_sent {
                    SubmitError::Unknown(format!("{last_error}; it may or may not have committed"))
                } else {
                    SubmitError::NotPrimary(format!("{last_error}; nothing was applied"))
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Resolves once a leader other than `name` is known.
    async fn leader_changed_from(&self, name: &str) {
        let mut m = self.raft().metrics();
        loop {
            let changed = {
                let now = m.borrow_watched();
                now.current_leader
                    .and_then(|l| {
                        now.membership_config
                            .membership()
                            .get_node(&l)
                            .map(|n| n.name != name)
                    })
                    .unwrap_or(false)
            };
            if changed || m.changed().await.is_err() {
                return;
            }
        }
    }

    /// A session from a peer: append-entries from the leader, pipelined.
    pub async fn serve_session(
        &self,
        peer: &PeerIdentity,
        kind: u8,
        messages: crate::transport::SessionReceiver,
        replies: crate::transport::SessionSender,
    ) {
        if kind != network::kind::APPEND_STREAM {
            return replies.fail(&format!("unknown session kind {kind}")).await;
        }
        network::serve_append_session(
            &self.raft(),
            &self.fence,
            &peer.node_name,
            |claimed| self.check_identity(peer, claimed),
            |id| self.is_member(id),
            || self.note_leader_contact(),
            messages,
            replies,
        )
        .await
    }

    /// A leader's append passed the stamp and sender checks: it still
    /// leads this node (the quorum check reads this).
    fn note_leader_contact(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.last_leader_contact_ms
            .store(ms.max(1), Ordering::Relaxed);
    }

    /// Answer a request from a peer: Raft RPCs, snapshots, forwarded
    /// write-sets, read indexes. The peer's certificate-verified name must
    /// match the member id it speaks for.
    pub async fn serve_peer(
        &self,
        peer: &PeerIdentity,
        kind: u8,
        body: &[u8],
    ) -> Result<bytes::Bytes, String> {
        match kind {
            // openraft's transfer campaigns at once, whatever enable_elect says.
            network::kind::TRANSFER_LEADER if self.node_info.arbitrator => {
                tracing::warn!(
                    "refused to take the lead from {}: this node is an arbitrator",
                    peer.node_name
                );
                Err("this node is an arbitrator: it holds no data and never leads".into())
            }
            k if network::kind::is_raft(k) => {
                let reply = network::serve_rpc(
                    &self.raft(),
                    &self.fence,
                    &peer.node_name,
                    |claimed| self.check_identity(peer, claimed),
                    |id| self.is_member(id),
                    k,
                    body,
                )
                .await?;
                if k == network::kind::APPEND && reply.1 {
                    self.note_leader_contact();
                }
                Ok(reply.0)
            }
            peer_kind::FORWARD_WRITE => {
                let ws: WriteSet = network::decode(body)?;
                self.check_forwarded(peer, std::slice::from_ref(&ws))?;
                network::encode(&ForwardOutcome::from(self.proposer.propose(ws).await))
            }
            peer_kind::FORWARD_WRITES => {
                let batch: Vec<WriteSet> = network::decode(body)?;
                self.check_forwarded(peer, &batch)?;
                network::encode(&self.propose_forwarded(batch).await)
            }
            peer_kind::FORWARD_STAMPED => {
                let (stamp, batch): (fence::Stamp, Vec<WriteSet>) = network::decode(body)?;
                let member = self.has_member_named(&peer.node_name);
                if let Err(refusal) =
                    self.fence
                        .admit::<Vec<ForwardOutcome>>(&stamp, &peer.node_name, member)
                {
                    return network::encode(&refusal);
                }
                if let Err(why) = self.check_forwarded(peer, &batch) {
                    return network::encode(&fence::Reply::<Vec<ForwardOutcome>>::Refused(why));
                }
                network::encode(&fence::Reply::Ok(self.propose_forwarded(batch).await))
            }
            peer_kind::COMMIT_INDEX => {
                let raft = self.raft();
                let watch = raft.metrics();
                let m = watch.borrow_watched();
                if m.current_leader != Some(self.node_id) {
                    return Err("not the leader".into());
                }
                network::encode(&m.local_committed.as_ref().map(|l| l.index))
            }
            peer_kind::READ_INDEX => {
                let read = self
                    .raft()
                    .ensure_linearizable(openraft::ReadPolicy::ReadIndex)
                    .await
                    .map_err(|e| format!("not the leader: {e}"))?;
                network::encode(&Some(read.index()))
            }
            other => Err(format!("{} {other}", forward::UNKNOWN_KIND)),
        }
    }

    pub async fn serve_snapshot(
        &self,
        peer: &PeerIdentity,
        header: &[u8],
        chunks: crate::transport::ChunkStream,
    ) -> Result<bytes::Bytes, String> {
        tracing::info!(donor = %peer.node_name, "SST: {} is sending this node a snapshot", peer.node_name);
        network::serve_snapshot(
            &self.raft(),
            &self.fence,
            &peer.node_name,
            |claimed| self.check_identity(peer, claimed),
            network::SnapshotInbox {
                dir: &self.snapshot_dir,
                transfers: &self.transfers,
                max_bytes: self.max_snapshot_bytes,
            },
            header,
            chunks,
        )
        .await
    }

    fn check_identity(&self, peer: &PeerIdentity, claimed: NodeId) -> Result<(), String> {
        let members = self.members();
        match members.iter().find(|(id, _, _)| *id == claimed) {
            Some((_, info, _)) if info.name != peer.node_name => {
                tracing::warn!(
                    peer = %peer.addr,
                    "refused a Raft message: certificate of {} speaks for node id {claimed}, which is {}",
                    peer.node_name,
                    info.name
                );
                Err(format!(
                    "node id {claimed} belongs to {}, not to {}",
                    info.name, peer.node_name
                ))
            }
            _ => Ok(()),
        }
    }

    /// Whether this node is in a primary component right now. Asked on every
    /// client request, so it reads the metrics in place instead of cloning them.
    pub fn is_primary(&self, primary_timeout: Duration) -> bool {
        if self.fence.is_fenced() {
            return false;
        }
        let raft = self.raft();
        let watch = raft.metrics();
        let m = watch.borrow_watched();
        if m.running_state.is_err() {
            return false;
        }
        match m.state {
            ServerState::Leader => {
                if m.membership_config
                    .membership()
                    .voter_ids()
                    .nth(1)
                    .is_none()
                {
                    return true;
                }
                m.last_quorum_acked
                    .as_ref()
                    .is_some_and(|acked| acked.elapsed() <= primary_timeout)
            }
            ServerState::Follower => {
                let last = self.last_leader_contact_ms.load(Ordering::Relaxed);
                let now = self.started.elapsed().as_millis() as u64;
                m.current_leader.is_some()
                    && last > 0
                    && now.saturating_sub(last) <= primary_timeout.as_millis() as u64
            }
            _ => false,
        }
    }

    pub fn metrics(&self) -> openraft::RaftMetrics<types::TypeConfig> {
        self.raft().metrics().borrow_watched().clone()
    }

    /// SST transfers under way: (as donor, as joiner).
    /// SST byte progress, for the metrics.
    pub fn transfer_counters(&self) -> &network::TransferCounters {
        &self.transfers
    }

    pub fn transfers(&self) -> (usize, usize) {
        (
            self.transfers.donating.load(Ordering::SeqCst),
            self.transfers.receiving.load(Ordering::SeqCst),
        )
    }

    /// Whether `id` is in the current membership (voter or learner).
    pub fn is_member(&self, id: NodeId) -> bool {
        let raft = self.raft();
        let watch = raft.metrics();
        let m = watch.borrow_watched();
        m.membership_config.membership().get_node(&id).is_some()
    }

    /// Whether a node of this name is in the current membership (as voter
    /// or learner).
    fn has_member_named(&self, name: &str) -> bool {
        let raft = self.raft();
        let watch = raft.metrics();
        let m = watch.borrow_watched();
        let found = m
            .membership_config
            .membership()
            .nodes()
            .any(|(_, n)| n.name == name);
        found
    }

    /// Whether `peer` may have these forwarded write-sets ordered; a batch
    /// with one refused write-set is refused whole.
    ///
    /// The origin names whose client waits for the verdict and keys
    /// exactly-once delivery: a peer may only speak for itself. And a node
    /// outside the membership is refused: a node of an older incarnation
    /// (fenced, or about to be) must not have its writes ordered here. A
    /// forward it sent to this node while this node was paused, arriving
    /// after a forced bootstrap, would otherwise merge the old
    /// incarnation's write silently.
    fn check_forwarded(&self, peer: &PeerIdentity, batch: &[WriteSet]) -> Result<(), String> {
        if let Some(ws) = batch.iter().find(|ws| ws.origin != peer.node_name) {
            tracing::warn!(
                peer = %peer.addr,
                "refused forwarded write-sets: {} sent one in the name of {}",
                peer.node_name,
                ws.origin
            );
            return Err(format!(
                "{} may not forward a write-set of {}",
                peer.node_name, ws.origin
            ));
        }
        if !self.has_member_named(&peer.node_name) {
            tracing::warn!(
                peer = %peer.addr,
                "refused write-sets forwarded by {}: it is not a member of this cluster's membership",
                peer.node_name
            );
            return Err(format!(
                "{} is not a member of this cluster's membership; its write-sets are not ordered here",
                peer.node_name
            ));
        }
        Ok(())
    }

    async fn propose_forwarded(&self, batch: Vec<WriteSet>) -> Vec<ForwardOutcome> {
        self.proposer
            .propose_all(batch)
            .await
            .into_iter()
            .map(ForwardOutcome::from)
            .collect()
    }

    /// Voting members of the current membership.
    pub fn voters(&self) -> BTreeSet<NodeId> {
        self.metrics()
            .membership_config
            .membership()
            .voter_ids()
            .collect()
    }

    /// Put a removal into the log (on the leader), so that every member
    /// keeps it in its database; returns once this node applied it.
    pub async fn record_removal(
        &self,
        node_id: NodeId,
        record: String,
        timeout: Duration,
    ) -> Result<(), String> {
        let raft = self.raft();
        let write = raft.client_write(Request::MemberRemoved { node_id, record });
        match tokio::time::timeout(timeout, write).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("not committed within {} ms", timeout.as_millis())),
        }
    }

    /// Every member (voters and learners) with what it advertises, and whether it votes.
    pub fn members(&self) -> Vec<(NodeId, NodeInfo, bool)> {
        let m = self.metrics();
        let voters: BTreeSet<NodeId> = m.membership_config.membership().voter_ids().collect();
        m.membership_config
            .membership()
            .nodes()
            .map(|(id, info)| (*id, info.clone(), voters.contains(id)))
            .collect()
    }

    /// Wait until this node applied everything the leader knew to be
    /// committed when asked: a client that moves between nodes sees its own
    /// acknowledged writes (the origin answers only after the entry
    /// committed, and the leader learns of a commit first). Cheaper than
    /// [`Self::linearizable_barrier`]: no quorum round, one round trip from
    /// a follower; a leader deposed a moment ago may answer a little stale.
    pub async fn causal_barrier(&self) -> Result<(), SubmitError> {
        let m = self.metrics();
        let target = if m.current_leader == Some(self.node_id) {
            m.local_committed.as_ref().map(|l| l.index)
        } else {
            let ask = || async {
                self.ask_leader(peer_kind::COMMIT_INDEX, "what is committed")
                    .await
                    .map_err(|e| e.to_string())
            };
            match self.commit_index_ask.get(ask).await {
                Some(answer) => answer,
                None => ask().await,
            }
            .map_err(SubmitError::NotPrimary)?
        };
        match target {
            Some(index) => self.wait_applied(index, Duration::from_secs(10)).await,
            None => Ok(()),
        }
    }

    /// Ask the leader for an index (`COMMIT_INDEX`, `READ_INDEX`); if it
    /// dies meanwhile, ask its successor.
    async fn ask_leader(&self, kind: u8, what: &str) -> Result<Option<u64>, SubmitError> {
        loop {
            let m = self.metrics();
            let leader = m
                .current_leader
                .and_then(|l| m.membership_config.membership().get_node(&l).cloned());
            let (Some(t), Some(leader)) = (&self.transport, leader) else {
                return Err(SubmitError::NotPrimary("no leader is known".into()));
            };
            let addr: std::net::SocketAddr = leader
                .repl_addr
                .parse()
                .map_err(|_| SubmitError::NotPrimary("the leader has no valid address".into()))?;
            let asked = t.call(addr, Some(&leader.name), kind, bytes::Bytes::new());
            let reply = tokio::select! {
                r = asked => r,
                // A dead leader never answers; its successor will.
                () = self.leader_changed_from(&leader.name) => continue,
            };
            let reply = reply.map_err(|e| {
                SubmitError::NotPrimary(format!("cannot ask the leader for {what}: {e}"))
            })?;
            return network::decode::<Option<u64>>(&reply).map_err(SubmitError::NotPrimary);
        }
    }

    async fn wait_applied(&self, index: u64, within: Duration) -> Result<(), SubmitError> {
        let raft = self.raft();
        let mut metrics = raft.metrics();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if metrics
                .borrow_watched()
                .last_applied
                .as_ref()
                .map(|l| l.index)
                >= Some(index)
            {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, metrics.changed())
                .await
                .is_err()
            {
                return Err(SubmitError::NotPrimary(format!(
                    "this node did not apply up to index {index} in time"
                )));
            }
        }
    }

    /// Wait until the local database reflects everything committed before now.
    pub async fn linearizable_barrier(&self) -> Result<(), SubmitError> {
        let m = self.metrics();
        if m.current_leader == Some(self.node_id) {
            return self
                .raft()
                .ensure_linearizable(openraft::ReadPolicy::ReadIndex)
                .await
                .map(|_| ())
                .map_err(|e| {
                    SubmitError::NotPrimary(format!("cannot confirm a linearizable read: {e}"))
                });
        }
        // A follower asks the leader for its read index, then waits to apply it.
        match self
            .ask_leader(peer_kind::READ_INDEX, "a read index")
            .await?
        {
            Some(index) => self.wait_applied(index, Duration::from_secs(10)).await,
            None => Ok(()),
        }
    }

    pub async fn shutdown(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Not while a restart after a storage fault swaps Raft: the new
        // instance would outlive this stop.
        let _only_one = self.restarting.lock().await;
        if let Err(e) = self.raft().shutdown().await {
            tracing::warn!("Raft shutdown: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use openraft::errors::ErrorSource;
    use openraft::testing::log::{StoreBuilder, Suite};
    use openraft::StorageError;

    use super::*;
    use crate::store::{Store, StoreOptions};

    fn fail(msg: String) -> StorageError<types::TypeConfig> {
        StorageError::read(openraft::impls::BoxedErrorSource::from_string(msg))
    }

    /// openraft's own storage suite, run against our log store and our
    /// SQLite state machine, each test in a fresh directory.
    struct Builder;

    impl StoreBuilder<types::TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
        async fn build(
            &self,
        ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<types::TypeConfig>>
        {
            let dir = tempfile::tempdir().map_err(|e| fail(e.to_string()))?;
            let store = Store::open(
                &dir.path().join("data"),
                StoreOptions {
                    read_connections: 1,
                    max_writeset_bytes: 1 << 20,
                    cert_window: 1000,
                },
            )
            .map_err(|e| fail(e.to_string()))?;
            let log = LogStore::open(&dir.path().join("log")).map_err(|e| fail(e.to_string()))?;
            let store = Arc::new(store);
            let fence = fence::Fence::new(store.clone(), None, "t", "", dir.path(), None);
            let sm = StateMachine::open(
                store,
                &dir.path().join("snapshots"),
                Arc::new(ApplyWaiters::new("t")),
                fence,
            )
            .map_err(|e| fail(e.to_string()))?;
            Ok((dir, log, sm))
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn openraft_storage_suite() -> Result<(), StorageError<types::TypeConfig>> {
        Suite::test_all(Builder).await
    }
}
