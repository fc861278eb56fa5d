//! Raft RPCs between nodes. A lone node sends none; the QUIC transport
//! (cluster work) replaces `NoNetwork` behind the same factory seam.

use std::future::Future;

use openraft::errors::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{OptionalSend, RaftNetworkFactory, RaftNetworkV2};

use super::state_machine::SnapshotFile;
use super::types::{NodeId, NodeInfo, TypeConfig, Vote};

#[derive(Debug, thiserror::Error)]
#[error("node {0} is unreachable: this node has no replication transport configured")]
struct NoTransport(NodeId);

/// The network of a node without peers.
#[derive(Clone, Default)]
pub struct NoNetwork;

pub struct NoConnection(NodeId);

impl RaftNetworkFactory<TypeConfig> for NoNetwork {
    type Network = NoConnection;
    async fn new_client(&mut self, target: NodeId, _node: &NodeInfo) -> NoConnection {
        NoConnection(target)
    }
}

impl RaftNetworkV2<TypeConfig> for NoConnection {
    type SnapshotData = SnapshotFile;

    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        Err(RPCError::Unreachable(Unreachable::new(&NoTransport(
            self.0,
        ))))
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        Err(RPCError::Unreachable(Unreachable::new(&NoTransport(
            self.0,
        ))))
    }

    async fn full_snapshot(
        &mut self,
        _vote: Vote,
        _snapshot: openraft::alias::SnapshotOf<TypeConfig, SnapshotFile>,
        _cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        Err(StreamingError::Unreachable(Unreachable::new(&NoTransport(
            self.0,
        ))))
    }
}
