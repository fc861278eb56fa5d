//! `storage.max_snapshot_bytes`: a joiner cuts off a donor whose snapshot
//! (SST) is larger, keeps nothing of it, and says which key to raise.

mod common;

use std::time::{Duration, Instant};

use common::cluster::Cluster;
use serde_json::json;

const SHORT_LOG: &str = "[storage]\nsnapshot_every_entries = 50\nlog_retain_entries = 20\n";
const LIMIT: u64 = 1 << 20;

#[test]
fn a_joiner_refuses_a_snapshot_over_its_limit_with_a_clear_error() {
    let mut c = Cluster::new(2, SHORT_LOG);
    let text = std::fs::read_to_string(&c.nodes[1].config_path).unwrap();
    let text = text.replacen(
        "[storage]\n",
        &format!("[storage]\nmax_snapshot_bytes = {LIMIT}\n"),
        1,
    );
    std::fs::write(&c.nodes[1].config_path, text).unwrap();

    c.nodes[0].start(&["--bootstrap"]);
    c.nodes[0].wait_primary(Duration::from_secs(30));
    c.nodes[0].execute_ok(json!(["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"]));
    // About 2.4 MB in 100 write-sets: the log is compacted past them, so a
    // joiner can only be seeded by SST, and the snapshot exceeds 1 MiB.
    let filler = "x".repeat(8 * 1024);
    for i in 0..100 {
        let rows: Vec<_> = (0..3)
            .map(|j| json!(["INSERT INTO t(id, v) VALUES(?, ?)", i * 3 + j, filler]))
            .collect();
        c.nodes[0].execute_ok(json!(rows));
    }

    c.nodes[1].start(&[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let log = c.nodes[1].log();
        if log.contains("storage.max_snapshot_bytes") {
            assert!(
                log.contains(&format!("({LIMIT} bytes)")),
                "the error names the limit: {}",
                common::cluster::tail(&log, 20)
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the joiner did not refuse the snapshot:\n{}",
            common::cluster::tail(&log, 30)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The donor tries again and again; no transfer ever writes more than
    // the limit to the joiner's disk (a cut-off one is removed).
    for _ in 0..10 {
        let received: Vec<(String, u64)> =
            std::fs::read_dir(c.nodes[1].data_dir().join("snapshots"))
                .map(|d| {
                    d.filter_map(Result::ok)
                        .filter(|e| e.file_name().to_string_lossy().starts_with("receiving-"))
                        .filter_map(|e| {
                            Some((
                                e.file_name().to_string_lossy().into(),
                                e.metadata().ok()?.len(),
                            ))
                        })
                        .collect()
                })
                .unwrap_or_default();
        for (name, len) in received {
            assert!(len <= LIMIT, "{name} holds {len} bytes, over the limit");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_ne!(c.nodes[1].get("/readyz").0, 200);

    // The donor shows the size of what it tries to send, the joiner what it
    // took before cutting it off.
    let metric = |i: usize, name: &str| c.nodes[i].metric(name);
    assert!(metric(0, "quorate_sst_donor_total_bytes") > LIMIT as f64);
    assert!(metric(0, "quorate_sst_donor_sent_bytes") > 0.0);
    let got = metric(1, "quorate_sst_joiner_received_bytes");
    assert!(
        got > 0.0 && got <= LIMIT as f64 + (256 << 10) as f64,
        "{got}"
    );
}
