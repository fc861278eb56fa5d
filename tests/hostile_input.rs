//! Hostile input against real processes and through the public decoders:
//! garbage on the replication port (plain UDP, junk before the Hello, junk
//! frames from an authenticated peer), on the admin socket and in HTTP
//! bodies is refused with a reason, and the cluster keeps serving and
//! replicating. Decoders of peer and disk bytes never reserve memory a
//! length prefix claims (measured with a counting allocator).

mod common;
#[path = "hostile/raw_peer.rs"]
mod raw_peer;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;
use std::time::Duration;

use common::cluster::Cluster;
use raw_peer::{client, connect_and_hello, exchange, frame, parse_answer, runtime, valid_cert};
use serde_json::json;

/// Counts the bytes live on each thread and the peak since the last reset,
/// so a test can see what a decoder reserved while other tests run.
struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn note(delta: isize) {
    // `try_with`: the allocator also runs while thread-locals are torn down.
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|p| p.set(p.get().max(now)));
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size() as isize);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note(-(layout.size() as isize));
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size() as isize);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size as isize - layout.size() as isize);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Bytes this thread reserved at most, above what it held at the start, while `f` ran.
fn peak_during(f: impl FnOnce()) -> isize {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    f();
    PEAK.with(Cell::get) - base
}

const BOUND: isize = 8 << 20;

#[test]
fn length_prefixes_do_not_size_allocations() {
    // The measurement itself sees a reservation of the bound's size.
    let seen = peak_during(|| drop(std::hint::black_box(vec![1u8; BOUND as usize])));
    assert!(
        seen >= BOUND,
        "the counting allocator saw only {seen} bytes"
    );
    use quorate::order::network::{check_request, kind};
    // A Raft AppendEntries as a peer would send it, but claiming 2^61
    // entries, or a 2^61-byte string, at every position.
    for claim in [1u64 << 61, u64::MAX, u64::from(u32::MAX)] {
        for at in 0..64 {
            let mut bytes = vec![0u8; 96];
            bytes[at..at + 8].copy_from_slice(&claim.to_le_bytes());
            let peak = peak_during(|| {
                for k in [kind::APPEND, kind::VOTE, kind::PRE_VOTE] {
                    assert!(check_request(k, &bytes).is_err());
                }
            });
            assert!(peak < BOUND, "decoding 96 bytes reserved {peak} bytes");
        }
    }

    // An admin frame claiming 4 GiB.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let peak = peak_during(|| {
        let mut r: &[u8] = &[0xff, 0xff, 0xff, 0xff, b'{'];
        let got = rt.block_on(quorate::admin::frame::read_frame(&mut r));
        assert!(got.is_err());
    });
    assert!(peak < BOUND, "an admin frame header reserved {peak} bytes");

    // A log segment whose last record claims a gigabyte.
    let dir = tempfile::tempdir().unwrap();
    let mut seg = Vec::new();
    seg.extend_from_slice(&(1u32 << 30).to_le_bytes());
    seg.extend_from_slice(&[0; 4]);
    seg.extend_from_slice(&[7; 100]);
    std::fs::write(dir.path().join(format!("log-{:020}.seg", 0)), &seg).unwrap();
    let peak = peak_during(|| {
        let store = quorate::order::LogStore::open(dir.path()).expect("a torn tail is repaired");
        assert_eq!(store.bounds().unwrap(), (None, None));
    });
    assert!(peak < BOUND, "opening the log reserved {peak} bytes");
    assert_eq!(
        std::fs::metadata(dir.path().join(format!("log-{:020}.seg", 0)))
            .unwrap()
            .len(),
        0,
        "the torn record was cut"
    );
}

