//! What `--show-cluster-status` and `/status` report about this node.

use std::sync::atomic::Ordering;

use openraft::ServerState;
use serde_json::json;
use uuid::Uuid;

use super::Node;
use crate::status::{ClusterStatus, ComponentStatus, LocalState};

impl Node {
    pub fn cluster_status(&self) -> ClusterStatus {
        let m = self.seq.metrics();
        let position = self.store.position();
        let members = self.seq.members();
        let initialized = !members.is_empty();
        let primary = self.is_primary();
        let component = if !initialized {
            ComponentStatus::Disconnected
        } else if primary {
            ComponentStatus::Primary
        } else {
            ComponentStatus::NonPrimary
        };
        let leader = m.current_leader.and_then(|l| {
            members
                .iter()
                .find(|(id, _, _)| *id == l)
                .map(|(_, info, _)| info.name.clone())
        });
        let voters = members.iter().filter(|(_, _, voter)| *voter).count() as u64;
        ClusterStatus {
            node_name: self.config.node_name.clone(),
            cluster_name: self.config.cluster_name.clone(),
            cluster_conf_id: m
                .membership_config
                .log_id()
                .as_ref()
                .map(|l| l.index + 1)
                .unwrap_or(0),
            cluster_size: if primary { voters } else { 0 },
            cluster_state_uuid: position.state_uuid,
            cluster_status: component,
            connected: initialized,
            gcomm_uuid: Uuid::from_u64_pair(self.seq.node_id(), self.seq.node_id()),
            last_committed: position.seqno,
            local_state_uuid: position.state_uuid,
            ready: primary,
            local_state: self.local_state(primary, &members),
            local_cert_failures: self.seq.waiters().cert_failures.load(Ordering::Relaxed),
            incoming_addresses: members
                .iter()
                .map(|(_, info, _)| info.api_addr.clone())
                .collect(),
            flow_control_paused: self.seq.flow().paused_fraction(),
            incarnation: position.incarnation,
            leader,
            safe_to_bootstrap: self.safe_to_bootstrap(),
            peers: Vec::new(),
            fenced: self.seq.fence().fenced().map(|n| {
                format!(
                    "yes: {n}; this node stops serving until `quorate --restart-node` (it then saves \
                     what it holds and rejoins by SST)"
                )
            }),
            fence_saved: crate::order::fence::newest_saved_dir(&self.config.data_dir)
                .map(|d| d.display().to_string()),
            not_primary_reason: self.not_primary_reason(primary),
            arbitrator: self.is_arbitrator(),
        }
    }

    /// Galera's local state: Joiner while receiving state (a learner, or an
    /// SST under way), Donor while sending a snapshot, Synced when Primary.
    fn local_state(
        &self,
        primary: bool,
        members: &[(crate::order::NodeId, crate::order::NodeInfo, bool)],
    ) -> LocalState {
        let me = self.seq.node_id();
        let (donating, receiving) = self.seq.transfers();
        let learner = members.iter().any(|(id, _, voter)| *id == me && !voter);
        if receiving > 0 || learner {
            LocalState::Joiner
        } else if donating > 0 && primary {
            LocalState::Donor
        } else if primary {
            LocalState::Synced
        } else if self.joining_now() {
            LocalState::Joining
        } else {
            LocalState::Initialized
        }
    }

    /// The `/status` document: rqlite's fields clients read, plus ours.
    pub fn status_document(&self) -> serde_json::Value {
        let m = self.seq.metrics();
        let status = self.cluster_status();
        let leader = m.current_leader.and_then(|l| {
            self.seq
                .members()
                .into_iter()
                .find(|(id, _, _)| *id == l)
                .map(|(_, info, _)| info)
        });
        let state = match m.state {
            ServerState::Leader => "Leader",
            ServerState::Follower => "Follower",
            ServerState::Candidate => "Candidate",
            ServerState::Learner => "Learner",
            ServerState::Shutdown => "Shutdown",
        };
        json!({
            "store": {
                "ready": status.ready,
                "node_id": self.config.node_name,
                "dir": self.config.data_dir,
                "leader": {
                    "node_id": leader.as_ref().map(|l| l.name.clone()).unwrap_or_default(),
                    "addr": leader.as_ref().map(|l| l.repl_addr.clone()).unwrap_or_default(),
                },
                "raft": {
                    "state": state,
                    "term": m.current_term,
                    "last_log_index": m.last_log_index,
                    "applied_index": m.last_applied.as_ref().map(|l| l.index),
                    "snapshot_index": m.snapshot.as_ref().map(|l| l.index),
                },
            },
            "http": { "addr": self.config.api_advertise() },
            "node": {
                "uptime": format!("{:.3}s", self.started.elapsed().as_secs_f64()),
                "version": env!("CARGO_PKG_VERSION"),
                "pid": std::process::id(),
            },
            "cluster": status,
        })
    }
}
