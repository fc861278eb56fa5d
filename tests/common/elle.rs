//! The checker: given a recorded history and the state the cluster holds
//! once healed, find what snapshot isolation (and the API's promises) rule
//! out. The list-append part follows the Elle paper (Kingsbury & Alvaro,
//! VLDB 2020): appends of unique values make every key's final list its
//! version order, so write-write, write-read and read-write (anti-)
//! dependencies can be read off the history and the dependency graph
//! searched for cycles. Snapshot isolation allows a cycle only when it has
//! two adjacent read-write edges (write skew); every other cycle is an
//! anomaly: G0 (write cycle), G1c (circular information flow), G-single
//! (read skew: exactly one rw edge), G-nonadjacent.
//!
//! Every write transaction also inserts a marker row keyed by its op id, so
//! the final state says which transactions committed, including the ones
//! whose outcome the client could not learn.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use super::history::{excerpt, Micro, Op, OpKind, Outcome};

/// What the healed cluster holds (read once every node agrees).
#[derive(Clone, Debug, Default)]
pub struct FinalState {
    pub lists: BTreeMap<u64, Vec<u64>>,
    /// Op ids of the write transactions that committed (their marker rows).
    pub committed: HashSet<u64>,
    pub balances: BTreeMap<u64, i64>,
    pub initial_balances: BTreeMap<u64, i64>,
}

#[derive(Clone, Debug)]
pub struct Anomaly {
    pub kind: &'static str,
    pub why: String,
    /// The operations that show it.
    pub ops: Vec<u64>,
}

#[derive(Debug, Default)]
pub struct Report {
    pub anomalies: Vec<Anomaly>,
    /// rw edges that lie on cycles, but only on cycles with two adjacent rw
    /// edges (write skew): allowed by snapshot isolation.
    pub allowed_cycles: usize,
    pub committed_txns: usize,
    pub indeterminate_resolved: usize,
    pub graph_edges: usize,
    /// Set when the cycle search gave up on its budget.
    pub incomplete: Option<String>,
}

impl Report {
    pub fn is_valid(&self) -> bool {
        self.anomalies.is_empty()
    }

    /// Each anomaly with the smallest history that shows it.
    pub fn explain(&self, ops: &[Op]) -> String {
        let mut out = String::new();
        let mut shown: HashMap<&str, usize> = HashMap::new();
        for a in &self.anomalies {
            let n = shown.entry(a.kind).or_default();
            *n += 1;
            if *n > 3 {
                continue;
            }
            out.push_str(&format!(
                "{}: {}\n{}\n",
                a.kind,
                a.why,
                excerpt(ops, &a.ops)
            ));
        }
        for (kind, n) in shown.iter().filter(|(_, n)| **n > 3) {
            out.push_str(&format!("... and {} more {kind}\n", n - 3));
        }
        out
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Edge {
    Ww,
    Wr,
    Rw,
}

struct Checker<'a> {
    ops: &'a [Op],
    fin: &'a FinalState,
    by_id: HashMap<u64, &'a Op>,
    /// value -> (op id, key) of the append that wrote it.
    writer: HashMap<u64, (u64, u64)>,
    report: Report,
}

/// Check `ops` against `fin`. Write transactions whose reads are `None`
/// must already have them filled from the final state when they committed.
pub fn check(ops: &[Op], fin: &FinalState) -> Report {
    let mut c = Checker {
        ops,
        fin,
        by_id: ops.iter().map(|o| (o.id, o)).collect(),
        writer: HashMap::new(),
        report: Report::default(),
    };
    c.outcomes();
    c.index_writes();
    c.final_lists();
    c.reads();
    c.realtime_reads();
    c.seqnos();
    c.graph();
    c.bank();
    c.report
}

impl<'a> Checker<'a> {
    fn flag(&mut self, kind: &'static str, why: String, ops: Vec<u64>) {
        if self
            .report
            .anomalies
            .iter()
            .any(|a| a.kind == kind && a.why == why)
        {
            return; // the same key read twice in one transaction
        }
        self.report.anomalies.push(Anomaly { kind, why, ops });
    }

