//! openraft's state machine over the SQLite store: certification and apply
//! in log order, many entries per SQLite transaction (group commit).

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::{Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::types::{LogId, Request, Response, SnapshotMeta, StoredMembership, TypeConfig};
use crate::store::Store;
use crate::writeset::{ApplyOutcome, Payload, Verdict, WriteSet};

/// Entries applied per SQLite transaction at most.
const MAX_GROUP: usize = 512;
/// The largest group applied in place on the async worker (see
/// `apply_group`); a larger one goes to the blocking pool, so one worker
/// thread is never held for long. With the one worker thread of the
/// default `worker_threads`, moving every apply to the pool cost 5-14% more
/// CPU per transaction (16 clients, two A/B rounds), and 32 in place
/// instead of 8 saved another 3%.
const INLINE_GROUP: usize = 32;
/// Changeset bytes of a group applied in place at most: a few large
/// write-sets (up to `max_writeset_bytes` each) would hold the worker
/// thread, and with it heartbeats and every connection, for milliseconds.
const INLINE_BYTES: usize = 256 * 1024;

/// Whether a group may be applied on the async worker: few write-sets,
/// little data, and no statements (a schema change such as CREATE INDEX on
/// a large table runs for as long as it takes).
fn is_small(group: &[WriteSet]) -> bool {
    if group.len() > INLINE_GROUP {
        return false;
    }
    let mut bytes = 0;
    for ws in group {
        match &ws.payload {
            Payload::Changeset(changes) => bytes += changes.len(),
            Payload::Statements(_) => return false,
        }
    }
    bytes <= INLINE_BYTES
}

/// What the state machine records about Raft inside the database, in the
/// same SQLite transaction as the data it describes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RaftState {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    /// Where the current incarnation forked from the previous one (fencing).
    #[serde(default)]
    pub fork_index: Option<u64>,
}

impl RaftState {
    pub fn decode(bytes: &[u8]) -> io::Result<RaftState> {
        serde_json::from_slice(bytes).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("stored Raft state is damaged: {e}"),
            )
        })
    }
    fn encode(&self) -> io::Result<Vec<u8>> {
        serde_json::to_vec(self).map_err(io::Error::other)
    }
}

/// A consistent copy of the database, as a file.
#[derive(Debug)]
pub struct SnapshotFile {
    pub path: PathBuf,
}

/// Lets the origin of a write-set learn its verdict when its own database
/// applied it, whichever node sequenced it.
#[derive(Default)]
pub struct ApplyWaiters {
    origin: String,
    waiting: Mutex<HashMap<u64, oneshot::Sender<ApplyOutcome>>>,
    pub cert_failures: AtomicU64,
    pub applied_writesets: AtomicU64,
}

impl ApplyWaiters {
    pub fn new(origin: &str) -> ApplyWaiters {
        ApplyWaiters {
            origin: origin.to_string(),
            ..Default::default()
        }
    }

    /// Register before submitting, so the verdict cannot be missed.
    pub fn register(&self, trx_id: u64) -> oneshot::Receiver<ApplyOutcome> {
        let (tx, rx) = oneshot::channel();
        if let Ok(mut w) = self.waiting.lock() {
            w.insert(trx_id, tx);
        }
        rx
    }

    pub fn forget(&self, trx_id: u64) {
        if let Ok(mut w) = self.waiting.lock() {
            w.remove(&trx_id);
        }
    }

    fn resolve(&self, ws: &WriteSet, outcome: &ApplyOutcome) {
        if matches!(
            outcome.verdict,
            Verdict::Failed(crate::writeset::FailReason::Duplicate { .. })
        ) {
            // Its first copy already answered the client.
            return;
        }
        self.applied_writesets.fetch_add(1, Ordering::Relaxed);
        if ws.origin != self.origin {
            return;
        }
        if let Verdict::Failed(reason) = &outcome.verdict {
            if reason.is_certification_failure() {
                self.cert_failures.fetch_add(1, Ordering::Relaxed);
            }
        }
        let waiter = self
            .waiting
            .lock()
            .ok()
            .and_then(|mut w| w.remove(&ws.trx_id));
        if let Some(tx) = waiter {
            let _ = tx.send(outcome.clone());
        }
    }
}

