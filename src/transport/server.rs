//! The listening side: accepts connections, checks the dialler's Hello,
//! and answers each stream (an RPC, an upload or a session) in its own task.
//!
//! Whatever a peer sends, the worst outcome is that its stream or its
//! connection is closed with a reason: bad frames get a `Rejected` answer,
//! refused peers are logged with `warn!` and closed with [`CLOSE_REFUSED`].

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use quinn::{ConnectionError, RecvStream, SendStream, VarInt};
use tokio::sync::{mpsc, Semaphore};
use tracing::{debug, warn};

use super::chunks::{ChunkItem, ChunkStream};
use super::endpoint::{Inner, PeerConn};
use super::frame::{
    decode_end, expect_frame, note_finished, read_frame, write_frame, FrameType, Hello, WireError,
    HELLO_MAX_BYTES,
};
use super::session::{SessionReceiver, SessionSender};
use super::tls::{
    check_hello, negotiated_alpn, peer_certificate, CLOSE_MISBEHAVING, CLOSE_REFUSED,
};
use super::{PeerIdentity, RpcFailure, RpcHandler, BAD_FRAME_WINDOW};
use crate::log_limit::LogLimiter;

/// Stream stop code: we could not read the peer's frame.
const STREAM_BAD_FRAME: VarInt = VarInt::from_u32(2);
/// Stream stop code: the handler answered before the upload ended.
const STREAM_ANSWERED: VarInt = VarInt::from_u32(3);

pub(super) async fn accept_loop<H: RpcHandler>(inner: Arc<Inner>, handler: Arc<H>) {
    let max = inner.opts.max_incoming_connections;
    let slots = Arc::new(Semaphore::new(max));
    let refusals = LogLimiter::new(Duration::from_secs(10));
    while let Some(incoming) = inner.endpoint.accept().await {
        // Refused before any handshake work: a flood of connection attempts
        // costs a stateless refusal each, and the peers already connected
        // keep their connections.
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            let addr = incoming.remote_address();
            incoming.refuse();
            if let Some(held_back) = refusals.allow() {
                warn!(
                    peer = %addr,
                    limit = max,
                    refused_since_last_warning = held_back,
                    "refused a replication connection: {max} incoming connections are open, the \
                     limit (raise replication.max_peer_connections to allow more)"
                );
            }
            continue;
        };
        let inner = inner.clone();
        let handler = handler.clone();
        tokio::spawn(async move {
            serve_connection(inner, handler, incoming).await;
            drop(slot);
        });
    }
    debug!("replication endpoint closed; no longer accepting peers");
}

/// Malformed frames a peer sent lately. Past the limit its whole connection
/// is closed: a peer with a valid certificate that keeps sending junk is
/// broken or hostile, and refusing stream after stream would let it go on
/// for ever.
pub(super) struct Strikes {
    conn: quinn::Connection,
    peer: PeerIdentity,
    max: u32,
    window: Duration,
    recent: Mutex<VecDeque<Instant>>,
}

impl Strikes {
    fn new(conn: quinn::Connection, peer: PeerIdentity, max: u32, window: Duration) -> Self {
        Strikes {
            conn,
            peer,
            max,
            window,
            recent: Mutex::new(VecDeque::new()),
        }
    }

    /// Counts one malformed frame; closes the connection when there were
    /// more than `max` within the window. True when it did.
    pub(super) fn strike(&self, why: &str) -> bool {
        let now = Instant::now();
        let count = {
            let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            while recent
                .front()
                .is_some_and(|t| now.saturating_duration_since(*t) > self.window)
            {
                recent.pop_front();
            }
            recent.push_back(now);
            recent.len()
        };
        if count <= self.max as usize {
            return false;
        }
        let reason = format!(
            "{count} malformed frames within {} s (the limit is {}); last: {why}",
            self.window.as_secs(),
            self.max
        );
        if self.conn.close_reason().is_none() {
            warn!(
                peer = %self.peer.addr,
                node = %self.peer.node_name,
                %reason,
                "disconnected a replication peer that sends malformed frames; it may reconnect"
            );
        }
        self.conn.close(CLOSE_MISBEHAVING, reason.as_bytes());
        true
    }
}

