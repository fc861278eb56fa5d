//! What capture and apply need to know about a table: its columns, primary
//! key and unique indexes. Cached per table name; cleared after any schema
//! change.

use std::collections::HashMap;
use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TableInfo {
    /// The name as declared.
    pub name: String,
    pub is_view: bool,
    /// The columns a changeset carries: generated columns are left out, as
    /// SQLite's session and apply leave them out.
    pub columns: Vec<String>,
    /// For each of `columns`, its position among all the table's columns
    /// (generated ones included): the index the preupdate hook reads it by.
    pub hook_columns: Vec<usize>,
    /// How many columns the table has, generated ones included: what the
    /// preupdate hook reports.
    pub all_columns: usize,
    /// For each of `columns`, its position in the PRIMARY KEY (from 1; 0
    /// when not in it), one byte each: the flags a changeset header holds,
    /// as the session writes them.
    pub pk_flags: Vec<u8>,
    /// Column indexes of the declared PRIMARY KEY, in column order. Empty
    /// when the table has none (changesets skip such tables).
    pub pk: Vec<usize>,
    pub unique: Vec<UniqueIndex>,
    /// A column whose default reads the clock or random(); such defaults
    /// make a replayed INSERT non-deterministic.
    pub nondeterministic_default: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UniqueIndex {
    pub name: String,
    pub columns: Vec<usize>,
}

#[derive(Debug, Default)]
pub(crate) struct SchemaCache {
    tables: HashMap<String, Option<Arc<TableInfo>>>,
}

impl SchemaCache {
    pub fn clear(&mut self) {
        self.tables.clear();
    }

    /// `None` when no table or view of that name exists in `main`.
    pub fn table(
        &mut self,
        conn: &Connection,
        name: &str,
    ) -> rusqlite::Result<Option<Arc<TableInfo>>> {
        let key = name.to_ascii_lowercase();
        if let Some(found) = self.tables.get(&key) {
            return Ok(found.clone());
        }
        let info = load(conn, name)?.map(Arc::new);
        self.tables.insert(key, info.clone());
        Ok(info)
    }
}

fn load(conn: &Connection, name: &str) -> rusqlite::Result<Option<TableInfo>> {
    let found: Option<(String, String)> = conn
        .prepare_cached(
            "SELECT type, name FROM main.sqlite_schema WHERE type IN ('table', 'view') AND name = ?1 COLLATE NOCASE",
        )?
        .query_row([name], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((kind, name)) = found else {
        return Ok(None);
    };

    let mut columns = Vec::new();
    let mut hook_columns = Vec::new();
    let mut all_columns = 0;
    let mut pk_flags = Vec::new();
    let mut pk = Vec::new();
    let mut nondeterministic_default = None;
    {
        // table_xinfo rather than table_info: the preupdate hook numbers
        // columns among all of them, generated ones included (`hidden` > 0),
        // which table_info leaves out.
        let mut stmt = conn.prepare_cached(
            "SELECT name, pk, dflt_value, hidden FROM pragma_table_xinfo(?1, 'main') ORDER BY cid",
        )?;
        let mut rows = stmt.query([&name])?;
        while let Some(r) = rows.next()? {
            let col: String = r.get(0)?;
            let in_pk: i64 = r.get(1)?;
            let default: Option<String> = r.get(2)?;
            let hidden: i64 = r.get(3)?;
            all_columns += 1;
            if hidden != 0 {
                continue;
            }
            if in_pk > 0 {
                pk.push(columns.len());
            }
            hook_columns.push(all_columns - 1);
            // The session stores the flag in a byte (`u8 abPK[]`); keep
            // exactly its truncation so headers stay byte for byte the same.
            pk_flags.push((in_pk & 0xff) as u8);
            if nondeterministic_default.is_none()
                && default.as_deref().is_some_and(reads_clock_or_random)
            {
                nondeterministic_default = Some(col.clone());
            }
            columns.push(col);
        }
    }
    pk.sort_unstable();

    let mut unique = Vec::new();
    {
        let mut indexes = Vec::new();
        let mut stmt = conn.prepare_cached(
            "SELECT name FROM pragma_index_list(?1, 'main') WHERE \"unique\" = 1 AND origin <> 'pk' ORDER BY name",
        )?;
        let mut rows = stmt.query([&name])?;
        while let Some(r) = rows.next()? {
            indexes.push(r.get::<_, String>(0)?);
        }
        for index in indexes {
            let mut stmt = conn
                .prepare_cached("SELECT cid FROM pragma_index_info(?1, 'main') ORDER BY seqno")?;
            let cids: Vec<i64> = stmt
                .query_map([&index], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            // Expression columns (cid < 0) cannot be computed from the
            // changeset; a clash on them still fails at apply, on every
            // node alike.
            if cids.iter().any(|&c| c < 0) {
                continue;
            }
            let columns = cids
                .into_iter()
                .filter_map(|c| usize::try_from(c).ok())
                .collect();
            unique.push(UniqueIndex {
                name: index,
                columns,
            });
        }
    }

    Ok(Some(TableInfo {
        name,
        is_view: kind == "view",
        columns,
        hook_columns,
        all_columns,
        pk_flags,
        pk,
        unique,
        nondeterministic_default,
    }))
}

fn reads_clock_or_random(default: &str) -> bool {
    let d = default.to_ascii_lowercase();
    ["current_", "now", "random"].iter().any(|w| d.contains(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_primary_keys_and_unique_indexes() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE Users(id INTEGER PRIMARY KEY, email TEXT UNIQUE, a, b, ts DEFAULT CURRENT_TIMESTAMP);
             CREATE UNIQUE INDEX users_ab ON users(b, a);
             CREATE UNIQUE INDEX users_expr ON users(lower(email));
             CREATE INDEX users_a ON users(a);
             CREATE TABLE pair(x TEXT, y INTEGER, z, PRIMARY KEY (y, x)) WITHOUT ROWID;
             CREATE TABLE nopk(x);
             CREATE VIEW v AS SELECT * FROM pair;",
        )
        .unwrap();
        let mut cache = SchemaCache::default();
        let users = cache.table(&conn, "USERS").unwrap().unwrap();
        assert_eq!(users.name, "Users");
        assert_eq!(users.pk, vec![0]);
        let names: Vec<_> = users
            .unique
            .iter()
            .map(|u| (u.name.as_str(), u.columns.clone()))
            .collect();
        assert_eq!(
            names,
            vec![
                ("sqlite_autoindex_Users_1", vec![1]),
                ("users_ab", vec![3, 2])
            ]
        );
        assert_eq!(users.nondeterministic_default.as_deref(), Some("ts"));

        let pair = cache.table(&conn, "pair").unwrap().unwrap();
        assert_eq!(pair.pk, vec![0, 1]);
        assert!(pair.unique.is_empty());
        assert!(cache.table(&conn, "nopk").unwrap().unwrap().pk.is_empty());
        assert!(cache.table(&conn, "v").unwrap().unwrap().is_view);
        assert!(cache.table(&conn, "missing").unwrap().is_none());
    }
}
