//! Applying a validated changeset with cached statements.
//!
//! SQLite's `sqlite3changeset_apply` reads the table's columns and compiles
//! its INSERT, UPDATE, DELETE and SELECT statements anew on every call: for
//! the one-row write-sets of a typical client that was three quarters of the
//! cost of applying them, on every node. This applies each change with a
//! statement from the connection's cache instead, with the same rules: a
//! DELETE or UPDATE must find the row with exactly the old values the origin
//! saw, an INSERT must not find its key taken, and any conflict fails the
//! whole write-set (the caller rolls back to its savepoint). Every node
//! runs the same code on the same replicated schema, so verdicts agree.

use std::fmt::Write as _;
use std::io::Read;
use std::sync::Arc;

use rusqlite::fallible_streaming_iterator::FallibleStreamingIterator;
use rusqlite::hooks::Action;
use rusqlite::session::{ChangesetItem, ChangesetIter};
use rusqlite::types::ToSqlOutput;
use rusqlite::{Connection, ErrorCode};

use super::schema::{SchemaCache, TableInfo};
use super::{keys, quote_ident};

/// Check and apply `bytes`, a changeset from a peer: each table it writes
/// must exist and match it (`keys::checked_table`). `Ok(Err(message))`: a
/// mismatch or a conflict, the write-set fails (alike everywhere; the caller
/// rolls back what was applied); `Err`: the database itself failed.
pub(crate) fn apply(
    conn: &Connection,
    schema: &mut SchemaCache,
    bytes: &[u8],
) -> rusqlite::Result<Result<(), String>> {
    let mut input: &[u8] = bytes;
    let reader: &mut dyn Read = &mut input;
    let mut iter = match ChangesetIter::start_strm(&reader) {
        Ok(it) => it,
        Err(e) => return Ok(Err(format!("malformed changeset: {e}"))),
    };
    let mut sql = String::new();
    let mut checked: Option<(String, Arc<TableInfo>)> = None;
    loop {
        let item = match iter.next() {
            Ok(Some(item)) => item,
            Ok(None) => return Ok(Ok(())),
            Err(e) => return Ok(Err(format!("malformed changeset: {e}"))),
        };
        let (name, ncol, code) = match item.op() {
            Ok(op) => (
                op.table_name().to_owned(),
                usize::try_from(op.number_of_columns()).unwrap_or(usize::MAX),
                op.code(),
            ),
            Err(e) => return Ok(Err(format!("malformed changeset: {e}"))),
        };
        // Consecutive changes of one table are checked once.
        let table = match &checked {
            Some((checked_name, table)) if *checked_name == name => Arc::clone(table),
            _ => {
                let pk_flags = match item.pk() {
                    Ok(p) => p.to_vec(),
                    Err(e) => return Ok(Err(format!("malformed changeset: {e}"))),
                };
                match keys::checked_table(conn, schema, &name, ncol, &pk_flags)? {
                    Ok(table) => {
                        checked = Some((name.clone(), Arc::clone(&table)));
                        table
                    }
                    Err(message) => return Ok(Err(message)),
                }
            }
        };
        let outcome = match code {
            Action::SQLITE_INSERT => insert(conn, &table, item, ncol, &mut sql)?,
            Action::SQLITE_DELETE => delete(conn, &table, item, ncol, &mut sql)?,
            Action::SQLITE_UPDATE => update(conn, &table, item, ncol, &mut sql)?,
            _ => Err(format!(
                "malformed changeset: unknown change in table {name}"
            )),
        };
        if let Err(message) = outcome {
            return Ok(Err(message));
        }
    }
}

type Outcome = Result<(), String>;

fn insert(
    conn: &Connection,
    table: &TableInfo,
    item: &ChangesetItem,
    ncol: usize,
    sql: &mut String,
) -> rusqlite::Result<Outcome> {
    sql.clear();
    let _ = write!(sql, "INSERT INTO main.{} (", quote_ident(&table.name));
    push_joined(
        sql,
        ", ",
        table.columns.iter().take(ncol).map(|c| quote_ident(c)),
    );
    sql.push_str(") VALUES (");
    push_joined(sql, ", ", (1..=ncol).map(|n| format!("?{n}")));
    sql.push(')');
    let mut stmt = conn.prepare_cached(sql)?;
    for c in 0..ncol {
        stmt.raw_bind_parameter(c + 1, ToSqlOutput::Borrowed(item.new_value(c)?))?;
    }
    match stmt.raw_execute() {
        Ok(_) => Ok(Ok(())),
        Err(e) if is_constraint(&e) => {
            drop(stmt);
            Ok(Err(if row_exists(conn, table, item, Side::New, sql)? {
                format!(
                    "primary key conflict in table {}: the row already exists",
                    table.name
                )
            } else {
                format!(
                    "constraint violated in table {} (UNIQUE, NOT NULL or CHECK)",
                    table.name
                )
            }))
        }
        Err(e) => Err(e),
    }
}

