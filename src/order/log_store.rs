//! The write-set log (Galera's *gcache*): openraft's durable log store.
//!
//! Segment files `log-<first index>.seg` under `data_dir/log/` hold records
//! `[u32 length][u32 crc32][bincode entry]`. Appends are written at once (so
//! they are readable when `append` returns) and made durable by one syncer
//! thread that fsyncs once for every batch waiting — group commit of the
//! log. A torn record at the tail (power cut during a write) is detected by
//! its length or checksum and cut off on open; damage anywhere else is an
//! error, never silently skipped.
//!
//! The active segment is extended ahead of the writes in steps of
//! [`PREALLOCATE_BYTES`]: an append then lands inside the file, and its
//! fdatasync has no new file size to journal (about 30 % less time and CPU
//! per sync on ext4 here). Zeroes after the last record are that reserve,
//! not damage; a sealed segment is trimmed to its records.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::{Bound, RangeBounds};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};

use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::{LogState, OptionalSend, RaftLogReader};
use serde::{Deserialize, Serialize};

use super::types::{Entry, LogId, TypeConfig, Vote};

/// Start a new segment once the active one grows past this.
const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// A record longer than this is damage, not data (write-sets are far smaller).
const MAX_RECORD_BYTES: u32 = 1 << 30;
const HEADER_BYTES: u64 = 8;
/// How far ahead of the writes the active segment is extended.
const PREALLOCATE_BYTES: u64 = 1 << 20;
const META_FILE: &str = "raft-meta.json";

/// Durable Raft state kept beside the log.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct LogMeta {
    vote: Option<Vote>,
    last_purged: Option<LogId>,
    committed: Option<LogId>,
}

#[derive(Debug, Clone, Copy)]
struct Location {
    segment: u64,
    offset: u64,
    len: u32,
}

struct Segment {
    file: Arc<File>,
    /// Bytes of records; the file may be longer (see `allocated`).
    len: u64,
    /// The file's size: records, then reserved zeroes.
    allocated: u64,
}

impl Segment {
    fn new(file: File, len: u64, allocated: u64) -> Segment {
        Segment {
            file: Arc::new(file),
            len,
            allocated,
        }
    }

    /// Extends the file past `end` ahead of the writes, with zeroes really
    /// written: an append over written blocks changes no file metadata, so
    /// its fdatasync needs no journal commit (and does not queue behind the
    /// checkpoint's). Best effort: on failure (a full disk) the write itself
    /// finds out whether it fits, as it would without a reserve.
    fn reserve(&mut self, end: u64) {
        if end <= self.allocated {
            return;
        }
        let target = end.div_ceil(PREALLOCATE_BYTES) * PREALLOCATE_BYTES;
        static ZEROES: [u8; 64 * 1024] = [0; 64 * 1024];
        let mut at = self.allocated;
        while at < target {
            let n = (target - at).min(ZEROES.len() as u64) as usize;
            if self.file.write_all_at(&ZEROES[..n], at).is_err() {
                // What was written is zeroes: reserve too.
                break;
            }
            at += n as u64;
        }
        self.allocated = at;
    }

    /// Cuts the reserve off a segment that takes no more records.
    fn seal(&mut self) -> io::Result<()> {
        if self.allocated > self.len {
            self.file.set_len(self.len)?;
            self.file.sync_all()?;
            self.allocated = self.len;
        }
        Ok(())
    }
}

struct Inner {
    dir: PathBuf,
    /// Keyed by the first log index the segment holds.
    segments: BTreeMap<u64, Segment>,
    locations: BTreeMap<u64, Location>,
    last_log_id: Option<LogId>,
    meta: LogMeta,
    /// Start a new segment past this size (a constant but for tests).
    segment_bytes: u64,
    /// The newest entries as appended: replication to each follower and the
    /// state machine read every entry again right after it was written, and
    /// a copy here is cheaper than reading and decoding the record.
    recent: BTreeMap<u64, Entry>,
}

/// Entries kept in `Inner::recent`.
const RECENT_ENTRIES: usize = 1024;

/// An incarnation and the log index it forked at (`None` for the first).
type IncarnationMark = (u64, Option<u64>);

/// A log store handle; clones share the same files.
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<Inner>>,
    syncer: mpsc::Sender<SyncJob>,
    /// The newest incarnation started by an entry in the log (appended, not
    /// necessarily applied) and its fork index: a member's fencing stamp must
    /// not lag behind its log while the state machine catches up.
    incarnation: Arc<Mutex<Option<IncarnationMark>>>,
}

