//! Apply (DESIGN.md §2 step 4): certify and apply ordered write-sets, many
//! per SQLite transaction (group commit), with the certification index and
//! the position updated in that same transaction.
//!
//! Every verdict must be a pure function of the database state and the
//! write-set, so failures are split in two: what the write-set causes (a
//! conflict, a constraint, malformed bytes) becomes a verdict; what the
//! machine causes (I/O, disk full, locks) aborts the whole batch with `Err`,
//! leaving nothing changed, to be retried.

use std::collections::BTreeSet;

use rusqlite::config::DbConfig;
use rusqlite::Connection;

use super::auth::{AuthHandle, ClientScope};
use super::schema::SchemaCache;
use super::{changeset, is_environmental, keys, meta, values, Writer};
use crate::certify::{certify, prune_below, CertIndex};
use crate::sql::{ExecResult, Statement};
use crate::writeset::{ApplyOutcome, CertKey, FailReason, Payload, Seqno, Verdict, WriteSet};

/// The certification index in `_quorate_cert`, read inside the batch's
/// transaction (so it sees the batch's own earlier write-sets).
struct SqlCertIndex<'c>(&'c Connection);

impl CertIndex for SqlCertIndex<'_> {
    type Error = rusqlite::Error;
    fn last_change(&mut self, key: &CertKey) -> Result<Option<Seqno>, rusqlite::Error> {
        meta::cert_last_change(self.0, key)
    }
}

enum Abort {
    /// The database failed: give up the batch.
    Sqlite(rusqlite::Error),
    /// Write-set `i`'s statements ended the whole transaction (a ROLLBACK
    /// conflict clause or trigger): redo the batch with it failed.
    TxnEnded(usize),
}

impl From<rusqlite::Error> for Abort {
    fn from(e: rusqlite::Error) -> Self {
        Abort::Sqlite(e)
    }
}

struct Done {
    outcomes: Vec<ApplyOutcome>,
    seqno: Seqno,
    last_ddl_seqno: Seqno,
}

/// Returns the outcomes and the new last seqno.
pub(crate) fn apply_batch(
    w: &mut Writer,
    batch: &[WriteSet],
    raft_state: &[u8],
    from: Seqno,
    window: i64,
) -> rusqlite::Result<(Vec<ApplyOutcome>, Seqno)> {
    let has_statements = batch
        .iter()
        .any(|ws| matches!(ws.payload, Payload::Statements(_)));
    let mut ended: BTreeSet<usize> = BTreeSet::new();
    loop {
        exec_cached(&w.apply, "BEGIN IMMEDIATE")?;
        let result = apply_in_txn(w, batch, raft_state, from, window, &ended);
        let result = match result {
            Ok(done) => exec_cached(&w.apply, "COMMIT")
                .map(|()| done)
                .map_err(Abort::Sqlite),
            Err(e) => Err(e),
        };
        if has_statements {
            // Committed or rolled back, the schema may differ from before.
            w.schema_changed();
        }
        match result {
            Ok(done) => {
                w.last_ddl_seqno = done.last_ddl_seqno;
                return Ok((done.outcomes, done.seqno));
            }
            Err(abort) => {
                if !w.apply.is_autocommit() {
                    // The original error is the one worth reporting.
                    let _ = w.apply.execute_batch("ROLLBACK");
                }
                match abort {
                    Abort::Sqlite(e) => return Err(e),
                    // Each round fails one more write-set, so this ends.
                    Abort::TxnEnded(i) => {
                        ended.insert(i);
                    }
                }
            }
        }
    }
}

