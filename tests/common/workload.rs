//! The workloads of the consistency test (`tests/consistency.rs`): the
//! schema, a client process bound to one node that runs list-append
//! transactions, list reads, bank transfers and bank reads through the HTTP
//! API and records each in the history, and the reading of the converged
//! state the checker needs.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::common::cluster::Cluster;
use crate::elle::FinalState;
use crate::history::{Micro, Op, OpKind, Outcome, Recorder};

pub const ACCOUNTS: u64 = 5;
pub const INITIAL_BALANCE: i64 = 100;
/// Keys a list-append transaction picks from at any moment; the window
/// moves on as appends accumulate so lists stay short (as in Elle).
const ACTIVE_KEYS: u64 = 5;
const APPENDS_PER_WINDOW_STEP: u64 = 12;

const CLIENT_TIMEOUT: Duration = Duration::from_secs(8);

const APPEND_SQL: &str =
    "INSERT INTO lists(k, v) VALUES(?, ?) ON CONFLICT(k) DO UPDATE SET v = v || ',' || excluded.v";
/// A read inside a write transaction: the value goes into a row of its
/// own, which commits with the transaction and is read after the run.
const READ_IN_TXN_SQL: &str =
    "INSERT INTO reads(txn, idx, v) VALUES(?, ?, (SELECT v FROM lists WHERE k = ?))";
const MARKER_SQL: &str = "INSERT INTO txns(id, node) VALUES(?, ?)";

pub fn create_schema(cluster: &Cluster) {
    cluster.nodes[0].execute_ok(json!([
        "CREATE TABLE lists(k INTEGER PRIMARY KEY, v TEXT NOT NULL)",
        "CREATE TABLE txns(id INTEGER PRIMARY KEY, node INTEGER NOT NULL)",
        "CREATE TABLE reads(txn INTEGER NOT NULL, idx INTEGER NOT NULL, v TEXT, PRIMARY KEY(txn, idx))",
        "CREATE TABLE accounts(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL CHECK (balance >= 0))",
    ]));
    let inserts: Vec<Value> = (0..ACCOUNTS)
        .map(|a| {
            json!([
                "INSERT INTO accounts(id, balance) VALUES(?, ?)",
                a,
                INITIAL_BALANCE
            ])
        })
        .collect();
    cluster.nodes[0].execute_ok(Value::Array(inserts));
    cluster.wait_synced(&cluster.running(), Duration::from_secs(30));
}

/// Shared by the clients of one run: op ids (also the marker ids) and the
/// count of appends (unique values, and the moving key window).
#[derive(Default)]
pub struct Counters {
    ids: AtomicU64,
    appends: AtomicU64,
}

/// One client process: bound to one node, as a Jepsen client is.
pub struct Client<'a> {
    process: usize,
    node: usize,
    url: String,
    agent: ureq::Agent,
    rng: StdRng,
    recorder: &'a Recorder,
    ids: &'a AtomicU64,
    appends: &'a AtomicU64,
}

/// The cluster's answer to one request, as the workload sees it.
enum Answer {
    /// HTTP 200 with the body.
    Done(Value),
    /// Certainly not applied (409, 503, a statement error, nothing sent).
    Refused(String),
    /// May or may not have been applied.
    Unknown(String),
}

