//! A Jepsen-style test: concurrent clients on every node run a list-append
//! workload and a bank workload through the HTTP API while a nemesis kills,
//! pauses, stops and partitions nodes (the leader too); once everything is
//! healed, the history and the converged state are checked (`common/elle.rs`)
//! for lost acknowledged writes, divergence, snapshot-isolation anomalies,
//! stale linearizable reads and bank totals.
//!
//! CI runs two short seeded schedules. Longer ones (docs/TESTING.md):
//! `QUORATE_JEPSEN_SECONDS=1800 QUORATE_JEPSEN_SEED=7 cargo test --release
//! --test consistency -- --nocapture`.

mod common;
#[path = "common/elle.rs"]
mod elle;
#[path = "common/history.rs"]
mod history;
#[path = "common/nemesis.rs"]
mod nemesis;
#[path = "common/relay.rs"]
mod relay;
#[path = "common/workload.rs"]
mod workload;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::netns::{self, Net};
use history::{Op, OpKind, Outcome, Recorder};
use nemesis::{Faults, Kind, Links, Schedule};
use relay::Relay;
use serde_json::json;
use workload::{create_schema, fill_reads, final_state, Client, Counters};

/// The long schedules share two cores with everything else: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Commit timeout short enough that a stuck write comes back as
/// `504 outcome_unknown` before the client gives up on its own.
const NODE_SETTINGS: &str = "commit_timeout_ms = 3000\n";
/// A short log (the default; `QUORATE_JEPSEN_SHORT_LOG=0` turns it off): a
/// node away for a few seconds needs a snapshot (SST) and snapshots are
/// taken while the faults go on.
const SHORT_LOG_SETTINGS: &str =
    "commit_timeout_ms = 3000\n[storage]\nsnapshot_every_entries = 500\nlog_retain_entries = 200\n";

fn node_settings() -> &'static str {
    match std::env::var("QUORATE_JEPSEN_SHORT_LOG").as_deref() {
        Ok("0") => NODE_SETTINGS,
        _ => SHORT_LOG_SETTINGS,
    }
}
struct Settings {
    seconds: u64,
    seed: u64,
    nodes: usize,
    clients_per_node: usize,
}

impl Settings {
    fn from_env(default_seed: u64) -> Settings {
        let num = |name: &str, default: u64| -> u64 {
            match std::env::var(name) {
                Ok(v) => v
                    .parse()
                    .unwrap_or_else(|_| panic!("{name}={v:?} is not a whole number")),
                Err(_) => default,
            }
        };
        Settings {
            seconds: num("QUORATE_JEPSEN_SECONDS", 60),
            seed: num("QUORATE_JEPSEN_SEED", default_seed),
            nodes: num("QUORATE_JEPSEN_NODES", 3) as usize,
            clients_per_node: num("QUORATE_JEPSEN_CLIENTS", 2) as usize,
        }
    }
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// The fault kinds a schedule draws from: `QUORATE_JEPSEN_FAULTS` (e.g.
/// `pause,isolate`) or the test's own.
fn faults_from_env(default: &[Kind]) -> Vec<Kind> {
    let Ok(list) = std::env::var("QUORATE_JEPSEN_FAULTS") else {
        return default.to_vec();
    };
    list.split(',')
        .map(|name| match name.trim() {
            "kill" => Kind::Kill,
            "pause" => Kind::Pause,
            "stop" => Kind::Stop,
            "killall" => Kind::KillAll,
            "isolate" => Kind::Isolate,
            "cut" => Kind::Cut,
            "split" => Kind::Split,
            other => panic!(
                "QUORATE_JEPSEN_FAULTS: unknown fault {other:?}; use kill, pause, stop, killall, isolate, cut or split"
            ),
        })
        .collect()
}

#[test]
fn crashes_and_pauses_leave_a_consistent_history() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let settings = Settings::from_env(1);
    let mut cluster = Cluster::start(settings.nodes, node_settings());
    let kinds = faults_from_env(&[Kind::Kill, Kind::Pause, Kind::Stop, Kind::KillAll]);
    assert!(
        !kinds
            .iter()
            .any(|k| matches!(k, Kind::Isolate | Kind::Cut | Kind::Split)),
        "QUORATE_JEPSEN_FAULTS: the crash schedule cannot cut links (the partition schedule can)"
    );
    run_and_check("crash", &settings, &mut cluster, None, &kinds);
}

