//! Forced bootstrap of a running member and the fencing of the older
//! incarnation (DESIGN.md §4, §5 "two nodes killed" and "forced bootstrap
//! while others were alive"), with real processes and real signals.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use nix::sys::signal::Signal;
use serde_json::{json, Value};

fn cluster_field(c: &Cluster, i: usize, key: &str) -> Value {
    c.status(i)["cluster"][key].clone()
}

fn incarnation(c: &Cluster, i: usize) -> u64 {
    cluster_field(c, i, "incarnation")
        .as_u64()
        .unwrap_or(u64::MAX)
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out waiting until {what}");
}

fn saved_dirs(data_dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(data_dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("fenced-"))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn the_survivor_of_two_crashed_nodes_is_made_primary_by_a_forced_bootstrap() {
    let mut c = Cluster::start(3, "");
    c.nodes[0].execute_ok(json!(["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"]));
    for i in 0..10 {
        c.nodes[i % 3].execute_ok(json!([["INSERT INTO t VALUES(?, 'before')", i as i64]]));
    }
    c.wait_synced(&[0, 1, 2], Duration::from_secs(20));
    let uuid = cluster_field(&c, 0, "cluster_state_uuid");
    assert_eq!(incarnation(&c, 0), 0);

    c.nodes[1].kill();
    c.nodes[2].kill();
    wait_until(
        "the survivor is non-Primary",
        Duration::from_secs(20),
        || c.nodes[0].get("/readyz").0 == 503,
    );
    // The node's event logger samples its state every 100 ms; the state
    // lasts until the operator acts, so the line comes.
    wait_until(
        "the log says the survivor lost Primary",
        Duration::from_secs(5),
        || c.nodes[0].log().contains("lost Primary"),
    );

    c.force_bootstrap(0);
    // Primary at once, alone, in a new incarnation of the same cluster.
    c.nodes[0].wait_primary(Duration::from_secs(10));
    assert_eq!(
        incarnation(&c, 0),
        1,
        "a forced bootstrap starts a new incarnation"
    );
    assert_eq!(cluster_field(&c, 0, "cluster_state_uuid"), uuid);
    assert_eq!(cluster_field(&c, 0, "cluster_size"), json!(1));
    assert_eq!(c.safe_line(0), "safe_to_bootstrap: 1");
    // The log tells the story in the words an operator looks for; the
    // event logger's line may follow the status by its 100 ms.
    wait_until(
        "the log says it became Primary after it lost Primary",
        Duration::from_secs(5),
        || {
            let log = c.nodes[0].log();
            let lost = log.find("lost Primary");
            lost.is_some() && log.rfind("became Primary") > lost
        },
    );
    let log = c.nodes[0].log();
    assert!(log.contains("leader changed"), "{log}");
    for i in 10..15 {
        c.nodes[0].execute_ok(json!([["INSERT INTO t VALUES(?, 'after')", i as i64]]));
    }

    // The crashed nodes come back: they are of the old incarnation, so they
    // keep what they had aside and rejoin the new one by SST.
    c.nodes[1].start(&[]);
    c.nodes[2].start(&[]);
    c.wait_size(&[0, 1, 2], 3, Duration::from_secs(90));
    c.wait_converged(&[0, 1, 2], "t", Duration::from_secs(60));
    for i in 0..3 {
        assert_eq!(c.nodes[i].scalar("SELECT COUNT(*) FROM t"), 15, "node {i}");
        assert_eq!(incarnation(&c, i), 1, "node {i} is in the new incarnation");
    }
    for i in 1..3 {
        let log = c.nodes[i].log();
        assert!(
            log.contains("FENCED at start"),
            "node {i} says it was fenced:\n{log}"
        );
        assert!(log.contains("rejoins"), "node {i}:\n{log}");
        let saved = saved_dirs(&c.nodes[i].data_dir());
        assert_eq!(saved.len(), 1, "node {i} kept its old data: {saved:?}");
        assert!(saved[0].join("db.sqlite").exists());
        assert!(saved[0].join("writesets-after-fork.jsonl").exists());
        let shown = cluster_field(&c, i, "fence_saved");
        assert_eq!(
            shown.as_str().map(PathBuf::from),
            Some(saved[0].clone()),
            "the status names the saved directory"
        );
    }
}

#[test]
fn a_forced_bootstrap_while_the_others_were_alive_fences_them_and_keeps_their_writes() {
    let mut c = Cluster::start(3, "");
    c.nodes[0].execute_ok(json!(["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"]));
    c.nodes[0].execute_ok(json!([["INSERT INTO t VALUES(1, 'common')"]]));
    c.wait_synced(&[0, 1, 2], Duration::from_secs(20));

    // node-1 only looks alone: the others are paused, not dead.
    c.nodes[1].signal(Signal::SIGSTOP);
    c.nodes[2].signal(Signal::SIGSTOP);
    wait_until("node-1 is non-Primary", Duration::from_secs(20), || {
        c.nodes[0].get("/readyz").0 == 503
    });
    c.force_bootstrap(0);
    c.nodes[0].wait_primary(Duration::from_secs(10));
    c.nodes[0].execute_ok(json!([["INSERT INTO t VALUES(2, 'new incarnation')"]]));

    // Now node-1 is the one that is away, and the other two are a majority of
    // the old membership: they go on and acknowledge a write of their own.
    c.nodes[0].signal(Signal::SIGSTOP);
    c.nodes[1].signal(Signal::SIGCONT);
    c.nodes[2].signal(Signal::SIGCONT);
    wait_until(
        "node-2 serves the old incarnation",
        Duration::from_secs(30),
        || c.nodes[1].get("/readyz").0 == 200,
    );
    c.nodes[1].execute_ok(json!([["INSERT INTO t VALUES(3, 'old incarnation')"]]));

    // They meet: the old incarnation is fenced, never merged.
    c.nodes[0].signal(Signal::SIGCONT);
    for i in 1..3 {
        wait_until(
            &format!("node {i} reports the fence"),
            Duration::from_secs(30),
            || cluster_field(&c, i, "fenced").is_string(),
        );
        let (code, body) =
            c.nodes[i].post("/db/execute", &json!([["INSERT INTO t VALUES(9, 'x')"]]));
        assert_ne!(code, 200, "a fenced node refuses writes: {body}");
    }
    c.nodes[0].wait_primary(Duration::from_secs(10));
    assert_eq!(
        c.nodes[0].scalar("SELECT COUNT(*) FROM t WHERE id = 3"),
        0,
        "no silent merge"
    );
    assert!(c.nodes[1].log().contains("FENCED"), "{}", c.nodes[1].log());

    // --restart-node: the old data is kept aside, with the write-set the new
    // incarnation lacks, and the node rejoins by SST.
    for i in 1..3 {
        assert!(
            c.nodes[i].stop().success(),
            "a fenced node stops gracefully"
        );
    }
    for i in 1..3 {
        c.nodes[i].start(&[]);
    }
    c.wait_size(&[0, 1, 2], 3, Duration::from_secs(90));
    c.wait_converged(&[0, 1, 2], "t", Duration::from_secs(60));
    let saved = saved_dirs(&c.nodes[1].data_dir());
    assert_eq!(saved.len(), 1, "{saved:?}");
    let writesets = std::fs::read_to_string(saved[0].join("writesets-after-fork.jsonl"))
        .expect("saved write-sets");
    assert!(
        writesets.contains("old incarnation"),
        "the acknowledged write of the old incarnation is kept in the file:\n{writesets}"
    );
    let old_db = saved[0].join("db.sqlite");
    assert!(old_db.exists());
    assert_eq!(c.nodes[1].scalar("SELECT COUNT(*) FROM t"), 2);
}