    /// Whether the op's effects are in the database (reads: answered).
    fn committed(&self, op: &Op) -> bool {
        if op.is_write() {
            self.fin.committed.contains(&op.id)
        } else {
            op.outcome == Outcome::Ok
        }
    }

    /// The API's three outcomes must match the markers: an acknowledged
    /// write is there, a failed one is not.
    fn outcomes(&mut self) {
        let mut found = Vec::new();
        for op in self.ops.iter().filter(|o| o.is_write()) {
            let there = self.fin.committed.contains(&op.id);
            match (op.outcome, there) {
                (Outcome::Ok, false) => found.push((
                    "lost-write",
                    format!("#{} was acknowledged but did not commit", op.id),
                    op.id,
                )),
                (Outcome::Fail, true) => found.push((
                    "failed-write-committed",
                    format!("#{} was reported failed but committed", op.id),
                    op.id,
                )),
                (Outcome::Info, _) => self.report.indeterminate_resolved += 1,
                _ => {}
            }
            if there {
                self.report.committed_txns += 1;
            }
        }
        for (kind, why, id) in found {
            self.flag(kind, why, vec![id]);
        }
    }

    fn index_writes(&mut self) {
        for op in self.ops {
            if let OpKind::ListTxn(m) = &op.kind {
                for micro in m {
                    if let Micro::Append(k, v) = micro {
                        self.writer.insert(*v, (op.id, *k));
                    }
                }
            }
        }
    }

    /// Every element of a final list was appended once by a committed
    /// transaction, and every committed append is there.
    fn final_lists(&mut self) {
        let mut found = Vec::new();
        for (k, list) in &self.fin.lists {
            let mut seen = HashSet::new();
            for v in list {
                if !seen.insert(*v) {
                    let w = self.writer.get(v).map(|w| w.0).into_iter().collect();
                    found.push((
                        "duplicate-append",
                        format!("{v} appears twice in key {k}: {list:?}"),
                        w,
                    ));
                    continue;
                }
                match self.writer.get(v) {
                    None => found.push((
                        "phantom-value",
                        format!("key {k} holds {v}, which nobody appended"),
                        vec![],
                    )),
                    Some(&(id, wk)) => {
                        let op = self.by_id[&id];
                        if wk != *k {
                            found.push((
                                "misplaced-value",
                                format!("{v} was appended to key {wk} but is in key {k}"),
                                vec![id],
                            ));
                        } else if !self.committed(op) {
                            found.push((
                                "aborted-write-visible",
                                format!("key {k} holds {v} from #{id}, which did not commit"),
                                vec![id],
                            ));
                        }
                    }
                }
            }
        }
        for op in self.ops.iter().filter(|o| self.committed(o)) {
            if let OpKind::ListTxn(m) = &op.kind {
                for micro in m {
                    if let Micro::Append(k, v) = micro {
                        let present = self.fin.lists.get(k).is_some_and(|l| l.contains(v));
                        if !present {
                            let why = match op.outcome {
                                Outcome::Ok => format!("acknowledged append {v} to key {k} by #{} is missing", op.id),
                                _ => format!("#{} committed (its marker is there) but its append {v} to key {k} is missing: not atomic", op.id),
                            };
                            found.push(("lost-append", why, vec![op.id]));
                        }
                    }
                }
            }
        }
        for (kind, why, ids) in found {
            self.flag(kind, why, ids);
        }
    }

