//! The receiving end of a streamed upload, as the handler sees it.
//!
//! End of data is only ever reported after the sender's explicit end frame
//! (with a matching byte count). A sender that vanishes, a reset stream, a
//! bad frame or a stall all surface as an error, so a half-received
//! snapshot is never taken for a whole one.

use bytes::Bytes;
use tokio::sync::mpsc;

/// Chunks the network task may read ahead of the handler. Bounded, so a
/// slow handler slows the sender down (QUIC flow control) instead of
/// buffering the whole upload in memory.
pub(super) const CHUNK_QUEUE: usize = 4;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("upload broke off after {received} bytes: {reason}")]
pub struct ChunkError {
    pub received: u64,
    pub reason: String,
}

#[derive(Debug)]
pub(super) enum ChunkItem {
    Chunk(Bytes),
    End,
    Failed(String),
}

/// Chunks of an upload, pulled by [`super::RpcHandler::handle_stream`].
#[derive(Debug)]
pub struct ChunkStream {
    rx: mpsc::Receiver<ChunkItem>,
    received: u64,
    state: State,
}

#[derive(Debug, Clone)]
enum State {
    Open,
    Ended,
    Failed(String),
}

impl ChunkStream {
    pub(super) fn channel() -> (mpsc::Sender<ChunkItem>, ChunkStream) {
        let (tx, rx) = mpsc::channel(CHUNK_QUEUE);
        let stream = ChunkStream {
            rx,
            received: 0,
            state: State::Open,
        };
        (tx, stream)
    }

    /// The next chunk; `Ok(None)` once the sender marked the upload
    /// complete, an error if it did not get there.
    pub async fn next(&mut self) -> Result<Option<Bytes>, ChunkError> {
        match &self.state {
            State::Open => {}
            State::Ended => return Ok(None),
            State::Failed(reason) => return Err(self.error(reason.clone())),
        }
        let item = self.rx.recv().await;
        match item {
            Some(ChunkItem::Chunk(data)) => {
                self.received += data.len() as u64;
                Ok(Some(data))
            }
            Some(ChunkItem::End) => {
                self.state = State::Ended;
                Ok(None)
            }
            Some(ChunkItem::Failed(reason)) => self.fail(reason),
            None => self.fail("the connection task stopped before the end of the upload".into()),
        }
    }

    /// Bytes handed out so far.
    pub fn bytes_received(&self) -> u64 {
        self.received
    }

    fn fail(&mut self, reason: String) -> Result<Option<Bytes>, ChunkError> {
        self.state = State::Failed(reason.clone());
        Err(self.error(reason))
    }

    fn error(&self, reason: String) -> ChunkError {
        ChunkError {
            received: self.received,
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn end_only_after_the_end_marker() {
        let (tx, mut chunks) = ChunkStream::channel();
        tx.send(ChunkItem::Chunk(Bytes::from_static(b"abc")))
            .await
            .unwrap();
        tx.send(ChunkItem::End).await.unwrap();
        drop(tx);
        assert_eq!(chunks.next().await, Ok(Some(Bytes::from_static(b"abc"))));
        assert_eq!(chunks.next().await, Ok(None));
        assert_eq!(chunks.next().await, Ok(None));
        assert_eq!(chunks.bytes_received(), 3);
    }

    #[tokio::test]
    async fn a_vanished_sender_is_an_error_not_an_end() {
        let (tx, mut chunks) = ChunkStream::channel();
        tx.send(ChunkItem::Chunk(Bytes::from_static(b"ab")))
            .await
            .unwrap();
        drop(tx);
        assert!(chunks.next().await.unwrap().is_some());
        let err = chunks.next().await.unwrap_err();
        assert_eq!(err.received, 2);
        // Stays failed: a retry loop in a handler cannot turn it into an end.
        assert_eq!(chunks.next().await, Err(err));
    }

    #[tokio::test]
    async fn reported_failures_reach_the_handler() {
        let (tx, mut chunks) = ChunkStream::channel();
        tx.send(ChunkItem::Failed("stream reset by peer".into()))
            .await
            .unwrap();
        let err = chunks.next().await.unwrap_err();
        assert!(err.to_string().contains("stream reset by peer"), "{err}");
    }

    #[tokio::test]
    async fn the_queue_is_bounded() {
        let (tx, _chunks) = ChunkStream::channel();
        for _ in 0..CHUNK_QUEUE {
            tx.try_send(ChunkItem::Chunk(Bytes::new())).unwrap();
        }
        assert!(tx.try_send(ChunkItem::Chunk(Bytes::new())).is_err());
    }
}
