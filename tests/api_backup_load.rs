//! `/db/backup` and `/db/load` on real clusters: a backup taken from one
//! node of one cluster and loaded into a node of another gives every node of
//! the second cluster the same data; a load larger than one write-set is
//! refused whole.

mod common;

use std::io::Read;
use std::time::Duration;

use serde_json::{json, Value};

use common::cluster::Cluster;
use common::{free_port, TestNode};

/// GET `path` and return the raw body (HTTP 200 required).
fn get_bytes(node: &TestNode, path: &str) -> Vec<u8> {
    let response = node
        .agent
        .get(&node.url(path))
        .call()
        .unwrap_or_else(|e| panic!("GET {path} from {}: {e}", node.name));
    let mut body = Vec::new();
    response
        .into_reader()
        .read_to_end(&mut body)
        .expect("read body");
    body
}

/// POST raw bytes to `/db/load`; returns (HTTP status, JSON body).
fn load(node: &TestNode, content_type: &str, data: &[u8]) -> (u16, Value) {
    let request = node
        .agent
        .post(&node.url("/db/load"))
        .set("Content-Type", content_type);
    match request.send_bytes(data) {
        Ok(r) => (r.status(), r.into_json().unwrap_or(Value::Null)),
        Err(ureq::Error::Status(code, r)) => (code, r.into_json().unwrap_or(Value::Null)),
        Err(e) => panic!("load into {}: {e}", node.name),
    }
}

fn dump(node: &TestNode) -> String {
    String::from_utf8(get_bytes(node, "/db/backup?fmt=sql")).expect("dump is UTF-8")
}

/// Tables, values of every kind, an AUTOINCREMENT counter, an index, a view
/// and a trigger, written through different nodes.
fn fill(cluster: &Cluster) {
    cluster.nodes[0].execute_ok(json!([
        "CREATE TABLE mail (id INTEGER PRIMARY KEY AUTOINCREMENT, rcpt TEXT NOT NULL, size REAL, body BLOB, sent DATETIME)",
        "CREATE TABLE counts (rcpt TEXT PRIMARY KEY, n INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID",
        "CREATE INDEX mail_rcpt ON mail(rcpt)",
        "CREATE VIEW big AS SELECT id, rcpt FROM mail WHERE size > 1000",
        "CREATE TRIGGER count_mail AFTER INSERT ON mail BEGIN \
           INSERT INTO counts(rcpt, n) VALUES (new.rcpt, 1) ON CONFLICT(rcpt) DO UPDATE SET n = n + 1; END"
    ]));
    cluster.wait_synced(&cluster.running(), Duration::from_secs(30));
    for (i, node) in cluster.nodes.iter().enumerate() {
        node.execute_ok(json!([
            [
                "INSERT INTO mail(rcpt, size, body, sent) VALUES (?, ?, ?, ?)",
                format!("user{i}@example.org"),
                1234.5,
                [0, 159, 146, 150],
                "2024-05-06 07:08:09"
            ],
            [
                "INSERT INTO mail(rcpt, size, body, sent) VALUES (?, ?, ?, ?)",
                "it's;\nodd",
                0.1,
                null,
                null
            ]
        ]));
    }
    cluster.nodes[0].execute_ok(json!(["DELETE FROM mail WHERE id = 1"]));
}

