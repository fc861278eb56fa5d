//! In-process tests over real UDP on 127.0.0.1, with certificates made by
//! `crate::tls` in temporary directories.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::frame::{read_frame, FrameType, WIRE_VERSION};
use super::*;
use crate::tls::{load_node_identity, write_ca, write_node_cert};

const ECHO: u8 = 1;
const FAIL: u8 = 2;
const SLOW: u8 = 3;
const SNAPSHOT: u8 = 9;
const MAX_FRAME: usize = 1024 * 1024;
const RPC_TIMEOUT: Duration = Duration::from_millis(800);

struct Pki {
    _dir: tempfile::TempDir,
    ca_dir: PathBuf,
    out: PathBuf,
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("ca");
    let out = dir.path().join("out");
    write_ca(&ca_dir).unwrap();
    Pki {
        _dir: dir,
        ca_dir,
        out,
    }
}

/// The node's certificate, made on first use.
fn identity(p: &Pki, name: &str) -> NodeIdentity {
    let cert = p.out.join(format!("{name}.pem"));
    let key = p.out.join(format!("{name}.key"));
    if !cert.exists() {
        write_node_cert(name, &[], &p.ca_dir, &p.out).unwrap();
    }
    load_node_identity(&p.ca_dir.join("ca.pem"), &cert, &key).unwrap()
}

use crate::tls::NodeIdentity;

fn opts(cluster: &str, name: &str) -> TransportOptions {
    TransportOptions {
        connect_timeout: Duration::from_secs(2),
        rpc_timeout: RPC_TIMEOUT,
        keep_alive: Duration::from_millis(300),
        idle_timeout: Duration::from_secs(3),
        max_frame_bytes: MAX_FRAME,
        ..TransportOptions::new(cluster, name)
    }
}

fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

#[derive(Debug)]
struct Upload {
    header: Bytes,
    result: Result<(u64, u32), String>,
}

struct TestHandler {
    name: String,
    uploads: mpsc::UnboundedSender<Upload>,
}

impl RpcHandler for TestHandler {
    async fn handle(&self, peer: PeerIdentity, kind: u8, body: Bytes) -> Result<Bytes, RpcFailure> {
        match kind {
            ECHO => {
                let mut out = format!("{} heard {}: ", self.name, peer.node_name).into_bytes();
                out.extend_from_slice(&body);
                Ok(Bytes::from(out))
            }
            FAIL => Err(RpcFailure::new("no such table")),
            SLOW => {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok(Bytes::new())
            }
            other => Err(RpcFailure::new(format!("unknown kind {other}"))),
        }
    }

    async fn handle_stream(
        &self,
        _peer: PeerIdentity,
        _kind: u8,
        header: Bytes,
        mut chunks: ChunkStream,
    ) -> Result<Bytes, RpcFailure> {
        let mut crc = crc32fast::Hasher::new();
        let mut len = 0u64;
        let result = loop {
            match chunks.next().await {
                Ok(Some(data)) => {
                    crc.update(&data);
                    len += data.len() as u64;
                }
                Ok(None) => break Ok((len, crc.clone().finalize())),
                Err(e) => break Err(e.to_string()),
            }
        };
        let answer = match &result {
            Ok((len, crc)) => Ok(Bytes::from(format!("{len}:{crc}"))),
            Err(e) => Err(RpcFailure::new(e.clone())),
        };
        let _ = self.uploads.send(Upload { header, result });
        answer
    }
}

struct Node {
    t: Transport,
    uploads: mpsc::UnboundedReceiver<Upload>,
    _serve: tokio::task::JoinHandle<()>,
}

impl Node {
    fn addr(&self) -> SocketAddr {
        self.t.local_addr()
    }
}

async fn start(t: Transport) -> Node {
    let (tx, uploads) = mpsc::unbounded_channel();
    let handler = Arc::new(TestHandler {
        name: t.options().node_name.clone(),
        uploads: tx,
    });
    let serve = t.serve(handler);
    Node {
        t,
        uploads,
        _serve: serve,
    }
}

async fn node_at(p: &Pki, cluster: &str, name: &str, listen: SocketAddr) -> Node {
    let t = Transport::bind(listen, identity(p, name), opts(cluster, name))
        .await
        .unwrap();
    start(t).await
}

async fn node(p: &Pki, cluster: &str, name: &str) -> Node {
    node_at(p, cluster, name, localhost()).await
}

fn echo_answer(to: &str, from: &str, body: &str) -> Bytes {
    Bytes::from(format!("{to} heard {from}: {body}"))
}

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

