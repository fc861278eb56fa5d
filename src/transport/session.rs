//! Sessions: one stream that carries many messages each way, in order,
//! for as long as both sides keep it open. Raft's pipelined replication
//! runs on one: the leader sends append-entries without waiting for the
//! answers to the earlier ones, and the follower answers them in order.
//!
//! The caller opens it with a `Session` frame (kind and header); then each
//! side sends `Message` frames and finishes its half when it has no more.
//! The handler may end its half with a `Failure` (a refusal) instead.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use quinn::{RecvStream, SendStream};

use super::endpoint::{wire_error, ActiveStream, Inner};
use super::frame::{read_frame, write_frame, FrameError, FrameType, WireError};
use super::server::{truncated, Strikes};
use super::TransportError;

/// The sending half of a session.
pub struct SessionSender {
    send: SendStream,
    peer: SocketAddr,
    max: usize,
    /// Keeps the connection from being retired while the session lives.
    _open: Option<ActiveStream>,
}

/// The receiving half of a session.
pub struct SessionReceiver {
    recv: RecvStream,
    peer: SocketAddr,
    max: usize,
    inner: Arc<Inner>,
    /// On the serving side: bad frames count against the peer.
    strikes: Option<Arc<Strikes>>,
}

impl SessionSender {
    pub(super) fn new(
        send: SendStream,
        peer: SocketAddr,
        max: usize,
        open: Option<ActiveStream>,
    ) -> SessionSender {
        SessionSender {
            send,
            peer,
            max,
            _open: open,
        }
    }

    /// Sends one message; it arrives after every message sent before it.
    pub async fn send(&mut self, message: Bytes) -> Result<(), TransportError> {
        write_frame(&mut self.send, FrameType::Message, &[], message, self.max)
            .await
            .map_err(|e| wire_error(self.peer, e))
    }

    /// Ends this half: the peer's receiver yields `None` after the last
    /// message.
    pub fn finish(mut self) {
        let _ = self.send.finish();
    }

    /// Ends this half with a refusal: the peer's receiver fails with it
    /// after the messages sent before.
    pub async fn fail(mut self, message: &str) {
        let body = truncated(message.to_string(), self.max);
        if write_frame(&mut self.send, FrameType::Failure, &[], body, self.max)
            .await
            .is_ok()
        {
            let _ = self.send.finish();
        }
    }
}

impl SessionReceiver {
    pub(super) fn new(
        recv: RecvStream,
        peer: SocketAddr,
        max: usize,
        inner: Arc<Inner>,
        strikes: Option<Arc<Strikes>>,
    ) -> SessionReceiver {
        SessionReceiver {
            recv,
            peer,
            max,
            inner,
            strikes,
        }
    }

    /// The next message; `None` once the peer finished its half. Not
    /// cancel-safe: a call dropped half-way may leave half a frame read,
    /// so a caller that needs a timeout reads from a task of its own.
    pub async fn next(&mut self) -> Result<Option<Bytes>, TransportError> {
        let frame = match read_frame(&mut self.recv, self.max).await {
            Ok(Some(frame)) => frame,
            Ok(None) => return Ok(None),
            Err(WireError::Frame(e)) => return Err(self.bad_frame(e)),
            Err(e) => return Err(wire_error(self.peer, e)),
        };
        self.inner.count(frame.payload.len());
        let text = || String::from_utf8_lossy(&frame.payload).into_owned();
        match frame.ty {
            FrameType::Message => Ok(Some(frame.payload)),
            FrameType::Failure => Err(TransportError::Remote {
                peer: self.peer,
                message: text(),
            }),
            FrameType::Rejected => Err(TransportError::Frame {
                peer: self.peer,
                source: FrameError::Rejected(text()),
            }),
            _ => Err(self.bad_frame(frame.unexpected("a session message"))),
        }
    }

    fn bad_frame(&self, e: FrameError) -> TransportError {
        if let Some(strikes) = &self.strikes {
            strikes.strike(&e.to_string());
        }
        TransportError::Frame {
            peer: self.peer,
            source: e,
        }
    }
}
