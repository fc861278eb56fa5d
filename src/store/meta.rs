//! The internal tables: `_quorate_meta` (where the data stands),
//! `_quorate_cert` (the certification index), `_quorate_trx` (write-sets
//! already applied) and `_quorate_removed` (members removed by
//! `--remove-node`, so that every member, and every later one through its
//! SST, recognises them). Each changes only in the same SQLite transaction
//! as the position it belongs to.

use std::path::Path;

use rusqlite::{Connection, OpenFlags, OptionalExtension};
use uuid::Uuid;

use super::StoreError;
use crate::writeset::{CertKey, Position, Seqno};

pub(crate) fn create_tables(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "BEGIN IMMEDIATE;
         CREATE TABLE IF NOT EXISTS _quorate_meta (
             id INTEGER PRIMARY KEY CHECK (id = 0),
             state_uuid TEXT NOT NULL,
             seqno INTEGER NOT NULL,
             incarnation INTEGER NOT NULL,
             last_ddl_seqno INTEGER NOT NULL,
             raft_state BLOB,
             cert_window INTEGER
         );
         INSERT INTO _quorate_meta (id, state_uuid, seqno, incarnation, last_ddl_seqno, raft_state)
             SELECT 0, '00000000-0000-0000-0000-000000000000', -1, 0, -1, NULL
             WHERE NOT EXISTS (SELECT 1 FROM _quorate_meta);
         CREATE TABLE IF NOT EXISTS _quorate_cert (
             key BLOB PRIMARY KEY,
             seqno INTEGER NOT NULL
         ) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS _quorate_trx (
             origin TEXT NOT NULL,
             trx_id INTEGER NOT NULL,
             seqno INTEGER NOT NULL,
             PRIMARY KEY (origin, trx_id)
         ) WITHOUT ROWID;
         CREATE INDEX IF NOT EXISTS _quorate_trx_by_seqno ON _quorate_trx (seqno);
         CREATE TABLE IF NOT EXISTS _quorate_removed (
             node_id TEXT PRIMARY KEY,
             record TEXT NOT NULL
         ) WITHOUT ROWID;
         COMMIT;",
    )
}

/// The position and the seqno of the last schema change.
pub(crate) fn read_meta(conn: &Connection) -> rusqlite::Result<(Position, Seqno)> {
    conn.query_row(
        "SELECT state_uuid, seqno, incarnation, last_ddl_seqno FROM _quorate_meta WHERE id = 0",
        [],
        |r| {
            let uuid: String = r.get(0)?;
            let state_uuid = Uuid::parse_str(&uuid).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(
                    0,
                    rusqlite::types::Type::Text,
                    Box::new(e),
                )
            })?;
            let incarnation: i64 = r.get(2)?;
            let incarnation = u64::try_from(incarnation).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(
                    2,
                    rusqlite::types::Type::Integer,
                    Box::new(e),
                )
            })?;
            Ok((
                Position {
                    state_uuid,
                    seqno: r.get(1)?,
                    incarnation,
                },
                r.get(3)?,
            ))
        },
    )
}

pub(crate) fn raft_state(conn: &Connection) -> rusqlite::Result<Option<Vec<u8>>> {
    conn.query_row(
        "SELECT raft_state FROM _quorate_meta WHERE id = 0",
        [],
        |r| r.get(0),
    )
}

pub(crate) fn set_raft_state(conn: &Connection, raft_state: &[u8]) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE _quorate_meta SET raft_state = ?1 WHERE id = 0")?
        .execute([raft_state])?;
    Ok(())
}

/// Node ids are u64; SQLite integers are signed, so they are kept as text.
pub(crate) fn record_removed(
    conn: &Connection,
    node_id: u64,
    record: &str,
    raft_state: &[u8],
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO _quorate_removed (node_id, record) VALUES (?1, ?2) ON CONFLICT (node_id) DO NOTHING",
    )?
    .execute(rusqlite::params![node_id.to_string(), record])?;
    set_raft_state(conn, raft_state)
}

pub(crate) fn removed_member(conn: &Connection, node_id: u64) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached("SELECT record FROM _quorate_removed WHERE node_id = ?1")?
        .query_row([node_id.to_string()], |r| r.get(0))
        .optional()
}

