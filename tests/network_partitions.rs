//! Network faults with real packet loss (each node in its own network
//! namespace; links cut with blackhole routes): one node cut off, and all
//! links cut. Both heal by themselves.

mod common;

use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::netns::{self, Net};
use serde_json::json;

fn skip() -> bool {
    match netns::unavailable() {
        Some(why) => !common::prerequisite_missing("network partition test", &why),
        None => false,
    }
}

fn wait_not_ready(node: &common::TestNode, within: Duration) {
    let deadline = Instant::now() + within;
    while node.get("/readyz").0 != 503 {
        assert!(
            Instant::now() < deadline,
            "{} still claims to be Primary",
            node.name
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn one_node_cut_off_goes_non_primary_and_catches_up_when_healed() {
    if skip() {
        return;
    }
    let net = Net::new(3);
    let c = Cluster::new_in(&net, 3, "").start_configured();
    c.nodes[0].execute_ok(json!(["CREATE TABLE t(id INTEGER PRIMARY KEY)"]));
    c.wait_synced(&[0, 1, 2], Duration::from_secs(20));

    net.isolate(2);
    wait_not_ready(&c.nodes[2], Duration::from_secs(10));
    let (code, body) = c.nodes[2].post("/db/execute", &json!([["INSERT INTO t VALUES(?)", 999]]));
    assert_eq!(code, 503, "the cut-off node must refuse writes: {body}");
    assert_eq!(body["code"], "not_primary");
    // The majority goes on.
    for i in 0..20 {
        c.nodes[i % 2].execute_ok(json!([["INSERT INTO t VALUES(?)", i as i64]]));
    }
    net.rejoin(2);
    c.wait_size(&[0, 1, 2], 3, Duration::from_secs(30));
    c.wait_converged(&[0, 1, 2], "t", Duration::from_secs(30));
    assert_eq!(c.nodes[2].scalar("SELECT COUNT(*) FROM t"), 20);
}

#[test]
fn all_links_cut_nobody_is_primary_and_the_cluster_reforms_when_healed() {
    if skip() {
        return;
    }
    let net = Net::new(3);
    let c = Cluster::new_in(&net, 3, "").start_configured();
    c.nodes[0].execute_ok(json!(["CREATE TABLE t(id INTEGER PRIMARY KEY)"]));
    c.wait_synced(&[0, 1, 2], Duration::from_secs(20));
    for (a, b) in [(0, 1), (0, 2), (1, 2)] {
        net.cut(a, b);
    }
    for node in &c.nodes {
        wait_not_ready(node, Duration::from_secs(10));
        let (code, _) = node.post("/db/execute", &json!([["INSERT INTO t VALUES(?)", 7]]));
        assert_eq!(
            code, 503,
            "{} accepted a write with every link cut",
            node.name
        );
    }
    for (a, b) in [(0, 1), (0, 2), (1, 2)] {
        net.heal(a, b);
    }
    c.wait_size(&[0, 1, 2], 3, Duration::from_secs(30));
    c.nodes[1].execute_ok(json!([["INSERT INTO t VALUES(?)", 1]]));
    c.wait_converged(&[0, 1, 2], "t", Duration::from_secs(30));
    assert_eq!(
        c.nodes[0].scalar("SELECT COUNT(*) FROM t"),
        1,
        "no write slipped in while cut"
    );
}
