//! The arbitrator's state (Galera's garbd): a voter that keeps the Raft log,
//! because voting needs it, and no database.
//!
//! Its state machine applies every entry by noting how far it got, the
//! membership and the cluster's identity; write-sets are dropped. That state
//! lives in an in-memory store while the node runs (so the rest of the node
//! reads it as usual) and in [`STATE_FILE`] on disk, written durably after
//! every applied group, so a restart resumes from where it stopped without
//! re-applying entries the log may no longer hold.

use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::state_machine::RaftState;
use crate::store::Store;

/// In `data_dir`: what the arbitrator applied. Its presence also marks the
/// directory as an arbitrator's (a data node refuses to start on it).
pub const STATE_FILE: &str = "arbitrator.state";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ArbitratorState {
    pub raft: RaftState,
    pub state_uuid: uuid::Uuid,
    pub incarnation: u64,
}

impl ArbitratorState {
    /// What `store` (the arbitrator's in-memory one) says now, with `raft`.
    pub fn of(store: &Store, raft: RaftState) -> ArbitratorState {
        let position = store.position();
        ArbitratorState {
            raft,
            state_uuid: position.state_uuid,
            incarnation: position.incarnation,
        }
    }

    pub fn save(&self, path: &Path) -> io::Result<()> {
        let bytes = serde_json::to_vec(self).map_err(io::Error::other)?;
        super::log_store::write_file_durably(path, &bytes)
    }
}

/// The saved state in `data_dir`, if this arbitrator ran before.
pub fn load(data_dir: &Path) -> io::Result<Option<ArbitratorState>> {
    let path = data_dir.join(STATE_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is damaged: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("cannot read {}: {e}", path.display()),
        )),
    }
}

/// Put the saved state back into a fresh in-memory store, before Raft starts
/// and asks the state machine what it applied. A first start writes an empty state: the file marks the directory as an
/// arbitrator's from the start.
pub fn restore(store: &Store, data_dir: &Path) -> io::Result<()> {
    let Some(saved) = load(data_dir)? else {
        return ArbitratorState::default().save(&data_dir.join(STATE_FILE));
    };
    let raft = serde_json::to_vec(&saved.raft).map_err(io::Error::other)?;
    let result = if saved.state_uuid.is_nil() {
        store.set_raft_state(&raft)
    } else {
        store.set_identity(saved.state_uuid, saved.incarnation, None, &raft)
    };
    result.map_err(|e| io::Error::other(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testutil;

    #[test]
    fn saved_state_comes_back_into_a_fresh_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_in_memory(testutil::opts()).unwrap();
        let uuid = uuid::Uuid::new_v4();
        store.set_identity(uuid, 3, None, b"{}").unwrap();
        let state = ArbitratorState::of(&store, RaftState::default());
        state.save(&dir.path().join(STATE_FILE)).unwrap();
        drop(store);

        let fresh = Store::open_in_memory(testutil::opts()).unwrap();
        assert!(fresh.position().state_uuid.is_nil());
        restore(&fresh, dir.path()).unwrap();
        assert_eq!(fresh.position().state_uuid, uuid);
        assert_eq!(fresh.position().incarnation, 3);
        assert!(fresh.raft_state().unwrap().is_some());
        // Nothing of a database appears in the directory.
        assert!(!dir.path().join("db.sqlite").exists());
    }

    /// The arbitrator's state machine: write-sets leave no data, its own
    /// snapshot is empty, a leader's snapshot gives the position and goes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_state_machine_keeps_positions_and_drops_data() {
        use std::sync::Arc;

        use openraft::entry::RaftEntry;
        use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
        use openraft::vote::RaftLeaderIdExt;

        use crate::order::state_machine::{ApplyWaiters, SnapshotFile, StateMachine};
        use crate::order::types::{Entry, LogId, Request, SnapshotMeta, TypeConfig};

        let dir = tempfile::tempdir().unwrap();
        let arb_dir = dir.path().join("arb");
        std::fs::create_dir_all(&arb_dir).unwrap();
        let store = Arc::new(Store::open_in_memory(testutil::opts()).unwrap());
        restore(&store, &arb_dir).unwrap();
        let fence = crate::order::fence::Fence::new(store.clone(), None, "arb", "", &arb_dir, None);
        let mut sm = StateMachine::open(
            store.clone(),
            &arb_dir.join("snapshots"),
            Arc::new(ApplyWaiters::new("arb")),
            fence,
        )
        .unwrap()
        .for_arbitrator(arb_dir.join(STATE_FILE));

        let data = testutil::open(&dir.path().join("data"));
        let ws = testutil::capture_ws(&data, &[testutil::st("CREATE TABLE t(x)")], 1);
        let leader =
            <openraft::alias::LeaderIdOf<TypeConfig> as RaftLeaderIdExt>::new_committed(1, 1);
        let uuid = uuid::Uuid::new_v4();
        let entries = vec![
            Entry::new_normal(
                LogId::new(leader, 1),
                Request::Bootstrap {
                    state_uuid: uuid,
                    incarnation: 0,
                    cert_window: 100,
                },
            ),
            Entry::new_normal(LogId::new(leader, 2), Request::WriteSet(ws)),
        ];
        sm.apply(futures::stream::iter(
            entries.into_iter().map(|e| Ok((e, None))),
        ))
        .await
        .unwrap();
        let (applied, _) = sm.applied_state().await.unwrap();
        assert_eq!(applied.map(|l| l.index), Some(2));
        let saved = load(&arb_dir).unwrap().unwrap();
        assert_eq!(saved.state_uuid, uuid);
        assert_eq!(saved.raft.last_applied.map(|l| l.index), Some(2));
        assert!(!arb_dir.join("db.sqlite").exists());

        let snap = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        assert_eq!(snap.meta.last_log_id.map(|l| l.index), Some(2));
        assert_eq!(std::fs::metadata(&snap.snapshot.path).unwrap().len(), 0);

        // A data node's snapshot of a later incarnation, as a leader would send it.
        let newer = uuid::Uuid::new_v4();
        let raft = serde_json::to_vec(&RaftState::default()).unwrap();
        data.set_identity(newer, 2, Some(100), &raft).unwrap();
        let sent = dir.path().join("sent.sqlite");
        data.snapshot_into(&sent).unwrap();
        let meta = SnapshotMeta {
            last_log_id: Some(LogId::new(leader, 10)),
            last_membership: Default::default(),
        };
        sm.install_snapshot(&meta, SnapshotFile { path: sent.clone() })
            .await
            .unwrap();
        let (applied, _) = sm.applied_state().await.unwrap();
        assert_eq!(applied.map(|l| l.index), Some(10));
        assert_eq!(store.position().state_uuid, newer);
        assert_eq!(store.position().incarnation, 2);
        assert!(!sent.exists(), "the received data is dropped");
        let current = sm.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(std::fs::metadata(&current.snapshot.path).unwrap().len(), 0);
        assert_eq!(load(&arb_dir).unwrap().unwrap().state_uuid, newer);
    }

    #[test]
    fn a_damaged_state_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STATE_FILE), b"{not json").unwrap();
        let e = load(dir.path()).unwrap_err();
        assert!(e.to_string().contains(STATE_FILE), "{e}");
    }
}