struct SyncJob {
    file: Arc<File>,
    done: IOFlushed<TypeConfig>,
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// The same error, naming the file it happened on (the operator must know
/// which file system is full or read-only); the kind is kept.
fn at_path(path: &Path) -> impl Fn(io::Error) -> io::Error + '_ {
    move |e| io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

fn segment_path(dir: &Path, first_index: u64) -> PathBuf {
    dir.join(format!("log-{first_index:020}.seg"))
}

impl LogStore {
    /// Open (or create) the log in `dir`, repairing a torn tail.
    pub fn open(dir: &Path) -> io::Result<LogStore> {
        Self::open_with_segment_bytes(dir, SEGMENT_BYTES)
    }

    fn open_with_segment_bytes(dir: &Path, segment_bytes: u64) -> io::Result<LogStore> {
        let inner = Inner::load(dir, segment_bytes)?;
        let (tx, rx) = mpsc::channel::<SyncJob>();
        std::thread::Builder::new()
            .name("quorate-log-sync".into())
            .spawn(move || sync_loop(rx))?;
        Ok(LogStore {
            inner: Arc::new(Mutex::new(inner)),
            syncer: tx,
            incarnation: Arc::default(),
        })
    }

    /// Forget what memory says the log holds and read it again from its
    /// files, repairing the tail as on open. After a failed write (a full
    /// disk, a file system gone read-only) memory may index records that
    /// never reached the disk, or the file may end in half a record: only
    /// the files count. Every clone sees the reloaded log.
    pub fn reload(&self) -> io::Result<()> {
        let mut inner = self.lock()?;
        let fresh = Inner::load(&inner.dir, inner.segment_bytes)?;
        *inner = fresh;
        Ok(())
    }

    /// Remember the incarnations these entries start (see `incarnation`).
    pub fn note_incarnations<'a>(&self, entries: impl IntoIterator<Item = &'a Entry>) {
        for e in entries {
            // Called for every appended entry: only the rare incarnation
            // entries take the lock.
            let started = match &e.payload {
                openraft::EntryPayload::Normal(super::types::Request::Bootstrap {
                    incarnation,
                    ..
                }) => (*incarnation, None),
                openraft::EntryPayload::Normal(super::types::Request::NewIncarnation {
                    incarnation,
                    fork_index,
                    ..
                }) => (*incarnation, Some(*fork_index)),
                _ => continue,
            };
            if let Ok(mut current) = self.incarnation.lock() {
                if current.is_none_or(|(c, _)| started.0 >= c) {
                    *current = Some(started);
                }
            }
        }
    }

    /// The newest incarnation an appended entry started, with its fork index.
    pub fn appended_incarnation(&self) -> Option<(u64, Option<u64>)> {
        self.incarnation.lock().ok().and_then(|c| *c)
    }

    fn lock(&self) -> io::Result<MutexGuard<'_, Inner>> {
        self.inner
            .lock()
            .map_err(|_| io::Error::other("log store lock poisoned by an earlier panic"))
    }

    /// Index range currently held (for IST decisions and status).
    pub fn bounds(&self) -> io::Result<(Option<u64>, Option<u64>)> {
        let inner = self.lock()?;
        let purged = inner.meta.last_purged.as_ref().map(|l| l.index);
        let first = inner.locations.keys().find(|i| Some(**i) > purged).copied();
        Ok((first, inner.last_log_id.as_ref().map(|l| l.index)))
    }
}

/// fsync once for everything queued, then acknowledge it all.
fn sync_loop(rx: mpsc::Receiver<SyncJob>) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while let Ok(more) = rx.try_recv() {
            jobs.push(more);
        }
        let mut result: Result<(), String> = Ok(());
        let mut synced: Vec<*const File> = Vec::new();
        for job in &jobs {
            let ptr = Arc::as_ptr(&job.file);
            if synced.contains(&ptr) {
                continue;
            }
            synced.push(ptr);
            if let Err(e) = job.file.sync_data() {
                result = Err(e.to_string());
                break;
            }
        }
        for job in jobs {
            job.done.io_completed(
                result.clone().map_err(|e| {
                    io::Error::other(format!("fsync of the write-set log failed: {e}"))
                }),
            );
        }
    }
}

/// Whether the bytes of `file` from `offset` to `end` are all zero.
fn zeroes_to_end(file: &File, mut offset: u64, end: u64) -> io::Result<bool> {
    let mut buf = vec![0u8; 64 * 1024];
    while offset < end {
        let want = usize::try_from(end - offset).map_or(buf.len(), |n| n.min(buf.len()));
        let got = file.read_at(&mut buf[..want], offset)?;
        if got == 0 {
            return Ok(true);
        }
        if buf[..got].iter().any(|b| *b != 0) {
            return Ok(false);
        }
        offset += got as u64;
    }
    Ok(true)
}

