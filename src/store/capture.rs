//! Capture (DESIGN.md §2 step 2): run a client transaction on the capture
//! connection with a session attached, record the per-statement results,
//! take the changeset and its keys, and roll back — always.
//!
//! A transaction with a schema change is replicated as its statements
//! instead (total order isolation), and must then be deterministic.

use std::collections::HashMap;
use std::path::Path;

use rusqlite::session::Session;
use rusqlite::Connection;

use super::auth::{self, AuthHandle, ClientScope, StmtInfo};
use super::schema::SchemaCache;
use super::{keys, sqlite_err, values, Captured, CapturedWriteSet, StoreError, Writer};
use crate::sql::{ExecResult, Params, SqlValue, Statement};
use crate::writeset::{Payload, Seqno};

/// Above this many distinct SQL texts, forget what the authorizer reported
/// (and the compiled statements with it) rather than grow without bound.
const MAX_STMT_INFO: usize = 1024;

const STMT_SAVEPOINT: &str = "SAVEPOINT quorate_stmt";
const STMT_RELEASE: &str = "RELEASE quorate_stmt";
const STMT_UNDO: &str = "ROLLBACK TO quorate_stmt; RELEASE quorate_stmt";

pub(crate) fn capture(
    w: &mut Writer,
    stmts: &[Statement],
    transaction: bool,
    snapshot: Seqno,
    max_bytes: usize,
    path: &Path,
) -> Result<Captured, StoreError> {
    let err = sqlite_err(path);
    if w.stmt_info.len() > MAX_STMT_INFO {
        w.stmt_info.clear();
        w.capture.flush_prepared_statement_cache();
    }
    w.capture.execute_batch("BEGIN").map_err(&err)?;
    let mut txn = Txn::default();
    let outcome = run(w, stmts, transaction, snapshot, max_bytes, &mut txn, path);
    // Whatever happened, nothing captured may stay in the local database.
    let rolled_back = if w.capture.is_autocommit() { Ok(()) } else { w.capture.execute_batch("ROLLBACK") };
    if txn.schema_touched {
        w.schema_changed();
    }
    rolled_back.map_err(&err)?;
    outcome
}

/// What the statements run so far amount to.
#[derive(Default)]
struct Txn {
    results: Vec<ExecResult>,
    /// Statements that succeeded, to replicate if this is a schema change.
    done: Vec<Statement>,
    ddl: Option<String>,
    nondeterministic: Vec<String>,
    schema_touched: bool,
}

fn run(
    w: &mut Writer,
    stmts: &[Statement],
    transaction: bool,
    snapshot: Seqno,
    max_bytes: usize,
    txn: &mut Txn,
    path: &Path,
) -> Result<Captured, StoreError> {
    let err = sqlite_err(path);
    let Writer { capture: conn, capture_auth, schema, stmt_info, .. } = w;
    let mut session = Session::new(conn).map_err(&err)?;
    session.table_filter(Some(|t: &str| !auth::is_internal(t)));
    session.attach::<&str>(None).map_err(&err)?;

    for st in stmts {
        if !transaction {
            conn.execute_batch(STMT_SAVEPOINT).map_err(&err)?;
        }
        let outcome = execute(conn, capture_auth, schema, stmt_info, st, txn);
        if conn.is_autocommit() {
            // SQLite ended the whole transaction (OR ROLLBACK, RAISE(ROLLBACK),
            // some I/O errors): what ran before is gone, so nothing can be
            // replicated, and running on would commit locally.
            let why = outcome.err().unwrap_or_default();
            txn.results.push(failed(format!(
                "{why}{}the statement ended the transaction; nothing was replicated",
                if why.is_empty() { "" } else { ": " }
            )));
            return Ok(Captured { results: std::mem::take(&mut txn.results), writeset: None });
        }
        match outcome {
            Ok(result) => {
                if !transaction {
                    conn.execute_batch(STMT_RELEASE).map_err(&err)?;
                }
                txn.results.push(result);
                txn.done.push(st.clone());
            }
            Err(message) => {
                txn.results.push(failed(message));
                if transaction {
                    // rqlite: the first error ends the transaction; later
                    // statements are not run and get no result.
                    return Ok(Captured { results: std::mem::take(&mut txn.results), writeset: None });
                }
                conn.execute_batch(STMT_UNDO).map_err(&err)?;
            }
        }
    }

    let results = std::mem::take(&mut txn.results);
    if txn.done.is_empty() {
        return Ok(Captured { results, writeset: None });
    }
    let (keys, payload, size) = if txn.ddl.is_some() {
        let size = txn.done.iter().map(statement_size).sum();
        (Vec::new(), Payload::Statements(std::mem::take(&mut txn.done)), size)
    } else {
        let mut bytes = Vec::new();
        session.changeset_strm(&mut bytes).map_err(&err)?;
        if bytes.is_empty() {
            return Ok(Captured { results, writeset: None });
        }
        let keys = keys::changeset_keys(conn, schema, &bytes).map_err(&err)?;
        let size = bytes.len() + keys.iter().map(|k| k.0.len()).sum::<usize>();
        (keys, Payload::Changeset(bytes), size)
    };
    if size > max_bytes {
        return Err(StoreError::Refused(format!(
            "the transaction's write-set is {size} bytes, larger than max_writeset_bytes ({max_bytes} bytes); \
             split it into smaller transactions"
        )));
    }
    Ok(Captured { results, writeset: Some(CapturedWriteSet { snapshot_seqno: snapshot, keys, payload }) })
}

