//! A 3-node cluster: writes on every node at once end identical on all
//! three, and every acknowledged write is there.

mod common;

use std::sync::Mutex;
use std::time::Duration;

use common::cluster::Cluster;
use serde_json::json;

#[test]
fn three_nodes_accept_writes_everywhere_and_converge() {
    let c = Cluster::start(3, "");
    c.nodes[1].execute_ok(json!([
        "CREATE TABLE t(id INTEGER PRIMARY KEY, node INTEGER NOT NULL, v TEXT NOT NULL)"
    ]));
    // The table must exist everywhere before clients write to every node:
    // a node executes a transaction on its own copy (as Galera does without
    // wsrep_sync_wait), and a loaded node may apply the CREATE a moment later.
    c.wait_synced(&[0, 1, 2], Duration::from_secs(20));

    let acked: Mutex<Vec<i64>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for client in 0..16i64 {
            let (c, acked) = (&c, &acked);
            s.spawn(move || {
                let node = &c.nodes[(client % 3) as usize];
                for i in 0..100i64 {
                    let id = client * 10_000 + i;
                    let resp = node.execute_ok(json!([[
                        "INSERT INTO t(id, node, v) VALUES(?, ?, ?)",
                        id,
                        client % 3,
                        format!("c{client} i{i}")
                    ]]));
                    assert_eq!(resp["results"][0]["rows_affected"], 1, "{resp}");
                    acked.lock().unwrap().push(id);
                }
            });
        }
    });
    let acked = acked.into_inner().unwrap();
    assert_eq!(acked.len(), 1600);

    let seqno = c.wait_converged(&[0, 1, 2], "t", Duration::from_secs(30));
    // Bootstrap is 0, CREATE TABLE 1, then one seqno per insert.
    assert_eq!(seqno, 1601, "every write-set ordered exactly once");
    for node in &c.nodes {
        assert_eq!(
            node.scalar("SELECT COUNT(*) FROM t"),
            1600,
            "{} lacks rows",
            node.name
        );
        let status = node.cli(&["--show-cluster-status", "--json"]);
        let st: serde_json::Value = serde_json::from_slice(&status.stdout).expect("json");
        assert_eq!(st["wsrep_cluster_size"], 3, "{}: {st}", node.name);
        assert_eq!(st["wsrep_cluster_status"], "Primary");
        assert_eq!(
            st["quorate_safe_to_bootstrap"], 0,
            "nobody is safe to bootstrap while 3 are members"
        );
        let g = common::read(&node.grastate_path());
        assert!(g.contains("safe_to_bootstrap: 0"), "{}: {g}", node.name);
    }
    // Linearizable reads work on a follower too.
    let (code, body) = c.nodes[2].post(
        "/db/query?level=linearizable",
        &json!(["SELECT COUNT(*) FROM t"]),
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["results"][0]["values"][0][0], 1600);
}

fn sync_waits(node: &common::TestNode) -> f64 {
    node.metric("quorate_sync_waits_total")
}

/// `replication.sync_wait_writes`: with the default, a write sent to one
/// node right after another node acknowledged a CREATE TABLE finds the
/// table, and each write first waits for the cluster (counted in
/// `quorate_sync_waits_total`); a node configured without it runs its
/// writes at once, never waits, and its writes replicate all the same.
#[test]
fn writes_wait_for_the_cluster_unless_sync_wait_writes_is_off() {
    let c = Cluster::new(3, "");
    let no_wait = &c.nodes[2];
    let text = std::fs::read_to_string(&no_wait.config_path).expect("config");
    assert!(text.contains("[replication]\n"), "{text}");
    std::fs::write(
        &no_wait.config_path,
        text.replacen(
            "[replication]\n",
            "[replication]\nsync_wait_writes = false\n",
            1,
        ),
    )
    .expect("config");
    let c = c.start_configured();
    let (creator, waiter, no_wait) = (&c.nodes[0], &c.nodes[1], &c.nodes[2]);
    assert_eq!(sync_waits(waiter), 0.0);

    for i in 0..10 {
        creator.execute_ok(json!([format!(
            "CREATE TABLE t{i}(id INTEGER PRIMARY KEY, v TEXT)"
        )]));
        let resp = waiter.execute_ok(json!([[
            format!("INSERT INTO t{i}(id, v) VALUES(1, ?)"),
            "from node-2"
        ]]));
        assert_eq!(resp["results"][0]["rows_affected"], 1, "{resp}");
    }
    assert!(
        sync_waits(waiter) >= 10.0,
        "node-2 waited {} times for 10 writes",
        sync_waits(waiter)
    );

    c.wait_synced(&[0, 1, 2], Duration::from_secs(20));
    for i in 0..10 {
        let resp = no_wait.execute_ok(json!([[
            format!("INSERT INTO t{i}(id, v) VALUES(2, ?)"),
            "from node-3"
        ]]));
        assert_eq!(resp["results"][0]["rows_affected"], 1, "{resp}");
    }
    assert_eq!(
        sync_waits(no_wait),
        0.0,
        "node-3 waited although sync_wait_writes = false"
    );
    for i in 0..10 {
        c.wait_converged(&[0, 1, 2], &format!("t{i}"), Duration::from_secs(20));
        for node in &c.nodes {
            assert_eq!(
                node.scalar(&format!("SELECT COUNT(*) FROM t{i}")),
                2,
                "{}",
                node.name
            );
        }
    }
    // SIGHUP turns the wait back on without a restart.
    let text = std::fs::read_to_string(&no_wait.config_path).expect("config");
    std::fs::write(
        &no_wait.config_path,
        text.replacen("sync_wait_writes = false\n", "", 1),
    )
    .expect("config");
    no_wait.signal(nix::sys::signal::Signal::SIGHUP);
    no_wait.wait_log("sync_wait_writes: false -> true", Duration::from_secs(20));
    let before = sync_waits(no_wait);
    no_wait.execute_ok(json!([[
        "INSERT INTO t0(id, v) VALUES(3, ?)",
        "from node-3"
    ]]));
    assert_eq!(
        sync_waits(no_wait),
        before + 1.0,
        "node-3 did not wait after SIGHUP turned the wait on"
    );
}
