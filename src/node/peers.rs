//! The node among its peers: answering their requests, joining the cluster
//! named in `replication.peers`, and leaving it on a graceful stop.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use openraft::ChangeMembers;
use serde::{Deserialize, Serialize};

use super::Node;
use crate::order::{network, NodeId, NodeInfo};
use crate::transport::{
    ChunkStream, PeerIdentity, RpcFailure, RpcHandler, SessionReceiver, SessionSender, Transport,
    TransportOptions,
};

/// Node-level request kinds (Raft's own are in `order::network::kind`).
pub mod kind {
    pub const JOIN: u8 = 30;
    pub const LEAVE: u8 = 31;
    /// "What is your position?" — asked by a node that is not Primary.
    pub const PROBE: u8 = 32;
    /// A member forwards `quorate --remove-node` to the leader.
    pub const REMOVE: u8 = 33;
    /// The leader passes a removal record on to the other members.
    pub const REMOVED_NOTICE: u8 = 34;
}

#[derive(Debug, Serialize, Deserialize)]
pub struct JoinRequest {
    pub node_id: NodeId,
    pub info: NodeInfo,
    /// The joiner's place in history: a member of an older incarnation
    /// with data must not be let in (its log would be cut silently).
    pub stamp: crate::order::fence::Stamp,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum MembershipReply {
    /// Done, or under way (a joiner is being caught up, then promoted).
    Accepted,
    /// Ask the leader instead.
    Redirect(NodeInfo),
    /// No primary component here.
    NoPrimary(String),
    /// The joiner is of an older incarnation: it is fenced.
    Fenced(crate::order::fence::FenceNotice),
    /// Not for this cluster.
    Refused(String),
    /// The joiner was removed by `--remove-node`: it may only come back as a
    /// new member. Kept last: the wire encodes variants by position.
    Removed(super::members::RemovedNode),
}

/// Build the replication transport when the node has peers (or TLS).
pub async fn open_transport(
    config: &crate::config::Config,
) -> Result<Option<Transport>, super::NodeError> {
    let Some(tls) = &config.tls else {
        return Ok(None);
    };
    let refuse = |what: String| super::NodeError::Refused(what);
    let identity = crate::tls::load_node_identity(&tls.ca, &tls.cert, &tls.key)
        .map_err(|e| refuse(format!("[tls] material of this node: {e}")))?;
    identity.check_node_name(&config.node_name).map_err(|e| {
        refuse(format!(
            "the certificate {} does not name node_name {:?}: {e}",
            tls.cert.display(),
            config.node_name
        ))
    })?;
    let r = &config.replication;
    let mut opts = TransportOptions::new(config.cluster_name.clone(), config.node_name.clone());
    opts.connect_timeout = Duration::from_millis(r.connect_timeout_ms);
    opts.rpc_timeout = Duration::from_millis(r.rpc_timeout_ms);
    opts.keep_alive = Duration::from_millis(r.keep_alive_ms);
    opts.idle_timeout = Duration::from_millis(r.idle_timeout_ms);
    opts.max_incoming_connections = r.max_peer_connections;
    opts.max_frame_bytes = opts.max_frame_bytes.max(
        r.max_writeset_bytes
            .saturating_mul(2)
            .saturating_add(1 << 20),
    );
    let t = Transport::bind(r.listen, identity, opts)
        .await
        .map_err(|e| refuse(format!("replication transport: {e}")))?;
    tracing::info!(listen = %t.local_addr(), "replication transport listening (QUIC, mutual TLS)");
    Ok(Some(t))
}

impl RpcHandler for Node {
    async fn handle(&self, peer: PeerIdentity, kind: u8, body: Bytes) -> Result<Bytes, RpcFailure> {
        let reply = match kind {
            kind::JOIN => self.handle_join(&peer, &body).await,
            kind::LEAVE => self.handle_leave(&peer, &body).await,
            kind::PROBE => network::encode(&self.own_report()),
            kind::REMOVE => self.handle_remove(&peer, &body).await,
            kind::REMOVED_NOTICE => self.handle_removed_notice(&peer, &body),
            other => self.seq.serve_peer(&peer, other, &body).await,
        };
        reply.map_err(network::rpc_failure)
    }

    async fn handle_stream(
        &self,
        peer: PeerIdentity,
        _kind: u8,
        header: Bytes,
        chunks: ChunkStream,
    ) -> Result<Bytes, RpcFailure> {
        self.seq
            .serve_snapshot(&peer, &header, chunks)
            .await
            .map_err(RpcFailure::new)
    }

    async fn handle_session(
        &self,
        peer: PeerIdentity,
        kind: u8,
        _header: Bytes,
        messages: SessionReceiver,
        replies: SessionSender,
    ) {
        self.seq.serve_session(&peer, kind, messages, replies).await
    }
}

impl Node {
    pub(super) fn leader_info(&self) -> Option<(NodeId, NodeInfo)> {
        let m = self.seq.metrics();
        let leader = m.current_leader?;
        m.membership_config
            .membership()
            .get_node(&leader)
            .cloned()
            .map(|i| (leader, i))
    }