impl<'a> Client<'a> {
    /// Process `process` on the node at `url` (index `node`); its choices
    /// follow from `seed`.
    pub fn new(
        process: usize,
        node: usize,
        url: String,
        seed: u64,
        recorder: &'a Recorder,
        counters: &'a Counters,
    ) -> Client<'a> {
        Client {
            process,
            node,
            url,
            agent: ureq::AgentBuilder::new().timeout(CLIENT_TIMEOUT).build(),
            rng: StdRng::seed_from_u64(seed.wrapping_mul(1_000_003) + process as u64),
            recorder,
            ids: &counters.ids,
            appends: &counters.appends,
        }
    }

    pub fn run(mut self, until: Instant, stop: &AtomicBool) {
        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
            let id = self.ids.fetch_add(1, Ordering::Relaxed);
            let roll = self.rng.gen_range(0..100);
            let op = if roll < 40 {
                self.list_txn(id)
            } else if roll < 65 {
                self.list_read(id)
            } else if roll < 85 {
                self.transfer(id)
            } else {
                self.bank_read(id)
            };
            let unavailable = op.outcome != Outcome::Ok
                && (op.note.contains("not_primary") || op.note.contains("connection refused"));
            self.recorder.record(op);
            if unavailable {
                // Down, cut off or joining: ask again soon, without spinning.
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }

    fn key(&mut self) -> u64 {
        let base = self.appends.load(Ordering::Relaxed) / APPENDS_PER_WINDOW_STEP;
        base + self.rng.gen_range(0..ACTIVE_KEYS)
    }

    fn level(&mut self) -> &'static str {
        ["linearizable", "linearizable", "strong", "weak", "none"][self.rng.gen_range(0..5)]
    }

    fn post(&self, path: &str, body: &Value) -> Answer {
        let url = format!("{}{path}", self.url);
        match self.agent.post(&url).send_json(body.clone()) {
            Ok(r) => {
                let seqno = r.header("X-Quorate-Seqno").map(str::to_owned);
                match r.into_json::<Value>() {
                    Ok(mut v) => {
                        if let Some(s) = seqno {
                            v["seqno"] = json!(s);
                        }
                        Answer::Done(v)
                    }
                    Err(e) => Answer::Unknown(format!("200 with a body that is not JSON: {e}")),
                }
            }
            Err(ureq::Error::Status(code, r)) => {
                let body: Value = r.into_json().unwrap_or(Value::Null);
                let code_name = body["code"].as_str().unwrap_or("?").to_string();
                match (code, code_name.as_str()) {
                    (409, "certification_failed") | (503, "not_primary") => {
                        Answer::Refused(code_name)
                    }
                    // A refused request (bad SQL) is the test's bug: it
                    // shows up in the summary and fails the run below.
                    (400, _) => Answer::Refused(format!("bad_request {}", body["error"])),
                    _ => Answer::Unknown(format!("{code} {code_name}")),
                }
            }
            Err(ureq::Error::Transport(t)) if t.kind() == ureq::ErrorKind::ConnectionFailed => {
                Answer::Refused("connection refused".into())
            }
            Err(e) => Answer::Unknown(format!("{}", e.kind())),
        }
    }

    fn record(&self, id: u64, invoke_ms: u64, kind: OpKind, outcome: Outcome, note: String) -> Op {
        Op {
            id,
            process: self.process,
            node: self.node,
            kind,
            invoke_ms,
            complete_ms: self.recorder.now_ms(),
            outcome,
            note,
        }
    }

    /// A write: `Ok` unless a statement failed (then nothing committed).
    fn write(&self, id: u64, kind: OpKind, stmts: Vec<Value>) -> Op {
        let invoke = self.recorder.now_ms();
        let (outcome, note) = match self.post("/db/execute?transaction", &Value::Array(stmts)) {
            Answer::Done(body) => {
                let error = body["results"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find_map(|r| r.get("error").cloned());
                match error {
                    Some(e) => (Outcome::Fail, format!("statement error {e}")),
                    None => (
                        Outcome::Ok,
                        format!("seqno {}", body["seqno"].as_str().unwrap_or("?")),
                    ),
                }
            }
            Answer::Refused(why) => (Outcome::Fail, why),
            Answer::Unknown(why) => (Outcome::Info, why),
        };
        self.record(id, invoke, kind, outcome, note)
    }

    fn list_txn(&mut self, id: u64) -> Op {
        let steps = self.rng.gen_range(1..=4);
        let mut micros = Vec::new();
        let mut stmts = vec![json!([MARKER_SQL, id, self.node])];
        for _ in 0..steps {
            let k = self.key();
            if self.rng.gen_bool(0.3) {
                stmts.push(json!([READ_IN_TXN_SQL, id, micros.len(), k]));
                micros.push(Micro::Read(k, None));
            } else {
                micros.push(self.append(k, &mut stmts));
            }
        }
        // At least one append, so this is a write transaction.
        if !micros.iter().any(|m| matches!(m, Micro::Append(..))) {
            let k = self.key();
            micros.push(self.append(k, &mut stmts));
        }
        self.write(id, OpKind::ListTxn(micros), stmts)
    }

    /// Values are unique across the run (and say which process wrote them).
    fn append(&self, k: u64, stmts: &mut Vec<Value>) -> Micro {
        let v = self.appends.fetch_add(1, Ordering::Relaxed) * 1000 + self.process as u64;
        stmts.push(json!([APPEND_SQL, k, v.to_string()]));
        Micro::Append(k, v)
    }

    fn transfer(&mut self, id: u64) -> Op {
        let from = self.rng.gen_range(0..ACCOUNTS);
        let to = (from + self.rng.gen_range(1..ACCOUNTS)) % ACCOUNTS;
        let amount = self.rng.gen_range(1..=30);
        let stmts = vec![
            json!([MARKER_SQL, id, self.node]),
            // The CHECK (balance >= 0) fails an overdraft, and with
            // ?transaction nothing of the transfer commits.
            json!([
                "UPDATE accounts SET balance = balance - ? WHERE id = ?",
                amount,
                from
            ]),
            json!([
                "UPDATE accounts SET balance = balance + ? WHERE id = ?",
                amount,
                to
            ]),
        ];
        self.write(id, OpKind::Transfer { from, to, amount }, stmts)
    }

    fn list_read(&mut self, id: u64) -> Op {
        let level = self.level();
        let mut keys: Vec<u64> = (0..self.rng.gen_range(1..=4)).map(|_| self.key()).collect();
        keys.sort_unstable();
        keys.dedup();
        let stmts: Vec<Value> = keys
            .iter()
            .map(|k| json!(["SELECT v FROM lists WHERE k = ?", k]))
            .collect();
        let invoke = self.recorder.now_ms();
        let answer = self.post(&format!("/db/query?level={level}"), &Value::Array(stmts));
        let mut reads: Vec<Micro> = keys.iter().map(|&k| Micro::Read(k, None)).collect();
        let (outcome, note) = match answer {
            Answer::Done(body) => match parse_list_reads(&body, &keys) {
                Ok(lists) => {
                    reads = keys
                        .iter()
                        .zip(lists)
                        .map(|(&k, l)| Micro::Read(k, Some(l)))
                        .collect();
                    (Outcome::Ok, String::new())
                }
                Err(e) => (Outcome::Fail, e),
            },
            Answer::Refused(why) | Answer::Unknown(why) => (Outcome::Fail, why),
        };
        let kind = OpKind::ListRead {
            level: level.into(),
            reads,
        };
        self.record(id, invoke, kind, outcome, note)
    }

    fn bank_read(&mut self, id: u64) -> Op {
        let level = self.level();
        let invoke = self.recorder.now_ms();
        let answer = self.post(
            &format!("/db/query?level={level}"),
            &json!(["SELECT id, balance FROM accounts ORDER BY id"]),
        );
        let mut balances = Vec::new();
        let (outcome, note) = match answer {
            Answer::Done(body) => {
                let rows = &body["results"][0];
                match (rows.get("error"), rows["values"].as_array()) {
                    (None, Some(values)) => {
                        balances = values
                            .iter()
                            .map(|r| {
                                (
                                    r[0].as_u64().unwrap_or(u64::MAX),
                                    r[1].as_i64().unwrap_or(i64::MIN),
                                )
                            })
                            .collect();
                        (Outcome::Ok, String::new())
                    }
                    _ => (Outcome::Fail, format!("unexpected answer {body}")),
                }
            }
            Answer::Refused(why) | Answer::Unknown(why) => (Outcome::Fail, why),
        };
        let kind = OpKind::BankRead {
            level: level.into(),
            balances,
        };
        self.record(id, invoke, kind, outcome, note)
    }
}

