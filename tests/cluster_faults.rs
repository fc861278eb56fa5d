//! Crashes and joins in a cluster: IST after a short absence, SST after a
//! long one and for an empty joiner, loss of quorum and its return.

mod common;

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use common::cluster::Cluster;
use serde_json::json;

/// Small log retention so that a node away for a few hundred writes needs SST.
const SHORT_LOG: &str = "[storage]\nsnapshot_every_entries = 50\nlog_retain_entries = 20\n";

fn insert_range(node: &common::TestNode, from: i64, to: i64) {
    for id in from..to {
        node.execute_ok(json!([[
            "INSERT INTO t(id, v) VALUES(?, ?)",
            id,
            format!("v{id}")
        ]]));
    }
}

#[test]
fn killed_node_catches_up_by_ist() {
    let mut c = Cluster::start(3, "");
    c.nodes[0].execute_ok(json!(["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"]));
    c.wait_synced(&c.running(), Duration::from_secs(20));
    insert_range(&c.nodes[0], 0, 20);
    c.wait_converged(&[0, 1, 2], "t", Duration::from_secs(20));
    c.nodes[2].kill();
    c.wait_size(&[0, 1], 3, Duration::from_secs(10)); // membership unchanged by a crash
    insert_range(&c.nodes[1], 20, 60);
    c.nodes[2].start(&[]);
    c.wait_converged(&[0, 1, 2], "t", Duration::from_secs(30));
    assert_eq!(c.nodes[2].scalar("SELECT COUNT(*) FROM t"), 60);
    let log = c.nodes[2].log();
    assert!(
        !log.contains("SST: receiving"),
        "a short absence must be caught up from the log (IST), not SST:\n{}",
        common::cluster::tail(&log, 40)
    );
}

#[test]
fn empty_joiner_gets_sst_while_writes_go_on() {
    let mut c = Cluster::new(4, SHORT_LOG);
    c.nodes[0].start(&["--bootstrap"]);
    c.nodes[0].wait_primary(Duration::from_secs(30));
    c.nodes[1].start(&[]);
    c.nodes[2].start(&[]);
    c.wait_size(&[0, 1, 2], 3, Duration::from_secs(60));
    c.nodes[0].execute_ok(json!(["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"]));
    c.wait_synced(&c.running(), Duration::from_secs(20));

    // With every member up the leader compacts its log past what it keeps.
    insert_range(&c.nodes[0], 0, 300);
    c.wait_converged(&[0, 1, 2], "t", Duration::from_secs(60));

    // An empty fourth node joins while a client keeps writing.
    let stop = AtomicBool::new(false);
    let next = AtomicI64::new(1000);
    let acked: Mutex<Vec<i64>> = Mutex::new(Vec::new());
    let (head, joiner) = c.nodes.split_at_mut(3);
    std::thread::scope(|s| {
        let (c0, stop2, next2, acked2) = (&head[0], &stop, &next, &acked);
        s.spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                let id = next2.fetch_add(1, Ordering::Relaxed);
                c0.execute_ok(json!([[
                    "INSERT INTO t(id, v) VALUES(?, ?)",
                    id,
                    "during join"
                ]]));
                acked2.lock().unwrap().push(id);
            }
        });
        joiner[0].start(&[]);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !(joiner[0].get("/readyz").0 == 200
            && head[0].get("/status").1["cluster"]["cluster_size"] == 4)
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the fourth node did not join:\n{}",
                common::cluster::tail(&joiner[0].log(), 30)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        stop.store(true, Ordering::Relaxed);
    });
    let seqno = c.wait_converged(&[0, 1, 2, 3], "t", Duration::from_secs(60));
    assert!(seqno > 300);
    assert!(
        c.nodes[3].log().contains("SST: receiving"),
        "the empty joiner is seeded by SST"
    );
    let acked = acked.into_inner().unwrap();
    assert!(!acked.is_empty());
    for id in acked {
        assert_eq!(
            c.nodes[3].query_rows_level(&format!("SELECT COUNT(*) FROM t WHERE id = {id}"), "none"),
            vec![json!([1])]
        );
    }
}

