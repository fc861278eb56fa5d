//! Recording a capture's changeset from SQLite's preupdate hook.
//!
//! A `rusqlite::session::Session` made per capture read `PRAGMA
//! table_xinfo` for each table it met and compiled a SELECT per table to
//! read the final rows back when the changeset was taken: about a third of
//! the instructions of capture and apply together. The hook hands us the
//! old and new values of every row change as it happens, so the recorder
//! keeps them and works out the net change itself, with the table layouts
//! the schema cache already holds.
//!
//! The output is a changeset in SQLite's own format, byte for byte what the
//! session would write for the same changes (only the order of the rows
//! differs: tables and rows come in the order they were first touched, the
//! session's in hash order), so every node — older ones included — reads
//! it with `ChangesetIter` as before. Its meaning is the session's net
//! change per table and primary key: the row as it was when the
//! transaction first touched it against the row as it is at the end. An
//! INSERT then UPDATE is an INSERT of the final values; an INSERT then
//! DELETE is nothing; UPDATEs fold into one from the original values to the
//! final ones; a DELETE then INSERT of the same key is an UPDATE (nothing
//! if equal); an UPDATE of the key is a DELETE of the old key and an INSERT
//! of the new. Changes whose primary key holds a NULL are left out, as the
//! session leaves them out.
//!
//! The session read the final rows with a SELECT by primary key, which
//! compares keys under the column's collation and affinity; the recorder
//! tells keys apart by type and bytes. They differ only where one
//! transaction touches two keys that are equal to SQLite but not
//! byte-equal (`'a'` and `'A'` in a NOCASE key, `1` and `1.0` in a key
//! column without affinity, `0.0` and `-0.0`): the session wrote two
//! changes for the one row, a changeset that failed with a primary key
//! conflict on every node; the recorder writes the transaction's real net
//! change.
//!
//! A statement that fails part-way is undone by SQLite without any hook
//! firing, so capture marks the recording before each statement and rolls
//! it back with the statement ([`Recording::rollback_to`]). Undone changes
//! still count for one thing: the session kept the entry a rolled-back
//! change made, so a row is reported "indirect" (changed by triggers only)
//! only if no statement, kept or not, changed it directly.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::ffi;
use rusqlite::hooks::{Action, PreUpdateCase};
use rusqlite::types::ValueRef;
use rusqlite::Connection;

use super::auth;
use super::schema::{SchemaCache, TableInfo};

/// Changeset value types, as SQLite's session writes them.
const UNDEFINED: u8 = 0;
const INTEGER: u8 = ffi::SQLITE_INTEGER as u8;
const FLOAT: u8 = ffi::SQLITE_FLOAT as u8;
const TEXT: u8 = ffi::SQLITE_TEXT as u8;
const BLOB: u8 = ffi::SQLITE_BLOB as u8;
const NULL: u8 = ffi::SQLITE_NULL as u8;

/// Above this much memory, a finished recording gives its buffers back
/// instead of keeping them for the next capture.
const KEEP_BYTES: usize = 1 << 20;

/// The recorder of one connection (the capture connection). Its hook stays
/// installed for the connection's life so that every statement is compiled
/// with it present: SQLite compiles `DELETE FROM t` without a WHERE as a
/// truncation that fires no hook when no preupdate hook is installed.
pub(crate) struct Recorder {
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    /// Whether a capture is running: the hook records nothing otherwise.
    active: bool,
    log: Log,
}

/// The row changes of the running capture, as the hook reported them.
#[derive(Default)]
struct Log {
    /// Tables changed, in the order they were first changed, named as the
    /// hook names them (the declared name). Few per capture: a list.
    tables: Vec<String>,
    events: Vec<Event>,
    /// Every value the events hold, serialized as in a changeset.
    values: Vec<u8>,
    /// Where each value starts in `values`; a row of `n` values takes
    /// `n + 1` entries, the last being where the row ends.
    offsets: Vec<usize>,
    /// The first thing the hook could not record; taking the changeset
    /// fails with it.
    error: Option<rusqlite::Error>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Insert,
    Delete,
    Update,
}

struct Event {
    table: usize,
    op: Op,
    /// Made by a trigger (`sqlite3_preupdate_depth` > 0).
    indirect: bool,
    /// False once the statement that made it was rolled back.
    live: bool,
    /// Columns of the row, generated ones included.
    count: usize,
    /// Where the old and the new row start in `Log::offsets`.
    old: Option<usize>,
    new: Option<usize>,
}

/// A point in a recording to roll back to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mark(usize);

impl Recorder {
    /// Install the hook on `conn`; it records nothing until [`Self::start`].
    pub fn install(conn: &mut Connection) -> rusqlite::Result<Recorder> {
        let state = Arc::new(Mutex::new(State::default()));
        let shared = Arc::clone(&state);
        conn.preupdate_hook(Some(
            move |_: Action, db: &str, table: &str, case: &PreUpdateCase| {
                let mut st = lock(&shared);
                if !st.active
                    || !db.eq_ignore_ascii_case("main")
                    || auth::is_internal(table)
                    || (is_sqlite_table(table) && !table.eq_ignore_ascii_case(STAT1))
                {
                    return;
                }
                let log = &mut st.log;
                if log.error.is_some() {
                    return;
                }
                // rusqlite swallows a panic in the hook (it would otherwise
                // unwind into SQLite), which would lose the change without a
                // word: turn it into the capture's error instead.
                let outcome = catch_unwind(AssertUnwindSafe(|| log.record(table, case)));
                let failed = match outcome {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(e),
                    Err(_) => Some(failure(
                        ffi::SQLITE_INTERNAL,
                        format!("recording a change of table {table} panicked"),
                    )),
                };
                if let Some(e) = failed {
                    log.error = Some(e);
                }
            },
        ))?;
        Ok(Recorder { state })
    }

    /// Record the row changes of the main database from now until the
    /// returned recording is dropped.
    pub fn start(&self) -> Recording<'_> {
        let mut st = lock(&self.state);
        st.log.clear();
        st.active = true;
        Recording { state: &self.state }
    }
}

/// A running capture's recording.
pub(crate) struct Recording<'a> {
    state: &'a Mutex<State>,
}

impl Recording<'_> {
    /// Where the recording is now (before a statement).
    pub fn mark(&self) -> Mark {
        Mark(lock(self.state).log.events.len())
    }

    /// The statement run since `mark` was rolled back (`ROLLBACK TO`): its
    /// changes no longer count. SQLite undoes them without telling the hook.
    pub fn rollback_to(&self, mark: Mark) {
        let mut st = lock(self.state);
        for e in st.log.events.iter_mut().skip(mark.0) {
            e.live = false;
        }
    }

    /// The changeset of what was recorded. Runs on the capture connection
    /// inside the still-open transaction (the schema cache reads the table
    /// layouts from it). Empty when nothing changed; `Ok(Err(why))` when
    /// the changes cannot be replicated as a changeset.
    pub fn changeset(
        &self,
        conn: &Connection,
        schema: &mut SchemaCache,
    ) -> rusqlite::Result<Result<Vec<u8>, String>> {
        // Work on the log outside the lock: reading the schema runs SQL on
        // the connection whose hook takes that lock.
        let mut log = std::mem::take(&mut lock(self.state).log);
        let out = log.changeset(conn, schema);
        log.clear();
        lock(self.state).log = log;
        out
    }
}

