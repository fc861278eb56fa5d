//! Queries, on a pool of `query_only` reader connections. In WAL mode they
//! neither wait for nor block the writer.

use std::path::Path;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

use rusqlite::Connection;

use super::auth::{self, AuthHandle, ClientScope, Role};
use super::{open_connection, values};
use crate::sql::{QueryResult, Statement};

/// rqlite's wording, which clients may match on.
const NOT_READ_ONLY: &str = "attempt to change database via query operation";

struct Reader {
    conn: Connection,
    auth: AuthHandle,
}

pub(crate) struct ReaderPool {
    idle: Mutex<Vec<Reader>>,
    returned: Condvar,
}

impl ReaderPool {
    pub fn open(path: &Path, n: usize) -> rusqlite::Result<Self> {
        let mut idle = Vec::with_capacity(n);
        for _ in 0..n {
            let mut conn = open_connection(path)?;
            conn.execute_batch("PRAGMA query_only=1")?;
            let auth = auth::install(&mut conn, Role::Reader)?;
            idle.push(Reader { conn, auth });
        }
        Ok(ReaderPool {
            idle: Mutex::new(idle),
            returned: Condvar::new(),
        })
    }

    fn take(&self) -> Lease<'_> {
        let mut idle = lock(&self.idle);
        loop {
            if let Some(reader) = idle.pop() {
                return Lease {
                    pool: self,
                    reader: Some(reader),
                };
            }
            idle = self.returned.wait(idle).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// All statements read one snapshot. Statement errors go into their
    /// result; `Err` only when the read transaction itself fails.
    pub fn query(&self, stmts: &[Statement], timings: bool) -> rusqlite::Result<Vec<QueryResult>> {
        let lease = self.take();
        let Some(reader) = lease.reader.as_ref() else {
            return Ok(Vec::new());
        };
        let conn = &reader.conn;
        conn.execute_batch("BEGIN")?;
        let results = stmts
            .iter()
            .map(|st| {
                let start = Instant::now();
                let mut result =
                    run_query(conn, &reader.auth, st).unwrap_or_else(|error| QueryResult {
                        error: Some(error),
                        ..QueryResult::default()
                    });
                if timings {
                    result.time = Some(start.elapsed().as_secs_f64());
                }
                result
            })
            .collect();
        if !conn.is_autocommit() {
            conn.execute_batch("COMMIT")?;
        }
        Ok(results)
    }

    pub fn is_read_only(&self, sql: &str) -> rusqlite::Result<bool> {
        let lease = self.take();
        let Some(reader) = lease.reader.as_ref() else {
            return Ok(false);
        };
        let _scope = ClientScope::begin(&reader.auth);
        let stmt = reader.conn.prepare_cached(sql)?;
        Ok(stmt.readonly())
    }
}

fn run_query(conn: &Connection, auth: &AuthHandle, st: &Statement) -> Result<QueryResult, String> {
    let scope = ClientScope::begin(auth);
    let mut stmt = match conn.prepare_cached(&st.sql) {
        Ok(s) => s,
        Err(e) => return Err(scope.take().1.unwrap_or_else(|| e.to_string())),
    };
    if !stmt.readonly() {
        return Err(NOT_READ_ONLY.to_string());
    }
    values::bind(&mut stmt, &st.params)?;
    let columns: Vec<String> = stmt.column_names().map(str::to_owned).collect();
    let types: Vec<String> = stmt
        .columns()
        .map(|c| {
            c.decl_type()
                .map(|t| t.to_ascii_lowercase())
                .unwrap_or_default()
        })
        .collect();
    let n = columns.len();
    let mut rows_out = Vec::new();
    let mut rows = stmt.raw_query();
    loop {
        match rows.next() {
            Ok(Some(row)) => {
                let mut out = Vec::with_capacity(n);
                for i in 0..n {
                    out.push(
                        row.get_ref(i)
                            .map(values::from_value_ref)
                            .map_err(|e| e.to_string())?,
                    );
                }
                rows_out.push(out);
            }
            Ok(None) => break,
            Err(e) => return Err(scope.take().1.unwrap_or_else(|| e.to_string())),
        }
    }
    Ok(QueryResult {
        columns,
        types,
        rows: rows_out,
        error: None,
        time: None,
    })
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The pool is a list of idle connections; a panic elsewhere cannot leave
    // it half-updated.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A reader on loan; goes back to the pool when dropped.
struct Lease<'a> {
    pool: &'a ReaderPool,
    reader: Option<Reader>,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(reader) = self.reader.take() {
            if !reader.conn.is_autocommit() {
                // Never hand out a reader stuck in an old snapshot.
                let _ = reader.conn.execute_batch("ROLLBACK");
            }
            lock(&self.pool.idle).push(reader);
            self.pool.returned.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::sql::{Params, SqlValue};
    use crate::store::testutil::*;
    use tempfile::TempDir;

    #[test]
    fn queries_return_columns_types_rows_and_per_statement_errors() {
        let dir = TempDir::new().unwrap();
        let s = open(dir.path());
        let ws = capture_ws(
            &s,
            &[
                st("CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, score REAL, raw)"),
                st("INSERT INTO t VALUES (1, 'a', 1.5, x'01'), (2, NULL, NULL, 7)"),
            ],
            1,
        );
        apply_one(&s, &ws);
        let r = s
            .query(
                &[
                    st("SELECT * FROM t ORDER BY id"),
                    st("SELECT count(*) AS n FROM t"),
                    st("INSERT INTO t(id) VALUES (3)"),
                    st("SELECT * FROM nosuch"),
                    stp(
                        "SELECT name FROM t WHERE id = ?",
                        vec![SqlValue::Integer(1)],
                    ),
                    crate::sql::Statement {
                        sql: "SELECT id FROM t WHERE name = @n".into(),
                        params: Params::Named(vec![("n".into(), SqlValue::Text("a".into()))]),
                    },
                ],
                true,
            )
            .unwrap();
        assert_eq!(r[0].columns, vec!["id", "name", "score", "raw"]);
        assert_eq!(r[0].types, vec!["integer", "text", "real", ""]);
        assert_eq!(
            r[0].rows,
            vec![
                vec![
                    SqlValue::Integer(1),
                    SqlValue::Text("a".into()),
                    SqlValue::Real(1.5),
                    SqlValue::Blob(vec![1])
                ],
                vec![
                    SqlValue::Integer(2),
                    SqlValue::Null,
                    SqlValue::Null,
                    SqlValue::Integer(7)
                ],
            ]
        );
        assert_eq!(
            (r[1].columns.clone(), r[1].types.clone()),
            (vec!["n".to_string()], vec![String::new()])
        );
        assert_eq!(
            r[2].error.as_deref(),
            Some("attempt to change database via query operation")
        );
        assert_eq!(r[3].error.as_deref(), Some("no such table: nosuch"));
        assert_eq!(r[4].rows, vec![vec![SqlValue::Text("a".into())]]);
        assert_eq!(r[5].rows, vec![vec![SqlValue::Integer(1)]]);
        assert!(r.iter().all(|q| q.time.is_some()));
        assert!(s.query(&[st("SELECT 1")], false).unwrap()[0].time.is_none());
        assert_eq!(dump(&s, "t").len(), 2);
    }

    #[test]
    fn readers_refuse_what_escapes_read_only() {
        let dir = TempDir::new().unwrap();
        let s = open(dir.path());
        let r = s
            .query(
                &[
                    st("PRAGMA table_info(_quorate_meta)"),
                    st("PRAGMA user_version"),
                    st("PRAGMA query_only = 0"),
                    st("ATTACH 'other.db' AS o"),
                    st("BEGIN"),
                ],
                false,
            )
            .unwrap();
        assert_eq!(r[0].error, None);
        assert!(r[0].rows.len() >= 5);
        assert_eq!(r[1].rows, vec![vec![SqlValue::Integer(0)]]);
        for q in &r[2..] {
            assert!(q.error.is_some(), "{q:?}");
        }
        assert!(!dir.path().join("other.db").exists());
        assert!(s.is_read_only("SELECT 1").unwrap());
        assert!(s.is_read_only("PRAGMA table_info(x)").unwrap());
        assert!(!s
            .is_read_only("CREATE TABLE x(id INTEGER PRIMARY KEY)")
            .unwrap());
        assert!(!s
            .is_read_only("INSERT INTO _quorate_cert VALUES (x'00', 1)")
            .unwrap());
        assert!(s.is_read_only("SELEC 1").is_err());
    }
}
