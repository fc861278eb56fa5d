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
use std::sync::{Arc, Mutex};

use rusqlite::config::DbConfig;
use rusqlite::session::{ChangesetItem, ConflictAction, ConflictType};
use rusqlite::Connection;

use super::auth::{AuthHandle, ClientScope};
use super::schema::SchemaCache;
use super::{is_environmental, keys, meta, values, Writer};
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
    let has_statements = batch.iter().any(|ws| matches!(ws.payload, Payload::Statements(_)));
    let mut ended: BTreeSet<usize> = BTreeSet::new();
    loop {
        w.apply.execute_batch("BEGIN IMMEDIATE")?;
        let result = apply_in_txn(w, batch, raft_state, from, window, &ended);
        let result = match result {
            Ok(done) => w.apply.execute_batch("COMMIT").map(|()| done).map_err(Abort::Sqlite),
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
        seqno += 1;
        let verdict = if ended.contains(&i) {
            Verdict::Failed(FailReason::ApplyFailed {
                message: "a statement ended the transaction (ROLLBACK conflict clause or RAISE(ROLLBACK))".into(),
            })
        } else {
            match certify(&mut SqlCertIndex(&w.apply), ws, seqno, window, last_ddl)? {
                Err(reason) => Verdict::Failed(reason),
                Ok(()) => {
                    w.apply.execute_batch("SAVEPOINT quorate_ws")?;
                    let applied = match &ws.payload {
                        Payload::Changeset(bytes) => apply_changeset(&w.apply, &mut w.schema, bytes)?.map(|()| None),
                        Payload::Statements(stmts) => run_statements(&w.apply, &w.apply_auth, stmts, i)?.map(Some),
                    };
                    match applied {
                        Ok(toi_results) => {
                            w.apply.execute_batch("RELEASE quorate_ws")?;
                            meta::cert_record(&w.apply, &ws.keys, seqno)?;
                            if toi_results.is_some() {
                                last_ddl = seqno;
                                w.schema.clear();
                            }
                            Verdict::Committed { toi_results }
                        }
                        Err(message) => {
                            w.apply.execute_batch("ROLLBACK TO quorate_ws; RELEASE quorate_ws")?;
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
    Ok(Done { outcomes, seqno, last_ddl_seqno: last_ddl })
}

/// `Ok(Err(message))`: the changeset fails (same on every node).
fn apply_changeset(conn: &Connection, schema: &mut SchemaCache, bytes: &[u8]) -> Result<Result<(), String>, Abort> {
    if let Err(message) = keys::validate(conn, schema, bytes)? {
        return Ok(Err(message));
    }
    let conflict: Arc<Mutex<Option<String>>> = Arc::default();
    let seen = Arc::clone(&conflict);
    let mut input: &[u8] = bytes;
    let applied = conn.apply_strm(&mut input, None::<fn(&str) -> bool>, move |kind, item| {
        let mut slot = seen.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(describe_conflict(kind, item));
        }
        // Any conflict means the origin's view of the row is stale or a
        // constraint fails: the write-set fails as a whole, everywhere.
        ConflictAction::SQLITE_CHANGESET_ABORT
    });
    let conflict = conflict.lock().unwrap_or_else(|p| p.into_inner()).take();
    match (applied, conflict) {
        (Ok(()), None) => Ok(Ok(())),
        (_, Some(message)) => Ok(Err(message)),
        (Err(e), None) if is_environmental(&e) => Err(Abort::Sqlite(e)),
        (Err(e), None) => Ok(Err(format!("changeset could not be applied: {e}"))),
    }
}

fn describe_conflict(kind: ConflictType, item: &ChangesetItem) -> String {
    // For a foreign-key conflict the item points at no change, and reading
    // it has crashed rusqlite: do not touch it then.
    if kind == ConflictType::SQLITE_CHANGESET_FOREIGN_KEY {
        return "foreign key constraint violated".to_string();
    }
    let table = item.op().map(|op| op.table_name().to_owned()).unwrap_or_else(|_| "?".to_string());
    match kind {
        ConflictType::SQLITE_CHANGESET_DATA => {
            format!("data conflict in table {table}: the row no longer has the values the transaction read")
        }
        ConflictType::SQLITE_CHANGESET_NOTFOUND => {
            format!("row not found in table {table}: it was deleted or its key changed")
        }
        ConflictType::SQLITE_CHANGESET_CONFLICT => {
            format!("primary key conflict in table {table}: the row already exists")
        }
        ConflictType::SQLITE_CHANGESET_CONSTRAINT => {
            format!("constraint violated in table {table} (UNIQUE, NOT NULL or CHECK)")
        }
        _ => format!("conflict in table {table}"),
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
        let fail = |message: String| Ok(Err(format!("statement {} ({}): {message}", n + 1, st.sql)));
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
        let rows_affected = if changed { i64::try_from(conn.changes()).unwrap_or(i64::MAX) } else { 0 };
        let last_insert_id = if changed && info.inserts { conn.last_insert_rowid() } else { 0 };
        results.push(ExecResult { rows_affected, last_insert_id, error: None, time: None });
    }
    Ok(Ok(results))
}
