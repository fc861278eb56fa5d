//! `/db/backup` and `/db/load` at the file level: what a backup contains, the
//! SQL dump text (the `sqlite3` shell's `.dump` layout, which rqlite's
//! `fmt=sql` reproduces and clients compare byte for byte), and the
//! statements that restore a SQLite file or a dump through the write path.
//!
//! A backup holds the client's tables only: quorate's internal `_quorate_*`
//! tables describe one cluster's position and must not travel into another.

use std::fmt::Write as _;
use std::path::Path;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};

use crate::sql::{Params, SqlValue, Statement};

/// Internal tables of the node (see `store::meta`), never part of a backup.
const INTERNAL_PREFIX: &str = "_quorate_";
/// An uploaded SQL script that runs longer than this in the scratch
/// database (an endless recursive query, say) is stopped.
const SCRIPT_TIME_LIMIT: std::time::Duration = std::time::Duration::from_secs(120);
/// The first bytes of every SQLite database file.
const SQLITE_MAGIC: &[u8] = b"SQLite format 3\0";

#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error("{0}")]
    Invalid(String),
    #[error("SQLite error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

fn is_internal(name: &str) -> bool {
    name.len() >= INTERNAL_PREFIX.len()
        && name[..INTERNAL_PREFIX.len()].eq_ignore_ascii_case(INTERNAL_PREFIX)
}

/// Whether `data` is a SQLite database file rather than SQL text.
pub fn is_sqlite_file(data: &[u8]) -> bool {
    data.starts_with(SQLITE_MAGIC)
}

/// Remove quorate's internal tables from a copy of the database and compact
/// it, so that what remains is the client's data only.
pub fn strip_internal(path: &Path) -> Result<(), DumpError> {
    let conn = Connection::open(path)?;
    let internal: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table'")?
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .filter(|name| is_internal(name))
        .collect();
    for name in &internal {
        conn.execute_batch(&format!("DROP TABLE {}", quote_ident(name)))?;
    }
    // A backup is a plain file: no WAL beside it.
    conn.query_row("PRAGMA journal_mode=DELETE", [], |_| Ok(()))?;
    conn.execute_batch("VACUUM")?;
    Ok(())
}

/// One table's rows as the dump and the load need them.
struct TableDump {
    name: String,
    create: String,
    /// Columns to insert (generated columns cannot be), and whether that is
    /// every column, so `INSERT` needs no column list.
    columns: Vec<String>,
    all_columns: bool,
    rows: Vec<Vec<SqlValue>>,
}

/// Everything in the database, in an order that restores it: tables with
/// their rows, `sqlite_sequence`, then indexes, triggers and views (after the
/// rows, so that no trigger fires while they are inserted).
struct Contents {
    tables: Vec<TableDump>,
    sequence: Vec<Vec<SqlValue>>,
    others: Vec<String>,
}

fn read_contents(conn: &Connection) -> Result<Contents, DumpError> {
    let mut objects: Vec<(String, String, String)> = conn
        .prepare(
            "SELECT type, name, sql FROM sqlite_schema \
             WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY rowid",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    objects.retain(|(_, name, _)| !is_internal(name));
    let mut tables = Vec::new();
    let mut others = Vec::new();
    for (kind, name, sql) in objects {
        if kind != "table" {
            others.push(sql);
            continue;
        }
        if sql.to_ascii_uppercase().starts_with("CREATE VIRTUAL TABLE") {
            return Err(DumpError::Invalid(format!(
                "table {name} is a virtual table, which quorate cannot replicate"
            )));
        }
        let mut columns = Vec::new();
        let mut all_columns = true;
        let mut info = conn.prepare(&format!("PRAGMA table_xinfo({})", quote_ident(&name)))?;
        let mut rows = info.query([])?;
        while let Some(row) = rows.next()? {
            let column: String = row.get(1)?;
            let hidden: i64 = row.get(6)?;
            if hidden == 0 {
                columns.push(column);
            } else {
                all_columns = false;
            }
        }
        let select = format!(
            "SELECT {} FROM {}",
            columns
                .iter()
                .map(|c| quote_ident(c))
                .collect::<Vec<_>>()
                .join(","),
            quote_ident(&name)
        );
        let rows = select_all(conn, &select)?;
        tables.push(TableDump {
            name,
            create: sql,
            columns,
            all_columns,
            rows,
        });
    }
    let has_sequence: bool = conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_schema WHERE name = 'sqlite_sequence'",
        [],
        |r| r.get(0),
    )?;
    let sequence = if has_sequence {
        select_all(conn, "SELECT name, seq FROM sqlite_sequence")?
            .into_iter()
            .filter(|row| !matches!(&row[0], SqlValue::Text(t) if is_internal(t)))
            .collect()
    } else {
        Vec::new()
    };
    Ok(Contents {
        tables,
        sequence,
        others,
    })
}