    /// Reads are prefixes of the final lists, see no aborted or
    /// intermediate state, and see their own transaction's appends.
    fn reads(&mut self) {
        let mut found = Vec::new();
        let empty = Vec::new();
        for op in self.ops.iter().filter(|o| self.committed(o)) {
            let mut own: HashMap<u64, Vec<u64>> = HashMap::new();
            for micro in op.micros() {
                match micro {
                    Micro::Append(k, v) => own.entry(*k).or_default().push(*v),
                    Micro::Read(k, None) => found.push((
                        "missing-read",
                        format!(
                            "#{} committed but its read of key {k} left no row: not atomic",
                            op.id
                        ),
                        vec![op.id],
                    )),
                    Micro::Read(k, Some(read)) => {
                        let fin = self.fin.lists.get(k).unwrap_or(&empty);
                        for v in read {
                            if let Some(&(w, _)) = self.writer.get(v) {
                                if w != op.id && self.by_id[&w].outcome == Outcome::Fail {
                                    found.push(("G1a", format!("#{} read {v} in key {k}, written by #{w}, which failed", op.id), vec![w, op.id]));
                                }
                            }
                        }
                        if !fin.starts_with(read) {
                            let mut ids = vec![op.id];
                            ids.extend(
                                read.iter()
                                    .chain(fin.iter())
                                    .filter_map(|v| self.writer.get(v).map(|w| w.0))
                                    .take(6),
                            );
                            found.push(("incompatible-order", format!("#{} read key {k} as {read:?}, not a prefix of its final {fin:?}", op.id), ids));
                            continue;
                        }
                        let mine = own.get(k).map(Vec::as_slice).unwrap_or(&[]);
                        if !read.ends_with(mine) {
                            found.push((
                                "internal",
                                format!(
                                    "#{} read key {k} as {read:?} after appending {mine:?} itself",
                                    op.id
                                ),
                                vec![op.id],
                            ));
                        }
                        if let Some(last) = read.last() {
                            if let Some(&(w, _)) = self.writer.get(last) {
                                let wop = self.by_id[&w];
                                let later = wop
                                    .micros()
                                    .iter()
                                    .skip_while(|m| **m != Micro::Append(*k, *last))
                                    .skip(1)
                                    .any(|m| matches!(m, Micro::Append(k2, _) if k2 == k));
                                if w != op.id && later {
                                    found.push(("G1b", format!("#{} read key {k} as {read:?}: an intermediate state of #{w}", op.id), vec![w, op.id]));
                                }
                            }
                        }
                    }
                }
            }
        }
        for (kind, why, ids) in found {
            self.flag(kind, why, ids);
        }
    }

    /// A linearizable (or strong) read sees everything that was known to be
    /// committed before it began: every acknowledged append, and everything
    /// an earlier completed read observed. A weak read sees at least the
    /// appends its own node acknowledged before it began (docs/API.md: "a
    /// write acknowledged by node A is visible on node A at once").
    fn realtime_reads(&mut self) {
        // key, or (node, key) -> facts
        let mut global: HashMap<u64, Facts> = HashMap::new();
        let mut local: HashMap<(usize, u64), Facts> = HashMap::new();
        for op in self.ops.iter().filter(|o| o.outcome == Outcome::Ok) {
            for micro in op.micros() {
                let (k, len) = match micro {
                    Micro::Append(k, v) => {
                        let Some(pos) = self
                            .fin
                            .lists
                            .get(k)
                            .and_then(|l| l.iter().position(|x| x == v))
                        else {
                            continue;
                        };
                        local.entry((op.node, *k)).or_default().push((
                            op.complete_ms,
                            pos + 1,
                            op.id,
                        ));
                        (*k, pos + 1)
                    }
                    Micro::Read(k, Some(read)) => (*k, read.len()),
                    Micro::Read(_, None) => continue,
                };
                global
                    .entry(k)
                    .or_default()
                    .push((op.complete_ms, len, op.id));
            }
        }
        let global = prefix_maxima(global);
        let local = prefix_maxima(local);
        let mut found = Vec::new();
        for op in self.ops.iter().filter(|o| o.outcome == Outcome::Ok) {
            let OpKind::ListRead { level, reads } = &op.kind else {
                continue;
            };
            let strict = level == "linearizable" || level == "strong";
            if !strict && level != "weak" {
                continue;
            }
            for micro in reads {
                let Micro::Read(k, Some(read)) = micro else {
                    continue;
                };
                let facts = if strict {
                    global.get(k)
                } else {
                    local.get(&(op.node, *k))
                };
                let Some((need, by)) = facts.and_then(|f| before(f, op.invoke_ms)) else {
                    continue;
                };
                if read.len() < need {
                    let (kind, whose) = if strict {
                        ("stale-read", "")
                    } else {
                        ("stale-local-read", " on the same node")
                    };
                    found.push((kind, format!("#{} ({level}) read key {k} with {} elements, but #{by}, completed{whose} before it began, shows {need}", op.id, read.len()), vec![by, op.id]));
                }
            }
        }
        for (kind, why, ids) in found {
            self.flag(kind, why, ids);
        }
    }

