//! Capture (DESIGN.md §2 step 2): run a client transaction on the capture
//! connection while its row changes are recorded (`record`: the preupdate
//! hook, not a SQLite session, which cost a third of capture and apply in
//! reading table layouts and final rows back), record the per-statement
//! results, take the changeset and its keys, and roll back — always.
//!
//! Without `transaction`, each statement runs in a savepoint and a failing
//! one is rolled back alone; SQLite undoes it without the hook seeing, so
//! the recording is rolled back with it.
//!
//! A transaction with a schema change is replicated as its statements
//! instead (total order isolation), and must then be deterministic.

use std::collections::HashMap;
use std::path::Path;

use rusqlite::Connection;

use super::auth::{self, AuthHandle, ClientScope, StmtInfo};
use super::schema::SchemaCache;
use super::{keys, sqlite_err, values, Captured, CapturedWriteSet, StoreError, Writer};
use crate::sql::{ExecResult, Params, QueryResult, SqlValue, Statement};
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
    // Not from the statement cache: client statements share it, and a
    // client's `BEGIN` served from it would never meet the authorizer.
    w.capture.execute_batch("BEGIN").map_err(&err)?;
    let mut txn = Txn::default();
    let outcome = run(w, stmts, transaction, snapshot, max_bytes, &mut txn, path);
    // Whatever happened, nothing captured may stay in the local database.
    let rolled_back = if w.capture.is_autocommit() {
        Ok(())
    } else {
        w.capture.execute_batch("ROLLBACK")
    };
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
    let Writer {
        capture: conn,
        capture_auth,
        recorder,
        schema,
        stmt_info,
        ..
    } = w;
    let recording = recorder.start();

    for st in stmts {
        let mark = recording.mark();
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
            return Ok(Captured {
                results: std::mem::take(&mut txn.results),
                writeset: None,
            });
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
                    return Ok(Captured {
                        results: std::mem::take(&mut txn.results),
                        writeset: None,
                    });
                }
                conn.execute_batch(STMT_UNDO).map_err(&err)?;
                recording.rollback_to(mark);
            }
        }
    }

    let results = std::mem::take(&mut txn.results);
    if txn.done.is_empty() {
        return Ok(Captured {
            results,
            writeset: None,
        });
    }
    let (keys, payload, size) = if txn.ddl.is_some() {
        let size = txn.done.iter().map(statement_size).sum();
        (
            Vec::new(),
            Payload::Statements(std::mem::take(&mut txn.done)),
            size,
        )
    } else {
        let bytes = recording
            .changeset(conn, schema)
            .map_err(&err)?
            .map_err(StoreError::Refused)?;
        if bytes.is_empty() {
            return Ok(Captured {
                results,
                writeset: None,
            });
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
    Ok(Captured {
        results,
        writeset: Some(CapturedWriteSet {
            snapshot_seqno: snapshot,
            keys,
            payload,
        }),
    })
}

fn failed(message: String) -> ExecResult {
    ExecResult {
        error: Some(message),
        ..ExecResult::default()
    }
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
    // rqlite's `timings` report each statement's own execution time.
    let started = std::time::Instant::now();
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

    // A statement that returns rows (a SELECT in a mixed `/db/request`, a
    // RETURNING clause) reports them, as rqlite does.
    let mut returned = (stmt.column_count() > 0).then(|| QueryResult {
        columns: stmt.column_names().map(str::to_owned).collect(),
        types: stmt
            .columns()
            .map(|c| {
                c.decl_type()
                    .map(str::to_ascii_lowercase)
                    .unwrap_or_default()
            })
            .collect(),
        ..QueryResult::default()
    });
    let scope = ClientScope::stepping(auth);
    let stepped = {
        let mut rows = stmt.raw_query();
        loop {
            match rows.next() {
                Ok(Some(row)) => {
                    if let Some(q) = returned.as_mut() {
                        let values = (0..q.columns.len())
                            .map(|i| row.get_ref(i).map(values::from_value_ref))
                            .collect::<Result<Vec<_>, _>>();
                        match values {
                            Ok(values) => q.rows.push(values),
                            Err(e) => break Err(e),
                        }
                    }
                }
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
    let time = Some(started.elapsed().as_secs_f64());
    Ok(ExecResult {
        rows_affected,
        last_insert_id: conn.last_insert_rowid(),
        error: None,
        time,
        rows: returned.map(|q| QueryResult { time, ..q }),
    })
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
    let end = rest
        .find(|c: char| !c.is_ascii_alphabetic())
        .unwrap_or(rest.len());
    &rest[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testutil::*;
    use crate::store::{Store, StoreOptions};
    use crate::writeset::WriteSet;
    use tempfile::TempDir;

    fn store() -> (TempDir, Store) {
        let dir = TempDir::new().unwrap();
        let s = open(dir.path());
        let ws = capture_ws(
            &s,
            &[
                st("CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, email TEXT UNIQUE)"),
                st("CREATE TABLE nopk(x, y)"),
                st("CREATE TABLE pair(a TEXT, b INTEGER, v, PRIMARY KEY (a, b)) WITHOUT ROWID"),
                st("CREATE TABLE stamped(id INTEGER PRIMARY KEY, ts TEXT DEFAULT CURRENT_TIMESTAMP)"),
            ],
            1,
        );
        assert!(matches!(
            apply_one(&s, &ws),
            crate::writeset::Verdict::Committed { .. }
        ));
        (dir, s)
    }

    fn errors(c: &Captured) -> Vec<Option<String>> {
        c.results.iter().map(|r| r.error.clone()).collect()
    }

    #[test]
    fn results_follow_rqlite_and_capture_leaves_nothing_behind() {
        let (_d, s) = store();
        let c = s
            .capture(
                &[
                    st("INSERT INTO t(name) VALUES ('a')"),
                    stp(
                        "INSERT INTO t(id, name) VALUES (?, ?)",
                        vec![SqlValue::Integer(10), SqlValue::Text("b".into())],
                    ),
                    Statement {
                        sql: "UPDATE t SET name = :n WHERE id >= $min".into(),
                        params: Params::Named(vec![
                            ("n".into(), SqlValue::Text("z".into())),
                            ("$min".into(), SqlValue::Integer(0)),
                        ]),
                    },
                ],
                false,
            )
            .unwrap();
        assert_eq!(errors(&c), vec![None, None, None]);
        assert_eq!(
            (c.results[0].rows_affected, c.results[0].last_insert_id),
            (1, 1)
        );
        assert_eq!(
            (c.results[1].rows_affected, c.results[1].last_insert_id),
            (1, 10)
        );
        assert_eq!(c.results[2].rows_affected, 2);
        let ws = c.writeset.unwrap();
        assert_eq!(ws.snapshot_seqno, 0);
        assert!(matches!(ws.payload, Payload::Changeset(ref b) if !b.is_empty()));
        // Rolled back locally: nothing until applied.
        assert!(dump(&s, "t").is_empty());
        assert_eq!(s.position().seqno, 0);
    }

    #[test]
    fn without_transaction_a_failing_statement_is_skipped() {
        let (_d, s) = store();
        let c = s
            .capture(
                &[
                    st("INSERT INTO t(id, name) VALUES (1, 'a')"),
                    st("INSERT INTO t(id, name) VALUES (1, 'dup')"),
                    st("INSERT INTO nosuch VALUES (1)"),
                    st("INSERT INTO t(id, name) VALUES (2, 'b')"),
                ],
                false,
            )
            .unwrap();
        let e = errors(&c);
        assert_eq!(e[0], None);
        assert!(
            e[1].as_deref()
                .unwrap()
                .contains("UNIQUE constraint failed"),
            "{e:?}"
        );
        assert_eq!(e[2].as_deref(), Some("no such table: nosuch"));
        assert_eq!(e[3], None);
        let ws = WriteSet {
            origin: "o".into(),
            trx_id: 2,
            snapshot_seqno: 0,
            keys: c.writeset.as_ref().unwrap().keys.clone(),
            payload: c.writeset.unwrap().payload,
        };
        assert!(matches!(
            apply_one(&s, &ws),
            crate::writeset::Verdict::Committed { .. }
        ));
        assert_eq!(
            dump(&s, "t"),
            vec![
                vec![
                    SqlValue::Integer(1),
                    SqlValue::Text("a".into()),
                    SqlValue::Null
                ],
                vec![
                    SqlValue::Integer(2),
                    SqlValue::Text("b".into()),
                    SqlValue::Null
                ]
            ]
        );
    }

    #[test]
    fn a_statement_that_fails_part_way_leaves_nothing_in_the_write_set() {
        let (_d, s) = store();
        // The second row breaks the UNIQUE email after the first went in;
        // SQLite takes the first back without the recorder seeing it.
        let c = s
            .capture(
                &[
                    st("INSERT INTO t(id, name, email) VALUES (1, 'a', 'x'), (2, 'b', 'x')"),
                    st("INSERT INTO t(id, name) VALUES (3, 'c')"),
                ],
                false,
            )
            .unwrap();
        let e = errors(&c);
        assert!(
            e[0].as_deref()
                .unwrap_or_default()
                .contains("UNIQUE constraint failed"),
            "{e:?}"
        );
        assert_eq!(e[1], None);
        let w = c.writeset.unwrap();
        let ws = WriteSet {
            origin: "o".into(),
            trx_id: 2,
            snapshot_seqno: 0,
            keys: w.keys,
            payload: w.payload,
        };
        apply_one(&s, &ws);
        assert_eq!(
            dump(&s, "t"),
            vec![vec![
                SqlValue::Integer(3),
                SqlValue::Text("c".into()),
                SqlValue::Null
            ]]
        );
    }

    #[test]
    fn in_a_transaction_the_first_error_aborts_everything() {
        let (_d, s) = store();
        let c = s
            .capture(
                &[
                    st("INSERT INTO t(id, name) VALUES (1, 'a')"),
                    st("INSERT INTO t(id, name) VALUES (1, 'dup')"),
                    st("INSERT INTO t(id, name) VALUES (2, 'b')"),
                ],
                true,
            )
            .unwrap();
        assert_eq!(c.results.len(), 2);
        assert_eq!(c.results[0].error, None);
        assert!(c.results[1].error.is_some());
        assert!(c.writeset.is_none());
    }

    #[test]
    fn nothing_changed_means_nothing_to_replicate() {
        let (_d, s) = store();
        let c = s
            .capture(
                &[st("UPDATE t SET name = 'x' WHERE id = 42"), st("SELECT 1")],
                true,
            )
            .unwrap();
        assert_eq!(errors(&c), vec![None, None]);
        assert!(c.writeset.is_none());
        let c = s.capture(&[], true).unwrap();
        assert!(c.results.is_empty() && c.writeset.is_none());
    }

    #[test]
    fn refusals_say_why() {
        let (_d, s) = store();
        let cases: &[(&str, &str)] = &[
            (
                "INSERT INTO nopk VALUES (1, 2)",
                "table nopk has no PRIMARY KEY: quorate replicates rows by primary key; add one, e.g. `id INTEGER PRIMARY KEY`",
            ),
            ("UPDATE _quorate_meta SET seqno = 5", "internal to quorate"),
            ("DELETE FROM _QUORATE_CERT", "internal to quorate"),
            ("DROP TABLE _quorate_cert", "internal to quorate"),
            ("ATTACH 'x.db' AS x", "ATTACH and DETACH are not allowed"),
            ("PRAGMA user_version = 3", "PRAGMA user_version is not allowed"),
            ("PRAGMA synchronous = OFF", "PRAGMA synchronous is not allowed"),
            ("VACUUM", "VACUUM is not allowed"),
            ("COMMIT", "transaction control statements"),
            ("BEGIN", "transaction control statements"),
            ("SAVEPOINT x", "transaction control statements"),
            ("CREATE VIRTUAL TABLE v USING fts5(x)", "virtual table"),
        ];
        for (sql, want) in cases {
            for transaction in [false, true] {
                let c = s.capture(&[st(sql)], transaction).unwrap();
                let e = c.results[0].error.clone().unwrap_or_default();
                assert!(e.contains(want), "{sql}: {e}");
                assert!(c.writeset.is_none(), "{sql}");
            }
        }
        // The refused statement changed nothing, even locally.
        let r = s
            .query(&[st("SELECT seqno FROM _quorate_meta")], false)
            .unwrap();
        assert_eq!(r[0].rows, vec![vec![SqlValue::Integer(0)]]);
        // A refused PRAGMA setting did not take effect on the connection.
        let w = s.writer.lock().unwrap();
        let sync: i64 = w
            .capture
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 1);
    }

    #[test]
    fn ddl_replicates_as_statements_and_must_be_deterministic() {
        let (_d, s) = store();
        let c = s
            .capture(
                &[
                    st("CREATE INDEX t_name ON t(name)"),
                    st("INSERT INTO t(name) VALUES ('a')"),
                ],
                true,
            )
            .unwrap();
        assert_eq!(errors(&c), vec![None, None]);
        let ws = c.writeset.unwrap();
        assert!(ws.keys.is_empty());
        assert!(matches!(&ws.payload, Payload::Statements(v) if v.len() == 2));

        // A DEFAULT CURRENT_TIMESTAMP in a CREATE TABLE is fine.
        let c = s
            .capture(
                &[st(
                    "CREATE TABLE d(id INTEGER PRIMARY KEY, at TEXT DEFAULT CURRENT_TIMESTAMP)",
                )],
                true,
            )
            .unwrap();
        assert_eq!(errors(&c), vec![None]);

        let refused: &[&[&str]] = &[
            &["CREATE TABLE r AS SELECT random() AS x"],
            &[
                "INSERT INTO t(name) VALUES (random())",
                "CREATE INDEX i1 ON t(name)",
            ],
            &[
                "CREATE INDEX i2 ON t(name)",
                "INSERT INTO t(name) VALUES (datetime('now'))",
            ],
            &[
                "CREATE INDEX i3 ON t(name)",
                "UPDATE t SET name = CURRENT_TIMESTAMP",
            ],
            &[
                "CREATE INDEX i4 ON t(name)",
                "INSERT INTO t(name) VALUES (last_insert_rowid())",
            ],
            &[
                "CREATE INDEX i5 ON t(name)",
                "INSERT INTO t(name) VALUES (sqlite_version())",
            ],
            // The default reads the clock when the row is inserted, by every node.
            &[
                "CREATE INDEX i6 ON t(name)",
                "INSERT INTO stamped(id) VALUES (1)",
            ],
        ];
        for stmts in refused {
            let stmts: Vec<Statement> = stmts.iter().map(|q| st(q)).collect();
            for transaction in [true, false] {
                let c = s.capture(&stmts, transaction).unwrap();
                let e: Vec<String> = c.results.iter().filter_map(|r| r.error.clone()).collect();
                assert_eq!(e.len(), 1, "{stmts:?}: {e:?}");
                assert!(
                    e[0].contains("cannot replicate this schema change"),
                    "{e:?}"
                );
                match c.writeset {
                    None => {}
                    // Without a transaction the other statement still goes
                    // (as statements if it is the DDL, else as a changeset),
                    // but never together with the non-deterministic one.
                    Some(ws) => assert!(
                        !transaction
                            && match &ws.payload {
                                Payload::Statements(v) =>
                                    v.len() == 1 && v[0].sql.starts_with("CREATE"),
                                Payload::Changeset(_) => true,
                            }
                    ),
                }
            }
        }
        // Non-deterministic functions are fine outside of DDL: the values
        // travel in the changeset.
        let c = s
            .capture(
                &[
                    st("INSERT INTO t(name) VALUES (random())"),
                    st("INSERT INTO stamped(id) VALUES (1)"),
                ],
                true,
            )
            .unwrap();
        assert_eq!(errors(&c), vec![None, None]);
        assert!(matches!(c.writeset.unwrap().payload, Payload::Changeset(_)));
        // A date function with a fixed value is deterministic.
        let c = s
            .capture(
                &[
                    st("CREATE INDEX i7 ON t(name)"),
                    st("INSERT INTO t(name) VALUES (date('2024-01-01', '+1 day'))"),
                ],
                true,
            )
            .unwrap();
        assert_eq!(errors(&c), vec![None, None]);
    }

    #[test]
    fn too_large_a_write_set_is_refused() {
        let dir = TempDir::new().unwrap();
        let s = Store::open(
            dir.path(),
            StoreOptions {
                max_writeset_bytes: 1000,
                ..opts()
            },
        )
        .unwrap();
        let ws = capture_ws(
            &s,
            &[st("CREATE TABLE b(id INTEGER PRIMARY KEY, v BLOB)")],
            1,
        );
        apply_one(&s, &ws);
        let small = s
            .capture(&[st("INSERT INTO b VALUES (1, zeroblob(100))")], true)
            .unwrap();
        assert!(small.writeset.is_some());
        match s.capture(&[st("INSERT INTO b VALUES (1, zeroblob(2000))")], true) {
            Err(StoreError::Refused(msg)) => {
                assert!(msg.contains("max_writeset_bytes (1000 bytes)"), "{msg}");
                assert!(msg.contains("bytes, larger than"), "{msg}");
            }
            other => panic!("{other:?}"),
        }
        // The writer is usable afterwards, and nothing leaked.
        assert!(s
            .capture(&[st("INSERT INTO b VALUES (1, x'00')")], true)
            .unwrap()
            .writeset
            .is_some());
        assert!(dump(&s, "b").is_empty());
    }

    #[test]
    fn changes_to_sqlite_stat1_are_refused_unless_replayed_as_statements() {
        let (_d, s) = store();
        apply_one(
            &s,
            &capture_ws(&s, &[st("INSERT INTO t(id, name) VALUES (1, 'a')")], 2),
        );
        apply_one(&s, &capture_ws(&s, &[st("ANALYZE t")], 3));
        // As row changes they were a changeset every node refused.
        match s.capture(&[st("UPDATE sqlite_stat1 SET stat = '9'")], true) {
            Err(StoreError::Refused(msg)) => assert!(msg.contains("changes sqlite_stat1"), "{msg}"),
            other => panic!("{other:?}"),
        }
        let c = s
            .capture(
                &[st("ANALYZE t"), st("UPDATE sqlite_stat1 SET stat = '9'")],
                true,
            )
            .unwrap();
        assert_eq!(errors(&c), vec![None, None]);
        assert!(matches!(
            c.writeset.unwrap().payload,
            Payload::Statements(_)
        ));
    }

    #[test]
    fn cached_statements_are_still_checked() {
        let (_d, s) = store();
        for _ in 0..3 {
            let c = s
                .capture(&[st("INSERT INTO nopk VALUES (1, 2)")], true)
                .unwrap();
            assert!(c.results[0]
                .error
                .as_deref()
                .unwrap_or_default()
                .contains("no PRIMARY KEY"));
            let c = s
                .capture(&[st("INSERT INTO t(name) VALUES (1)")], true)
                .unwrap();
            assert_eq!(c.results[0].error, None);
        }
        // A trigger added later makes the same (cached) text write a table
        // without a primary key.
        let ws = capture_ws(&s, &[st("CREATE TRIGGER tr AFTER INSERT ON t BEGIN INSERT INTO nopk VALUES (new.id, 0); END")], 9);
        apply_one(&s, &ws);
        let c = s
            .capture(&[st("INSERT INTO t(name) VALUES (1)")], true)
            .unwrap();
        assert!(
            c.results[0]
                .error
                .as_deref()
                .unwrap_or_default()
                .contains("nopk has no PRIMARY KEY"),
            "{:?}",
            c.results
        );
    }

    #[test]
    fn first_keyword_skips_comments() {
        assert_eq!(first_keyword("  -- x\n /* y */ VACUUM;"), "VACUUM");
        assert_eq!(first_keyword("vacuum"), "vacuum");
        assert_eq!(first_keyword("/* unterminated"), "");
        assert_eq!(first_keyword("SELECT 1"), "SELECT");
    }
}