impl Drop for Recording<'_> {
    fn drop(&mut self) {
        let mut st = lock(self.state);
        st.active = false;
        st.log.clear();
        if st.log.values.capacity() > KEEP_BYTES
            || st.log.offsets.capacity() * std::mem::size_of::<usize>() > KEEP_BYTES
            || st.log.events.capacity() * std::mem::size_of::<Event>() > KEEP_BYTES
        {
            st.log = Log::default();
        }
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // Nothing here panics while holding the lock (the hook catches its
    // own); should something anyway, the capture it broke fails and the
    // next one starts from a cleared log.
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// The one table of SQLite's own that the session did not skip: it took
/// `(tbl, idx)` for its key. A changeset writing it failed on every node
/// (apply refuses SQLite's tables), so a transaction that changes it
/// (outside a schema change, which travels as statements) is refused.
const STAT1: &str = "sqlite_stat1";

/// SQLite's own tables: the session skipped them (sqlite_sequence has no
/// primary key), except `STAT1`.
fn is_sqlite_table(name: &str) -> bool {
    name.len() >= 7 && name.as_bytes()[..7].eq_ignore_ascii_case(b"sqlite_")
}

fn failure(code: std::ffi::c_int, message: String) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(ffi::Error::new(code), Some(message))
}

impl Log {
    fn clear(&mut self) {
        self.tables.clear();
        self.events.clear();
        self.values.clear();
        self.offsets.clear();
        self.error = None;
    }

    /// Keep one change the hook reports.
    fn record(&mut self, name: &str, case: &PreUpdateCase) -> rusqlite::Result<()> {
        let table = match self
            .tables
            .iter()
            .position(|t| t.eq_ignore_ascii_case(name))
        {
            Some(i) => i,
            None => {
                self.tables.push(name.to_owned());
                self.tables.len() - 1
            }
        };
        let event = match case {
            PreUpdateCase::Insert(new) => {
                let count = column_count(new.get_column_count())?;
                Event {
                    table,
                    op: Op::Insert,
                    indirect: new.get_query_depth() > 0,
                    live: true,
                    count,
                    old: None,
                    new: Some(self.read(name, count, |i| new.get_new_column_value(i))?),
                }
            }
            PreUpdateCase::Delete(old) => {
                let count = column_count(old.get_column_count())?;
                Event {
                    table,
                    op: Op::Delete,
                    indirect: old.get_query_depth() > 0,
                    live: true,
                    count,
                    old: Some(self.read(name, count, |i| old.get_old_column_value(i))?),
                    new: None,
                }
            }
            PreUpdateCase::Update {
                old_value_accessor: old,
                new_value_accessor: new,
            } => {
                let count = column_count(old.get_column_count())?;
                Event {
                    table,
                    op: Op::Update,
                    indirect: old.get_query_depth() > 0,
                    live: true,
                    count,
                    old: Some(self.read(name, count, |i| old.get_old_column_value(i))?),
                    new: Some(self.read(name, count, |i| new.get_new_column_value(i))?),
                }
            }
            PreUpdateCase::Unknown => {
                return Err(failure(
                    ffi::SQLITE_INTERNAL,
                    format!(
                        "the preupdate hook reported an unknown kind of change to table {name}"
                    ),
                ))
            }
        };
        self.events.push(event);
        Ok(())
    }