fn select_all(conn: &Connection, sql: &str) -> Result<Vec<Vec<SqlValue>>, DumpError> {
    let mut stmt = conn.prepare(sql)?;
    let n = stmt.column_count();
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let mut values = Vec::with_capacity(n);
        for i in 0..n {
            values.push(match row.get_ref(i)? {
                ValueRef::Null => SqlValue::Null,
                ValueRef::Integer(v) => SqlValue::Integer(v),
                ValueRef::Real(v) => SqlValue::Real(v),
                ValueRef::Text(t) => SqlValue::Text(String::from_utf8_lossy(t).into_owned()),
                ValueRef::Blob(b) => SqlValue::Blob(b.to_vec()),
            });
        }
        out.push(values);
    }
    Ok(out)
}

fn insert_prefix(table: &TableDump) -> String {
    let mut s = format!("INSERT INTO {}", quote_ident(&table.name));
    if !table.all_columns {
        let cols: Vec<String> = table.columns.iter().map(|c| quote_ident(c)).collect();
        let _ = write!(s, "({})", cols.join(","));
    }
    s
}

/// The SQL dump of the database at `path`, laid out as the `sqlite3` shell's
/// `.dump` (and rqlite's `fmt=sql`) lays it out.
pub fn sql_dump(path: &Path) -> Result<Vec<u8>, DumpError> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let contents = read_contents(&conn)?;
    let mut out = String::from("PRAGMA foreign_keys=OFF;\nBEGIN TRANSACTION;\n");
    for table in &contents.tables {
        out.push_str(&table.create);
        out.push_str(";\n");
        let prefix = insert_prefix(table);
        for row in &table.rows {
            out.push_str(&prefix);
            out.push_str(" VALUES(");
            for (i, v) in row.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&literal(v));
            }
            out.push_str(");\n");
        }
    }
    if !contents.sequence.is_empty() {
        out.push_str("DELETE FROM sqlite_sequence;\n");
        for row in &contents.sequence {
            let values: Vec<String> = row.iter().map(literal).collect();
            let _ = writeln!(
                out,
                "INSERT INTO sqlite_sequence VALUES({});",
                values.join(",")
            );
        }
    }
    for sql in &contents.others {
        out.push_str(sql);
        out.push_str(";\n");
    }
    out.push_str("COMMIT;\n");
    Ok(out.into_bytes())
}

/// A SQL literal for `v`, exact: a REAL prints as the shortest text that
/// reads back as the same number.
fn literal(v: &SqlValue) -> String {
    match v {
        SqlValue::Null => "NULL".to_string(),
        SqlValue::Integer(i) => i.to_string(),
        SqlValue::Real(f) if f.is_infinite() => {
            if *f > 0.0 { "9.0e+999" } else { "-9.0e+999" }.to_string()
        }
        SqlValue::Real(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{f:.1}"),
        SqlValue::Real(f) => format!("{f:?}"),
        // SQL text literals cannot hold NUL; SQLite text can.
        SqlValue::Text(t) if t.contains('\0') => {
            format!("CAST({} AS TEXT)", hex_blob(t.as_bytes()))
        }
        SqlValue::Text(t) => format!("'{}'", t.replace('\'', "''")),
        SqlValue::Blob(b) => hex_blob(b),
    }
}

fn hex_blob(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2 + 3);
    s.push_str("X'");
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s.push('\'');
    s
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Open what a client uploaded to `/db/load` in a scratch database at
/// `scratch`: a SQLite file is written there as it is, a SQL dump is run into
/// it. The scratch connection can touch no other file.
pub fn open_upload(data: &[u8], scratch: &Path) -> Result<Connection, DumpError> {
    open_upload_within(data, scratch, SCRIPT_TIME_LIMIT)
}

fn open_upload_within(
    data: &[u8],
    scratch: &Path,
    time_limit: std::time::Duration,
) -> Result<Connection, DumpError> {
    let io = |source| DumpError::Io {
        path: scratch.display().to_string(),
        source,
    };
    if is_sqlite_file(data) {
        std::fs::write(scratch, data).map_err(io)?;
        let conn = guarded(Connection::open(scratch)?)?;
        let check: String = conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(|e| DumpError::Invalid(format!("the uploaded SQLite file is damaged: {e}")))?;
        if check != "ok" {
            return Err(DumpError::Invalid(format!(
                "the uploaded SQLite file is damaged: {check}"
            )));
        }
        return Ok(conn);
    }
    let sql = std::str::from_utf8(data).map_err(|e| {
        DumpError::Invalid(format!(
            "the body is neither a SQLite database file nor UTF-8 SQL text: {e}"
        ))
    })?;
    if sql.trim().is_empty() {
        return Err(DumpError::Invalid(
            "the body is empty: send a SQLite database file or a SQL dump".into(),
        ));
    }
    let mut conn = guarded(Connection::open(scratch)?)?;
    let deadline = std::time::Instant::now() + time_limit;
    conn.progress_handler(10_000, Some(move || std::time::Instant::now() > deadline))?;
    let ran = conn.execute_batch(sql);
    conn.progress_handler(10_000, None::<fn() -> bool>)?;
    ran.map_err(|e| match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::OperationInterrupted) => DumpError::Invalid(format!(
            "the SQL script ran longer than {time_limit:?} and was stopped"
        )),
        _ => DumpError::Invalid(format!("the SQL dump does not run: {e}")),
    })?;
    if !conn.is_autocommit() {
        return Err(DumpError::Invalid(
            "the SQL dump leaves a transaction open (BEGIN without COMMIT)".into(),
        ));
    }
    Ok(conn)
}