fn delete(
    conn: &Connection,
    table: &TableInfo,
    item: &ChangesetItem,
    ncol: usize,
    sql: &mut String,
) -> rusqlite::Result<Outcome> {
    sql.clear();
    let _ = write!(sql, "DELETE FROM main.{} WHERE ", quote_ident(&table.name));
    push_joined(sql, " AND ", matching(table, 0..ncol, 1));
    let mut stmt = conn.prepare_cached(sql)?;
    for c in 0..ncol {
        stmt.raw_bind_parameter(c + 1, ToSqlOutput::Borrowed(item.old_value(c)?))?;
    }
    let deleted = stmt.raw_execute()?;
    drop(stmt);
    not_found_or_changed(conn, table, item, deleted, sql)
}

fn update(
    conn: &Connection,
    table: &TableInfo,
    item: &ChangesetItem,
    ncol: usize,
    sql: &mut String,
) -> rusqlite::Result<Outcome> {
    // An UPDATE records new values for the columns it changed, and old
    // values for those and the primary key; the rest are undefined.
    let changed: Vec<usize> = (0..ncol).filter(|&c| item.new_value(c).is_ok()).collect();
    let compared: Vec<usize> = (0..ncol).filter(|&c| item.old_value(c).is_ok()).collect();
    if changed.is_empty() {
        return Ok(Ok(()));
    }
    sql.clear();
    let _ = write!(sql, "UPDATE main.{} SET ", quote_ident(&table.name));
    push_joined(
        sql,
        ", ",
        changed
            .iter()
            .enumerate()
            .map(|(i, &c)| format!("{} = ?{}", quote_ident(&table.columns[c]), i + 1)),
    );
    sql.push_str(" WHERE ");
    push_joined(
        sql,
        " AND ",
        matching(table, compared.iter().copied(), changed.len() + 1),
    );
    let mut stmt = conn.prepare_cached(sql)?;
    let mut param = 0;
    for &c in &changed {
        param += 1;
        stmt.raw_bind_parameter(param, ToSqlOutput::Borrowed(item.new_value(c)?))?;
    }
    for &c in &compared {
        param += 1;
        stmt.raw_bind_parameter(param, ToSqlOutput::Borrowed(item.old_value(c)?))?;
    }
    let updated = match stmt.raw_execute() {
        Ok(n) => n,
        Err(e) if is_constraint(&e) => {
            return Ok(Err(format!(
                "constraint violated in table {} (UNIQUE, NOT NULL or CHECK)",
                table.name
            )))
        }
        Err(e) => return Err(e),
    };
    drop(stmt);
    not_found_or_changed(conn, table, item, updated, sql)
}

/// After a DELETE or UPDATE: no row matched the old values, so either the
/// row is gone or it has other values now.
fn not_found_or_changed(
    conn: &Connection,
    table: &TableInfo,
    item: &ChangesetItem,
    matched: usize,
    sql: &mut String,
) -> rusqlite::Result<Outcome> {
    if matched > 0 {
        return Ok(Ok(()));
    }
    Ok(Err(if row_exists(conn, table, item, Side::Old, sql)? {
        format!(
            "data conflict in table {}: the row no longer has the values the transaction read",
            table.name
        )
    } else {
        format!(
            "row not found in table {}: it was deleted or its key changed",
            table.name
        )
    }))
}

#[derive(Clone, Copy)]
enum Side {
    Old,
    New,
}

/// Whether a row with the change's primary key exists.
fn row_exists(
    conn: &Connection,
    table: &TableInfo,
    item: &ChangesetItem,
    side: Side,
    sql: &mut String,
) -> rusqlite::Result<bool> {
    sql.clear();
    let _ = write!(
        sql,
        "SELECT 1 FROM main.{} WHERE ",
        quote_ident(&table.name)
    );
    push_joined(sql, " AND ", matching(table, table.pk.iter().copied(), 1));
    let mut stmt = conn.prepare_cached(sql)?;
    for (i, &c) in table.pk.iter().enumerate() {
        let value = match side {
            Side::Old => item.old_value(c)?,
            Side::New => item.new_value(c)?,
        };
        stmt.raw_bind_parameter(i + 1, ToSqlOutput::Borrowed(value))?;
    }
    let found = stmt.raw_query().next()?.is_some();
    Ok(found)
}

/// `items` with `sep` between them.
fn push_joined(sql: &mut String, sep: &str, items: impl Iterator<Item = String>) {
    for (i, item) in items.enumerate() {
        if i > 0 {
            sql.push_str(sep);
        }
        sql.push_str(&item);
    }
}

/// `column IS ?n` for each of `columns`, numbering parameters from `first`.
fn matching<'a>(
    table: &'a TableInfo,
    columns: impl Iterator<Item = usize> + 'a,
    first: usize,
) -> impl Iterator<Item = String> + 'a {
    columns
        .enumerate()
        .map(move |(i, c)| format!("{} IS ?{}", quote_ident(&table.columns[c]), first + i))
}

fn is_constraint(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation)
}