    /// Seqnos are the cluster's one order: unique, later for a write-set
    /// submitted after another was acknowledged, and in the order the
    /// appends took effect.
    fn seqnos(&mut self) {
        let mut found = Vec::new();
        let mut by_seqno: HashMap<i64, u64> = HashMap::new();
        let mut acked: Vec<(u64, i64, u64)> = Vec::new(); // (completed, seqno, id)
        for op in self.ops.iter() {
            let Some(seqno) = op.seqno() else { continue };
            if let Some(other) = by_seqno.insert(seqno, op.id) {
                found.push((
                    "duplicate-seqno",
                    format!("#{other} and #{} both got seqno {seqno}", op.id),
                    vec![other, op.id],
                ));
            }
            acked.push((op.complete_ms, seqno, op.id));
        }
        acked.sort();
        let mut max = (i64::MIN, 0u64);
        let prefix: Facts = acked
            .iter()
            .map(|&(t, seqno, id)| {
                if seqno > max.0 {
                    max = (seqno, id);
                }
                (t, max.0 as usize, max.1)
            })
            .collect();
        for op in self.ops.iter() {
            let Some(seqno) = op.seqno() else { continue };
            if let Some((earlier, by)) = before(&prefix, op.invoke_ms) {
                if earlier as i64 >= seqno {
                    found.push(("seqno-order", format!("#{} got seqno {seqno}, but #{by}, acknowledged before it was sent, got {earlier}", op.id), vec![by, op.id]));
                }
            }
        }
        for (k, list) in &self.fin.lists {
            for pair in list.windows(2) {
                let (Some(&(a, _)), Some(&(b, _))) =
                    (self.writer.get(&pair[0]), self.writer.get(&pair[1]))
                else {
                    continue;
                };
                let (Some(sa), Some(sb)) = (self.by_id[&a].seqno(), self.by_id[&b].seqno()) else {
                    continue;
                };
                if a != b && sa >= sb {
                    found.push((
                        "seqno-order",
                        format!(
                            "in key {k} #{a}'s append (seqno {sa}) precedes #{b}'s (seqno {sb})"
                        ),
                        vec![a, b],
                    ));
                }
            }
        }
        for (kind, why, ids) in found {
            self.flag(kind, why, ids);
        }
    }

