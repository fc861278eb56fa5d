//! Flow control: past `flow_control_limit` write-sets in flight, new writes
//! wait for a slot instead of piling up, nothing fails for it, and the
//! waiting shows in the status as `wsrep_flow_control_paused`.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

#[test]
fn writers_past_the_limit_wait_and_the_pause_shows_in_the_status() {
    let mut node = TestNode::new(
        "node-a",
        &format!(
            "[replication]\nlisten = \"127.0.0.1:{}\"\nflow_control_limit = 1\n",
            free_port()
        ),
    );
    node.start(&["--bootstrap"]);
    node.wait_primary(Duration::from_secs(20));
    node.execute_ok(json!([
        "CREATE TABLE t(id INTEGER PRIMARY KEY, client INTEGER)"
    ]));

    const CLIENTS: usize = 8;
    const ROWS: usize = 100;
    std::thread::scope(|s| {
        for c in 0..CLIENTS {
            let node = &node;
            s.spawn(move || {
                for r in 0..ROWS {
                    let id = (c * ROWS + r) as i64;
                    node.execute_ok(json!([["INSERT INTO t VALUES(?, ?)", id, c as i64]]));
                }
            });
        }
    });
    assert_eq!(
        node.scalar("SELECT COUNT(*) FROM t"),
        (CLIENTS * ROWS) as i64,
        "back-pressure delays writes, it does not fail them"
    );
    // The paused fraction is sampled over 10-second windows.
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let out = node.cli(&["--show-cluster-status", "--json"]);
        let status: serde_json::Value =
            serde_json::from_str(&stdout(&out)).unwrap_or(serde_json::Value::Null);
        let paused = status["wsrep_flow_control_paused"].as_f64().unwrap_or(0.0);
        if paused > 0.0 {
            assert!(paused <= 1.0, "a fraction: {paused}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "eight writers with one slot must have waited: {status}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}
