//! Calls: both ways, one shared connection, bad frames, dead and silent
//! peers, abandoned calls, and the latency measurement.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tokio::net::UdpSocket;

use super::super::frame::{read_frame, FrameType, WIRE_VERSION};
use super::*;

#[tokio::test]
async fn two_nodes_call_each_other_both_ways() {
    let p = pki();
    let a = node(&p, "mine", "node-a").await;
    let b = node(&p, "mine", "node-b").await;

    let got =
        a.t.call(b.addr(), Some("node-b"), ECHO, Bytes::from_static(b"hi"))
            .await
            .unwrap();
    assert_eq!(got, echo_answer("node-b", "node-a", "hi"));
    // Without an expected name, the name is learnt from the Hello.
    let got =
        b.t.call(a.addr(), None, ECHO, Bytes::from_static(b"yo"))
            .await
            .unwrap();
    assert_eq!(got, echo_answer("node-a", "node-b", "yo"));
    let empty = a.t.call(b.addr(), None, ECHO, Bytes::new()).await.unwrap();
    assert_eq!(empty, echo_answer("node-b", "node-a", ""));

    let err =
        a.t.call(b.addr(), Some("node-b"), FAIL, Bytes::new())
            .await
            .unwrap_err();
    assert!(
        matches!(&err, TransportError::Remote { message, .. } if message == "no such table"),
        "{err}"
    );
    // A handler's failure is not the connection's.
    assert!(!err.is_connection_failure());
    assert_eq!(
        a.t.connected_peers(),
        vec![PeerIdentity {
            node_name: "node-b".into(),
            addr: b.addr()
        }]
    );

    // The cached connection is to node-b: asking for another name there fails.
    let err =
        a.t.call(b.addr(), Some("node-c"), ECHO, Bytes::new())
            .await
            .unwrap_err();
    assert!(matches!(err, TransportError::Refused { .. }), "{err}");
    assert!(err.to_string().contains("expected 'node-c'"), "{err}");
    a.t.close().await;
    b.t.close().await;
}

#[tokio::test]
async fn concurrent_calls_share_one_connection() {
    let p = pki();
    let a = node(&p, "mine", "node-a").await;
    let b = node(&p, "mine", "node-b").await;
    let calls = (0..200).map(|i| {
        let t = a.t.clone();
        let peer = b.addr();
        async move {
            let body = Bytes::from(format!("{i}"));
            let got = t.call(peer, Some("node-b"), ECHO, body).await.unwrap();
            assert_eq!(got, echo_answer("node-b", "node-a", &i.to_string()));
        }
    });
    futures::future::join_all(calls).await;
    assert_eq!(a.t.connection_count(), 1);
    assert_eq!(b.t.connection_count(), 1);
    assert_eq!(a.t.connected_peers().len(), 1);
    a.t.close().await;
    b.t.close().await;
}

/// Writes `bytes` raw on a new stream of `conn` and returns the answer frame.
async fn raw_exchange(conn: &quinn::Connection, bytes: &[u8]) -> (FrameType, String) {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    // The listener may stop reading before it all went out.
    let _ = send.write_all(bytes).await;
    let _ = send.finish();
    let frame = read_frame(&mut recv, MAX_FRAME).await.unwrap().unwrap();
    (
        frame.ty,
        String::from_utf8_lossy(&frame.payload).into_owned(),
    )
}