#[tokio::test]
async fn a_certificate_of_another_ca_is_refused() {
    let ours = pki();
    let theirs = pki();
    let a = node(&ours, "mine", "node-a").await;
    let b = node(&theirs, "mine", "node-b").await;

    // Each side finds the other's server certificate untrusted.
    let err =
        a.t.call(b.addr(), None, ECHO, Bytes::new())
            .await
            .unwrap_err();
    assert!(matches!(err, TransportError::Tls { .. }), "{err}");
    assert!(err.to_string().contains(&b.addr().to_string()), "{err}");
    let err =
        b.t.call(a.addr(), Some("node-a"), ECHO, Bytes::new())
            .await
            .unwrap_err();
    assert!(matches!(err, TransportError::Tls { .. }), "{err}");
    assert!(err.to_string().contains(&a.addr().to_string()), "{err}");

    // A dialler that trusts both CAs gets past its own check; the
    // listener refuses its client certificate, which the dialler only
    // learns on its first stream.
    let mut both = identity(&theirs, "node-c");
    both.ca_certs.extend(identity(&ours, "node-d").ca_certs);
    let c = start(
        Transport::bind(localhost(), both, opts("mine", "node-c"))
            .await
            .unwrap(),
    )
    .await;
    let err =
        c.t.call(a.addr(), Some("node-a"), ECHO, Bytes::new())
            .await
            .unwrap_err();
    assert!(matches!(err, TransportError::Tls { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&a.addr().to_string()) && text.contains("rejected the handshake"),
        "{text}"
    );
    assert!(c.t.connected_peers().is_empty());
    for n in [a, b, c] {
        n.t.close().await;
    }
}

#[tokio::test]
async fn a_hello_name_not_in_the_certificate_is_refused() {
    let p = pki();
    let b = node(&p, "mine", "node-b").await;
    // node-c's certificate, claiming to be node-a.
    let err = Transport::bind(localhost(), identity(&p, "node-c"), opts("mine", "node-a"))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, TransportError::Identity(_)), "{err}");
    let rogue = start(
        Transport::bind_unchecked(localhost(), identity(&p, "node-c"), opts("mine", "node-a"))
            .await
            .unwrap(),
    )
    .await;

    // The listener refuses the rogue dialler and says why.
    let err = rogue
        .t
        .call(b.addr(), Some("node-b"), ECHO, Bytes::new())
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::Refused { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&b.addr().to_string())
            && text.contains("claims to be node 'node-a'")
            && text.contains("not for that name"),
        "{text}"
    );

    // A dialler refuses a rogue listener too, with or without a name.
    let err =
        b.t.call(rogue.addr(), None, ECHO, Bytes::new())
            .await
            .unwrap_err();
    assert!(matches!(err, TransportError::Refused { .. }), "{err}");
    assert!(
        err.to_string().contains("claims to be node 'node-a'"),
        "{err}"
    );
    let err =
        b.t.call(rogue.addr(), Some("node-a"), ECHO, Bytes::new())
            .await
            .unwrap_err();
    assert!(matches!(err, TransportError::Tls { .. }), "{err}");
    assert!(b.t.connected_peers().is_empty());
    rogue.t.close().await;
    b.t.close().await;
}

/// Collects what `tracing` prints while it is the thread's subscriber.
#[derive(Clone, Default)]
struct LogBuf(Arc<Mutex<Vec<u8>>>);

impl io::Write for LogBuf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuf {
    type Writer = LogBuf;
    fn make_writer(&'a self) -> LogBuf {
        self.clone()
    }
}

// Current-thread runtime: the listener's tasks log on this thread, so the
// thread-local subscriber sees them.
#[tokio::test(flavor = "current_thread")]
async fn another_cluster_is_refused_and_logged() {
    let logs = LogBuf::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let p = pki();
    let b = node(&p, "mine", "node-b").await;
    let c = node(&p, "other", "node-c").await;
    let err =
        c.t.call(b.addr(), Some("node-b"), ECHO, Bytes::new())
            .await
            .unwrap_err();
    assert!(matches!(err, TransportError::Refused { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&b.addr().to_string())
            && text.contains("belongs to cluster 'other', we are 'mine'"),
        "{text}"
    );
    let err =
        b.t.call(c.addr(), None, ECHO, Bytes::new())
            .await
            .unwrap_err();
    assert!(matches!(err, TransportError::Refused { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("belongs to cluster 'mine', we are 'other'"),
        "{err}"
    );

    let logged = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let line = logged
        .lines()
        .find(|l| l.contains("refused a replication peer") && l.contains("cluster 'other'"))
        .unwrap_or_else(|| panic!("no refusal in the log:\n{logged}"));
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains(&c.addr().to_string()), "{line}");
    b.t.close().await;
    c.t.close().await;
}

#[tokio::test]
async fn another_alpn_is_refused() {
    let p = pki();
    let b = node(&p, "mine", "node-b").await;
    let id = identity(&p, "node-a");
    let mut tls = rustls::ClientConfig::builder_with_provider(crate::tls::crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(id.root_store().unwrap())
        .with_client_auth_cert(id.cert_chain.clone(), id.key.clone_key())
        .unwrap();
    tls.alpn_protocols = vec![b"quorate/2".to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut client = quinn::Endpoint::client(localhost()).unwrap();
    client.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
    let err = client
        .connect(b.addr(), "node-b")
        .unwrap()
        .await
        .unwrap_err();
    let err = super::tls::classify(b.addr(), err);
    assert!(matches!(err, TransportError::Refused { .. }), "{err}");
    assert!(
        err.to_string().contains("does not speak quorate/1"),
        "{err}"
    );
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
    let got = a.t.call(b.addr(), None, ECHO, Bytes::new()).await.unwrap();
    assert_eq!(got, echo_answer("node-b", "node-a", ""));
    a.t.close().await;
    b.t.close().await;
}

async fn next_upload(n: &mut Node) -> Upload {
    tokio::time::timeout(Duration::from_secs(5), n.uploads.recv())
        .await
        .expect("the handler reports the upload")
        .unwrap()
}

fn test_data(len: usize) -> Vec<u8> {
    // xorshift: cheap, and no chunk repeats another.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

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
/// `cargo test --lib transport::tests::measure -- --ignored --nocapture`.
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
