//! Conflicting writes on different nodes: first committer wins everywhere,
//! the losers are told, and every node holds the same result.

mod common;

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use common::cluster::Cluster;
use serde_json::json;

#[test]
fn conflicts_across_nodes_have_one_outcome_everywhere() {
    let c = Cluster::start(3, "retry_autocommit = 0\n");
    c.nodes[0].execute_ok(json!([
        "CREATE TABLE counter(id INTEGER PRIMARY KEY, v INTEGER NOT NULL)"
    ]));
    c.nodes[0].execute_ok(json!(["INSERT INTO counter(id, v) VALUES(1, 0), (2, 0)"]));
    c.wait_converged(&[0, 1, 2], "counter", Duration::from_secs(20));

    let committed = AtomicI64::new(0);
    let failed = AtomicI64::new(0);
    std::thread::scope(|s| {
        for client in 0..9usize {
            let (c, committed, failed) = (&c, &committed, &failed);
            s.spawn(move || {
                let node = &c.nodes[client % 3];
                for _ in 0..60 {
                    let (code, body) = node.post(
                        "/db/execute?transaction",
                        &json!([
                            "UPDATE counter SET v = v + 1 WHERE id = 1",
                            "UPDATE counter SET v = v + 1 WHERE id = 2"
                        ]),
                    );
                    match code {
                        200 => {
                            committed.fetch_add(1, Ordering::Relaxed);
                        }
                        409 => {
                            assert_eq!(body["code"], "certification_failed", "{body}");
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                        other => panic!("{}: unexpected {other}: {body}", node.name),
                    }
                }
            });
        }
    });
    let committed = committed.into_inner();
    let failed = failed.into_inner();
    assert_eq!(committed + failed, 540);
    assert!(
        failed > 0,
        "9 clients on 3 nodes updating the same rows must conflict"
    );

    c.wait_converged(&[0, 1, 2], "counter", Duration::from_secs(30));
    for node in &c.nodes {
        // Both rows moved together in every committed transaction, on every node.
        assert_eq!(
            node.query_rows_level("SELECT v FROM counter ORDER BY id", "none"),
            vec![json!([committed]), json!([committed])],
            "{}",
            node.name
        );
    }
    // Every node counted the failures of its own clients.
    let reported: i64 = (0..3)
        .map(|i| {
            c.status(i)["cluster"]["local_cert_failures"]
                .as_i64()
                .unwrap()
        })
        .sum();
    assert_eq!(
        reported, failed,
        "certification failures reported by the origins"
    );
}