#[tokio::test]
async fn bad_frames_fail_their_stream_and_the_endpoint_keeps_serving() {
    let p = pki();
    let a = node(&p, "mine", "node-a").await;
    let b = node(&p, "mine", "node-b").await;

    // Too large to send: refused before any I/O.
    let big = Bytes::from(vec![0u8; MAX_FRAME]);
    let err = a.t.call(b.addr(), None, ECHO, big).await.unwrap_err();
    assert!(
        matches!(
            err,
            TransportError::Frame {
                source: FrameError::TooLarge { .. },
                ..
            }
        ),
        "{err}"
    );
    assert!(!err.is_connection_failure());

    let conn = a.t.raw_connection(b.addr()).await.unwrap();
    let id = conn.stable_id();
    let frame = |len: u32, version: u8, ty: u8, payload: &[u8]| {
        let mut v = len.to_be_bytes().to_vec();
        v.extend_from_slice(&[version, ty]);
        v.extend_from_slice(payload);
        v
    };
    let cases: Vec<(Vec<u8>, &str)> = vec![
        // A length claiming 4 GiB: refused from the prefix alone.
        (u32::MAX.to_be_bytes().to_vec(), "exceeds the limit"),
        (
            frame(MAX_FRAME as u32 + 3, WIRE_VERSION, 2, b"x"),
            "exceeds the limit",
        ),
        (
            frame(100, WIRE_VERSION, 2, b"only a few bytes"),
            "stream ended inside a frame",
        ),
        (vec![0, 0], "stream ended inside a frame"),
        (
            frame(1, WIRE_VERSION, 2, b""),
            "shorter than the frame header",
        ),
        (frame(3, 9, 2, &[ECHO]), "frame version 9"),
        (frame(3, WIRE_VERSION, 77, &[ECHO]), "unknown frame type 77"),
        (frame(2, WIRE_VERSION, 2, b""), "no RPC kind byte"),
        (frame(3, WIRE_VERSION, 4, b"x"), "got a chunk frame"),
    ];
    for (bytes, expected) in cases {
        let (ty, text) = raw_exchange(&conn, &bytes).await;
        assert_eq!(ty, FrameType::Rejected, "{expected}: {text}");
        assert!(text.contains(expected), "{expected}: {text}");
    }

    // Same connection, still serving.
    let got =
        a.t.call(
            b.addr(),
            Some("node-b"),
            ECHO,
            Bytes::from_static(b"still here"),
        )
        .await
        .unwrap();
    assert_eq!(got, echo_answer("node-b", "node-a", "still here"));
    assert_eq!(a.t.raw_connection(b.addr()).await.unwrap().stable_id(), id);
    assert_eq!(b.t.connection_count(), 1);
    a.t.close().await;
    b.t.close().await;
}