fn apply_in_txn(
    w: &mut Writer,
    batch: &[WriteSet],
    raft_state: &[u8],
    from: Seqno,
    window: i64,
    ended: &BTreeSet<usize>,
) -> Result<Done, Abort> {
    let mut seqno = from;
    let mut last_ddl = w.last_ddl_seqno;
    let mut outcomes = Vec::with_capacity(batch.len());
    for (i, ws) in batch.iter().enumerate() {
        // A forward retried after a lost answer can be ordered twice; only
        // the first counts. The check reads replicated state only.
        if let Some(first) = meta::trx_record_first(&w.apply, &ws.origin, ws.trx_id, seqno + 1)? {
            outcomes.push(ApplyOutcome {
                seqno: first,
                verdict: Verdict::Failed(FailReason::Duplicate { seqno: first }),
            });
            continue;
        }
        seqno += 1;
        let verdict = if ended.contains(&i) {
            Verdict::Failed(FailReason::ApplyFailed {
                message: "a statement ended the transaction (ROLLBACK conflict clause or RAISE(ROLLBACK))".into(),
            })
        } else {
            match certify(&mut SqlCertIndex(&w.apply), ws, seqno, window, last_ddl)? {
                Err(reason) => Verdict::Failed(reason),
                Ok(()) => {
                    exec_cached(&w.apply, "SAVEPOINT quorate_ws")?;
                    let applied = match &ws.payload {
                        Payload::Changeset(bytes) => {
                            match apply_changeset(&w.apply, &mut w.schema, bytes)? {
                                Ok(()) => {
                                    keys::check_declared(&w.apply, &mut w.schema, bytes, &ws.keys)?
                                        .map(|()| None)
                                }
                                Err(message) => Err(message),
                            }
                        }
                        Payload::Statements(stmts) => {
                            run_statements(&w.apply, &w.apply_auth, stmts, i)?.map(Some)
                        }
                    };
                    match applied {
                        Ok(toi_results) => {
                            exec_cached(&w.apply, "RELEASE quorate_ws")?;
                            meta::cert_record(&w.apply, &ws.keys, seqno)?;
                            if toi_results.is_some() {
                                last_ddl = seqno;
                                w.schema.clear();
                            }
                            Verdict::Committed { toi_results }
                        }
                        Err(message) => {
                            w.apply
                                .execute_batch("ROLLBACK TO quorate_ws; RELEASE quorate_ws")?;
                            Verdict::Failed(FailReason::ApplyFailed { message })
                        }
                    }
                }
            }
        };
        if let Some(below) = prune_below(seqno, window) {
            meta::cert_prune(&w.apply, below)?;
        }
        outcomes.push(ApplyOutcome { seqno, verdict });
    }
    meta::set_applied(&w.apply, seqno, last_ddl, raft_state)?;
    Ok(Done {
        outcomes,
        seqno,
        last_ddl_seqno: last_ddl,
    })
}

/// Run one of the fixed transaction-control statements of every apply from
/// the statement cache: parsing them anew for each write-set cost more than
/// running them. Not for the capture connection: client statements share
/// its cache, and a cached statement is not authorized again.
fn exec_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}

/// `Ok(Err(message))`: the changeset fails (same on every node).
fn apply_changeset(
    conn: &Connection,
    schema: &mut SchemaCache,
    bytes: &[u8],
) -> Result<Result<(), String>, Abort> {
    match changeset::apply(conn, schema, bytes) {
        Ok(outcome) => Ok(outcome),
        Err(e) if is_environmental(&e) => Err(Abort::Sqlite(e)),
        Err(e) => Ok(Err(format!("changeset could not be applied: {e}"))),
    }
}

/// Run a statements payload (total order isolation), triggers on as they
/// were at the origin. `Ok(Err(message))`: it fails, on every node alike.
fn run_statements(
    conn: &Connection,
    auth: &AuthHandle,
    stmts: &[Statement],
    index: usize,
) -> Result<Result<Vec<ExecResult>, String>, Abort> {
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER, true)?;
    let result = run_statements_with_triggers(conn, auth, stmts, index);
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER, false)?;
    result
}