    /// Serialize a row of `count` values; returns where it starts in
    /// `offsets`.
    fn read<'v>(
        &mut self,
        table: &str,
        count: usize,
        get: impl Fn(i32) -> rusqlite::Result<ValueRef<'v>>,
    ) -> rusqlite::Result<usize> {
        let first = self.offsets.len();
        for i in 0..count {
            self.offsets.push(self.values.len());
            let index = i32::try_from(i).map_err(|_| rusqlite::Error::InvalidColumnIndex(i))?;
            match get(index) {
                Ok(v) => put_value(&mut self.values, v),
                // A column the row does not store: a VIRTUAL generated
                // column, which no changeset carries.
                Err(e)
                    if e.sqlite_error()
                        .is_some_and(|f| f.extended_code == ffi::SQLITE_RANGE) =>
                {
                    self.values.push(UNDEFINED);
                }
                Err(e) => {
                    return Err(failure(
                        e.sqlite_error()
                            .map_or(ffi::SQLITE_ERROR, |f| f.extended_code),
                        format!("capture could not read a changed row of table {table}: {e}"),
                    ))
                }
            }
        }
        self.offsets.push(self.values.len());
        Ok(first)
    }

    /// Column `col` (numbered as the hook numbers them) of the row at
    /// `row`, serialized.
    fn value(&self, row: usize, col: usize) -> &[u8] {
        match (self.offsets.get(row + col), self.offsets.get(row + col + 1)) {
            (Some(&start), Some(&end)) => self.values.get(start..end).unwrap_or(&[]),
            _ => &[],
        }
    }

    fn changeset(
        &mut self,
        conn: &Connection,
        schema: &mut SchemaCache,
    ) -> rusqlite::Result<Result<Vec<u8>, String>> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        if self
            .events
            .iter()
            .any(|e| e.live && self.name(e.table).eq_ignore_ascii_case(STAT1))
        {
            return Ok(Err(format!(
                "the transaction changes {STAT1}, which cannot be replicated as row changes: \
                 ANALYZE maintains it (run ANALYZE, which is replicated as a statement)"
            )));
        }
        let mut nets: Vec<Option<Net>> = Vec::with_capacity(self.tables.len());
        for name in &self.tables {
            nets.push(match schema.table(conn, name)? {
                // Without a primary key the session skipped a table;
                // capture refuses writes to one, so only sqlite_stat1's
                // rolled-back changes get here.
                Some(info) if !info.pk.is_empty() => Some(Net::new(info)),
                Some(_) => None,
                // Changed, then gone: only a rolled-back CREATE TABLE AS
                // SELECT could do that, and its changes are not live (else
                // this fails below).
                None => Some(Net::gone()),
            });
        }

        let mut key = Vec::new();
        let mut other = Vec::new();
        for e in &self.events {
            let Some(net) = nets.get_mut(e.table).and_then(Option::as_mut) else {
                continue;
            };
            let Some(info) = net.info.as_ref() else {
                if e.live {
                    return Err(failure(
                        ffi::SQLITE_SCHEMA,
                        format!(
                            "table {} was changed and no longer exists",
                            self.name(e.table)
                        ),
                    ));
                }
                continue;
            };
            if e.count != info.all_columns {
                // A rolled-back schema change may have left events of
                // another shape; those only ever decide the indirect flag.
                if e.live {
                    return Err(failure(
                        ffi::SQLITE_SCHEMA,
                        format!(
                            "table {} has {} columns but a change to it had {}",
                            self.name(e.table),
                            info.all_columns,
                            e.count
                        ),
                    ));
                }
                continue;
            }
            let touch = Touch {
                live: e.live,
                indirect: e.indirect,
            };
            match (e.op, e.old, e.new) {
                (Op::Insert, _, Some(new)) => {
                    if self.key(info, new, &mut key)? {
                        net.touch(&key, touch, None, Some(new));
                    }
                }
                (Op::Delete, Some(old), _) => {
                    if self.key(info, old, &mut key)? {
                        net.touch(&key, touch, Some(old), None);
                    }
                }
                (Op::Update, Some(old), Some(new)) => {
                    let has_old = self.key(info, old, &mut key)?;
                    let has_new = self.key(info, new, &mut other)?;
                    if has_old && has_new && key == other {
                        net.touch(&key, touch, Some(old), Some(new));
                    } else {
                        // A new primary key: the session sees the old
                        // key's row go and the new key's row come.
                        if has_old {
                            net.touch(&key, touch, Some(old), None);
                        }
                        if has_new {
                            net.touch(&other, touch, None, Some(new));
                        }
                    }
                }
                _ => {
                    return Err(failure(
                        ffi::SQLITE_INTERNAL,
                        "a recorded change lacks its old or new row".to_string(),
                    ))
                }
            }
        }

        let mut out = Vec::new();
        for (t, net) in nets.iter().enumerate() {
            let Some(Net {
                info: Some(info),
                rows,
                ..
            }) = net
            else {
                continue;
            };
            self.write_table(&mut out, self.name(t), info, rows)?;
        }
        Ok(Ok(out))
    }

    fn name(&self, table: usize) -> &str {
        self.tables.get(table).map_or("?", String::as_str)
    }

    /// The primary key of the row at `row`, serialized into `key`. False
    /// when it holds a NULL: the session ignores such a change (a rowid
    /// table's declared key may hold NULLs).
    fn key(&self, info: &TableInfo, row: usize, key: &mut Vec<u8>) -> rusqlite::Result<bool> {
        key.clear();
        for &c in &info.pk {
            let v = self.column(info, row, c)?;
            if v.first() == Some(&NULL) {
                return Ok(false);
            }
            key.extend_from_slice(v);
        }
        Ok(true)
    }

    /// Changeset column `c` of the row at `row`.
    fn column(&self, info: &TableInfo, row: usize, c: usize) -> rusqlite::Result<&[u8]> {
        let v = info
            .hook_columns
            .get(c)
            .map_or(&[][..], |&h| self.value(row, h));
        match v.first() {
            Some(&t) if t != UNDEFINED => Ok(v),
            _ => Err(failure(
                ffi::SQLITE_INTERNAL,
                format!(
                    "capture could not read column {} of a changed row of table {}",
                    info.columns.get(c).map_or("?", String::as_str),
                    info.name
                ),
            )),
        }
    }

    /// One table's changes, after its header; nothing at all if none of
    /// its rows changed in the end.
    fn write_table(
        &self,
        out: &mut Vec<u8>,
        name: &str,
        info: &TableInfo,
        rows: &[Row],
    ) -> rusqlite::Result<()> {
        let header_at = out.len();
        out.push(b'T');
        put_varint(out, info.columns.len() as u64);
        out.extend_from_slice(&info.pk_flags);
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        let header_end = out.len();
        let ncol = info.columns.len();
        for row in rows.iter().filter(|r| r.live) {
            let flag = u8::from(row.indirect);
            match (row.orig, row.cur) {
                (None, None) => {}
                (None, Some(new)) => {
                    out.push(ffi::SQLITE_INSERT as u8);
                    out.push(flag);
                    for c in 0..ncol {
                        out.extend_from_slice(self.column(info, new, c)?);
                    }
                }
                (Some(old), None) => {
                    out.push(ffi::SQLITE_DELETE as u8);
                    out.push(flag);
                    for c in 0..ncol {
                        out.extend_from_slice(self.column(info, old, c)?);
                    }
                }
                (Some(old), Some(new)) => {
                    let at = out.len();
                    out.push(ffi::SQLITE_UPDATE as u8);
                    out.push(flag);
                    let mut changed = false;
                    for c in 0..ncol {
                        let (o, n) = (self.column(info, old, c)?, self.column(info, new, c)?);
                        let differs = !same_value(o, n);
                        changed |= differs;
                        let in_pk = info.pk_flags.get(c).is_some_and(|&f| f != 0);
                        if differs || in_pk {
                            out.extend_from_slice(o);
                        } else {
                            out.push(UNDEFINED);
                        }
                    }
                    if !changed {
                        out.truncate(at);
                        continue;
                    }
                    for c in 0..ncol {
                        let (o, n) = (self.column(info, old, c)?, self.column(info, new, c)?);
                        if same_value(o, n) {
                            out.push(UNDEFINED);
                        } else {
                            out.extend_from_slice(n);
                        }
                    }
                }
            }
        }
        if out.len() == header_end {
            out.truncate(header_at);
        }
        Ok(())
    }
}

/// The net change of one table's rows.
struct Net {
    /// `None`: the table no longer exists.
    info: Option<Arc<TableInfo>>,
    /// Primary key (serialized) → its row in `rows`.
    index: HashMap<Vec<u8>, usize>,
    /// In the order first touched.
    rows: Vec<Row>,
}

struct Row {
    /// The row before the transaction first changed it (`None`: there was
    /// none), and the row now (`None`: there is none), each as where it
    /// starts in `Log::offsets`; set by live changes only.
    orig: Option<usize>,
    cur: Option<usize>,
    /// Whether a change that was not rolled back touched it.
    live: bool,
    /// Whether every change to it, rolled back or not, was a trigger's.
    indirect: bool,
}

#[derive(Clone, Copy)]
struct Touch {
    live: bool,
    indirect: bool,
}

impl Net {
    fn new(info: Arc<TableInfo>) -> Net {
        Net {
            info: Some(info),
            index: HashMap::new(),
            rows: Vec::new(),
        }
    }

    fn gone() -> Net {
        Net {
            info: None,
            index: HashMap::new(),
            rows: Vec::new(),
        }
    }

    /// A change of the row with primary key `key`: `before` is the row as
    /// the change found it, `after` as it left it.
    fn touch(&mut self, key: &[u8], t: Touch, before: Option<usize>, after: Option<usize>) {
        let n = match self.index.get(key) {
            Some(&n) => n,
            None => {
                self.rows.push(Row {
                    orig: None,
                    cur: None,
                    live: false,
                    indirect: t.indirect,
                });
                self.index.insert(key.to_vec(), self.rows.len() - 1);
                self.rows.len() - 1
            }
        };
        let Some(row) = self.rows.get_mut(n) else {
            return;
        };
        row.indirect &= t.indirect;
        if t.live {
            if !row.live {
                row.live = true;
                row.orig = before;
            }
            row.cur = after;
        }
    }
}

fn column_count(n: i32) -> rusqlite::Result<usize> {
    usize::try_from(n).map_err(|_| {
        failure(
            ffi::SQLITE_INTERNAL,
            format!("the preupdate hook reported {n} columns"),
        )
    })
}

