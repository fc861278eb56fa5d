//! The outage scenarios of DESIGN.md §5 that need no network cut: nodes
//! stopped gracefully (one, two, all) and killed (all), with the recovery
//! each requires and no acknowledged write lost.

mod common;

use std::time::Duration;

use common::cluster::Cluster;
use serde_json::json;

fn uuid_of(c: &Cluster, i: usize) -> String {
    c.status(i)["cluster"]["cluster_state_uuid"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[test]
fn all_stopped_gracefully_the_last_one_out_restarts_the_cluster_by_itself() {
    let mut c = Cluster::start(3, "");
    c.nodes[0].execute_ok(json!(["CREATE TABLE t(id INTEGER PRIMARY KEY)"]));
    c.wait_synced(&[0, 1, 2], Duration::from_secs(20));
    let uuid = uuid_of(&c, 0);
    for i in 0..3 {
        c.nodes[i].execute_ok(json!([["INSERT INTO t VALUES(?)", i as i64]]));
        c.wait_synced(&c.running(), Duration::from_secs(20));
        assert!(c.nodes[i].stop().success(), "graceful stop of node {i}");
    }
    // Only the last one out is safe to bootstrap (as in Galera).
    assert_eq!(c.safe_line(0), "safe_to_bootstrap: 0");
    assert_eq!(c.safe_line(1), "safe_to_bootstrap: 0");
    assert_eq!(c.safe_line(2), "safe_to_bootstrap: 1");

    // --bootstrap-node on a node that is not safe is refused with the banner.
    let out = c.nodes[0].cli(&["--bootstrap-node", "--no-systemd"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}{}",
        common::stdout(&out),
        common::stderr(&out)
    );
    assert!(common::stderr(&out).contains("It is not safe to bootstrap this node"));

    // The first two come back and wait: no primary component without the last member.
    c.nodes[0].start(&[]);
    c.nodes[1].start(&[]);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        c.nodes[0].get("/readyz").0,
        503,
        "a node that left must not form a cluster of its own"
    );
    // The last one out starts Primary by itself, and the others join it.
    c.nodes[2].start(&[]);
    c.wait_size(&[0, 1, 2], 3, Duration::from_secs(60));
    c.wait_converged(&[0, 1, 2], "t", Duration::from_secs(30));
    assert_eq!(
        c.nodes[0].scalar("SELECT COUNT(*) FROM t"),
        3,
        "no acknowledged write lost"
    );
    assert_eq!(uuid_of(&c, 1), uuid, "the state UUID is kept");
}

#[test]
fn all_killed_the_cluster_reforms_once_a_majority_is_back() {
    let mut c = Cluster::start(3, "");
    c.nodes[0].execute_ok(json!(["CREATE TABLE t(id INTEGER PRIMARY KEY)"]));
    c.wait_synced(&[0, 1, 2], Duration::from_secs(20));
    for i in 0..30 {
        c.nodes[i % 3].execute_ok(json!([["INSERT INTO t VALUES(?)", i as i64]]));
    }
    let seqno_before = c.wait_synced(&[0, 1, 2], Duration::from_secs(20));
    let uuid = uuid_of(&c, 0);
    for i in 0..3 {
        c.nodes[i].kill();
    }
    // Power loss: nobody is the sole member, nobody was safe to bootstrap.
    for i in 0..3 {
        assert_eq!(c.safe_line(i), "safe_to_bootstrap: 0");
        let out = c.nodes[i].cli(&["--recover"]);
        assert!(
            common::stdout(&out).trim().starts_with(&uuid),
            "{}",
            common::stdout(&out)
        );
    }
    // One comes back, alone non-Primary. On a node whose daemon is still
    // down, the status lists what every peer holds and names whom to bootstrap
    // (what operators otherwise collect with --wsrep-recover on every node).
    c.nodes[2].start(&[]);
    let out = c.nodes[0].cli(&["--show-cluster-status"]);
    let table = common::stdout(&out);
    assert!(table.contains("Peers (uuid:seqno:incarnation)"), "{table}");
    assert!(
        table.contains(&format!("{uuid}:{seqno_before}:0")),
        "the running peer's position is listed:\n{table}"
    );
    assert!(
        table.contains("unreachable"),
        "the dead peer is named as such:\n{table}"
    );
    assert!(table.contains("Node to bootstrap:"), "{table}");
    // A second one comes back: a majority of the last membership re-forms by itself.
    c.nodes[1].start(&[]);
    c.wait_size(&[1, 2], 3, Duration::from_secs(60));
    assert_eq!(uuid_of(&c, 1), uuid, "state UUID kept across a full crash");
    assert!(
        c.status(1)["cluster"]["last_committed"].as_i64().unwrap() >= seqno_before,
        "seqno history kept"
    );
    c.nodes[1].execute_ok(json!([["INSERT INTO t VALUES(?)", 100]]));
    c.nodes[0].start(&[]);
    c.wait_converged(&[0, 1, 2], "t", Duration::from_secs(30));
    assert_eq!(c.nodes[0].scalar("SELECT COUNT(*) FROM t"), 31);
}

#[test]
fn two_stopped_gracefully_the_third_goes_on_alone_and_they_rejoin() {
    let mut c = Cluster::start(3, "");
    c.nodes[0].execute_ok(json!(["CREATE TABLE t(id INTEGER PRIMARY KEY)"]));
    c.wait_synced(&[0, 1, 2], Duration::from_secs(20));
    assert!(c.nodes[0].stop().success());
    assert!(c.nodes[1].stop().success());
    c.wait_size(&[2], 1, Duration::from_secs(20));
    c.nodes[2].execute_ok(json!([["INSERT INTO t VALUES(?)", 1]]));
    c.nodes[1].start(&[]);
    c.wait_size(&[1, 2], 2, Duration::from_secs(60));
    c.nodes[0].start(&[]);
    c.wait_size(&[0, 1, 2], 3, Duration::from_secs(60));
    c.wait_converged(&[0, 1, 2], "t", Duration::from_secs(30));
}

#[test]
fn restart_node_starts_a_crashed_member_which_catches_up() {
    let mut c = Cluster::start(3, "");
    c.nodes[0].execute_ok(json!(["CREATE TABLE t(id INTEGER PRIMARY KEY)"]));
    c.wait_synced(&[0, 1, 2], Duration::from_secs(20));
    c.nodes[2].kill();
    for i in 0..10 {
        c.nodes[0].execute_ok(json!([["INSERT INTO t VALUES(?)", i]]));
    }
    // Without systemd the CLI starts the daemon itself and waits for it.
    let out = c.nodes[2].cli(&["--restart-node", "--no-systemd", "--wait", "60"]);
    assert!(
        out.status.success(),
        "--restart-node: {}{}",
        common::stdout(&out),
        common::stderr(&out)
    );
    c.wait_size(&[0, 1, 2], 3, Duration::from_secs(30));
    c.wait_converged(&[0, 1, 2], "t", Duration::from_secs(30));
    // The daemon the CLI started logs to data_dir/quorated.log.
    let log = common::read(&c.nodes[2].data_dir().join("quorated.log"));
    assert!(
        log.contains("quorated serving"),
        "the CLI-started daemon's log: {log}"
    );
    assert!(
        !log.contains("SST: receiving"),
        "a short absence is caught up by IST:\n{log}"
    );
    // `--restart-node` on a running node refuses and says why.
    let out = c.nodes[2].cli(&["--restart-node", "--no-systemd"]);
    assert!(!out.status.success());
    assert!(
        common::stderr(&out).contains("running"),
        "{}",
        common::stderr(&out)
    );
    c.nodes[2].kill_by_status_pid();
}

#[test]
fn an_empty_node_refuses_to_bootstrap_beside_peers_that_hold_data() {
    let c = Cluster::start(3, "");
    c.nodes[0].execute_ok(json!(["CREATE TABLE t(id INTEGER PRIMARY KEY)"]));
    c.wait_synced(&[0, 1, 2], Duration::from_secs(20));
    // A fresh fourth machine whose operator runs the bootstrap command by mistake.
    common::cluster::make_node_cert("node-4", c.tls.path(), c.tls.path());
    let port = common::free_port();
    let mut peers = c.repl_ports.clone();
    peers.push(port);
    let fresh = common::TestNode::new(
        "node-4",
        &common::cluster::node_config("node-4", port, &peers, c.tls.path(), ""),
    );
    let out = fresh.cli(&["--bootstrap-node", "--no-systemd"]);
    let text = format!(
        "{}{}{}",
        common::stdout(&out),
        common::stderr(&out),
        fresh.log()
    );
    assert!(!out.status.success(), "must be refused:\n{text}");
    assert!(
        text.contains("this node has no data") && text.contains("second, empty cluster"),
        "the refusal says why and what to do:\n{text}"
    );
    assert!(
        text.contains("node-1"),
        "it names the peers that hold data:\n{text}"
    );
    // Nothing was created: the node can still join normally.
    assert!(
        !fresh.grastate_path().exists()
            || common::read(&fresh.grastate_path())
                .contains("00000000-0000-0000-0000-000000000000")
    );
}
