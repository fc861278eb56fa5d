//! Membership operations on real processes: `quorate --members`,
//! `quorate --remove-node` (force-leave of a dead member), a removed node
//! that comes back, replacing a node, and the two-node cluster whose
//! survivor explains why it stopped serving.

mod common;

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster::{make_node_cert, node_config, tail, Cluster};
use common::{stderr, stdout, TestNode};
use serde_json::{json, Value};

/// `quorate --members --json` on `node`: the rows.
fn members(node: &TestNode) -> Vec<Value> {
    let out = node.cli(&["--members", "--json"]);
    assert!(
        out.status.success(),
        "--members on {}: {}{}",
        node.name,
        stdout(&out),
        stderr(&out)
    );
    let v: Value = serde_json::from_str(&stdout(&out))
        .unwrap_or_else(|e| panic!("--members --json is not JSON ({e}): {}", stdout(&out)));
    v["members"].as_array().expect("members array").clone()
}

fn row<'a>(rows: &'a [Value], name: &str) -> Option<&'a Value> {
    rows.iter().find(|r| r["name"] == name)
}

/// Wait until `node` lists `name` in `state`; returns that row.
fn wait_member_state(node: &TestNode, name: &str, state: &str, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let rows = members(node);
        if let Some(r) = row(&rows, name).filter(|r| r["state"] == state) {
            return r.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{} never listed {name} as {state} within {timeout:?}: {rows:#?}",
            node.name
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `quorate --remove-node NAME` on `node` for a member that was just killed.
/// The leader may have heard from it less than the primary timeout ago (a
/// probe of a dead port can fail at once); then it is refused as alive, so
/// ask again for a while, on that refusal only.
fn remove_dead(node: &TestNode, name: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = node.cli(&["--remove-node", name]);
        if out.status.success() {
            return stdout(&out);
        }
        let err = stderr(&out);
        assert!(
            err.contains(&format!("{name} is alive")) && Instant::now() < deadline,
            "--remove-node {name} on {} failed: {err}\nlog:\n{}",
            node.name,
            tail(&node.log(), 30)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The CLI on `node` with `args`, which must fail: what it said.
fn refused(node: &TestNode, args: &[&str]) -> String {
    let out = node.cli(args);
    assert!(
        !out.status.success(),
        "{args:?} succeeded: {}",
        stdout(&out)
    );
    stderr(&out)
}

fn gcomm_uuid(node: &TestNode) -> String {
    let (_, s) = node.get("/status");
    s["cluster"]["gcomm_uuid"]
        .as_str()
        .expect("gcomm_uuid")
        .to_string()
}

#[test]
fn remove_a_killed_member_and_refuse_its_silent_return() {
    let mut c = Cluster::start(3, "");
    c.nodes[0].execute_ok(json!(["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"]));
    c.nodes[0].execute_ok(json!(["INSERT INTO t(v) VALUES('before')"]));
    let seqno = c.wait_synced(&[0, 1, 2], Duration::from_secs(20));

    // --members against reality: three alive voters at the same seqno, one leader.
    let rows = members(&c.nodes[1]);
    assert_eq!(rows.len(), 3, "{rows:#?}");
    for (i, n) in c.nodes.iter().enumerate() {
        let r = row(&rows, &n.name).unwrap_or_else(|| panic!("{} missing: {rows:#?}", n.name));
        assert_eq!(r["state"], "alive", "{r}");
        assert_eq!(r["role"], "voter", "{r}");
        assert_eq!(r["last_committed"], seqno, "{r}");
        assert_eq!(r["behind"], 0, "{r}");
        assert_eq!(r["node_id"], {
            // gcomm_uuid is the node id twice; the row carries it in decimal.
            let u = uuid::Uuid::parse_str(&gcomm_uuid(&c.nodes[i])).unwrap();
            u.as_u64_pair().0.to_string()
        });
        assert_eq!(
            r["api_addr"],
            format!("http://127.0.0.1:{}", n.api_port),
            "{r}"
        );
        assert_eq!(r["repl_addr"], format!("127.0.0.1:{}", c.repl_ports[i]));
    }
    assert_eq!(rows.iter().filter(|r| r["leader"] == true).count(), 1);
    let text = stdout(&c.nodes[0].cli(&["--members"]));
    assert!(text.starts_with("Node "), "{text}");
    assert!(
        text.lines().filter(|l| l.contains(" alive ")).count() == 3,
        "{text}"
    );

    // An alive member is not removed: it should be stopped gracefully.
    let err = refused(&c.nodes[0], &["--remove-node", "node-3"]);
    assert!(
        err.contains("node-3 is alive") && err.contains("stop it gracefully"),
        "{err}"
    );
    let err = refused(&c.nodes[0], &["--remove-node", "node-9"]);
    assert!(
        err.contains("no member is named \"node-9\"") && err.contains("node-1, node-2, node-3"),
        "{err}"
    );

    // node-3's hardware dies.
    let old_id = gcomm_uuid(&c.nodes[2]);
    c.nodes[2].kill();
    let failed = wait_member_state(&c.nodes[0], "node-3", "failed", Duration::from_secs(30));
    assert_eq!(failed["last_committed"], Value::Null, "{failed}");
    assert!(
        failed["note"]
            .as_str()
            .unwrap_or_default()
            .contains("--remove-node node-3"),
        "{failed}"
    );

    // Removed through a member that forwards to the leader, whichever it is.
    let said = remove_dead(&c.nodes[1], "node-3");
    assert!(said.contains("2 members remain"), "{said}");
    assert!(said.contains("cannot lose another member"), "{said}");
    c.wait_size(&[0, 1], 2, Duration::from_secs(20));
    c.nodes[0].execute_ok(json!([
        "INSERT INTO t(v) VALUES('after removal, via node-1')"
    ]));
    c.nodes[1].execute_ok(json!([
        "INSERT INTO t(v) VALUES('after removal, via node-2')"
    ]));
    c.wait_converged(&[0, 1], "t", Duration::from_secs(20));
    let left = wait_member_state(&c.nodes[1], "node-3", "left", Duration::from_secs(10));
    assert!(
        left["note"]
            .as_str()
            .unwrap_or_default()
            .contains("removed"),
        "{left}"
    );
    for i in [0, 1] {
        let rows = members(&c.nodes[i]);
        assert_eq!(
            rows.iter().filter(|r| r["state"] == "alive").count(),
            2,
            "{rows:#?}"
        );
    }
    // The leaving record is the same on the other member (it was told).
    assert!(c.nodes[0].data_dir().join("removed-members.json").exists());
    assert!(c.nodes[1].data_dir().join("removed-members.json").exists());

    // node-3 comes back with its old data: told it was removed, not readmitted.
    c.nodes[2].start(&[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, s) = c.nodes[2].get("/status");
        let reason = s["cluster"]["not_primary_reason"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if reason.contains("was removed from the cluster") {
            assert!(reason.contains("quorate --restart-node"), "{reason}");
            assert_eq!(s["cluster"]["ready"], false);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node-3 was not told it was removed: {}\nlog:\n{}",
            s["cluster"],
            tail(&c.nodes[2].log(), 30)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(c.nodes[2].log().contains("REMOVED: node-3"));
    assert!(c.nodes[2].data_dir().join("removed.json").exists());
    // Meanwhile the others still count two members.
    c.wait_size(&[0, 1], 2, Duration::from_secs(5));
    let (code, _) = c.nodes[2].post("/db/execute", &json!(["INSERT INTO t(v) VALUES('x')"]));
    assert_eq!(code, 503, "a removed node takes no writes");

    // Its restart keeps the old data aside and rejoins as a new member by SST.
    assert!(c.nodes[2].stop().success());
    c.nodes[2].start(&[]);
    c.wait_size(&[0, 1, 2], 3, Duration::from_secs(60));
    c.wait_converged(&[0, 1, 2], "t", Duration::from_secs(30));
    assert_eq!(c.nodes[2].scalar("SELECT COUNT(*) FROM t"), 3);
    assert_ne!(
        gcomm_uuid(&c.nodes[2]),
        old_id,
        "a new member has a new node id"
    );
    let saved: Vec<_> = std::fs::read_dir(c.nodes[2].data_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("removed-data-"))
        .collect();
    assert_eq!(saved.len(), 1, "old data kept aside once");
    assert!(saved[0].path().join("db.sqlite").exists());
    assert!(!c.nodes[2].data_dir().join("removed.json").exists());
    let rows = members(&c.nodes[0]);
    let node3: Vec<&Value> = rows.iter().filter(|r| r["name"] == "node-3").collect();
    assert_eq!(
        node3.len(),
        2,
        "the old node-3 left, the new one is alive: {rows:#?}"
    );
    assert!(node3.iter().any(|r| r["state"] == "alive"));
    assert!(node3.iter().any(|r| r["state"] == "left"));
}

/// A member that was down when a node was removed (so the leader could not
/// tell it) learns the removal from the log as it catches up, and refuses
/// that node's return by itself, whoever leads.
#[test]
fn a_member_down_during_a_removal_learns_it_from_the_log() {
    let mut c = Cluster::start(5, "");
    c.nodes[0].execute_ok(json!(["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"]));
    c.wait_synced(&[0, 1, 2, 3, 4], Duration::from_secs(30));

    // node-5 dies for good; node-4 is down meanwhile.
    c.nodes[4].kill();
    c.nodes[3].kill();
    let said = remove_dead(&c.nodes[0], "node-5");
    assert!(said.contains("4 members remain"), "{said}");
    assert!(
        !c.nodes[3].data_dir().join("removed-members.json").exists(),
        "node-4 was down: nobody could tell it directly"
    );

    // node-4 returns and catches up from the log.
    c.nodes[3].start(&[]);
    c.nodes[0].execute_ok(json!(["INSERT INTO t(v) VALUES('after the removal')"]));
    c.wait_converged(&[0, 1, 2, 3], "t", Duration::from_secs(60));
    assert!(
        !c.nodes[3].data_dir().join("removed-members.json").exists(),
        "node-4 heard of the removal only through the log"
    );

    // node-5 comes back with its old data and asks node-4 alone: node-4
    // knows, from its own database, that node-5 was removed.
    let config = std::fs::read_to_string(&c.nodes[4].config_path).unwrap();
    let only_node4 = format!("peers = [\"127.0.0.1:{}\"]", c.repl_ports[3]);
    let config: String = config
        .lines()
        .map(|l| {
            if l.starts_with("peers = ") {
                only_node4.clone()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&c.nodes[4].config_path, config).unwrap();
    c.nodes[4].start(&[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !c.nodes[4].log().contains("REMOVED: node-5") {
        assert!(
            Instant::now() < deadline,
            "node-5 was not told by node-4 that it was removed\nnode-5:\n{}\nnode-4:\n{}",
            tail(&c.nodes[4].log(), 30),
            tail(&c.nodes[3].log(), 30)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        c.nodes[3].log().contains("refused a join"),
        "{}",
        tail(&c.nodes[3].log(), 30)
    );
    c.wait_size(&[0, 1, 2, 3], 4, Duration::from_secs(10));
}

#[test]
fn replace_a_node_with_writes_flowing_and_members_tracks_states() {
    let mut c = Cluster::start(3, "");
    c.nodes[0].execute_ok(json!(["CREATE TABLE w(id INTEGER PRIMARY KEY, k INTEGER)"]));
    c.wait_synced(&[0, 1, 2], Duration::from_secs(20));

    // A steady writer on node-1 while the membership changes.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicI64::new(0));
    let writer = {
        let stop = stop.clone();
        let acked = acked.clone();
        let url = c.nodes[0].url("/db/execute");
        std::thread::spawn(move || {
            let agent = ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(30))
                .build();
            let mut k = 0;
            while !stop.load(Ordering::SeqCst) {
                k += 1;
                let body = json!([["INSERT INTO w(k) VALUES(?)", k]]);
                if let Ok(r) = agent.post(&url).send_json(body) {
                    let v: Value = r.into_json().unwrap_or_default();
                    if v["results"][0]["rows_affected"] == 1 {
                        acked.fetch_add(1, Ordering::SeqCst);
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    // The new machine, node-4, joins first.
    make_node_cert("node-4", c.tls.path(), c.tls.path());
    let port4 = common::free_port();
    let mut ports = c.repl_ports.clone();
    ports.push(port4);
    let mut n4 = TestNode::new(
        "node-4",
        &node_config("node-4", port4, &ports, c.tls.path(), ""),
    );
    n4.start(&[]);
    c.nodes.push(n4);
    c.repl_ports.push(port4);
    c.wait_size(&[0, 1, 2, 3], 4, Duration::from_secs(60));
    let r4 = wait_member_state(&c.nodes[0], "node-4", "alive", Duration::from_secs(10));
    assert_eq!(r4["role"], "voter");

    // Then the old node-3 goes (dead hardware) and is removed.
    c.nodes[2].kill();
    wait_member_state(&c.nodes[3], "node-3", "failed", Duration::from_secs(30));
    let said = remove_dead(&c.nodes[3], "node-3");
    assert!(said.contains("3 members remain"), "{said}");
    c.wait_size(&[0, 1, 3], 3, Duration::from_secs(20));
    wait_member_state(&c.nodes[0], "node-3", "left", Duration::from_secs(10));

    // A graceful leave shows as left, without a removal note.
    assert!(c.nodes[1].stop().success());
    c.wait_size(&[0, 3], 2, Duration::from_secs(20));
    let left = wait_member_state(&c.nodes[0], "node-2", "left", Duration::from_secs(10));
    assert!(
        left["note"]
            .as_str()
            .unwrap_or_default()
            .contains("left the membership"),
        "{left}"
    );

    let before = acked.load(Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(20);
    while acked.load(Ordering::SeqCst) < before + 5 {
        assert!(
            Instant::now() < deadline,
            "writes stopped flowing after the replacement"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    c.wait_converged(&[0, 3], "w", Duration::from_secs(30));
    let total = acked.load(Ordering::SeqCst);
    assert!(total > 0);
    assert!(
        c.nodes[3].scalar("SELECT COUNT(*) FROM w") >= total,
        "node-4 lacks acknowledged writes"
    );
    let rows = members(&c.nodes[3]);
    let states: Vec<(String, String)> = rows
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap_or_default().to_string(),
                r["state"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("node-1", "alive"),
        ("node-4", "alive"),
        ("node-2", "left"),
        ("node-3", "left"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(states, want, "{rows:#?}");
    // /nodes carries the same states for clients that ask.
    let (code, nodes) = c.nodes[0].get("/nodes?nonvoters&ver=2");
    assert_eq!(code, 200);
    let nodes = nodes["nodes"].as_array().expect("nodes").clone();
    let n2 = nodes.iter().find(|n| n["id"] == "node-2").expect("node-2");
    assert_eq!(n2["state"], "left");
    assert_eq!(n2["reachable"], false);
    let n4 = nodes.iter().find(|n| n["id"] == "node-4").expect("node-4");
    assert_eq!(n4["state"], "alive");
    assert_eq!(n4["voter"], true);
}

#[test]
fn two_node_survivor_explains_why_it_stops_serving() {
    let mut c = Cluster::start(2, "");
    c.nodes[0].execute_ok(json!(["CREATE TABLE t(id INTEGER PRIMARY KEY)"]));
    c.wait_synced(&[0, 1], Duration::from_secs(20));
    c.nodes[1].kill();

    let deadline = Instant::now() + Duration::from_secs(30);
    let reason = loop {
        let (_, s) = c.nodes[0].get("/status");
        if let Some(r) = s["cluster"]["not_primary_reason"].as_str() {
            break r.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no explanation in status: {}",
            s["cluster"]
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    for needle in [
        "one of the 2 members",
        "node-2",
        "arbitrator",
        "--force-safe-to-bootstrap",
        "--bootstrap-node",
    ] {
        assert!(reason.contains(needle), "{needle:?} not in {reason}");
    }
    let out = c.nodes[0].cli(&["--show-cluster-status"]);
    assert!(
        stdout(&out).contains("Why this node is not Primary: this node is one of the 2 members"),
        "{}",
        stdout(&out)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !c.nodes[0]
        .log()
        .contains("lost Primary: this node is one of the 2 members")
    {
        assert!(
            Instant::now() < deadline,
            "log lacks the explanation:\n{}",
            tail(&c.nodes[0].log(), 30)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Nor can the survivor remove its dead peer: that needs a quorum.
    let err = refused(&c.nodes[0], &["--remove-node", "node-2"]);
    assert!(err.contains("not Primary"), "{err}");
    let rows = members(&c.nodes[0]);
    assert_eq!(
        row(&rows, "node-2").unwrap()["state"],
        "failed",
        "{rows:#?}"
    );
    assert_eq!(row(&rows, "node-1").unwrap()["state"], "alive", "{rows:#?}");
}

#[test]
fn members_and_remove_node_need_the_daemon() {
    let node = TestNode::new("node-1", "");
    for args in [&["--members"][..], &["--remove-node", "node-2"][..]] {
        let out = node.cli(args);
        assert_eq!(out.status.code(), Some(4), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("quorated is not running"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
}