/// Equal as the session compares an original value with the final one:
/// same type, and same integer, same real (`==`), same bytes.
fn same_value(a: &[u8], b: &[u8]) -> bool {
    match (a.first(), b.first()) {
        (Some(&FLOAT), Some(&FLOAT)) => match (real(a), real(b)) {
            (Some(x), Some(y)) => x == y,
            _ => a == b,
        },
        _ => a == b,
    }
}

fn real(v: &[u8]) -> Option<f64> {
    let bytes: [u8; 8] = v.get(1..9)?.try_into().ok()?;
    Some(f64::from_bits(u64::from_be_bytes(bytes)))
}

/// A value as a changeset holds it.
fn put_value(out: &mut Vec<u8>, v: ValueRef<'_>) {
    match v {
        ValueRef::Null => out.push(NULL),
        ValueRef::Integer(i) => {
            out.push(INTEGER);
            out.extend_from_slice(&i.to_be_bytes());
        }
        ValueRef::Real(f) => {
            out.push(FLOAT);
            out.extend_from_slice(&f.to_bits().to_be_bytes());
        }
        ValueRef::Text(t) => {
            out.push(TEXT);
            put_varint(out, t.len() as u64);
            out.extend_from_slice(t);
        }
        ValueRef::Blob(b) => {
            out.push(BLOB);
            put_varint(out, b.len() as u64);
            out.extend_from_slice(b);
        }
    }
}