#[test]
fn partitions_leave_a_consistent_history() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let settings = Settings::from_env(2);
    let kinds = faults_from_env(&[Kind::Isolate, Kind::Cut, Kind::Split, Kind::Kill]);
    let why_not_netns = match std::env::var("QUORATE_JEPSEN_LINKS").as_deref() {
        Ok("relay") => Some("QUORATE_JEPSEN_LINKS=relay".to_string()),
        Ok("netns") | Err(_) => netns::unavailable(),
        Ok(other) => panic!("QUORATE_JEPSEN_LINKS={other:?}: expected netns or relay"),
    };
    match why_not_netns {
        None => {
            let net = Net::new(settings.nodes);
            let mut cluster =
                Cluster::new_in(&net, settings.nodes, node_settings()).start_configured();
            run_and_check("partition", &settings, &mut cluster, Some(&net), &kinds);
        }
        Some(why) => {
            // CI runs as root: there the namespaces must work.
            let chosen = why.starts_with("QUORATE_JEPSEN_LINKS");
            assert!(
                chosen || !in_ci(),
                "CI must cut links with network namespaces, but: {why}"
            );
            eprintln!("network namespaces unavailable ({why}): partitions go through a UDP relay");
            let relay = Relay::new(settings.nodes);
            let mut cluster = relay.cluster(node_settings()).start_configured();
            run_and_check(
                "partition-relay",
                &settings,
                &mut cluster,
                Some(&relay),
                &kinds,
            );
        }
    }
}

/// The relay's cuts are real: a node cut off from both others goes
/// non-Primary and refuses writes, and catches up once healed. (CI runs the
/// partition schedule over namespaces, so this keeps the relay honest.)
#[test]
fn relay_cuts_are_real_packet_loss() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let relay = Relay::new(3);
    let cluster = relay.cluster("").start_configured();
    cluster.nodes[0].execute_ok(json!(["CREATE TABLE t(id INTEGER PRIMARY KEY)"]));
    cluster.wait_synced(&[0, 1, 2], Duration::from_secs(30));
    relay.cut(2, 0);
    relay.cut(2, 1);
    let deadline = Instant::now() + Duration::from_secs(20);
    while cluster.nodes[2].get("/readyz").0 != 503 {
        assert!(
            Instant::now() < deadline,
            "node-3 still Primary with both links cut"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, body) =
        cluster.nodes[2].post("/db/execute", &json!([["INSERT INTO t VALUES(?)", 1]]));
    assert_eq!(
        (code, body["code"].as_str()),
        (503, Some("not_primary")),
        "{body}"
    );
    for id in 10..20 {
        cluster.nodes[id as usize % 2].execute_ok(json!([["INSERT INTO t VALUES(?)", id]]));
    }
    relay.heal(2, 0);
    relay.heal(2, 1);
    cluster.wait_size(&[0, 1, 2], 3, Duration::from_secs(30));
    cluster.wait_converged(&[0, 1, 2], "t", Duration::from_secs(30));
    assert_eq!(cluster.nodes[2].scalar("SELECT COUNT(*) FROM t"), 10);
}

/// Found by the crash schedule with a short log (seed 41,
/// `QUORATE_JEPSEN_SHORT_LOG=1`): a node that was caught up by SST and then
/// restarted could not open its write-set log ("the log has a hole"):
/// installing the snapshot purged the log past its last entry and the next
/// entries followed the old ones in the same segment. Now such a purge
/// starts a new segment. Also the issue's "a member away past the log
/// retention gets an SST" (it was killed, not removed).
#[test]
fn restart_after_sst_opens_the_log() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut c = Cluster::start(3, SHORT_LOG);
    c.nodes[0].execute_ok(json!(["CREATE TABLE t(id INTEGER PRIMARY KEY)"]));
    let insert = |node: &common::TestNode, ids: std::ops::Range<i64>| {
        for id in ids {
            node.execute_ok(json!([["INSERT INTO t VALUES(?)", id]]));
        }
    };
    insert(&c.nodes[0], 0..10);
    c.wait_converged(&[0, 1, 2], "t", Duration::from_secs(30));
    // Away long enough that the others purge past its position: SST.
    c.nodes[2].kill();
    insert(&c.nodes[0], 10..200);
    c.nodes[2].start(&[]);
    c.wait_converged(&[0, 1, 2], "t", Duration::from_secs(60));
    assert!(
        c.nodes[2].log().contains("SST: receiving"),
        "node-3 must have been caught up by SST"
    );
    // New entries land in its log after the snapshot; then it restarts.
    insert(&c.nodes[0], 200..210);
    c.wait_converged(&[0, 1, 2], "t", Duration::from_secs(30));
    c.nodes[2].kill();
    c.nodes[2].start(&[]);
    // It already holds every row, so converged alone says nothing: it must
    // be a Primary member again.
    c.wait_size(&[0, 1, 2], 3, Duration::from_secs(60));
    c.wait_converged(&[0, 1, 2], "t", Duration::from_secs(60));
    assert_eq!(c.nodes[2].scalar("SELECT COUNT(*) FROM t"), 210);
}