#[derive(Clone)]
pub struct StateMachine {
    store: Arc<Store>,
    snapshot_dir: PathBuf,
    waiters: Arc<ApplyWaiters>,
    fence: Arc<super::fence::Fence>,
    /// Cached so that membership entries need no read of the database.
    state: Arc<Mutex<RaftState>>,
    /// Set on an arbitrator: where its state is saved. Its store is in
    /// memory, write-sets are dropped and snapshots carry no data.
    arbitrator: Option<PathBuf>,
}

fn blocking_err(e: tokio::task::JoinError) -> io::Error {
    io::Error::other(format!("apply task failed: {e}"))
}

fn store_err(e: crate::store::StoreError) -> io::Error {
    io::Error::other(e.to_string())
}

impl StateMachine {
    pub fn open(
        store: Arc<Store>,
        snapshot_dir: &Path,
        waiters: Arc<ApplyWaiters>,
        fence: Arc<super::fence::Fence>,
    ) -> io::Result<StateMachine> {
        fs::create_dir_all(snapshot_dir)?;
        let state = match store.raft_state().map_err(store_err)? {
            Some(bytes) => RaftState::decode(&bytes)?,
            None => RaftState::default(),
        };
        fence.set_fork_index(state.fork_index);
        Ok(StateMachine {
            store,
            snapshot_dir: snapshot_dir.to_path_buf(),
            waiters,
            fence,
            state: Arc::new(Mutex::new(state)),
            arbitrator: None,
        })
    }

    /// The arbitrator's state machine (see `order::arbitrator`), saving its
    /// state to `state_file`.
    pub fn for_arbitrator(mut self, state_file: PathBuf) -> StateMachine {
        self.arbitrator = Some(state_file);
        self
    }

    /// After an arbitrator applied or installed something: keep it across restarts.
    async fn save_arbitrator_state(&self, st: &RaftState) -> io::Result<()> {
        let Some(path) = self.arbitrator.clone() else {
            return Ok(());
        };
        let state = super::arbitrator::ArbitratorState::of(&self.store, st.clone());
        tokio::task::spawn_blocking(move || state.save(&path))
            .await
            .map_err(blocking_err)?
    }

    fn state(&self) -> io::Result<RaftState> {
        self.state
            .lock()
            .map(|s| s.clone())
            .map_err(|_| io::Error::other("state machine lock poisoned"))
    }

    fn set_state(&self, st: RaftState) -> io::Result<()> {
        *self
            .state
            .lock()
            .map_err(|_| io::Error::other("state machine lock poisoned"))? = st;
        Ok(())
    }

