//! Bad input gets a clear error; the node keeps serving and loses nothing.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::json;

#[test]
fn bad_requests_get_clear_errors_and_the_node_keeps_serving() {
    let mut node = TestNode::new("node-a", "max_writeset_bytes = 4096\n");
    node.start(&["--bootstrap"]);
    node.wait_primary(Duration::from_secs(20));
    node.execute_ok(json!(["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"]));
    node.execute_ok(json!([["INSERT INTO t(id, v) VALUES(?, ?)", 1, "kept"]]));

    // Malformed JSON: 400 naming the problem.
    let (code, body) = node.post_raw("/db/execute", "[\"INSERT INTO t VALUES(2, 'x')\"");
    assert_eq!(code, 400, "{body}");
    assert!(
        body.to_lowercase().contains("json"),
        "error should say the JSON is bad: {body}"
    );

    // SQL syntax error: rqlite reports it per statement with HTTP 200.
    let (code, body) = node.post("/db/execute", &json!(["INSRT INTO t VALUES(3, 'x')"]));
    assert_eq!(code, 200, "{body}");
    assert!(
        body["results"][0]["error"]
            .as_str()
            .unwrap_or("")
            .contains("syntax error"),
        "{body}"
    );

    // A table without a primary key cannot be replicated by rows: refused, says why.
    node.execute_ok(json!(["CREATE TABLE nopk(a INTEGER, b TEXT)"]));
    let (code, body) = node.post("/db/execute", &json!(["INSERT INTO nopk VALUES(1, 'x')"]));
    let text = body.to_string();
    assert!(code == 200 || code == 400, "{code} {text}");
    assert!(
        text.contains("PRIMARY KEY"),
        "the error must say a primary key is missing: {text}"
    );
    assert_eq!(node.scalar("SELECT COUNT(*) FROM nopk"), 0);

    // A write-set over max_writeset_bytes is refused before it is ordered.
    let big = "x".repeat(10_000);
    let (code, body) = node.post(
        "/db/execute",
        &json!([["INSERT INTO t(id, v) VALUES(?, ?)", 9, big]]),
    );
    let text = body.to_string();
    assert!(code == 400 || code == 413 || code == 200, "{code} {text}");
    assert!(
        text.contains("max_writeset_bytes") || text.contains("limit"),
        "error must name the limit: {text}"
    );
    assert_eq!(node.scalar("SELECT COUNT(*) FROM t WHERE id = 9"), 0);

    // Still serving, nothing lost.
    node.execute_ok(json!([["INSERT INTO t(id, v) VALUES(?, ?)", 2, "after"]]));
    assert_eq!(
        node.query_rows("SELECT id, v FROM t ORDER BY id"),
        vec![json!([1, "kept"]), json!([2, "after"])]
    );
}

#[test]
fn damaged_grastate_stops_the_daemon_with_file_and_line() {
    let node = TestNode::new("node-a", "");
    std::fs::create_dir_all(node.data_dir()).unwrap();
    std::fs::write(node.grastate_path(), "# GALERA saved state\nversion: 2.1\nuuid:    not-a-uuid\nseqno:   3\nsafe_to_bootstrap: 1\n").unwrap();
    let out = Command::new(QUORATED)
        .arg("--config")
        .arg(&node.config_path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("grastate.dat"), "must name the file: {err}");
    assert!(err.contains("line 3"), "must name the line: {err}");
}

#[test]
fn unknown_config_key_is_an_error_naming_the_key() {
    let node = TestNode::new("node-a", "retry_autocommmit = 3\n");
    let out = Command::new(QUORATED)
        .arg("--config")
        .arg(&node.config_path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("retry_autocommmit"),
        "must name the key: {err}"
    );
    assert!(
        err.contains(node.config_path.to_str().unwrap()),
        "must name the file: {err}"
    );
    let out = node.cli(&["--show-cluster-status"]);
    assert!(
        !out.status.success(),
        "the CLI must refuse the bad config too"
    );
}
