//! Forwarding write-sets from a follower to the leader, many per RPC.
//!
//! Every client of a follower has its write-set ordered by the leader. Sent
//! one by one, each costs a QUIC stream both ways and a proposal of its own
//! on the leader. The forwarder queues them and sends whatever is waiting to
//! one leader as a single `FORWARD_WRITES` request; the leader proposes the
//! batch at once (`propose`) and answers one outcome per write-set, in
//! order. Like the proposer it never waits for more: one yield lets the
//! tasks that are ready queue theirs, so a lone writer is sent at once.
//! The request is `FORWARD_STAMPED`: the batch behind this node's fencing
//! stamp, so the leader refuses a node of another cluster state, or of an
//! older incarnation, as it refuses its Raft messages, and tells a fenced
//! sender so. A leader that does not know it (an older build, during a
//! rolling upgrade) gets `FORWARD_WRITES`, and one that does not know that
//! either gets each write-set alone (`FORWARD_WRITE`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::{mpsc, oneshot};

use super::fence::{Fence, Reply};
use super::network;
use super::propose::BatchCounts;
use super::{peer_kind, ForwardOutcome};
use crate::transport::{Transport, TransportError};

/// A batch closes at this many write-sets ...
const MAX_BATCH: usize = 256;
/// ... or once it holds this many bytes; a larger write-set goes alone.
const MAX_BATCH_BYTES: usize = 1 << 20;

/// The leader's answer for one write-set, or why there is none: a reply
/// that cannot be read is `Ok(Err(..))` (it may have been ordered).
pub type Forwarded = Result<Result<ForwardOutcome, String>, TransportError>;

struct Item {
    addr: SocketAddr,
    leader: String,
    /// The write-set, encoded as `FORWARD_WRITE` carries it.
    body: Bytes,
    timeout: Duration,
    done: oneshot::Sender<Forwarded>,
}

/// The queue of write-sets on their way to the leader.
pub struct Forwarder {
    queue: mpsc::UnboundedSender<Item>,
    /// Requests to the leader and the write-sets they carried.
    counts: Arc<BatchCounts>,
}

impl Forwarder {
    /// `fence` stamps every request and learns from the leader that this
    /// node is fenced.
    pub fn start(transport: Transport, fence: Arc<Fence>) -> Forwarder {
        let (queue, rx) = mpsc::unbounded_channel();
        let counts = Arc::new(BatchCounts::default());
        let sender = Sender {
            transport,
            fence,
            counts: counts.clone(),
            leader_takes: Arc::new(AtomicU8::new(Takes::Stamped as u8)),
            downgraded_at: Arc::default(),
        };
        tokio::spawn(run(sender, rx));
        Forwarder { queue, counts }
    }

    pub fn counts(&self) -> &BatchCounts {
        &self.counts
    }

    /// Send one encoded write-set to the leader `leader` at `addr` and wait
    /// for its outcome there (ordered and applied on the leader, or not).
    pub async fn forward(
        &self,
        addr: SocketAddr,
        leader: &str,
        body: Bytes,
        timeout: Duration,
    ) -> Forwarded {
        let (done, answer) = oneshot::channel();
        let item = Item {
            addr,
            leader: leader.to_string(),
            body,
            timeout,
            done,
        };
        if self.queue.send(item).is_err() {
            return Err(TransportError::Closed);
        }
        answer.await.unwrap_or(Err(TransportError::Closed))
    }
}

/// The newest request kind the leader answered (an older build knows fewer).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
enum Takes {
    Singles = 0,
    Batches = 1,
    Stamped = 2,
}

impl Takes {
    fn from_u8(v: u8) -> Takes {
        match v {
            0 => Takes::Singles,
            1 => Takes::Batches,
            _ => Takes::Stamped,
        }
    }
}

/// After this long on an older kind the newest is tried again: the leader
/// may have been upgraded, or another one elected, meanwhile.
const RETRY_NEWEST_AFTER: Duration = Duration::from_secs(60);

/// What every request needs, cloned into the task that sends it.
#[derive(Clone)]
struct Sender {
    transport: Transport,
    fence: Arc<Fence>,
    counts: Arc<BatchCounts>,
    leader_takes: Arc<AtomicU8>,
    /// When the leader last refused a kind as unknown.
    downgraded_at: Arc<std::sync::Mutex<Option<tokio::time::Instant>>>,
}

impl Sender {
    fn takes(&self) -> Takes {
        let takes = Takes::from_u8(self.leader_takes.load(Ordering::Relaxed));
        if takes != Takes::Stamped {
            if let Ok(mut at) = self.downgraded_at.lock() {
                if at.is_some_and(|t| t.elapsed() >= RETRY_NEWEST_AFTER) {
                    *at = None;
                    self.leader_takes
                        .store(Takes::Stamped as u8, Ordering::Relaxed);
                    return Takes::Stamped;
                }
            }
        }
        takes
    }

