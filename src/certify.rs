//! Certification: first committer wins.
//!
//! Pure logic, no SQLite: the verdict for a write-set is a function of the
//! write-set, its seqno, the certification window, the seqno of the last
//! schema change and the certification index (key → seqno of its last
//! change). The index is replicated state (the store keeps it in the
//! database, in the same transaction as the data), so every node reaches the
//! same verdict.
//!
//! This module also owns the byte format of certification keys, so that the
//! rendering in a conflict message and the encoding can never drift apart.

use std::collections::BTreeMap;
use std::convert::Infallible;

use crate::writeset::{CertKey, FailReason, Payload, Seqno, WriteSet};

/// Keys are forgotten only at seqnos that are multiples of this.
pub const PRUNE_INTERVAL: i64 = 1024;

/// Lookup of the last change of a key. Implemented over a map in memory
/// (tests, simulations) and over the `_quorate_cert` table (the store).
pub trait CertIndex {
    type Error;
    fn last_change(&mut self, key: &CertKey) -> Result<Option<Seqno>, Self::Error>;
}

/// Certify `ws`, ordered at `seqno`.
///
/// The outer `Result` is the index's own failure (I/O); the inner one is the
/// verdict, identical on every node.
///
/// A statements payload (total order isolation) is not certified: it runs
/// against whatever state its place in the order gives it, on every node.
pub fn certify<I: CertIndex>(
    index: &mut I,
    ws: &WriteSet,
    seqno: Seqno,
    window: i64,
    last_ddl_seqno: Seqno,
) -> Result<Result<(), FailReason>, I::Error> {
    if matches!(ws.payload, Payload::Statements(_)) {
        return Ok(Ok(()));
    }
    // Checked before the keys: pruning relies on every write-set whose
    // snapshot predates the window failing here, whatever its keys.
    if seqno.saturating_sub(ws.snapshot_seqno) > window {
        return Ok(Err(FailReason::TooOld {
            snapshot_seqno: ws.snapshot_seqno,
            window_start: seqno.saturating_sub(window),
        }));
    }
    // The origin read its snapshot from seqnos already assigned; one at or
    // past this write-set's own seqno is forged, and would pass every key.
    if ws.snapshot_seqno >= seqno {
        return Ok(Err(FailReason::ApplyFailed {
            message: format!(
                "its snapshot seqno {} is not before its own seqno {seqno} (the origin node is \
                 faulty or not a genuine quorate node)",
                ws.snapshot_seqno
            ),
        }));
    }
    if last_ddl_seqno > ws.snapshot_seqno {
        return Ok(Err(FailReason::SchemaChanged {
            ddl_seqno: last_ddl_seqno,
        }));
    }
    for key in &ws.keys {
        if let Some(changed) = index.last_change(key)? {
            if changed > ws.snapshot_seqno {
                return Ok(Err(FailReason::Conflict {
                    key: render_key(key),
                    conflicting_seqno: changed,
                }));
            }
        }
    }
    Ok(Ok(()))
}

/// The pruning rule: after the write-set at `seqno`, forget keys whose last
/// change is below the returned seqno. A function of the log position only.
///
/// Safe because a later write-set at `s >= seqno` passes the window check
/// only if its snapshot is `>= s - window >= seqno - window`, and a key last
/// changed before that can never be "changed after the snapshot".
pub fn prune_below(seqno: Seqno, window: i64) -> Option<Seqno> {
    prune_below_every(seqno, window, PRUNE_INTERVAL)
}

fn prune_below_every(seqno: Seqno, window: i64, interval: i64) -> Option<Seqno> {
    if seqno > 0 && interval > 0 && seqno % interval == 0 {
        Some(seqno.saturating_sub(window))
    } else {
        None
    }
}

/// The certification index in memory, for tests and simulations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryCertIndex {
    last: BTreeMap<CertKey, Seqno>,
}

impl MemoryCertIndex {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn record(&mut self, keys: &[CertKey], seqno: Seqno) {
        for key in keys {
            self.last.insert(key.clone(), seqno);
        }
    }

    pub fn prune(&mut self, below: Seqno) {
        self.last.retain(|_, s| *s >= below);
    }

    pub fn len(&self) -> usize {
        self.last.len()
    }

    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }
}

impl CertIndex for MemoryCertIndex {
    type Error = Infallible;
    fn last_change(&mut self, key: &CertKey) -> Result<Option<Seqno>, Infallible> {
        Ok(self.last.get(key).copied())
    }
}

