//! The wsrep-style status of a node as it sees the cluster, shared by the
//! admin socket, `/status` and `quorate --show-cluster-status`.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// `wsrep_cluster_status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ComponentStatus {
    Primary,
    #[serde(rename = "non-Primary")]
    NonPrimary,
    Disconnected,
}

/// `wsrep_local_state_comment`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LocalState {
    Initialized,
    Joining,
    Joiner,
    Joined,
    Synced,
    Donor,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub node_name: String,
    pub cluster_name: String,
    /// `wsrep_cluster_conf_id`: changes with every membership change.
    pub cluster_conf_id: u64,
    /// `wsrep_cluster_size`: members of the primary component this node reaches.
    pub cluster_size: u64,
    pub cluster_state_uuid: Uuid,
    pub cluster_status: ComponentStatus,
    pub connected: bool,
    /// `wsrep_gcomm_uuid`: this node's own identity.
    pub gcomm_uuid: Uuid,
    pub last_committed: i64,
    pub local_state_uuid: Uuid,
    pub ready: bool,
    pub local_state: LocalState,
    pub local_cert_failures: u64,
    /// `wsrep_incoming_addresses`: client API addresses of the members.
    pub incoming_addresses: Vec<String>,
    /// Fraction of time paused by flow control since the last status.
    pub flow_control_paused: f64,
    pub incarnation: u64,
    pub leader: Option<String>,
    pub safe_to_bootstrap: bool,
}

/// Printed (exit status 3) when `--bootstrap-node` is refused.
pub const BOOTSTRAP_REFUSED_BANNER: &str = "\
**********************************************************************
* Warning: It is not safe to bootstrap this node. Please bootstrap   *
* the node that was last removed from the cluster. To force          *
* bootstrapping this node, use the command --force-safe-to-bootstrap *
* before bootstrapping this node.                                    *
**********************************************************************";

impl ClusterStatus {
    /// The `--show-cluster-status` table (DESIGN.md §6). SKELETON.
    pub fn render_table(&self) -> String {
        unimplemented!("skeleton")
    }
}
