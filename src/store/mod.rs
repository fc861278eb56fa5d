//! The replicated SQLite database (`data_dir/db.sqlite`).
//!
//! One writer lock serialises the two writing paths: *capture* (run a client
//! transaction, take its changeset, roll back) and *apply* (certify and apply
//! ordered write-sets, group-committed). They use two connections: capture
//! needs triggers on (their effects belong in the changeset), while apply
//! must have them off (the changeset already holds their effects; firing them
//! again would double them); they share one page cache. Queries run on a
//! pool of `query_only` readers and never wait for the writer (WAL).
//!
//! Files: `meta` (internal tables, position), `auth` (authorizer policy),
//! `schema` (per-table PK / unique index cache), `keys` (certification keys
//! of a changeset), `capture`, `record` (a capture's changeset, from the
//! preupdate hook), `apply`, `read` (queries), `snapshot`, `values` (value
//! and parameter conversions).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, RwLock};
use std::time::Duration;

use rusqlite::Connection;

use crate::sql::{ExecResult, QueryResult, Statement};
use crate::writeset::{ApplyOutcome, CertKey, Payload, Position, Seqno, WriteSet};

mod apply;
mod auth;
mod capture;
mod changeset;
mod checkpoint;
mod keys;
mod meta;
mod read;
mod record;
mod schema;
mod snapshot;
mod values;

pub use keys::describe_changeset;
pub use meta::read_position;

/// File name of the database inside `data_dir`.
pub const DB_FILE: &str = "db.sqlite";

const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
const STATEMENT_CACHE: usize = 128;

#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub read_connections: usize,
    pub max_writeset_bytes: usize,
    /// Must be the same on every node: it decides verdicts (`TooOld`) and
    /// what the certification index forgets.
    pub cert_window: i64,
}

/// A locally executed transaction, rolled back, ready to replicate.
#[derive(Debug, Clone)]
pub struct Captured {
    /// Per-statement results for the client (rows affected, last insert id, errors).
    pub results: Vec<ExecResult>,
    /// `None` when the transaction changed nothing (nothing to replicate) or failed.
    pub writeset: Option<CapturedWriteSet>,
}