fn read_meta(dir: &Path) -> io::Result<LogMeta> {
    let path = dir.join(META_FILE);
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            invalid(format!(
                "{} is damaged: {e}; it holds the Raft vote and cannot be guessed",
                path.display()
            ))
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(LogMeta::default()),
        Err(e) => Err(e),
    }
}

/// Atomic, durable replacement of a small file.
pub(crate) fn write_file_durably(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other("path has no parent directory"))?;
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

/// A record encoded but not yet written: where it will sit in its segment.
struct Pending {
    index: u64,
    offset: u64,
    len: u32,
    log_id: LogId,
}

impl Inner {
    /// Read the log in `dir` (created if missing), cutting a torn tail.
    fn load(dir: &Path, segment_bytes: u64) -> io::Result<Inner> {
        fs::create_dir_all(dir)?;
        let meta = read_meta(dir)?;
        let mut inner = Inner {
            dir: dir.to_path_buf(),
            segments: BTreeMap::new(),
            locations: BTreeMap::new(),
            last_log_id: None,
            meta,
            segment_bytes,
            recent: BTreeMap::new(),
        };
        let mut firsts: Vec<u64> = Vec::new();
        for dirent in fs::read_dir(dir)? {
            let name = dirent?.file_name();
            let name = name.to_string_lossy();
            if let Some(num) = name
                .strip_prefix("log-")
                .and_then(|n| n.strip_suffix(".seg"))
            {
                let first = num.parse::<u64>().map_err(|_| {
                    invalid(format!(
                        "unexpected file {name} in log directory {}",
                        dir.display()
                    ))
                })?;
                firsts.push(first);
            }
        }
        firsts.sort_unstable();
        let count = firsts.len();
        for (i, first) in firsts.into_iter().enumerate() {
            let is_last = i + 1 == count;
            inner.load_segment(first, is_last)?;
        }
        if inner.segments.is_empty() {
            let next = inner
                .meta
                .last_purged
                .as_ref()
                .map(|l| l.index + 1)
                .unwrap_or(0);
            inner.create_segment(next)?;
        }
        Ok(inner)
    }

    /// Write `buf` at the end of the active segment (which starts at
    /// `seg_first`) and index the records it holds; returns the segment's file.
    fn write_pending(
        &mut self,
        seg_first: u64,
        buf: &[u8],
        pending: impl Iterator<Item = Pending>,
    ) -> io::Result<Arc<File>> {
        let path = segment_path(&self.dir, seg_first);
        let seg = self.active()?.1;
        let end = seg.len + buf.len() as u64;
        seg.reserve(end);
        seg.file
            .write_all_at(buf, seg.len)
            .map_err(at_path(&path))?;
        seg.len = end;
        seg.allocated = seg.allocated.max(end);
        let file = seg.file.clone();
        for p in pending {
            self.locations.insert(
                p.index,
                Location {
                    segment: seg_first,
                    offset: p.offset,
                    len: p.len,
                },
            );
            self.last_log_id = Some(p.log_id);
        }
        Ok(file)
    }

    fn write_meta(&self) -> io::Result<()> {
        let bytes = serde_json::to_vec(&self.meta).map_err(io::Error::other)?;
        let path = self.dir.join(META_FILE);
        write_file_durably(&path, &bytes).map_err(at_path(&path))
    }

    fn create_segment(&mut self, first: u64) -> io::Result<()> {
        let path = segment_path(&self.dir, first);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(at_path(&path))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(at_path(&self.dir))?;
        self.segments.insert(first, Segment::new(file, 0, 0));
        Ok(())
    }