/// A list as stored: comma-separated values, `NULL`/absent for empty.
fn parse_list(v: &Value) -> Result<Vec<u64>, String> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::String(s) => s
            .split(',')
            .map(|x| x.parse().map_err(|e| format!("list element {x:?}: {e}")))
            .collect(),
        other => Err(format!("a list must be text, got {other}")),
    }
}

fn parse_list_reads(body: &Value, keys: &[u64]) -> Result<Vec<Vec<u64>>, String> {
    let results = body["results"]
        .as_array()
        .filter(|r| r.len() == keys.len())
        .ok_or_else(|| format!("expected {} results: {body}", keys.len()))?;
    results
        .iter()
        .map(|r| {
            if let Some(e) = r.get("error") {
                return Err(format!("read error {e}"));
            }
            match r["values"].as_array() {
                None => Ok(Vec::new()),
                Some(rows) => rows
                    .first()
                    .map_or(Ok(Vec::new()), |row| parse_list(&row[0])),
            }
        })
        .collect()
}

/// Rows of every checked table on node `i`, read locally.
fn dump(cluster: &Cluster, i: usize) -> Vec<Vec<Value>> {
    [
        "SELECT k, v FROM lists ORDER BY k",
        "SELECT id, node FROM txns ORDER BY id",
        "SELECT txn, idx, v FROM reads ORDER BY txn, idx",
        "SELECT id, balance FROM accounts ORDER BY id",
    ]
    .iter()
    .map(|sql| cluster.nodes[i].query_rows_level(sql, "none"))
    .collect()
}