async fn serve_connection<H: RpcHandler>(
    inner: Arc<Inner>,
    handler: Arc<H>,
    incoming: quinn::Incoming,
) {
    let addr = incoming.remote_address();
    let limit = inner.opts.connect_timeout;
    let handshake = async { incoming.accept()?.await };
    let conn = match tokio::time::timeout(limit, handshake).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => return log_handshake_failure(addr, &e),
        Err(_) => return debug!(peer = %addr, "TLS handshake did not finish in time"),
    };
    let peer = match tokio::time::timeout(limit, answer_hello(&inner, &conn, addr)).await {
        Ok(Ok(peer)) => peer,
        Ok(Err(HelloFailure::Refused(reason))) => return refuse(&conn, addr, &reason),
        Ok(Err(HelloFailure::Lost(reason))) => {
            return debug!(peer = %addr, %reason, "peer left during the hello")
        }
        Err(_) => return refuse(&conn, addr, &no_hello(limit)),
    };
    debug!(peer = %addr, node = %peer.node_name, "peer connected");
    let pc = PeerConn::new(conn, &peer.node_name, false);
    // Our calls to this peer may go on its connection too.
    inner.adopt(addr, pc.clone());
    serve_streams(inner, handler, pc, peer).await;
}

/// Answers the peer's streams on `pc` until the connection ends: one we
/// accepted, or one we dialled that the peer also calls us on.
pub(super) async fn serve_streams<H: RpcHandler>(
    inner: Arc<Inner>,
    handler: Arc<H>,
    pc: PeerConn,
    peer: PeerIdentity,
) {
    let strikes = Arc::new(Strikes::new(
        pc.conn.clone(),
        peer.clone(),
        inner.opts.max_bad_frames,
        BAD_FRAME_WINDOW,
    ));
    loop {
        match pc.conn.accept_bi().await {
            Ok((send, recv)) => {
                let open = pc.stream_open();
                let task = serve_stream(
                    inner.clone(),
                    handler.clone(),
                    peer.clone(),
                    strikes.clone(),
                    send,
                    recv,
                );
                tokio::spawn(async move {
                    task.await;
                    drop(open);
                });
            }
            Err(e) => {
                debug!(peer = %peer.addr, node = %peer.node_name, reason = %e, "peer disconnected");
                break;
            }
        }
    }
}

fn no_hello(limit: Duration) -> String {
    format!("no hello within {} ms", limit.as_millis())
}

fn refuse(conn: &quinn::Connection, addr: SocketAddr, reason: &str) {
    warn!(peer = %addr, %reason, "refused a replication peer");
    conn.close(CLOSE_REFUSED, reason.as_bytes());
}

fn log_handshake_failure(addr: SocketAddr, e: &ConnectionError) {
    match e {
        // A crypto error: the peer's certificate, ALPN or TLS version.
        ConnectionError::TransportError(t) if (0x100..=0x1ff).contains(&u64::from(t.code)) => {
            warn!(peer = %addr, reason = %e, "refused a replication peer: TLS handshake failed")
        }
        _ => debug!(peer = %addr, reason = %e, "incoming connection failed during the handshake"),
    }
}

enum HelloFailure {
    /// The peer is not welcome; the reason goes to the log and to the peer.
    Refused(String),
    /// The connection broke; nothing to tell anyone.
    Lost(String),
}

/// The listener's side of the Hello: read and check the dialler's, then
/// send ours. The dialler opens no RPC stream before it has our Hello, so
/// no request is served to an unchecked peer.
async fn answer_hello(
    inner: &Inner,
    conn: &quinn::Connection,
    addr: SocketAddr,
) -> Result<PeerIdentity, HelloFailure> {
    if !negotiated_alpn(conn) {
        return Err(HelloFailure::Refused(format!(
            "peer at {addr} did not settle on our ALPN protocol"
        )));
    }
    let (mut send, mut recv) = conn
        .accept_bi()
        .await
        .map_err(|e| HelloFailure::Lost(e.to_string()))?;
    let frame = expect_frame(&mut recv, HELLO_MAX_BYTES, "the hello")
        .await
        .map_err(|e| match e {
            WireError::Frame(e) => HelloFailure::Refused(format!("bad hello from {addr}: {e}")),
            other => HelloFailure::Lost(other.to_string()),
        })?;
    if frame.ty != FrameType::Hello {
        let e = frame.unexpected("a hello");
        return Err(HelloFailure::Refused(format!("peer at {addr}: {e}")));
    }
    let theirs = Hello::decode(&frame.payload)
        .map_err(|e| HelloFailure::Refused(format!("bad hello from {addr}: {e}")))?;
    check_hello(
        &inner.opts,
        addr,
        &theirs,
        peer_certificate(conn).as_ref(),
        None,
    )
    .map_err(HelloFailure::Refused)?;
    write_frame(
        &mut send,
        FrameType::Hello,
        &[],
        inner.hello.clone(),
        HELLO_MAX_BYTES,
    )
    .await
    .map_err(|e| HelloFailure::Lost(e.to_string()))?;
    let _ = send.finish();
    Ok(PeerIdentity {
        node_name: theirs.node_name,
        addr,
    })
}

