//! Concurrent read-modify-write on one row: first committer wins, losers get
//! the certification error, and the counter equals the successful commits.

mod common;

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use common::*;
use serde_json::json;

fn counter_run(retry_autocommit: u32) -> (i64, i64, i64) {
    let mut node = TestNode::new(
        "node-a",
        &format!("retry_autocommit = {retry_autocommit}\n"),
    );
    node.start(&["--bootstrap"]);
    node.wait_primary(Duration::from_secs(20));
    node.execute_ok(json!([
        "CREATE TABLE counter(id INTEGER PRIMARY KEY, v INTEGER NOT NULL)"
    ]));
    node.execute_ok(json!(["INSERT INTO counter(id, v) VALUES(1, 0)"]));

    let committed = AtomicI64::new(0);
    let cert_failed = AtomicI64::new(0);
    std::thread::scope(|s| {
        for _ in 0..8 {
            let (node, committed, cert_failed) = (&node, &committed, &cert_failed);
            s.spawn(move || {
                for _ in 0..100 {
                    let (code, body) = node.post(
                        "/db/execute",
                        &json!(["UPDATE counter SET v = v + 1 WHERE id = 1"]),
                    );
                    match code {
                        200 => {
                            assert_eq!(body["results"][0]["rows_affected"], 1, "{body}");
                            committed.fetch_add(1, Ordering::Relaxed);
                        }
                        409 => {
                            assert_eq!(body["code"], "certification_failed", "{body}");
                            assert!(
                                body["error"]
                                    .as_str()
                                    .unwrap_or("")
                                    .contains("certification"),
                                "{body}"
                            );
                            cert_failed.fetch_add(1, Ordering::Relaxed);
                        }
                        other => panic!("unexpected {other}: {body}"),
                    }
                }
            });
        }
    });
    let value = node.scalar("SELECT v FROM counter WHERE id = 1");
    let status: serde_json::Value =
        serde_json::from_slice(&node.cli(&["--show-cluster-status", "--json"]).stdout).unwrap();
    let reported = status["wsrep_local_cert_failures"].as_i64().unwrap();
    assert!(
        reported >= cert_failed.load(Ordering::Relaxed),
        "status reports {reported} cert failures"
    );
    (value, committed.into_inner(), cert_failed.into_inner())
}

#[test]
fn counter_equals_successful_commits_without_retry() {
    let (value, committed, cert_failed) = counter_run(0);
    assert_eq!(
        value, committed,
        "lost or phantom update: counter {value}, commits {committed}"
    );
    assert_eq!(committed + cert_failed, 800);
    assert!(
        cert_failed > 0,
        "8 clients on one row must conflict at least once"
    );
}

#[test]
fn autocommit_retry_absorbs_conflicts() {
    let (value, committed, cert_failed) = counter_run(20);
    assert_eq!(value, committed);
    assert_eq!(committed + cert_failed, 800);
    assert!(
        committed > 700,
        "retries should let nearly every increment commit: {committed}"
    );
}
