//! rqlite's value conventions, which client libraries decode by, checked on a
//! real node: the exact JSON for BLOBs, times, booleans, whole reals, zero
//! values, empty results, `PRAGMA table_info` and several statements in one
//! string.

mod common;

use std::time::Duration;

use serde_json::{json, Value};

use common::TestNode;

fn node() -> TestNode {
    let mut node = TestNode::new("values", "");
    node.start(&["--bootstrap"]);
    node.wait_primary(Duration::from_secs(30));
    node
}

/// The first result of a query, as raw JSON text.
fn query_text(node: &TestNode, options: &str, sql: &str) -> String {
    let (code, body) = node.post_raw(&format!("/db/query{options}"), &json!([sql]).to_string());
    assert_eq!(code, 200, "{sql}: {body}");
    body
}

#[test]
fn values_come_back_as_rqlite_prints_them() {
    let node = node();
    node.execute_ok(json!([
        "CREATE TABLE v (id INTEGER PRIMARY KEY, data BLOB, born DATE, seen DATETIME, \
         at TIMESTAMP, ok BOOLEAN, r REAL, name TEXT)"
    ]));
    node.execute_ok(json!([[
        "INSERT INTO v VALUES (1, ?, ?, ?, ?, ?, ?, ?)",
        [0, 1, 254, 255],
        "2024-02-29",
        "2024-01-02 03:04:05.5+02:00",
        1_700_000_000,
        true,
        3.0,
        "x"
    ]]));
    node.execute_ok(json!([
        "INSERT INTO v VALUES (2, x'68690a', 0, '2024-01-02T03:04:05Z', 1700000000123, 0, 2.5, NULL)"
    ]));

    assert_eq!(
        query_text(&node, "", "SELECT * FROM v ORDER BY id"),
        concat!(
            r#"{"results":[{"columns":["id","data","born","seen","at","ok","r","name"],"#,
            r#""types":["integer","blob","date","datetime","timestamp","boolean","real","text"],"#,
            r#""values":[[1,"AAH+/w==","2024-02-29T00:00:00Z","2024-01-02T03:04:05.5+02:00","2023-11-14T22:13:20Z",true,3,"x"],"#,
            r#"[2,"aGkK","1970-01-01T00:00:00Z","2024-01-02T03:04:05Z","2023-11-14T22:13:20.123Z",false,2.5,null]]}]}"#
        )
    );
    // blob_array: byte values instead of base64.
    let body = query_text(&node, "?blob_array", "SELECT data FROM v ORDER BY id");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["results"][0]["values"],
        json!([[[0, 1, 254, 255]], [[104, 105, 10]]])
    );
    // Whole-number reals lose their fraction even from expressions.
    let body = query_text(&node, "", "SELECT 1.0 AS a, 10.0 / 4 AS b, -0.0 + 7 AS c");
    assert_eq!(
        body,
        r#"{"results":[{"columns":["a","b","c"],"types":["real","real","real"],"values":[[1,2.5,7]]}]}"#
    );
}

#[test]
fn zero_values_and_empty_results_follow_go_encoding() {
    let node = node();
    // A statement that changes nothing has no keys at all.
    let (code, body) = node.post_raw(
        "/db/execute",
        r#"["CREATE TABLE z (id INTEGER PRIMARY KEY, name TEXT)", "UPDATE z SET name = 'a' WHERE id = 7"]"#,
    );
    assert_eq!(code, 200);
    assert_eq!(body, r#"{"results":[{},{}]}"#);
    // A query without rows still says which columns and types it has.
    assert_eq!(
        query_text(&node, "", "SELECT id, name FROM z"),
        r#"{"results":[{"columns":["id","name"],"types":["integer","text"]}]}"#
    );
    assert_eq!(
        query_text(&node, "?associative", "SELECT id, name FROM z"),
        r#"{"results":[{"types":{"id":"integer","name":"text"},"rows":[]}]}"#
    );
}

#[test]
fn pragma_table_info_is_a_query() {
    let node = node();
    node.execute_ok(json!([
        "CREATE TABLE p (id INTEGER PRIMARY KEY, name TEXT NOT NULL DEFAULT 'n')"
    ]));
    assert_eq!(
        query_text(&node, "", "PRAGMA table_info(p)"),
        concat!(
            r#"{"results":[{"columns":["cid","name","type","notnull","dflt_value","pk"],"#,
            r#""types":["integer","text","text","integer","","integer"],"#,
            r#""values":[[0,"id","INTEGER",0,null,1],[1,"name","TEXT",1,"'n'",0]]}]}"#
        )
    );
    // Settings are not replicated, so a writing PRAGMA is refused with why.
    let (_, body) = node.post("/db/execute", &json!(["PRAGMA user_version = 3"]));
    let error = body["results"][0]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("PRAGMA user_version is not allowed"),
        "{body}"
    );
}

#[test]
fn several_statements_in_one_string_run_in_turn() {
    let node = node();
    let (code, body) = node.post_raw(
        "/db/execute",
        r#"["CREATE TABLE m (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO m(v) VALUES ('a;b'); INSERT INTO m(v) VALUES ('c')", "INSERT INTO m(v) VALUES ('d')"]"#,
    );
    assert_eq!(code, 200);
    // One result per string: the last statement's.
    assert_eq!(
        body,
        r#"{"results":[{"last_insert_id":2,"rows_affected":1},{"last_insert_id":3,"rows_affected":1}]}"#
    );
    assert_eq!(
        node.query_rows("SELECT v FROM m ORDER BY id"),
        vec![json!(["a;b"]), json!(["c"]), json!(["d"])]
    );
    // A query string with several statements answers with the last one.
    assert_eq!(
        query_text(
            &node,
            "",
            "SELECT count(*) FROM m; SELECT v FROM m WHERE id = 3"
        ),
        r#"{"results":[{"columns":["v"],"types":["text"],"values":[["d"]]}]}"#
    );
    // The first failing statement is the string's result; with `transaction`
    // nothing of the request commits.
    let (_, body) = node.post(
        "/db/execute?transaction",
        &json!(["INSERT INTO m(v) VALUES ('e'); INSERT INTO nope VALUES (1)"]),
    );
    assert_eq!(body["results"][0]["error"], "no such table: nope");
    assert_eq!(node.scalar("SELECT count(*) FROM m"), 3);
}

#[test]
fn reads_in_write_requests_and_returning_show_rows() {
    let node = node();
    let (_, body) = node.post(
        "/db/request",
        &json!([
            "CREATE TABLE u (id INTEGER PRIMARY KEY, v TEXT)",
            ["INSERT INTO u(v) VALUES (?), (?)", "a", "b"],
            "SELECT v FROM u ORDER BY id DESC"
        ]),
    );
    assert_eq!(body["results"][1]["rows_affected"], 2);
    assert_eq!(body["results"][2]["values"], json!([["b"], ["a"]]));
    let (_, body) = node.post(
        "/db/execute",
        &json!([
            "INSERT INTO u(v) VALUES ('c') RETURNING id, v",
            "SELECT v FROM u"
        ]),
    );
    assert_eq!(body["results"][0]["values"], json!([[3, "c"]]));
    // rqlite runs a SELECT on /db/execute but shows no rows for it.
    assert!(body["results"][1].get("values").is_none(), "{body}");
}
