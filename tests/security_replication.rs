//! The replication port admits only nodes of this cluster: a client
//! without a certificate, with an expired or not-yet-valid certificate (even
//! one signed by the cluster CA), or speaking for another cluster is refused,
//! the refusal is logged, and the node keeps serving. A daemon will not start
//! with an expired certificate of its own. (Another CA: cluster_security.rs.)

mod common;
#[path = "hostile/raw_peer.rs"]
mod raw_peer;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use raw_peer::{client, connect_and_hello, runtime, signed_cert};
use serde_json::json;
use time::OffsetDateTime;

fn repl_addr(c: &Cluster) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], c.repl_ports[0]))
}

/// Waits for a log line of node 0 that contains every one of `words`.
fn wait_for_log(c: &Cluster, words: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = c.nodes[0].log();
        if let Some(line) = log.lines().find(|l| words.iter().all(|w| l.contains(w))) {
            return line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no log line with {words:?}; log tail:\n{}",
            common::cluster::tail(&log, 30)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Still Primary and still taking writes.
fn still_serves(c: &Cluster, id: i64) {
    let node = &c.nodes[0];
    node.execute_ok(json!([[
        "INSERT INTO t(id, v) VALUES(?, ?)",
        id,
        "after the intruder"
    ]]));
    assert_eq!(
        node.scalar(&format!("SELECT COUNT(*) FROM t WHERE id = {id}")),
        1
    );
}

fn one_node() -> Cluster {
    let c = Cluster::start(1, "");
    c.nodes[0].execute_ok(json!(["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"]));
    c
}

fn days(n: i64) -> time::Duration {
    time::Duration::days(n)
}

#[test]
fn a_client_without_a_certificate_is_refused() {
    let c = one_node();
    let rt = runtime();
    let refused = rt.block_on(async {
        let endpoint = client(c.tls.path(), None);
        connect_and_hello(&endpoint, repl_addr(&c), "node-1", "test", "node-9").await
    });
    assert!(refused.is_err(), "a peer without a certificate got a Hello");
    let line = wait_for_log(&c, &["refused a replication peer", "127.0.0.1"]);
    assert!(
        line.to_lowercase().contains("certificate") || line.contains("TLS"),
        "the refusal should say it is about the certificate: {line}"
    );
    still_serves(&c, 1);
}

#[test]
fn certificates_outside_their_validity_are_refused() {
    let c = one_node();
    let rt = runtime();
    let now = OffsetDateTime::now_utc();
    let dial = |cert| {
        rt.block_on(async {
            let endpoint = client(c.tls.path(), Some(cert));
            let r = connect_and_hello(&endpoint, repl_addr(&c), "node-1", "test", "node-9")
                .await
                .map(|conn| conn.close(0u32.into(), b"done"));
            endpoint.wait_idle().await;
            r
        })
    };

    // The control: the same recipe with a current validity is let in, so
    // the refusals below are about the dates and nothing else.
    dial(signed_cert(
        c.tls.path(),
        "node-9",
        now - days(1),
        now + days(30),
    ))
    .expect("a current certificate signed by the cluster CA must pass");

    let expired = dial(signed_cert(
        c.tls.path(),
        "node-9",
        now - days(60),
        now - days(1),
    ));
    assert!(expired.is_err(), "an expired certificate got a Hello");
    let line = wait_for_log(&c, &["refused a replication peer", "127.0.0.1", "xpired"]);
    assert!(line.contains("TLS"), "{line}");

    let early = dial(signed_cert(
        c.tls.path(),
        "node-9",
        now + days(1),
        now + days(60),
    ));
    assert!(early.is_err(), "a not-yet-valid certificate got a Hello");
    let line = wait_for_log(
        &c,
        &["refused a replication peer", "127.0.0.1", "not valid yet"],
    );
    assert!(line.contains("TLS"), "{line}");
    still_serves(&c, 2);
}

#[test]
fn a_peer_of_another_cluster_is_refused() {
    let c = one_node();
    let rt = runtime();
    let now = OffsetDateTime::now_utc();
    let result = rt.block_on(async {
        let cert = signed_cert(c.tls.path(), "node-9", now - days(1), now + days(30));
        let endpoint = client(c.tls.path(), Some(cert));
        connect_and_hello(&endpoint, repl_addr(&c), "node-1", "other", "node-9").await
    });
    let err = result.expect_err("a peer of another cluster got a Hello");
    assert!(
        err.contains("belongs to cluster 'other'"),
        "the peer should learn why: {err}"
    );
    wait_for_log(
        &c,
        &["refused a replication peer", "belongs to cluster 'other'"],
    );
    still_serves(&c, 3);
}

#[test]
fn a_daemon_with_an_expired_certificate_does_not_start() {
    let c = Cluster::new(1, "");
    let now = OffsetDateTime::now_utc();
    let expired = signed_cert(c.tls.path(), "node-1", now - days(60), now - days(1));
    std::fs::write(c.tls.path().join("node-1.pem"), &expired.cert_pem).unwrap();
    std::fs::write(c.tls.path().join("node-1.key"), &expired.key_pem).unwrap();
    let out = std::process::Command::new(common::QUORATED)
        .arg("--config")
        .arg(&c.nodes[0].config_path)
        .arg("--bootstrap")
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "it started with an expired certificate"
    );
    let err = common::stderr(&out);
    assert!(
        err.contains("node-1.pem") && err.to_lowercase().contains("expired"),
        "the error must name the file and say it expired: {err}"
    );
}