// ---------------------------------------------------------------------------
// Key format
//
//   table (ASCII lower-cased) 0x00 'P' values...
//   table (ASCII lower-cased) 0x00 'U' index (lower-cased) 0x00 values...
//
// Each value is a type tag and a self-delimiting body, so that no sequence of
// values is a prefix-ambiguous encoding of another:
//   0x00 NULL | 0x01 integer (i64 BE) | 0x02 real (f64 bits BE)
//   0x03 text (u32 BE length, UTF-8) | 0x04 blob (u32 BE length, bytes)
// A real with an exact integer value is encoded as that integer: SQLite
// compares 1 and 1.0 as equal in an index, so they must be one key.
// Table and index names are ASCII lower-cased because SQLite identifiers are
// case-insensitive for ASCII only.

const TAG_ROW: u8 = b'P';
const TAG_UNIQUE: u8 = b'U';
const V_NULL: u8 = 0;
const V_INT: u8 = 1;
const V_REAL: u8 = 2;
const V_TEXT: u8 = 3;
const V_BLOB: u8 = 4;

/// One value of a key, borrowed from a changeset or a row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KeyValue<'a> {
    Null,
    Integer(i64),
    Real(f64),
    Text(&'a [u8]),
    Blob(&'a [u8]),
}

/// `(table, primary key)`.
pub fn row_key(table: &str, pk: &[KeyValue<'_>]) -> CertKey {
    let mut out = Vec::with_capacity(table.len() + 2 + pk.len() * 9);
    push_name(&mut out, table);
    out.push(TAG_ROW);
    for v in pk {
        push_value(&mut out, v);
    }
    CertKey(out)
}

/// `(table, unique index, values)`.
pub fn unique_key(table: &str, index: &str, values: &[KeyValue<'_>]) -> CertKey {
    let mut out = Vec::with_capacity(table.len() + index.len() + 3 + values.len() * 9);
    push_name(&mut out, table);
    out.push(TAG_UNIQUE);
    push_name(&mut out, index);
    for v in values {
        push_value(&mut out, v);
    }
    CertKey(out)
}

fn push_name(out: &mut Vec<u8>, name: &str) {
    out.extend(name.bytes().map(|b| b.to_ascii_lowercase()));
    out.push(0);
}

fn push_value(out: &mut Vec<u8>, v: &KeyValue<'_>) {
    match *v {
        KeyValue::Null => out.push(V_NULL),
        KeyValue::Integer(i) => {
            out.push(V_INT);
            out.extend_from_slice(&i.to_be_bytes());
        }
        KeyValue::Real(r) => match exact_integer(r) {
            Some(i) => {
                out.push(V_INT);
                out.extend_from_slice(&i.to_be_bytes());
            }
            None => {
                out.push(V_REAL);
                out.extend_from_slice(&r.to_bits().to_be_bytes());
            }
        },
        KeyValue::Text(t) => push_bytes(out, V_TEXT, t),
        KeyValue::Blob(b) => push_bytes(out, V_BLOB, b),
    }
}

fn push_bytes(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
    out.push(tag);
    // Values longer than 4 GiB cannot exist in SQLite (its limit is 2 GiB),
    // so saturating here never merges two real values.
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

fn exact_integer(r: f64) -> Option<i64> {
    // -2^63 and 2^63 bound the i64 range exactly in f64.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    if r.fract() == 0.0 && (-LIMIT..LIMIT).contains(&r) {
        // In range and integral, so the cast is exact (and -0.0 becomes 0).
        Some(r as i64)
    } else {
        None
    }
}

/// A readable rendering of a key for error messages, e.g.
/// `users PRIMARY KEY (1)` or `users UNIQUE users_email ('a@example.com')`.
/// Never fails: bytes that do not parse are shown in hex.
pub fn render_key(key: &CertKey) -> String {
    render(&key.0).unwrap_or_else(|| format!("key 0x{}", hex(&key.0)))
}

fn render(bytes: &[u8]) -> Option<String> {
    let (table, rest) = split_name(bytes)?;
    let (&tag, rest) = rest.split_first()?;
    let (head, mut rest) = match tag {
        TAG_ROW => (format!("{table} PRIMARY KEY"), rest),
        TAG_UNIQUE => {
            let (index, rest) = split_name(rest)?;
            (format!("{table} UNIQUE {index}"), rest)
        }
        _ => return None,
    };
    let mut values = Vec::new();
    while !rest.is_empty() {
        let (v, tail) = render_value(rest)?;
        values.push(v);
        rest = tail;
    }
    Some(format!("{head} ({})", values.join(", ")))
}

fn split_name(bytes: &[u8]) -> Option<(String, &[u8])> {
    let end = bytes.iter().position(|&b| b == 0)?;
    let name = String::from_utf8_lossy(&bytes[..end]).into_owned();
    Some((name, &bytes[end + 1..]))
}

fn render_value(bytes: &[u8]) -> Option<(String, &[u8])> {
    let (&tag, rest) = bytes.split_first()?;
    match tag {
        V_NULL => Some(("NULL".to_string(), rest)),
        V_INT => {
            let (b, rest) = take::<8>(rest)?;
            Some((i64::from_be_bytes(b).to_string(), rest))
        }
        V_REAL => {
            let (b, rest) = take::<8>(rest)?;
            Some((f64::from_bits(u64::from_be_bytes(b)).to_string(), rest))
        }
        V_TEXT | V_BLOB => {
            let (len, rest) = take::<4>(rest)?;
            let len = usize::try_from(u32::from_be_bytes(len)).ok()?;
            if rest.len() < len {
                return None;
            }
            let (body, rest) = rest.split_at(len);
            let shown = if tag == V_TEXT {
                format!("'{}'", String::from_utf8_lossy(body).replace('\'', "''"))
            } else {
                format!("x'{}'", hex(body))
            };
            Some((shown, rest))
        }
        _ => None,
    }
}

fn take<const N: usize>(bytes: &[u8]) -> Option<([u8; N], &[u8])> {
    if bytes.len() < N {
        return None;
    }
    let (head, rest) = bytes.split_at(N);
    let arr: [u8; N] = head.try_into().ok()?;
    Some((arr, rest))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::Statement;
    use proptest::prelude::*;

    fn ws(snapshot: Seqno, keys: &[CertKey]) -> WriteSet {
        WriteSet {
            origin: "n".into(),
            trx_id: 0,
            snapshot_seqno: snapshot,
            keys: keys.to_vec(),
            payload: Payload::Changeset(vec![]),
        }
    }

    fn ddl(snapshot: Seqno) -> WriteSet {
        WriteSet {
            payload: Payload::Statements(vec![Statement::new(
                "CREATE TABLE x(id INTEGER PRIMARY KEY)",
            )]),
            ..ws(snapshot, &[])
        }
    }

    fn k(i: i64) -> CertKey {
        row_key("t", &[KeyValue::Integer(i)])
    }

    #[test]
    fn a_snapshot_at_or_past_its_own_seqno_is_forged() {
        let mut idx = MemoryCertIndex::new();
        idx.record(&[k(1)], 5);
        // A forged future snapshot would pass the key check: refused first.
        for snapshot in [9, 10, Seqno::MAX] {
            match certify(&mut idx, &ws(snapshot, &[k(1)]), 9, 100, -1).unwrap() {
                Err(FailReason::ApplyFailed { message }) => {
                    assert!(message.contains("not before its own seqno 9"), "{message}")
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            certify(&mut idx, &ws(8, &[k(1)]), 9, 100, -1).unwrap(),
            Ok(())
        );
    }

    #[test]
    fn verdict_table() {
        // (index contents, write-set, seqno, window, last_ddl, expected)
        type Case = (
            Vec<(i64, Seqno)>,
            WriteSet,
            Seqno,
            i64,
            Seqno,
            Result<(), FailReason>,
        );
        let conflict = |i: i64, s: Seqno| {
            Err(FailReason::Conflict {
                key: render_key(&k(i)),
                conflicting_seqno: s,
            })
        };
        let cases: Vec<Case> = vec![
            // Empty index: passes.
            (vec![], ws(4, &[k(1)]), 5, 100, -1, Ok(())),
            // Key changed at the snapshot itself: the origin saw it, passes.
            (vec![(1, 4)], ws(4, &[k(1)]), 5, 100, -1, Ok(())),
            // Key changed before the snapshot: passes.
            (vec![(1, 2)], ws(4, &[k(1)]), 5, 100, -1, Ok(())),
            // Key changed after the snapshot: conflict, naming the seqno.
            (vec![(1, 5)], ws(4, &[k(1)]), 6, 100, -1, conflict(1, 5)),
            // Only the first conflicting key (in write-set order) is reported.
            (
                vec![(1, 5), (2, 6)],
                ws(4, &[k(2), k(1)]),
                7,
                100,
                -1,
                conflict(2, 6),
            ),
            // Other keys changed after the snapshot do not matter.
            (vec![(2, 6)], ws(4, &[k(1)]), 7, 100, -1, Ok(())),
            // Exactly at the window edge: passes.
            (vec![], ws(0, &[k(1)]), 10, 10, -1, Ok(())),
            // One past the window: too old, even without any key.
            (
                vec![],
                ws(0, &[]),
                11,
                10,
                -1,
                Err(FailReason::TooOld {
                    snapshot_seqno: 0,
                    window_start: 1,
                }),
            ),
            // TooOld wins over a key conflict.
            (
                vec![(1, 11)],
                ws(0, &[k(1)]),
                12,
                10,
                -1,
                Err(FailReason::TooOld {
                    snapshot_seqno: 0,
                    window_start: 2,
                }),
            ),
            // A schema change after the snapshot.
            (
                vec![],
                ws(4, &[k(1)]),
                7,
                100,
                5,
                Err(FailReason::SchemaChanged { ddl_seqno: 5 }),
            ),
            // A schema change at the snapshot: the origin saw it.
            (vec![], ws(5, &[k(1)]), 7, 100, 5, Ok(())),
            // DDL write-sets are not certified at all.
            (vec![(1, 6)], ddl(0), 1000, 10, 999, Ok(())),
            // Fresh cluster: snapshot -1, first seqno 0.
            (vec![], ws(-1, &[k(1)]), 0, 100, -1, Ok(())),
        ];
        for (n, (entries, w, seqno, window, last_ddl, want)) in cases.into_iter().enumerate() {
            let mut idx = MemoryCertIndex::new();
            for (key, s) in entries {
                idx.record(&[k(key)], s);
            }
            let got = certify(&mut idx, &w, seqno, window, last_ddl).unwrap();
            assert_eq!(got, want, "case {n}");
        }
    }

    #[test]
    fn prune_rule_depends_on_position_only() {
        assert_eq!(prune_below(0, 100), None);
        assert_eq!(prune_below(1023, 100), None);
        assert_eq!(prune_below(1024, 100), Some(924));
        assert_eq!(prune_below(2048, 5000), Some(-2952));
        assert_eq!(prune_below(2049, 100), None);
        assert_eq!(prune_below(-1024, 100), None);
    }

    #[test]
    fn keys_distinguish_types_and_normalise_numbers() {
        let t = |v: KeyValue<'_>| row_key("T", &[v]);
        assert_eq!(t(KeyValue::Integer(1)), t(KeyValue::Real(1.0)));
        assert_eq!(t(KeyValue::Integer(0)), t(KeyValue::Real(-0.0)));
        assert_ne!(t(KeyValue::Integer(1)), t(KeyValue::Text(b"1")));
        assert_ne!(t(KeyValue::Text(b"1")), t(KeyValue::Blob(b"1")));
        assert_ne!(t(KeyValue::Real(1.5)), t(KeyValue::Text(b"1.5")));
        assert_ne!(t(KeyValue::Null), t(KeyValue::Integer(0)));
        // Composite keys do not run together.
        assert_ne!(
            row_key("t", &[KeyValue::Text(b"ab"), KeyValue::Text(b"c")]),
            row_key("t", &[KeyValue::Text(b"a"), KeyValue::Text(b"bc")])
        );
        // Table names are case-insensitive; row and unique keys differ.
        assert_eq!(
            row_key("Users", &[KeyValue::Integer(1)]),
            row_key("users", &[KeyValue::Integer(1)])
        );
        assert_ne!(
            row_key("users", &[KeyValue::Integer(1)]),
            unique_key("users", "", &[KeyValue::Integer(1)])
        );
        assert_ne!(
            unique_key("t", "a", &[KeyValue::Integer(1)]),
            unique_key("t", "b", &[KeyValue::Integer(1)])
        );
    }

    #[test]
    fn keys_render_readably() {
        let key = row_key("Users", &[KeyValue::Integer(7), KeyValue::Text(b"o'k")]);
        assert_eq!(render_key(&key), "users PRIMARY KEY (7, 'o''k')");
        let key = unique_key(
            "users",
            "users_email",
            &[KeyValue::Text(b"a@b"), KeyValue::Null],
        );
        assert_eq!(render_key(&key), "users UNIQUE users_email ('a@b', NULL)");
        let key = row_key("b", &[KeyValue::Blob(&[0xde, 0xad]), KeyValue::Real(0.5)]);
        assert_eq!(render_key(&key), "b PRIMARY KEY (x'dead', 0.5)");
        assert_eq!(render_key(&CertKey(vec![1, 2])), "key 0x0102");
    }

    /// One step of the simulated log: a write-set's keys (indexes into a
    /// small universe, so that conflicts are frequent), how far behind its
    /// snapshot is, and whether it is DDL.
    #[derive(Debug, Clone)]
    struct Step {
        keys: Vec<u8>,
        lag: i64,
        ddl: bool,
        apply_fails: bool,
    }

    fn step() -> impl Strategy<Value = Step> {
        (
            prop::collection::vec(0u8..24, 0..4),
            0i64..40,
            prop::bool::weighted(0.03),
            prop::bool::weighted(0.05),
        )
            .prop_map(|(keys, lag, ddl, apply_fails)| Step {
                keys,
                lag,
                ddl,
                apply_fails,
            })
    }

    fn to_ws(s: &Step, seqno: Seqno) -> WriteSet {
        let snapshot = (seqno - 1 - s.lag).max(-1);
        let keys: Vec<CertKey> = s.keys.iter().map(|&i| k(i64::from(i))).collect();
        if s.ddl {
            ddl(snapshot)
        } else {
            ws(snapshot, &keys)
        }
    }

    /// Runs the log from `start` on `state`, as the store does: certify,
    /// record the keys of what commits, prune by the rule.
    fn run(
        log: &[Step],
        start: usize,
        idx: &mut MemoryCertIndex,
        last_ddl: &mut Seqno,
        window: i64,
        interval: Option<i64>,
    ) -> Vec<Result<(), FailReason>> {
        let mut verdicts = Vec::new();
        for (i, s) in log.iter().enumerate().skip(start) {
            let seqno = i as Seqno;
            let w = to_ws(s, seqno);
            let v = certify(idx, &w, seqno, window, *last_ddl).unwrap();
            if v.is_ok() && !s.apply_fails {
                if s.ddl {
                    *last_ddl = seqno;
                }
                idx.record(&w.keys, seqno);
            }
            if let Some(below) = interval.and_then(|every| prune_below_every(seqno, window, every))
            {
                idx.prune(below);
            }
            verdicts.push(v);
        }
        verdicts
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// (a) a node that rebuilds its index by replaying the log from
        /// scratch reaches the same verdicts as one that kept it live.
        #[test]
        fn rebuilt_index_gives_same_verdicts(
            log in prop::collection::vec(step(), 1..300),
            cut in 0usize..300,
            window in 1i64..60,
        ) {
            let cut = cut.min(log.len());
            let mut live = MemoryCertIndex::new();
            let mut live_ddl = -1;
            let all = run(&log, 0, &mut live, &mut live_ddl, window, Some(16));

            let mut rebuilt = MemoryCertIndex::new();
            let mut rebuilt_ddl = -1;
            let head = run(&log[..cut], 0, &mut rebuilt, &mut rebuilt_ddl, window, Some(16));
            let tail = run(&log, cut, &mut rebuilt, &mut rebuilt_ddl, window, Some(16));
            let replayed: Vec<_> = head.into_iter().chain(tail).collect();
            prop_assert_eq!(all, replayed);
            prop_assert_eq!(live, rebuilt);
        }

        /// (b) pruning by the rule never changes a verdict.
        #[test]
        fn pruning_never_changes_a_verdict(
            log in prop::collection::vec(step(), 1..400),
            window in 1i64..60,
            interval in 1i64..40,
        ) {
            let mut pruned = MemoryCertIndex::new();
            let mut full = MemoryCertIndex::new();
            let (mut d1, mut d2) = (-1, -1);
            let with = run(&log, 0, &mut pruned, &mut d1, window, Some(interval));
            let without = run(&log, 0, &mut full, &mut d2, window, None);
            prop_assert_eq!(with, without);
            prop_assert!(pruned.len() <= full.len());
        }

        #[test]
        fn render_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = render_key(&CertKey(bytes));
        }
    }
}
