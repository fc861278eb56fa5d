//! The arbitrator (Galera's garbd): two data nodes and an arbitrator
//! survive the loss of either data node; the arbitrator keeps no database,
//! refuses clients and bootstrap, and never leads.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::cluster::{tail, Cluster};
use common::*;
use serde_json::json;

/// Small snapshot and log settings, so the arbitrator that joins late has
/// to take a snapshot from the leader (and drop its data).
const COMPACT_LOG: &str = "[storage]\nsnapshot_every_entries = 10\nlog_retain_entries = 2\n";

const ARBITRATOR: usize = 2;

/// Write rows `from..to` through node `i`; every acknowledged id is kept.
fn write_rows(c: &Cluster, i: usize, ids: std::ops::Range<i64>, acked: &mut BTreeSet<i64>) {
    for id in ids {
        c.nodes[i].execute_ok(json!([["INSERT INTO t(id, v) VALUES(?, ?)", id, "x"]]));
        acked.insert(id);
    }
}

fn ids_on(c: &Cluster, i: usize) -> BTreeSet<i64> {
    c.nodes[i]
        .query_rows("SELECT id FROM t ORDER BY id")
        .iter()
        .map(|r| r[0].as_i64().expect("integer id"))
        .collect()
}

fn leader_of(c: &Cluster, i: usize) -> Option<String> {
    c.status(i)["cluster"]["leader"].as_str().map(String::from)
}