    async fn handle_join(&self, peer: &PeerIdentity, body: &[u8]) -> Result<Bytes, String> {
        let req: JoinRequest = network::decode(body)?;
        if req.info.name != peer.node_name {
            tracing::warn!(peer = %peer.addr, "refused a join: certificate of {} asks to join as {}", peer.node_name, req.info.name);
            return Err(format!(
                "your certificate names {}, not {}",
                peer.node_name, req.info.name
            ));
        }
        if let Some(record) = self.removed_member(req.node_id) {
            tracing::warn!(
                joiner = %req.info.name,
                "refused a join: {record}; it is told so and comes back as a new member after a restart"
            );
            return network::encode(&MembershipReply::Removed(record));
        }
        if let Err(refusal) = self.seq.fence().admit::<()>(
            &req.stamp,
            &peer.node_name,
            self.seq.is_member(req.node_id),
        ) {
            return network::encode(&match refusal {
                crate::order::fence::Reply::Fenced(n) => MembershipReply::Fenced(n),
                crate::order::fence::Reply::Refused(why) => MembershipReply::Refused(why),
                crate::order::fence::Reply::Ok(()) => MembershipReply::Accepted,
            });
        }
        let reply = match self.leader_info() {
            Some((leader, _)) if leader == self.seq.node_id() => {
                self.admit(req);
                MembershipReply::Accepted
            }
            Some((_, info)) => MembershipReply::Redirect(info),
            None => MembershipReply::NoPrimary(format!(
                "{} has no primary component right now",
                self.config.node_name
            )),
        };
        network::encode(&reply)
    }

    /// On the leader: add the joiner as a learner (it catches up by IST from
    /// the log, or SST when the log no longer reaches back), then promote it.
    fn admit(&self, req: JoinRequest) {
        let raft = self.seq.raft().clone();
        let voters = self.seq.voters();
        if voters.contains(&req.node_id) {
            return;
        }
        {
            let Ok(mut joining) = self.joining.lock() else {
                return;
            };
            if !joining.insert(req.node_id) {
                return;
            }
        }
        let joining = self.joining_handle();
        let book = self.members.clone();
        let transport = self.transport.clone();
        tokio::spawn(async move {
            let name = req.info.name.clone();
            let repl_addr: Option<SocketAddr> = req.info.repl_addr.parse().ok();
            tracing::info!(joiner = %name, node_id = req.node_id, "member joining: {name} added as learner, catching up");
            let result = async {
                raft.add_learner(req.node_id, req.info, true)
                    .await
                    .map_err(|e| e.to_string())?;
                let ids: BTreeSet<NodeId> = [req.node_id].into_iter().collect();
                raft.change_membership(ChangeMembers::AddVoterIds(ids), false)
                    .await
                    .map_err(|e| e.to_string())
            }
            .await;
            match result {
                Ok(_) => {
                    tracing::info!(joiner = %name, "member joined: {name} is a voter now");
                    // Whoever leads later must still recognise removed nodes.
                    if let (Some(t), Some(addr)) = (&transport, repl_addr) {
                        book.hand_over_records(t, addr, &name).await;
                    }
                }
                Err(e) => {
                    tracing::warn!(joiner = %name, "join of {name} did not complete: {e}; it will ask again")
                }
            }
            if let Ok(mut j) = joining.lock() {
                j.remove(&req.node_id);
            }
        });
    }

    async fn handle_leave(&self, peer: &PeerIdentity, body: &[u8]) -> Result<Bytes, String> {
        let node_id: NodeId = network::decode(body)?;
        let members = self.seq.members();
        match members.iter().find(|(id, _, _)| *id == node_id) {
            Some((_, info, _)) if info.name != peer.node_name => {
                return Err(format!("{} may not remove {}", peer.node_name, info.name));
            }
            None => return network::encode(&MembershipReply::Accepted),
            _ => {}
        }
        let reply = match self.leader_info() {
            Some((leader, _)) if leader == self.seq.node_id() => {
                let ids: BTreeSet<NodeId> = [node_id].into_iter().collect();
                let raft = self.seq.raft();
                let removed = raft.change_membership(ChangeMembers::RemoveVoters(ids), false);
                tokio::time::timeout(Duration::from_secs(10), removed)
                    .await
                    .map_err(|_| {
                        format!(
                            "cannot remove {}: no quorum to commit the change",
                            peer.node_name
                        )
                    })?
                    .map_err(|e| format!("cannot remove {}: {e}", peer.node_name))?;
                tracing::info!("member left: {} (graceful stop)", peer.node_name);
                MembershipReply::Accepted
            }
            Some((_, info)) => MembershipReply::Redirect(info),
            None => MembershipReply::NoPrimary("no primary component".into()),
        };
        network::encode(&reply)
    }

