//! The replicated SQLite database (`data_dir/db.sqlite`). SKELETON: the
//! signatures below are the contract; bodies are being written.

use std::path::{Path, PathBuf};

use crate::sql::{ExecResult, QueryResult, Statement};
use crate::writeset::{ApplyOutcome, CertKey, Payload, Position, Seqno, WriteSet};

#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub read_connections: usize,
    pub max_writeset_bytes: usize,
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
    Sqlite { path: PathBuf, source: rusqlite::Error },
    #[error("{0}")]
    Refused(String),
}

pub struct Store {}

impl Store {
    pub fn open(_data_dir: &Path, _opts: StoreOptions) -> Result<Store, StoreError> {
        unimplemented!("skeleton")
    }
    pub fn position(&self) -> Position {
        unimplemented!("skeleton")
    }
    pub fn capture(&self, _stmts: &[Statement], _transaction: bool) -> Result<Captured, StoreError> {
        unimplemented!("skeleton")
    }
    pub fn query(&self, _stmts: &[Statement], _timings: bool) -> Result<Vec<QueryResult>, StoreError> {
        unimplemented!("skeleton")
    }
    pub fn apply_batch(&self, _batch: &[WriteSet], _raft_state: &[u8]) -> Result<Vec<ApplyOutcome>, StoreError> {
        unimplemented!("skeleton")
    }
    pub fn raft_state(&self) -> Result<Option<Vec<u8>>, StoreError> {
        unimplemented!("skeleton")
    }
    pub fn set_raft_state(&self, _raft_state: &[u8]) -> Result<(), StoreError> {
        unimplemented!("skeleton")
    }
    pub fn set_identity(&self, _state_uuid: uuid::Uuid, _incarnation: u64, _raft_state: &[u8]) -> Result<(), StoreError> {
        unimplemented!("skeleton")
    }
    pub fn snapshot_into(&self, _dest: &Path) -> Result<Position, StoreError> {
        unimplemented!("skeleton")
    }
    pub fn install_snapshot(&self, _src: &Path) -> Result<Position, StoreError> {
        unimplemented!("skeleton")
    }
}

/// Read the position of a database file without opening a Store (for
/// `quorate --recover` while the daemon is stopped).
pub fn read_position(_db_path: &Path) -> Result<Option<Position>, StoreError> {
    unimplemented!("skeleton")
}

/// The raft_state blob stored in a database file (e.g. a snapshot copy).
pub fn read_raft_state(_db_path: &Path) -> Result<Option<Vec<u8>>, StoreError> {
    unimplemented!("skeleton")
}