fn failed(message: String) -> ExecResult {
    ExecResult { error: Some(message), ..ExecResult::default() }
}

/// Run one client statement. `Err` is the statement's error message.
fn execute(
    conn: &Connection,
    auth: &AuthHandle,
    schema: &mut SchemaCache,
    stmt_info: &mut HashMap<String, StmtInfo>,
    st: &Statement,
    txn: &mut Txn,
) -> Result<ExecResult, String> {
    if first_keyword(&st.sql).eq_ignore_ascii_case("vacuum") {
        return Err("VACUUM is not allowed in an execute request: it is local maintenance, not a change to replicate"
            .to_string());
    }
    let scope = ClientScope::begin(auth);
    let prepared = conn.prepare_cached(&st.sql);
    let (log, denied) = scope.take();
    drop(scope);
    let mut stmt = prepared.map_err(|e| denied.unwrap_or_else(|| e.to_string()))?;
    // A statement served from rusqlite's cache is not compiled again, so the
    // authorizer reports nothing: use what it reported at the compile.
    let mut info = if log.seen {
        stmt_info.insert(st.sql.clone(), log.clone());
        log
    } else {
        stmt_info.get(&st.sql).cloned().unwrap_or_default()
    };
    let mut nondeterministic = check(conn, schema, &info, st, txn)?;
    values::bind(&mut stmt, &st.params)?;

    let scope = ClientScope::begin(auth);
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
    let (late, denied) = scope.take();
    drop(scope);
    drop(stmt);
    if info.ddl.is_some() || late.ddl.is_some() {
        txn.schema_touched = true;
        schema.clear();
    }
    stepped.map_err(|e| denied.unwrap_or_else(|| e.to_string()))?;
    if late.seen {
        // Recompiled while stepping (the schema changed under the cached
        // statement): judge it again on what it now does.
        info.merge(&late);
        stmt_info.insert(st.sql.clone(), info.clone());
        nondeterministic = check(conn, schema, &info, st, txn)?;
    }

    if let Some(ddl) = &info.ddl {
        txn.ddl.get_or_insert_with(|| ddl.clone());
    }
    txn.nondeterministic.extend(nondeterministic);
    let rows_affected = i64::try_from(conn.changes()).unwrap_or(i64::MAX);
    Ok(ExecResult { rows_affected, last_insert_id: conn.last_insert_rowid(), error: None, time: None })
}

/// The policy that needs the schema: writes only to tables with a primary
/// key, and no non-deterministic function in a transaction that will be
/// replayed as statements. Returns this statement's non-deterministic calls.
fn check(
    conn: &Connection,
    schema: &mut SchemaCache,
    info: &StmtInfo,
    st: &Statement,
    txn: &Txn,
) -> Result<Vec<String>, String> {
    let mut nondeterministic = auth::nondeterministic_calls(info, &st.sql, &st.params);
    for table in &info.writes {
        let Some(t) = schema.table(conn, table).map_err(|e| e.to_string())? else {
            continue;
        };
        if !t.is_view && t.pk.is_empty() && !table.starts_with("sqlite_") {
            return Err(format!(
                "table {} has no PRIMARY KEY: quorate replicates rows by primary key; add one, e.g. `id INTEGER PRIMARY KEY`",
                t.name
            ));
        }
        if let Some(col) = &t.nondeterministic_default {
            // An INSERT may fill it in; only matters if the transaction ends
            // up replayed as statements.
            nondeterministic.push(format!("the default of {}.{col}", t.name));
        }
    }
    let ddl = txn.ddl.as_ref().or(info.ddl.as_ref());
    if let Some(ddl) = ddl {
        if let Some(call) = txn.nondeterministic.iter().chain(&nondeterministic).next() {
            return Err(format!(
                "cannot replicate this schema change ({ddl}) in a transaction that uses {call}: \
                 a transaction with a schema change is run again as statements on every node, \
                 where a non-deterministic value would differ; run the schema change in a request of its own"
            ));
        }
    }
    Ok(nondeterministic)
}

/// Bytes a statement occupies in the write-set (approximately).
fn statement_size(st: &Statement) -> usize {
    let value = |v: &SqlValue| match v {
        SqlValue::Text(t) => t.len() + 8,
        SqlValue::Blob(b) => b.len() + 8,
        _ => 9,
    };
    let params: usize = match &st.params {
        Params::None => 0,
        Params::Positional(v) => v.iter().map(value).sum(),
        Params::Named(v) => v.iter().map(|(n, v)| n.len() + value(v)).sum(),
    };
    st.sql.len() + 16 + params
}

/// The first keyword of `sql`, after whitespace and comments.
fn first_keyword(sql: &str) -> &str {
    let mut rest = sql;
    loop {
        rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix("--") {
            rest = r.find('\n').map_or("", |i| &r[i..]);
        } else if let Some(r) = rest.strip_prefix("/*") {
            rest = r.find("*/").map_or("", |i| &r[i + 2..]);
        } else {
            break;
        }
    }
    let end = rest.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(rest.len());
    &rest[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_keyword_skips_comments() {
        assert_eq!(first_keyword("  -- x\n /* y */ VACUUM;"), "VACUUM");
        assert_eq!(first_keyword("vacuum"), "vacuum");
        assert_eq!(first_keyword("/* unterminated"), "");
        assert_eq!(first_keyword("SELECT 1"), "SELECT");
    }
}
