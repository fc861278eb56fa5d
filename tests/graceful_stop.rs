//! grastate.dat across a graceful stop, the bootstrap guard and its banner.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

const BANNER_LINE: &str = "* Warning: It is not safe to bootstrap this node. Please bootstrap   *";

#[test]
fn graceful_stop_records_seqno_and_sole_member_is_safe() {
    let mut node = TestNode::new("node-a", "");
    node.start(&["--bootstrap"]);
    node.wait_primary(Duration::from_secs(20));
    node.execute_ok(json!(["CREATE TABLE t(id INTEGER PRIMARY KEY)"]));
    for i in 1..=4 {
        node.execute_ok(json!([["INSERT INTO t(id) VALUES(?)", i]]));
    }
    let status = node.stop();
    assert!(status.success(), "graceful stop exit status {status}");

    let g = read(&node.grastate_path());
    assert!(
        g.starts_with("# GALERA saved state\nversion: 2.1\nuuid:    "),
        "{g}"
    );
    assert!(
        g.contains("\nseqno:   5\n"),
        "graceful stop must record the last committed seqno:\n{g}"
    );
    assert!(
        g.contains("\nsafe_to_bootstrap: 1\n"),
        "the sole member is safe to bootstrap:\n{g}"
    );

    // The CLI reads the file while the daemon is stopped.
    let out = node.cli(&["--safe-to-bootstrap"]);
    assert_eq!(stdout(&out).trim(), "1", "{}", stderr(&out));

    // --bootstrap-node on the stopped, safe node starts it Primary with its data.
    let out = node.cli(&["--bootstrap-node"]);
    assert!(
        out.status.success(),
        "bootstrap after graceful stop: {}{}",
        stdout(&out),
        stderr(&out)
    );
    node.wait_primary(Duration::from_secs(30));
    assert_eq!(node.scalar("SELECT COUNT(*) FROM t"), 4);
    node.kill_by_status_pid();
}

#[test]
fn unsafe_node_is_refused_with_banner_and_file_unchanged() {
    let node = TestNode::new("node-b", "");
    std::fs::create_dir_all(node.data_dir()).unwrap();
    let unsafe_state = "# GALERA saved state\nversion: 2.1\nuuid:    8348d5ea-5664-11e7-8628-262d8bf5ad3d\nseqno:   7\nsafe_to_bootstrap: 0\n";
    std::fs::write(node.grastate_path(), unsafe_state).unwrap();

    let out = node.cli(&["--safe-to-bootstrap"]);
    assert_eq!(stdout(&out).trim(), "0");

    let out = node.cli(&["--bootstrap-node"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "refused bootstrap exits 3: {}{}",
        stdout(&out),
        stderr(&out)
    );
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(all.contains(BANNER_LINE), "banner missing:\n{all}");
    assert!(
        all.contains("* the node that was last removed from the cluster. To force          *"),
        "{all}"
    );
    assert_eq!(
        read(&node.grastate_path()),
        unsafe_state,
        "a refused bootstrap must not touch grastate.dat"
    );

    let out = node.cli(&["--force-safe-to-bootstrap"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = node.cli(&["--safe-to-bootstrap"]);
    assert_eq!(stdout(&out).trim(), "1");
    let g = read(&node.grastate_path());
    assert!(
        g.contains("seqno:   7\n") && g.contains("safe_to_bootstrap: 1\n"),
        "only the flag changes:\n{g}"
    );
}

#[test]
fn running_unsafe_node_refuses_bootstrap_through_the_socket() {
    let mut node = TestNode::new("node-c", "");
    std::fs::create_dir_all(node.data_dir()).unwrap();
    let unsafe_state = "# GALERA saved state\nversion: 2.1\nuuid:    8348d5ea-5664-11e7-8628-262d8bf5ad3d\nseqno:   -1\nsafe_to_bootstrap: 0\n";
    std::fs::write(node.grastate_path(), unsafe_state).unwrap();
    node.start(&[]);
    let out = node.cli(&["--bootstrap-node"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(stderr(&out).contains(BANNER_LINE) || stdout(&out).contains(BANNER_LINE));
    assert_eq!(read(&node.grastate_path()), unsafe_state);
    let (code, _) = node.get("/readyz");
    assert_eq!(code, 503, "a refused bootstrap leaves the node non-Primary");
}
