//! SIGKILL in the middle of a write load loses no acknowledged write, and
//! `quorate --recover` reads the true position from the database.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use common::*;
use serde_json::json;

#[test]
fn sigkill_during_load_keeps_every_acknowledged_write() {
    let mut node = TestNode::new("node-a", "");
    node.start(&["--bootstrap"]);
    node.wait_primary(Duration::from_secs(20));
    node.execute_ok(json!([
        "CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER NOT NULL)"
    ]));

    let acked: Mutex<Vec<(i64, i64)>> = Mutex::new(Vec::new());
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for c in 0..8i64 {
            let (node, acked, stop) = (&node, &acked, &stop);
            s.spawn(move || {
                let mut i = 0i64;
                while !stop.load(Ordering::Relaxed) {
                    let id = c * 1_000_000 + i;
                    let req = node.agent.post(&node.url("/db/execute")).send_json(json!([[
                        "INSERT INTO t(id, v) VALUES(?, ?)",
                        id,
                        i
                    ]]));
                    match req {
                        Ok(r) => {
                            let body: serde_json::Value = r.into_json().unwrap_or_default();
                            if body["results"][0]["rows_affected"] == 1 {
                                acked.lock().unwrap().push((id, i));
                            }
                        }
                        Err(_) => break, // the node died: outcome unknown, not acknowledged
                    }
                    i += 1;
                }
            });
        }
        std::thread::sleep(Duration::from_millis(1500));
        node.signal(nix::sys::signal::Signal::SIGKILL);
        stop.store(true, Ordering::Relaxed);
    });
    node.kill(); // reap
    let acked = acked.into_inner().unwrap();
    assert!(
        acked.len() > 100,
        "load too small to mean anything: {} writes",
        acked.len()
    );

    // Stopped: --recover reads the database. Seqno 1 is the CREATE TABLE.
    let out = node.cli(&["--recover"]);
    assert!(out.status.success(), "--recover: {}", stderr(&out));
    let text = stdout(&out);
    let (uuid, seqno) = text
        .trim()
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("uuid:seqno expected, got {text}"));
    assert!(
        uuid::Uuid::parse_str(uuid).is_ok_and(|u| !u.is_nil()),
        "bad uuid in {text}"
    );
    let seqno: i64 = seqno.parse().expect("seqno");

    // Restart: the crashed single member comes back Primary by itself.
    node.start(&[]);
    node.wait_primary(Duration::from_secs(30));
    let count = node.scalar("SELECT COUNT(*) FROM t");
    assert!(
        count as usize >= acked.len(),
        "{count} rows < {} acknowledged",
        acked.len()
    );
    for chunk in acked.chunks(500) {
        let ids: Vec<String> = chunk.iter().map(|(id, _)| id.to_string()).collect();
        let found = node.scalar(&format!(
            "SELECT COUNT(*) FROM t WHERE id IN ({})",
            ids.join(",")
        ));
        assert_eq!(
            found as usize,
            chunk.len(),
            "acknowledged writes lost after SIGKILL"
        );
    }
    // Every acknowledged insert had a seqno no greater than the recovered position.
    assert!(
        seqno > acked.len() as i64,
        "--recover seqno {seqno} < {} acknowledged inserts",
        acked.len()
    );
    let out = node.cli(&["--recover"]);
    assert!(
        stdout(&out).trim().starts_with(uuid),
        "state uuid changed across the crash: {}",
        stdout(&out)
    );
}
