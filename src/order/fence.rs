//! Fencing of older incarnations (DESIGN.md §4).
//!
//! A forced bootstrap starts a new *incarnation* of the cluster from one
//! node's data. Nodes of the older incarnation may in fact still be alive
//! and hold write-sets the new one lacks; Raft alone would let them merge
//! (or, worse, overwrite each other's committed entries when terms cross).
//! So every Raft message carries the sender's [`Stamp`], and the receiver
//! compares it with its own before openraft sees the message:
//!
//! - same state UUID, same incarnation: normal traffic;
//! - a nil UUID on either side: a joiner that has no data yet, let through;
//! - another state UUID: another cluster, refused (both keep serving);
//! - an older incarnation meets a newer one: the older node is *fenced*: it
//!   stops its Raft, refuses clients, says so in status and log, and on its
//!   next start saves what it holds past the fork point into `data_dir` and
//!   rejoins the new incarnation as a new, empty member (SST).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::log_store::{write_file_durably, LogStore};
use super::types::{Entry, Request};
use crate::store::Store;

/// File in `data_dir` that marks a fenced node until its next start.
pub const MARKER_FILE: &str = "fenced.json";
/// Directories named `fenced-*` in `data_dir` hold what a fenced node saved.
pub const SAVED_DIR_PREFIX: &str = "fenced-";

/// Who the sender of a message is, in cluster history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    pub state_uuid: Uuid,
    pub incarnation: u64,
    /// The log index after which this incarnation's history may differ from
    /// the previous one's (the forced node's last applied entry); `None`
    /// before the first forced bootstrap.
    pub fork_index: Option<u64>,
}

/// What a fenced node is told, and keeps in its marker file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FenceNotice {
    pub state_uuid: Uuid,
    /// The newer incarnation.
    pub incarnation: u64,
    pub fork_index: Option<u64>,
    /// The node that told us (name and replication address), for the operator.
    pub by_node: String,
    pub by_addr: String,
}

impl std::fmt::Display for FenceNotice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}) runs incarnation {} of cluster {}",
            self.by_node, self.by_addr, self.incarnation, self.state_uuid
        )
    }
}

/// The answer to a stamped Raft message.
#[derive(Debug, Serialize, Deserialize)]
pub enum Reply<T> {
    Ok(T),
    /// The caller is of an older incarnation than the receiver.
    Fenced(FenceNotice),
    /// Not for this node (another cluster, or the receiver is fenced).
    Refused(String),
}

/// What the receiver decides about a stamped message.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    /// The caller is older: tell it.
    FenceCaller,
    /// The receiver is older: it is catching up from the newer incarnation.
    FenceSelf,
    /// Two different clusters.
    OtherCluster,
}

/// The pure rule, kept apart so it can be tested exhaustively.
pub fn judge(mine: &Stamp, theirs: &Stamp) -> Verdict {
    if mine.state_uuid.is_nil() || theirs.state_uuid.is_nil() {
        return Verdict::Accept;
    }
    if mine.state_uuid != theirs.state_uuid {
        return Verdict::OtherCluster;
    }
    match theirs.incarnation.cmp(&mine.incarnation) {
        std::cmp::Ordering::Equal => Verdict::Accept,
        std::cmp::Ordering::Less => Verdict::FenceCaller,
        std::cmp::Ordering::Greater => Verdict::FenceSelf,
    }
}

/// The node's fence state, shared by the Raft network, the RPC server and
/// the sequencer.
pub struct Fence {
    store: Arc<Store>,
    log: Option<LogStore>,
    node_name: String,
    repl_addr: String,
    data_dir: PathBuf,
    fork_index: Mutex<Option<u64>>,
    fenced: Mutex<Option<FenceNotice>>,
    /// `fenced.is_some()`, read on every client request without a lock.
    is_fenced: std::sync::atomic::AtomicBool,
    /// Wakes the sequencer, which stops Raft once fenced.
    changed: tokio::sync::watch::Sender<bool>,
}

impl Fence {
    pub fn new(
        store: Arc<Store>,
        log: Option<LogStore>,
        node_name: &str,
        repl_addr: &str,
        data_dir: &Path,
        fork_index: Option<u64>,
    ) -> Arc<Fence> {
        let fenced = read_marker(data_dir).ok().flatten();
        let (changed, _) = tokio::sync::watch::channel(fenced.is_some());
        let is_fenced = std::sync::atomic::AtomicBool::new(fenced.is_some());
        Arc::new(Fence {
            store,
            log,
            node_name: node_name.to_string(),
            repl_addr: repl_addr.to_string(),
            data_dir: data_dir.to_path_buf(),
            fork_index: Mutex::new(fork_index),
            fenced: Mutex::new(fenced),
            is_fenced,
            changed,
        })
    }