    /// Apply one group: write-sets in one SQLite transaction, then answer.
    async fn apply_group(&self, group: Vec<EntryResponder<TypeConfig>>) -> io::Result<()> {
        let mut st = self.state()?;
        let mut writesets: Vec<WriteSet> = Vec::new();
        let mut identity: Option<(uuid::Uuid, u64, i64)> = None;
        let mut removal: Option<(u64, String)> = None;
        for (entry, _) in &group {
            st.last_applied = Some(entry.log_id);
            match &entry.payload {
                // An arbitrator keeps no data: it only notes how far it got.
                EntryPayload::Normal(Request::WriteSet(_)) if self.arbitrator.is_some() => {}
                EntryPayload::Normal(Request::WriteSet(ws)) => writesets.push(ws.clone()),
                EntryPayload::Normal(Request::Bootstrap {
                    state_uuid,
                    incarnation,
                    cert_window,
                }) => {
                    identity = Some((*state_uuid, *incarnation, *cert_window));
                }
                EntryPayload::Normal(Request::NewIncarnation {
                    state_uuid,
                    incarnation,
                    cert_window,
                    fork_index,
                }) => {
                    identity = Some((*state_uuid, *incarnation, *cert_window));
                    st.fork_index = Some(*fork_index);
                }
                EntryPayload::Normal(Request::MemberRemoved { node_id, record }) => {
                    removal = Some((*node_id, record.clone()));
                }
                EntryPayload::Membership(m) => {
                    st.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                }
                EntryPayload::Blank => {}
            }
        }
        let raft_state = st.encode()?;
        // A small group of write-sets is applied here when the writer is
        // free: the hop to the blocking pool and back cost as much as the
        // apply on a small machine, and it is on every commit's path.
        let inline = if identity.is_none()
            && removal.is_none()
            && !writesets.is_empty()
            && is_small(&writesets)
        {
            self.store.try_apply_batch(&writesets, &raft_state)
        } else {
            None
        };
        let store = self.store.clone();
        let outcomes = match inline {
            Some(outcomes) => outcomes,
            None => tokio::task::spawn_blocking(
                move || -> Result<Vec<ApplyOutcome>, crate::store::StoreError> {
                    if let Some((uuid, incarnation, cert_window)) = identity {
                        // A bootstrap entry starts a group of its own (see apply()).
                        store.set_identity(uuid, incarnation, Some(cert_window), &raft_state)?;
                        return Ok(Vec::new());
                    }
                    if let Some((node_id, record)) = removal {
                        // So is a removal (see apply()).
                        store.record_removed(node_id, &record, &raft_state)?;
                        return Ok(Vec::new());
                    }
                    if writesets.is_empty() {
                        store.set_raft_state(&raft_state)?;
                        return Ok(Vec::new());
                    }
                    store.apply_batch(&writesets, &raft_state)
                },
            )
            .await
            .map_err(blocking_err)?,
        }
        .map_err(store_err)?;
        if identity.is_some() {
            self.fence.set_fork_index(st.fork_index);
        }
        self.save_arbitrator_state(&st).await?;
        self.set_state(st)?;

        let mut outcomes = outcomes.into_iter();
        for (entry, responder) in group {
            let response = match &entry.payload {
                // Never awaited: an arbitrator orders nothing itself.
                EntryPayload::Normal(Request::WriteSet(_)) if self.arbitrator.is_some() => {
                    Response::Done
                }
                EntryPayload::Normal(Request::WriteSet(ws)) => match outcomes.next() {
                    Some(outcome) => {
                        self.waiters.resolve(ws, &outcome);
                        Response::WriteSet(outcome)
                    }
                    None => {
                        return Err(io::Error::other(
                            "store returned fewer outcomes than write-sets",
                        ))
                    }
                },
                _ => Response::Done,
            };
            if let Some(r) = responder {
                r.send(response);
            }
        }
        Ok(())
    }

    fn snapshot_paths(&self, index: u64) -> (PathBuf, PathBuf) {
        (
            self.snapshot_dir
                .join(format!("snapshot-{index:020}.sqlite")),
            self.snapshot_dir.join(format!("snapshot-{index:020}.meta")),
        )
    }