#[derive(Debug, Clone)]
pub struct CapturedWriteSet {
    pub snapshot_seqno: Seqno,
    pub keys: Vec<CertKey>,
    pub payload: Payload,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("SQLite error on {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("{0}")]
    Refused(String),
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A file that should be a quorate database is not one.
    #[error("{path} is not a quorate database: {reason}")]
    NotQuorate { path: PathBuf, reason: String },
}

pub struct Store {
    path: PathBuf,
    opts: StoreOptions,
    writer: Mutex<Writer>,
    readers: read::ReaderPool,
    /// Updated under the writer lock after every commit, so `position()`
    /// never touches SQLite.
    position: RwLock<Position>,
    /// `None` for an arbitrator's store, which has no file.
    _checkpointer: Option<checkpoint::Checkpointer>,
}

/// Page size of a database this node creates. Every commit writes each
/// page it touched to the WAL whole, and a write-set touches a few pages
/// (its row, its certification key, `_quorate_trx`, `_quorate_meta`) with
/// a few dozen bytes changed on each; the checkpoint writes them again. With
/// 4 KiB pages three nodes wrote 78 KB of disk per transaction under the
/// 16-client benchmark, and every log fsync queued behind that on a shared
/// disk; with 1 KiB pages 48 KB, p99 17-18 -> 11 ms, +12-16% throughput.
/// Rows over ~1 KB spill into overflow pages, which costs a little more
/// there; the settings and state rows quorate is for are far smaller.
const NEW_DATABASE_PAGE_SIZE: u32 = 1024;

/// Page cache of the connection that applies write-sets, in KiB (negative,
/// as `PRAGMA cache_size` takes a size in KiB). Larger is not free: a b-tree
/// split that renumbers pages parks one at a page number past the end, and
/// the next commit then scans the cache's whole hash table for pages beyond
/// the end (`pcache1TruncateUnsafe`); that table grows with the pages cached.
const APPLY_CACHE_KIB: i64 = -16 * 1024;

/// How often the WAL is copied back into the database file. Each checkpoint
/// fsyncs the WAL written since the last one and then the pages it copied:
/// a burst of writes that every node's log fsyncs queue behind on a shared
/// disk. Every 3 s instead of every second: p99/p50 of the 16-client
/// benchmark 3.7 -> 2.6 (median of five runs each, p99 ~25 -> ~17 ms),
/// throughput alike, the largest stall ~110 -> ~160 ms. See
/// `checkpoint.rs` for why the WAL still reaches the backstop under steady
/// writes.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_secs(3);

/// Everything the writer lock protects.
struct Writer {
    /// Triggers on; only ever holds transactions that are rolled back.
    capture: Connection,
    capture_auth: auth::AuthHandle,
    /// Records the capture connection's row changes while a capture runs.
    recorder: record::Recorder,
    /// Triggers off, except while statements (DDL) payloads run.
    apply: Connection,
    apply_auth: auth::AuthHandle,
    schema: schema::SchemaCache,
    /// What the authorizer reported when each cached capture statement was
    /// compiled: a statement served from rusqlite's cache is not compiled
    /// again, so the authorizer does not see it again.
    stmt_info: HashMap<String, auth::StmtInfo>,
    last_ddl_seqno: Seqno,
    /// The replicated certification window once read: it changes only with
    /// the identity (bootstrap, new incarnation, SST), which clears it.
    cert_window: Option<i64>,
}

impl Writer {
    /// After any schema change: cached statements and what we learnt about
    /// tables may no longer describe the database.
    fn schema_changed(&mut self) {
        self.schema.clear();
        self.stmt_info.clear();
        self.capture.flush_prepared_statement_cache();
        self.apply.flush_prepared_statement_cache();
    }
}

impl Store {
    pub fn open(data_dir: &Path, opts: StoreOptions) -> Result<Store, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::Io {
            path: data_dir.to_path_buf(),
            source,
        })?;
        // On a read-only file system SQLite says only "unable to open
        // database file"; the kernel's answer names the cause.
        nix::unistd::access(data_dir, nix::unistd::AccessFlags::W_OK).map_err(|e| {
            StoreError::Io {
                path: data_dir.to_path_buf(),
                source: e.into(),
            }
        })?;
        let path = data_dir.join(DB_FILE);
        let (writer, readers, position) = Self::open_connections(&path, &opts, &sqlite_err(&path))?;
        let checkpointer = checkpoint::Checkpointer::start(path.clone(), CHECKPOINT_EVERY)
            .map_err(|source| StoreError::Io {
                path: path.clone(),
                source,
            })?;
        Ok(Store {
            _checkpointer: Some(checkpointer),
            writer: Mutex::new(writer),
            readers,
            position: RwLock::new(position),
            path,
            opts,
        })
    }

    /// A store that lives in memory only, for an arbitrator: it keeps the
    /// cluster's identity and the Raft state its state machine needs while
    /// running, and no file (its state machine persists what must survive).
    pub fn open_in_memory(opts: StoreOptions) -> Result<Store, StoreError> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // A URI of a named, shared-cache memory database: every connection of
        // this store sees one database, which lives while any of them is open.
        let path = PathBuf::from(format!(
            "file:quorate-arbitrator-{}-{n}?mode=memory&cache=shared",
            std::process::id()
        ));
        let (writer, readers, position) = Self::open_connections(&path, &opts, &sqlite_err(&path))?;
        Ok(Store {
            _checkpointer: None,
            writer: Mutex::new(writer),
            readers,
            position: RwLock::new(position),
            path,
            opts,
        })
    }

    fn open_connections(
        path: &Path,
        opts: &StoreOptions,
        err: &impl Fn(rusqlite::Error) -> StoreError,
    ) -> Result<(Writer, read::ReaderPool, Position), StoreError> {
        let apply = open_writer_connection(path).map_err(err)?;
        // Only takes effect on a database file that is still empty; an
        // existing one keeps its page size (so do snapshots and SSTs).
        apply
            .pragma_update(None, "page_size", NEW_DATABASE_PAGE_SIZE)
            .map_err(err)?;
        apply
            .query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))
            .map_err(err)?;
        let page_size: u32 = apply
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .map_err(err)?;
        apply
            .pragma_update(
                None,
                "wal_autocheckpoint",
                checkpoint::backstop_pages(page_size),
            )
            .map_err(err)?;
        // SQLite's default of 2 MiB is less than what every write touches
        // (the client's table, `_quorate_cert`, the tails of `_quorate_trx`):
        // under the 16-client benchmark the leader read about one page per
        // transaction back from the file. Pages are allocated only as used.
        apply
            .pragma_update(None, "cache_size", APPLY_CACHE_KIB)
            .map_err(err)?;
        // Room for the statements of each table's changes (see `changeset`)
        // beside the bookkeeping ones.
        apply.set_prepared_statement_cache_capacity(256);
        meta::create_tables(&apply).map_err(err)?;
        apply
            .set_db_config(
                rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER,
                false,
            )
            .map_err(err)?;
        let (position, last_ddl_seqno) = meta::read_meta(&apply).map_err(err)?;
        let mut apply = apply;
        let apply_auth = auth::install(&mut apply, auth::Role::Writer).map_err(err)?;

        let mut capture = open_writer_connection(path).map_err(err)?;
        // Before any statement is compiled: see `record::Recorder`.
        let recorder = record::Recorder::install(&mut capture).map_err(err)?;
        let capture_auth = auth::install(&mut capture, auth::Role::Writer).map_err(err)?;

        let readers = read::ReaderPool::open(path, opts.read_connections.max(1)).map_err(err)?;
        let writer = Writer {
            capture,
            capture_auth,
            recorder,
            apply,
            apply_auth,
            schema: schema::SchemaCache::default(),
            stmt_info: HashMap::new(),
            last_ddl_seqno,
            cert_window: None,
        };
        Ok((writer, readers, position))
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn position(&self) -> Position {
        *self.position.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Run a client transaction locally, roll it back, and return what to
    /// replicate (DESIGN.md §2 step 2).
    pub fn capture(&self, stmts: &[Statement], transaction: bool) -> Result<Captured, StoreError> {
        let mut w = self.lock_writer()?;
        self.capture_locked(&mut w, stmts, transaction)
    }

    /// [`Self::capture`] if the writer is free this instant, else `None`:
    /// lets an async caller run a short capture in place instead of handing
    /// it to another thread, which costs more than the capture on a small
    /// machine, and never makes it wait on the lock.
    pub fn try_capture(
        &self,
        stmts: &[Statement],
        transaction: bool,
    ) -> Option<Result<Captured, StoreError>> {
        let mut w = self.try_lock_writer()?;
        Some(self.capture_locked(&mut w, stmts, transaction))
    }

    fn capture_locked(
        &self,
        w: &mut Writer,
        stmts: &[Statement],
        transaction: bool,
    ) -> Result<Captured, StoreError> {
        let snapshot = self.position().seqno;
        capture::capture(
            w,
            stmts,
            transaction,
            snapshot,
            self.opts.max_writeset_bytes,
            &self.path,
        )
    }

    pub fn query(
        &self,
        stmts: &[Statement],
        timings: bool,
    ) -> Result<Vec<QueryResult>, StoreError> {
        self.readers
            .query(stmts, timings)
            .map_err(sqlite_err(&self.path))
    }

    /// Whether `sql` only reads (routes `/db/request` statements). An `Err`
    /// means it does not even prepare on a reader (syntax error, or refused
    /// there, e.g. a PRAGMA that writes): treat it as a write, whose path
    /// reports the error.
    pub fn is_read_only(&self, sql: &str) -> Result<bool, StoreError> {
        self.readers
            .is_read_only(sql)
            .map_err(sqlite_err(&self.path))
    }

    /// Certify and apply ordered write-sets in one SQLite transaction.
    /// `Err` means nothing changed (not even the position): the caller may
    /// retry the same batch.
    pub fn apply_batch(
        &self,
        batch: &[WriteSet],
        raft_state: &[u8],
    ) -> Result<Vec<ApplyOutcome>, StoreError> {
        let mut w = self.lock_writer()?;
        self.apply_batch_locked(&mut w, batch, raft_state)
    }

    /// [`Self::apply_batch`] if the writer is free this instant, else `None`
    /// (see [`Self::try_capture`]).
    pub fn try_apply_batch(
        &self,
        batch: &[WriteSet],
        raft_state: &[u8],
    ) -> Option<Result<Vec<ApplyOutcome>, StoreError>> {
        let mut w = self.try_lock_writer()?;
        Some(self.apply_batch_locked(&mut w, batch, raft_state))
    }

    fn apply_batch_locked(
        &self,
        w: &mut Writer,
        batch: &[WriteSet],
        raft_state: &[u8],
    ) -> Result<Vec<ApplyOutcome>, StoreError> {
        let from = self.position();
        // Every node must certify with the same window: the one replicated
        // by the bootstrap entry; the local option only before that.
        let window = match w.cert_window {
            Some(window) => window,
            None => {
                let replicated = meta::cert_window(&w.apply).map_err(sqlite_err(&self.path))?;
                w.cert_window = replicated;
                replicated.unwrap_or(self.opts.cert_window)
            }
        };
        let (outcomes, seqno) = apply::apply_batch(w, batch, raft_state, from.seqno, window)
            .map_err(sqlite_err(&self.path))?;
        self.set_cached_position(Position { seqno, ..from });
        Ok(outcomes)
    }

    pub fn raft_state(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let w = self.lock_writer()?;
        meta::raft_state(&w.apply).map_err(sqlite_err(&self.path))
    }

    pub fn set_raft_state(&self, raft_state: &[u8]) -> Result<(), StoreError> {
        let w = self.lock_writer()?;
        meta::set_raft_state(&w.apply, raft_state).map_err(sqlite_err(&self.path))
    }

    /// Note a member removed by `--remove-node` (its record as the node
    /// layer wrote it), with the Raft position of that entry.
    pub fn record_removed(
        &self,
        node_id: u64,
        record: &str,
        raft_state: &[u8],
    ) -> Result<(), StoreError> {
        let w = self.lock_writer()?;
        // Rolled back on drop if anything fails.
        let tx = w.apply.unchecked_transaction();
        tx.and_then(|tx| {
            meta::record_removed(&tx, node_id, record, raft_state)?;
            tx.commit()
        })
        .map_err(sqlite_err(&self.path))
    }

    /// The removal record of `node_id`, if it was removed.
    pub fn removed_member(&self, node_id: u64) -> Result<Option<String>, StoreError> {
        let w = self.lock_writer()?;
        meta::removed_member(&w.apply, node_id).map_err(sqlite_err(&self.path))
    }

    pub fn set_identity(
        &self,
        state_uuid: uuid::Uuid,
        incarnation: u64,
        cert_window: Option<i64>,
        raft_state: &[u8],
    ) -> Result<(), StoreError> {
        let mut w = self.lock_writer()?;
        w.cert_window = None;
        meta::set_identity(&w.apply, state_uuid, incarnation, cert_window, raft_state)
            .map_err(sqlite_err(&self.path))?;
        let pos = self.position();
        self.set_cached_position(Position {
            state_uuid,
            incarnation,
            seqno: pos.seqno.max(0),
        });
        Ok(())
    }

    /// Write a consistent copy of the database to `dest` (replaced if it
    /// exists) without blocking the writer, and return its position.
    pub fn snapshot_into(&self, dest: &Path) -> Result<Position, StoreError> {
        snapshot::snapshot_into(&self.path, dest)
    }

    /// Replace the database content with `src`'s (SST). `src` must be a
    /// quorate database; if it is not, nothing changes.
    pub fn install_snapshot(&self, src: &Path) -> Result<Position, StoreError> {
        let mut w = self.lock_writer()?;
        w.cert_window = None;
        let (position, last_ddl_seqno) = snapshot::install(&mut w, &self.path, src)?;
        w.last_ddl_seqno = last_ddl_seqno;
        self.set_cached_position(position);
        Ok(position)
    }

    fn set_cached_position(&self, position: Position) {
        *self.position.write().unwrap_or_else(|p| p.into_inner()) = position;
    }

    /// The writer if nobody holds it; a poisoned lock is left to
    /// [`Self::lock_writer`], which repairs it.
    fn try_lock_writer(&self) -> Option<MutexGuard<'_, Writer>> {
        self.writer.try_lock().ok()
    }

    /// A panic while the lock was held (a bug) may have left a transaction
    /// open; roll it back rather than refusing service for good.
    fn lock_writer(&self) -> Result<MutexGuard<'_, Writer>, StoreError> {
        match self.writer.lock() {
            Ok(w) => Ok(w),
            Err(poisoned) => {
                let mut w = poisoned.into_inner();
                for conn in [&w.capture, &w.apply] {
                    if !conn.is_autocommit() {
                        conn.execute_batch("ROLLBACK")
                            .map_err(sqlite_err(&self.path))?;
                    }
                }
                w.schema_changed();
                self.writer.clear_poison();
                Ok(w)
            }
        }
    }
}