    fn graph(&mut self) {
        let mut edges: HashMap<u64, Vec<(u64, Edge)>> = HashMap::new();
        let add = |a: u64, b: u64, e: Edge, edges: &mut HashMap<u64, Vec<(u64, Edge)>>| {
            if a != b {
                edges.entry(a).or_default().push((b, e));
            }
        };
        let writer_of = |v: &u64| self.writer.get(v).map(|w| w.0);
        for list in self.fin.lists.values() {
            for pair in list.windows(2) {
                if let (Some(a), Some(b)) = (writer_of(&pair[0]), writer_of(&pair[1])) {
                    add(a, b, Edge::Ww, &mut edges);
                }
            }
        }
        for op in self.ops.iter().filter(|o| self.committed(o)) {
            for micro in op.micros() {
                let Micro::Read(k, Some(read)) = micro else {
                    continue;
                };
                let Some(fin) = self.fin.lists.get(k) else {
                    continue;
                };
                if !fin.starts_with(read) {
                    continue; // already reported; its place in the order is unknown
                }
                let last_writer = read.last().and_then(writer_of);
                if let Some(w) = last_writer {
                    add(w, op.id, Edge::Wr, &mut edges);
                }
                // The next version is the next transaction's: more appends
                // by the writer just read are its intermediate state (G1b,
                // reported above), not a later version.
                let next = fin[read.len()..]
                    .iter()
                    .filter_map(writer_of)
                    .find(|&w| Some(w) != last_writer);
                if let Some(w) = next {
                    add(op.id, w, Edge::Rw, &mut edges);
                }
            }
        }
        for list in edges.values_mut() {
            list.sort_by_key(|&(b, e)| (b, e as u8));
            list.dedup();
        }
        self.report.graph_edges = edges.values().map(Vec::len).sum();
        let cycles = Cycles::new(&edges).find();
        self.report.allowed_cycles = cycles.allowed;
        self.report.incomplete = cycles.incomplete;
        for (kind, cycle) in cycles.forbidden {
            let why = cycle
                .iter()
                .map(|(a, e)| format!("#{a} -{}->", format!("{e:?}").to_lowercase()))
                .collect::<Vec<_>>()
                .join(" ")
                + &format!(" #{}", cycle[0].0);
            let ids = cycle.iter().map(|c| c.0).collect();
            self.flag(kind, why, ids);
        }
    }

    /// Totals stay constant in every read, and the final balances are the
    /// initial ones plus the transfers that committed.
    fn bank(&mut self) {
        let total: i64 = self.fin.initial_balances.values().sum();
        let mut found = Vec::new();
        for op in self.ops.iter().filter(|o| o.outcome == Outcome::Ok) {
            if let OpKind::BankRead { balances, .. } = &op.kind {
                let sum: i64 = balances.iter().map(|b| b.1).sum();
                let negative = balances.iter().any(|b| b.1 < 0);
                if sum != total || negative || balances.len() != self.fin.initial_balances.len() {
                    found.push(("bank-read", format!("#{} read a total of {sum} over {} accounts (expected {total} over {}, none negative)", op.id, balances.len(), self.fin.initial_balances.len()), vec![op.id]));
                }
            }
        }
        let mut expected = self.fin.initial_balances.clone();
        for op in self.ops.iter().filter(|o| self.committed(o)) {
            if let OpKind::Transfer { from, to, amount } = op.kind {
                *expected.entry(from).or_default() -= amount;
                *expected.entry(to).or_default() += amount;
            }
        }
        if expected != self.fin.balances {
            found.push((
                "bank-final",
                format!(
                    "final balances {:?}, but the committed transfers give {expected:?}",
                    self.fin.balances
                ),
                vec![],
            ));
        }
        for (kind, why, ids) in found {
            self.flag(kind, why, ids);
        }
    }
}

/// Cycle search over the dependency graph, one strongly connected
/// component at a time (edges between components cannot be on a cycle).
struct Cycles<'g> {
    edges: &'g HashMap<u64, Vec<(u64, Edge)>>,
    comp: HashMap<u64, usize>,
    budget: usize,
    forbidden: Vec<(&'static str, Vec<(u64, Edge)>)>,
    allowed: usize,
    incomplete: Option<String>,
}

/// How many graph steps the searches may take in all, so a pathological
/// history cannot stall the test; running out is reported, not hidden.
const SEARCH_BUDGET: usize = 50_000_000;
/// Enough examples of one kind of cycle to debug it.
const CYCLES_PER_KIND: usize = 5;

impl<'g> Cycles<'g> {
    fn new(edges: &'g HashMap<u64, Vec<(u64, Edge)>>) -> Self {
        Cycles {
            edges,
            comp: tarjan(edges),
            budget: SEARCH_BUDGET,
            forbidden: Vec::new(),
            allowed: 0,
            incomplete: None,
        }
    }

    fn count(&self, kind: &str) -> usize {
        self.forbidden.iter().filter(|f| f.0 == kind).count()
    }

