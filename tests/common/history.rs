//! The recorded history of a Jepsen-style run: one entry per operation a
//! client invoked, with when it started and ended and what the cluster
//! answered. The checker (`elle.rs`) reads only this and the final state.
#![allow(dead_code)]

use std::fmt;
use std::sync::Mutex;
use std::time::Instant;

/// What the client learned. `Info` is Jepsen's word for an indeterminate
/// outcome (timeout, `504 outcome_unknown`, a connection cut mid-request):
/// the checker may assume either way, never that it failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Fail,
    Info,
}

/// One step of a list-append transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Micro {
    Append(u64, u64),
    /// The list read for a key; `None` until known (a read-only transaction
    /// fills it from the answer, a write transaction from its `reads` rows
    /// once the run is over, and only if it committed).
    Read(u64, Option<Vec<u64>>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpKind {
    /// A list-append transaction with at least one append, sent as one
    /// `?transaction` write-set.
    ListTxn(Vec<Micro>),
    /// Reads of several keys in one `/db/query` (one SQLite snapshot) at a
    /// consistency level.
    ListRead {
        level: String,
        reads: Vec<Micro>,
    },
    Transfer {
        from: u64,
        to: u64,
        amount: i64,
    },
    /// Every balance, as read (empty unless `Ok`).
    BankRead {
        level: String,
        balances: Vec<(u64, i64)>,
    },
}

#[derive(Clone, Debug)]
pub struct Op {
    /// Unique per run; also the transaction's marker id in the database.
    pub id: u64,
    pub process: usize,
    pub node: usize,
    pub kind: OpKind,
    pub invoke_ms: u64,
    pub complete_ms: u64,
    pub outcome: Outcome,
    /// The cluster's answer in brief (error code, HTTP status, seqno).
    pub note: String,
}

impl Op {
    pub fn is_write(&self) -> bool {
        matches!(self.kind, OpKind::ListTxn(_) | OpKind::Transfer { .. })
    }

    /// The seqno an acknowledged write-set got (`X-Quorate-Seqno`).
    pub fn seqno(&self) -> Option<i64> {
        if self.outcome != Outcome::Ok {
            return None;
        }
        self.note.strip_prefix("seqno ")?.parse().ok()
    }

    pub fn micros(&self) -> &[Micro] {
        match &self.kind {
            OpKind::ListTxn(m) => m,
            OpKind::ListRead { reads, .. } => reads,
            _ => &[],
        }
    }
}

fn list(v: &[u64]) -> String {
    let items: Vec<String> = v.iter().map(u64::to_string).collect();
    format!("[{}]", items.join(" "))
}

impl fmt::Display for Micro {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Micro::Append(k, v) => write!(f, "append {k} {v}"),
            Micro::Read(k, None) => write!(f, "r {k} ?"),
            Micro::Read(k, Some(v)) => write!(f, "r {k} {}", list(v)),
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match &self.kind {
            OpKind::ListTxn(m) | OpKind::ListRead { reads: m, .. } => {
                let steps: Vec<String> = m.iter().map(Micro::to_string).collect();
                let level = match &self.kind {
                    OpKind::ListRead { level, .. } => format!(" level={level}"),
                    _ => String::new(),
                };
                format!("txn [{}]{level}", steps.join(", "))
            }
            OpKind::Transfer { from, to, amount } => format!("transfer {amount} {from}->{to}"),
            OpKind::BankRead { level, balances } => {
                let b: Vec<String> = balances.iter().map(|(a, b)| format!("{a}:{b}")).collect();
                format!("bank read level={level} {{{}}}", b.join(" "))
            }
        };
        write!(
            f,
            "#{:<6} p{:<2} n{} {:>8}..{:<8} ms {:<4} {what}  ({})",
            self.id,
            self.process,
            self.node + 1,
            self.invoke_ms,
            self.complete_ms,
            format!("{:?}", self.outcome).to_lowercase(),
            self.note
        )
    }
}

/// The history being recorded by the client threads of one run.
pub struct Recorder {
    start: Instant,
    ops: Mutex<Vec<Op>>,
}

impl Recorder {
    pub fn new(start: Instant) -> Recorder {
        Recorder {
            start,
            ops: Mutex::new(Vec::new()),
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    pub fn record(&self, op: Op) {
        self.ops.lock().unwrap_or_else(|e| e.into_inner()).push(op);
    }

    pub fn into_ops(self) -> Vec<Op> {
        let mut ops = self.ops.into_inner().unwrap_or_else(|e| e.into_inner());
        ops.sort_by_key(|o| (o.invoke_ms, o.id));
        ops
    }
}

/// The operations named by `ids`, in the order they were invoked: the
/// smallest history that shows an anomaly.
pub fn excerpt(ops: &[Op], ids: &[u64]) -> String {
    let mut picked: Vec<&Op> = ops.iter().filter(|o| ids.contains(&o.id)).collect();
    picked.sort_by_key(|o| (o.invoke_ms, o.id));
    picked
        .iter()
        .map(|o| format!("    {o}"))
        .collect::<Vec<_>>()
        .join("\n")
}