fn run_statements_with_triggers(
    conn: &Connection,
    auth: &AuthHandle,
    stmts: &[Statement],
    index: usize,
) -> Result<Result<Vec<ExecResult>, String>, Abort> {
    let mut results = Vec::with_capacity(stmts.len());
    for (n, st) in stmts.iter().enumerate() {
        let fail =
            |message: String| Ok(Err(format!("statement {} ({}): {message}", n + 1, st.sql)));
        let scope = ClientScope::begin(auth);
        // Not cached: these are rare, and each one is authorized afresh.
        let mut stmt = match conn.prepare(&st.sql) {
            Ok(s) => s,
            Err(e) => {
                let (_, denied) = scope.take();
                return fail(denied.unwrap_or_else(|| e.to_string()));
            }
        };
        if let Err(message) = values::bind(&mut stmt, &st.params) {
            return fail(message);
        }
        let (info, _) = scope.take();
        drop(scope);
        let scope = ClientScope::stepping(auth);
        let before = conn.total_changes();
        let stepped = {
            let mut rows = stmt.raw_query();
            loop {
                match rows.next() {
                    Ok(Some(_)) => {}
                    Ok(None) => break Ok(()),
                    Err(e) => break Err(e),
                }
            }
        };
        drop(stmt);
        let (_, denied) = scope.take();
        drop(scope);
        if let Err(e) = stepped {
            if conn.is_autocommit() {
                return Err(Abort::TxnEnded(index));
            }
            if is_environmental(&e) {
                return Err(Abort::Sqlite(e));
            }
            return fail(denied.unwrap_or_else(|| e.to_string()));
        }
        if conn.is_autocommit() {
            return Err(Abort::TxnEnded(index));
        }
        // Reported only from what this statement did: the connection's
        // counters otherwise carry history that differs between nodes.
        let changed = conn.total_changes() != before;
        let rows_affected = if changed {
            i64::try_from(conn.changes()).unwrap_or(i64::MAX)
        } else {
            0
        };
        let last_insert_id = if changed && info.inserts {
            conn.last_insert_rowid()
        } else {
            0
        };
        results.push(ExecResult {
            rows_affected,
            last_insert_id,
            error: None,
            time: None,
            rows: None,
        });
    }
    Ok(Ok(results))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certify::{render_key, row_key, unique_key, KeyValue};
    use crate::sql::SqlValue;
    use crate::store::testutil::*;
    use crate::store::Store;
    use proptest::prelude::*;
    use tempfile::TempDir;

    const SCHEMA: &[&str] = &[
        "CREATE TABLE users(id INTEGER PRIMARY KEY, email TEXT UNIQUE, name TEXT)",
        "CREATE TABLE pair(a TEXT, b INTEGER, v, PRIMARY KEY (a, b)) WITHOUT ROWID",
        "CREATE TABLE audit(id INTEGER PRIMARY KEY, what TEXT)",
        "CREATE TRIGGER users_audit AFTER INSERT ON users BEGIN INSERT INTO audit(what) VALUES ('insert ' || new.id); END",
    ];

    /// Two nodes that applied the same schema write-set.
    fn two_nodes() -> (TempDir, Store, Store) {
        let dir = TempDir::new().unwrap();
        let a = open(&dir.path().join("a"));
        let b = open(&dir.path().join("b"));
        let stmts: Vec<_> = SCHEMA.iter().map(|q| st(q)).collect();
        let ws = capture_ws(&a, &stmts, 1);
        for node in [&a, &b] {
            let v = apply_one(node, &ws);
            assert!(
                matches!(v, Verdict::Committed { toi_results: Some(ref r) } if r.len() == 4),
                "{v:?}"
            );
        }
        (dir, a, b)
    }

    fn committed(v: &Verdict) -> bool {
        matches!(v, Verdict::Committed { .. })
    }

    fn both(a: &Store, b: &Store, batch: &[WriteSet]) -> Vec<ApplyOutcome> {
        let x = a.apply_batch(batch, b"r").unwrap();
        let y = b.apply_batch(batch, b"r").unwrap();
        assert_eq!(x, y, "verdicts must be identical on every node");
        x
    }

    #[test]
    fn capture_then_apply_elsewhere_gives_identical_tables() {
        let (_d, a, b) = two_nodes();
        let ws = capture_ws(
            &a,
            &[
                st("INSERT INTO users(email, name) VALUES ('a@x', 'A'), ('b@x', 'B')"),
                st("INSERT INTO pair VALUES ('k', 1, 1.5), ('k', 2, x'00ff')"),
                st("UPDATE users SET name = 'AA' WHERE id = 1"),
            ],
            2,
        );
        let out = both(&a, &b, std::slice::from_ref(&ws));
        assert_eq!(
            out,
            vec![ApplyOutcome {
                seqno: 1,
                verdict: Verdict::Committed { toi_results: None }
            }]
        );
        for t in ["users", "pair", "audit"] {
            assert_eq!(dump(&a, t), dump(&b, t), "{t}");
        }
        // The trigger's rows came in the changeset and were not doubled.
        assert_eq!(dump(&b, "audit").len(), 2);
        assert_eq!(dump(&b, "users")[0][2], SqlValue::Text("AA".into()));
        assert_eq!(a.position().seqno, 1);
        assert_eq!(b.raft_state().unwrap().as_deref(), Some(&b"r"[..]));
    }

    #[test]
    fn keys_must_cover_the_changeset() {
        let (_d, a, b) = two_nodes();
        let mut bare = capture_ws(
            &a,
            &[st("INSERT INTO users(id, email) VALUES (1, 'a@x')")],
            2,
        );
        bare.keys.clear();
        let mut partial = capture_ws(
            &a,
            &[st("INSERT INTO users(id, email) VALUES (2, 'b@x')")],
            3,
        );
        let before = partial.keys.len();
        partial.keys.retain(|k| !render_key(k).contains("UNIQUE"));
        assert!(partial.keys.len() < before);
        let mut update = capture_ws(&a, &[st("INSERT INTO pair VALUES ('k', 1, 1)")], 4);
        let mut stricter = update.clone();
        update.keys = vec![row_key(
            "pair",
            &[KeyValue::Text(b"k"), KeyValue::Integer(2)],
        )];
        stricter.trx_id = 40;
        stricter
            .keys
            .push(row_key("users", &[KeyValue::Integer(99)]));
        let out = both(&a, &b, &[bare, partial, update, stricter]);
        for o in &out[..3] {
            match &o.verdict {
                Verdict::Failed(FailReason::ApplyFailed { message }) => {
                    assert!(message.contains("do not cover its changeset"), "{message}")
                }
                v => panic!("{v:?}"),
            }
        }
        // Keys beyond the changeset's only make certification stricter.
        assert!(committed(&out[3].verdict), "{:?}", out[3]);
        assert!(dump(&a, "users").is_empty());
        assert_eq!(dump(&a, "pair"), dump(&b, "pair"));
        assert_eq!(dump(&b, "pair").len(), 1);
    }

    #[test]
    fn keys_cover_composite_primary_keys_and_unique_indexes() {
        let (_d, a, _b) = two_nodes();
        let ws = capture_ws(&a, &[st("INSERT INTO pair VALUES ('k', 7, NULL)")], 2);
        assert_eq!(
            ws.keys,
            vec![row_key(
                "pair",
                &[KeyValue::Text(b"k"), KeyValue::Integer(7)]
            )]
        );

        let ws = capture_ws(
            &a,
            &[st("INSERT INTO users(id, email) VALUES (5, 'e@x')")],
            3,
        );
        let mut want = vec![
            row_key("users", &[KeyValue::Integer(5)]),
            unique_key(
                "users",
                "sqlite_autoindex_users_1",
                &[KeyValue::Text(b"e@x")],
            ),
            row_key("audit", &[KeyValue::Integer(1)]),
        ];
        want.sort();
        assert_eq!(ws.keys, want);
        apply_one(&a, &ws);

        // An UPDATE that sets the unique column: the new value, read back.
        let ws = capture_ws(&a, &[st("UPDATE users SET email = 'f@x' WHERE id = 5")], 4);
        let mut want = vec![
            row_key("users", &[KeyValue::Integer(5)]),
            unique_key(
                "users",
                "sqlite_autoindex_users_1",
                &[KeyValue::Text(b"f@x")],
            ),
        ];
        want.sort();
        assert_eq!(ws.keys, want);
        // An UPDATE that leaves it alone: the row only.
        let ws = capture_ws(&a, &[st("UPDATE users SET name = 'n' WHERE id = 5")], 5);
        assert_eq!(ws.keys, vec![row_key("users", &[KeyValue::Integer(5)])]);
        // A DELETE: the old values.
        let ws = capture_ws(&a, &[st("DELETE FROM users WHERE id = 5")], 6);
        assert!(ws.keys.contains(&unique_key(
            "users",
            "sqlite_autoindex_users_1",
            &[KeyValue::Text(b"e@x")]
        )));
        // NULLs never clash, so they make no key.
        let ws = capture_ws(&a, &[st("INSERT INTO users(id) VALUES (9)")], 7);
        assert!(
            !ws.keys.iter().any(|k| render_key(k).contains("UNIQUE")),
            "{:?}",
            ws.keys.iter().map(render_key).collect::<Vec<_>>()
        );
    }

    #[test]
    fn concurrent_writers_of_one_row_first_committer_wins() {
        let (_d, a, b) = two_nodes();
        let seed = capture_ws(&a, &[st("INSERT INTO users(id, name) VALUES (1, 'x')")], 2);
        both(&a, &b, &[seed]);
        // Both nodes capture from the same snapshot.
        let on_a = capture_ws(
            &a,
            &[st("UPDATE users SET name = 'from a' WHERE id = 1")],
            3,
        );
        let on_b = capture_ws(
            &b,
            &[st("UPDATE users SET name = 'from b' WHERE id = 1")],
            4,
        );
        let out = both(&a, &b, &[on_a, on_b]);
        assert!(committed(&out[0].verdict));
        match &out[1].verdict {
            Verdict::Failed(FailReason::Conflict {
                key,
                conflicting_seqno,
            }) => {
                assert_eq!(key, "users PRIMARY KEY (1)");
                assert_eq!(*conflicting_seqno, 2);
            }
            v => panic!("{v:?}"),
        }
        assert_eq!(dump(&a, "users")[0][2], SqlValue::Text("from a".into()));
        assert_eq!(dump(&a, "users"), dump(&b, "users"));
    }

    #[test]
    fn same_unique_value_on_different_rows_conflicts_at_certification() {
        let (_d, a, b) = two_nodes();
        let on_a = capture_ws(
            &a,
            &[st("INSERT INTO users(id, email) VALUES (1, 'same@x')")],
            2,
        );
        let on_b = capture_ws(
            &b,
            &[st(
                "INSERT INTO users(id, email) VALUES (2, 'SAME@x'), (3, 'same@x')",
            )],
            3,
        );
        let out = both(&a, &b, &[on_a, on_b]);
        assert!(committed(&out[0].verdict));
        // Not an apply failure: a retryable certification failure.
        match &out[1].verdict {
            Verdict::Failed(r @ FailReason::Conflict { key, .. }) => {
                assert!(r.is_certification_failure());
                // The audit trigger's row 1 may be what clashes first; either
                // way the write-set fails before it is applied.
                assert!(
                    key.contains("UNIQUE sqlite_autoindex_users_1 ('same@x')")
                        || key.contains("audit"),
                    "{key}"
                );
            }
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn apply_conflict_fails_alike_on_every_node() {
        let (_d, a, b) = two_nodes();
        let seed = capture_ws(&a, &[st("INSERT INTO users(id, name) VALUES (1, 'x')")], 2);
        both(&a, &b, &[seed]);
        let mut update = capture_ws(&a, &[st("UPDATE users SET name = 'y' WHERE id = 1")], 3);
        let delete = capture_ws(&a, &[st("DELETE FROM users WHERE id = 1")], 4);
        // Bypass certification (as if the update had been captured after the
        // delete, and the row were there): its apply fails alike everywhere.
        // (A write-set whose keys do not cover its changeset fails: keys are
        // checked against the changeset, see `keys_must_cover_the_changeset`.)
        update.snapshot_seqno = 2;
        let out = both(&a, &b, &[delete, update]);
        assert!(committed(&out[0].verdict));
        match &out[1].verdict {
            Verdict::Failed(r @ FailReason::ApplyFailed { message }) => {
                assert!(!r.is_certification_failure());
                assert!(
                    message.contains("row not found in table users"),
                    "{message}"
                );
            }
            v => panic!("{v:?}"),
        }
        assert_eq!(out[1].seqno, 3, "a failed write-set consumes its seqno");
        assert_eq!(a.position().seqno, 3);
        // A constraint failure: the unique value taken meanwhile.
        let mut take = capture_ws(
            &a,
            &[st("INSERT INTO users(id, email) VALUES (10, 'u@x')")],
            5,
        );
        let mut clash = capture_ws(
            &b,
            &[st("INSERT INTO users(id, email) VALUES (11, 'u@x')")],
            6,
        );
        // Certification bypassed as above: `clash` as if captured after `take`.
        clash.snapshot_seqno = 4;
        let _ = &mut take;
        let out = both(&a, &b, &[take, clash]);
        match &out[1].verdict {
            Verdict::Failed(FailReason::ApplyFailed { message }) => {
                assert!(
                    message.contains("in table users") || message.contains("in table audit"),
                    "{message}"
                )
            }
            v => panic!("{v:?}"),
        }
        assert_eq!(dump(&a, "users"), dump(&b, "users"));
        assert_eq!(dump(&a, "audit"), dump(&b, "audit"));
    }

    #[test]
    fn schema_change_and_window_fail_old_snapshots() {
        let (_d, a, b) = two_nodes();
        let stale = capture_ws(&b, &[st("INSERT INTO users(id) VALUES (1)")], 2);
        let ddl = capture_ws(&a, &[st("ALTER TABLE users ADD COLUMN extra TEXT")], 3);
        let out = both(&a, &b, &[ddl, stale]);
        assert!(matches!(
            out[0].verdict,
            Verdict::Committed {
                toi_results: Some(_)
            }
        ));
        assert_eq!(
            out[1].verdict,
            Verdict::Failed(FailReason::SchemaChanged { ddl_seqno: 1 })
        );
        // After a restart the last DDL seqno is still known.
        let dir = a.path().parent().unwrap().to_path_buf();
        drop(a);
        let a = open(&dir);
        let mut again = stale_clone(&b);
        again.snapshot_seqno = 0;
        let out = a.apply_batch(&[again], b"").unwrap();
        assert_eq!(
            out[0].verdict,
            Verdict::Failed(FailReason::SchemaChanged { ddl_seqno: 1 })
        );

        let dir = TempDir::new().unwrap();
        let s = Store::open(
            dir.path(),
            crate::store::StoreOptions {
                cert_window: 2,
                ..opts()
            },
        )
        .unwrap();
        apply_one(
            &s,
            &capture_ws(&s, &[st("CREATE TABLE t(id INTEGER PRIMARY KEY)")], 1),
        );
        let old = capture_ws(&s, &[st("INSERT INTO t VALUES (1)")], 2);
        let filler = capture_ws(&s, &[st("INSERT INTO t VALUES (2)")], 3);
        let mut filler2 = filler.clone();
        filler2.keys.clear();
        filler2.trx_id = 30;
        let out = s.apply_batch(&[filler, filler2, old], b"").unwrap();
        assert_eq!(
            out[2].verdict,
            Verdict::Failed(FailReason::TooOld {
                snapshot_seqno: 0,
                window_start: 1
            })
        );
    }

    fn stale_clone(b: &Store) -> WriteSet {
        let c = b
            .capture(&[st("INSERT INTO users(id) VALUES (2)")], true)
            .unwrap()
            .writeset
            .unwrap();
        WriteSet {
            origin: "b".into(),
            trx_id: 9,
            snapshot_seqno: c.snapshot_seqno,
            keys: c.keys,
            payload: c.payload,
        }
    }

    #[test]
    fn statements_payload_failure_is_apply_failed_and_rolled_back() {
        let (_d, a, b) = two_nodes();
        let ws = WriteSet {
            origin: "o".into(),
            trx_id: 1,
            snapshot_seqno: 0,
            keys: vec![],
            payload: Payload::Statements(vec![
                st("CREATE TABLE fresh(id INTEGER PRIMARY KEY)"),
                st("INSERT INTO nosuch VALUES (1)"),
            ]),
        };
        let evil = WriteSet {
            payload: Payload::Statements(vec![
                st("UPDATE _quorate_meta SET seqno = 99"),
                st("PRAGMA foreign_keys=ON"),
            ]),
            trx_id: ws.trx_id + 100,
            ..ws.clone()
        };
        let rollback = WriteSet {
            trx_id: ws.trx_id + 200,
            payload: Payload::Statements(vec![
                st("CREATE TABLE r(id INTEGER PRIMARY KEY)"),
                st("INSERT INTO r VALUES (1)"),
                st("INSERT OR ROLLBACK INTO r VALUES (1)"),
            ]),
            ..ws.clone()
        };
        let good = capture_ws(&a, &[st("INSERT INTO users(id) VALUES (1)")], 2);
        let out = both(&a, &b, &[ws, evil, rollback, good]);
        for o in &out[..3] {
            assert!(
                matches!(o.verdict, Verdict::Failed(FailReason::ApplyFailed { .. })),
                "{o:?}"
            );
        }
        assert!(committed(&out[3].verdict), "{:?}", out[3]);
        assert_eq!(a.position().seqno, 4);
        let r = a
            .query(
                &[st(
                    "SELECT name FROM sqlite_schema WHERE name IN ('fresh', 'r')",
                )],
                false,
            )
            .unwrap();
        assert!(r[0].rows.is_empty());
    }

    #[test]
    fn the_replicated_window_wins_over_the_local_option() {
        // This node's own option would keep everything; the cluster's
        // bootstrap fixed a window of 2, and every node must use that.
        let dir = TempDir::new().unwrap();
        let s = Store::open(
            dir.path(),
            crate::store::StoreOptions {
                cert_window: 1 << 30,
                ..opts()
            },
        )
        .unwrap();
        s.set_identity(uuid::Uuid::new_v4(), 0, Some(2), b"")
            .unwrap();
        apply_one(
            &s,
            &capture_ws(&s, &[st("CREATE TABLE t(id INTEGER PRIMARY KEY)")], 1),
        );
        let old = capture_ws(&s, &[st("INSERT INTO t VALUES (1)")], 2);
        let a = capture_ws(&s, &[st("INSERT INTO t VALUES (2)")], 3);
        let b = capture_ws(&s, &[st("INSERT INTO t VALUES (3)")], 4);
        let out = s.apply_batch(&[a, b, old], b"").unwrap();
        assert!(
            matches!(out[2].verdict, Verdict::Failed(FailReason::TooOld { .. })),
            "{:?}",
            out[2]
        );
    }

    #[test]
    fn a_write_set_ordered_twice_applies_once_on_every_node() {
        let (_dir, a, b) = two_nodes();
        let ddl = capture_ws(
            &a,
            &[st("CREATE TABLE t(id INTEGER PRIMARY KEY, n INTEGER)")],
            101,
        );
        both(&a, &b, &[ddl]);
        let ws = capture_ws(&a, &[st("INSERT INTO t VALUES (1, 1)")], 107);
        let bump = capture_ws(&a, &[st("INSERT INTO t VALUES (2, 2)")], 108);
        // A forward retried after a lost answer: the same trx id twice.
        let out = both(&a, &b, &[ws.clone(), bump, ws]);
        assert!(committed(&out[0].verdict), "{out:?}");
        assert!(committed(&out[1].verdict), "{out:?}");
        assert_eq!(
            out[2].verdict,
            Verdict::Failed(FailReason::Duplicate {
                seqno: out[0].seqno
            })
        );
        assert_eq!(
            a.position().seqno,
            out[1].seqno,
            "a duplicate consumes no seqno"
        );
        assert_eq!(dump(&a, "t"), dump(&b, "t"));
        assert_eq!(dump(&a, "t").len(), 2);
    }

    #[test]
    fn applied_position_survives_a_restart() {
        let dir = TempDir::new().unwrap();
        let uuid = uuid::Uuid::new_v4();
        {
            let s = open(dir.path());
            assert_eq!(s.position().seqno, -1);
            s.set_identity(uuid, 3, None, b"id").unwrap();
            apply_one(
                &s,
                &capture_ws(&s, &[st("CREATE TABLE t(id INTEGER PRIMARY KEY)")], 1),
            );
            let ws = capture_ws(&s, &[st("INSERT INTO t VALUES (1)")], 2);
            let again = WriteSet {
                trx_id: 3,
                ..ws.clone()
            };
            s.apply_batch(&[ws, again], b"state-2").unwrap();
            assert_eq!(s.position().seqno, 3, "bootstrap is seqno 0, then 1, 2, 3");
        }
        let s = open(dir.path());
        assert_eq!(
            s.position(),
            crate::writeset::Position {
                state_uuid: uuid,
                seqno: 3,
                incarnation: 3
            }
        );
        assert_eq!(s.raft_state().unwrap().as_deref(), Some(&b"state-2"[..]));
        assert_eq!(dump(&s, "t").len(), 1);
        s.set_raft_state(b"blank").unwrap();
        assert_eq!(s.raft_state().unwrap().as_deref(), Some(&b"blank"[..]));
        assert_eq!(s.position().seqno, 3);
    }

    #[test]
    fn changesets_that_do_not_fit_the_schema_fail() {
        let (_d, a, b) = two_nodes();
        let ws = capture_ws(&a, &[st("INSERT INTO pair VALUES ('k', 1, 2)")], 2);
        // The same bytes against a node where the table has another shape.
        let other = TempDir::new().unwrap();
        let c = open(other.path());
        apply_one(
            &c,
            &capture_ws(
                &c,
                &[st("CREATE TABLE pair(a TEXT PRIMARY KEY, b INTEGER, v)")],
                1,
            ),
        );
        let out = c.apply_batch(std::slice::from_ref(&ws), b"").unwrap();
        assert!(
            matches!(&out[0].verdict, Verdict::Failed(FailReason::ApplyFailed { message }) if message.contains("does not match")),
            "{out:?}"
        );
        let d = TempDir::new().unwrap();
        let e = open(d.path());
        // `e` has applied nothing, so a genuine write-set for it was
        // captured before anything was applied.
        let mut early = ws.clone();
        early.snapshot_seqno = -1;
        let out = e.apply_batch(std::slice::from_ref(&early), b"").unwrap();
        assert!(
            matches!(&out[0].verdict, Verdict::Failed(FailReason::ApplyFailed { message }) if message.contains("does not exist")),
            "{out:?}"
        );
        let _ = b;
    }

    /// Figures for the report: `cargo test --lib measure_capture_and_apply -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn measure_capture_and_apply() {
        use std::time::Instant;
        let dir = TempDir::new().unwrap();
        let s = Store::open(
            dir.path(),
            crate::store::StoreOptions {
                cert_window: 1 << 30,
                ..opts()
            },
        )
        .unwrap();
        apply_one(
            &s,
            &capture_ws(
                &s,
                &[st(
                    "CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER, pad TEXT)",
                )],
                1,
            ),
        );
        let fill = capture_ws(
            &s,
            &[st(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10000) \
                  INSERT INTO t SELECT i, 0, printf('%050d', i) FROM n",
            )],
            2,
        );
        assert!(committed(&apply_one(&s, &fill)));

        let n = 3000;
        let update = |i: i64| {
            stp(
                "UPDATE t SET v = v + 1 WHERE id = ?",
                vec![SqlValue::Integer(i % 10000 + 1)],
            )
        };
        let start = Instant::now();
        let mut captured = Vec::with_capacity(n);
        for i in 0..n as i64 {
            let c = s.capture(&[update(i * 7)], false).unwrap();
            let w = c.writeset.unwrap();
            captured.push(WriteSet {
                origin: "m".into(),
                trx_id: i as u64,
                snapshot_seqno: w.snapshot_seqno,
                keys: w.keys,
                payload: w.payload,
            });
        }
        let secs = start.elapsed().as_secs_f64();
        eprintln!(
            "capture: {n} single-row UPDATEs in {secs:.3} s = {:.0} captures/s",
            n as f64 / secs
        );

        for batch in [1usize, 16, 64] {
            // Fresh write-sets on distinct rows, captured at the current position.
            let ws: Vec<WriteSet> = (0..n as i64)
                .map(|i| {
                    let w = s.capture(&[update(i)], false).unwrap().writeset.unwrap();
                    WriteSet {
                        origin: "m".into(),
                        // Ids unique across the rounds: a repeated one is a duplicate.
                        trx_id: (batch * n) as u64 + i as u64,
                        snapshot_seqno: w.snapshot_seqno,
                        keys: w.keys,
                        payload: w.payload,
                    }
                })
                .collect();
            let start = Instant::now();
            for chunk in ws.chunks(batch) {
                let out = s.apply_batch(chunk, b"raft").unwrap();
                assert!(out.iter().all(|o| committed(&o.verdict)));
            }
            let secs = start.elapsed().as_secs_f64();
            eprintln!(
                "apply_batch({batch}): {n} write-sets in {secs:.3} s = {:.0} write-sets/s",
                n as f64 / secs
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        /// A changeset from a peer is network input: garbage is a verdict
        /// (or an error), never a panic, and never a partial apply.
        #[test]
        fn malformed_changesets_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200), seed in 0usize..4) {
            let dir = TempDir::new().unwrap();
            let s = open(dir.path());
            apply_one(&s, &capture_ws(&s, &[st("CREATE TABLE t(id INTEGER PRIMARY KEY, v)")], 1));
            let real = capture_ws(&s, &[st("INSERT INTO t VALUES (1, 'x'), (2, 3.5)")], 2);
            let Payload::Changeset(good) = &real.payload else { panic!() };
            // Random bytes, or a real changeset with random corruption.
            let payload = match seed {
                0 => bytes,
                _ => {
                    let mut g = good.clone();
                    for (i, b) in bytes.iter().enumerate().take(seed * 2) {
                        let at = (usize::from(*b) * 7 + i) % g.len();
                        g[at] ^= bytes.get(i + 1).copied().unwrap_or(0xff) | 1;
                    }
                    g.truncate(g.len() - usize::from(bytes.first().copied().unwrap_or(0)) % 4);
                    g
                }
            };
            let ws = WriteSet { payload: Payload::Changeset(payload), ..real };
            if let Ok(out) = s.apply_batch(&[ws], b"") {
                prop_assert_eq!(out.len(), 1);
            }
            // The store is still usable. (No fixed id: a corrupted changeset
            // may itself be a valid insert of any id.)
            let again = capture_ws(&s, &[st("INSERT INTO t(v) VALUES ('after')")], 3);
            prop_assert!(committed(&apply_one(&s, &again)));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        /// A damaged changeset is ordered before anyone applies it, so every
        /// node must reach the same verdict on it, and that verdict must be
        /// a failed write-set: an error from `apply_batch` would stop the
        /// applier on every node at once (SQLite reports a malformed
        /// changeset as SQLITE_CORRUPT, which reads like a damaged database).
        #[test]
        fn damaged_changesets_fail_alike_on_every_node(
            flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 0..4),
            cut in 0usize..8,
            junk in prop::collection::vec(any::<u8>(), 0..8),
        ) {
            let (_d, a, b) = two_nodes();
            let real = capture_ws(
                &a,
                &[st("INSERT INTO users VALUES (1, 'a@x', 'A'), (2, 'b@x', x'00ff')"),
                  st("INSERT INTO pair VALUES ('k', 1, 2.5)")],
                2,
            );
            let Payload::Changeset(good) = &real.payload else { panic!("not a changeset") };
            let mut bad = good.clone();
            for (at, mask) in &flips {
                let i = at.index(bad.len());
                bad[i] ^= mask;
            }
            bad.truncate(bad.len().saturating_sub(cut));
            bad.extend_from_slice(&junk);
            let ws = WriteSet { payload: Payload::Changeset(bad.clone()), ..real };
            let x = a.apply_batch(std::slice::from_ref(&ws), b"r");
            let y = b.apply_batch(std::slice::from_ref(&ws), b"r");
            let (x, y) = match (x, y) {
                (Ok(x), Ok(y)) => (x, y),
                (x, y) => {
                    prop_assert!(false, "a damaged changeset stopped the applier: {:?} / {:?} (bytes {:?})", x.err(), y.err(), bad);
                    unreachable!()
                }
            };
            prop_assert_eq!(&x, &y);
            if flips.is_empty() && cut == 0 && junk.is_empty() {
                prop_assert!(committed(&x[0].verdict));
            }
            for table in ["users", "pair", "audit"] {
                prop_assert_eq!(dump(&a, table), dump(&b, table));
            }
        }
    }
}