    fn find(mut self) -> Self {
        let mut starts: Vec<(u64, u64, Edge)> = Vec::new();
        for (&a, out) in self.edges {
            for &(b, e) in out {
                if self.comp.contains_key(&a) && self.comp.get(&a) == self.comp.get(&b) {
                    starts.push((a, b, e));
                }
            }
        }
        starts.sort_by_key(|&(a, b, e)| (e as u8, a, b));
        let mut in_cycle: HashSet<(u64, u64)> = HashSet::new();
        for (a, b, e) in starts {
            if self.budget == 0 {
                self.incomplete = Some("cycle search stopped at its step budget".into());
                break;
            }
            // A G0/G1c cycle through an edge already explained is the same story.
            if e != Edge::Rw && in_cycle.contains(&(a, b)) {
                continue;
            }
            let path = match e {
                Edge::Ww => self.path_back(b, a, e, &[Edge::Ww]),
                Edge::Wr => self.path_back(b, a, e, &[Edge::Ww, Edge::Wr]),
                // Read skew first (the only rw edge is this one), then any
                // cycle whose rw edges are never adjacent.
                Edge::Rw => self
                    .path_back(b, a, e, &[Edge::Ww, Edge::Wr])
                    .or_else(|| self.path_back(b, a, e, &[Edge::Ww, Edge::Wr, Edge::Rw])),
            };
            let Some(path) = path else {
                // Inside a component every edge lies on some cycle; this
                // one only on cycles with adjacent rw edges: write skew.
                if e == Edge::Rw {
                    self.allowed += 1;
                }
                continue;
            };
            let mut cycle = vec![(a, e)];
            cycle.extend(path);
            let rw = cycle.iter().filter(|c| c.1 == Edge::Rw).count();
            let kind = match (rw, cycle.iter().any(|c| c.1 == Edge::Wr)) {
                (0, false) => "G0",
                (0, true) => "G1c",
                (1, _) => "G-single",
                _ => "G-nonadjacent",
            };
            for w in cycle.windows(2) {
                in_cycle.insert((w[0].0, w[1].0));
            }
            if self.count(kind) < CYCLES_PER_KIND
                && !self.forbidden.iter().any(|f| same_cycle(&f.1, &cycle))
            {
                self.forbidden.push((kind, cycle));
            }
        }
        self
    }