    /// Ask the configured peers to let this node in, until it is a voter.
    pub fn spawn_join_loop(self: &Arc<Self>) {
        if self.transport.is_none() {
            return;
        }
        let node = self.clone();
        tokio::spawn(async move {
            let mut shutdown = node.shutdown_signal();
            let mut backoff = Duration::from_millis(200);
            let mut announced = false;
            loop {
                // Our own view of the membership can be stale (a node removed
                // while it was away never hears of it), so the test is "are
                // we Primary", and the leader decides whether we are a member.
                if node.leaving.load(std::sync::atomic::Ordering::SeqCst)
                    || node.members.removed_self().is_some()
                {
                    return;
                }
                let wait = if node.is_primary() {
                    backoff = Duration::from_millis(200);
                    Duration::from_secs(1)
                } else {
                    // As SIGHUP last set them (none: wait for a reload).
                    let peers = node.other_peers();
                    if !announced && !peers.is_empty() {
                        tracing::info!("joining: asking peers {peers:?} to admit this node");
                        announced = true;
                    }
                    let _ = node.try_join(&peers).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    backoff
                };
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => return,
                }
            }
        });
    }

    async fn try_join(&self, peers: &[SocketAddr]) -> Result<(), String> {
        let Some(t) = &self.transport else {
            return Err("no transport".into());
        };
        if self.seq.fence().is_fenced() {
            return Err("this node is fenced".into());
        }
        let req = JoinRequest {
            stamp: self.seq.fence().stamp(),
            node_id: self.seq.node_id(),
            info: NodeInfo {
                name: self.config.node_name.clone(),
                repl_addr: self.config.advertise_addr().to_string(),
                api_addr: self.config.api_advertise(),
                arbitrator: self.config.arbitrator,
            },
        };
        let body = network::encode(&req)?;
        let mut targets: Vec<(SocketAddr, Option<String>)> =
            peers.iter().map(|p| (*p, None)).collect();
        let mut hops = 0;
        while let Some((addr, name)) = targets.pop() {
            match t
                .call(addr, name.as_deref(), kind::JOIN, body.clone())
                .await
            {
                Ok(reply) => match network::decode::<MembershipReply>(&reply)? {
                    MembershipReply::Accepted => return Ok(()),
                    MembershipReply::Redirect(leader) if hops < 3 => {
                        hops += 1;
                        if let Ok(a) = leader.repl_addr.parse() {
                            targets.push((a, Some(leader.name)));
                        }
                    }
                    MembershipReply::Redirect(_) => {}
                    MembershipReply::NoPrimary(why) => tracing::debug!("join via {addr}: {why}"),
                    MembershipReply::Fenced(notice) => {
                        self.seq.fence().fence_self(notice);
                        return Err("this node is fenced".into());
                    }
                    MembershipReply::Refused(why) => {
                        tracing::warn!("join via {addr} refused: {why}");
                    }
                    MembershipReply::Removed(record) => {
                        self.learn_removed(record).await;
                        return Err("this node was removed from the cluster".into());
                    }
                },
                Err(e) => tracing::debug!("join via {addr}: {e}"),
            }
        }
        Err("no peer admitted this node".into())
    }

