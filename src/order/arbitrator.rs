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

    #[test]
    fn a_damaged_state_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STATE_FILE), b"{not json").unwrap();
        let e = load(dir.path()).unwrap_err();
        assert!(e.to_string().contains(STATE_FILE), "{e}");
    }
}
