//! Forwarding write-sets from a follower to the leader, many per RPC.
//!
//! Every client of a follower has its write-set ordered by the leader. Sent
//! one by one, each costs a QUIC stream both ways and a proposal of its own
//! on the leader. The forwarder queues them and sends whatever is waiting to
//! one leader as a single `FORWARD_WRITES` request; the leader proposes the
//! batch at once (`propose`) and answers one outcome per write-set, in
//! order. Like the proposer it never waits for more: one yield lets the
//! tasks that are ready queue theirs, so a lone writer is sent at once.
//! A batch of one goes as the older `FORWARD_WRITE`, and a leader that
//! does not know `FORWARD_WRITES` (an older build) gets single requests.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::{mpsc, oneshot};

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
    pub fn start(transport: Transport) -> Forwarder {
        let (queue, rx) = mpsc::unbounded_channel();
        let counts = Arc::new(BatchCounts::default());
        tokio::spawn(run(transport, rx, counts.clone()));
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

async fn run(
    transport: Transport,
    mut queue: mpsc::UnboundedReceiver<Item>,
    counts: Arc<BatchCounts>,
) {
    let batches_refused = Arc::new(AtomicBool::new(false));
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
            tokio::spawn(send(
                transport.clone(),
                same,
                batches_refused.clone(),
                counts.clone(),
            ));
        }
    }
}

async fn send(
    transport: Transport,
    items: Vec<Item>,
    batches_refused: Arc<AtomicBool>,
    counts: Arc<BatchCounts>,
) {
    if items.len() == 1 || batches_refused.load(Ordering::Relaxed) {
        send_singly(&transport, items, &counts);
        return;
    }
    counts.note(1, items.len());
    let first = &items[0];
    let (addr, leader) = (first.addr, first.leader.clone());
    let timeout = items.iter().map(|i| i.timeout).max().unwrap_or_default();
    // bincode's Vec<WriteSet>: the count, then each write-set as encoded.
    let mut body = BytesMut::with_capacity(8 + items.iter().map(|i| i.body.len()).sum::<usize>());
    body.put_u64_le(items.len() as u64);
    for item in &items {
        body.put_slice(&item.body);
    }
    let reply = transport
        .call_timeout(
            addr,
            Some(&leader),
            peer_kind::FORWARD_WRITES,
            body.freeze(),
            timeout,
        )
        .await;
    let reply = match reply {
        Ok(reply) => reply,
        Err(TransportError::Remote { message, .. }) if message.contains(UNKNOWN_KIND) => {
            // Nothing of the batch was read: send each alone from now on.
            tracing::info!(
                leader = %leader,
                "the leader does not take batches of forwarded write-sets (an older build); forwarding them one by one"
            );
            batches_refused.store(true, Ordering::Relaxed);
            send_singly(&transport, items, &counts);
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
    let outcomes = network::decode::<Vec<ForwardOutcome>>(&reply).and_then(|o| {
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
fn send_singly(transport: &Transport, items: Vec<Item>, counts: &BatchCounts) {
    counts.note(items.len(), items.len());
    for item in items {
        tokio::spawn(send_one(transport.clone(), item));
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