/// A short log: snapshots are taken often and a node away for a few
/// hundred write-sets is caught up by SST.
const SHORT_LOG: &str = "[storage]\nsnapshot_every_entries = 50\nlog_retain_entries = 20\n";

fn run_and_check(
    name: &str,
    settings: &Settings,
    cluster: &mut Cluster,
    net: Option<&dyn Links>,
    kinds: &[Kind],
) {
    create_schema(cluster);
    let n = cluster.nodes.len();
    let urls: Vec<String> = cluster.nodes.iter().map(|node| node.url("")).collect();
    let schedule = Schedule::generate(settings.seed, n, kinds);
    eprintln!(
        "jepsen {name}: seed {}, {} s, {n} nodes, {} clients per node, faults {kinds:?}{}",
        settings.seed,
        settings.seconds,
        settings.clients_per_node,
        net.map(|l| format!(", links cut by {}", l.how()))
            .unwrap_or_default()
    );

    let start = Instant::now();
    let until = start + Duration::from_secs(settings.seconds);
    let recorder = Recorder::new(start);
    let stop = AtomicBool::new(false);
    let counters = Counters::default();
    let mut faults = Faults::new(cluster, net, start);
    std::thread::scope(|s| {
        for p in 0..n * settings.clients_per_node {
            let client = Client::new(
                p,
                p % n,
                urls[p % n].clone(),
                settings.seed,
                &recorder,
                &counters,
            );
            let stop = &stop;
            s.spawn(move || client.run(until, stop));
        }
        // Clients stop with the nemesis, also when it panics.
        let _stop_clients = SetOnDrop(&stop);
        faults.run(&schedule, until, &stop);
    });
    let ops = recorder.into_ops();

    let recovered = faults.await_recovery(Duration::from_secs(120));
    let events: Vec<String> = faults.events.iter().map(|e| e.to_string()).collect();
    let injected = faults.injected.clone();
    let unrecovered = faults.unrecovered.clone();
    drop(faults);
    let (fin, divergence) = final_state(cluster, recovered);
    let mut ops = ops;
    fill_reads(&mut ops, cluster);
    let report = elle::check(&ops, &fin);

    let summary = summarize(&ops, &injected, &report, &schedule);
    // How often a node was caught up by a snapshot rather than the log.
    let ssts: usize = cluster
        .nodes
        .iter()
        .map(|node| node.log().matches("SST: receiving").count())
        .sum();
    eprintln!("jepsen {name}: {summary}; {ssts} SSTs");
    let mut problems = Vec::new();
    if !report.is_valid() {
        problems.push(report.explain(&ops));
    }
    if let Some(d) = divergence {
        problems.push(d);
    }
    if !unrecovered.is_empty() {
        problems.push(format!("the cluster did not recover: {unrecovered:?}"));
    }
    let committed = report.committed_txns;
    if committed < 20 {
        problems.push(format!(
            "only {committed} write transactions committed: the run checked almost nothing"
        ));
    }
    if settings.seconds >= 30 && injected.is_empty() {
        problems.push("the nemesis injected no fault".into());
    }
    let test_bugs: Vec<String> = ops
        .iter()
        .filter(|o| {
            o.note.starts_with("bad_request")
                || matches!(o.kind, OpKind::ListTxn(_)) && o.note.starts_with("statement error")
        })
        .take(5)
        .map(|o| o.to_string())
        .collect();
    if !test_bugs.is_empty() {
        problems.push(format!(
            "requests refused as malformed:\n{}",
            test_bugs.join("\n")
        ));
    }
    if let Some(why) = &report.incomplete {
        problems.push(format!("the check is incomplete: {why}"));
    }
    if !problems.is_empty() {
        let path = std::env::temp_dir().join(format!(
            "quorate-jepsen-{name}-seed{}-{}.history",
            settings.seed,
            std::process::id()
        ));
        let text: Vec<String> = ops.iter().map(|o| o.to_string()).collect();
        let _ = std::fs::write(
            &path,
            format!("{}\n\nnemesis:\n{}\n", text.join("\n"), events.join("\n")),
        );
        let tails: Vec<String> = cluster
            .nodes
            .iter()
            .map(|node| {
                format!(
                    "{} log tail:\n{}",
                    node.name,
                    common::cluster::tail(&node.log(), 25)
                )
            })
            .collect();
        panic!(
            "jepsen {name} (seed {}; rerun with QUORATE_JEPSEN_SEED={} QUORATE_JEPSEN_SECONDS={}) found:\n{}\nnemesis:\n{}\nfull history: {}\n{}",
            settings.seed,
            settings.seed,
            settings.seconds,
            problems.join("\n"),
            events.join("\n"),
            path.display(),
            tails.join("\n")
        );
    }
}

struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn summarize(
    ops: &[Op],
    injected: &[nemesis::Fault],
    report: &elle::Report,
    schedule: &Schedule,
) -> String {
    let mut by: BTreeMap<(String, String), usize> = BTreeMap::new();
    for op in ops {
        let kind = match op.kind {
            OpKind::ListTxn(_) => "list-txn",
            OpKind::ListRead { .. } => "list-read",
            OpKind::Transfer { .. } => "transfer",
            OpKind::BankRead { .. } => "bank-read",
        };
        *by.entry((kind.into(), format!("{:?}", op.outcome).to_lowercase()))
            .or_default() += 1;
    }
    let ops_text: Vec<String> = by
        .iter()
        .map(|((k, o), n)| format!("{k} {o} {n}"))
        .collect();
    let mut why: BTreeMap<String, usize> = BTreeMap::new();
    for op in ops.iter().filter(|o| o.outcome != Outcome::Ok) {
        let reason: String = op
            .note
            .chars()
            .take_while(|c| *c != '{' && *c != '"')
            .collect();
        *why.entry(reason.trim().to_string()).or_default() += 1;
    }
    let mut faults: BTreeMap<String, usize> = BTreeMap::new();
    for f in injected {
        let name = format!("{f:?}");
        let kind = name.split(['(', ' ']).next().unwrap_or("?").to_string();
        *faults.entry(kind).or_default() += 1;
    }
    format!(
        "{} ops ({}; not ok: {why:?}); {} faults {:?} (first steps of seed {}: {:?}); {} write txns committed, {} indeterminate resolved, {} graph edges, {} rw edges only on write-skew cycles; anomalies: {}",
        ops.len(),
        ops_text.join(", "),
        injected.len(),
        faults,
        schedule.seed,
        schedule.steps.iter().take(3).map(|s| &s.faults).collect::<Vec<_>>(),
        report.committed_txns,
        report.indeterminate_resolved,
        report.graph_edges,
        report.allowed_cycles,
        report.anomalies.len()
    )
}

/// The checker on small hand-made histories: each anomaly it must find, and
/// what snapshot isolation allows that it must let pass.
mod checker {
    use super::elle::{check, FinalState, Report};
    use super::history::{Micro, Op, OpKind, Outcome};
    use Micro::{Append as A, Read as R};

    fn op(id: u64, outcome: Outcome, kind: OpKind, at: (u64, u64)) -> Op {
        Op {
            id,
            process: id as usize,
            node: 0,
            kind,
            invoke_ms: at.0,
            complete_ms: at.1,
            outcome,
            note: String::new(),
        }
    }

    fn txn(id: u64, micros: Vec<Micro>) -> Op {
        op(
            id,
            Outcome::Ok,
            OpKind::ListTxn(micros),
            (id * 10, id * 10 + 5),
        )
    }

    fn read(id: u64, level: &str, reads: Vec<Micro>, at: (u64, u64)) -> Op {
        let kind = OpKind::ListRead {
            level: level.into(),
            reads,
        };
        op(id, Outcome::Ok, kind, at)
    }

    fn r(k: u64, v: &[u64]) -> Micro {
        R(k, Some(v.to_vec()))
    }

    fn fin(lists: &[(u64, &[u64])], committed: &[u64]) -> FinalState {
        FinalState {
            lists: lists.iter().map(|(k, l)| (*k, l.to_vec())).collect(),
            committed: committed.iter().copied().collect(),
            ..FinalState::default()
        }
    }