    /// The newest complete snapshot: its meta file is written last.
    fn newest_snapshot(&self) -> io::Result<Option<(SnapshotMeta, PathBuf)>> {
        let mut metas: Vec<PathBuf> = fs::read_dir(&self.snapshot_dir)?
            .filter_map(|d| d.ok().map(|d| d.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "meta"))
            .collect();
        metas.sort();
        let Some(meta_path) = metas.pop() else {
            return Ok(None);
        };
        let meta: SnapshotMeta = serde_json::from_slice(&fs::read(&meta_path)?).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", meta_path.display()),
            )
        })?;
        Ok(Some((meta, meta_path.with_extension("sqlite"))))
    }

    /// An arbitrator's snapshot, for log compaction only: how far it applied
    /// and the membership, beside an empty file. It is never sent (an
    /// arbitrator never leads), and a joiner given one would refuse it as
    /// no quorate database.
    fn build_empty_snapshot(
        &self,
    ) -> Result<openraft::alias::SnapshotOf<TypeConfig, SnapshotFile>, io::Error> {
        let st = self.state()?;
        let meta = SnapshotMeta {
            last_log_id: st.last_applied,
            last_membership: st.membership.clone(),
        };
        let index = st.last_applied.as_ref().map(|l| l.index).unwrap_or(0);
        let (db_path, meta_path) = self.snapshot_paths(index);
        fs::File::create(&db_path)?;
        super::log_store::write_file_durably(
            &meta_path,
            &serde_json::to_vec(&meta).map_err(io::Error::other)?,
        )?;
        self.remove_snapshots_except(&db_path);
        tracing::info!(index, "arbitrator snapshot built (no data)");
        Ok(openraft::alias::SnapshotOf::<TypeConfig, SnapshotFile> {
            meta,
            snapshot: SnapshotFile { path: db_path },
        })
    }

    /// A leader sent the arbitrator a snapshot (it fell behind the log):
    /// take the cluster's identity and position from it and drop the data.
    async fn install_snapshot_dropping_data(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotFile,
    ) -> Result<(), io::Error> {
        let index = meta.last_log_id.as_ref().map(|l| l.index).unwrap_or(0);
        let received = snapshot.path.clone();
        let (identity, fork_index) = tokio::task::spawn_blocking(move || {
            let position = crate::store::read_position(&received).map_err(store_err)?;
            let raft = crate::store::read_raft_state(&received).map_err(store_err)?;
            let fork_index = match raft {
                Some(b) => RaftState::decode(&b)?.fork_index,
                None => None,
            };
            Ok::<_, io::Error>((position, fork_index))
        })
        .await
        .map_err(blocking_err)??;
        let st = RaftState {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            fork_index,
        };
        let raft_state = st.encode()?;
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || match identity {
            Some(p) if !p.state_uuid.is_nil() => {
                store.set_identity(p.state_uuid, p.incarnation, None, &raft_state)
            }
            _ => store.set_raft_state(&raft_state),
        })
        .await
        .map_err(blocking_err)?
        .map_err(store_err)?;
        self.fence.set_fork_index(st.fork_index);
        self.save_arbitrator_state(&st).await?;
        self.set_state(st)?;
        let (db_path, meta_path) = self.snapshot_paths(index);
        // The data goes; the file stays, empty, beside its meta.
        fs::File::create(&db_path)?;
        if snapshot.path != db_path {
            let _ = fs::remove_file(&snapshot.path);
        }
        super::log_store::write_file_durably(
            &meta_path,
            &serde_json::to_vec(meta).map_err(io::Error::other)?,
        )?;
        self.remove_snapshots_except(&db_path);
        tracing::info!(
            index,
            "arbitrator: took the position of a snapshot and dropped its data"
        );
        Ok(())
    }

    fn remove_snapshots_except(&self, keep: &Path) {
        let keep_meta = keep.with_extension("meta");
        if let Ok(rd) = fs::read_dir(&self.snapshot_dir) {
            for p in rd.filter_map(|d| d.ok().map(|d| d.path())) {
                if p != keep && p != keep_meta {
                    let _ = fs::remove_file(&p);
                }
            }
        }
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotFile;

    async fn build_snapshot(
        &mut self,
    ) -> Result<openraft::alias::SnapshotOf<TypeConfig, SnapshotFile>, io::Error> {
        if self.arbitrator.is_some() {
            return self.build_empty_snapshot();
        }
        let tmp = self.snapshot_dir.join("building.sqlite.tmp");
        let store = self.store.clone();
        let tmp2 = tmp.clone();
        let raft_state = tokio::task::spawn_blocking(
            move || -> Result<Option<Vec<u8>>, crate::store::StoreError> {
                let _ = fs::remove_file(&tmp2);
                store.snapshot_into(&tmp2)?;
                crate::store::read_raft_state(&tmp2)
            },
        )
        .await
        .map_err(blocking_err)?
        .map_err(store_err)?;
        let st = match raft_state {
            Some(b) => RaftState::decode(&b)?,
            None => RaftState::default(),
        };
        let meta = SnapshotMeta {
            last_log_id: st.last_applied,
            last_membership: st.membership.clone(),
        };
        let index = st.last_applied.as_ref().map(|l| l.index).unwrap_or(0);
        let (db_path, meta_path) = self.snapshot_paths(index);
        fs::rename(&tmp, &db_path)?;
        super::log_store::write_file_durably(
            &meta_path,
            &serde_json::to_vec(&meta).map_err(io::Error::other)?,
        )?;
        self.remove_snapshots_except(&db_path);
        tracing::info!(index, "snapshot built: {}", db_path.display());
        Ok(openraft::alias::SnapshotOf::<TypeConfig, SnapshotFile> {
            meta,
            snapshot: SnapshotFile { path: db_path },
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotFile;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let st = self.state()?;
        Ok((st.last_applied, st.membership))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let mut group: Vec<EntryResponder<TypeConfig>> = Vec::new();
        while let Some(item) = entries.try_next().await? {
            // A bootstrap entry changes the identity, and a removal is a
            // write of its own: each is applied alone.
            let alone = matches!(
                item.0.payload,
                EntryPayload::Normal(
                    Request::Bootstrap { .. }
                        | Request::NewIncarnation { .. }
                        | Request::MemberRemoved { .. }
                )
            );
            if alone && !group.is_empty() {
                self.apply_group(std::mem::take(&mut group)).await?;
            }
            group.push(item);
            if alone || group.len() >= MAX_GROUP {
                self.apply_group(std::mem::take(&mut group)).await?;
            }
        }
        if !group.is_empty() {
            self.apply_group(group).await?;
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotFile,
    ) -> Result<(), io::Error> {
        if self.arbitrator.is_some() {
            return self.install_snapshot_dropping_data(meta, snapshot).await;
        }
        let index = meta.last_log_id.as_ref().map(|l| l.index).unwrap_or(0);
        let (db_path, meta_path) = self.snapshot_paths(index);
        if snapshot.path != db_path {
            fs::rename(&snapshot.path, &db_path)?;
        }
        let store = self.store.clone();
        let src = db_path.clone();
        let position = tokio::task::spawn_blocking(move || store.install_snapshot(&src))
            .await
            .map_err(blocking_err)?
            .map_err(store_err)?;
        let st = match self.store.raft_state().map_err(store_err)? {
            Some(b) => RaftState::decode(&b)?,
            None => RaftState::default(),
        };
        self.fence.set_fork_index(st.fork_index);
        self.set_state(st)?;
        super::log_store::write_file_durably(
            &meta_path,
            &serde_json::to_vec(meta).map_err(io::Error::other)?,
        )?;
        self.remove_snapshots_except(&db_path);
        tracing::info!(index, %position, "installed snapshot");
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<openraft::alias::SnapshotOf<TypeConfig, SnapshotFile>>, io::Error> {
        Ok(self
            .newest_snapshot()?
            .map(
                |(meta, path)| openraft::alias::SnapshotOf::<TypeConfig, SnapshotFile> {
                    meta,
                    snapshot: SnapshotFile { path },
                },
            ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::Statement;

    fn writeset(payload: Payload) -> WriteSet {
        WriteSet {
            origin: "node-a".into(),
            trx_id: 1,
            snapshot_seqno: 0,
            keys: Vec::new(),
            payload,
        }
    }

    #[test]
    fn only_small_changeset_groups_are_applied_on_the_async_worker() {
        let changes = |n: usize| writeset(Payload::Changeset(vec![0; n]));
        assert!(is_small(&vec![changes(100); INLINE_GROUP]));
        assert!(!is_small(&vec![changes(100); INLINE_GROUP + 1]));
        assert!(is_small(&[changes(INLINE_BYTES)]));
        assert!(!is_small(&[changes(INLINE_BYTES), changes(1)]));
        let ddl = writeset(Payload::Statements(vec![Statement::new(
            "CREATE INDEX i ON t(v)",
        )]));
        assert!(!is_small(&[changes(10), ddl]));
    }
}
