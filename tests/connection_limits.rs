//! Floods of connections against real daemons: the client API, the admin
//! socket and the replication port each serve a bounded number of
//! connections, refuse the rest with a reason (and a rate-limited log line
//! naming the key that raises the limit), and keep serving once the flood
//! is gone. A peer with a valid certificate that keeps sending junk frames
//! loses its connection, and is served again when it reconnects.

mod common;
#[path = "hostile/raw_peer.rs"]
mod raw_peer;

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use raw_peer::{client, connect_and_hello, exchange, frame, parse_answer, runtime, valid_cert};
use serde_json::json;

/// A size field of /proc/PID/status (`VmRSS`: resident memory; `VmSize`:
/// address space, where a buffer sized from a length prefix shows even
/// before its pages are touched), in bytes.
fn proc_status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| {
            l.strip_prefix(field)
                .is_some_and(|rest| rest.starts_with(':'))
        })
        .unwrap_or_else(|| panic!("{field} in /proc/PID/status"));
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("a number of kB");
    kib * 1024
}

/// Streams of the oversized-claim check; well under the 256 a connection
/// may have open.
const STREAMS: usize = 100;

/// An HTTP request on a connection of its own, as raw text back.
fn raw_request(port: u16, request: &str) -> String {
    use std::io::Write;
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// A single node, bootstrapped and Primary, with `api_lines` in its [api].
fn bootstrapped_with_api(api_lines: &str) -> common::TestNode {
    let mut node = common::TestNode::new("node-a", "");
    let text = std::fs::read_to_string(&node.config_path).unwrap();
    let text = text.replacen("[api]\n", &format!("[api]\n{api_lines}\n"), 1);
    std::fs::write(&node.config_path, text).unwrap();
    node.start(&["--bootstrap"]);
    node.wait_primary(Duration::from_secs(20));
    node
}

const LIMIT: usize = 200;
const FLOOD: usize = 2000;

#[test]
fn a_flood_of_api_and_admin_connections_is_refused_with_a_reason_and_memory_stays_bounded() {
    // The idle connections must stay open for the whole flood.
    let node = bootstrapped_with_api(&format!(
        "max_connections = {LIMIT}\nidle_timeout_ms = 600000"
    ));
    node.execute_ok(json!(["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"]));
    let pid = node.child.as_ref().unwrap().id();
    let before = proc_status_bytes(pid, "VmRSS");

    // Thousands of idle connections: the first LIMIT are held open by the
    // node, every later one is answered 503 at once and closed.
    let idle: Vec<TcpStream> = (0..FLOOD)
        .map(|_| TcpStream::connect(("127.0.0.1", node.api_port)).unwrap())
        .collect();
    let mut refused = 0;
    for s in &idle[LIMIT..] {
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut answer = String::new();
        let _ = (&*s).read_to_string(&mut answer);
        assert!(
            answer.starts_with("HTTP/1.1 503"),
            "a connection over the limit got {answer:?}"
        );
        refused += 1;
    }
    assert_eq!(refused, FLOOD - LIMIT);

    // A real client now gets a clear error naming the limit and the key.
    let answer = raw_request(
        node.api_port,
        "GET /status HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.contains("api.max_connections") && answer.contains(&LIMIT.to_string()),
        "the refusal must name the limit and its key: {answer}"
    );
    let after = proc_status_bytes(pid, "VmRSS");
    // A generous bound: an unbounded server would hold buffers and a task
    // for every one of the 2000 connections, and keep them.
    assert!(
        after < before + (64 << 20),
        "memory grew from {before} to {after} bytes under the flood"
    );

    // The flood ends: clients are served again without a restart.
    drop(idle);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = raw_request(
            node.api_port,
            "GET /readyz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        );
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still refused after the flood: {answer}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    node.execute_ok(json!([[
        "INSERT INTO t(id, v) VALUES(1, 'after the flood')"
    ]]));

    // The admin socket: past its limit the CLI is told why.
    let socket = node.dir.path().join("run").join("quorate.sock");
    let max = quorate::admin::server::MAX_CONNECTIONS;
    let idle_admin: Vec<std::os::unix::net::UnixStream> = (0..max)
        .map(|_| std::os::unix::net::UnixStream::connect(&socket).unwrap())
        .collect();
    let out = node.cli(&["--show-cluster-status"]);
    assert!(!out.status.success(), "the CLI was served past the limit");
    let err = common::stderr(&out);
    assert!(
        err.contains(&format!("at most {max} connections")),
        "the CLI must say why: {err}"
    );
    drop(idle_admin);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = node.cli(&["--show-cluster-status"]);
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "admin socket still refusing: {}",
            common::stderr(&out)
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let log = node.log();
    assert!(
        log.contains("raise api.max_connections"),
        "no log line names the key: {}",
        common::cluster::tail(&log, 20)
    );
    // Rate-limited: one line for the first refusal, then at most one per
    // 10 s (this test takes far less than a minute), not one per connection.
    let lines = log.matches("raise api.max_connections").count();
    assert!(lines <= 7, "{lines} log lines for one flood");
    assert!(log.contains("admin socket: refused a connection"));
    assert_eq!(node.scalar("SELECT COUNT(*) FROM t"), 1);
}

/// Reads from `s` until the peer closes it; false if it stays open past `within`.
fn closed_by_peer(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut sink = Vec::new();
    match s.read_to_end(&mut sink) {
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

const IDLE_MS: u64 = 300;

#[test]
fn idle_and_trickling_api_connections_are_closed_and_slow_answers_are_not_cut() {
    use std::io::Write;
    let node = bootstrapped_with_api(&format!("max_connections = 8\nidle_timeout_ms = {IDLE_MS}"));

    let connect = || TcpStream::connect(("127.0.0.1", node.api_port)).unwrap();
    let opened = Instant::now();
    // Silent from the start; a header that never ends; one request and
    // then silence on a kept-alive connection.
    let mut silent = connect();
    let mut trickler = connect();
    trickler
        .write_all(b"GET /status HTTP/1.1\r\nhost: x\r\n")
        .unwrap();
    let mut kept = connect();
    kept.write_all(b"GET /readyz HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 12];
    kept.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    for (what, s) in [
        ("a silent connection", &mut silent),
        ("a never-ending header", &mut trickler),
        ("an idle kept-alive connection", &mut kept),
    ] {
        assert!(
            closed_by_peer(s, Duration::from_secs(30)),
            "{what} was still open 30 s after api.idle_timeout_ms = {IDLE_MS}"
        );
    }
    assert!(
        opened.elapsed() >= Duration::from_millis(IDLE_MS * 9 / 10),
        "closed before the idle timeout"
    );

    // A query that takes longer than the idle timeout to answer is not cut.
    let slow = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 6000000) \
                SELECT count(*) FROM c";
    let started = Instant::now();
    let (code, body) = node.post("/db/query", &json!([slow]));
    let took = started.elapsed();
    eprintln!("the slow query took {took:?}");
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["results"][0]["values"][0][0], 6_000_000, "{body}");
    assert!(
        took > Duration::from_millis(IDLE_MS),
        "the slow query took only {took:?}, shorter than the idle timeout: it shows nothing; make it slower"
    );
    assert!(!node.log().contains("panicked"));
}

/// The status probe: a request kind whose body is ignored, answered with a
/// Response by a healthy node.
const PROBE: u8 = 32;

#[test]
fn replication_connections_are_bounded_and_a_junk_sending_peer_is_disconnected() {
    let c = Cluster::start(2, "max_peer_connections = 6\n");
    c.nodes[0].execute_ok(json!(["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"]));
    c.still_serves(1);
    let target = SocketAddr::from(([127, 0, 0, 1], c.repl_ports[0]));
    let cert = || valid_cert(c.tls.path(), "node-9");
    let rt = runtime();
    rt.block_on(async {
        let endpoint = client(c.tls.path(), Some(cert()));

        // A flood of connections: node-1's connection stays, at most the
        // limit are served, the rest are refused before their handshake.
        let mut held = Vec::new();
        let mut refused = 0;
        for _ in 0..20 {
            let connecting = endpoint.connect(target, "node-1").unwrap();
            match tokio::time::timeout(Duration::from_secs(15), connecting).await {
                Ok(Ok(conn)) => held.push(conn),
                Ok(Err(e)) => {
                    assert!(
                        e.to_string().contains("refused"),
                        "a connection failed for another reason: {e}"
                    );
                    refused += 1;
                }
                Err(_) => panic!("no answer to a connection attempt"),
            }
        }
        assert!(held.len() <= 6, "{} connections accepted", held.len());
        assert!(refused >= 10, "only {refused} of 20 refused");
        drop(held);

        // Frames that claim the largest size and bring ten bytes, on many
        // streams at once: the node reserves what arrives, not what is
        // claimed (64 MiB each would be gigabytes of address space).
        let pid = c.nodes[0].child.as_ref().unwrap().id();
        let before = proc_status_bytes(pid, "VmSize");
        // The flood's connections may hold their slots a moment longer.
        let deadline = Instant::now() + Duration::from_secs(20);
        let conn = loop {
            match connect_and_hello(&endpoint, target, "node-1", "test", "node-9").await {
                Ok(conn) => break conn,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("not yet served after the flood: {e}");
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                Err(e) => panic!("no slot came free after the flood: {e}"),
            }
        };
        let mut open = Vec::new();
        for _ in 0..STREAMS {
            let (mut send, recv) = conn.open_bi().await.unwrap();
            let mut bytes = ((64u32 << 20) + 2).to_be_bytes().to_vec();
            bytes.extend_from_slice(&[raw_peer::WIRE_VERSION, raw_peer::REQUEST]);
            bytes.extend_from_slice(&[PROBE; 10]);
            send.write_all(&bytes).await.unwrap();
            open.push((send, recv));
        }
        // Let the node read what was sent on every stream.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let during = proc_status_bytes(pid, "VmSize");
        assert!(
            during < before + (2 << 30),
            "{STREAMS} frames claiming 64 MiB took the node from {before} to {during} bytes"
        );
        drop(open);
        conn.close(0u32.into(), b"done");

        // Junk frames from an authenticated peer: the first few are
        // refused stream by stream, then the connection is closed.
        let conn = connect_and_hello(&endpoint, target, "node-1", "test", "node-9")
            .await
            .expect("hello with a valid certificate");
        let mut rejected = 0;
        for n in 0..30u8 {
            match exchange(&conn, &frame(99, &[n])).await {
                Ok(answer) => {
                    let (ty, _) = parse_answer(&answer).expect("an answer frame");
                    assert_eq!(ty, raw_peer::REJECTED);
                    rejected += 1;
                }
                Err(_) => break,
            }
        }
        let closed = tokio::time::timeout(Duration::from_secs(15), conn.closed())
            .await
            .expect("the connection of a peer sending junk stays open");
        assert!(
            (1..=9).contains(&rejected),
            "{rejected} junk frames answered before the disconnect"
        );
        match &closed {
            quinn::ConnectionError::ApplicationClosed(close) => {
                assert_eq!(close.error_code, quinn::VarInt::from_u32(4));
                let why = String::from_utf8_lossy(&close.reason);
                assert!(why.contains("malformed frames"), "{why}");
            }
            other => panic!("closed without an application error code: {other}"),
        }

        // Undecodable request bodies count too.
        let conn = connect_and_hello(&endpoint, target, "node-1", "test", "node-9")
            .await
            .expect("a disconnected peer may reconnect");
        for n in 0..30u8 {
            let mut body = vec![quorate::order::network::kind::APPEND];
            body.extend_from_slice(&[0xff, n, 0xff, 0xff]);
            if exchange(&conn, &frame(raw_peer::REQUEST, &body))
                .await
                .is_err()
            {
                break;
            }
        }
        let closed = tokio::time::timeout(Duration::from_secs(15), conn.closed())
            .await
            .expect("junk request bodies never close the connection");
        assert!(closed.to_string().contains("malformed"), "{closed}");

        // Back and behaving: served normally.
        let conn = connect_and_hello(&endpoint, target, "node-1", "test", "node-9")
            .await
            .expect("a disconnected peer may reconnect");
        for _ in 0..20 {
            let answer = exchange(&conn, &frame(raw_peer::REQUEST, &[PROBE]))
                .await
                .expect("a good request on the new connection");
            let (ty, _) = parse_answer(&answer).expect("an answer frame");
            assert_eq!(ty, raw_peer::RESPONSE);
        }
        conn.close(0u32.into(), b"done");
    });
    c.still_serves(2);
    let log = c.nodes[0].log();
    assert!(
        log.contains("raise replication.max_peer_connections"),
        "{}",
        common::cluster::tail(&log, 30)
    );
    assert!(
        log.lines()
            .any(|l| l.contains("disconnected a replication peer") && l.contains("node-9")),
        "no log line names the disconnected peer: {}",
        common::cluster::tail(&log, 30)
    );
    assert!(!log.contains("panicked"));
}
