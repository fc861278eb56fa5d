//! Proposing write-sets to openraft many at a time.
//!
//! openraft's core runs its storage and replication commands after every
//! message it takes (`run_command_threshold = 0` in 0.10.0-alpha.37), so
//! each `client_write` costs its own log append, and usually its own
//! AppendEntries to every follower. The proposer queues the write-sets of
//! this node's clients and of forwarded batches, and hands whatever is
//! waiting to openraft as one `client_write_many`: one message, one append,
//! one replication round for all of them. It never waits for more to come:
//! it only lets the tasks that are ready to run go first (one yield), so a
//! lone writer is proposed at once and a busy node proposes in batches.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use openraft::error::ClientWriteError;
use tokio::sync::{mpsc, oneshot};

use super::types::{NodeInfo, Raft, Request, TypeConfig};
use crate::writeset::WriteSet;

/// At most this many write-sets go into one proposal; openraft splits
/// replication by its own limits, this only bounds one core message.
const MAX_BATCH: usize = 256;

/// What became of one proposed write-set.
#[derive(Debug)]
pub enum Proposed {
    /// Committed and applied on this node (its verdict is with the waiters).
    Ordered,
    /// Never appended: this node does not lead (the leader, if known).
    NotLeader(Option<NodeInfo>),
    /// Appended or not: unknown.
    Failed(String),
}

struct Proposal {
    ws: WriteSet,
    done: oneshot::Sender<Proposed>,
}

/// The queue in front of this node's Raft (see the module documentation).
pub struct Proposer {
    queue: mpsc::UnboundedSender<Proposal>,
    /// Proposals this node made and the write-sets they held.
    counts: Arc<BatchCounts>,
}

/// Batches a batcher (proposer or forwarder) sent and the write-sets in
/// them (`/metrics`: their ratio is the batch size).
#[derive(Debug, Default)]
pub struct BatchCounts {
    batches: AtomicU64,
    writesets: AtomicU64,
}

impl BatchCounts {
    pub fn note(&self, batches: usize, writesets: usize) {
        self.batches.fetch_add(batches as u64, Ordering::Relaxed);
        self.writesets
            .fetch_add(writesets as u64, Ordering::Relaxed);
    }

    pub fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    pub fn writesets(&self) -> u64 {
        self.writesets.load(Ordering::Relaxed)
    }
}

impl Proposer {
    /// Starts the proposing task; it proposes through whatever Raft `raft`
    /// holds at the time (a forced bootstrap replaces it) and ends when the
    /// proposer is dropped.
    pub fn start(raft: Arc<RwLock<Raft>>) -> Proposer {
        let (queue, rx) = mpsc::unbounded_channel();
        let counts = Arc::new(BatchCounts::default());
        tokio::spawn(run(raft, rx, counts.clone()));
        Proposer { queue, counts }
    }

    pub fn counts(&self) -> &BatchCounts {
        &self.counts
    }

    /// Propose one write-set and wait until it is applied here (or refused).
    pub async fn propose(&self, ws: WriteSet) -> Proposed {
        outcome(self.enqueue(ws)).await
    }

    /// Propose several write-sets (a forwarded batch) and wait for all;
    /// the answers are in the order of `batch`.
    pub async fn propose_all(&self, batch: Vec<WriteSet>) -> Vec<Proposed> {
        // All queued before the first wait, so they can share a proposal.
        let queued: Vec<_> = batch.into_iter().map(|ws| self.enqueue(ws)).collect();
        let mut out = Vec::with_capacity(queued.len());
        for answer in queued {
            out.push(outcome(answer).await);
        }
        out
    }

    /// `None` when the proposing task is gone (nothing was proposed).
    fn enqueue(&self, ws: WriteSet) -> Option<oneshot::Receiver<Proposed>> {
        let (done, answer) = oneshot::channel();
        self.queue.send(Proposal { ws, done }).ok().map(|()| answer)
    }
}

async fn outcome(answer: Option<oneshot::Receiver<Proposed>>) -> Proposed {
    match answer {
        None => Proposed::NotLeader(None),
        Some(answer) => answer
            .await
            .unwrap_or_else(|_| Proposed::Failed("the proposer stopped".into())),
    }
}

fn current(raft: &RwLock<Raft>) -> Raft {
    match raft.read() {
        Ok(r) => r.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    }
}

async fn run(
    raft: Arc<RwLock<Raft>>,
    mut queue: mpsc::UnboundedReceiver<Proposal>,
    counts: Arc<BatchCounts>,
) {
    while let Some(first) = queue.recv().await {
        // The tasks that are ready now (other clients' requests read in
        // the same poll) get to queue theirs before this batch closes.
        tokio::task::yield_now().await;
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        counts.note(1, batch.len());
        let (payloads, done): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .map(|p| (Request::WriteSet(p.ws), p.done))
            .unzip();
        let raft = current(&raft);
        match raft.client_write_many(payloads).await {
            Err(fatal) => {
                let why = stop_reason(&raft, fatal).await;
                for d in done {
                    let _ = d.send(Proposed::Failed(why.clone()));
                }
            }
            // Answered as each is applied, in log order, while the next
            // batch is proposed.
            Ok(results) => {
                tokio::spawn(answer(raft, results, done));
            }
        }
    }
}

type Results = futures::stream::BoxStream<
    'static,
    Result<openraft::raft::WriteResult<TypeConfig>, openraft::errors::Fatal<TypeConfig>>,
>;

async fn answer(raft: Raft, mut results: Results, done: Vec<oneshot::Sender<Proposed>>) {
    for d in done {
        let outcome = match results.next().await {
            Some(Ok(Ok(_))) => Proposed::Ordered,
            Some(Ok(Err(ClientWriteError::ForwardToLeader(f)))) => {
                Proposed::NotLeader(f.leader_node)
            }
            Some(Ok(Err(e))) => Proposed::Failed(e.to_string()),
            Some(Err(fatal)) => Proposed::Failed(stop_reason(&raft, fatal).await),
            None => Proposed::Failed("openraft gave fewer answers than proposals".into()),
        };
        let _ = d.send(outcome);
    }
}

/// Why Raft stopped under a proposal. `client_write_many` answers only
/// "stopped" when the core ends; the reason (a full disk, a read-only file
/// system) is in its metrics, and the client and the operator need it.
async fn stop_reason(raft: &Raft, fatal: openraft::errors::Fatal<TypeConfig>) -> String {
    use openraft::async_runtime::WatchReceiver;
    if !matches!(fatal, openraft::errors::Fatal::Stopped) {
        return fatal.to_string();
    }
    let mut metrics = raft.metrics();
    let give_up = tokio::time::sleep(STOP_REASON_WAIT);
    tokio::pin!(give_up);
    loop {
        if let Err(e) = &metrics.borrow_watched().running_state {
            return e.to_string();
        }
        tokio::select! {
            changed = metrics.changed() => if changed.is_err() { break },
            () = &mut give_up => break,
        }
    }
    let last = metrics.borrow_watched().running_state.clone();
    match last {
        Err(e) => e.to_string(),
        Ok(()) => fatal.to_string(),
    }
}

/// How long a stopped core gets to publish why it stopped.
const STOP_REASON_WAIT: std::time::Duration = std::time::Duration::from_secs(1);
