//! The parts of the API beyond execute and query that rqlite clients read,
//! on a real 3-node cluster: `/status`, `/nodes` in both formats, `/readyz`,
//! `X-RQLITE-SERVED-BY`, `queue`/`wait`, and multi-master writes that need no
//! redirect.

mod common;

use std::time::Duration;

use serde_json::{json, Value};

use common::cluster::Cluster;
use common::TestNode;

/// POST returning (status, headers we care about, JSON).
fn post_with_headers(
    node: &TestNode,
    path: &str,
    body: &Value,
) -> (u16, Option<String>, Option<String>, Value) {
    let response = match node.agent.post(&node.url(path)).send_json(body.clone()) {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("POST {path} to {}: {e}", node.name),
    };
    let status = response.status();
    let served_by = response.header("x-rqlite-served-by").map(String::from);
    let seqno = response.header("x-quorate-seqno").map(String::from);
    (
        status,
        served_by,
        seqno,
        response.into_json().unwrap_or(Value::Null),
    )
}

#[test]
fn cluster_endpoints_describe_every_node_the_same_way() {
    let cluster = Cluster::start(3, "");
    let names: Vec<&str> = cluster.nodes.iter().map(|n| n.name.as_str()).collect();

    let statuses: Vec<Value> = (0..3).map(|i| cluster.status(i)).collect();
    let leader = statuses[0]["store"]["leader"]["node_id"]
        .as_str()
        .expect("a leader in /status")
        .to_string();
    assert!(names.contains(&leader.as_str()), "{leader}");
    let leader_index = names.iter().position(|n| *n == leader).unwrap();
    for (i, status) in statuses.iter().enumerate() {
        let node = &cluster.nodes[i];
        assert_eq!(status["store"]["ready"], true, "{status}");
        assert_eq!(status["store"]["node_id"], node.name.as_str());
        assert_eq!(status["store"]["leader"]["node_id"], leader.as_str());
        assert_eq!(
            status["store"]["leader"]["addr"],
            format!("127.0.0.1:{}", cluster.repl_ports[leader_index])
        );
        assert_eq!(status["http"]["addr"], node.url(""));
    }

    for (i, node) in cluster.nodes.iter().enumerate() {
        let (code, legacy) = node.get("/nodes");
        assert_eq!(code, 200);
        let (_, v2) = node.get("/nodes?ver=2");
        let listed = v2["nodes"].as_array().expect("ver=2 is a list");
        assert_eq!(listed.len(), 3, "{v2}");
        for (j, entry) in listed.iter().enumerate() {
            let other = &cluster.nodes[j];
            assert_eq!(entry["id"], other.name.as_str(), "sorted by id: {v2}");
            assert_eq!(entry["api_addr"], other.url(""));
            assert_eq!(
                entry["addr"],
                format!("127.0.0.1:{}", cluster.repl_ports[j])
            );
            assert_eq!(entry["voter"], true);
            assert_eq!(entry["reachable"], true);
            assert_eq!(entry["leader"], j == leader_index, "{v2}");
            assert_eq!(&legacy[other.name.as_str()], entry, "node {i}: {legacy}");
        }

        let response = node.agent.get(&node.url("/readyz")).call().expect("readyz");
        assert_eq!(
            response.header("x-rqlite-served-by"),
            Some(format!("127.0.0.1:{}", cluster.repl_ports[i]).as_str())
        );
        assert_eq!(
            response.into_string().unwrap(),
            "[+]node ok\n[+]leader ok\n[+]store ok\n[+]db ok"
        );
    }
}

#[test]
fn any_node_takes_writes_and_queued_writes_are_applied_when_acknowledged() {
    let cluster = Cluster::start(3, "");
    let leader = cluster.status(0)["store"]["leader"]["node_id"]
        .as_str()
        .expect("leader")
        .to_string();
    let follower = cluster
        .nodes
        .iter()
        .position(|n| n.name != leader)
        .expect("a follower");
    let node = &cluster.nodes[follower];

    // `redirect` on a node that can serve is served there: no 301.
    let (code, served_by, seqno, body) = post_with_headers(
        node,
        "/db/execute?redirect",
        &json!(["CREATE TABLE q (id INTEGER PRIMARY KEY, who TEXT)"]),
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        served_by,
        Some(format!("127.0.0.1:{}", cluster.repl_ports[follower]))
    );
    assert!(seqno.is_some());

    // queue and wait: acknowledged once applied, with the seqno as sequence number.
    for (i, other) in cluster.nodes.iter().enumerate() {
        let (code, _, seqno, body) = post_with_headers(
            other,
            "/db/execute?queue&wait&timeout=10s",
            &json!([["INSERT INTO q(who) VALUES (?)", other.name.as_str()]]),
        );
        assert_eq!(code, 200, "{body}");
        let seqno: i64 = seqno.expect("seqno header").parse().unwrap();
        assert_eq!(body["sequence_number"], seqno, "{body}");
        assert_eq!(body["results"][0]["rows_affected"], 1, "{body}");
        // The next node reads it at once with the default level.
        let next = &cluster.nodes[(i + 1) % 3];
        let rows = next.query_rows(&format!(
            "SELECT count(*) FROM q WHERE who = '{}'",
            other.name
        ));
        assert_eq!(
            rows,
            vec![json!([1])],
            "{} after a write on {}",
            next.name,
            other.name
        );
    }
    cluster.wait_converged(&[0, 1, 2], "q", Duration::from_secs(30));
}
