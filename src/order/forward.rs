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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::{mpsc, oneshot};

use super::network;
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
    counts: Arc<ForwardCounts>,
}

/// Requests to the leader that carried forwarded write-sets, and how many
/// write-sets they carried (`/metrics`).
#[derive(Debug, Default)]
pub struct ForwardCounts {
    pub requests: AtomicU64,
    pub writesets: AtomicU64,
}

impl Forwarder {
    pub fn start(transport: Transport) -> Forwarder {
        let (queue, rx) = mpsc::unbounded_channel();
        let counts = Arc::new(ForwardCounts::default());
        tokio::spawn(run(transport, rx, counts.clone()));
        Forwarder { queue, counts }
    }

    pub fn counts(&self) -> &ForwardCounts {
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
    counts: Arc<ForwardCounts>,
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
    counts: Arc<ForwardCounts>,
) {
    counts
        .writesets
        .fetch_add(items.len() as u64, Ordering::Relaxed);
    if items.len() == 1 || batches_refused.load(Ordering::Relaxed) {
        counts
            .requests
            .fetch_add(items.len() as u64, Ordering::Relaxed);
        for item in items {
            tokio::spawn(send_one(transport.clone(), item));
        }
        return;
    }
    counts.requests.fetch_add(1, Ordering::Relaxed);
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
    match reply {
        Ok(reply) => match network::decode::<Vec<ForwardOutcome>>(&reply) {
            Ok(outcomes) if outcomes.len() == items.len() => {
                for (item, outcome) in items.into_iter().zip(outcomes) {
                    let _ = item.done.send(Ok(Ok(outcome)));
                }
            }
            Ok(outcomes) => {
                let why = format!(
                    "the leader answered {} outcomes for {} write-sets",
                    outcomes.len(),
                    items.len()
                );
                for item in items {
                    let _ = item.done.send(Ok(Err(why.clone())));
                }
            }
            Err(why) => {
                for item in items {
                    let _ = item.done.send(Ok(Err(why.clone())));
                }
            }
        },
        Err(TransportError::Remote { message, .. }) if message.contains(UNKNOWN_KIND) => {
            // Nothing of the batch was read: send each alone from now on.
            tracing::info!(
                leader = %leader,
                "the leader does not take batches of forwarded write-sets (an older build); forwarding them one by one"
            );
            batches_refused.store(true, Ordering::Relaxed);
            counts
                .requests
                .fetch_add(items.len() as u64, Ordering::Relaxed);
            for item in items {
                tokio::spawn(send_one(transport.clone(), item));
            }
        }
        Err(e) => {
            for item in items {
                let _ = item.done.send(Err(same_error(&e)));
            }
        }
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

/// One failed batch RPC, told to each of its write-sets. Whether a
/// write-set may have reached the leader is kept: a connection that was
/// never made (unreachable, TLS, refused) sent nothing.
fn same_error(e: &TransportError) -> TransportError {
    use TransportError as T;
    match e {
        T::Unreachable { peer, reason } => T::Unreachable {
            peer: *peer,
            reason: reason.clone(),
        },
        T::Tls { peer, reason } => T::Tls {
            peer: *peer,
            reason: reason.clone(),
        },
        T::Refused { peer, reason } => T::Refused {
            peer: *peer,
            reason: reason.clone(),
        },
        T::Connection { peer, reason } => T::Connection {
            peer: *peer,
            reason: reason.clone(),
        },
        T::Timeout { peer, after } => T::Timeout {
            peer: *peer,
            after: *after,
        },
        T::Remote { peer, message } => T::Remote {
            peer: *peer,
            message: message.clone(),
        },
        T::Closed => T::Closed,
        // Bind/Identity/Config never come from a call; the rest broke
        // mid-request, so the batch may have been read.
        other => T::Stream {
            peer: peer_of(other),
            reason: other.to_string(),
        },
    }
}

fn peer_of(e: &TransportError) -> SocketAddr {
    use TransportError as T;
    match e {
        T::Stream { peer, .. } | T::Frame { peer, .. } | T::Source { peer, .. } => *peer,
        T::Bind { addr, .. } => *addr,
        _ => SocketAddr::from(([0, 0, 0, 0], 0)),
    }
}