pub(crate) fn set_identity(
    conn: &Connection,
    uuid: Uuid,
    incarnation: u64,
    cert_window: Option<i64>,
    raft_state: &[u8],
) -> rusqlite::Result<()> {
    let incarnation = i64::try_from(incarnation)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    conn.prepare_cached(
        // A new cluster starts at seqno 0 (Galera's initial position), so
        // its first write-set gets seqno 1; existing history is kept. The
        // certification window is the cluster's, fixed by its bootstrap.
        "UPDATE _quorate_meta SET state_uuid = ?1, incarnation = ?2, raft_state = ?3, \
         seqno = MAX(seqno, 0), cert_window = COALESCE(?4, cert_window) WHERE id = 0",
    )?
    .execute(rusqlite::params![
        uuid.to_string(),
        incarnation,
        raft_state,
        cert_window
    ])?;
    Ok(())
}

/// The cluster-wide certification window, once a bootstrap fixed it.
pub(crate) fn cert_window(conn: &Connection) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached("SELECT cert_window FROM _quorate_meta WHERE id = 0")?
        .query_row([], |r| r.get(0))
}

/// Record where a batch left the data; same transaction as the batch.
pub(crate) fn set_applied(
    conn: &Connection,
    seqno: Seqno,
    last_ddl_seqno: Seqno,
    raft_state: &[u8],
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE _quorate_meta SET seqno = ?1, last_ddl_seqno = ?2, raft_state = ?3 WHERE id = 0",
    )?
    .execute(rusqlite::params![seqno, last_ddl_seqno, raft_state])?;
    Ok(())
}

pub(crate) fn cert_last_change(
    conn: &Connection,
    key: &CertKey,
) -> rusqlite::Result<Option<Seqno>> {
    conn.prepare_cached("SELECT seqno FROM _quorate_cert WHERE key = ?1")?
        .query_row([&key.0], |r| r.get(0))
        .optional()
}

pub(crate) fn cert_record(
    conn: &Connection,
    keys: &[CertKey],
    seqno: Seqno,
) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO _quorate_cert (key, seqno) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET seqno = excluded.seqno",
    )?;
    for key in keys {
        stmt.execute(rusqlite::params![&key.0, seqno])?;
    }
    Ok(())
}

/// Runs every `certify::PRUNE_INTERVAL` write-sets, inside the apply of a
/// batch. `_quorate_trx` holds a row per write-set of the whole window
/// (100,000 by default): without its seqno index this DELETE read them all,
/// stalling every commit waiting on the batch for ~10 ms. `_quorate_cert`
/// has a row per key, at most one per row of the client's tables, and its
/// seqno changes with every write of the key: an index would add a page
/// write at a random place per key, more than the scan costs.
pub(crate) fn cert_prune(conn: &Connection, below: Seqno) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM _quorate_cert WHERE seqno < ?1")?
        .execute([below])?;
    // The same log-position rule forgets old transaction ids.
    conn.prepare_cached("DELETE FROM _quorate_trx WHERE seqno < ?1")?
        .execute([below])?;
    Ok(())
}

/// Trx ids are u64; SQLite stores their bits as i64 (same on every node).
fn trx_key(trx_id: u64) -> i64 {
    i64::from_ne_bytes(trx_id.to_ne_bytes())
}

/// Record that `(origin, trx_id)` is ordered at `seqno`, unless it already
/// was (recently): then `Some` of the seqno it got the first time. One
/// statement in the common case, where the id is new.
pub(crate) fn trx_record_first(
    conn: &Connection,
    origin: &str,
    trx_id: u64,
    seqno: Seqno,
) -> rusqlite::Result<Option<Seqno>> {
    let inserted = conn
        .prepare_cached(
            "INSERT INTO _quorate_trx (origin, trx_id, seqno) VALUES (?1, ?2, ?3) \
             ON CONFLICT (origin, trx_id) DO NOTHING",
        )?
        .execute(rusqlite::params![origin, trx_key(trx_id), seqno])?;
    if inserted == 1 {
        return Ok(None);
    }
    conn.prepare_cached("SELECT seqno FROM _quorate_trx WHERE origin = ?1 AND trx_id = ?2")?
        .query_row(rusqlite::params![origin, trx_key(trx_id)], |r| r.get(0))
        .map(Some)
}