/// SQLite's varint (`sqlite3PutVarint`): big-endian groups of 7 bits, the
/// high bit set on all but the last; a ninth byte carries 8 bits.
fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    if v & (0xff00_0000_u64 << 32) != 0 {
        let mut buf = [0u8; 9];
        buf[8] = v as u8;
        v >>= 8;
        for b in buf[..8].iter_mut().rev() {
            *b = (v & 0x7f) as u8 | 0x80;
            v >>= 7;
        }
        out.extend_from_slice(&buf);
        return;
    }
    let mut buf = [0u8; 10];
    let mut n = 0;
    loop {
        buf[n] = (v & 0x7f) as u8 | 0x80;
        n += 1;
        v >>= 7;
        if v == 0 {
            break;
        }
    }
    buf[0] &= 0x7f;
    out.extend(buf[..n].iter().rev());
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rusqlite::fallible_streaming_iterator::FallibleStreamingIterator;
    use rusqlite::session::{ChangesetIter, Session};
    use std::io::Read;

    /// Tables of every kind capture meets: a rowid alias key (with a
    /// UNIQUE column and a CHECK), a composite key WITHOUT ROWID (declared
    /// in the other order than its columns), a rowid table with a declared
    /// TEXT key (which may hold NULLs), generated columns, and a table
    /// whose triggers change the others (and may fail).
    const SCHEMA: &str = "
        CREATE TABLE r(id INTEGER PRIMARY KEY, a, b REAL, c TEXT UNIQUE, CHECK (a IS NOT 13));
        CREATE TABLE w(k1 TEXT, k2 INTEGER, v, x BLOB, PRIMARY KEY (k2, k1)) WITHOUT ROWID;
        CREATE TABLE p(name TEXT PRIMARY KEY, n INTEGER, m);
        CREATE TABLE g(id INTEGER PRIMARY KEY, a INTEGER, b AS (a * 2) VIRTUAL, c AS (a + 1) STORED, d);
        CREATE TABLE t(id INTEGER PRIMARY KEY, v);
        CREATE TABLE s(id INTEGER PRIMARY KEY AUTOINCREMENT, v);
        CREATE TABLE _quorate_x(id INTEGER PRIMARY KEY, v);
        CREATE TABLE w2(k1 TEXT, k2 INTEGER, v, x BLOB, PRIMARY KEY (k2, k1)) WITHOUT ROWID;
        CREATE TABLE wg(k TEXT PRIMARY KEY, a, b AS (a || 'x'), c) WITHOUT ROWID;
        CREATE TABLE old(id INTEGER PRIMARY KEY, a);
        CREATE VIEW vr AS SELECT id, a FROM r;
        CREATE TRIGGER vr_ins INSTEAD OF INSERT ON vr BEGIN
            INSERT OR REPLACE INTO r(id, a) VALUES (new.id, new.a);
        END;
        CREATE TRIGGER t_ins AFTER INSERT ON t BEGIN
            INSERT OR REPLACE INTO r(id, a) VALUES (new.id, new.v);
        END;
        CREATE TRIGGER t_upd AFTER UPDATE ON t BEGIN
            UPDATE p SET n = coalesce(n, 0) + 1 WHERE name = 'k' || new.id;
            INSERT OR REPLACE INTO _quorate_x VALUES (new.id, new.v);
        END;
        CREATE TRIGGER t_boom BEFORE DELETE ON t WHEN old.v = 'boom' BEGIN
            SELECT RAISE(ABORT, 'boom');
        END;
        CREATE TRIGGER t_del AFTER DELETE ON t BEGIN
            DELETE FROM w WHERE k2 = old.id;
        END;
        CREATE TRIGGER p_skip BEFORE INSERT ON p WHEN new.m = 'skip' BEGIN
            SELECT RAISE(IGNORE);
        END;
    ";

    const ROWS: &str = "
        INSERT INTO t VALUES (1, 'x'), (2, 'boom');
        INSERT OR REPLACE INTO r VALUES (1, 1, 1.5, 'c1'), (2, 'two', NULL, 'c2'), (3, x'00ff', 3.0, NULL), (4, 12, -1, 'c4'), (5, 0.0, 0.0, 'c5');
        INSERT INTO w VALUES ('a', 1, 1, x'01'), ('b', 1, 'v', NULL), ('a', 2, 2.5, x'');
        INSERT INTO p VALUES ('k1', 1, 'm'), ('k2', NULL, 2), (NULL, 5, 5);
        INSERT INTO g(id, a, d) VALUES (1, 1, 'd'), (2, NULL, NULL);
        INSERT INTO s(v) VALUES ('s');
        INSERT INTO wg(k, a, c) VALUES ('a', 1, 1), ('b', NULL, 'c');
        -- Rows written before a column was added lack it: the hook reads
        -- its default.
        INSERT INTO old VALUES (1, 1), (2, 2);
        ALTER TABLE old ADD COLUMN e DEFAULT 'dflt';
        ALTER TABLE old ADD COLUMN f REAL DEFAULT 7;
    ";

    fn open(recorded: bool) -> (Connection, Option<Recorder>) {
        let mut conn = Connection::open_in_memory().unwrap();
        // As capture runs: triggers on, recursive triggers and foreign keys off.
        conn.execute_batch("PRAGMA foreign_keys=OFF; PRAGMA recursive_triggers=OFF;")
            .unwrap();
        let recorder = recorded.then(|| Recorder::install(&mut conn).unwrap());
        conn.execute_batch(SCHEMA).unwrap();
        conn.execute_batch(ROWS).unwrap();
        (conn, recorder)
    }

    /// Run `stmts` in one transaction as capture does without
    /// `transaction`: each in a savepoint, a failing one rolled back alone.
    fn run(conn: &Connection, stmts: &[String], mut rolled_back: impl FnMut(usize)) -> usize {
        conn.execute_batch("BEGIN").unwrap();
        let mut failed = 0;
        for (i, sql) in stmts.iter().enumerate() {
            conn.execute_batch("SAVEPOINT quorate_stmt").unwrap();
            if conn.execute_batch(sql).is_ok() {
                conn.execute_batch("RELEASE quorate_stmt").unwrap();
            } else {
                conn.execute_batch("ROLLBACK TO quorate_stmt; RELEASE quorate_stmt")
                    .unwrap();
                rolled_back(i);
                failed += 1;
            }
        }
        failed
    }

    /// The recorder's changeset of `stmts`.
    fn ours(stmts: &[String]) -> Vec<u8> {
        record("", stmts).unwrap().unwrap()
    }

    /// The recorder's changeset of `stmts`, after `setup`, as capture
    /// takes it.
    fn record(setup: &str, stmts: &[String]) -> rusqlite::Result<Result<Vec<u8>, String>> {
        let (conn, recorder) = open(true);
        let recorder = recorder.unwrap();
        conn.execute_batch(setup).unwrap();
        let recording = recorder.start();
        conn.execute_batch("BEGIN").unwrap();
        for sql in stmts {
            let mark = recording.mark();
            conn.execute_batch("SAVEPOINT quorate_stmt").unwrap();
            if conn.execute_batch(sql).is_ok() {
                conn.execute_batch("RELEASE quorate_stmt").unwrap();
            } else {
                conn.execute_batch("ROLLBACK TO quorate_stmt; RELEASE quorate_stmt")
                    .unwrap();
                recording.rollback_to(mark);
            }
        }
        let out = recording.changeset(&conn, &mut SchemaCache::default());
        drop(recording);
        conn.execute_batch("ROLLBACK").unwrap();
        out
    }

    /// A SQLite session's changeset of `stmts`, set up as capture had it.
    fn theirs(stmts: &[String]) -> Vec<u8> {
        let (conn, _) = open(false);
        let mut session = Session::new(&conn).unwrap();
        session.table_filter(Some(|t: &str| !auth::is_internal(t)));
        session.attach::<&str>(None).unwrap();
        run(&conn, stmts, |_| {});
        let mut bytes = Vec::new();
        session.changeset_strm(&mut bytes).unwrap();
        drop(session);
        conn.execute_batch("ROLLBACK").unwrap();
        bytes
    }

    #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
    enum V {
        Undefined,
        Null,
        Int(i64),
        /// Bits: equal as the session writes them.
        Real(u64),
        Text(Vec<u8>),
        Blob(Vec<u8>),
    }

    /// One change: table, columns, primary key flags, operation, indirect,
    /// old values, new values.
    type Change = (String, usize, Vec<u8>, &'static str, bool, Vec<V>, Vec<V>);

    /// A changeset as a sorted list: the session writes rows in hash order.
    fn canonical(bytes: &[u8]) -> Vec<Change> {
        let mut input: &[u8] = bytes;
        let reader: &mut dyn Read = &mut input;
        let mut iter = ChangesetIter::start_strm(&reader).unwrap();
        let mut out = Vec::new();
        let v = |r: rusqlite::Result<ValueRef<'_>>| match r {
            Err(_) => V::Undefined,
            Ok(ValueRef::Null) => V::Null,
            Ok(ValueRef::Integer(i)) => V::Int(i),
            Ok(ValueRef::Real(f)) => V::Real(f.to_bits()),
            Ok(ValueRef::Text(t)) => V::Text(t.to_vec()),
            Ok(ValueRef::Blob(b)) => V::Blob(b.to_vec()),
        };
        while let Some(item) = iter.next().unwrap() {
            let op = item.op().unwrap();
            let ncol = op.number_of_columns() as usize;
            let (name, indirect, code) = (op.table_name().to_owned(), op.indirect(), op.code());
            let pk = item.pk().unwrap().to_vec();
            let (kind, old, new) = match code {
                Action::SQLITE_INSERT => (
                    "INSERT",
                    vec![],
                    (0..ncol).map(|c| v(item.new_value(c))).collect(),
                ),
                Action::SQLITE_DELETE => (
                    "DELETE",
                    (0..ncol).map(|c| v(item.old_value(c))).collect(),
                    vec![],
                ),
                _ => (
                    "UPDATE",
                    (0..ncol).map(|c| v(item.old_value(c))).collect(),
                    (0..ncol).map(|c| v(item.new_value(c))).collect(),
                ),
            };
            out.push((name, ncol, pk, kind, indirect, old, new));
        }
        out.sort();
        out
    }

    fn stmts(sql: &[&str]) -> Vec<String> {
        sql.iter().map(|s| s.to_string()).collect()
    }

    /// Both changesets of `sql`, checked equal; returns ours.
    fn same(sql: &[&str]) -> Vec<Change> {
        let sql = stmts(sql);
        let (a, b) = (ours(&sql), theirs(&sql));
        let (ca, cb) = (canonical(&a), canonical(&b));
        assert_eq!(ca, cb, "{sql:?}");
        // One table and one row: no order to differ in, so the bytes are
        // the session's exactly.
        if ca.len() <= 1 {
            assert_eq!(a, b, "{sql:?}");
        }
        ca
    }

    fn ops(changes: &[Change]) -> Vec<(&str, &str, bool)> {
        changes.iter().map(|c| (c.0.as_str(), c.3, c.4)).collect()
    }

    fn int(i: i64) -> V {
        V::Int(i)
    }

    fn text(t: &str) -> V {
        V::Text(t.as_bytes().to_vec())
    }

    #[test]
    fn insert_then_update_is_an_insert_of_the_final_values() {
        let c = same(&[
            "INSERT INTO r(id, a, c) VALUES (9, 1, 'x')",
            "UPDATE r SET a = 2 WHERE id = 9",
            "UPDATE r SET b = 0.5 WHERE id = 9",
        ]);
        assert_eq!(ops(&c), vec![("r", "INSERT", false)]);
        assert_eq!(
            c[0].6,
            vec![int(9), int(2), V::Real(0.5f64.to_bits()), text("x")]
        );
    }

    #[test]
    fn insert_then_delete_is_nothing() {
        assert!(ours(&stmts(&[
            "INSERT INTO r(id) VALUES (9)",
            "DELETE FROM r WHERE id = 9"
        ]))
        .is_empty());
        assert!(same(&["INSERT INTO r(id) VALUES (9)", "DELETE FROM r WHERE id = 9"]).is_empty());
    }

    #[test]
    fn updates_fold_into_one_from_the_original_values() {
        let c = same(&[
            "UPDATE r SET a = 5 WHERE id = 1",
            "UPDATE r SET a = 6, c = 'z' WHERE id = 1",
        ]);
        assert_eq!(ops(&c), vec![("r", "UPDATE", false)]);
        // Old: the key and the changed columns' original values; new: the
        // changed columns' final values; the rest undefined.
        assert_eq!(c[0].5, vec![int(1), int(1), V::Undefined, text("c1")]);
        assert_eq!(c[0].6, vec![V::Undefined, int(6), V::Undefined, text("z")]);
        // Changed and changed back: nothing.
        assert!(same(&[
            "UPDATE r SET a = 5 WHERE id = 1",
            "UPDATE r SET a = 1 WHERE id = 1"
        ])
        .is_empty());
    }

    #[test]
    fn update_or_delete_then_delete_is_a_delete_of_the_original_values() {
        for first in [
            "UPDATE w SET v = 9 WHERE k1 = 'a' AND k2 = 1",
            "DELETE FROM w WHERE k1 = 'a' AND k2 = 1",
        ] {
            let c = same(&[first, "DELETE FROM w WHERE k1 = 'a' AND k2 = 1"]);
            assert_eq!(ops(&c), vec![("w", "DELETE", false)]);
            assert_eq!(c[0].5, vec![text("a"), int(1), int(1), V::Blob(vec![1])]);
        }
    }

    #[test]
    fn delete_then_insert_of_the_key_is_an_update_or_nothing() {
        let c = same(&[
            "DELETE FROM p WHERE name = 'k1'",
            "INSERT INTO p VALUES ('k1', 1, 'new')",
        ]);
        assert_eq!(ops(&c), vec![("p", "UPDATE", false)]);
        assert_eq!(c[0].5, vec![text("k1"), V::Undefined, text("m")]);
        assert_eq!(c[0].6, vec![V::Undefined, V::Undefined, text("new")]);
        assert!(same(&[
            "DELETE FROM p WHERE name = 'k1'",
            "INSERT INTO p VALUES ('k1', 1, 'm')"
        ])
        .is_empty());
        // The same through REPLACE, whose delete the hook reports.
        let c = same(&["REPLACE INTO r VALUES (1, 7, 1.5, 'c1')"]);
        assert_eq!(
            c[0].6,
            vec![V::Undefined, int(7), V::Undefined, V::Undefined]
        );
        assert!(same(&["INSERT OR REPLACE INTO r VALUES (1, 1, 1.5, 'c1')"]).is_empty());
    }

    #[test]
    fn an_update_that_changes_nothing_is_nothing() {
        assert!(same(&["UPDATE r SET a = a, b = b, c = c"]).is_empty());
        // REAL compares as the session compares it (==): 1 stored in a REAL
        // column reads back as 1.0, equal.
        assert!(same(&["UPDATE r SET b = 3 WHERE id = 3"]).is_empty());
        // -0.0 == 0.0: no change, though the bits differ.
        assert!(same(&["UPDATE r SET a = -0.0, b = -0.0 WHERE id = 5"]).is_empty());
        // A different type is a change even when SQL would call it equal.
        let c = same(&["UPDATE r SET a = 1.0 WHERE id = 1"]);
        assert_eq!(c[0].6[1], V::Real(1.0f64.to_bits()));
    }

    #[test]
    fn a_new_primary_key_is_a_delete_and_an_insert() {
        let c = same(&["UPDATE r SET id = 10 WHERE id = 1"]);
        assert_eq!(
            ops(&c),
            vec![("r", "DELETE", false), ("r", "INSERT", false)]
        );
        let c = same(&["UPDATE w SET k1 = 'z' WHERE k2 = 2"]);
        assert_eq!(
            ops(&c),
            vec![("w", "DELETE", false), ("w", "INSERT", false)]
        );
        // Two rows onto one key: the second fails the statement.
        assert!(same(&["UPDATE w SET k1 = 'z' WHERE k2 = 1"]).is_empty());
        // Moved away and back: nothing.
        assert!(same(&[
            "UPDATE r SET id = 10 WHERE id = 1",
            "UPDATE r SET id = 1 WHERE id = 10"
        ])
        .is_empty());
        // Onto a key that existed, through REPLACE.
        let c = same(&["UPDATE OR REPLACE r SET id = 2 WHERE id = 1"]);
        assert_eq!(
            ops(&c),
            vec![("r", "DELETE", false), ("r", "UPDATE", false)]
        );
    }

    #[test]
    fn a_null_primary_key_is_left_out_as_the_session_leaves_it_out() {
        assert!(same(&[
            "INSERT INTO p VALUES (NULL, 1, 2)",
            "UPDATE p SET n = 7 WHERE name IS NULL"
        ])
        .is_empty());
        // Into and out of a NULL key: an INSERT of the new key, a DELETE of the old.
        let c = same(&["UPDATE p SET name = 'k9' WHERE name IS NULL"]);
        assert_eq!(ops(&c), vec![("p", "INSERT", false)]);
        let c = same(&["UPDATE p SET name = NULL WHERE name = 'k1'"]);
        assert_eq!(ops(&c), vec![("p", "DELETE", false)]);
    }

    #[test]
    fn a_rolled_back_statement_leaves_nothing() {
        // The second row breaks the CHECK after the first was inserted:
        // SQLite undoes the first without telling the hook.
        let c = same(&[
            "INSERT INTO r(id, a) VALUES (20, 1), (21, 13)",
            "UPDATE r SET a = a + 1",
            "INSERT INTO r(id, a) VALUES (22, 2)",
        ]);
        assert_eq!(ops(&c), vec![("r", "INSERT", false)]);
        // A trigger's abort undoes what the trigger did before.
        assert!(same(&["DELETE FROM t"]).is_empty());
    }

    #[test]
    fn indirect_means_only_triggers_ever_changed_the_row() {
        let c = same(&["INSERT INTO t VALUES (7, 'v')"]);
        assert_eq!(ops(&c), vec![("r", "INSERT", true), ("t", "INSERT", false)]);
        let c = same(&[
            "INSERT INTO t VALUES (7, 'v')",
            "UPDATE r SET b = 2 WHERE id = 7",
        ]);
        assert_eq!(
            ops(&c),
            vec![("r", "INSERT", false), ("t", "INSERT", false)]
        );
        // A direct change rolled back still counts, as it did for the
        // session: the first row went in directly before the second broke
        // the CHECK.
        let c = same(&[
            "INSERT INTO r(id, a) VALUES (7, 1), (8, 13)",
            "INSERT INTO t VALUES (7, 'v')",
        ]);
        assert_eq!(
            ops(&c),
            vec![("r", "INSERT", false), ("t", "INSERT", false)]
        );
    }

    #[test]
    fn generated_columns_are_left_out_as_the_session_leaves_them_out() {
        let c = same(&["INSERT INTO g(id, a, d) VALUES (5, 2, 'x')"]);
        assert_eq!(c[0].1, 3);
        assert_eq!(c[0].6, vec![int(5), int(2), text("x")]);
        same(&[
            "UPDATE g SET a = 5 WHERE id = 1",
            "DELETE FROM g WHERE id = 2",
        ]);
    }

    #[test]
    fn internal_and_sqlite_tables_are_left_out() {
        // AUTOINCREMENT writes sqlite_sequence; the trigger writes
        // _quorate_x beside p.
        let c = same(&[
            "INSERT INTO s(v) VALUES ('x')",
            "UPDATE t SET v = 'y' WHERE id = 1",
        ]);
        assert_eq!(
            ops(&c),
            vec![
                ("p", "UPDATE", true),
                ("s", "INSERT", false),
                ("t", "UPDATE", false)
            ]
        );
    }

    #[test]
    fn headers_hold_the_primary_key_order() {
        let c = same(&["INSERT INTO w VALUES ('q', 3, NULL, NULL)"]);
        // PRIMARY KEY (k2, k1): k1 is its second column, k2 its first.
        assert_eq!(c[0].2, vec![2, 1, 0, 0]);
    }

    #[test]
    fn long_values_take_multi_byte_lengths() {
        same(&["INSERT INTO r(id, c, a) VALUES (30, printf('%.300c', 'x'), zeroblob(20000))"]);
        same(&["UPDATE w SET x = zeroblob(70000) WHERE k2 = 2"]);
    }

    #[test]
    fn varints_are_sqlites() {
        let enc = |v: u64| {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            out
        };
        assert_eq!(enc(0), vec![0]);
        assert_eq!(enc(127), vec![0x7f]);
        assert_eq!(enc(128), vec![0x81, 0x00]);
        assert_eq!(enc(16383), vec![0xff, 0x7f]);
        assert_eq!(enc(16384), vec![0x81, 0x80, 0x00]);
        assert_eq!(enc(u64::MAX), vec![0xff; 9]);
        assert_eq!(enc(1 << 56).len(), 9);
        assert_eq!(enc((1 << 56) - 1).len(), 8);
    }

    #[test]
    fn nothing_is_recorded_outside_a_capture() {
        let (conn, recorder) = open(true);
        let recorder = recorder.unwrap();
        conn.execute_batch("INSERT INTO r(id) VALUES (40)").unwrap();
        let recording = recorder.start();
        let bytes = recording
            .changeset(&conn, &mut SchemaCache::default())
            .unwrap()
            .unwrap();
        assert!(bytes.is_empty());
        drop(recording);
        conn.execute_batch("INSERT INTO r(id) VALUES (41)").unwrap();
        assert!(lock(&recorder.state).log.events.is_empty());
    }

    #[test]
    fn a_change_the_hook_could_not_read_fails_the_changeset() {
        let (conn, recorder) = open(true);
        let recorder = recorder.unwrap();
        let recording = recorder.start();
        conn.execute_batch("BEGIN; UPDATE r SET a = 2 WHERE id = 1")
            .unwrap();
        {
            // As if the hook had not been able to read the row's `a`.
            let mut st = lock(&recorder.state);
            let log = &mut st.log;
            let at = log.offsets[log.events[0].old.unwrap() + 1];
            log.values[at] = UNDEFINED;
        }
        let e = recording
            .changeset(&conn, &mut SchemaCache::default())
            .unwrap_err();
        assert!(e.to_string().contains("could not read column a"), "{e}");
        // And an error the hook met is the changeset's error.
        conn.execute_batch("UPDATE r SET a = 3 WHERE id = 1")
            .unwrap();
        lock(&recorder.state).log.error = Some(failure(ffi::SQLITE_NOMEM, "out of memory".into()));
        let e = recording
            .changeset(&conn, &mut SchemaCache::default())
            .unwrap_err();
        assert!(e.to_string().contains("out of memory"), "{e}");
    }

    #[test]
    fn a_change_to_sqlite_stat1_is_refused() {
        let update = stmts(&["UPDATE sqlite_stat1 SET stat = '9'"]);
        let why = record("ANALYZE", &update).unwrap().unwrap_err();
        assert!(why.contains("changes sqlite_stat1"), "{why}");
        // The session wrote it into the changeset, which apply refuses.
        let theirs = canonical(&theirs(&stmts(&[
            "ANALYZE",
            "UPDATE sqlite_stat1 SET stat = '9'",
        ])));
        assert!(theirs.iter().any(|c| c.0 == "sqlite_stat1"), "{theirs:?}");
        // Rolled back with its statement, it is no longer a change.
        let failing = stmts(&[
            "UPDATE sqlite_stat1 SET stat = '9'; INSERT INTO r(id, a) VALUES (50, 13)",
            "INSERT INTO r(id) VALUES (51)",
        ]);
        assert!(!record("ANALYZE", &failing).unwrap().unwrap().is_empty());
    }

    #[test]
    fn keys_equal_to_sqlite_but_not_byte_equal_are_told_apart() {
        // The session read the final row by `key IS ?` under the column's
        // collation and wrote two changes for it, a changeset that fails
        // on apply; the recorder writes the real net change.
        let (conn, recorder) = open(true);
        let recorder = recorder.unwrap();
        conn.execute_batch(
            "CREATE TABLE ci(k TEXT COLLATE NOCASE PRIMARY KEY, v); INSERT INTO ci VALUES ('a', 1)",
        )
        .unwrap();
        let recording = recorder.start();
        conn.execute_batch("BEGIN; UPDATE ci SET k = 'A'").unwrap();
        let bytes = recording
            .changeset(&conn, &mut SchemaCache::default())
            .unwrap()
            .unwrap();
        drop(recording);
        conn.execute_batch("ROLLBACK").unwrap();
        let c = canonical(&bytes);
        assert_eq!(
            ops(&c),
            vec![("ci", "DELETE", false), ("ci", "INSERT", false)]
        );
        assert_eq!(c[1].6, vec![text("A"), int(1)]);
    }

    /// Statements over the tables of `SCHEMA`, many of them touching the
    /// same rows, changing keys, or failing part-way.
    fn statement() -> impl Strategy<Value = String> {
        let value = prop_oneof![
            Just("NULL".to_string()),
            (-2i64..15).prop_map(|i| i.to_string()),
            prop::sample::select(vec![
                "140737488355328",
                "9223372036854775807",
                "-9223372036854775808",
                "CAST(x'ff00' AS TEXT)",
                "char(0, 97)"
            ])
            .prop_map(str::to_string),
            prop::sample::select(vec!["0.5", "1.0", "2.5", "-0.0", "0.0", "12.0"])
                .prop_map(str::to_string),
            prop::sample::select(vec![
                "''", "'x'", "'two'", "'c1'", "'c2'", "'boom'", "'skip'"
            ])
            .prop_map(str::to_string),
            prop::sample::select(vec!["x''", "x'00ff'", "x'01'"]).prop_map(str::to_string),
        ];
        let rid = 0i64..7;
        let k1 = prop::sample::select(vec!["'a'", "'b'", "'c'"]);
        let k2 = prop::sample::select(vec!["0", "1", "2", "3", "1.5"]);
        let name = prop::sample::select(vec!["NULL", "'k1'", "'k2'", "'k3'", "'k4'"]);
        let conflict = prop::sample::select(vec![
            "",
            " OR REPLACE",
            " OR IGNORE",
            " OR FAIL",
            " OR ABORT",
        ]);
        let returning = prop::sample::select(vec!["", " RETURNING *"]);
        let v = || value.clone();
        prop_oneof![
            // r: rowid alias, UNIQUE c, CHECK a <> 13.
            (conflict.clone(), prop::collection::vec((rid.clone(), v(), v(), v()), 1..4), returning.clone())
                .prop_map(|(c, rows, ret)| format!(
                    "INSERT{c} INTO r(id, a, b, c) VALUES {}{ret}",
                    rows.iter().map(|(i, a, b, t)| format!("({i}, {a}, {b}, {t})")).collect::<Vec<_>>().join(", ")
                )),
            (rid.clone(), v(), v()).prop_map(|(i, a, t)| format!(
                "INSERT INTO r(id, a, c) VALUES ({i}, {a}, {t}) ON CONFLICT(id) DO UPDATE SET a = excluded.a, c = excluded.c"
            )),
            (rid.clone(), v()).prop_map(|(i, a)| format!("INSERT INTO r(id, a) VALUES ({i}, {a}) ON CONFLICT DO NOTHING")),
            (conflict.clone(), v(), rid.clone()).prop_map(|(c, a, i)| format!("UPDATE{c} r SET a = {a} WHERE id = {i}")),
            (conflict.clone(), v(), rid.clone()).prop_map(|(c, t, i)| format!("UPDATE{c} r SET c = {t}, b = {t} WHERE id = {i}")),
            (conflict.clone(), rid.clone(), rid.clone()).prop_map(|(c, n, i)| format!("UPDATE{c} r SET id = {n} WHERE id = {i}")),
            (conflict.clone(), returning.clone()).prop_map(|(c, ret)| format!("UPDATE{c} r SET a = a + 1 WHERE typeof(a) = 'integer'{ret}")),
            (conflict.clone()).prop_map(|c| format!("UPDATE{c} r SET id = id + 1")),
            rid.clone().prop_map(|i| format!("DELETE FROM r WHERE id = {i}")),
            v().prop_map(|a| format!("DELETE FROM r WHERE a IS {a}")),
            (rid.clone(), v(), v()).prop_map(|(i, a, b)| format!("REPLACE INTO r VALUES ({i}, {a}, {b}, 'c1')")),
            // w: composite key, WITHOUT ROWID.
            (conflict.clone(), prop::collection::vec((k1.clone(), k2.clone(), v(), v()), 1..3))
                .prop_map(|(c, rows)| format!(
                    "INSERT{c} INTO w VALUES {}",
                    rows.iter().map(|(a, b, x, y)| format!("({a}, {b}, {x}, {y})")).collect::<Vec<_>>().join(", ")
                )),
            (k1.clone(), k2.clone(), v()).prop_map(|(a, b, x)| format!(
                "INSERT INTO w VALUES ({a}, {b}, {x}, NULL) ON CONFLICT(k2, k1) DO UPDATE SET v = excluded.v, x = x'aa'"
            )),
            (v(), k1.clone(), k2.clone()).prop_map(|(x, a, b)| format!("UPDATE w SET v = {x} WHERE k1 = {a} AND k2 = {b}")),
            (conflict.clone(), k1.clone(), k2.clone()).prop_map(|(c, a, b)| format!("UPDATE{c} w SET k1 = {a} WHERE k2 = {b}")),
            conflict.clone().prop_map(|c| format!("UPDATE{c} w SET k2 = k2 + 1")),
            k2.clone().prop_map(|b| format!("DELETE FROM w WHERE k2 = {b}")),
            // p: declared TEXT key on a rowid table, NULL keys allowed.
            (conflict.clone(), name.clone(), v(), v()).prop_map(|(c, k, n, m)| format!("INSERT{c} INTO p VALUES ({k}, {n}, {m})")),
            (conflict.clone(), name.clone(), name.clone()).prop_map(|(c, k, o)| format!("UPDATE{c} p SET name = {k} WHERE name IS {o}")),
            (v(), name.clone()).prop_map(|(n, k)| format!("UPDATE p SET n = {n}, m = m WHERE name IS {k}")),
            name.clone().prop_map(|k| format!("DELETE FROM p WHERE name IS {k}")),
            // g: generated columns.
            (rid.clone(), v(), v()).prop_map(|(i, a, d)| format!("INSERT OR REPLACE INTO g(id, a, d) VALUES ({i}, {a}, {d})")),
            (v(), rid.clone()).prop_map(|(a, i)| format!("UPDATE g SET a = {a} WHERE id = {i}")),
            rid.clone().prop_map(|i| format!("DELETE FROM g WHERE id = {i}")),
            // t: triggers change r, p, w (indirectly) and may fail.
            (conflict.clone(), rid.clone(), v()).prop_map(|(c, i, x)| format!("INSERT{c} INTO t VALUES ({i}, {x})")),
            (v(), rid.clone()).prop_map(|(x, i)| format!("UPDATE t SET v = {x} WHERE id = {i}")),
            rid.clone().prop_map(|i| format!("DELETE FROM t WHERE id = {i}")),
            Just("DELETE FROM t".to_string()),
            Just("DELETE FROM w".to_string()),
            Just("INSERT INTO s(v) VALUES (1)".to_string()),
            // A rowid that is not the key moves; the key does not.
            Just("UPDATE p SET rowid = rowid + 10".to_string()),
            (rid.clone(), rid.clone()).prop_map(|(i, n)| format!(
                "INSERT INTO r(id, a) VALUES ({i}, 0) ON CONFLICT(id) DO UPDATE SET id = {n}"
            )),
            // The transfer optimization copies rows without a statement per row.
            prop::sample::select(vec![
                "INSERT INTO w2 SELECT * FROM w",
                "INSERT OR REPLACE INTO w2 SELECT * FROM w",
                "DELETE FROM w2",
            ]).prop_map(str::to_string),
            (k1.clone(), v(), v()).prop_map(|(k, a, c)| format!("INSERT OR REPLACE INTO wg(k, a, c) VALUES ({k}, {a}, {c})")),
            (v(), k1.clone()).prop_map(|(a, k)| format!("UPDATE wg SET a = {a}, c = 1 WHERE k = {k}")),
            k1.clone().prop_map(|k| format!("DELETE FROM wg WHERE k = {k}")),
            (v(), rid.clone()).prop_map(|(a, i)| format!("UPDATE old SET a = {a} WHERE id = {i}")),
            (v(), rid.clone()).prop_map(|(a, i)| format!("UPDATE old SET f = {a} WHERE id = {i}")),
            rid.clone().prop_map(|i| format!("DELETE FROM old WHERE id = {i}")),
            // Through a view's INSTEAD OF trigger: indirect.
            (rid.clone(), v()).prop_map(|(i, a)| format!("INSERT INTO vr VALUES ({i}, {a})")),
            // Temporary objects are the connection's own, and a temporary
            // trigger may change the main database.
            prop::sample::select(vec![
                "CREATE TEMP TABLE IF NOT EXISTS tmp(id INTEGER PRIMARY KEY, v)",
                "INSERT INTO temp.tmp VALUES (1, 1)",
                "CREATE TEMP TRIGGER IF NOT EXISTS tt AFTER INSERT ON main.g BEGIN INSERT OR REPLACE INTO main.r(id, a) VALUES (new.id, new.a); END",
            ]).prop_map(str::to_string),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// The recorder's changeset means what a SQLite session's meant:
        /// the same changes, table headers and indirect flags.
        #[test]
        fn the_recorder_agrees_with_a_session(sql in prop::collection::vec(statement(), 1..14)) {
            let (a, b) = (ours(&sql), theirs(&sql));
            prop_assert_eq!(canonical(&a), canonical(&b), "{:?}", sql);
            prop_assert_eq!(a.len(), b.len());
        }
    }
}