    /// Scan one segment, indexing its records. A bad record in the last
    /// segment is a torn write: cut it off. Elsewhere it is corruption.
    fn load_segment(&mut self, first: u64, is_last: bool) -> io::Result<()> {
        let path = segment_path(&self.dir, first);
        let mut file = OpenOptions::new().read(true).write(true).open(&path)?;
        let file_len = file.metadata()?.len();
        let mut offset = 0u64;
        let mut reader = io::BufReader::new(&mut file);
        let mut expected = first;
        let mut torn: Option<String> = None;
        loop {
            if offset == file_len {
                break;
            }
            let mut header = [0u8; 8];
            let whole_header =
                offset + HEADER_BYTES <= file_len && reader.read_exact(&mut header).is_ok();
            let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
            let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
            if !whole_header || len == 0 {
                // Zeroes to the end are the reserve (see `Segment::reserve`)
                // or space the file system extended for a write that a crash
                // cut off: no record starts there, as no entry encodes to
                // zero bytes (and crc32 of nothing is 0).
                if !zeroes_to_end(reader.get_ref(), offset, file_len)? {
                    torn = Some(if whole_header {
                        format!("empty (zeroed) record at byte {offset}")
                    } else {
                        format!("incomplete record header at byte {offset}")
                    });
                }
                break;
            }
            if len > MAX_RECORD_BYTES || offset + HEADER_BYTES + u64::from(len) > file_len {
                torn = Some(format!(
                    "record at byte {offset} runs past the end of the file"
                ));
                break;
            }
            let mut body = vec![0u8; len as usize];
            reader.read_exact(&mut body)?;
            if crc32fast::hash(&body) != crc {
                torn = Some(format!("checksum mismatch in record at byte {offset}"));
                break;
            }
            let entry: Entry = super::network::decode(&body).map_err(|e| {
                invalid(format!(
                    "{}: undecodable record at byte {offset}: {e}",
                    path.display()
                ))
            })?;
            let index = entry.index();
            if index != expected {
                return Err(invalid(format!(
                    "{}: record at byte {offset} has log index {index}, expected {expected}: the log has a hole",
                    path.display()
                )));
            }
            self.locations.insert(
                index,
                Location {
                    segment: first,
                    offset,
                    len,
                },
            );
            self.last_log_id = Some(entry.log_id());
            expected += 1;
            offset += HEADER_BYTES + u64::from(len);
        }
        drop(reader);
        if let Some(what) = torn {
            if !is_last {
                return Err(invalid(format!(
                    "{}: {what}, and later segments exist: the log is damaged in the middle",
                    path.display()
                )));
            }
            tracing::warn!(
                "write-set log {}: {what}; cutting the torn tail at byte {offset} (a write cut short by a crash or a failed write was never acknowledged)",
                path.display()
            );
            file.set_len(offset)?;
            file.sync_all()?;
        }
        file.seek(SeekFrom::Start(offset))?;
        let allocated = file.metadata()?.len();
        let mut segment = Segment::new(file, offset, allocated);
        if !is_last {
            segment.seal()?;
        }
        self.segments.insert(first, segment);
        Ok(())
    }

    fn read_entry(&self, index: u64) -> io::Result<Option<Entry>> {
        let Some(loc) = self.locations.get(&index) else {
            return Ok(None);
        };
        if let Some(entry) = self.recent.get(&index) {
            return Ok(Some(entry.clone()));
        }
        let seg = self.segments.get(&loc.segment).ok_or_else(|| {
            io::Error::other(format!("log index {index} points at a missing segment"))
        })?;
        let mut buf = vec![0u8; loc.len as usize + HEADER_BYTES as usize];
        seg.file.read_exact_at(&mut buf, loc.offset)?;
        let body = &buf[HEADER_BYTES as usize..];
        let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
        if crc32fast::hash(body) != crc {
            return Err(invalid(format!(
                "log record {index} fails its checksum: the log file was changed on disk"
            )));
        }
        super::network::decode(body)
            .map(Some)
            .map_err(|e| invalid(format!("log record {index}: {e}")))
    }