/// Read the position of a database file without opening a Store (for
/// `quorate --recover` while the daemon is stopped). Creates nothing;
/// `Ok(None)` when the file does not exist.
pub fn read_position(db_path: &Path) -> Result<Option<Position>, StoreError> {
    if !db_path.exists() {
        return Ok(None);
    }
    let conn = open_read_only(db_path)?;
    check_quorate(&conn, db_path)?;
    let (position, _) = read_meta(&conn).map_err(|e| not_quorate(db_path, e))?;
    Ok(Some(position))
}

/// The Raft applied-state recorded in a database file (a snapshot copy).
pub(crate) fn read_raft_state(db_path: &Path) -> Result<Option<Vec<u8>>, StoreError> {
    if !db_path.exists() {
        return Ok(None);
    }
    let conn = open_read_only(db_path)?;
    check_quorate(&conn, db_path)?;
    raft_state(&conn).map_err(|e| not_quorate(db_path, e))
}

/// Position and last DDL seqno of a file that must be a quorate database.
pub(crate) fn inspect(db_path: &Path) -> Result<(Position, Seqno), StoreError> {
    if !db_path.exists() {
        return Err(StoreError::NotQuorate {
            path: db_path.to_path_buf(),
            reason: "no such file".into(),
        });
    }
    let conn = open_read_only(db_path)?;
    check_quorate(&conn, db_path)?;
    read_meta(&conn).map_err(|e| not_quorate(db_path, e))
}

fn open_read_only(db_path: &Path) -> Result<Connection, StoreError> {
    Connection::open_with_flags(
        db_path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|source| StoreError::Sqlite {
        path: db_path.to_path_buf(),
        source,
    })
}

fn check_quorate(conn: &Connection, db_path: &Path) -> Result<(), StoreError> {
    let tables: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name IN ('_quorate_meta', '_quorate_cert')",
            [],
            |r| r.get(0),
        )
        .map_err(|e| not_quorate(db_path, e))?;
    if tables != 2 {
        return Err(StoreError::NotQuorate {
            path: db_path.to_path_buf(),
            reason: "the tables _quorate_meta and _quorate_cert are missing".into(),
        });
    }
    Ok(())
}

fn not_quorate(path: &Path, e: rusqlite::Error) -> StoreError {
    StoreError::NotQuorate {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(conn: &Connection, sql: &str) -> String {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let rows = stmt.query_map([1], |r| r.get::<_, String>(3)).unwrap();
        rows.collect::<Result<Vec<_>, _>>().unwrap().join("; ")
    }

    #[test]
    fn pruning_the_write_set_ids_reads_only_what_it_deletes() {
        let conn = Connection::open_in_memory().unwrap();
        create_tables(&conn).unwrap();
        // Tables made before the index existed get it when opened again.
        conn.execute_batch("DROP INDEX _quorate_trx_by_seqno")
            .unwrap();
        create_tables(&conn).unwrap();
        let delete = plan(&conn, "DELETE FROM _quorate_trx WHERE seqno < ?1");
        assert!(
            delete.contains("INDEX _quorate_trx_by_seqno (seqno<?)"),
            "{delete}"
        );

        for seqno in 1..=10 {
            let origin = if seqno % 2 == 0 { "a" } else { "b" };
            assert_eq!(
                trx_record_first(&conn, origin, seqno as u64, seqno).unwrap(),
                None
            );
            cert_record(&conn, &[CertKey(vec![seqno as u8])], seqno).unwrap();
        }
        cert_prune(&conn, 6).unwrap();
        let left = |table: &str| -> i64 {
            conn.query_row(&format!("SELECT min(seqno) FROM {table}"), [], |r| r.get(0))
                .unwrap()
        };
        assert_eq!(left("_quorate_trx"), 6);
        assert_eq!(left("_quorate_cert"), 6);
        assert_eq!(trx_record_first(&conn, "a", 10, 11).unwrap(), Some(10));
    }
}
