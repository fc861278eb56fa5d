//! Reading changesets: the certification keys of a captured changeset, and
//! the checks a changeset from a peer must pass before it is applied.

use std::io::Read;
use std::sync::Arc;

use rusqlite::fallible_streaming_iterator::FallibleStreamingIterator;
use rusqlite::hooks::Action;
use rusqlite::session::{ChangesetItem, ChangesetIter};
use rusqlite::types::Value;
use rusqlite::Connection;

use super::schema::{SchemaCache, TableInfo};
use super::{auth, quote_ident, values};
use crate::certify::{row_key, unique_key, KeyValue};
use crate::writeset::CertKey;

/// Keys of every changed row: `(table, primary key)`, and `(table, unique
/// index, values)` for each unique index whose values the change sets —
/// the new values for INSERT and UPDATE, the old ones for DELETE. Runs on
/// the capture connection inside the still-open transaction, so the rows
/// read for UPDATE are the transaction's final versions. Sorted and
/// deduplicated.
pub(crate) fn changeset_keys(
    conn: &Connection,
    schema: &mut SchemaCache,
    bytes: &[u8],
) -> rusqlite::Result<Vec<CertKey>> {
    let mut keys = Vec::new();
    let mut input: &[u8] = bytes;
    let reader: &mut dyn Read = &mut input;
    let mut iter = ChangesetIter::start_strm(&reader)?;
    while let Some(item) = iter.next()? {
        let op = item.op()?;
        let table_name = op.table_name().to_owned();
        let code = op.code();
        let Some(table) = schema.table(conn, &table_name)? else {
            // The changeset was just taken from this connection, so the
            // table exists; if not, SQLite has a bug worth surfacing.
            return Err(rusqlite::Error::InvalidParameterName(format!(
                "changeset names unknown table {table_name}"
            )));
        };
        let side = if code == Action::SQLITE_INSERT {
            Side::New
        } else {
            Side::Old
        };
        let pk: Vec<Value> = table
            .pk
            .iter()
            .map(|&c| value(item, side, c))
            .collect::<Result<_, _>>()?;
        let pk_refs: Vec<KeyValue<'_>> = pk.iter().map(values::key_value).collect();
        keys.push(row_key(&table.name, &pk_refs));

        for index in &table.unique {
            let vals: Vec<Value> = match code {
                Action::SQLITE_INSERT => index
                    .columns
                    .iter()
                    .map(|&c| value(item, Side::New, c))
                    .collect::<Result<_, _>>()?,
                Action::SQLITE_DELETE => index
                    .columns
                    .iter()
                    .map(|&c| value(item, Side::Old, c))
                    .collect::<Result<_, _>>()?,
                _ => {
                    // An UPDATE records new values only for the columns it
                    // changed; untouched indexes need no key.
                    if !index.columns.iter().any(|&c| item.new_value(c).is_ok()) {
                        continue;
                    }
                    read_columns(conn, &table, &pk, &index.columns)?
                }
            };
            // NULLs never clash in a UNIQUE index.
            if vals.iter().any(|v| matches!(v, Value::Null)) {
                continue;
            }
            let refs: Vec<KeyValue<'_>> = vals.iter().map(values::key_value).collect();
            keys.push(unique_key(&table.name, &index.name, &refs));
        }
    }
    keys.sort_unstable();
    keys.dedup();
    Ok(keys)
}

/// Whether the keys a write-set declares cover every key its changeset
/// implies, re-derived here rather than trusted from the sender: keys left
/// out would let a write-set skip certification against the writes it
/// clashes with. Runs after the changeset was applied in its savepoint, so
/// an UPDATE's unique-index values are read as the origin read them (the
/// row's final version). The verdict depends only on replicated state, so
/// every node reaches the same one; `Ok(Err(why))` fails the write-set.
pub(crate) fn check_declared(
    conn: &Connection,
    schema: &mut SchemaCache,
    bytes: &[u8],
    declared: &[CertKey],
) -> rusqlite::Result<Result<(), String>> {
    let derived = match changeset_keys(conn, schema, bytes) {
        Ok(keys) => keys,
        Err(e) if super::is_environmental(&e) => return Err(e),
        Err(e) => {
            return Ok(Err(format!(
                "cannot derive the certification keys of its changeset: {e}"
            )))
        }
    };
    let declared: std::collections::HashSet<&CertKey> = declared.iter().collect();
    match derived.iter().find(|k| !declared.contains(k)) {
        None => Ok(Ok(())),
        Some(missing) => Ok(Err(format!(
            "its certification keys do not cover its changeset: {} is changed but not \
             declared (the origin node is faulty or not a genuine quorate node)",
            crate::certify::render_key(missing)
        ))),
    }
}

#[derive(Clone, Copy)]
enum Side {
    Old,
    New,
}