    /// A shortest path from `from` back to `to` over `allowed` edges, never
    /// two rw edges in a row (counting the closing edge `first` into
    /// `from`, and the wrap-around into `to`'s outgoing `first`).
    fn path_back(
        &mut self,
        from: u64,
        to: u64,
        first: Edge,
        allowed: &[Edge],
    ) -> Option<Vec<(u64, Edge)>> {
        let comp = self.comp.get(&from).copied();
        // state: (node, arrived by rw)
        let start = (from, first == Edge::Rw);
        let mut prev: HashMap<(u64, bool), ((u64, bool), Edge)> = HashMap::new();
        let mut queue = VecDeque::from([start]);
        let mut seen = HashSet::from([start]);
        while let Some(state @ (node, by_rw)) = queue.pop_front() {
            for &(next, e) in self.edges.get(&node).into_iter().flatten() {
                self.budget = self.budget.saturating_sub(1);
                if !allowed.contains(&e)
                    || self.comp.get(&next).copied() != comp
                    || (e == Edge::Rw && by_rw)
                {
                    continue;
                }
                if next == to {
                    if e == Edge::Rw && first == Edge::Rw {
                        continue; // closing rw next to the opening rw: write skew
                    }
                    let mut path = vec![(node, e)];
                    let mut cur = state;
                    while cur != start {
                        let (p, pe) = prev[&cur];
                        path.push((p.0, pe));
                        cur = p;
                    }
                    path.reverse();
                    // path holds (node, edge leaving it); the first is `from`.
                    let nodes: HashSet<u64> = path.iter().map(|p| p.0).collect();
                    if nodes.len() != path.len() || nodes.contains(&to) {
                        return None; // not a simple cycle: no clean example
                    }
                    return Some(path);
                }
                let ns = (next, e == Edge::Rw);
                if seen.insert(ns) {
                    prev.insert(ns, (state, e));
                    queue.push_back(ns);
                }
            }
            if self.budget == 0 {
                return None;
            }
        }
        None
    }
}

/// (completed at, length of a key's final list it proves, op id)
type Facts = Vec<(u64, usize, u64)>;

/// Per key, the facts sorted by completion time with the longest list
/// proved so far (and by whom), for a binary search per read.
fn prefix_maxima<K: std::hash::Hash + Eq>(facts: HashMap<K, Facts>) -> HashMap<K, Facts> {
    facts
        .into_iter()
        .map(|(k, mut f)| {
            f.sort();
            let mut max = (0usize, 0u64);
            let prefix = f
                .into_iter()
                .map(|(t, len, id)| {
                    if len > max.0 {
                        max = (len, id);
                    }
                    (t, max.0, max.1)
                })
                .collect();
            (k, prefix)
        })
        .collect()
}

/// The longest list proved by operations completed before `t`.
fn before(prefix: &Facts, t: u64) -> Option<(usize, u64)> {
    let n = prefix.partition_point(|&(done, _, _)| done < t);
    (n > 0).then(|| (prefix[n - 1].1, prefix[n - 1].2))
}

fn same_cycle(a: &[(u64, Edge)], b: &[(u64, Edge)]) -> bool {
    let sa: HashSet<u64> = a.iter().map(|x| x.0).collect();
    let sb: HashSet<u64> = b.iter().map(|x| x.0).collect();
    sa == sb
}

/// Strongly connected components (iterative Tarjan); only nodes in a
/// component of two or more get an entry.
fn tarjan(edges: &HashMap<u64, Vec<(u64, Edge)>>) -> HashMap<u64, usize> {
    let mut nodes: Vec<u64> = edges
        .iter()
        .flat_map(|(a, out)| std::iter::once(*a).chain(out.iter().map(|o| o.0)))
        .collect();
    nodes.sort_unstable();
    nodes.dedup();
    let mut index: HashMap<u64, usize> = HashMap::new();
    let mut low: HashMap<u64, usize> = HashMap::new();
    let mut on_stack: HashSet<u64> = HashSet::new();
    let mut stack: Vec<u64> = Vec::new();
    let mut comp: HashMap<u64, usize> = HashMap::new();
    let mut next_index = 0;
    let mut next_comp = 0;
    let empty = Vec::new();
    for &root in &nodes {
        if index.contains_key(&root) {
            continue;
        }
        // (node, position in its edge list)
        let mut work: Vec<(u64, usize)> = vec![(root, 0)];
        while let Some(&(v, i)) = work.last() {
            if i == 0 && !index.contains_key(&v) {
                index.insert(v, next_index);
                low.insert(v, next_index);
                next_index += 1;
                stack.push(v);
                on_stack.insert(v);
            }
            let out = edges.get(&v).unwrap_or(&empty);
            if i < out.len() {
                let w = out[i].0;
                if let Some(top) = work.last_mut() {
                    top.1 += 1;
                }
                if !index.contains_key(&w) {
                    work.push((w, 0));
                } else if on_stack.contains(&w) {
                    let lw = index[&w].min(low[&v]);
                    low.insert(v, lw);
                }
                continue;
            }
            work.pop();
            if let Some(&(parent, _)) = work.last() {
                let lp = low[&parent].min(low[&v]);
                low.insert(parent, lp);
            }
            if low[&v] == index[&v] {
                let mut members = Vec::new();
                while let Some(w) = stack.pop() {
                    on_stack.remove(&w);
                    members.push(w);
                    if w == v {
                        break;
                    }
                }
                if members.len() > 1 {
                    for m in members {
                        comp.insert(m, next_comp);
                    }
                    next_comp += 1;
                }
            }
        }
    }
    comp
}