    fn active(&mut self) -> io::Result<(u64, &mut Segment)> {
        let (first, seg) = self
            .segments
            .iter_mut()
            .next_back()
            .ok_or_else(|| io::Error::other("log has no segment"))?;
        Ok((*first, seg))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let inner = self.lock()?;
        let purged = inner.meta.last_purged.as_ref().map(|l| l.index);
        let start = match range.start_bound() {
            Bound::Included(x) => *x,
            Bound::Excluded(x) => x.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let mut out = Vec::new();
        for (&index, _) in inner
            .locations
            .range((Bound::Included(start), range.end_bound().cloned()))
        {
            if Some(index) <= purged {
                continue;
            }
            match inner.read_entry(index)? {
                Some(e) => out.push(e),
                None => break,
            }
        }
        Ok(out)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.lock()?.meta.vote)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let inner = self.lock()?;
        let last_purged = inner.meta.last_purged;
        let last = match (&inner.last_log_id, &last_purged) {
            (Some(l), Some(p)) if l.index > p.index => Some(*l),
            (Some(_), Some(p)) => Some(*p),
            (Some(l), None) => Some(*l),
            (None, p) => *p,
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let mut inner = self.lock()?;
        inner.meta.vote = Some(*vote);
        inner.write_meta()
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // Kept in memory only: the state machine (SQLite) records what it
        // applied, and a restarted node re-learns the commit from the leader.
        let mut inner = self.lock()?;
        inner.meta.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.lock()?.meta.committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut inner = self.lock()?;
        let mut buf = Vec::new();
        let mut pending: Vec<Pending> = Vec::new();
        let (mut seg_first, seg) = inner.active()?;
        let mut seg_len = seg.len;
        let mut appended: Vec<Entry> = Vec::new();
        for entry in entries {
            self.note_incarnations(std::iter::once(&entry));
            let index = entry.index();
            if seg_len + buf.len() as u64 > inner.segment_bytes {
                // Rotate: the old segment gets what it holds and is made
                // durable before the new one starts.
                inner
                    .write_pending(seg_first, &buf, pending.drain(..))?
                    .sync_data()?;
                inner.active()?.1.seal()?;
                buf.clear();
                inner.create_segment(index)?;
                seg_first = index;
                seg_len = 0;
            }
            let body = bincode::serialize(&entry).map_err(io::Error::other)?;
            let len =
                u32::try_from(body.len()).map_err(|_| invalid("log entry larger than 4 GiB"))?;
            let offset = seg_len + buf.len() as u64;
            buf.extend_from_slice(&len.to_le_bytes());
            buf.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
            buf.extend_from_slice(&body);
            pending.push(Pending {
                index,
                offset,
                len,
                log_id: entry.log_id(),
            });
            appended.push(entry);
        }
        let file = inner.write_pending(seg_first, &buf, pending.into_iter())?;
        for entry in appended {
            inner.recent.insert(entry.index(), entry);
        }
        while inner.recent.len() > RECENT_ENTRIES {
            inner.recent.pop_first();
        }
        drop(inner);
        self.syncer
            .send(SyncJob {
                file,
                done: callback,
            })
            .map_err(|_| io::Error::other("log sync thread has stopped"))
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let mut inner = self.lock()?;
        let keep_until = last_log_id.as_ref().map(|l| l.index);
        let first_dropped = keep_until.map(|i| i + 1).unwrap_or(0);
        let Some(loc) = inner.locations.get(&first_dropped).copied() else {
            return Ok(());
        };
        // Later segments go entirely; the one holding the first dropped record is cut.
        let later: Vec<u64> = inner
            .segments
            .range(loc.segment + 1..)
            .map(|(k, _)| *k)
            .collect();
        for first in later {
            inner.segments.remove(&first);
            fs::remove_file(segment_path(&inner.dir, first))?;
        }
        if let Some(seg) = inner.segments.get_mut(&loc.segment) {
            seg.file.set_len(loc.offset)?;
            seg.file.sync_all()?;
            seg.len = loc.offset;
            seg.allocated = loc.offset;
        }
        let _ = inner.locations.split_off(&first_dropped);
        let _ = inner.recent.split_off(&first_dropped);
        inner.last_log_id = match keep_until {
            Some(i) if inner.locations.contains_key(&i) => last_log_id,
            _ => inner.meta.last_purged,
        };
        if inner.segments.is_empty() {
            inner.create_segment(first_dropped)?;
        }
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let mut inner = self.lock()?;
        inner.meta.last_purged = Some(log_id);
        inner.write_meta()?;
        // Delete whole segments whose every record is purged, never the active one.
        let firsts: Vec<u64> = inner.segments.keys().copied().collect();
        for pair in firsts.windows(2) {
            let (first, next_first) = (pair[0], pair[1]);
            if next_first <= log_id.index + 1 {
                inner.segments.remove(&first);
                fs::remove_file(segment_path(&inner.dir, first))?;
            }
        }
        {
            let keep = inner.locations.split_off(&(log_id.index + 1));
            inner.locations = keep;
            let keep = inner.recent.split_off(&(log_id.index + 1));
            inner.recent = keep;
        };
        if inner.locations.is_empty() {
            // Everything is purged, possibly past our last entry (a snapshot
            // installed by SST): the next entry must start a segment of its
            // own, or it would follow older records with a gap in the
            // indexes, which opening the log refuses as a hole. The new
            // segment exists before the old ones go, so a crash in between
            // leaves a log that still opens.
            let next = log_id.index + 1;
            let old: Vec<u64> = inner.segments.keys().copied().collect();
            if old != [next] {
                inner.create_segment(next)?;
                for first in old.into_iter().filter(|f| *f != next) {
                    inner.segments.remove(&first);
                    fs::remove_file(segment_path(&inner.dir, first))?;
                }
            }
        }
        if inner.last_log_id.as_ref().map(|l| l.index) < Some(log_id.index) {
            inner.last_log_id = Some(log_id);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use openraft::entry::RaftEntry as _;
    use openraft::storage::RaftLogStorage as _;

    use super::*;
    use crate::order::types::Request;

    fn entry(term: u64, index: u64) -> Entry {
        use openraft::vote::RaftLeaderIdExt;
        let leader =
            <openraft::alias::LeaderIdOf<TypeConfig> as RaftLeaderIdExt>::new_committed(term, 1);
        let log_id = LogId::new(leader, index);
        Entry::new_normal(
            log_id,
            Request::Bootstrap {
                state_uuid: uuid::Uuid::nil(),
                incarnation: index,
                cert_window: 1000,
            },
        )
    }

    async fn append(store: &mut LogStore, entries: Vec<Entry>) {
        use openraft::type_config::TypeConfigExt;
        let (tx, rx) = TypeConfig::oneshot();
        let cb = IOFlushed::<TypeConfig>::signal(tx);
        store.append(entries, cb).await.expect("append");
        rx.await.expect("flushed").expect("fsync ok");
    }

    /// After SST, openraft purges up to the snapshot, past the last entry
    /// this log holds; entries appended next must still open after a restart.
    #[tokio::test]
    async fn a_purge_past_the_last_entry_leaves_no_hole() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = LogStore::open(dir.path()).unwrap();
            append(&mut store, (0..5).map(|i| entry(1, i)).collect()).await;
            store.purge(entry(2, 100).log_id).await.unwrap();
            append(&mut store, (101..105).map(|i| entry(2, i)).collect()).await;
        }
        let mut store = LogStore::open(dir.path()).expect("a log without a hole opens");
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id.map(|l| l.index), Some(104));
        assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(100));
        let entries = {
            use openraft::storage::RaftLogReader;
            store.try_get_log_entries(101..105).await.unwrap()
        };
        assert_eq!(entries.len(), 4);
    }

    /// A write that failed half-way (a full disk) leaves half a record
    /// after the last whole one while memory indexes more: a reload trusts
    /// the file, cuts the half record, and appending goes on from there.
    #[tokio::test]
    async fn reload_trusts_the_files_and_cuts_a_half_written_append() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(dir.path()).unwrap();
        append(&mut store, (0..5).map(|i| entry(1, i)).collect()).await;
        let seg = segment_path(dir.path(), 0);
        let before = record_bytes(&seg).len();
        append(&mut store, (5..8).map(|i| entry(1, i)).collect()).await;
        let after = record_bytes(&seg);
        // What reached the disk of the second append: record 5, half of 6.
        let record = (after.len() - before) / 3;
        fs::write(&seg, &after[..before + record + record / 2]).unwrap();
        let clone = store.clone();
        clone.reload().unwrap();
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id.map(|l| l.index), Some(5));
        assert_eq!(fs::read(&seg).unwrap().len(), before + record);
        assert!(store.try_get_log_entries(6..8).await.unwrap().is_empty());
        append(&mut store, vec![entry(2, 6)]).await;
        drop(store);
        drop(clone);
        assert_eq!(indexes(dir.path()).await, (0..7).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn entries_survive_reopen_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = LogStore::open(dir.path()).unwrap();
            append(&mut store, (0..10).map(|i| entry(1, i)).collect()).await;
        }
        // A crash in the middle of writing record 10: half its bytes reach the disk.
        let seg = segment_path(dir.path(), 0);
        let whole = record_bytes(&seg);
        {
            let mut store = LogStore::open(dir.path()).unwrap();
            append(&mut store, vec![entry(1, 10)]).await;
        }
        let with_tail = record_bytes(&seg);
        let torn = &with_tail[..whole.len() + (with_tail.len() - whole.len()) / 2];
        fs::write(&seg, torn).unwrap();

        let mut store = LogStore::open(dir.path()).unwrap();
        let state = store.get_log_state().await.unwrap();
        assert_eq!(
            state.last_log_id.map(|l| l.index),
            Some(9),
            "the torn record must be dropped"
        );
        assert_eq!(
            fs::read(&seg).unwrap().len(),
            whole.len(),
            "the file is cut back to the last whole record"
        );
        let got = store.try_get_log_entries(0..10).await.unwrap();
        assert_eq!(
            got.iter().map(|e| e.index()).collect::<Vec<_>>(),
            (0..10).collect::<Vec<_>>()
        );
        // Appending after the repair continues the log.
        append(&mut store, vec![entry(2, 10)]).await;
        assert_eq!(
            store
                .get_log_state()
                .await
                .unwrap()
                .last_log_id
                .map(|l| l.index),
            Some(10)
        );
    }

    #[tokio::test]
    async fn segments_rotate_and_purge_removes_whole_old_ones() {
        let dir = tempfile::tempdir().unwrap();
        let segments = |d: &Path| {
            fs::read_dir(d)
                .unwrap()
                .filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .ends_with(".seg")
                })
                .count()
        };
        {
            let mut store = LogStore::open_with_segment_bytes(dir.path(), 200).unwrap();
            // One batch that spans several segments, then single appends.
            append(&mut store, (0..10).map(|i| entry(1, i)).collect()).await;
            for i in 10..20 {
                append(&mut store, vec![entry(1, i)]).await;
            }
            assert!(segments(dir.path()) > 3, "small segments must rotate");
            store.purge(entry(1, 14).log_id()).await.unwrap();
        }
        let mut store = LogStore::open_with_segment_bytes(dir.path(), 200).unwrap();
        let got = store.try_get_log_entries(0..100).await.unwrap();
        assert_eq!(
            got.iter().map(|e| e.index()).collect::<Vec<_>>(),
            (15..20).collect::<Vec<_>>()
        );
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id.map(|l| l.index), Some(19));
        // Every remaining segment still holds a record past the purge point or is the active one.
        assert!(
            segments(dir.path()) <= 6,
            "fully purged segments are deleted"
        );
    }

    #[tokio::test]
    async fn damage_before_the_tail_is_an_error_not_a_repair() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = LogStore::open(dir.path()).unwrap();
            append(&mut store, (0..5).map(|i| entry(1, i)).collect()).await;
        }
        // A second segment exists, so damage in the first is not a torn tail.
        let seg = segment_path(dir.path(), 0);
        let mut bytes = fs::read(&seg).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        fs::write(&seg, &bytes).unwrap();
        fs::write(segment_path(dir.path(), 5), b"").unwrap();
        let err = LogStore::open(dir.path())
            .err()
            .expect("must refuse a damaged log");
        assert!(err.to_string().contains("damaged in the middle"), "{err}");
    }

    #[tokio::test]
    async fn truncate_and_purge_keep_the_log_consecutive() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(dir.path()).unwrap();
        append(&mut store, (0..20).map(|i| entry(1, i)).collect()).await;
        store
            .truncate_after(Some(entry(1, 14).log_id()))
            .await
            .unwrap();
        append(&mut store, vec![entry(2, 15)]).await;
        store.purge(entry(1, 4).log_id()).await.unwrap();
        drop(store);
        let mut store = LogStore::open(dir.path()).unwrap();
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(4));
        assert_eq!(state.last_log_id.map(|l| l.index), Some(15));
        assert_eq!(
            state.last_log_id.map(|l| l.leader_id.term),
            Some(2),
            "the truncated entry was replaced"
        );
        let got = store.try_get_log_entries(0..100).await.unwrap();
        assert_eq!(got.first().map(|e| e.index()), Some(5));
        assert_eq!(got.len(), 11);
    }

    #[tokio::test]
    async fn a_zeroed_tail_is_space_not_damage() {
        // After a power cut the file system may have extended the file
        // without its data (zeroes where the last records were to be), and
        // the reserve ahead of the writes is zeroes too.
        let dir = tempfile::tempdir().unwrap();
        let seg = segment_path(dir.path(), 0);
        {
            let mut store = LogStore::open(dir.path()).unwrap();
            append(&mut store, (0..10).map(|i| entry(1, i)).collect()).await;
        }
        let mut zeroed = fs::read(&seg).unwrap();
        let records = zeroed.iter().rposition(|b| *b != 0).unwrap() + 1;
        zeroed.truncate(records);
        zeroed.extend_from_slice(&[0u8; 4096]);
        fs::write(&seg, &zeroed).unwrap();
        {
            let mut store = LogStore::open(dir.path()).expect("zeroes after the records");
            assert_eq!(store.try_get_log_entries(0..100).await.unwrap().len(), 10);
            // The next record follows the last one, not the zeroes.
            append(&mut store, vec![entry(1, 10)]).await;
        }
        assert_eq!(indexes(dir.path()).await, (0..11).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn the_active_segment_is_reserved_ahead_and_sealed_segments_are_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let size = |first: u64| fs::metadata(segment_path(dir.path(), first)).unwrap().len();
        let mut store = LogStore::open_with_segment_bytes(dir.path(), 600).unwrap();
        append(&mut store, vec![entry(1, 0)]).await;
        assert_eq!(
            size(0),
            PREALLOCATE_BYTES,
            "the active segment has a reserve"
        );
        for i in 1..20 {
            append(&mut store, vec![entry(1, i)]).await;
        }
        let firsts: Vec<u64> = store.lock().unwrap().segments.keys().copied().collect();
        assert!(firsts.len() > 2, "small segments must rotate: {firsts:?}");
        for (first, next) in firsts.iter().zip(firsts.iter().skip(1)) {
            let inner = store.lock().unwrap();
            let seg = &inner.segments[first];
            assert_eq!(
                size(*first),
                seg.len,
                "segment {first} (before {next}) is trimmed"
            );
        }
        let last = *firsts.last().unwrap();
        assert_eq!(size(last), PREALLOCATE_BYTES);
        drop(store);
        assert_eq!(indexes(dir.path()).await, (0..20).collect::<Vec<_>>());
    }

    /// The log in `dir`, opened afresh: the indexes it holds.
    async fn indexes(dir: &Path) -> Vec<u64> {
        let mut store = LogStore::open(dir).unwrap();
        let got = store.try_get_log_entries(0..u64::MAX).await.unwrap();
        got.iter().map(|e| e.index()).collect()
    }

    /// A segment's bytes up to the end of its last record (without the reserve).
    fn record_bytes(seg: &Path) -> Vec<u8> {
        let mut bytes = fs::read(seg).unwrap();
        let mut at = 0usize;
        while at + 4 <= bytes.len() {
            let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            if len == 0 {
                break;
            }
            at += HEADER_BYTES as usize + len;
        }
        bytes.truncate(at);
        bytes
    }

    fn ten_records() -> (tempfile::TempDir, Vec<u8>, Vec<u64>) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        rt.block_on(async {
            let mut store = LogStore::open(dir.path()).unwrap();
            append(&mut store, (0..10).map(|i| entry(1, i)).collect()).await;
        });
        let seg = segment_path(dir.path(), 0);
        // The damage is done to the records, not to the reserve after them.
        let bytes = record_bytes(&seg);
        fs::write(&seg, &bytes).unwrap();
        // Where each record ends: the only places a repair may cut to.
        let mut ends = vec![0u64];
        let mut at = 0usize;
        while at < bytes.len() {
            let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            at += HEADER_BYTES as usize + len;
            ends.push(at as u64);
        }
        (dir, bytes, ends)
    }

    /// Opens the log in `dir` and reads all of it; the indexes it holds.
    fn reopen(dir: &Path) -> io::Result<Vec<u64>> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut store = LogStore::open(dir)?;
            let got = store.try_get_log_entries(0..u64::MAX).await?;
            Ok(got.iter().map(|e| e.index()).collect())
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]

        /// Whatever a crash leaves after the last whole record (garbage,
        /// a huge length, a partial header) is cut; every whole record stays.
        #[test]
        fn garbage_after_the_tail_is_cut(
            tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 1..300),
            claim in proptest::prelude::any::<u32>(),
            with_claim in proptest::prelude::any::<bool>(),
        ) {
            let (dir, bytes, _) = ten_records();
            let mut damaged = bytes.clone();
            if with_claim {
                damaged.extend_from_slice(&claim.to_le_bytes());
            }
            damaged.extend_from_slice(&tail);
            let seg = segment_path(dir.path(), 0);
            fs::write(&seg, &damaged).unwrap();
            let got = reopen(dir.path()).unwrap();
            proptest::prop_assert_eq!(got, (0..10).collect::<Vec<_>>());
            // Zeroes after the records are kept as a reserve; anything else is cut.
            let now = fs::read(&seg).unwrap();
            let kept = if damaged[bytes.len()..].iter().all(|b| *b == 0) { &damaged } else { &bytes };
            proptest::prop_assert_eq!(&now, kept);
        }

        /// A log cut anywhere opens with exactly the records that are whole.
        #[test]
        fn a_cut_anywhere_keeps_the_whole_records(cut in proptest::prelude::any::<proptest::sample::Index>()) {
            let (dir, bytes, ends) = ten_records();
            let n = cut.index(bytes.len());
            fs::write(segment_path(dir.path(), 0), &bytes[..n]).unwrap();
            let whole = ends.iter().filter(|&&e| e > 0 && e <= n as u64).count() as u64;
            let got = reopen(dir.path()).unwrap();
            proptest::prop_assert_eq!(got, (0..whole).collect::<Vec<_>>());
        }

        /// Flipped bits anywhere in the last segment: the log opens with a
        /// consecutive prefix of the records (cut at the first damage), or
        /// refuses with an error; never a panic, never a record out of order.
        #[test]
        fn flipped_bits_give_a_prefix_or_an_error(
            flips in proptest::collection::vec((proptest::prelude::any::<proptest::sample::Index>(), 1u8..=255), 1..4),
        ) {
            let (dir, mut bytes, ends) = ten_records();
            let first = flips.iter().map(|(at, _)| at.index(bytes.len())).min().unwrap_or(0);
            for (at, mask) in &flips {
                let i = at.index(bytes.len());
                bytes[i] ^= mask;
            }
            fs::write(segment_path(dir.path(), 0), &bytes).unwrap();
            if let Ok(got) = reopen(dir.path()) {
                // Records wholly before the first flip survive.
                let intact = ends.iter().filter(|&&e| e > 0 && e <= first as u64).count();
                proptest::prop_assert!(got.len() >= intact, "{:?} lost records before byte {}", got, first);
                proptest::prop_assert_eq!(got.clone(), (0..got.len() as u64).collect::<Vec<_>>());
            }
        }
    }
}