    /// The leader refused `kind` as unknown: use the next older one.
    fn downgrade(&self, leader: &str, from: Takes) {
        let to = match from {
            Takes::Stamped => Takes::Batches,
            Takes::Batches | Takes::Singles => Takes::Singles,
        };
        if let Ok(mut at) = self.downgraded_at.lock() {
            *at = Some(tokio::time::Instant::now());
        }
        if self.leader_takes.fetch_min(to as u8, Ordering::Relaxed) > to as u8 {
            tracing::info!(
                leader = %leader,
                "the leader is an older build that does not take {}; forwarding {} for the next {} s",
                match from {
                    Takes::Stamped => "stamped batches of write-sets",
                    _ => "batches of write-sets",
                },
                match to {
                    Takes::Batches => "unstamped batches",
                    _ => "write-sets one by one",
                },
                RETRY_NEWEST_AFTER.as_secs()
            );
        }
    }
}

async fn run(sender: Sender, mut queue: mpsc::UnboundedReceiver<Item>) {
    while let Some(first) = queue.recv().await {
        tokio::task::yield_now().await;
        let mut bytes = first.body.len();
        let mut items = vec![first];
        while items.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            match queue.try_recv() {
                Ok(item) => {
                    bytes += item.body.len();
                    items.push(item);
                }
                Err(_) => break,
            }
        }
        // Normally all go to one leader; a leader change mid-batch splits it.
        while !items.is_empty() {
            let addr = items[0].addr;
            let (same, rest): (Vec<Item>, Vec<Item>) =
                items.into_iter().partition(|i| i.addr == addr);
            items = rest;
            tokio::spawn(send(sender.clone(), same));
        }
    }
}

async fn send(sender: Sender, items: Vec<Item>) {
    let takes = sender.takes();
    if takes == Takes::Singles || (items.len() == 1 && takes == Takes::Batches) {
        send_singly(&sender, items);
        return;
    }
    sender.counts.note(1, items.len());
    let first = &items[0];
    let (addr, leader) = (first.addr, first.leader.clone());
    let timeout = items.iter().map(|i| i.timeout).max().unwrap_or_default();
    // bincode's (Stamp, Vec<WriteSet>), or Vec<WriteSet> alone: the count,
    // then each write-set as encoded.
    let stamp = match takes {
        Takes::Stamped => match network::encode(&sender.fence.stamp()) {
            Ok(stamp) => stamp,
            Err(e) => {
                // Never sent, so never ordered.
                for item in items {
                    let _ = item.done.send(Ok(Ok(ForwardOutcome::Refused(e.clone()))));
                }
                return;
            }
        },
        _ => Bytes::new(),
    };
    let mut body = BytesMut::with_capacity(
        stamp.len() + 8 + items.iter().map(|i| i.body.len()).sum::<usize>(),
    );
    body.put_slice(&stamp);
    body.put_u64_le(items.len() as u64);
    for item in &items {
        body.put_slice(&item.body);
    }
    let kind = match takes {
        Takes::Stamped => peer_kind::FORWARD_STAMPED,
        _ => peer_kind::FORWARD_WRITES,
    };
    let reply = sender
        .transport
        .call_timeout(addr, Some(&leader), kind, body.freeze(), timeout)
        .await;
    let reply = match reply {
        Ok(reply) => reply,
        Err(TransportError::Remote { message, .. }) if message.contains(UNKNOWN_KIND) => {
            // Nothing of the batch was read: send it again the older way.
            sender.downgrade(&leader, takes);
            Box::pin(send(sender, items)).await;
            return;
        }
        Err(e) => {
            // Whether it may have reached the leader is kept in the copy.
            for item in items {
                let _ = item.done.send(Err(e.duplicate()));
            }
            return;
        }
    };
    let outcomes = match takes {
        Takes::Stamped => match network::decode::<Reply<Vec<ForwardOutcome>>>(&reply) {
            Ok(Reply::Ok(outcomes)) => Ok(outcomes),
            Ok(Reply::Fenced(notice)) => {
                let why = format!("this node is fenced: {notice}");
                sender.fence.fence_self(notice);
                Ok(vec![ForwardOutcome::Refused(why); items.len()])
            }
            Ok(Reply::Refused(why)) => Ok(vec![ForwardOutcome::Refused(why); items.len()]),
            Err(e) => Err(e),
        },
        _ => network::decode::<Vec<ForwardOutcome>>(&reply),
    };
    let outcomes = outcomes.and_then(|o| {
        if o.len() == items.len() {
            Ok(o)
        } else {
            Err(format!(
                "the leader answered {} outcomes for {} write-sets",
                o.len(),
                items.len()
            ))
        }
    });
    match outcomes {
        Ok(outcomes) => {
            for (item, outcome) in items.into_iter().zip(outcomes) {
                let _ = item.done.send(Ok(Ok(outcome)));
            }
        }
        Err(why) => {
            for item in items {
                let _ = item.done.send(Ok(Err(why.clone())));
            }
        }
    }
}

/// Each write-set in a request of its own (`FORWARD_WRITE`).
fn send_singly(sender: &Sender, items: Vec<Item>) {
    sender.counts.note(items.len(), items.len());
    for item in items {
        tokio::spawn(send_one(sender.transport.clone(), item));
    }
}

/// How `serve_peer` refuses a request kind it does not know.
pub(crate) const UNKNOWN_KIND: &str = "unknown request kind";

async fn send_one(transport: Transport, item: Item) {
    let reply = transport
        .call_timeout(
            item.addr,
            Some(&item.leader),
            peer_kind::FORWARD_WRITE,
            item.body,
            item.timeout,
        )
        .await
        .map(|reply| network::decode::<ForwardOutcome>(&reply));
    let _ = item.done.send(reply);
}