#[test]
fn two_of_three_killed_survivor_refuses_until_majority_returns() {
    let mut c = Cluster::start(3, "");
    c.nodes[0].execute_ok(json!(["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"]));
    c.wait_synced(&c.running(), Duration::from_secs(20));
    insert_range(&c.nodes[2], 0, 10);
    c.wait_converged(&[0, 1, 2], "t", Duration::from_secs(20));
    c.nodes[0].kill();
    c.nodes[1].kill();

    // The survivor drops out of the primary component and says so.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (code, _) = c.nodes[2].get("/readyz");
        if code == 503 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "survivor still claims to be Primary"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, body) = c.nodes[2].post(
        "/db/execute",
        &json!([["INSERT INTO t(id, v) VALUES(?, ?)", 99, "x"]]),
    );
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["code"], "not_primary");
    assert_eq!(c.status(2)["cluster"]["cluster_status"], "non-Primary");
    // The operator asks the survivor what to do: it lists the peers and
    // names the node to bootstrap, warning that two peers did not answer.
    let out = c.nodes[2].cli(&["--show-cluster-status"]);
    let text = common::stdout(&out);
    assert!(text.contains("Peers (uuid:seqno:incarnation)"), "{text}");
    assert_eq!(text.matches("unreachable").count(), 2, "{text}");
    assert!(
        text.contains("Node to bootstrap: node-3") && text.contains("did not answer"),
        "{text}"
    );

    // One killed node comes back: a majority re-forms by itself.
    c.nodes[1].start(&[]);
    c.wait_size(&[1, 2], 3, Duration::from_secs(30));
    c.nodes[2].execute_ok(json!([["INSERT INTO t(id, v) VALUES(?, ?)", 100, "after"]]));
    c.wait_converged(&[1, 2], "t", Duration::from_secs(20));
    assert_eq!(c.nodes[1].scalar("SELECT COUNT(*) FROM t"), 11);
}

#[test]
fn five_nodes_survive_the_loss_of_two() {
    let mut c = Cluster::start(5, "");
    c.nodes[0].execute_ok(json!(["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"]));
    c.wait_synced(&c.running(), Duration::from_secs(20));
    c.nodes[3].kill();
    c.nodes[4].kill();
    for (i, node) in c.nodes.iter().take(3).enumerate() {
        node.execute_ok(json!([[
            "INSERT INTO t(id, v) VALUES(?, ?)",
            i as i64,
            "survivor"
        ]]));
    }
    c.wait_converged(&[0, 1, 2], "t", Duration::from_secs(20));
    assert_eq!(c.nodes[1].scalar("SELECT COUNT(*) FROM t"), 3);
}

#[test]
fn paused_leader_is_replaced_and_rejoins_without_divergence() {
    use nix::sys::signal::Signal;
    let c = Cluster::start(3, "");
    c.nodes[0].execute_ok(json!(["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"]));
    c.wait_synced(&[0, 1, 2], Duration::from_secs(20));
    let leader = c.status(0)["cluster"]["leader"]
        .as_str()
        .unwrap()
        .to_string();
    let li = c.nodes.iter().position(|n| n.name == leader).unwrap();
    let others: Vec<usize> = (0..3).filter(|&i| i != li).collect();

    // SIGSTOP: the leader is frozen, not dead (a long GC pause, a hung disk).
    c.nodes[li].signal(Signal::SIGSTOP);
    c.wait_size(&others, 3, Duration::from_secs(30));
    for i in 0..20 {
        c.nodes[others[i % 2]].execute_ok(json!([[
            "INSERT INTO t(id, v) VALUES(?, ?)",
            i as i64,
            "while paused"
        ]]));
    }
    // It wakes up believing it leads: it must step down and catch up, not diverge.
    c.nodes[li].signal(Signal::SIGCONT);
    c.wait_size(&[0, 1, 2], 3, Duration::from_secs(30));
    c.nodes[li].execute_ok(json!([["INSERT INTO t(id, v) VALUES(?, ?)", 100, "after"]]));
    c.wait_converged(&[0, 1, 2], "t", Duration::from_secs(30));
    assert_eq!(c.nodes[li].scalar("SELECT COUNT(*) FROM t"), 21);
}
