//! Graceful leave shrinks the cluster 3 -> 2 -> 1 with Galera's
//! safe_to_bootstrap values; leavers rejoin when restarted.

mod common;

use std::time::Duration;

use common::cluster::Cluster;
use serde_json::json;

#[test]
fn graceful_leave_shrinks_and_rejoin_grows() {
    let mut c = Cluster::start(3, "");
    c.nodes[0].execute_ok(json!(["CREATE TABLE t(id INTEGER PRIMARY KEY)"]));
    c.wait_synced(&c.running(), Duration::from_secs(20));
    c.nodes[0].execute_ok(json!(["INSERT INTO t VALUES(1)"]));

    // Stop the leader first: leadership moves, the cluster shrinks to 2.
    assert!(c.nodes[0].stop().success());
    c.wait_size(&[1, 2], 2, Duration::from_secs(20));
    assert_eq!(
        c.safe_line(0),
        "safe_to_bootstrap: 0",
        "a node that leaves a cluster with others in it is not safe"
    );
    c.nodes[1].execute_ok(json!(["INSERT INTO t VALUES(2)"]));

    assert!(c.nodes[1].stop().success());
    c.wait_size(&[2], 1, Duration::from_secs(20));
    assert_eq!(c.safe_line(1), "safe_to_bootstrap: 0");
    c.nodes[2].execute_ok(json!(["INSERT INTO t VALUES(3)"]));
    // The sole member becomes safe to bootstrap while it runs.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while c.safe_line(2) != "safe_to_bootstrap: 1" && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(c.safe_line(2), "safe_to_bootstrap: 1");

    // The leavers rejoin by themselves and catch up.
    c.nodes[0].start(&[]);
    c.nodes[1].start(&[]);
    c.wait_size(&[0, 1, 2], 3, Duration::from_secs(60));
    c.wait_converged(&[0, 1, 2], "t", Duration::from_secs(30));
    assert_eq!(c.nodes[0].scalar("SELECT COUNT(*) FROM t"), 3);
    c.nodes[0].execute_ok(json!(["INSERT INTO t VALUES(4)"]));
    c.wait_converged(&[0, 1, 2], "t", Duration::from_secs(30));
}