    /// This node's place in history: the applied incarnation, or a newer
    /// one its log already holds (a member still applying it is of it).
    pub fn stamp(&self) -> Stamp {
        let p = self.store.position();
        let mut stamp = Stamp {
            state_uuid: p.state_uuid,
            incarnation: p.incarnation,
            fork_index: self.fork_index.lock().map(|f| *f).unwrap_or(None),
        };
        if let Some((inc, fork)) = self.log.as_ref().and_then(|l| l.appended_incarnation()) {
            if inc > stamp.incarnation && !stamp.state_uuid.is_nil() {
                stamp.incarnation = inc;
                stamp.fork_index = fork;
            }
        }
        stamp
    }

    pub fn set_fork_index(&self, fork: Option<u64>) {
        if let Ok(mut f) = self.fork_index.lock() {
            *f = fork;
        }
    }

    pub fn is_fenced(&self) -> bool {
        self.is_fenced.load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn fenced(&self) -> Option<FenceNotice> {
        self.fenced.lock().ok().and_then(|f| f.clone())
    }

    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<bool> {
        self.changed.subscribe()
    }

    fn notice_from_me(&self, mine: &Stamp) -> FenceNotice {
        FenceNotice {
            state_uuid: mine.state_uuid,
            incarnation: mine.incarnation,
            fork_index: mine.fork_index,
            by_node: self.node_name.clone(),
            by_addr: self.repl_addr.clone(),
        }
    }

    /// Judge an incoming message. `Ok(())` lets it through to Raft.
    /// `member`: the caller's node id is in this node's current membership,
    /// so it joined this incarnation (ids are never reused, and a forced
    /// bootstrap leaves only the forced node in the membership); its stamp
    /// may lag while it replays the history and it is not fenced.
    pub fn admit<T>(&self, theirs: &Stamp, caller: &str, member: bool) -> Result<(), Reply<T>> {
        if let Some(n) = self.fenced() {
            return Err(Reply::Refused(format!(
                "{} is fenced ({n}); it takes no part in the cluster until restarted",
                self.node_name
            )));
        }
        let mine = self.stamp();
        match judge(&mine, theirs) {
            Verdict::Accept => Ok(()),
            Verdict::FenceCaller if member => Ok(()),
            Verdict::FenceCaller => {
                tracing::warn!(
                    peer = caller,
                    "fence: {caller} is of incarnation {} of this cluster, this node of incarnation {}; \
                     told it to stop",
                    theirs.incarnation,
                    mine.incarnation
                );
                Err(Reply::Fenced(self.notice_from_me(&mine)))
            }
            // A newer node only writes to members of its own membership:
            // this node is a joiner replaying the history, which passes
            // through older incarnations. Older members that meet the new
            // incarnation learn of the fence from its answers instead.
            Verdict::FenceSelf => Ok(()),
            Verdict::OtherCluster => {
                tracing::warn!(
                    peer = caller,
                    "refused a Raft message from {caller}: it belongs to cluster state {}, this node to {}; \
                     two different clusters never merge (check the peers lists)",
                    theirs.state_uuid,
                    mine.state_uuid
                );
                Err(Reply::Refused(format!(
                    "{} belongs to cluster state {}, not {}",
                    self.node_name, mine.state_uuid, theirs.state_uuid
                )))
            }
        }
    }

    /// This node is of an older incarnation: stop taking part, durably.
    pub fn fence_self(&self, notice: FenceNotice) {
        let Ok(mut fenced) = self.fenced.lock() else {
            return;
        };
        if fenced.is_some() {
            return;
        }
        let position = self.store.position();
        tracing::error!(
            "FENCED: this node holds incarnation {} of cluster {} (seqno {}), but {notice}, started by a \
             forced bootstrap. This node stops serving and never merges silently. Run `quorate \
             --restart-node`: it saves the write-sets the new incarnation may lack into {}/{}* and \
             rejoins by SST.",
            position.incarnation,
            position.state_uuid,
            position.seqno,
            self.data_dir.display(),
            SAVED_DIR_PREFIX
        );
        if let Err(e) = write_marker(&self.data_dir, &notice) {
            tracing::error!("cannot write the fence marker {MARKER_FILE}: {e}");
        }
        *fenced = Some(notice);
        self.is_fenced
            .store(true, std::sync::atomic::Ordering::Release);
        drop(fenced);
        let _ = self.changed.send(true);
    }
}

pub fn read_marker(data_dir: &Path) -> std::io::Result<Option<FenceNotice>> {
    let path = data_dir.join(MARKER_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{} is damaged ({e}); this node was fenced: move its data_dir aside and let it \
                     rejoin empty",
                    path.display()
                ),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

pub fn write_marker(data_dir: &Path, notice: &FenceNotice) -> std::io::Result<()> {
    let body = serde_json::to_vec_pretty(notice).map_err(std::io::Error::other)?;
    write_file_durably(&data_dir.join(MARKER_FILE), &body)
}

/// The newest directory a fence recovery saved into, if the operator kept it.
pub fn newest_saved_dir(data_dir: &Path) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(data_dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(SAVED_DIR_PREFIX)
        })
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs.pop()
}