#[test]
fn a_backup_loaded_into_another_cluster_gives_every_node_the_same_data() {
    let source = Cluster::start(2, "");
    fill(&source);
    source.wait_converged(&[0, 1], "mail", Duration::from_secs(30));
    // From the node that did not run the last write: the backup waits for it.
    let sqlite_file = get_bytes(&source.nodes[1], "/db/backup");
    let expected = dump(&source.nodes[0]);
    assert!(sqlite_file.starts_with(b"SQLite format 3\0"));
    assert!(
        expected.contains("INSERT INTO sqlite_sequence VALUES('mail',4);"),
        "{expected}"
    );
    assert!(
        !expected.contains("_quorate_"),
        "internal tables in a backup:\n{expected}"
    );

    // The backup is a plain SQLite file with the client's tables only.
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &sqlite_file).unwrap();
    let conn = rusqlite::Connection::open(file.path()).unwrap();
    let names: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_schema ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        names,
        [
            "big",
            "count_mail",
            "counts",
            "mail",
            "mail_rcpt",
            "sqlite_sequence"
        ]
    );
    drop(conn);

    let target = Cluster::start(3, "");
    // What the target held before is replaced, not merged.
    target.nodes[0].execute_ok(json!([
        "CREATE TABLE old (id INTEGER PRIMARY KEY)",
        "CREATE TABLE mail (id INTEGER PRIMARY KEY, other TEXT)",
        "INSERT INTO mail VALUES (99, 'gone')"
    ]));
    let (code, body) = load(&target.nodes[2], "application/octet-stream", &sqlite_file);
    assert_eq!(code, 200, "{body}");
    let seqno = target.wait_synced(&[0, 1, 2], Duration::from_secs(30));
    assert!(seqno > 0);
    for node in &target.nodes {
        assert_eq!(
            dump(node),
            expected,
            "{} differs from the source",
            node.name
        );
    }
    // The trigger came back after the rows, and works.
    target.nodes[1].execute_ok(json!([
        "INSERT INTO mail(rcpt) VALUES ('user0@example.org')"
    ]));
    assert_eq!(
        target.nodes[1].query_rows("SELECT n FROM counts WHERE rcpt = 'user0@example.org'"),
        vec![json!([2])]
    );

    // The SQL dump restores the same way, gzipped or not.
    let (code, body) = load(&target.nodes[0], "text/plain", expected.as_bytes());
    assert_eq!(code, 200, "{body}");
    let compressed = get_bytes(&source.nodes[0], "/db/backup?fmt=sql&compress");
    let mut unzipped = String::new();
    flate2::read::GzDecoder::new(&compressed[..])
        .read_to_string(&mut unzipped)
        .unwrap();
    assert_eq!(unzipped, expected);
    let (code, body) = load(&target.nodes[1], "application/octet-stream", &compressed);
    assert_eq!(code, 200, "{body}");
    target.wait_synced(&[0, 1, 2], Duration::from_secs(30));
    for node in &target.nodes {
        assert_eq!(
            dump(node),
            expected,
            "{} differs after the SQL load",
            node.name
        );
    }
}

#[test]
fn a_load_is_refused_whole_when_it_cannot_be_one_write_set() {
    let repl = free_port();
    let mut node = TestNode::new(
        "small",
        &format!("[replication]\nlisten = \"127.0.0.1:{repl}\"\nmax_writeset_bytes = 4096\n"),
    );
    node.start(&["--bootstrap"]);
    node.wait_primary(Duration::from_secs(30));
    node.execute_ok(json!([
        "CREATE TABLE keep (id INTEGER PRIMARY KEY, v TEXT)",
        "INSERT INTO keep VALUES (1, 'kept')"
    ]));
    let before = dump(&node);

    let big = format!(
        "CREATE TABLE big (id INTEGER PRIMARY KEY, v TEXT);\nINSERT INTO big VALUES (1, '{}');\n",
        "x".repeat(10_000)
    );
    let (code, body) = load(&node, "text/plain", big.as_bytes());
    assert_eq!(code, 400, "{body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(error.starts_with("cannot load: "), "{error}");
    assert!(error.contains("max_writeset_bytes (4096 bytes)"), "{error}");

    for (data, want) in [
        (
            &b"CREATE TABLE nopk (a, b); INSERT INTO nopk VALUES (1, 2);"[..],
            "no PRIMARY KEY",
        ),
        (&b"CREATE TABLE ("[..], "the SQL dump does not run"),
        (
            &b"SQLite format 3\0 but not really a database"[..],
            "damaged",
        ),
        (
            &[0xff, 0xfe, 0x00][..],
            "neither a SQLite database file nor UTF-8",
        ),
    ] {
        let (code, body) = load(&node, "application/octet-stream", data);
        assert_eq!(code, 400, "{body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(error.contains(want), "{want}: {error}");
    }
    // Nothing of the refused loads arrived.
    assert_eq!(dump(&node), before);
}