    fn kinds(report: &Report) -> Vec<&'static str> {
        report.anomalies.iter().map(|a| a.kind).collect()
    }

    #[test]
    fn a_serial_history_passes() {
        let ops = vec![
            txn(1, vec![A(1, 10)]),
            txn(2, vec![r(1, &[10]), A(1, 20), A(2, 30)]),
            read(
                3,
                "linearizable",
                vec![r(1, &[10, 20]), r(2, &[30])],
                (100, 110),
            ),
        ];
        let report = check(&ops, &fin(&[(1, &[10, 20]), (2, &[30])], &[1, 2]));
        assert!(report.is_valid(), "{}", report.explain(&ops));
        assert!(report.graph_edges >= 3);
    }

    #[test]
    fn an_acknowledged_write_that_is_gone_is_lost() {
        let ops = vec![txn(1, vec![A(1, 10)]), txn(2, vec![A(1, 20)])];
        let report = check(&ops, &fin(&[(1, &[20])], &[2]));
        assert_eq!(kinds(&report), vec!["lost-write"], "{report:?}");
    }

    #[test]
    fn a_failed_write_must_not_commit() {
        let mut t = txn(1, vec![A(1, 10)]);
        t.outcome = Outcome::Fail;
        let ops = vec![t];
        let report = check(&ops, &fin(&[(1, &[10])], &[1]));
        assert!(
            kinds(&report).contains(&"failed-write-committed"),
            "{report:?}"
        );
    }

    #[test]
    fn an_indeterminate_write_is_either_whole_or_absent() {
        let mut t = txn(1, vec![A(1, 10), A(2, 20)]);
        t.outcome = Outcome::Info;
        let ops = vec![t];
        assert!(check(&ops, &fin(&[(1, &[10]), (2, &[20])], &[1])).is_valid());
        assert!(check(&ops, &fin(&[], &[])).is_valid());
        let torn = check(&ops, &fin(&[(1, &[10])], &[1]));
        assert_eq!(kinds(&torn), vec!["lost-append"], "{torn:?}");
    }

    #[test]
    fn reading_a_failed_write_is_g1a() {
        let mut t = txn(1, vec![A(1, 10)]);
        t.outcome = Outcome::Fail;
        let ops = vec![t, read(2, "weak", vec![r(1, &[10])], (50, 60))];
        let report = check(&ops, &fin(&[], &[]));
        assert!(kinds(&report).contains(&"G1a"), "{report:?}");
    }

    #[test]
    fn reading_half_a_transaction_is_g1b() {
        let ops = vec![
            txn(1, vec![A(1, 10), A(1, 11)]),
            read(2, "none", vec![r(1, &[10])], (50, 60)),
        ];
        let report = check(&ops, &fin(&[(1, &[10, 11])], &[1]));
        assert_eq!(kinds(&report), vec!["G1b"], "{report:?}");
    }

    #[test]
    fn a_write_cycle_is_g0() {
        let ops = vec![
            txn(1, vec![A(1, 10), A(2, 21)]),
            txn(2, vec![A(1, 11), A(2, 20)]),
        ];
        let report = check(&ops, &fin(&[(1, &[10, 11]), (2, &[20, 21])], &[1, 2]));
        assert_eq!(kinds(&report), vec!["G0"], "{}", report.explain(&ops));
    }

    #[test]
    fn each_seeing_the_other_is_g1c() {
        let ops = vec![
            txn(1, vec![A(1, 10), r(2, &[20])]),
            txn(2, vec![A(2, 20), r(1, &[10])]),
        ];
        let report = check(&ops, &fin(&[(1, &[10]), (2, &[20])], &[1, 2]));
        assert_eq!(kinds(&report), vec!["G1c"], "{}", report.explain(&ops));
    }

    #[test]
    fn read_skew_is_g_single() {
        // 2 appends to key 1 after 1 did; the read sees 2's append to key 2
        // but not 1's to key 1.
        let ops = vec![
            txn(1, vec![A(1, 10)]),
            txn(2, vec![A(1, 11), A(2, 20)]),
            read(3, "none", vec![r(1, &[]), r(2, &[20])], (40, 50)),
        ];
        let report = check(&ops, &fin(&[(1, &[10, 11]), (2, &[20])], &[1, 2]));
        assert_eq!(kinds(&report), vec!["G-single"], "{}", report.explain(&ops));
    }

    #[test]
    fn write_skew_is_allowed_under_snapshot_isolation() {
        let ops = vec![
            txn(1, vec![r(1, &[]), A(2, 20)]),
            txn(2, vec![r(2, &[]), A(1, 10)]),
        ];
        let report = check(&ops, &fin(&[(1, &[10]), (2, &[20])], &[1, 2]));
        assert!(report.is_valid(), "{}", report.explain(&ops));
        assert_eq!(report.allowed_cycles, 2);
    }

    #[test]
    fn a_linearizable_read_must_see_what_was_acknowledged_before_it() {
        let ops = vec![
            txn(1, vec![A(1, 10)]),
            read(2, "none", vec![r(1, &[])], (100, 110)),
            read(3, "linearizable", vec![r(1, &[])], (100, 110)),
        ];
        let report = check(&ops, &fin(&[(1, &[10])], &[1]));
        assert_eq!(
            kinds(&report),
            vec!["stale-read"],
            "{}",
            report.explain(&ops)
        );
        assert_eq!(report.anomalies[0].ops, vec![1, 3]);
    }

    #[test]
    fn a_weak_read_sees_what_its_own_node_acknowledged() {
        let mut elsewhere = txn(2, vec![A(1, 20)]);
        elsewhere.node = 1;
        let ops = vec![
            txn(1, vec![A(1, 10)]),
            elsewhere,
            read(3, "weak", vec![r(1, &[10])], (100, 110)),
            read(4, "weak", vec![r(1, &[])], (100, 110)),
            read(5, "none", vec![r(1, &[])], (100, 110)),
        ];
        let report = check(&ops, &fin(&[(1, &[10, 20])], &[1, 2]));
        assert_eq!(
            kinds(&report),
            vec!["stale-local-read"],
            "{}",
            report.explain(&ops)
        );
        assert_eq!(report.anomalies[0].ops, vec![1, 4]);
    }

    #[test]
    fn seqnos_are_one_order() {
        let acked = |id, seqno, at| {
            let mut t = txn(id, vec![A(1, id * 10)]);
            (t.invoke_ms, t.complete_ms) = at;
            t.note = format!("seqno {seqno}");
            t
        };
        let state = fin(&[(1, &[10, 20, 30])], &[1, 2, 3]);
        let good = vec![
            acked(1, 5, (0, 10)),
            acked(2, 7, (20, 30)),
            acked(3, 8, (5, 40)),
        ];
        assert!(check(&good, &state).is_valid());
        let twice = vec![
            acked(1, 5, (0, 10)),
            acked(2, 7, (20, 30)),
            acked(3, 7, (5, 40)),
        ];
        assert!(kinds(&check(&twice, &state)).contains(&"duplicate-seqno"));
        // #3 was sent after #2 was acknowledged but got an earlier seqno.
        let late = vec![
            acked(1, 5, (0, 10)),
            acked(2, 7, (20, 30)),
            acked(3, 6, (35, 40)),
        ];
        assert_eq!(
            kinds(&check(&late, &state)),
            vec!["seqno-order", "seqno-order"]
        );
    }

    #[test]
    fn a_read_must_be_a_prefix_of_the_final_order() {
        let ops = vec![
            txn(1, vec![A(1, 10)]),
            txn(2, vec![A(1, 20)]),
            read(3, "weak", vec![r(1, &[20, 10])], (100, 110)),
        ];
        let report = check(&ops, &fin(&[(1, &[10, 20])], &[1, 2]));
        assert_eq!(kinds(&report), vec!["incompatible-order"], "{report:?}");
    }

    #[test]
    fn bank_totals_and_final_balances() {
        let transfer = |id, outcome| {
            op(
                id,
                outcome,
                OpKind::Transfer {
                    from: 0,
                    to: 1,
                    amount: 5,
                },
                (id * 10, id * 10 + 5),
            )
        };
        let bank_read = |id, a, b| {
            op(
                id,
                Outcome::Ok,
                OpKind::BankRead {
                    level: "weak".into(),
                    balances: vec![(0, a), (1, b)],
                },
                (90, 95),
            )
        };
        let mut state = fin(&[], &[1]);
        state.initial_balances = [(0, 10), (1, 10)].into_iter().collect();
        state.balances = [(0, 5), (1, 15)].into_iter().collect();
        let good = vec![
            transfer(1, Outcome::Ok),
            transfer(2, Outcome::Info),
            bank_read(3, 5, 15),
        ];
        let report = check(&good, &state);
        assert!(report.is_valid(), "{}", report.explain(&good));
        let bad = vec![transfer(1, Outcome::Ok), bank_read(3, 5, 10)];
        assert_eq!(kinds(&check(&bad, &state)), vec!["bank-read"]);
        state.balances = [(0, 5), (1, 10)].into_iter().collect();
        assert!(kinds(&check(&bad, &state)).contains(&"bank-final"));
    }
}
