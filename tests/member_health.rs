//! The leader says when it stops hearing from a member ("member
//! suspected") and when the member answers again ("member back").

mod common;

use std::time::{Duration, Instant};

use common::cluster::Cluster;
use serde_json::json;

fn wait_for_line(c: &Cluster, nodes: &[usize], words: &[&str], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let found = nodes.iter().any(|&i| {
            c.nodes[i]
                .log()
                .lines()
                .any(|l| words.iter().all(|w| l.contains(w)))
        });
        if found {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no log line with {words:?} on nodes {nodes:?}:\n{}",
            nodes
                .iter()
                .map(|&i| common::cluster::tail(&c.nodes[i].log(), 15))
                .collect::<Vec<_>>()
                .join("\n---\n")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_leader_logs_a_silent_member_as_suspected_and_then_back() {
    let mut c = Cluster::start(3, "");
    c.nodes[0].execute_ok(json!(["CREATE TABLE t(id INTEGER PRIMARY KEY)"]));
    c.wait_synced(&c.running(), Duration::from_secs(30));
    let name = c.nodes[2].name.clone();
    for i in 0..3 {
        assert!(
            !c.nodes[i].log().contains("member suspected"),
            "a healthy cluster suspects nobody"
        );
    }

    c.nodes[2].kill();
    wait_for_line(
        &c,
        &[0, 1],
        &["member suspected", &name],
        Duration::from_secs(30),
    );

    c.nodes[2].start(&[]);
    c.wait_size(&[0, 1, 2], 3, Duration::from_secs(60));
    wait_for_line(
        &c,
        &[0, 1],
        &["member back", &name],
        Duration::from_secs(30),
    );
    c.nodes[0].execute_ok(json!([["INSERT INTO t(id) VALUES(1)"]]));
}
