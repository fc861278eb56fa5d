//! Streamed uploads: intact with progress, and broken off.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

use super::*;

#[tokio::test]
async fn a_streamed_upload_arrives_intact_with_progress() {
    let p = pki();
    let a = node(&p, "mine", "node-a").await;
    let mut b = node(&p, "mine", "node-b").await;
    let data = test_data(5 * 1024 * 1024 + 123);
    let crc = crc32fast::hash(&data);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let progress = {
        let seen = seen.clone();
        move |n| seen.lock().unwrap().push(n)
    };
    let answer =
        a.t.call_stream(
            b.addr(),
            Some("node-b"),
            SNAPSHOT,
            Bytes::from_static(b"snapshot 7"),
            &data[..],
            progress,
        )
        .await
        .unwrap();
    assert_eq!(answer, Bytes::from(format!("{}:{crc}", data.len())));
    let upload = next_upload(&mut b).await;
    assert_eq!(upload.header, Bytes::from_static(b"snapshot 7"));
    assert_eq!(upload.result, Ok((data.len() as u64, crc)));

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), data.len().div_ceil(CHUNK_BYTES));
    assert_eq!(seen.last().copied(), Some(data.len() as u64));
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");

    // An empty upload is complete too.
    let answer =
        a.t.call_stream(b.addr(), None, SNAPSHOT, Bytes::new(), &b""[..], |_| {})
            .await
            .unwrap();
    assert_eq!(answer, Bytes::from(format!("0:{}", crc32fast::hash(b""))));
    a.t.close().await;
    b.t.close().await;
}

/// Fails like a disk that went away, after a pause that lets the chunks
/// before it reach the handler (a stream reset before the listener has
/// read its first frame never reaches a handler at all).
struct FailsLater(Pin<Box<tokio::time::Sleep>>);

impl FailsLater {
    fn new() -> Self {
        FailsLater(Box::pin(tokio::time::sleep(Duration::from_millis(200))))
    }
}

impl AsyncRead for FailsLater {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        _buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.0.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::other("disk gone"))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Never yields data: an upload stuck on its source.
struct Stuck;

impl AsyncRead for Stuck {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        _buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Poll::Pending
    }
}

#[tokio::test]
async fn an_aborted_upload_is_an_error_for_the_handler() {
    let p = pki();
    let a = node(&p, "mine", "node-a").await;
    let mut b = node(&p, "mine", "node-b").await;

    // The source fails mid-way: the stream is reset.
    let data = test_data(1024 * 1024 + 5);
    let reader = (&data[..]).chain(FailsLater::new());
    let err =
        a.t.call_stream(b.addr(), None, SNAPSHOT, Bytes::new(), reader, |_| {})
            .await
            .unwrap_err();
    assert!(matches!(err, TransportError::Source { .. }), "{err}");
    let upload = next_upload(&mut b).await;
    let reason = upload.result.unwrap_err();
    assert!(reason.contains("reset"), "{reason}");

    // The caller gives up (its future is dropped): the stream ends without
    // an end frame.
    let reader = (&data[..600 * 1024]).chain(Stuck);
    let call =
        a.t.call_stream(b.addr(), None, SNAPSHOT, Bytes::new(), reader, |_| {});
    assert!(tokio::time::timeout(Duration::from_millis(300), call)
        .await
        .is_err());
    let upload = next_upload(&mut b).await;
    let reason = upload.result.unwrap_err();
    assert!(reason.contains("without an end frame"), "{reason}");

    // The connection survived both.
    let got = a.t.call(b.addr(), None, ECHO, Bytes::new()).await.unwrap();
    assert_eq!(got, echo_answer("node-b", "node-a", ""));
    a.t.close().await;
    b.t.close().await;
}