/// Wait until node `i` names a leader, and return it.
fn wait_leader(c: &Cluster, i: usize, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(l) = leader_of(c, i) {
            return l;
        }
        assert!(
            Instant::now() < deadline,
            "{} names no leader; log tail:\n{}",
            c.nodes[i].name,
            tail(&c.nodes[i].log(), 30)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn assert_no_database(c: &Cluster, i: usize) {
    let dir = c.nodes[i].data_dir();
    for f in ["db.sqlite", "db.sqlite-wal", "db.sqlite-shm"] {
        assert!(
            !dir.join(f).exists(),
            "the arbitrator must hold no database, but {} exists",
            dir.join(f).display()
        );
    }
    assert!(
        dir.join("arbitrator.state").exists(),
        "the arbitrator keeps its applied position in arbitrator.state"
    );
}

#[test]
fn two_data_nodes_and_an_arbitrator_survive_the_loss_of_either_data_node() {
    let mut c = Cluster::new(3, COMPACT_LOG);
    c.nodes[0].start(&["--bootstrap"]);
    c.nodes[0].wait_primary(Duration::from_secs(30));
    c.nodes[1].start(&[]);
    c.wait_size(&[0, 1], 2, Duration::from_secs(60));
    c.nodes[0].execute_ok(json!(["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"]));
    let mut acked = BTreeSet::new();
    // Past several snapshots: the log no longer reaches back to index 1.
    write_rows(&c, 0, 0..40, &mut acked);

    c.nodes[ARBITRATOR].start(&["--arbitrator"]);
    c.wait_size(&[0, 1, ARBITRATOR], 3, Duration::from_secs(60));
    let log = c.nodes[ARBITRATOR].log();
    assert!(
        log.contains("took the position of a snapshot and dropped its data"),
        "the late arbitrator catches up by a snapshot whose data it drops:\n{}",
        tail(&log, 40)
    );
    assert_no_database(&c, ARBITRATOR);

    // It shows as an arbitrator, here and in --show-cluster-status.
    assert_eq!(c.status(ARBITRATOR)["cluster"]["arbitrator"], true);
    let out = c.nodes[ARBITRATOR].cli(&["--show-cluster-status"]);
    let table = stdout(&out);
    assert!(
        table
            .lines()
            .any(|l| l.contains("quorate_role") && l.contains("arbitrator")),
        "--show-cluster-status on the arbitrator names its role:\n{table}{}",
        stderr(&out)
    );
    assert_eq!(c.status(0)["cluster"]["arbitrator"], false);

    // Lose each data node in turn (the leader each time: it never moves to
    // the arbitrator), keep writing on the survivor, bring the dead one back.
    let mut next_id = 40;
    for round in 0..2 {
        let leader = wait_leader(&c, 0, Duration::from_secs(30));
        assert_ne!(leader, c.nodes[ARBITRATOR].name, "round {round}");
        let victim = c
            .nodes
            .iter()
            .position(|n| n.name == leader)
            .expect("leader is one of the nodes");
        let survivor = 1 - victim;
        c.nodes[victim].kill();

        let deadline = Instant::now() + Duration::from_secs(60);
        let new_leader = loop {
            let l = leader_of(&c, survivor);
            if l.as_deref() == Some(c.nodes[survivor].name.as_str()) {
                break l;
            }
            assert_ne!(
                l.as_deref(),
                Some(c.nodes[ARBITRATOR].name.as_str()),
                "the arbitrator must never lead"
            );
            assert!(
                Instant::now() < deadline,
                "round {round}: {} did not take the lead; log tail:\n{}",
                c.nodes[survivor].name,
                tail(&c.nodes[survivor].log(), 40)
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while leader_of(&c, ARBITRATOR) != new_leader {
            assert!(
                Instant::now() < deadline,
                "round {round}: the arbitrator does not follow {new_leader:?}: {:?}",
                leader_of(&c, ARBITRATOR)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        c.nodes[survivor].wait_primary(Duration::from_secs(30));
        write_rows(&c, survivor, next_id..next_id + 20, &mut acked);
        next_id += 20;

        c.nodes[victim].start(&[]);
        c.wait_size(&[0, 1, ARBITRATOR], 3, Duration::from_secs(60));
        c.wait_converged(&[0, 1], "t", Duration::from_secs(60));
        for i in [0, 1] {
            assert_eq!(
                ids_on(&c, i),
                acked,
                "round {round}: {} must hold every acknowledged row",
                c.nodes[i].name
            );
        }
        assert_no_database(&c, ARBITRATOR);
    }
    let log = c.nodes[ARBITRATOR].log();
    assert!(
        !log.contains("leader changed: node-3"),
        "the arbitrator led at some point:\n{}",
        tail(&log, 60)
    );

    // Clients are refused with a clear error; /status works.
    let (code, body) =
        c.nodes[ARBITRATOR].post("/db/execute", &json!([["INSERT INTO t(id) VALUES(1000)"]]));
    assert_eq!(code, 503, "{body}");
    assert!(body.to_string().contains("arbitrator"), "{body}");
    let (code, body) = c.nodes[ARBITRATOR].post("/db/query", &json!(["SELECT 1"]));
    assert_eq!(code, 503, "{body}");
    assert!(body.to_string().contains("holds no database"), "{body}");
    let (code, _) = c.nodes[ARBITRATOR].get("/readyz");
    assert_eq!(code, 503, "an arbitrator is never ready for clients");
    let (code, _) = c.nodes[ARBITRATOR].get("/status");
    assert_eq!(code, 200);

    // Bootstrap through the running arbitrator is refused with the reason.
    let out = c.nodes[ARBITRATOR].cli(&["--bootstrap-node"]);
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(!out.status.success(), "{all}");
    assert!(
        all.contains("arbitrator") && all.contains("holds no database"),
        "{all}"
    );
    assert_no_database(&c, ARBITRATOR);

    // Its restart resumes from arbitrator.state and rejoins as it was.
    c.nodes[ARBITRATOR].kill();
    c.nodes[ARBITRATOR].start(&["--arbitrator"]);
    c.wait_size(&[0, 1, ARBITRATOR], 3, Duration::from_secs(60));
    write_rows(&c, 0, next_id..next_id + 5, &mut acked);
    next_id += 5;
    assert_eq!(ids_on(&c, 1), acked);
    assert_no_database(&c, ARBITRATOR);

    // A graceful stop of the leader hands leadership to the other data
    // node, never to the arbitrator, and leaves: two members remain.
    let leader = wait_leader(&c, 0, Duration::from_secs(30));
    let leaving = c.nodes.iter().position(|n| n.name == leader).unwrap();
    let last = 1 - leaving;
    assert!(c.nodes[leaving].stop().success());
    c.wait_size(&[last, ARBITRATOR], 2, Duration::from_secs(30));
    assert_eq!(
        leader_of(&c, ARBITRATOR).as_deref(),
        Some(c.nodes[last].name.as_str())
    );
    write_rows(&c, last, next_id..next_id + 5, &mut acked);
    // The last data member does not leave beside the arbitrator, and it is
    // the one safe to bootstrap: arbitrators do not count.
    assert!(c.nodes[last].stop().success());
    assert!(
        c.nodes[last]
            .log()
            .contains("the last data member does not leave"),
        "{}",
        tail(&c.nodes[last].log(), 20)
    );
    assert_eq!(c.safe_line(last), "safe_to_bootstrap: 1");
    assert_eq!(c.safe_line(ARBITRATOR), "safe_to_bootstrap: 0");
    // Started again, it leads with the arbitrator's vote, its data whole.
    c.nodes[last].start(&[]);
    c.wait_size(&[last, ARBITRATOR], 2, Duration::from_secs(60));
    assert_eq!(ids_on(&c, last), acked);
}

#[test]
fn bootstrap_of_a_stopped_arbitrator_is_refused_with_the_reason() {
    let node = TestNode::new("arb", "");
    let text = std::fs::read_to_string(&node.config_path).unwrap();
    std::fs::write(&node.config_path, format!("arbitrator = true\n{text}")).unwrap();
    let out = node.cli(&["--bootstrap-node"]);
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(3), "{all}");
    assert!(
        all.contains("this node is an arbitrator") && all.contains("Bootstrap a data node"),
        "{all}"
    );
    assert!(!node.data_dir().join("db.sqlite").exists());
}

#[test]
fn a_data_dir_keeps_its_role() {
    // A data node's directory cannot start as an arbitrator: its database would sit stale.
    let mut node = TestNode::new("node-a", "");
    node.start(&["--bootstrap"]);
    node.wait_primary(Duration::from_secs(30));
    let status = node.stop();
    assert!(status.success(), "{status}: {}", tail(&node.log(), 20));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_quorated"))
        .arg("--config")
        .arg(&node.config_path)
        .arg("--arbitrator")
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("configured as an arbitrator") && err.contains("db.sqlite"),
        "{err}"
    );

    // And an arbitrator's directory cannot start as a data node.
    let mut arb = TestNode::new("arb", "");
    arb.start(&["--arbitrator"]);
    assert_no_database_dir(&arb);
    let status = arb.stop();
    assert!(status.success(), "{status}: {}", tail(&arb.log(), 20));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_quorated"))
        .arg("--config")
        .arg(&arb.config_path)
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("belongs to an arbitrator"), "{err}");
}

fn assert_no_database_dir(node: &TestNode) {
    let dir = node.data_dir();
    assert!(!dir.join("db.sqlite").exists(), "{}", dir.display());
}

/// A forced bootstrap of the surviving data node starts a new incarnation.
/// The arbitrator of the old one is fenced when it returns: it keeps its
/// old state aside, rejoins the new incarnation as a new member (still an
/// arbitrator, with no database), and votes there again.
#[test]
fn an_arbitrator_of_an_older_incarnation_is_fenced_and_rejoins_as_a_new_member() {
    let mut c = Cluster::new(3, "");
    c.nodes[0].start(&["--bootstrap"]);
    c.nodes[0].wait_primary(Duration::from_secs(30));
    c.nodes[1].start(&[]);
    c.nodes[ARBITRATOR].start(&["--arbitrator"]);
    c.wait_size(&[0, 1, ARBITRATOR], 3, Duration::from_secs(60));
    c.nodes[0].execute_ok(json!(["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"]));
    let mut acked = BTreeSet::new();
    write_rows(&c, 0, 0..5, &mut acked);
    let old_id = c.status(ARBITRATOR)["cluster"]["gcomm_uuid"].clone();
    assert!(old_id.is_string(), "{old_id}");

    c.nodes[1].kill();
    c.nodes[ARBITRATOR].kill();
    let deadline = Instant::now() + Duration::from_secs(20);
    while c.nodes[0].get("/readyz").0 != 503 {
        assert!(Instant::now() < deadline, "node-1 stayed Primary alone");
        std::thread::sleep(Duration::from_millis(100));
    }
    c.force_bootstrap(0);
    c.nodes[0].wait_primary(Duration::from_secs(10));
    write_rows(&c, 0, 5..10, &mut acked);

    c.nodes[ARBITRATOR].start(&["--arbitrator"]);
    c.wait_size(&[0, ARBITRATOR], 2, Duration::from_secs(90));
    // A voter counts in the size as soon as the membership entry reaches
    // it; the entries that carry the new incarnation are applied after.
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.status(ARBITRATOR)["cluster"]["incarnation"] != 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = c.nodes[ARBITRATOR].log();
    assert!(
        log.contains("FENCED at start") && log.contains("rejoins"),
        "{}",
        tail(&log, 40)
    );
    let arb = &c.status(ARBITRATOR)["cluster"];
    assert_eq!(arb["arbitrator"], true, "{arb}");
    assert_eq!(arb["incarnation"], 1, "{arb}");
    assert_ne!(arb["gcomm_uuid"], old_id, "a new member has a new node id");
    assert_no_database(&c, ARBITRATOR);
    let saved: Vec<_> = std::fs::read_dir(c.nodes[ARBITRATOR].data_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("fenced-"))
        })
        .collect();
    assert_eq!(
        saved.len(),
        1,
        "the old state is kept aside once: {saved:?}"
    );
    assert!(saved[0].join("arbitrator.state").exists(), "{saved:?}");

    // The other data node returns (fenced too, by SST), and the arbitrator
    // votes in the new incarnation: the cluster survives node-1's loss.
    c.nodes[1].start(&[]);
    c.wait_size(&[0, 1, ARBITRATOR], 3, Duration::from_secs(90));
    c.wait_converged(&[0, 1], "t", Duration::from_secs(60));
    c.nodes[0].kill();
    let deadline = Instant::now() + Duration::from_secs(30);
    while leader_of(&c, 1).as_deref() != Some(c.nodes[1].name.as_str()) {
        assert_ne!(
            leader_of(&c, 1).as_deref(),
            Some(c.nodes[ARBITRATOR].name.as_str()),
            "the arbitrator never leads"
        );
        assert!(
            Instant::now() < deadline,
            "node-2 did not take the lead with the arbitrator's vote:\n{}",
            tail(&c.nodes[1].log(), 30)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    c.nodes[1].wait_primary(Duration::from_secs(30));
    write_rows(&c, 1, 10..15, &mut acked);
    assert_eq!(ids_on(&c, 1), acked);
}