fn value(item: &ChangesetItem, side: Side, col: usize) -> rusqlite::Result<Value> {
    let v = match side {
        Side::Old => item.old_value(col)?,
        Side::New => item.new_value(col)?,
    };
    Ok(values::owned(v))
}

fn read_columns(
    conn: &Connection,
    table: &TableInfo,
    pk: &[Value],
    cols: &[usize],
) -> rusqlite::Result<Vec<Value>> {
    let names = |cs: &[usize]| -> rusqlite::Result<Vec<String>> {
        cs.iter()
            .map(|&c| {
                table
                    .columns
                    .get(c)
                    .map(|n| quote_ident(n))
                    .ok_or(rusqlite::Error::InvalidColumnIndex(c))
            })
            .collect()
    };
    let select = names(cols)?.join(", ");
    let filter: Vec<String> = names(&table.pk)?
        .into_iter()
        .enumerate()
        .map(|(i, n)| format!("{n} IS ?{}", i + 1))
        .collect();
    let sql = format!(
        "SELECT {select} FROM main.{} WHERE {}",
        quote_ident(&table.name),
        filter.join(" AND ")
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(rusqlite::params_from_iter(pk.iter()))?;
    let Some(row) = rows.next()? else {
        return Err(rusqlite::Error::QueryReturnedNoRows);
    };
    (0..cols.len())
        .map(|i| row.get_ref(i).map(values::owned))
        .collect()
}

/// Check the table a change from a peer writes, before it is applied.
/// SQLite's own apply silently skips changes to tables that are missing or
/// do not match, which would let nodes diverge without a word; here they
/// fail the write-set instead (on every node alike: the schema is
/// replicated). `Ok(Err(msg))` is such a failure, `Err` a failure of the
/// database itself.
pub(crate) fn checked_table(
    conn: &Connection,
    schema: &mut SchemaCache,
    name: &str,
    ncol: usize,
    pk_flags: &[u8],
) -> rusqlite::Result<Result<Arc<TableInfo>, String>> {
    if auth::is_internal(name) || name.to_ascii_lowercase().starts_with("sqlite_") {
        return Ok(Err(format!("changeset writes internal table {name}")));
    }
    let Some(table) = schema.table(conn, name)? else {
        return Ok(Err(format!(
            "changeset writes table {name}, which does not exist"
        )));
    };
    let pk_matches = pk_flags.len() == ncol
        && table.pk.iter().all(|&c| c < ncol)
        && pk_flags
            .iter()
            .enumerate()
            .all(|(c, &flag)| (flag != 0) == table.pk.contains(&c));
    if table.is_view || ncol > table.columns.len() || table.pk.is_empty() || !pk_matches {
        return Ok(Err(format!(
            "changeset does not match the schema of table {name} ({ncol} columns in the changeset, {} in the table)",
            table.columns.len()
        )));
    }
    Ok(Ok(table))
}

/// A changeset in words, for people: one JSON object per changed row with
/// its table, operation and the old/new values by column position (`null`
/// where SQLite recorded no value). Used where write-sets are kept for an
/// operator (a fenced node's saved write-sets).
pub fn describe_changeset(bytes: &[u8]) -> Result<Vec<serde_json::Value>, String> {
    fn json_value(v: &Value) -> serde_json::Value {
        match v {
            Value::Null => serde_json::Value::Null,
            Value::Integer(i) => (*i).into(),
            Value::Real(f) => (*f).into(),
            Value::Text(t) => t.clone().into(),
            Value::Blob(b) => serde_json::json!({
                "blob_hex": b.iter().map(|x| format!("{x:02x}")).collect::<String>()
            }),
        }
    }
    let malformed = |e: rusqlite::Error| format!("malformed changeset: {e}");
    let mut input: &[u8] = bytes;
    let reader: &mut dyn Read = &mut input;
    let mut iter = ChangesetIter::start_strm(&reader).map_err(malformed)?;
    let mut rows = Vec::new();
    while let Some(item) = iter.next().map_err(malformed)? {
        let op = item.op().map_err(malformed)?;
        let ncol = usize::try_from(op.number_of_columns()).unwrap_or(0);
        let (name, code) = (op.table_name().to_owned(), op.code());
        let side = |s: Side| -> Vec<serde_json::Value> {
            (0..ncol)
                .map(|c| {
                    value(item, s, c)
                        .map(|v| json_value(&v))
                        .unwrap_or(serde_json::Value::Null)
                })
                .collect()
        };
        let (kind, old, new) = match code {
            Action::SQLITE_INSERT => ("INSERT", None, Some(side(Side::New))),
            Action::SQLITE_DELETE => ("DELETE", Some(side(Side::Old)), None),
            _ => ("UPDATE", Some(side(Side::Old)), Some(side(Side::New))),
        };
        rows.push(serde_json::json!({"table": name, "op": kind, "old": old, "new": new}));
    }
    Ok(rows)
}