fn junk(seed: u64, len: usize) -> Vec<u8> {
    // xorshift: reproducible junk without a dependency.
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// `order::peer_kind::READ_INDEX` and `COMMIT_INDEX`, and the node's status probe (kind 32,
/// private to the node module).
const BODILESS_KINDS: [u8; 3] = [
    quorate::order::peer_kind::READ_INDEX,
    quorate::order::peer_kind::COMMIT_INDEX,
    32,
];

#[test]
fn garbage_on_the_replication_port_is_refused_and_the_cluster_keeps_serving() {
    let c = Cluster::start(2, "");
    c.nodes[0].execute_ok(json!(["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"]));
    c.still_serves(1);
    let target = SocketAddr::from(([127, 0, 0, 1], c.repl_ports[0]));
    let rt = runtime();

    // Plaintext: UDP datagrams that are not QUIC, including ones shaped
    // like an Initial packet.
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..500u64 {
        let mut d = junk(i, 1 + (i as usize * 37) % 1400);
        if i % 2 == 0 {
            d[0] = 0xc0 | (d[0] & 0x0f);
            if d.len() > 5 {
                d[1..5].copy_from_slice(&1u32.to_be_bytes());
            }
        }
        udp.send_to(&d, target).unwrap();
    }
    c.still_serves(2);

    let cert = || valid_cert(c.tls.path(), "node-9");

    rt.block_on(async {
        // Junk instead of a Hello: the connection is refused with a reason.
        let endpoint = client(c.tls.path(), Some(cert()));
        for (n, first) in [
            junk(7, 300),
            frame(2, &[1, 2, 3]),
            vec![0xff, 0xff, 0xff, 0xff, 1, 1],
            frame(1, &junk(9, 40)),
            vec![0, 0, 0],
        ]
        .into_iter()
        .enumerate()
        {
            let conn = endpoint
                .connect(target, "node-1")
                .unwrap()
                .await
                .expect("TLS with a valid certificate");
            let answer = exchange(&conn, &first).await;
            let closed = tokio::time::timeout(Duration::from_secs(15), conn.closed())
                .await
                .unwrap_or_else(|_| panic!("case {n}: connection left open after a bad hello"));
            assert!(
                closed.to_string().contains("hello") || closed.to_string().contains("refused"),
                "case {n}: closed without a reason: {closed} (answer {answer:?})"
            );
        }

        // An authenticated peer sending junk frames: each stream gets a
        // Rejected or Failure answer with a reason, never a Response. After
        // a few the node closes the connection (tests/connection_limits.rs);
        // the peer dials again and the next cases go on the new one.
        let mut conn = connect_and_hello(&endpoint, target, "node-1", "test", "node-9")
            .await
            .expect("hello with a valid certificate");
        let mut disconnects = 0;
        let mut cases: Vec<Vec<u8>> = vec![
            junk(11, 500),
            vec![0xff, 0xff, 0xff, 0xff],
            vec![0, 0, 0, 1, 1],
            frame(99, b"unknown type"),
            frame(1, b"a second hello"),
            {
                let mut f = frame(2, &[1]);
                f[4] = 77;
                f
            },
            frame(2, &[]),
            frame(4, b"a chunk without a header"),
        ];
        // Every RPC kind, with junk and with an empty body.
        for kind in 0..=32u8 {
            let mut body = vec![kind];
            body.extend_from_slice(&junk(u64::from(kind) + 100, 64));
            cases.push(frame(2, &body));
            cases.push(frame(2, &[kind]));
            cases.push(frame(3, &body));
            // A session of this kind whose first message is junk.
            let mut session = frame(9, &[kind]);
            session.extend_from_slice(&frame(10, &junk(u64::from(kind) + 200, 64)));
            cases.push(session);
        }
        for (n, bytes) in cases.iter().enumerate() {
            if let Some(reason) = conn.close_reason() {
                assert!(
                    reason.to_string().contains("malformed"),
                    "case {n}: {reason}"
                );
                disconnects += 1;
                conn = connect_and_hello(&endpoint, target, "node-1", "test", "node-9")
                    .await
                    .expect("a disconnected peer may dial again");
            }
            // Requests whose kind takes no body (a read index, a status
            // probe) are answered whatever follows the kind byte.
            let bodiless = bytes.len() > 6
                && bytes[5] == raw_peer::REQUEST
                && BODILESS_KINDS.contains(&bytes[6]);
            match exchange(&conn, bytes).await {
                Ok(answer) => match parse_answer(&answer) {
                    Some((ty, reason)) => {
                        assert!(
                            ty == raw_peer::REJECTED || ty == raw_peer::FAILURE || bodiless,
                            "case {n} ({:?}...): answered with frame type {ty}",
                            &bytes[..bytes.len().min(8)]
                        );
                        assert!(!reason.is_empty(), "case {n}: a refusal without a reason");
                    }
                    None => assert!(answer.is_empty(), "case {n}: unreadable answer {answer:?}"),
                },
                // The node may reset a stream it cannot read.
                Err(e) => assert!(!e.contains("no answer within"), "case {n}: {e}"),
            }
        }
        conn.close(0u32.into(), b"done");
        assert!(
            disconnects > 0,
            "{} junk frames never cost the connection",
            cases.len()
        );

        // Many connections that never say Hello are dropped by the node.
        let mut idle = Vec::new();
        for _ in 0..40 {
            idle.push(endpoint.connect(target, "node-1").unwrap().await.unwrap());
        }
        for conn in idle {
            let closed = tokio::time::timeout(Duration::from_secs(30), conn.closed()).await;
            assert!(closed.is_ok(), "a connection without a hello was kept open");
        }
    });
    c.still_serves(3);
    let log = c.nodes[0].log();
    assert!(
        !log.contains("panicked"),
        "{}",
        common::cluster::tail(&log, 40)
    );
}

#[test]
fn garbage_http_bodies_get_client_errors() {
    let mut node = common::TestNode::new("node-a", "");
    let text = std::fs::read_to_string(&node.config_path).unwrap();
    let text = text.replacen("[api]\n", "[api]\nmax_body_bytes = 65536\n", 1);
    std::fs::write(&node.config_path, text).unwrap();
    node.start(&["--bootstrap"]);
    node.wait_primary(Duration::from_secs(20));
    node.execute_ok(json!(["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"]));

    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let bodies: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"null".to_vec(),
        b"{}".to_vec(),
        b"[[]]".to_vec(),
        b"[[1, 2]]".to_vec(),
        b"[{\"sql\": 1}]".to_vec(),
        b"[\"\\ud800\"]".to_vec(),
        vec![0xff, 0xfe, 0x00, 0x5b],
        b"[1e999999]".to_vec(),
        b"[[\"INSERT INTO t VALUES(?, ?)\", 18446744073709551616, 1]]".to_vec(),
        b"[[\"INSERT INTO t VALUES(:a, :b)\", {\"a\": {\"b\": []}}]]".to_vec(),
        deep.as_bytes()[..60_000].to_vec(),
        junk(3, 5000),
        vec![b'['; 70_000],
    ];
    // A fresh connection each time: after a 413 the node closes the
    // connection without reading the rest, and a pooled one would be dead.
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .max_idle_connections(0)
        .build();
    for path in ["/db/execute", "/db/query", "/db/request"] {
        for (n, body) in bodies.iter().enumerate() {
            let resp = agent
                .post(&node.url(path))
                .set("Content-Type", "application/json")
                .send_bytes(body);
            let (code, text) = match resp {
                Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
                Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
                Err(e) => panic!("{path} case {n}: the node did not answer: {e}"),
            };
            assert!((200..500).contains(&code), "{path} case {n}: {code} {text}");
            if code >= 400 {
                assert!(text.len() > 10, "{path} case {n}: no reason given: {text}");
            }
        }
    }
    // Over the size limit: 413 naming the limit, before the body is read.
    // Only a little over, so that the whole body fits in the socket buffers:
    // a server that answers early must not turn into a broken pipe here.
    let big = format!("[\"{}\"]", "x".repeat(70_000));
    match agent
        .post(&node.url("/db/execute"))
        .set("Content-Type", "application/json")
        .send_string(&big)
    {
        Err(ureq::Error::Status(413, r)) => {
            let text = r.into_string().unwrap_or_default();
            assert!(
                text.contains("65536"),
                "the refusal must name the limit: {text}"
            );
        }
        other => panic!("a body over max_body_bytes was not refused with 413: {other:?}"),
    }

    // Hundreds of idle connections on the API and the admin socket: the
    // node keeps answering (each costs a task and a descriptor, no more).
    let idle: Vec<std::net::TcpStream> = (0..500)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", node.api_port)).unwrap())
        .collect();
    let socket = node.dir.path().join("run").join("quorate.sock");
    let idle_admin: Vec<std::os::unix::net::UnixStream> = (0..200)
        .map(|_| std::os::unix::net::UnixStream::connect(&socket).unwrap())
        .collect();
    node.execute_ok(json!([["INSERT INTO t(id, v) VALUES(1, 'still here')"]]));
    let out = node.cli(&["--show-cluster-status"]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    drop(idle);
    drop(idle_admin);
    assert_eq!(node.scalar("SELECT COUNT(*) FROM t"), 1);
}

/// A forwarded write-set speaks for its origin's client: a peer may only
/// forward its own, one at a time or in a batch, and a batch with one
/// forged write-set is refused whole (nothing of it is ordered).
#[test]
fn a_peer_cannot_forward_write_sets_in_another_nodes_name() {
    use quorate::order::peer_kind::{FORWARD_WRITE, FORWARD_WRITES};
    use quorate::sql::{Params, Statement};
    use quorate::writeset::{Payload, WriteSet};

    let c = Cluster::start(2, "");
    c.nodes[0].execute_ok(json!(["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"]));
    let insert = |origin: &str, id: i64| WriteSet {
        origin: origin.into(),
        trx_id: 1_000 + id as u64,
        snapshot_seqno: 0,
        keys: Vec::new(),
        payload: Payload::Statements(vec![Statement {
            sql: format!("INSERT INTO t VALUES({id}, 'forged')"),
            params: Params::None,
        }]),
    };
    let request = |kind: u8, body: Vec<u8>| {
        let mut payload = vec![kind];
        payload.extend_from_slice(&body);
        frame(raw_peer::REQUEST, &payload)
    };
    let cases = [
        (
            "one forged",
            request(
                FORWARD_WRITE,
                bincode::serialize(&insert("node-2", 101)).unwrap(),
            ),
        ),
        (
            "a batch, its second forged",
            request(
                FORWARD_WRITES,
                bincode::serialize(&vec![insert("node-9", 102), insert("node-2", 103)]).unwrap(),
            ),
        ),
    ];
    let rt = runtime();
    rt.block_on(async {
        let endpoint = client(c.tls.path(), Some(valid_cert(c.tls.path(), "node-9")));
        for (node, port) in c.nodes.iter().zip(&c.repl_ports) {
            let target = SocketAddr::from(([127, 0, 0, 1], *port));
            let conn = connect_and_hello(&endpoint, target, &node.name, "test", "node-9")
                .await
                .expect("hello with a valid certificate");
            for (case, bytes) in &cases {
                let answer = exchange(&conn, bytes).await.expect("an answer");
                let (ty, reason) = parse_answer(&answer).expect("a readable answer");
                let reason = String::from_utf8_lossy(&reason);
                assert_eq!(ty, raw_peer::FAILURE, "{case} on port {port}: {reason}");
                assert!(
                    reason.contains("node-9 may not forward a write-set of node-2"),
                    "{case} on port {port}: {reason}"
                );
            }
        }
    });
    c.still_serves(2);
    for node in &c.nodes {
        assert_eq!(
            node.scalar("SELECT count(*) FROM t WHERE v = 'forged'"),
            0,
            "{}: a forged batch was ordered",
            node.name
        );
    }
}

/// Two clusters made from one CA and one set of node names (a cloned lab
/// setup, a wrong peers list): a node of the other cluster holds a valid
/// certificate with a member's name, so neither the Hello nor the
/// membership check tells it apart. The stamp its forwards carry does: the
/// leader refuses them unread, names the two cluster states, and orders
/// nothing. The same request stamped with this cluster's state is ordered,
/// so the stamp is what refused it.
#[test]
fn a_forward_stamped_by_another_cluster_state_is_refused() {
    use quorate::order::fence::{Reply, Stamp};
    use quorate::order::peer_kind::FORWARD_STAMPED;
    use quorate::order::ForwardOutcome;
    use quorate::sql::{Params, Statement};
    use quorate::writeset::{Payload, WriteSet};

    let c = Cluster::start(2, "");
    c.nodes[0].execute_ok(json!(["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"]));
    let status = c.status(0);
    let ours: uuid::Uuid = status["cluster"]["local_state_uuid"]
        .as_str()
        .and_then(|u| u.parse().ok())
        .expect("the cluster's state uuid in /status");
    let leader = status["store"]["leader"]["node_id"]
        .as_str()
        .expect("a leader")
        .to_string();
    let at = c
        .nodes
        .iter()
        .position(|n| n.name == leader)
        .expect("the leader is a node of the cluster");
    let other = c
        .nodes
        .iter()
        .find(|n| n.name != leader)
        .expect("a second member")
        .name
        .clone();
    let forward = |state_uuid: uuid::Uuid, id: i64| {
        let ws = WriteSet {
            origin: other.clone(),
            trx_id: 2_000 + id as u64,
            snapshot_seqno: 0,
            keys: Vec::new(),
            payload: Payload::Statements(vec![Statement {
                sql: format!("INSERT INTO t VALUES({id}, 'stamped')"),
                params: Params::None,
            }]),
        };
        let stamp = Stamp {
            state_uuid,
            incarnation: 0,
            fork_index: None,
        };
        let mut payload = vec![FORWARD_STAMPED];
        payload.extend_from_slice(&bincode::serialize(&(stamp, vec![ws])).unwrap());
        frame(raw_peer::REQUEST, &payload)
    };
    let rt = runtime();
    let answers: Vec<Reply<Vec<ForwardOutcome>>> = rt.block_on(async {
        let endpoint = client(c.tls.path(), Some(valid_cert(c.tls.path(), &other)));
        let target = SocketAddr::from(([127, 0, 0, 1], c.repl_ports[at]));
        let conn = connect_and_hello(&endpoint, target, &leader, "test", &other)
            .await
            .expect("hello with a valid certificate");
        let mut answers = Vec::new();
        for bytes in [forward(uuid::Uuid::new_v4(), 301), forward(ours, 302)] {
            let answer = exchange(&conn, &bytes).await.expect("an answer");
            let (ty, body) = parse_answer(&answer).expect("a readable answer");
            assert_eq!(ty, raw_peer::RESPONSE, "{}", String::from_utf8_lossy(&body));
            answers.push(bincode::deserialize(&body).expect("a stamped reply"));
        }
        answers
    });
    match &answers[0] {
        Reply::Refused(why) => assert!(
            why.contains("belongs to cluster state") && why.contains(&ours.to_string()),
            "{why}"
        ),
        other => panic!("a forward of another cluster state was answered {other:?}"),
    }
    assert!(
        matches!(&answers[1], Reply::Ok(o) if matches!(o.as_slice(), [ForwardOutcome::Ordered])),
        "the same forward with this cluster's stamp: {:?}",
        answers[1]
    );
    assert!(
        c.nodes[at]
            .log()
            .contains("two different clusters never merge"),
        "the refusal is logged"
    );
    c.still_serves(3);
    for node in &c.nodes {
        let rows = node.query_rows_level(
            "SELECT id FROM t WHERE v = 'stamped' ORDER BY id",
            "linearizable",
        );
        assert_eq!(
            rows,
            vec![json!([302])],
            "{}: only the forward of this cluster's state is ordered",
            node.name
        );
    }
}