async fn serve_stream<H: RpcHandler>(
    inner: Arc<Inner>,
    handler: Arc<H>,
    peer: PeerIdentity,
    strikes: Arc<Strikes>,
    mut send: SendStream,
    mut recv: RecvStream,
) {
    let max = inner.opts.max_frame_bytes;
    let limit = inner.opts.rpc_timeout;
    let first = match tokio::time::timeout(limit, read_frame(&mut recv, max)).await {
        Ok(Ok(Some(frame))) => frame,
        // The dialler opened a stream and finished it unused.
        Ok(Ok(None)) => return,
        Ok(Err(WireError::Frame(e))) => {
            strikes.strike(&e.to_string());
            return reject(&peer, &mut send, &mut recv, &e.to_string(), max).await;
        }
        Ok(Err(e)) => return debug!(peer = %peer.addr, reason = %e, "RPC stream failed"),
        Err(_) => {
            let why = format!("no request within {} ms", limit.as_millis());
            return reject(&peer, &mut send, &mut recv, &why, max).await;
        }
    };
    inner.count(first.payload.len());
    let serves_it = match first.ty {
        FrameType::Request | FrameType::UploadHeader => true,
        FrameType::Session => inner.opts.serve_sessions,
        _ => false,
    };
    let (kind, body) = if serves_it {
        match first.kind_and_body() {
            Ok(kb) => kb,
            Err(e) => {
                strikes.strike(&e.to_string());
                return reject(&peer, &mut send, &mut recv, &e.to_string(), max).await;
            }
        }
    } else {
        let e = first.unexpected("a request, an upload header or a session");
        strikes.strike(&e.to_string());
        return reject(&peer, &mut send, &mut recv, &e.to_string(), max).await;
    };
    if first.ty == FrameType::Session {
        let messages = SessionReceiver::new(recv, peer.addr, max, inner.clone(), Some(strikes));
        let replies = SessionSender::new(send, peer.addr, max, None);
        return handler
            .handle_session(peer, kind, body, messages, replies)
            .await;
    }
    let answer = if first.ty == FrameType::Request {
        note_finished(&mut recv);
        // A caller that gives up (timeout) stops reading: the handler's
        // work is then cancelled instead of piling up.
        tokio::select! {
            answer = handler.handle(peer.clone(), kind, body) => Some(answer),
            _ = send.stopped() => None,
        }
    } else {
        // Not cancelled: a broken-off upload reaches the handler as a
        // chunk error, so it can clean up knowingly.
        Some(
            serve_upload(
                &*handler,
                peer.clone(),
                kind,
                body,
                &mut recv,
                &strikes,
                &inner,
            )
            .await,
        )
    };
    if let Some(Err(failure)) = &answer {
        if failure.malformed {
            strikes.strike(&failure.message);
        }
    }
    match answer {
        Some(answer) => write_answer(&peer, &mut send, answer, max).await,
        None => debug!(peer = %peer.addr, kind, "the caller abandoned its RPC"),
    }
}

