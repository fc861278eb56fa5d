//! Sessions: many messages each way on one stream, in order, without
//! waiting for answers; refusals; a bad frame inside a session.

use super::super::frame::{write_frame, FrameType};
use super::*;

#[tokio::test]
async fn a_session_carries_messages_in_order_without_waiting_for_answers() {
    let p = pki();
    let a = node(&p, "mine", "node-a").await;
    let b = node(&p, "mine", "node-b").await;
    let (mut tx, mut rx) =
        a.t.open_session(b.addr(), Some("node-b"), ECHO, Bytes::from_static(b"h"))
            .await
            .unwrap();
    // All sent before any answer is read: the sender never waits for them.
    for i in 1..=200 {
        tx.send(Bytes::from(format!("m{i}"))).await.unwrap();
    }
    for i in 1..=200 {
        let got = rx.next().await.unwrap().unwrap();
        assert_eq!(got, Bytes::from(format!("node-b to node-a #{i} h: m{i}")));
    }
    // Still open: more messages go on the same stream.
    tx.send(Bytes::from_static(b"last")).await.unwrap();
    tx.finish();
    let got = rx.next().await.unwrap().unwrap();
    assert_eq!(got, Bytes::from_static(b"node-b to node-a #201 h: last"));
    assert!(
        rx.next().await.unwrap().is_none(),
        "the handler finished too"
    );
    // Calls and the session share the one connection.
    a.t.call(b.addr(), None, ECHO, Bytes::new()).await.unwrap();
    assert_eq!(a.t.connection_count(), 1);
    a.t.close().await;
    b.t.close().await;
}

#[tokio::test]
async fn a_session_the_peer_does_not_serve_fails_with_its_reason() {
    let p = pki();
    let a = node(&p, "mine", "node-a").await;
    let b = node(&p, "mine", "node-b").await;
    let (mut tx, mut rx) =
        a.t.open_session(b.addr(), None, FAIL, Bytes::new())
            .await
            .unwrap();
    // The refusal may come before or after this lands; either is fine.
    let _ = tx.send(Bytes::from_static(b"x")).await;
    let err = rx.next().await.unwrap_err();
    assert!(
        matches!(&err, TransportError::Remote { message, .. }
            if message == "node-b serves no sessions of kind 2"),
        "{err}"
    );
    // The connection is fine.
    let got = a.t.call(b.addr(), None, ECHO, Bytes::new()).await.unwrap();
    assert_eq!(got, echo_answer("node-b", "node-a", ""));
    a.t.close().await;
    b.t.close().await;
}

#[tokio::test]
async fn a_bad_frame_inside_a_session_ends_it_with_an_error_not_the_node() {
    let p = pki();
    let a = node(&p, "mine", "node-a").await;
    let b = node(&p, "mine", "node-b").await;
    let conn = a.t.raw_connection(b.addr()).await.unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    write_frame(
        &mut send,
        FrameType::Session,
        &[ECHO],
        Bytes::new(),
        MAX_FRAME,
    )
    .await
    .unwrap();
    // A chunk is not a session message.
    write_frame(
        &mut send,
        FrameType::Chunk,
        &[],
        Bytes::from_static(b"?"),
        MAX_FRAME,
    )
    .await
    .unwrap();
    let answer = super::super::frame::read_frame(&mut recv, MAX_FRAME)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer.ty, FrameType::Failure);
    let text = String::from_utf8_lossy(&answer.payload).into_owned();
    assert!(
        text.contains("expected a session message, got a chunk frame"),
        "{text}"
    );
    let got = a.t.call(b.addr(), None, ECHO, Bytes::new()).await.unwrap();
    assert_eq!(got, echo_answer("node-b", "node-a", ""));
    a.t.close().await;
    b.t.close().await;
}