fn open_connection(path: &Path) -> rusqlite::Result<Connection> {
    configure(Connection::open(path)?)
}

/// A connection of the writer (capture or apply). The two share one page
/// cache (SQLite's shared-cache mode): in WAL mode a connection drops its
/// whole cache whenever another connection committed, so a private capture
/// cache was empty after every apply and each capture read the table's
/// root, interior and leaf pages back from the file (3 `pread`s and a
/// cache rebuild per write). Shared-cache mode's table locks never bite:
/// the writer lock lets only one of the two run, and neither leaves a
/// transaction or a statement open when it returns the lock. Triggers,
/// the preupdate hook and the authorizer stay per connection. Readers
/// keep private caches so that they never wait for the writer. Four ABBA
/// rounds (`scripts/bench-ab.py --rounds 4 --duration 12`): one-client
/// p50 on the leader lower in 4 of 4 (1.41/1.45/1.25/1.32 vs
/// 1.60/1.59/1.37/1.42 ms), on a follower in 3 of 4; 16 clients alike.
fn open_writer_connection(path: &Path) -> rusqlite::Result<Connection> {
    use rusqlite::OpenFlags;
    configure(Connection::open_with_flags(
        path,
        OpenFlags::default() | OpenFlags::SQLITE_OPEN_SHARED_CACHE,
    )?)
}

