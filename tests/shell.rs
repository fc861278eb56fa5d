//! `quorate shell` against a real node, with statements piped on stdin:
//! writes and reads go through the API, results come back as aligned
//! tables, dot commands show the schema and the cluster, errors are plain
//! words on stderr and make the exit status 1; `--json` gives the API's
//! answers for scripts.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{stderr, stdout, TestNode, QUORATE};
use serde_json::Value;

fn shell(node: &str, args: &[&str], input: &str) -> Output {
    let mut child = Command::new(QUORATE)
        .args(["shell", "--node", node])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start quorate shell");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().expect("quorate shell output")
}

fn primary_node() -> TestNode {
    let mut node = TestNode::new("node-a", "");
    node.start(&["--bootstrap"]);
    node.wait_primary(Duration::from_secs(30));
    node
}

fn addr(node: &TestNode) -> String {
    format!("127.0.0.1:{}", node.api_port)
}

#[test]
fn piped_statements_write_read_and_describe_the_database() {
    let node = primary_node();
    let input = "\
CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT, note TEXT);
INSERT INTO users VALUES (1, 'ann', NULL), (22, 'it''s; bob', 'x');
-- a comment, then a statement over two lines and two on one line
SELECT id, name, note FROM users
  ORDER BY id; SELECT count(*) AS n FROM users;
.tables
.schema users
.status
.nodes
UPDATE users SET note = 'y' WHERE id = 22
";
    let out = shell(&addr(&node), &[], input);
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "exit {}\nstdout:\n{text}\nstderr:\n{}",
        out.status,
        stderr(&out)
    );
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
    let expected_rows = "\
+----+-----------+------+
| id | name      | note |
+----+-----------+------+
| 1  | ann       | NULL |
| 22 | it's; bob | x    |
+----+-----------+------+
2 rows
";
    assert!(text.contains(expected_rows), "{text}");
    assert!(text.contains("2 rows affected"), "{text}");
    assert!(text.contains("| n |\n+---+\n| 2 |"), "{text}");
    // .tables lists the user's table and hides quorate's own.
    assert!(text.lines().any(|l| l == "users"), "{text}");
    assert!(!text.contains("_quorate_"), "{text}");
    assert!(
        text.contains("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT, note TEXT);"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("| wsrep_cluster_status") && l.contains("Primary")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("| node-a ") && l.contains(&node.url(""))),
        "{text}"
    );
    // The last statement needed no `;` and really wrote.
    assert!(text.trim_end().ends_with("1 row affected"), "{text}");
    assert_eq!(
        node.query_rows("SELECT note FROM users WHERE id = 22"),
        [serde_json::json!(["y"])]
    );
}

#[test]
fn errors_are_plain_words_and_the_exit_status_says_so() {
    let node = primary_node();
    let input = "\
CREATE TABLE t (id INTEGER PRIMARY KEY);
SELEC 1;
INSERT INTO missing VALUES (1);
CREATE TABLE nopk (v TEXT);
INSERT INTO nopk VALUES ('x');
.frobnicate
INSERT INTO t VALUES (7);
";
    let out = shell(&addr(&node), &[], input);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert!(
        lines[0].starts_with("Error: ") && lines[0].contains("syntax error"),
        "{err}"
    );
    assert!(lines[1].contains("no such table: missing"), "{err}");
    assert!(lines[2].to_lowercase().contains("primary key"), "{err}");
    assert!(lines[3].contains("unknown command .frobnicate"), "{err}");
    assert!(err.contains("4 statement(s) or command(s) failed"), "{err}");
    // An error does not end the session: the last insert ran.
    assert_eq!(node.scalar("SELECT count(*) FROM t WHERE id = 7"), 1);

    // A node that is not there: said so, with the address.
    let port = common::free_port();
    let out = shell(&format!("127.0.0.1:{port}"), &[], "SELECT 1;\n");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("cannot reach the node at http://127.0.0.1:{port}")),
        "{err}"
    );
    // A malformed address is refused before anything is sent.
    let out = shell("no-port", &[], "SELECT 1;\n");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("HOST:PORT"), "{}", stderr(&out));
}

#[test]
fn json_mode_prints_the_api_answers_one_per_line() {
    let node = primary_node();
    let input = "\
CREATE TABLE kv (k TEXT PRIMARY KEY, v INTEGER);
INSERT INTO kv VALUES ('a', 1);
SELECT k, v FROM kv;
.status
";
    let out = shell(&addr(&node), &["--json"], input);
    assert!(out.status.success(), "{}", stderr(&out));
    let answers: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect();
    assert_eq!(answers.len(), 4, "{answers:?}");
    assert_eq!(answers[1]["results"][0]["rows_affected"], 1);
    assert_eq!(
        answers[2]["results"][0]["values"],
        serde_json::json!([["a", 1]])
    );
    assert_eq!(answers[3]["cluster"]["cluster_status"], "Primary");
}
