//! What SIGTERM and SIGINT do to the membership (`leave_on_terminate`,
//! `skip_leave_on_interrupt`), and what SIGHUP reloads.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{tail, Cluster};
use common::*;
use nix::sys::signal::Signal;
use serde_json::json;

/// Put top-level `lines` into node `i`'s config (before any section).
fn set_top_level(c: &Cluster, i: usize, lines: &str) {
    let path = &c.nodes[i].config_path;
    let text = std::fs::read_to_string(path).unwrap();
    std::fs::write(path, format!("{lines}\n{text}")).unwrap();
}

/// Send `sig` and wait for the process to exit; returns whether it exited 0.
fn stop_with(node: &mut TestNode, sig: Signal) -> bool {
    node.signal(sig);
    let mut child = node.child.take().expect("running");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status.success();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "{} did not stop after {sig}; log:\n{}",
                node.name,
                tail(&node.log(), 40)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn grastate_seqno(node: &TestNode) -> i64 {
    read(&node.grastate_path())
        .lines()
        .find_map(|l| l.strip_prefix("seqno:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no seqno in {}", read(&node.grastate_path())))
}

fn cluster_size(c: &Cluster, i: usize) -> i64 {
    c.status(i)["cluster"]["cluster_size"]
        .as_i64()
        .unwrap_or(-1)
}

/// `sig` on node 2 configured to keep its membership, then on node 1 with
/// the default (leave), in a cluster of three.
fn keep_then_leave(sig: Signal, keep_key: &str) {
    let mut c = Cluster::new(3, "");
    set_top_level(&c, 2, keep_key);
    c.nodes[0].start(&["--bootstrap"]);
    c.nodes[0].wait_primary(Duration::from_secs(30));
    c.nodes[1].start(&[]);
    c.nodes[2].start(&[]);
    c.wait_size(&[0, 1, 2], 3, Duration::from_secs(60));
    c.nodes[0].execute_ok(json!(["CREATE TABLE t(id INTEGER PRIMARY KEY)"]));
    for id in 0..5 {
        c.nodes[0].execute_ok(json!([["INSERT INTO t(id) VALUES(?)", id]]));
    }
    let seqno = c.wait_synced(&[0, 1, 2], Duration::from_secs(30));

    // Kept: the node stops as a member, so the others still count three.
    assert!(
        stop_with(&mut c.nodes[2], sig),
        "{}",
        tail(&c.nodes[2].log(), 30)
    );
    let log = c.nodes[2].log();
    assert!(
        log.contains("stopping without leaving"),
        "{}",
        tail(&log, 30)
    );
    assert!(!log.contains("left the cluster"), "{}", tail(&log, 30));
    assert_eq!(
        grastate_seqno(&c.nodes[2]),
        seqno,
        "the stop records the seqno"
    );
    assert_eq!(
        c.safe_line(2),
        "safe_to_bootstrap: 0",
        "one of three members"
    );
    // A leave would have shown by now (it completes before the process exits).
    c.wait_size(&[0, 1], 3, Duration::from_secs(30));
    assert_eq!(cluster_size(&c, 0), 3);
    // Its quick restart rejoins as the member it still is.
    c.nodes[2].start(&[]);
    c.wait_size(&[0, 1, 2], 3, Duration::from_secs(60));
    assert!(c.nodes[2]
        .log()
        .contains("rejoining the primary component this node belonged to"));

    // Default: the node leaves, the cluster shrinks to two.
    assert!(
        stop_with(&mut c.nodes[1], sig),
        "{}",
        tail(&c.nodes[1].log(), 30)
    );
    let log = c.nodes[1].log();
    assert!(log.contains("left the cluster"), "{}", tail(&log, 30));
    c.wait_size(&[0, 2], 2, Duration::from_secs(30));
    assert_eq!(grastate_seqno(&c.nodes[1]), seqno);
    assert_eq!(c.safe_line(1), "safe_to_bootstrap: 0");
}

#[test]
fn sigterm_leaves_by_default_and_keeps_the_membership_with_leave_on_terminate_false() {
    keep_then_leave(Signal::SIGTERM, "leave_on_terminate = false");
}

#[test]
fn sigint_leaves_by_default_and_keeps_the_membership_with_skip_leave_on_interrupt() {
    keep_then_leave(Signal::SIGINT, "skip_leave_on_interrupt = true");
}

#[test]
fn the_sole_member_kept_on_stop_stays_safe_to_bootstrap() {
    let mut node = TestNode::new("node-a", "");
    let text = std::fs::read_to_string(&node.config_path).unwrap();
    std::fs::write(
        &node.config_path,
        format!("leave_on_terminate = false\n{text}"),
    )
    .unwrap();
    node.start(&["--bootstrap"]);
    node.wait_primary(Duration::from_secs(30));
    node.execute_ok(json!(["CREATE TABLE t(id INTEGER PRIMARY KEY)"]));
    assert!(stop_with(&mut node, Signal::SIGTERM));
    let g = read(&node.grastate_path());
    assert!(
        g.contains("\nseqno:   1\n") && g.contains("safe_to_bootstrap: 1"),
        "{g}"
    );
}

#[test]
fn sighup_applies_the_log_level_and_names_what_needs_a_restart() {
    let mut node = TestNode::new("node-a", "");
    node.start(&["--bootstrap"]);
    node.wait_primary(Duration::from_secs(30));
    node.execute_ok(json!(["CREATE TABLE t(id INTEGER PRIMARY KEY)"]));
    let before = node.log();
    assert!(!before.contains("DEBUG"), "the test starts at level info");

    // A bad file changes nothing and says why.
    let good = std::fs::read_to_string(&node.config_path).unwrap();
    std::fs::write(&node.config_path, format!("log_level = 7\n{good}")).unwrap();
    node.signal(Signal::SIGHUP);
    let log = node.wait_log("SIGHUP: cannot reload", Duration::from_secs(20));
    assert!(log.contains("log_level"), "{}", tail(&log, 5));

    let changed = good.replace("node_name = \"node-a\"", "node_name = \"node-z\"");
    std::fs::write(
        &node.config_path,
        format!("log_level = \"debug\"\n{changed}"),
    )
    .unwrap();
    node.signal(Signal::SIGHUP);
    let log = node.wait_log("SIGHUP: reloaded", Duration::from_secs(20));
    let applied = log
        .lines()
        .find(|l| l.contains("SIGHUP: reloaded"))
        .unwrap()
        .to_string();
    assert!(
        applied.contains("log_level: \"info\" -> \"debug\""),
        "{applied}"
    );
    let restart = node.wait_log("needs a restart", Duration::from_secs(20));
    let restart = restart
        .lines()
        .find(|l| l.contains("needs a restart"))
        .unwrap();
    assert!(
        restart.contains("node_name: \"node-a\" -> \"node-z\""),
        "{restart}"
    );
    let (restart_keys, _) = restart
        .split_once("; only")
        .expect("the reloadable keys follow");
    assert!(!restart_keys.contains("log_level"), "{restart}");

    // The new level shows: a write now logs at debug.
    node.execute_ok(json!([["INSERT INTO t(id) VALUES(?)", 1]]));
    node.wait_log("DEBUG", Duration::from_secs(20));
    // The node still runs under its old name until restarted.
    let (_, status) = node.get("/status");
    assert_eq!(status["cluster"]["node_name"], "node-a");
}

#[test]
fn sighup_peers_let_a_waiting_node_join() {
    let mut c = Cluster::new(2, "");
    // node-2 starts knowing no peer: it waits, non-Primary.
    let path = c.nodes[1].config_path.clone();
    let with_peers = std::fs::read_to_string(&path).unwrap();
    let peers_line = with_peers
        .lines()
        .find(|l| l.starts_with("peers = "))
        .unwrap()
        .to_string();
    std::fs::write(&path, with_peers.replace(&peers_line, "peers = []")).unwrap();
    c.nodes[0].start(&["--bootstrap"]);
    c.nodes[0].wait_primary(Duration::from_secs(30));
    c.nodes[1].start(&[]);
    c.nodes[1].wait_log("waits non-Primary", Duration::from_secs(20));
    assert_ne!(c.status(1)["cluster"]["cluster_status"], "Primary");

    std::fs::write(&path, with_peers).unwrap();
    c.nodes[1].signal(Signal::SIGHUP);
    let log = c.nodes[1].wait_log("SIGHUP: reloaded", Duration::from_secs(20));
    assert!(
        log.contains("replication.peers: [] -> "),
        "{}",
        tail(&log, 5)
    );
    c.wait_size(&[0, 1], 2, Duration::from_secs(60));
}