fn configure(conn: Connection) -> rusqlite::Result<Connection> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // rqlite clients expect both off; they must also be off for apply to be
    // deterministic (no cascades beyond what the changeset holds).
    conn.execute_batch(
        "PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=OFF; PRAGMA recursive_triggers=OFF;",
    )?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

fn sqlite_err(path: &Path) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |source| StoreError::Sqlite {
        path: path.to_path_buf(),
        source,
    }
}

/// Quote an identifier for SQL text.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Errors that are the environment's (disk, memory, locks), not the
/// write-set's: they must not become a verdict, since another node would
/// not see them.
fn is_environmental(e: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode as C;
    match e {
        rusqlite::Error::SqliteFailure(f, _) => matches!(
            f.code,
            C::DatabaseBusy
                | C::DatabaseLocked
                | C::OutOfMemory
                | C::SystemIoFailure
                | C::DatabaseCorrupt
                | C::DiskFull
                | C::CannotOpen
                | C::FileLockingProtocolFailed
                | C::ReadOnly
                | C::OperationInterrupted
                | C::NotADatabase
        ),
        _ => false,
    }
}

/// The raft_state blob stored in a database file (e.g. a snapshot copy).
pub fn read_raft_state(db_path: &Path) -> Result<Option<Vec<u8>>, StoreError> {
    meta::read_raft_state(db_path)
}