/// Wait until every node holds the same rows at the same seqno; returns the
/// final state and, if they never agreed, what differs.
pub fn final_state(cluster: &Cluster, recovered: bool) -> (FinalState, Option<String>) {
    let n = cluster.nodes.len();
    let deadline = Instant::now() + Duration::from_secs(if recovered { 120 } else { 10 });
    let mut divergence = None;
    let dumps = loop {
        let seqnos: Vec<i64> = (0..n)
            .map(|i| {
                cluster.status(i)["cluster"]["last_committed"]
                    .as_i64()
                    .unwrap_or(-2)
            })
            .collect();
        let dumps: Vec<Vec<Vec<Value>>> = (0..n).map(|i| dump(cluster, i)).collect();
        let same =
            seqnos.windows(2).all(|w| w[0] == w[1]) && dumps.windows(2).all(|w| w[0] == w[1]);
        if same {
            break dumps;
        }
        if Instant::now() > deadline {
            let tables = ["lists", "txns", "reads", "accounts"];
            let differ: Vec<&str> = (0..tables.len())
                .filter(|&t| dumps.iter().any(|d| d[t] != dumps[0][t]))
                .map(|t| tables[t])
                .collect();
            divergence = Some(format!(
                "divergence: the nodes did not converge after healing: applied seqnos {seqnos:?}, tables that differ {differ:?}"
            ));
            break dumps;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let d = &dumps[0];
    let mut fin = FinalState::default();
    for row in &d[0] {
        let k = row[0].as_u64().unwrap_or(u64::MAX);
        fin.lists.insert(
            k,
            parse_list(&row[1]).unwrap_or_else(|e| panic!("key {k}: {e}")),
        );
    }
    fin.committed = d[1].iter().filter_map(|r| r[0].as_u64()).collect();
    for row in &d[3] {
        fin.balances.insert(
            row[0].as_u64().unwrap_or(u64::MAX),
            row[1].as_i64().unwrap_or(i64::MIN),
        );
    }
    fin.initial_balances = (0..ACCOUNTS).map(|a| (a, INITIAL_BALANCE)).collect();
    (fin, divergence)
}

/// Fill the reads of committed write transactions from their `reads` rows.
pub fn fill_reads(ops: &mut [Op], cluster: &Cluster) {
    let rows = cluster.nodes[0].query_rows_level("SELECT txn, idx, v FROM reads", "none");
    let mut reads: HashMap<(u64, u64), Value> = HashMap::new();
    for r in rows {
        reads.insert(
            (r[0].as_u64().unwrap_or(0), r[1].as_u64().unwrap_or(0)),
            r[2].clone(),
        );
    }
    for op in ops.iter_mut() {
        let id = op.id;
        if let OpKind::ListTxn(micros) = &mut op.kind {
            for (idx, m) in micros.iter_mut().enumerate() {
                if let Micro::Read(_, value) = m {
                    if let Some(v) = reads.get(&(id, idx as u64)) {
                        *value =
                            Some(parse_list(v).unwrap_or_else(|e| panic!("read of #{id}: {e}")));
                    }
                }
            }
        }
    }
}
