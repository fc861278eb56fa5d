//! Membership operations: `quorate --members` (every member and every node
//! seen recently), `quorate --remove-node` (Consul's force-leave), and the
//! record that keeps a removed node from being readmitted with its old data.
//!
//! A removed node is remembered by node id in every member's database (the
//! removal is an entry in the log, so members that were away learn it by
//! IST and later members by SST), and in `removed-members.json` on the
//! leader that removed it and on the members it told at once. When it
//! comes back and asks to join, it is told so: it writes `removed.json`,
//! stops taking part and explains itself in status and log; its next start
//! keeps its data aside under `removed-data-*` and it joins as a new, empty member
//! with a new node id (SST). A node that left gracefully is not recorded:
//! it rejoins by itself when restarted.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use openraft::{ChangeMembers, Instant as _};
use serde::{Deserialize, Serialize};

use super::peers::{kind, probe};
use super::Node;
use crate::order::{network, NodeId, NodeInfo};
use crate::status::{MemberRole, MemberRow, MemberState};

/// On every member: the node ids removed by `--remove-node`.
pub const REMOVED_RECORD_FILE: &str = "removed-members.json";
/// On a removed node that learned it: until its next start.
pub const REMOVED_MARKER_FILE: &str = "removed.json";
/// What a removed node's restart kept: `data_dir/removed-data-<unix time>/`.
pub const REMOVED_SAVED_PREFIX: &str = "removed-data-";
/// How long `--members` shows a node that left.
const LEFT_SHOWN_FOR: Duration = Duration::from_secs(24 * 3600);
/// The most removal records kept (oldest dropped): ids are never reused,
/// so an old record only matters while that machine might come back.
const MAX_REMOVED_RECORDS: usize = 1000;

/// A member removed by `--remove-node`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemovedNode {
    pub node_id: NodeId,
    pub name: String,
    pub repl_addr: String,
    /// The node the operator asked.
    pub removed_by: String,
    /// Seconds since the Unix epoch.
    pub removed_at: u64,
}

impl std::fmt::Display for RemovedNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (node id {}) was removed from the cluster at {} by `quorate --remove-node` on {}",
            self.name,
            self.node_id,
            unix_to_text(self.removed_at),
            self.removed_by
        )
    }
}

impl RemovedNode {
    /// The `--members` note of the removed node's row.
    fn note(&self) -> String {
        format!(
            "removed at {} by `quorate --remove-node` on {} (node id {}); it may only rejoin as a \
             new member",
            unix_to_text(self.removed_at),
            self.removed_by,
            self.node_id
        )
    }
}

fn unix_to_text(secs: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs as i64)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{secs} s after the epoch"))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A peer asks the leader to remove a member (forwarded `--remove-node`).
#[derive(Debug, Serialize, Deserialize)]
pub struct RemoveRequest {
    pub name: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum RemoveReply {
    Removed(String),
    Refused(String),
    /// Ask this node instead (the leader).
    Redirect(NodeInfo),
}

/// A node once in the membership, as this node saw it.
#[derive(Debug, Clone)]
struct Seen {
    info: NodeInfo,
    /// When it was no longer in the membership (None: still a member).
    left: Option<(Instant, u64)>,
}

/// What this node remembers about the membership beyond Raft's current one.
pub struct MemberBook {
    data_dir: PathBuf,
    seen: Mutex<BTreeMap<NodeId, Seen>>,
    removed: Mutex<Vec<RemovedNode>>,
    /// Set on this node when a peer told it that it was removed.
    removed_self: Mutex<Option<RemovedNode>>,
}

impl MemberBook {
    /// Read the removal records of `data_dir`. A damaged file stops the
    /// node: silently forgetting a removal would readmit the removed node.
    pub fn open(data_dir: &Path) -> Result<MemberBook, super::NodeError> {
        let path = data_dir.join(REMOVED_RECORD_FILE);
        let removed = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| super::NodeError::Io {
                context: format!(
                    "{} is damaged ({e}); it lists the members removed by --remove-node. Repair it \
                     (a JSON list) or move it aside (removed nodes could then rejoin with their old data)",
                    path.display()
                ),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => {
                return Err(super::NodeError::Io {
                    context: format!("cannot read {}", path.display()),
                    source,
                })
            }
        };
        Ok(MemberBook {
            data_dir: data_dir.to_path_buf(),
            seen: Mutex::default(),
            removed: Mutex::new(removed),
            removed_self: Mutex::default(),
        })
    }