#[cfg(test)]
pub(crate) mod testutil {
    use super::*;
    use crate::sql::{Params, SqlValue};

    #[test]
    fn store_is_send_and_sync() {
        fn shared<T: Send + Sync>() {}
        shared::<Store>();
    }

    #[test]
    fn new_databases_get_small_pages_and_existing_ones_keep_theirs() {
        let page_size = |db: &Path| -> i64 {
            Connection::open(db)
                .unwrap()
                .query_row("PRAGMA page_size", [], |r| r.get(0))
                .unwrap()
        };
        // The commit-path checkpoint waits for the same WAL size whatever
        // the page size.
        let backstop = |s: &Store| -> i64 {
            let w = s.try_lock_writer().unwrap();
            w.apply
                .query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))
                .unwrap()
        };
        let fresh = tempfile::TempDir::new().unwrap();
        let s = open(fresh.path());
        assert_eq!(backstop(&s), 65536);
        drop(s);
        assert_eq!(
            page_size(&fresh.path().join(DB_FILE)),
            i64::from(NEW_DATABASE_PAGE_SIZE)
        );

        // A database made by an earlier build (4 KiB pages) is not rewritten.
        let older = tempfile::TempDir::new().unwrap();
        let db = older.path().join(DB_FILE);
        Connection::open(&db)
            .unwrap()
            .execute_batch("PRAGMA page_size=4096; CREATE TABLE t(id INTEGER PRIMARY KEY);")
            .unwrap();
        let s = open(older.path());
        assert_eq!(page_size(&db), 4096);
        assert_eq!(backstop(&s), 16384);
        assert!(dump(&s, "t").is_empty());
    }

    /// Page-cache misses of a connection so far (SQLITE_DBSTATUS_CACHE_MISS).
    fn cache_misses(conn: &Connection) -> i32 {
        let (mut current, mut highwater) = (0, 0);
        // SAFETY: a live connection handle and two valid out-pointers.
        let rc = unsafe {
            rusqlite::ffi::sqlite3_db_status(
                conn.handle(),
                rusqlite::ffi::SQLITE_DBSTATUS_CACHE_MISS,
                &mut current,
                &mut highwater,
                0,
            )
        };
        assert_eq!(rc, rusqlite::ffi::SQLITE_OK);
        current
    }

    #[test]
    fn capture_reads_no_page_back_after_an_apply() {
        let dir = tempfile::TempDir::new().unwrap();
        let s = open(dir.path());
        let ddl = capture_ws(
            &s,
            &[st("CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER)")],
            1,
        );
        apply_one(&s, &ddl);
        let fill = capture_ws(
            &s,
            &[st(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000) \
                  INSERT INTO t SELECT i, 0 FROM n",
            )],
            2,
        );
        apply_one(&s, &fill);
        let update = |id: i64| {
            stp(
                "UPDATE t SET v = v + 1 WHERE id = ?",
                vec![SqlValue::Integer(id)],
            )
        };
        // Warm: the statement compiled, the row's pages read once.
        apply_one(&s, &capture_ws(&s, &[update(1500)], 3));
        for trx in 4..8 {
            let before = cache_misses(&s.try_lock_writer().unwrap().capture);
            let ws = capture_ws(&s, &[update(1500)], trx);
            let after = cache_misses(&s.try_lock_writer().unwrap().capture);
            // With a cache of its own, the capture connection would find it
            // emptied by the apply's commit and read root, interior and
            // leaf pages back from the file.
            assert_eq!(
                after, before,
                "capture {trx} after an apply missed the cache"
            );
            apply_one(&s, &ws);
        }
    }

    pub fn opts() -> StoreOptions {
        StoreOptions {
            read_connections: 2,
            max_writeset_bytes: 1 << 20,
            cert_window: 1000,
        }
    }

    pub fn open(dir: &Path) -> Store {
        Store::open(dir, opts()).unwrap()
    }

    pub fn st(sql: &str) -> Statement {
        Statement::new(sql)
    }

    pub fn stp(sql: &str, params: Vec<SqlValue>) -> Statement {
        Statement {
            sql: sql.into(),
            params: Params::Positional(params),
        }
    }

    /// Capture and expect a write-set.
    pub fn capture_ws(store: &Store, stmts: &[Statement], trx_id: u64) -> WriteSet {
        let c = store.capture(stmts, true).unwrap();
        for r in &c.results {
            assert_eq!(r.error, None, "{stmts:?}");
        }
        let ws = c.writeset.expect("a write-set");
        WriteSet {
            origin: "test".into(),
            trx_id,
            snapshot_seqno: ws.snapshot_seqno,
            keys: ws.keys,
            payload: ws.payload,
        }
    }

    /// Apply one write-set and return its verdict.
    pub fn apply_one(store: &Store, ws: &WriteSet) -> crate::writeset::Verdict {
        let mut out = store
            .apply_batch(std::slice::from_ref(ws), b"raft")
            .unwrap();
        assert_eq!(out.len(), 1);
        out.remove(0).verdict
    }

    /// Every row of a table, ordered, as debug text.
    pub fn dump(store: &Store, table: &str) -> Vec<Vec<SqlValue>> {
        let r = store
            .query(&[st(&format!("SELECT * FROM {table} ORDER BY 1"))], false)
            .unwrap();
        assert_eq!(r[0].error, None);
        r.into_iter().next().map(|q| q.rows).unwrap_or_default()
    }
}