    /// A leader about to stop hands leadership to another data member, so
    /// writes barely pause. Never to an arbitrator: it holds no data to lead with.
    pub(super) async fn hand_over_leadership(&self) {
        let me = self.seq.node_id();
        if self.seq.metrics().current_leader != Some(me) {
            return;
        }
        let Some(next) = self.data_voters().into_iter().find(|v| *v != me) else {
            return;
        };
        tracing::info!("leader stopping: handing leadership to node {next}");
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            self.seq.raft().trigger().transfer_leader(next),
        )
        .await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        while tokio::time::Instant::now() < deadline {
            let l = self.seq.metrics().current_leader;
            if l.is_some() && l != Some(me) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Graceful leave: hand leadership over, then ask the leader to remove
    /// this node. The last member stays a member, and so does the last data
    /// member beside arbitrators (a cluster of arbitrators alone could
    /// never lead nor take it back).
    pub async fn leave(&self) {
        // From here on the join loop must not ask to be let back in.
        self.leaving
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let me = self.seq.node_id();
        let voters = self.seq.voters();
        if voters.len() <= 1
            || !voters.contains(&me)
            || self.transport.is_none()
            || self.members.removed_self().is_some()
        {
            return;
        }
        if !self.is_arbitrator() && self.data_voters().into_iter().all(|v| v == me) {
            tracing::info!(
                "the last data member does not leave: it stops as a member, beside the arbitrator"
            );
            return;
        }
        self.hand_over_leadership().await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::time::Instant::now() < deadline {
            if !self.seq.voters().contains(&me) {
                tracing::info!("left the cluster: membership no longer includes this node");
                return;
            }
            match self.leader_info() {
                Some((leader, _)) if leader == me => {
                    let ids: BTreeSet<NodeId> = [me].into_iter().collect();
                    // Without a quorum the change never commits: bounded.
                    let raft = self.seq.raft();
                    let change = raft.change_membership(ChangeMembers::RemoveVoters(ids), false);
                    match tokio::time::timeout_at(deadline, change).await {
                        Ok(Ok(_)) => {
                            tracing::info!("left the cluster (removed self as leader)");
                            return;
                        }
                        Ok(Err(e)) => tracing::warn!("cannot leave: {e}"),
                        Err(_) => break,
                    }
                }
                Some((_, info)) => {
                    if let (Some(t), Ok(addr)) =
                        (&self.transport, info.repl_addr.parse::<SocketAddr>())
                    {
                        match network::encode(&me) {
                            Ok(body) => {
                                match t.call(addr, Some(&info.name), kind::LEAVE, body).await {
                                    // The leader answers Accepted once the removal
                                    // committed; a removed node never hears of it
                                    // through Raft, so waiting for that would
                                    // always run into the deadline.
                                    Ok(reply) => {
                                        if let Ok(MembershipReply::Accepted) =
                                            network::decode::<MembershipReply>(&reply)
                                        {
                                            tracing::info!(
                                                "left the cluster (removed by the leader {})",
                                                info.name
                                            );
                                            return;
                                        }
                                    }
                                    Err(e) => {
                                        tracing::warn!("leave request to {} failed: {e}", info.name)
                                    }
                                }
                            }
                            Err(e) => tracing::warn!("{e}"),
                        }
                    }
                }
                None => {}
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tracing::warn!(
            "could not leave the membership within 10 s; stopping as a member (like a crash)"
        );
    }

    /// This node's position, as a peer would report it.
    fn own_report(&self) -> crate::status::PeerReport {
        let position = self.store.position();
        crate::status::PeerReport {
            addr: self.config.advertise_addr().to_string(),
            node_name: Some(self.config.node_name.clone()),
            state_uuid: Some(position.state_uuid),
            incarnation: Some(position.incarnation),
            // An arbitrator has no data: no seqno, so it is never the node to bootstrap.
            seqno: if self.is_arbitrator() {
                None
            } else {
                Some(position.seqno)
            },
            safe_to_bootstrap: Some(self.safe_to_bootstrap()),
            primary: Some(self.is_primary()),
            error: None,
            fork_index: self.seq.fence().stamp().fork_index,
        }
    }

    /// Ask every configured peer for its position (for an operator deciding
    /// which node to bootstrap).
    pub async fn probe_peers(&self) -> Vec<crate::status::PeerReport> {
        match &self.transport {
            Some(t) => probe(t, &self.other_peers(), Duration::from_secs(2)).await,
            None => Vec::new(),
        }
    }
}

/// For `quorate --show-cluster-status` while the daemon is stopped: ask the
/// configured peers for their positions with this node's identity, from an
/// ephemeral port (the daemon's own port may be taken by nothing, but the
/// daemon may also be starting).
pub async fn probe_peers_offline(
    config: &crate::config::Config,
) -> Result<Vec<crate::status::PeerReport>, super::NodeError> {
    let peers = config.other_peers();
    if peers.is_empty() || config.tls.is_none() {
        return Ok(Vec::new());
    }
    let mut config = config.clone();
    config.replication.listen = SocketAddr::new(config.replication.listen.ip(), 0);
    let Some(t) = open_transport(&config).await? else {
        return Ok(Vec::new());
    };
    let reports = probe(&t, &peers, Duration::from_secs(2)).await;
    t.close().await;
    Ok(reports)
}

/// Ask each address for its position, in parallel, each bounded by `timeout`.
pub(super) async fn probe(
    t: &crate::transport::Transport,
    addrs: &[std::net::SocketAddr],
    timeout: Duration,
) -> Vec<crate::status::PeerReport> {
    let probes = addrs.iter().map(|&addr| async move {
        let reply = t
            .call_timeout(addr, None, kind::PROBE, Bytes::new(), timeout)
            .await;
        match reply
            .map_err(|e| e.to_string())
            .and_then(|b| network::decode::<crate::status::PeerReport>(&b))
        {
            Ok(report) => report,
            Err(e) => crate::status::PeerReport {
                addr: addr.to_string(),
                node_name: None,
                state_uuid: None,
                seqno: None,
                incarnation: None,
                safe_to_bootstrap: None,
                primary: None,
                error: Some(e),
                fork_index: None,
            },
        }
    });
    futures::future::join_all(probes).await
}