    pub fn removed_record(&self, id: NodeId) -> Option<RemovedNode> {
        self.removed
            .lock()
            .ok()
            .and_then(|r| r.iter().find(|r| r.node_id == id).cloned())
    }

    fn removed_records(&self) -> Vec<RemovedNode> {
        self.removed.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Remember a removal durably (idempotent).
    pub fn record_removed(&self, record: RemovedNode) -> std::io::Result<()> {
        let mut removed = self
            .removed
            .lock()
            .map_err(|_| std::io::Error::other("removal records lock poisoned"))?;
        if removed.iter().any(|r| r.node_id == record.node_id) {
            return Ok(());
        }
        removed.push(record);
        if removed.len() > MAX_REMOVED_RECORDS {
            let extra = removed.len() - MAX_REMOVED_RECORDS;
            removed.drain(..extra);
        }
        let body = serde_json::to_vec_pretty(&*removed).map_err(std::io::Error::other)?;
        crate::order::log_store::write_file_durably(&self.data_dir.join(REMOVED_RECORD_FILE), &body)
    }

    /// Give a new member the removal records, so that it recognises a
    /// removed node should it lead later (best effort, bounded).
    pub async fn hand_over_records(
        &self,
        t: &crate::transport::Transport,
        addr: SocketAddr,
        name: &str,
    ) {
        for record in self.removed_records() {
            let Ok(body) = network::encode(&record) else {
                continue;
            };
            if let Err(e) = t
                .call_timeout(
                    addr,
                    Some(name),
                    kind::REMOVED_NOTICE,
                    body,
                    Duration::from_secs(2),
                )
                .await
            {
                tracing::warn!(
                    "could not give {name} the removal record of {}: {e}",
                    record.name
                );
                return;
            }
        }
    }

    pub fn removed_self(&self) -> Option<RemovedNode> {
        self.removed_self.lock().ok().and_then(|r| r.clone())
    }

    /// Note the current membership: members that vanished from it left.
    fn observe(&self, members: &[(NodeId, NodeInfo, bool)]) {
        let Ok(mut seen) = self.seen.lock() else {
            return;
        };
        let now = Instant::now();
        let ids: BTreeSet<NodeId> = members.iter().map(|(id, _, _)| *id).collect();
        for (id, info, _) in members {
            seen.insert(
                *id,
                Seen {
                    info: info.clone(),
                    left: None,
                },
            );
        }
        // An empty view (Raft stopped, not initialised) says nothing about the others.
        if !ids.is_empty() {
            for (id, s) in seen.iter_mut() {
                if s.left.is_none() && !ids.contains(id) {
                    s.left = Some((now, unix_now()));
                }
            }
        }
        seen.retain(|_, s| {
            s.left
                .is_none_or(|(at, _)| now.duration_since(at) < LEFT_SHOWN_FOR)
        });
    }

    fn left_nodes(&self) -> Vec<(NodeId, NodeInfo, u64)> {
        self.seen
            .lock()
            .map(|seen| {
                seen.iter()
                    .filter_map(|(id, s)| s.left.map(|(_, at)| (*id, s.info.clone(), at)))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Whether the members of `set` that are in `alive` are a majority of `set`.
fn majority(set: &BTreeSet<NodeId>, alive: &BTreeSet<NodeId>) -> bool {
    set.intersection(alive).count() * 2 > set.len()
}

/// Whether removing `id` from `voters` leaves a membership that commits the
/// change and keeps a primary component: openraft moves through the joint
/// configuration, so a majority of the old and of the new voters must be alive.
pub(super) fn removal_keeps_quorum(
    voters: &BTreeSet<NodeId>,
    alive: &BTreeSet<NodeId>,
    id: NodeId,
) -> bool {
    let mut after = voters.clone();
    after.remove(&id);
    !after.is_empty() && majority(voters, alive) && majority(&after, alive)
}

/// Keep a removed node's data aside so it starts empty, with a new node id,
/// and rejoins by SST (the marker it wrote when told is the trigger).
pub async fn reset_if_removed(data_dir: &Path) -> Result<(), super::NodeError> {
    let marker = data_dir.join(REMOVED_MARKER_FILE);
    let io = |context: String| move |source| super::NodeError::Io { context, source };
    let bytes = match std::fs::read(&marker) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(format!("cannot read {}", marker.display()))(e)),
    };
    // A damaged marker still says the node was removed; the details are for people.
    let what = serde_json::from_slice::<RemovedNode>(&bytes)
        .map(|r| r.to_string())
        .unwrap_or_else(|_| "this node was removed from the cluster".into());
    let dir = data_dir.join(format!("{REMOVED_SAVED_PREFIX}{}", unix_now()));
    std::fs::create_dir_all(&dir).map_err(io(format!("cannot create {}", dir.display())))?;
    crate::order::fence::move_node_data(data_dir, &dir).map_err(io(format!(
        "cannot move this node's data aside into {}",
        dir.display()
    )))?;
    std::fs::write(
        dir.join("README"),
        format!(
            "{what}.\nEverything this node held when it restarted is kept here: db.sqlite (its \
             database) and log/ (its write-set log, with its old node id). The node itself started \
             empty, with a new node id, and received the cluster's data by SST.\nDelete this \
             directory once you no longer need it.\n"
        ),
    )
    .map_err(io(format!("cannot write the README in {}", dir.display())))?;
    std::fs::remove_file(&marker).map_err(io(format!("cannot remove {}", marker.display())))?;
    tracing::warn!(
        "removed node restarting: {what}. Its database and log are kept in {}; it now starts empty \
         with a new node id and joins as a new member (SST)",
        dir.display()
    );
    Ok(())
}

impl Node {
    fn probe_timeout(&self) -> Duration {
        self.primary_timeout().max(Duration::from_secs(1))
    }

    /// Members the leader heard from within the primary timeout (empty on a follower).
    fn heard_recently(&self) -> BTreeSet<NodeId> {
        let m = self.seq.metrics();
        let within = self.primary_timeout();
        m.heartbeat
            .as_ref()
            .map(|hb| {
                hb.iter()
                    .filter(|(_, t)| t.as_ref().is_some_and(|t| t.elapsed() <= within))
                    .map(|(id, _)| *id)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Follow the membership so that `--members` can show who left.
    pub(super) fn spawn_member_watch(self: &std::sync::Arc<Self>) {
        let node = self.clone();
        tokio::spawn(async move {
            let mut shutdown = node.shutdown_signal();
            loop {
                if node.members.removed_self().is_none() {
                    node.members.observe(&node.seq.members());
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = shutdown.changed() => return,
                }
            }
        });
    }

    /// Every member and every node seen recently, as this node sees them now.
    pub async fn members_view(&self) -> Vec<MemberRow> {
        let me = self.seq.node_id();
        let leader = self.seq.metrics().current_leader;
        let members = if self.members.removed_self().is_some() {
            Vec::new()
        } else {
            self.seq.members()
        };
        self.members.observe(&members);
        let heard = self.heard_recently();
        let others: Vec<(usize, SocketAddr)> = members
            .iter()
            .enumerate()
            .filter(|(_, (id, _, _))| *id != me)
            .filter_map(|(i, (_, info, _))| info.repl_addr.parse().ok().map(|a| (i, a)))
            .collect();
        let reports = match &self.transport {
            Some(t) => {
                let addrs: Vec<SocketAddr> = others.iter().map(|(_, a)| *a).collect();
                probe(t, &addrs, self.probe_timeout()).await
            }
            None => Vec::new(),
        };
        let mut answers: BTreeMap<usize, Option<i64>> = BTreeMap::new();
        for ((i, _), r) in others.iter().zip(&reports) {
            if r.error.is_none() {
                answers.insert(*i, r.seqno);
            }
        }
        let own_seqno = self.store.position().seqno;
        let mut rows: Vec<MemberRow> = members
            .iter()
            .enumerate()
            .map(|(i, (id, info, voter))| {
                let (answered, seqno) = if *id == me {
                    (true, Some(own_seqno))
                } else {
                    match answers.get(&i) {
                        Some(s) => (true, *s),
                        None => (heard.contains(id), None),
                    }
                };
                let role = if info.arbitrator {
                    MemberRole::Arbitrator
                } else if *voter {
                    MemberRole::Voter
                } else {
                    MemberRole::Learner
                };
                let state = match (answered, role) {
                    (false, _) => MemberState::Failed,
                    (true, MemberRole::Learner) => MemberState::Joining,
                    (true, _) => MemberState::Alive,
                };
                let note = (state == MemberState::Failed).then(|| {
                    format!(
                        "not heard from within {} ms; if it is gone for good, `quorate \
                         --remove-node {}` takes it out of the quorum",
                        self.probe_timeout().as_millis(),
                        info.name
                    )
                });
                MemberRow {
                    name: info.name.clone(),
                    node_id: id.to_string(),
                    repl_addr: info.repl_addr.clone(),
                    api_addr: info.api_addr.clone(),
                    role,
                    state,
                    leader: leader == Some(*id),
                    last_committed: seqno,
                    behind: None,
                    note,
                }
            })
            .collect();
        let newest = rows
            .iter()
            .filter(|r| r.role != MemberRole::Arbitrator)
            .filter_map(|r| r.last_committed)
            .max();
        for r in &mut rows {
            // An arbitrator keeps no database: it lags behind nothing.
            if r.role == MemberRole::Arbitrator {
                continue;
            }
            r.behind = r
                .last_committed
                .zip(newest)
                .map(|(s, n)| n.saturating_sub(s));
        }
        rows.sort_by(|a, b| a.name.cmp(&b.name));
        let mut gone: Vec<MemberRow> = Vec::new();
        let removed = self.members.removed_records();
        let member_ids: BTreeSet<NodeId> = members.iter().map(|(id, _, _)| *id).collect();
        let mut listed: BTreeSet<NodeId> = member_ids.clone();
        for (id, info, at) in self.members.left_nodes() {
            if !listed.insert(id) {
                continue;
            }
            let note = match removed.iter().find(|r| r.node_id == id) {
                Some(r) => r.note(),
                None => format!("left the membership at {}", unix_to_text(at)),
            };
            gone.push(left_row(
                id,
                &info.name,
                &info.repl_addr,
                &info.api_addr,
                note,
            ));
        }
        let now = unix_now();
        for r in &removed {
            if now.saturating_sub(r.removed_at) < LEFT_SHOWN_FOR.as_secs()
                && listed.insert(r.node_id)
            {
                gone.push(left_row(r.node_id, &r.name, &r.repl_addr, "", r.note()));
            }
        }
        gone.sort_by(|a, b| a.name.cmp(&b.name));
        rows.extend(gone);
        rows
    }

    /// `--remove-node NAME` on the node the operator asked: done by the
    /// leader, which this node asks when it is not the leader itself.
    pub async fn remove_node(&self, name: &str) -> Result<String, String> {
        if let Some(r) = self.members.removed_self() {
            return Err(format!("this node is not a member any more: {r}"));
        }
        if !self.is_primary() {
            return Err(format!(
                "this node is not Primary: a membership change needs a primary component (a majority \
                 of the members alive). {}",
                self.not_primary_reason(false)
                    .unwrap_or_else(|| "`quorate --show-cluster-status` shows why.".into())
            ));
        }
        let me = self.seq.node_id();
        let mut hops = 0;
        loop {
            let Some((leader, info)) = self.leader_info() else {
                return Err("no leader is known right now; try again in a moment".into());
            };
            if leader == me {
                return self.remove_member(name, &self.config.node_name).await;
            }
            let (Some(t), Ok(addr)) = (&self.transport, info.repl_addr.parse::<SocketAddr>())
            else {
                return Err(format!("the leader {} has no usable address", info.name));
            };
            let body = network::encode(&RemoveRequest {
                name: name.to_string(),
            })?;
            let reply = t
                .call_timeout(
                    addr,
                    Some(&info.name),
                    kind::REMOVE,
                    body,
                    Duration::from_secs(20),
                )
                .await
                .map_err(|e| format!("cannot ask the leader {}: {e}", info.name))?;
            match network::decode::<RemoveReply>(&reply)? {
                RemoveReply::Removed(summary) => return Ok(summary),
                RemoveReply::Refused(why) => return Err(why),
                RemoveReply::Redirect(_) if hops < 3 => {
                    hops += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                RemoveReply::Redirect(l) => {
                    return Err(format!(
                        "leadership is moving ({} leads now); try again",
                        l.name
                    ))
                }
            }
        }
    }

    /// A peer's forwarded `--remove-node`.
    pub(super) async fn handle_remove(
        &self,
        peer: &crate::transport::PeerIdentity,
        body: &[u8],
    ) -> Result<bytes::Bytes, String> {
        let req: RemoveRequest = network::decode(body)?;
        if !self
            .seq
            .members()
            .iter()
            .any(|(_, info, _)| info.name == peer.node_name)
        {
            return network::encode(&RemoveReply::Refused(format!(
                "{} is not a member; only a member may remove another",
                peer.node_name
            )));
        }
        let reply = match self.leader_info() {
            Some((leader, _)) if leader == self.seq.node_id() => {
                match self.remove_member(&req.name, &peer.node_name).await {
                    Ok(s) => RemoveReply::Removed(s),
                    Err(e) => RemoveReply::Refused(e),
                }
            }
            Some((_, info)) => RemoveReply::Redirect(info),
            None => RemoveReply::Refused("no leader is known right now; try again".into()),
        };
        network::encode(&reply)
    }

    /// On the leader: remove `name` if it is gone and the rest keep a quorum.
    async fn remove_member(&self, name: &str, asked_by: &str) -> Result<String, String> {
        let me = self.seq.node_id();
        let members = self.seq.members();
        let Some((id, info, voter)) = members.iter().find(|(_, i, _)| i.name == name).cloned()
        else {
            let mut known: Vec<&str> = members.iter().map(|(_, i, _)| i.name.as_str()).collect();
            known.sort_unstable();
            if let Some(r) = self
                .members
                .removed_records()
                .into_iter()
                .rev()
                .find(|r| r.name == name)
            {
                return Err(format!("{name} is not a member: {r}"));
            }
            return Err(format!(
                "no member is named {name:?}; the members are: {}",
                known.join(", ")
            ));
        };
        let stop_instead = format!(
            "stop it gracefully instead (`systemctl stop quorated` or SIGTERM on {name}): a graceful \
             stop takes it out of the membership by itself. --remove-node is for a node that is gone \
             for good"
        );
        if id == me {
            return Err(format!(
                "{name} is alive: it is the leader handling this request; {stop_instead}"
            ));
        }
        let heard = self.heard_recently();
        if heard.contains(&id) {
            return Err(format!(
                "{name} is alive: the leader heard from it within the last {} ms; {stop_instead}",
                self.primary_timeout().as_millis()
            ));
        }
        if let (Some(t), Ok(addr)) = (&self.transport, info.repl_addr.parse::<SocketAddr>()) {
            let report = probe(t, &[addr], self.probe_timeout()).await;
            if report.first().is_some_and(|r| r.error.is_none()) {
                return Err(format!(
                    "{name} is alive: it answers at {addr}; {stop_instead}"
                ));
            }
        }
        let voters = self.seq.voters();
        let mut alive: BTreeSet<NodeId> = heard;
        alive.insert(me);
        if voter && !removal_keeps_quorum(&voters, &alive, id) {
            let remaining = voters.len() - 1;
            let reachable = voters
                .iter()
                .filter(|v| **v != id && alive.contains(v))
                .count();
            return Err(format!(
                "removing {name} would lose quorum: {remaining} members would remain, of which only \
                 {reachable} answer the leader (a majority is {}). Bring members back first",
                remaining / 2 + 1
            ));
        }
        let ids: BTreeSet<NodeId> = [id].into_iter().collect();
        let change = if voter {
            ChangeMembers::RemoveVoters(ids)
        } else {
            ChangeMembers::RemoveNodes(ids)
        };
        tokio::time::timeout(
            Duration::from_secs(10),
            self.seq.raft().change_membership(change, false),
        )
        .await
        .map_err(|_| format!("removing {name}: the change did not commit within 10 s"))?
        .map_err(|e| format!("removing {name}: {e}"))?;
        let record = RemovedNode {
            node_id: id,
            name: name.to_string(),
            repl_addr: info.repl_addr.clone(),
            removed_by: asked_by.to_string(),
            removed_at: unix_now(),
        };
        if let Err(e) = self.members.record_removed(record.clone()) {
            tracing::error!(
                "removed {name}, but cannot record it in {REMOVED_RECORD_FILE}: {e}; if it comes back \
                 this node would not recognise it"
            );
        }
        self.tell_members_removed(&record).await;
        match serde_json::to_string(&record) {
            Ok(json) => {
                if let Err(e) = self
                    .seq
                    .record_removal(id, json, Duration::from_secs(10))
                    .await
                {
                    tracing::warn!(
                        "removed {name}, but the removal record did not reach the log ({e}); the \
                         members told directly still refuse it"
                    );
                }
            }
            Err(e) => tracing::warn!("cannot encode the removal record of {name}: {e}"),
        }
        let left = self.seq.members();
        let mut names: Vec<&str> = left.iter().map(|(_, i, _)| i.name.as_str()).collect();
        names.sort_unstable();
        let voters_left = left.iter().filter(|(_, _, v)| *v).count();
        tracing::warn!(
            removed = %name,
            node_id = id,
            "member removed: {name} (node id {id}), asked on {asked_by}; {voters_left} members remain: {}",
            names.join(", ")
        );
        let mut summary = format!(
            "removed {name} (node id {id}) from the membership; {voters_left} members remain: {}.",
            names.join(", ")
        );
        match voters_left {
            1 => summary
                .push_str(" A cluster of one has no redundancy: add nodes (each joins by SST)."),
            2 => summary.push_str(
                " A cluster of two cannot lose another member and keep serving: add a third node \
                 or an arbitrator.",
            ),
            _ => {}
        }
        summary.push_str(&format!(
            " If {name} comes back it is not readmitted with its old data: it keeps that aside and \
             rejoins as a new member by SST after `quorate --restart-node`."
        ));
        Ok(summary)
    }

    /// Give the removal record to every other member, so that whoever leads
    /// later recognises the removed node (best effort, bounded).
    async fn tell_members_removed(&self, record: &RemovedNode) {
        let Some(t) = &self.transport else {
            return;
        };
        let Ok(body) = network::encode(record) else {
            return;
        };
        let me = self.seq.node_id();
        let calls = self
            .seq
            .members()
            .into_iter()
            .filter(|(id, _, _)| *id != me)
            .filter_map(|(_, info, _)| info.repl_addr.parse().ok().map(|a| (a, info.name)))
            .map(|(addr, name): (SocketAddr, String)| {
                let body = body.clone();
                async move {
                    let r = t
                        .call_timeout(addr, Some(&name), kind::REMOVED_NOTICE, body, Duration::from_secs(2))
                        .await;
                    if let Err(e) = r {
                        tracing::warn!(
                            "could not tell {name} of the removal of {}: {e}; it learns it only if it \
                             leads when that node comes back",
                            record.name
                        );
                    }
                }
            });
        futures::future::join_all(calls).await;
    }

    /// The removal record of `id`: from the database (replicated through
    /// the log) or from `removed-members.json` (told directly).
    pub(super) fn removed_member(&self, id: NodeId) -> Option<RemovedNode> {
        if let Some(record) = self.members.removed_record(id) {
            return Some(record);
        }
        match self.store.removed_member(id) {
            Ok(Some(json)) => match serde_json::from_str(&json) {
                Ok(record) => Some(record),
                Err(e) => {
                    tracing::warn!(
                        "the removal record of node id {id} is unreadable ({e}): {json}"
                    );
                    None
                }
            },
            Ok(None) => None,
            Err(e) => {
                tracing::warn!("cannot read the removal records: {e}");
                None
            }
        }
    }

    /// A member passes on a removal record.
    pub(super) fn handle_removed_notice(
        &self,
        peer: &crate::transport::PeerIdentity,
        body: &[u8],
    ) -> Result<bytes::Bytes, String> {
        let record: RemovedNode = network::decode(body)?;
        // Only the leader removes members, so only it hands out the records.
        match self.leader_info() {
            Some((_, leader)) if leader.name == peer.node_name => {}
            _ => {
                return Err(format!(
                    "{} is not the leader; only the leader passes on removals",
                    peer.node_name
                ))
            }
        }
        if record.node_id == self.seq.node_id() {
            return Err("a node cannot be told it removed itself".into());
        }
        self.members
            .record_removed(record)
            .map_err(|e| format!("cannot record the removal: {e}"))?;
        network::encode(&())
    }

    /// A peer said this node was removed: stop taking part, durably, and say
    /// what to do.
    pub(super) async fn learn_removed(&self, record: RemovedNode) {
        if record.node_id != self.seq.node_id() {
            tracing::warn!("a peer said {record}, but that is not this node's id; ignored");
            return;
        }
        {
            let Ok(mut me) = self.members.removed_self.lock() else {
                return;
            };
            if me.is_some() {
                return;
            }
            *me = Some(record.clone());
        }
        tracing::error!(
            "REMOVED: {record}. It is not readmitted with its old data. Run `quorate --restart-node`: \
             it keeps its database and log aside under {}/{REMOVED_SAVED_PREFIX}* and rejoins as a \
             new member, receiving the cluster's data by SST",
            self.config.data_dir.display()
        );
        let marker = self.config.data_dir.join(REMOVED_MARKER_FILE);
        match serde_json::to_vec_pretty(&record) {
            Ok(body) => {
                if let Err(e) = crate::order::log_store::write_file_durably(&marker, &body) {
                    tracing::error!("cannot write {}: {e}", marker.display());
                }
            }
            Err(e) => tracing::error!("cannot write {}: {e}", marker.display()),
        }
        super::notify::notify(
            "STATUS=removed from the cluster; restart with quorate --restart-node to rejoin as a new member",
        );
        self.seq.shutdown().await;
    }

    /// Why this member is not Primary, and what the operator can do, in
    /// plain words; `None` when it is Primary or has nothing to explain.
    pub(super) fn not_primary_reason(&self, primary: bool) -> Option<String> {
        if let Some(r) = self.members.removed_self() {
            return Some(format!(
                "{r}; this node takes no part any more. Run `quorate --restart-node`: it keeps its \
                 data aside under {}/{REMOVED_SAVED_PREFIX}* and rejoins as a new member by SST",
                self.config.data_dir.display()
            ));
        }
        if primary || self.seq.fence().is_fenced() {
            return None;
        }
        if let Some(fault) = self.seq.storage_fault() {
            return Some(fault);
        }
        let me = self.seq.node_id();
        let members = self.seq.members();
        let voters: Vec<&(NodeId, NodeInfo, bool)> = members.iter().filter(|m| m.2).collect();
        if !voters.iter().any(|(id, _, _)| *id == me) {
            return None;
        }
        if voters.len() == 2 && !voters.iter().any(|(_, i, _)| i.arbitrator) {
            let other = voters
                .iter()
                .find(|(id, _, _)| *id != me)
                .map(|(_, i, _)| i.name.clone())
                .unwrap_or_default();
            return Some(format!(
                "this node is one of the 2 members of the cluster and does not reach the other, \
                 {other}. With two members a majority is both of them: a node alone cannot tell a \
                 dead peer from a network split, and if both halves served alone their data would \
                 diverge, so it stops serving clients. What to do: start {other} again (it rejoins \
                 by itself); if {other} is gone for good and certainly not serving, continue from \
                 this node alone with `quorate --force-safe-to-bootstrap` then `quorate \
                 --bootstrap-node` (risk: if {other} is in fact alive and took writes, they are \
                 fenced off and saved aside when the two meet, not merged); to survive the loss of \
                 one node in future, run a third node or an arbitrator"
            ));
        }
        if voters.len() > 2 {
            return Some(format!(
                "this node does not reach a majority ({} of the {} members) within \
                 primary_timeout_ms; it serves again as soon as enough members are back. `quorate \
                 --members` shows which ones answer; a member gone for good is taken out of the \
                 quorum with `quorate --remove-node NAME` on a Primary node",
                voters.len() / 2 + 1,
                voters.len()
            ));
        }
        None
    }
}

fn left_row(id: NodeId, name: &str, repl: &str, api: &str, note: String) -> MemberRow {
    MemberRow {
        name: name.to_string(),
        node_id: id.to_string(),
        repl_addr: repl.to_string(),
        api_addr: api.to_string(),
        role: MemberRole::Voter,
        state: MemberState::Left,
        leader: false,
        last_committed: None,
        behind: None,
        note: Some(note),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    #[test]
    fn removal_quorum_rule() {
        // 3 members, one dead: removing it leaves 2 of 2 alive.
        assert!(removal_keeps_quorum(&set(&[1, 2, 3]), &set(&[1, 2]), 3));
        // 3 members, two dead: no quorum to commit anything.
        assert!(!removal_keeps_quorum(&set(&[1, 2, 3]), &set(&[1]), 3));
        // 2 members, one dead: the joint configuration needs both.
        assert!(!removal_keeps_quorum(&set(&[1, 2]), &set(&[1]), 2));
        // 5 members, two dead: 3 of the remaining 4 answer.
        assert!(removal_keeps_quorum(
            &set(&[1, 2, 3, 4, 5]),
            &set(&[1, 2, 3]),
            5
        ));
        // 4 members, two dead: no majority of the old four.
        assert!(!removal_keeps_quorum(&set(&[1, 2, 3, 4]), &set(&[1, 2]), 4));
        // The last member is never removed.
        assert!(!removal_keeps_quorum(&set(&[1]), &set(&[1]), 1));
    }

    #[test]
    fn removal_records_persist_and_a_damaged_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let book = MemberBook::open(dir.path()).unwrap();
        let r = RemovedNode {
            node_id: 7,
            name: "node-c".into(),
            repl_addr: "10.0.0.3:4567".into(),
            removed_by: "node-a".into(),
            removed_at: 1_700_000_000,
        };
        book.record_removed(r.clone()).unwrap();
        book.record_removed(r.clone()).unwrap();
        let again = MemberBook::open(dir.path()).unwrap();
        assert_eq!(again.removed_record(7), Some(r.clone()));
        assert_eq!(again.removed_records().len(), 1);
        assert!(r.to_string().contains("2023-11-14T22:13:20Z"), "{r}");

        std::fs::write(dir.path().join(REMOVED_RECORD_FILE), b"[{oops").unwrap();
        let err = MemberBook::open(dir.path()).err().unwrap().to_string();
        assert!(err.contains("removed-members.json is damaged"), "{err}");
    }

    #[tokio::test]
    async fn a_removed_node_keeps_its_data_aside_on_restart() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("db.sqlite"), b"old data").unwrap();
        std::fs::create_dir(dir.path().join("log")).unwrap();
        std::fs::write(dir.path().join("log/node-id"), b"7\n").unwrap();
        reset_if_removed(dir.path()).await.unwrap();
        assert!(
            dir.path().join("db.sqlite").exists(),
            "no marker: untouched"
        );

        std::fs::write(dir.path().join(REMOVED_MARKER_FILE), b"{}").unwrap();
        reset_if_removed(dir.path()).await.unwrap();
        assert!(!dir.path().join("db.sqlite").exists());
        assert!(!dir.path().join("log").exists());
        assert!(!dir.path().join(REMOVED_MARKER_FILE).exists());
        let saved: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(REMOVED_SAVED_PREFIX)
            })
            .collect();
        assert_eq!(saved.len(), 1);
        let saved = saved[0].path();
        assert_eq!(std::fs::read(saved.join("db.sqlite")).unwrap(), b"old data");
        assert_eq!(std::fs::read(saved.join("log/node-id")).unwrap(), b"7\n");
        assert!(std::fs::read_to_string(saved.join("README"))
            .unwrap()
            .contains("new node id"));
    }
}