#[tokio::test]
async fn a_closed_peer_fails_fast_and_a_restarted_one_is_redialled() {
    let p = pki();
    let a = node(&p, "mine", "node-a").await;
    let b = node(&p, "mine", "node-b").await;
    let b_addr = b.addr();
    a.t.call(b_addr, Some("node-b"), ECHO, Bytes::new())
        .await
        .unwrap();

    b.t.close().await;
    drop(b);
    let started = Instant::now();
    let err =
        a.t.call(b_addr, Some("node-b"), ECHO, Bytes::new())
            .await
            .unwrap_err();
    assert!(err.is_connection_failure(), "{err}");
    assert!(err.to_string().contains(&b_addr.to_string()), "{err}");
    let took = started.elapsed();
    assert!(took < RPC_TIMEOUT + Duration::from_millis(200), "{took:?}");
    assert!(a.t.connected_peers().is_empty());

    // The old endpoint's socket may take a moment to be released.
    let mut restarted = None;
    for _ in 0..50 {
        match Transport::bind(b_addr, identity(&p, "node-b"), opts("mine", "node-b")).await {
            Ok(t) => {
                restarted = Some(start(t).await);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let b2 = restarted.expect("rebinding the peer's port");
    // A dial started while the port was dead may still be running (it is
    // bounded by connect_timeout); the caller retries, as Raft does.
    let deadline = Instant::now() + Duration::from_secs(5);
    let got = loop {
        match a
            .t
            .call(b_addr, Some("node-b"), ECHO, Bytes::from_static(b"back"))
            .await
        {
            Ok(got) => break got,
            Err(e) if Instant::now() < deadline => {
                assert!(e.is_connection_failure(), "{e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the restarted peer stays unreachable: {e}"),
        }
    };
    assert_eq!(got, echo_answer("node-b", "node-a", "back"));
    assert_eq!(a.t.connected_peers().len(), 1);
    a.t.close().await;
    b2.t.close().await;
}

/// A UDP relay that can silently drop everything: a crashed host, as seen
/// from the network (no close frame, no ICMP).
struct Relay {
    addr: SocketAddr,
    blackhole: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

async fn relay(upstream: SocketAddr) -> Relay {
    let front = UdpSocket::bind(localhost()).await.unwrap();
    let back = UdpSocket::bind(localhost()).await.unwrap();
    back.connect(upstream).await.unwrap();
    let addr = front.local_addr().unwrap();
    let blackhole = Arc::new(AtomicBool::new(false));
    let drop_all = blackhole.clone();
    let task = tokio::spawn(async move {
        let mut client = None;
        let mut up = vec![0u8; 65536];
        let mut down = vec![0u8; 65536];
        loop {
            tokio::select! {
                r = front.recv_from(&mut up) => {
                    let Ok((n, from)) = r else { continue };
                    client = Some(from);
                    if !drop_all.load(Ordering::SeqCst) {
                        let _ = back.send(&up[..n]).await;
                    }
                }
                r = back.recv(&mut down) => {
                    let Ok(n) = r else { continue };
                    if let (Some(to), false) = (client, drop_all.load(Ordering::SeqCst)) {
                        let _ = front.send_to(&down[..n], to).await;
                    }
                }
            }
        }
    });
    Relay {
        addr,
        blackhole,
        task,
    }
}

#[tokio::test]
async fn a_silent_peer_times_out_and_is_redialled() {
    let p = pki();
    let a = node(&p, "mine", "node-a").await;
    let b = node(&p, "mine", "node-b").await;
    let r = relay(b.addr()).await;
    a.t.call(r.addr, Some("node-b"), ECHO, Bytes::new())
        .await
        .unwrap();
    let first = a.t.raw_connection(r.addr).await.unwrap().stable_id();

    r.blackhole.store(true, Ordering::SeqCst);
    let started = Instant::now();
    let err =
        a.t.call(r.addr, Some("node-b"), ECHO, Bytes::new())
            .await
            .unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(&err, TransportError::Timeout { peer, .. } if *peer == r.addr),
        "{err}"
    );
    assert!(
        took >= RPC_TIMEOUT && took < RPC_TIMEOUT + Duration::from_millis(500),
        "{took:?}"
    );
    // Evicted: no zombie left in the cache.
    assert!(a.t.connected_peers().is_empty());

    r.blackhole.store(false, Ordering::SeqCst);
    let got =
        a.t.call(r.addr, Some("node-b"), ECHO, Bytes::from_static(b"again"))
            .await
            .unwrap();
    assert_eq!(got, echo_answer("node-b", "node-a", "again"));
    assert_ne!(a.t.raw_connection(r.addr).await.unwrap().stable_id(), first);
    r.task.abort();
    a.t.close().await;
    b.t.close().await;
}

#[tokio::test]
async fn an_abandoned_call_does_not_hold_the_connection() {
    let p = pki();
    let a = node(&p, "mine", "node-a").await;
    let b = node(&p, "mine", "node-b").await;
    time_out_a_slow_call(&a, &b).await;
    let got = a.t.call(b.addr(), None, ECHO, Bytes::new()).await.unwrap();
    assert_eq!(got, echo_answer("node-b", "node-a", ""));
    a.t.close().await;
    b.t.close().await;
}

#[tokio::test]
async fn options_are_validated() {
    let p = pki();
    let mut o = opts("mine", "node-a");
    o.keep_alive = o.idle_timeout;
    let err = Transport::bind(localhost(), identity(&p, "node-a"), o)
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("keep_alive"), "{err}");
    let mut o = opts("mine", "node-a");
    o.max_frame_bytes = 10;
    assert!(o.validate().is_err());
    let mut o = opts("", "node-a");
    o.max_frame_bytes = MAX_FRAME;
    assert!(o
        .validate()
        .unwrap_err()
        .to_string()
        .contains("cluster_name"));
    assert!(opts("mine", "node-a").validate().is_ok());
}

/// Loopback latency and throughput of small calls; run with
/// `cargo test --lib transport::tests::calls::measure -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn measure_small_calls() {
    let p = pki();
    let a = node(&p, "mine", "node-a").await;
    let b = node(&p, "mine", "node-b").await;
    let body = Bytes::from(vec![7u8; 100]);
    a.t.call(b.addr(), Some("node-b"), ECHO, body.clone())
        .await
        .unwrap();

    let mut rtts = Vec::with_capacity(10_000);
    for _ in 0..10_000 {
        let t0 = Instant::now();
        a.t.call(b.addr(), Some("node-b"), ECHO, body.clone())
            .await
            .unwrap();
        rtts.push(t0.elapsed());
    }
    rtts.sort();
    let pct = |q: f64| rtts[((rtts.len() as f64 * q) as usize).min(rtts.len() - 1)];
    println!(
        "sequential: p50 {:?}, p99 {:?}, max {:?}",
        pct(0.50),
        pct(0.99),
        rtts[rtts.len() - 1]
    );

    let per_caller = 2_000;
    let t0 = Instant::now();
    let callers = (0..16).map(|_| {
        let t = a.t.clone();
        let peer = b.addr();
        let body = body.clone();
        tokio::spawn(async move {
            for _ in 0..per_caller {
                t.call(peer, Some("node-b"), ECHO, body.clone())
                    .await
                    .unwrap();
            }
        })
    });
    for c in futures::future::join_all(callers).await {
        c.unwrap();
    }
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "16 concurrent callers: {:.0} calls/s ({} calls in {secs:.2} s)",
        (16 * per_caller) as f64 / secs,
        16 * per_caller
    );
    a.t.close().await;
    b.t.close().await;
}

/// Each side reads the other's end of stream behind the last frame, so an
/// RPC costs no STOP_SENDING frame either way (quinn sends one, and wakes
/// the connection, for every receive stream dropped before its end).
#[tokio::test]
async fn an_rpc_leaves_no_stop_sending_behind() {
    let p = pki();
    let a = node(&p, "mine", "node-a").await;
    let b = node(&p, "mine", "node-b").await;
    const CALLS: u64 = 200;
    for i in 0..CALLS {
        let body = Bytes::from(format!("call {i}"));
        a.t.call(b.addr(), Some("node-b"), ECHO, body)
            .await
            .unwrap();
    }
    // Let the last frames the calls queued go out and arrive.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stats = a.t.connection_stats(b.addr()).unwrap();
    let (sent, received) = (stats.frame_tx.stop_sending, stats.frame_rx.stop_sending);
    assert!(stats.frame_tx.stream >= CALLS, "{stats:?}");
    // A FIN that trails its frame into a later packet leaves a stop behind;
    // rare on loopback, and one per call without the read of the end.
    assert!(
        sent <= CALLS / 20 && received <= CALLS / 20,
        "{sent} STOP_SENDING sent and {received} received for {CALLS} calls"
    );
    a.t.close().await;
    b.t.close().await;
}

/// The node called second answers on the caller's connection and calls
/// back on it: one connection per pair of nodes, whoever dialled.
#[tokio::test]
async fn calls_both_ways_share_one_connection() {
    let p = pki();
    let a = node(&p, "mine", "node-a").await;
    let b = node(&p, "mine", "node-b").await;
    echo_both_ways(&a, &b).await;
    assert_eq!(a.t.connection_count(), 1);
    assert_eq!(b.t.connection_count(), 1);
    assert_eq!(b.t.connected_peers().len(), 1);
    a.t.close().await;
    b.t.close().await;
}

/// Both nodes dial at once: both end up on the connection dialled by the
/// node whose name sorts first, and the other one is closed.
#[tokio::test]
async fn nodes_dialling_each_other_at_once_keep_one_connection() {
    let p = pki();
    for round in 0..5 {
        let a = node(&p, "mine", "node-a").await;
        let b = node(&p, "mine", "node-b").await;
        let (x, y) = tokio::join!(
            a.t.call(b.addr(), Some("node-b"), ECHO, Bytes::from_static(b"ab")),
            b.t.call(a.addr(), Some("node-a"), ECHO, Bytes::from_static(b"ba")),
        );
        assert_eq!(x.unwrap(), echo_answer("node-b", "node-a", "ab"));
        assert_eq!(y.unwrap(), echo_answer("node-a", "node-b", "ba"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while (a.t.connection_count(), b.t.connection_count()) != (1, 1) {
            assert!(
                Instant::now() < deadline,
                "round {round}: {} and {} connections",
                a.t.connection_count(),
                b.t.connection_count()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // And the survivor carries calls both ways.
        echo_both_ways(&a, &b).await;
        assert_eq!((a.t.connection_count(), b.t.connection_count()), (1, 1));
        a.t.close().await;
        b.t.close().await;
    }
}

/// Three echo calls each way between node-a and node-b.
async fn echo_both_ways(a: &Node, b: &Node) {
    for _ in 0..3 {
        let got =
            a.t.call(b.addr(), Some("node-b"), ECHO, Bytes::from_static(b"ab"));
        assert_eq!(got.await.unwrap(), echo_answer("node-b", "node-a", "ab"));
        let got =
            b.t.call(a.addr(), Some("node-a"), ECHO, Bytes::from_static(b"ba"));
        assert_eq!(got.await.unwrap(), echo_answer("node-a", "node-b", "ba"));
    }
}

/// Both nodes serve each other's calls on their connection, so neither
/// lets go of it by itself: one given up after a timed-out call is closed
/// once no stream is open on it, instead of living on keep-alives for ever.
#[tokio::test]
async fn a_connection_given_up_after_a_timeout_is_closed_once_idle() {
    let p = pki();
    let a = node(&p, "mine", "node-a").await;
    let b = node(&p, "mine", "node-b").await;
    echo_both_ways(&a, &b).await;
    time_out_a_slow_call(&a, &b).await;
    // The next call dials afresh; node-b takes that one for its calls too.
    echo_both_ways(&a, &b).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.t.connection_count() > 1 || b.t.connection_count() > 1 {
        assert!(
            Instant::now() < deadline,
            "the given-up connection is still open: {} on node-a, {} on node-b",
            a.t.connection_count(),
            b.t.connection_count()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    echo_both_ways(&a, &b).await;
    assert_eq!(a.t.connection_count(), 1);
    a.t.close().await;
    b.t.close().await;
}

/// A call from `a` that `b` never answers, given up after 200 ms.
async fn time_out_a_slow_call(a: &Node, b: &Node) {
    let err =
        a.t.call_timeout(
            b.addr(),
            None,
            SLOW,
            Bytes::new(),
            Duration::from_millis(200),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::Timeout { .. }), "{err}");
}