/// What a fence recovery kept.
#[derive(Debug)]
pub struct Saved {
    pub dir: PathBuf,
    pub writesets: usize,
    pub writesets_file: PathBuf,
}

/// Move what makes this node's data (database, log with its node id,
/// snapshots, an arbitrator's state) from `data_dir` into `dir`, so the node
/// starts empty with a new node id and receives the cluster's data by SST.
pub fn move_node_data(data_dir: &Path, dir: &Path) -> std::io::Result<()> {
    for name in [
        "db.sqlite",
        "db.sqlite-wal",
        "db.sqlite-shm",
        "log",
        "snapshots",
        super::arbitrator::STATE_FILE,
    ] {
        let from = data_dir.join(name);
        if from.exists() {
            std::fs::rename(&from, dir.join(name))?;
        }
    }
    Ok(())
}

/// A fenced node's restart: keep everything it had under
/// `data_dir/fenced-<incarnation>-<time>/` (the database, the log, the
/// snapshots, and the write-sets past the fork point as JSON lines), so
/// that it starts empty, with a new node id, and joins the new incarnation
/// by SST. Nothing is deleted.
pub async fn save_and_reset(data_dir: &Path, notice: &FenceNotice) -> std::io::Result<Saved> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let dir = data_dir.join(format!(
        "{SAVED_DIR_PREFIX}{}-{stamp}",
        notice.incarnation.saturating_sub(1)
    ));
    std::fs::create_dir_all(&dir)?;
    let writesets_file = dir.join("writesets-after-fork.jsonl");
    let mut count = 0;
    let log_dir = data_dir.join("log");
    if log_dir.exists() {
        let mut log = LogStore::open(&log_dir)?;
        let from = notice.fork_index.map(|f| f + 1).unwrap_or(0);
        let entries: Vec<Entry> = {
            use openraft::storage::RaftLogReader;
            log.try_get_log_entries(from..).await?
        };
        let mut out = String::new();
        for e in &entries {
            if let openraft::EntryPayload::Normal(Request::WriteSet(ws)) = &e.payload {
                count += 1;
                let changes = match &ws.payload {
                    crate::writeset::Payload::Changeset(b) => {
                        match crate::store::describe_changeset(b) {
                            Ok(rows) => serde_json::json!({ "rows": rows }),
                            Err(e) => serde_json::json!({ "error": e }),
                        }
                    }
                    crate::writeset::Payload::Statements(s) => {
                        serde_json::json!({ "statements": s })
                    }
                };
                // The raw write-set too: the description is for people, the
                // bytes are what can be re-applied exactly.
                let line = serde_json::json!({
                    "log_index": e.log_id.index,
                    "origin": ws.origin,
                    "trx_id": ws.trx_id,
                    "changes": changes,
                    "writeset": ws,
                });
                out.push_str(&line.to_string());
                out.push('\n');
            }
        }
        write_file_durably(&writesets_file, out.as_bytes())?;
    }
    move_node_data(data_dir, &dir)?;
    std::fs::write(
        dir.join("README"),
        format!(
            "This node was fenced: {notice}.\n\
             Everything it held when it restarted is kept here: db.sqlite (its database),\n\
             log/ (its write-set log) and writesets-after-fork.jsonl ({count} write-sets after log\n\
             index {}, which the new incarnation may lack; some may also be in it).\n\
             Compare and re-apply what is needed, then delete this directory.\n",
            notice
                .fork_index
                .map(|f| f.to_string())
                .unwrap_or_else(|| "0".into())
        ),
    )?;
    std::fs::remove_file(data_dir.join(MARKER_FILE))?;
    Ok(Saved {
        dir,
        writesets: count,
        writesets_file,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(uuid: u128, inc: u64) -> Stamp {
        Stamp {
            state_uuid: Uuid::from_u128(uuid),
            incarnation: inc,
            fork_index: None,
        }
    }

    #[test]
    fn the_fence_rule() {
        assert_eq!(judge(&s(1, 1), &s(1, 1)), Verdict::Accept);
        assert_eq!(judge(&s(0, 0), &s(1, 5)), Verdict::Accept);
        assert_eq!(judge(&s(1, 5), &s(0, 0)), Verdict::Accept);
        assert_eq!(judge(&s(1, 2), &s(1, 1)), Verdict::FenceCaller);
        assert_eq!(judge(&s(1, 1), &s(1, 2)), Verdict::FenceSelf);
        assert_eq!(judge(&s(1, 1), &s(2, 1)), Verdict::OtherCluster);
        assert_eq!(judge(&s(1, 1), &s(2, 9)), Verdict::OtherCluster);
    }

    #[test]
    fn a_damaged_marker_is_an_error_that_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(MARKER_FILE), b"{not json").unwrap();
        let err = read_marker(dir.path()).unwrap_err().to_string();
        assert!(err.contains("fenced.json is damaged"), "{err}");
        assert!(err.contains("rejoin empty"), "{err}");
    }
}