/// Runs the handler while a pump feeds it the upload's chunks.
async fn serve_upload<H: RpcHandler>(
    handler: &H,
    peer: PeerIdentity,
    kind: u8,
    header: Bytes,
    recv: &mut RecvStream,
    strikes: &Strikes,
    inner: &Inner,
) -> Result<Bytes, RpcFailure> {
    let opts = &inner.opts;
    let (tx, chunks) = ChunkStream::channel();
    let handling = handler.handle_stream(peer, kind, header, chunks);
    tokio::pin!(handling);
    let (max, stall) = (opts.max_frame_bytes, opts.rpc_timeout);
    let mut pump = Box::pin(pump_chunks(recv, tx, strikes, inner, max, stall));
    let mut pumped = false;
    let answer = loop {
        tokio::select! {
            answer = &mut handling => break answer,
            _ = &mut pump, if !pumped => pumped = true,
        }
    };
    drop(pump);
    if !pumped {
        let _ = recv.stop(STREAM_ANSWERED);
    }
    answer
}

/// Moves frames from the stream into the handler's bounded queue; ends with
/// `End` only after an end frame whose count matches what arrived.
async fn pump_chunks(
    recv: &mut RecvStream,
    tx: mpsc::Sender<ChunkItem>,
    strikes: &Strikes,
    inner: &Inner,
    max: usize,
    stall: Duration,
) {
    let mut total = 0u64;
    let reason = loop {
        let frame = match tokio::time::timeout(stall, read_frame(recv, max)).await {
            Ok(Ok(Some(frame))) => frame,
            Ok(Ok(None)) => break "the sender finished the stream without an end frame".into(),
            Ok(Err(WireError::Frame(e))) => {
                strikes.strike(&e.to_string());
                break e.to_string();
            }
            Ok(Err(e)) => break e.to_string(),
            Err(_) => break format!("no data from the sender for {} ms", stall.as_millis()),
        };
        match frame.ty {
            FrameType::Chunk => {
                inner.count(frame.payload.len());
                total += frame.payload.len() as u64;
                if tx.send(ChunkItem::Chunk(frame.payload)).await.is_err() {
                    // The handler is done and no longer listening.
                    return;
                }
            }
            FrameType::End => match decode_end(&frame.payload) {
                Ok(sent) if sent == total => {
                    note_finished(recv);
                    let _ = tx.send(ChunkItem::End).await;
                    return;
                }
                Ok(sent) => break format!("the sender sent {sent} bytes but {total} arrived"),
                Err(e) => break e.to_string(),
            },
            _ => {
                let e = frame.unexpected("a chunk or the end").to_string();
                strikes.strike(&e);
                break e;
            }
        }
    };
    let _ = tx.send(ChunkItem::Failed(reason)).await;
}

async fn write_answer(
    peer: &PeerIdentity,
    send: &mut SendStream,
    answer: Result<Bytes, RpcFailure>,
    max: usize,
) {
    let (ty, payload) = match answer {
        Ok(body) if body.len() <= max => (FrameType::Response, body),
        Ok(body) => (
            FrameType::Failure,
            Bytes::from(format!(
                "the answer of {} bytes exceeds max_frame_bytes ({max})",
                body.len()
            )),
        ),
        Err(failure) => (FrameType::Failure, truncated(failure.message, max)),
    };
    if let Err(e) = write_frame(send, ty, &[], payload, max).await {
        debug!(peer = %peer.addr, reason = %e, "could not send an RPC answer");
    }
    let _ = send.finish();
}

/// Answers a bad stream with the reason and stops reading it; the
/// connection and its other streams carry on.
async fn reject(
    peer: &PeerIdentity,
    send: &mut SendStream,
    recv: &mut RecvStream,
    why: &str,
    max: usize,
) {
    warn!(peer = %peer.addr, node = %peer.node_name, reason = %why, "bad RPC stream from a peer");
    let _ = recv.stop(STREAM_BAD_FRAME);
    let msg = truncated(why.to_string(), max);
    if write_frame(send, FrameType::Rejected, &[], msg, max)
        .await
        .is_ok()
    {
        let _ = send.finish();
    }
}

/// `message` cut to at most `max` bytes, on a character boundary.
pub(super) fn truncated(mut message: String, max: usize) -> Bytes {
    if message.len() > max {
        let mut end = max;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
    }
    Bytes::from(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_cut_on_char_boundaries() {
        assert_eq!(truncated("abc".into(), 10), Bytes::from_static(b"abc"));
        assert_eq!(truncated("abcdef".into(), 3), Bytes::from_static(b"abc"));
        // 'é' is two bytes: cutting inside it backs off to before it.
        assert_eq!(truncated("aé".into(), 2), Bytes::from_static(b"a"));
    }
}
