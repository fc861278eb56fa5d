//! The write-set: what one client transaction replicates, and what applying it
//! in the total order yields.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::sql::{ExecResult, Statement};

/// Galera's seqno: position of a write-set in the cluster-wide order.
/// `-1` means "nothing applied yet / unknown", as in grastate.dat.
pub type Seqno = i64;

/// A certification key: `(table, primary key)` or `(table, unique index,
/// value)`, encoded as bytes so that equal keys compare equal on every node.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CertKey(pub Vec<u8>);

/// A replicated transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WriteSet {
    /// Name of the node whose client sent the transaction.
    pub origin: String,
    /// Unique per origin; lets the origin match the ordered write-set to its client.
    pub trx_id: u64,
    /// The seqno the origin had applied when it executed the transaction.
    pub snapshot_seqno: Seqno,
    pub keys: Vec<CertKey>,
    pub payload: Payload,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Payload {
    /// Row changes recorded by a SQLite session (`sqlite3changeset` bytes).
    Changeset(Vec<u8>),
    /// Total order isolation: statements run by every node at their place in
    /// the order (schema changes). Must be deterministic.
    Statements(Vec<Statement>),
}

impl WriteSet {
    /// Bytes this write-set occupies on the wire and in the log (approximate).
    pub fn payload_len(&self) -> usize {
        let keys: usize = self.keys.iter().map(|k| k.0.len()).sum();
        let body = match &self.payload {
            Payload::Changeset(b) => b.len(),
            Payload::Statements(s) => s.iter().map(|s| s.sql.len() + 16).sum(),
        };
        keys + body
    }
}

/// Why a write-set did not commit. Identical on every node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FailReason {
    /// A key was changed by a write-set ordered after this one's snapshot.
    Conflict {
        key: String,
        conflicting_seqno: Seqno,
    },
    /// The snapshot seqno is older than the certification window.
    TooOld {
        snapshot_seqno: Seqno,
        window_start: Seqno,
    },
    /// A schema change was ordered after this write-set's snapshot.
    SchemaChanged { ddl_seqno: Seqno },
    /// Applying the changeset or statements failed (constraint, missing row).
    ApplyFailed { message: String },
    /// The same (origin, trx id) was ordered before, at `seqno` (a forward
    /// retried after a lost answer): skipped, consuming no seqno.
    Duplicate { seqno: Seqno },
}

impl std::fmt::Display for FailReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FailReason::Conflict { key, conflicting_seqno } => write!(
                f,
                "certification conflict: row {key} was changed by seqno {conflicting_seqno} after this transaction's snapshot; retry the transaction"
            ),
            FailReason::TooOld { snapshot_seqno, window_start } => write!(
                f,
                "certification failed: snapshot seqno {snapshot_seqno} is older than the certification window (starts at {window_start}); retry the transaction"
            ),
            FailReason::SchemaChanged { ddl_seqno } => write!(
                f,
                "certification failed: the schema changed at seqno {ddl_seqno} after this transaction's snapshot; retry the transaction"
            ),
            FailReason::ApplyFailed { message } => write!(f, "write-set failed to apply: {message}"),
            FailReason::Duplicate { seqno } => write!(f, "duplicate of the write-set ordered at seqno {seqno}"),
        }
    }
}

impl FailReason {
    /// Certification failures are retryable (Galera reports a deadlock);
    /// apply failures are not.
    pub fn is_certification_failure(&self) -> bool {
        !matches!(
            self,
            FailReason::ApplyFailed { .. } | FailReason::Duplicate { .. }
        )
    }
}

/// The verdict for one ordered write-set, the same on every node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Verdict {
    /// Applied. For a statements payload, the per-statement results of the
    /// apply (for a changeset the origin kept its own local results).
    Committed {
        toi_results: Option<Vec<ExecResult>>,
    },
    Failed(FailReason),
}

/// Outcome of applying one ordered write-set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApplyOutcome {
    pub seqno: Seqno,
    pub verdict: Verdict,
}

/// Where a node's data stands: what `quorate --recover` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// Cluster state UUID; nil before the first bootstrap.
    pub state_uuid: Uuid,
    /// Last applied seqno; -1 when nothing has been applied.
    pub seqno: Seqno,
    /// Bumped by every forced bootstrap (fencing).
    pub incarnation: u64,
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.state_uuid, self.seqno)
    }
}