/// A connection that runs uploaded SQL: no ATTACH (nor `VACUUM INTO`, which
/// attaches), so the upload cannot read or write files of the node.
fn guarded(conn: Connection) -> Result<Connection, DumpError> {
    conn.set_limit(rusqlite::limits::Limit::SQLITE_LIMIT_ATTACHED, 0)?;
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)?;
    Ok(conn)
}

/// The statements that make a database hold exactly what `conn` holds:
/// drop every client object in `existing` (`(type, name)` of the live
/// database), then create the tables, insert their rows (as parameters, so
/// every value arrives exactly), set `sqlite_sequence`, and create indexes,
/// triggers and views.
pub fn restore_statements(
    conn: &Connection,
    existing: &[(String, String)],
) -> Result<Vec<Statement>, DumpError> {
    let contents = read_contents(conn)?;
    let mut out = Vec::new();
    for kind in ["view", "table"] {
        for (_, name) in existing
            .iter()
            .filter(|(k, n)| k == kind && !is_internal(n))
        {
            out.push(Statement::new(format!(
                "DROP {} IF EXISTS {}",
                kind.to_ascii_uppercase(),
                quote_ident(name)
            )));
        }
    }
    for table in &contents.tables {
        out.push(Statement::new(table.create.clone()));
        let placeholders = vec!["?"; table.columns.len()].join(",");
        let sql = format!("{} VALUES({placeholders})", insert_prefix(table));
        for row in &table.rows {
            out.push(Statement {
                sql: sql.clone(),
                params: Params::Positional(row.clone()),
            });
        }
    }
    if !contents.sequence.is_empty() {
        out.push(Statement::new("DELETE FROM sqlite_sequence"));
        for row in &contents.sequence {
            out.push(Statement {
                sql: "INSERT INTO sqlite_sequence VALUES(?,?)".into(),
                params: Params::Positional(row.clone()),
            });
        }
    }
    out.extend(contents.others.into_iter().map(Statement::new));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(dir: &Path, sql: &str) -> std::path::PathBuf {
        let path = dir.join("db.sqlite");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(sql).unwrap();
        path
    }

    #[test]
    fn dump_matches_the_sqlite_shell_layout() {
        let dir = tempfile::tempdir().unwrap();
        let path = db(
            dir.path(),
            "CREATE TABLE test (id INTEGER PRIMARY KEY, value TEXT);
             INSERT INTO test(value) VALUES ('hello');",
        );
        assert_eq!(
            String::from_utf8(sql_dump(&path).unwrap()).unwrap(),
            "PRAGMA foreign_keys=OFF;\nBEGIN TRANSACTION;\n\
             CREATE TABLE test (id INTEGER PRIMARY KEY, value TEXT);\n\
             INSERT INTO \"test\" VALUES(1,'hello');\n\
             COMMIT;\n"
        );
    }

    #[test]
    fn values_survive_a_dump_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = db(
            dir.path(),
            "CREATE TABLE \"odd \"\"name\"\"\" (id INTEGER PRIMARY KEY AUTOINCREMENT, r REAL, t TEXT, b BLOB,
                 g INTEGER GENERATED ALWAYS AS (id * 2) VIRTUAL);
             INSERT INTO \"odd \"\"name\"\"\"(r, t, b) VALUES
                 (0.1, 'it''s', x'00ff'), (3.0, 'line\nbreak', NULL), (1e300, char(97, 0, 98), x''),
                 (-2.5e-300, '', NULL), (9e999, NULL, NULL);
             CREATE INDEX odd_r ON \"odd \"\"name\"\"\"(r);
             CREATE VIEW v AS SELECT id FROM \"odd \"\"name\"\"\";
             CREATE TABLE _quorate_meta (k INTEGER PRIMARY KEY);",
        );
        let dump = String::from_utf8(sql_dump(&path).unwrap()).unwrap();
        assert!(!dump.contains("_quorate_meta"), "{dump}");
        assert!(
            dump.contains("INSERT INTO sqlite_sequence VALUES('odd \"name\"',5);"),
            "{dump}"
        );
        let copy = Connection::open_in_memory().unwrap();
        copy.execute_batch(&dump).unwrap();
        let original = Connection::open(&path).unwrap();
        let all = "SELECT id, r, t, b, g, typeof(t) FROM \"odd \"\"name\"\"\" ORDER BY id";
        assert_eq!(
            select_all(&copy, all).unwrap(),
            select_all(&original, all).unwrap()
        );
        assert_eq!(
            select_all(&copy, "SELECT count(*) FROM v").unwrap(),
            vec![vec![SqlValue::Integer(5)]]
        );
    }

    #[test]
    fn restore_drops_what_exists_and_recreates_everything() {
        let dir = tempfile::tempdir().unwrap();
        let path = db(
            dir.path(),
            "CREATE TABLE a (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO a VALUES (1, 'x');
             CREATE TRIGGER a_t AFTER INSERT ON a BEGIN UPDATE a SET v = 'fired'; END;",
        );
        let conn = Connection::open(&path).unwrap();
        let existing = vec![
            ("table".to_string(), "old".to_string()),
            ("view".to_string(), "old_v".to_string()),
            ("table".to_string(), "_quorate_meta".to_string()),
        ];
        let stmts = restore_statements(&conn, &existing).unwrap();
        let sqls: Vec<&str> = stmts.iter().map(|s| s.sql.as_str()).collect();
        assert_eq!(
            sqls,
            [
                "DROP VIEW IF EXISTS \"old_v\"",
                "DROP TABLE IF EXISTS \"old\"",
                "CREATE TABLE a (id INTEGER PRIMARY KEY, v TEXT)",
                "INSERT INTO \"a\" VALUES(?,?)",
                "CREATE TRIGGER a_t AFTER INSERT ON a BEGIN UPDATE a SET v = 'fired'; END",
            ]
        );
        assert_eq!(
            stmts[3].params,
            Params::Positional(vec![SqlValue::Integer(1), SqlValue::Text("x".into())])
        );
    }

    #[test]
    fn uploads_are_checked_and_cannot_reach_other_files() {
        let dir = tempfile::tempdir().unwrap();
        let scratch = dir.path().join("scratch");
        let err = |data: &[u8]| {
            let _ = std::fs::remove_file(&scratch);
            open_upload(data, &scratch).err().unwrap().to_string()
        };
        assert!(err(b"  ").contains("empty"));
        assert!(err(&[0xff, 0xfe]).contains("neither a SQLite database file nor UTF-8"));
        assert!(err(b"CREATE TABLE (").contains("the SQL dump does not run"));
        let outside = dir.path().join("outside.db");
        let attach = format!("ATTACH '{}' AS x; CREATE TABLE x.t(a);", outside.display());
        assert!(err(attach.as_bytes()).contains("too many attached databases"));
        let vacuum = format!("CREATE TABLE t(a); VACUUM INTO '{}';", outside.display());
        assert!(!err(vacuum.as_bytes()).is_empty());
        assert!(!outside.exists());
        let mut damaged = SQLITE_MAGIC.to_vec();
        damaged.extend_from_slice(&[0u8; 200]);
        assert!(err(&damaged).contains("damaged"), "{}", err(&damaged));

        let _ = std::fs::remove_file(&scratch);
        let endless = b"CREATE TABLE t(x); WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) INSERT INTO t SELECT x FROM c;";
        let stopped = open_upload_within(endless, &scratch, std::time::Duration::from_millis(200));
        assert!(stopped
            .err()
            .unwrap()
            .to_string()
            .contains("ran longer than 200ms and was stopped"));

        let _ = std::fs::remove_file(&scratch);
        let conn = open_upload(
            b"CREATE TABLE t(id INTEGER PRIMARY KEY); INSERT INTO t VALUES (7);",
            &scratch,
        )
        .unwrap();
        assert_eq!(
            select_all(&conn, "SELECT id FROM t").unwrap(),
            vec![vec![SqlValue::Integer(7)]]
        );
    }
}
