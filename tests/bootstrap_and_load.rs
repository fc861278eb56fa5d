//! Bootstrap a single node through the CLI, load it from 16 concurrent HTTP
//! clients, read everything back, and check the status table.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

#[test]
fn bootstrap_via_cli_then_concurrent_load_and_status() {
    let mut node = TestNode::new("node-a", "");
    node.start(&[]);

    // A fresh node waits non-Primary and refuses clients until bootstrapped.
    let (code, body) = node.post(
        "/db/execute",
        &json!(["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"]),
    );
    assert_eq!(code, 503, "fresh node must refuse writes: {body}");
    assert_eq!(body["code"], "not_primary", "{body}");

    let out = node.cli(&["--bootstrap-node"]);
    assert!(
        out.status.success(),
        "bootstrap failed: {}{}",
        stdout(&out),
        stderr(&out)
    );
    node.wait_primary(Duration::from_secs(20));

    node.execute_ok(json!([
        "CREATE TABLE t(id INTEGER PRIMARY KEY, client INTEGER NOT NULL, v TEXT NOT NULL)"
    ]));

    const CLIENTS: usize = 16;
    const ROWS: usize = 5000;
    std::thread::scope(|s| {
        for c in 0..CLIENTS {
            let node = &node;
            s.spawn(move || {
                for i in (c..ROWS).step_by(CLIENTS) {
                    let resp = node.execute_ok(json!([[
                        "INSERT INTO t(id, client, v) VALUES(?, ?, ?)",
                        i as i64 + 1,
                        c as i64,
                        format!("row {i}")
                    ]]));
                    assert_eq!(resp["results"][0]["rows_affected"], 1, "{resp}");
                }
            });
        }
    });

    assert_eq!(node.scalar("SELECT COUNT(*) FROM t"), ROWS as i64);
    assert_eq!(node.scalar("SELECT COUNT(DISTINCT id) FROM t"), ROWS as i64);
    let rows = node.query_rows("SELECT id, v FROM t WHERE id = 4242");
    assert_eq!(rows, vec![json!([4242, "row 4241"])]);

    let out = node.cli(&["--show-cluster-status"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    for row in [
        "| Variable_name ",
        "| wsrep_cluster_conf_id ",
        "| wsrep_cluster_size        | 1 ",
        "| wsrep_cluster_state_uuid ",
        "| wsrep_cluster_status      | Primary ",
        "| wsrep_connected           | ON ",
        "| wsrep_gcomm_uuid ",
        "| wsrep_last_committed ",
        "| wsrep_local_state_uuid ",
        "| wsrep_ready               | ON ",
        "| wsrep_local_state_comment | Synced ",
    ] {
        assert!(table.contains(row), "status table lacks `{row}`:\n{table}");
    }
    // Bootstrap is seqno 0; CREATE TABLE + 5000 inserts are seqnos 1..=5001.
    assert!(
        table.contains("| wsrep_last_committed      | 5001 "),
        "{table}"
    );
    let out = node.cli(&["--show-cluster-status", "--json"]);
    let status: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("status --json is JSON");
    assert_eq!(status["wsrep_cluster_size"], 1, "{status}");
    assert_eq!(status["wsrep_last_committed"], 5001, "{status}");
    assert_eq!(status["wsrep_cluster_status"], "Primary", "{status}");

    // Prometheus metrics carry the same figures.
    let metrics = node.metrics_text();
    for line in [
        "quorate_cluster_size 1",
        "quorate_last_committed 5001",
        "quorate_cluster_status{status=\"Primary\"} 1",
        "quorate_commits_total 5001",
        "quorate_commit_latency_seconds_count 5001",
        "# TYPE quorate_local_cert_failures_total counter",
    ] {
        assert!(
            metrics.contains(line),
            "/metrics lacks `{line}`:\n{metrics}"
        );
    }

    // grastate.dat while running: seqno -1, the sole member is safe to bootstrap.
    let g = read(&node.grastate_path());
    assert!(g.contains("seqno:   -1"), "{g}");
    assert!(g.contains("safe_to_bootstrap: 1"), "{g}");
    let uuid = status["wsrep_cluster_state_uuid"]
        .as_str()
        .expect("uuid")
        .to_string();
    assert!(g.contains(&uuid), "grastate {g} lacks state uuid {uuid}");
}
