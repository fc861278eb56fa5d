//! The Raft type configuration: what travels in the ordered log.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::writeset::{ApplyOutcome, WriteSet};

/// Raft node ids are random u64s made once per data directory and never reused.
pub type NodeId = u64;

/// What a member is, as stored in the Raft membership.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The configured `node_name`, also the name in the node's certificate.
    pub name: String,
    /// Replication (QUIC) address peers dial.
    pub repl_addr: String,
    /// Client API base URL, e.g. `http://127.0.0.1:4001`.
    pub api_addr: String,
    /// A voter that keeps no database and serves no clients (Galera's
    /// garbd): it is never a donor, a leader or a bootstrap candidate.
    pub arbitrator: bool,
}

/// A command in the ordered log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// A client transaction's write-set, certified and applied in log order.
    WriteSet(WriteSet),
    /// First entry of a new cluster (or of a new incarnation after a forced
    /// bootstrap): fixes the state UUID every member shares.
    Bootstrap {
        state_uuid: Uuid,
        incarnation: u64,
        /// The certification window every member must use (a local setting
        /// could differ between nodes and split their verdicts).
        cert_window: i64,
    },
    /// First entry of a new incarnation, appended by a node forced to
    /// bootstrap while it was a member (see `Sequencer::force_new_incarnation`).
    /// Kept last in the enum: the log encodes variants by position.
    NewIncarnation {
        state_uuid: Uuid,
        incarnation: u64,
        cert_window: i64,
        /// The forced node's last applied log index: later entries of the
        /// older incarnation may differ from this one's (see `fence`).
        fork_index: u64,
    },
    /// A member removed by `quorate --remove-node`, kept by every member in
    /// its database (and so passed on by SST) so that the removed node is
    /// not readmitted with its old data whoever leads when it returns.
    /// `record` is the node layer's description (JSON). Kept last: see
    /// `NewIncarnation`.
    MemberRemoved { node_id: NodeId, record: String },
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Request::WriteSet(ws) => write!(
                f,
                "write-set {}#{} ({} keys)",
                ws.origin,
                ws.trx_id,
                ws.keys.len()
            ),
            Request::Bootstrap {
                state_uuid,
                incarnation,
                ..
            } => {
                write!(f, "bootstrap {state_uuid} incarnation {incarnation}")
            }
            Request::NewIncarnation {
                state_uuid,
                incarnation,
                fork_index,
                ..
            } => write!(
                f,
                "forced bootstrap {state_uuid} incarnation {incarnation} after log index {fork_index}"
            ),
            Request::MemberRemoved { node_id, .. } => write!(f, "removal of member {node_id}"),
        }
    }
}

/// What applying one entry yields, returned to whoever submitted it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Response {
    WriteSet(ApplyOutcome),
    Done,
}

openraft::declare_raft_types!(
    /// quorate's Raft types.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = NodeId,
        Node = NodeInfo,
);

pub type Raft = openraft::Raft<TypeConfig, super::state_machine::StateMachine>;
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
