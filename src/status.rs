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

/// What a peer said about itself when a non-Primary node asked (or why it
/// did not answer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerReport {
    pub addr: String,
    pub node_name: Option<String>,
    pub state_uuid: Option<Uuid>,
    pub seqno: Option<i64>,
    pub incarnation: Option<u64>,
    pub safe_to_bootstrap: Option<bool>,
    pub primary: Option<bool>,
    pub error: Option<String>,
    /// Where the peer's incarnation forked from the previous one (fencing).
    #[serde(default)]
    pub fork_index: Option<u64>,
}

/// Which node an operator should bootstrap, judged from what is reachable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootstrapAdvice {
    /// A primary component exists: join it (restart this node), do not bootstrap.
    JoinPrimary(String),
    /// This node (or the named one) has safe_to_bootstrap: 1 or the most advanced data.
    Bootstrap { node: String, why: String },
    /// Nothing to compare (no data anywhere reachable).
    Unknown,
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
    /// Filled on a node that is not Primary: what each configured peer said.
    #[serde(default)]
    pub peers: Vec<PeerReport>,
    /// Set when a newer incarnation fenced this node (DESIGN.md §4): who and why.
    #[serde(default)]
    pub fenced: Option<String>,
    /// Where a fenced node's restart saved what it held (until the operator removes it).
    #[serde(default)]
    pub fence_saved: Option<String>,
    /// Why a member is not Primary and what the operator can do, in plain words
    /// (a cluster of two whose peer died, a removed node, a lost majority).
    #[serde(default)]
    pub not_primary_reason: Option<String>,
    /// An arbitrator (Galera's garbd): votes, holds no data, serves no clients.
    #[serde(default)]
    pub arbitrator: bool,
}

/// What a member does in the cluster (`quorate --members`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberRole {
    Voter,
    /// Receives the write-sets but does not vote yet (a joiner catching up).
    Learner,
    /// Votes, keeps no database, serves no clients (Galera's garbd).
    Arbitrator,
}

/// How a member is doing, as the node asked sees it (`consul members`' words).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    /// Answers, and counts for the quorum.
    Alive,
    /// No longer a member: it stopped gracefully or was removed.
    Left,
    /// A member that did not answer within the primary timeout.
    Failed,
    /// Admitted, catching up (IST or SST) before it votes.
    Joining,
}

/// One line of `quorate --members` (and the extra fields of `/nodes`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberRow {
    pub name: String,
    /// Decimal, as a string: JSON readers lose precision on u64 numbers.
    pub node_id: String,
    pub repl_addr: String,
    pub api_addr: String,
    pub role: MemberRole,
    pub state: MemberState,
    pub leader: bool,
    /// The member's last committed seqno, when it answered.
    pub last_committed: Option<i64>,
    /// How many write-sets it lags behind the most advanced member that answered.
    pub behind: Option<i64>,
    /// Why it is in that state, when that helps (who removed it, when it left).
    pub note: Option<String>,
}

impl std::fmt::Display for MemberRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MemberRole::Voter => "voter",
            MemberRole::Learner => "learner",
            MemberRole::Arbitrator => "arbitrator",
        })
    }
}

impl std::fmt::Display for MemberState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MemberState::Alive => "alive",
            MemberState::Left => "left",
            MemberState::Failed => "failed",
            MemberState::Joining => "joining",
        })
    }
}

/// The `quorate --members` table: one aligned line per node, like
/// `consul members`; the leader is marked with `*`, notes follow the table.
pub fn render_members(rows: &[MemberRow]) -> String {
    let header = ["Node", "Address", "API", "Role", "State", "Seqno", "Behind"];
    let lines: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            [
                if r.leader {
                    format!("{}*", r.name)
                } else {
                    r.name.clone()
                },
                r.repl_addr.clone(),
                r.api_addr.clone(),
                r.role.to_string(),
                r.state.to_string(),
                r.last_committed
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "-".into()),
                r.behind
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for line in &lines {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let format_line = |cells: &[String]| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = format_line(&header.map(String::from));
    for line in &lines {
        out.push_str(&format_line(line));
    }
    if rows.iter().any(|r| r.leader) {
        out.push_str("* leader (orders the write-sets)\n");
    }
    for r in rows {
        if let Some(note) = &r.note {
            out.push_str(&format!("{}: {note}\n", r.name));
        }
    }
    out
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
    /// Every status row, sorted by name like MariaDB's
    /// `SHOW STATUS LIKE 'wsrep%'`. Values are as the table shows them:
    /// booleans as `ON`/`OFF`, `quorate_safe_to_bootstrap` as `0`/`1` (as in
    /// grastate.dat), no leader as an empty value.
    pub fn wsrep_rows(&self) -> Vec<(&'static str, String)> {
        let mut rows = vec![
            ("wsrep_cluster_conf_id", self.cluster_conf_id.to_string()),
            ("wsrep_cluster_size", self.cluster_size.to_string()),
            (
                "wsrep_cluster_state_uuid",
                self.cluster_state_uuid.hyphenated().to_string(),
            ),
            ("wsrep_cluster_status", self.cluster_status.to_string()),
            ("wsrep_connected", on_off(self.connected).to_string()),
            ("wsrep_gcomm_uuid", self.gcomm_uuid.hyphenated().to_string()),
            ("wsrep_last_committed", self.last_committed.to_string()),
            (
                "wsrep_local_state_uuid",
                self.local_state_uuid.hyphenated().to_string(),
            ),
            ("wsrep_ready", on_off(self.ready).to_string()),
            ("wsrep_local_state_comment", self.local_state.to_string()),
            (
                "wsrep_local_cert_failures",
                self.local_cert_failures.to_string(),
            ),
            (
                "wsrep_incoming_addresses",
                self.incoming_addresses.join(","),
            ),
            (
                "wsrep_flow_control_paused",
                format!("{:.6}", self.flow_control_fraction()),
            ),
            ("quorate_incarnation", self.incarnation.to_string()),
            ("quorate_leader", self.leader.clone().unwrap_or_default()),
            (
                "quorate_safe_to_bootstrap",
                u8::from(self.safe_to_bootstrap).to_string(),
            ),
            ("quorate_node_name", self.node_name.clone()),
        ];
        if let Some(f) = &self.fenced {
            rows.push(("quorate_fenced", f.clone()));
        }
        if let Some(f) = &self.fence_saved {
            rows.push(("quorate_fence_saved", f.clone()));
        }
        if self.arbitrator {
            rows.push(("quorate_role", "arbitrator".into()));
        }
        rows.sort_by(|a, b| a.0.cmp(b.0));
        rows
    }

    /// The `--show-cluster-status` table (DESIGN.md §6).
    pub fn render_table(&self) -> String {
        let mut out = render_status_table(&self.wsrep_rows());
        if let Some(r) = &self.not_primary_reason {
            out.push_str(&format!("\nWhy this node is not Primary: {r}\n"));
        }
        if !self.peers.is_empty() {
            out.push_str("\nPeers (uuid:seqno:incarnation), as this node sees them:\n");
            for p in &self.peers {
                let name = p.node_name.clone().unwrap_or_else(|| "?".into());
                match (&p.error, p.state_uuid, p.seqno) {
                    (Some(e), _, _) => {
                        out.push_str(&format!("  {:<12} {:<22} unreachable: {e}\n", name, p.addr))
                    }
                    (None, Some(u), Some(s)) => out.push_str(&format!(
                        "  {:<12} {:<22} {u}:{s}:{}  {}  safe_to_bootstrap: {}\n",
                        name,
                        p.addr,
                        p.incarnation.unwrap_or(0),
                        if p.primary == Some(true) {
                            "Primary"
                        } else {
                            "non-Primary"
                        },
                        u8::from(p.safe_to_bootstrap == Some(true)),
                    )),
                    _ => out.push_str(&format!("  {:<12} {:<22} no answer\n", name, p.addr)),
                }
            }
            match self.bootstrap_advice() {
                BootstrapAdvice::JoinPrimary(n) => out.push_str(&format!(
                    "A primary component exists at {n}: do not bootstrap; restart this node (quorate --restart-node) to join it.\n"
                )),
                BootstrapAdvice::Bootstrap { node, why } => {
                    out.push_str(&format!("Node to bootstrap: {node} ({why}).\n"))
                }
                BootstrapAdvice::Unknown => {}
            }
        }
        out
    }

    /// Galera's rule made explicit: never bootstrap while a primary component
    /// exists; else the node with safe_to_bootstrap: 1; else the most advanced
    /// data (highest incarnation, then seqno) among this node and its peers.
    pub fn bootstrap_advice(&self) -> BootstrapAdvice {
        if let Some(p) = self.peers.iter().find(|p| p.primary == Some(true)) {
            return BootstrapAdvice::JoinPrimary(
                p.node_name.clone().unwrap_or_else(|| p.addr.clone()),
            );
        }
        let mut candidates: Vec<(String, u64, i64, bool)> = Vec::new();
        // An arbitrator holds no data to start a cluster from.
        if !self.local_state_uuid.is_nil() && !self.arbitrator {
            candidates.push((
                self.node_name.clone(),
                self.incarnation,
                self.last_committed,
                self.safe_to_bootstrap,
            ));
        }
        for p in &self.peers {
            if let (Some(name), Some(u), Some(s)) = (&p.node_name, p.state_uuid, p.seqno) {
                if !u.is_nil() {
                    candidates.push((
                        name.clone(),
                        p.incarnation.unwrap_or(0),
                        s,
                        p.safe_to_bootstrap == Some(true),
                    ));
                }
            }
        }
        if let Some(c) = candidates.iter().find(|c| c.3) {
            return BootstrapAdvice::Bootstrap {
                node: c.0.clone(),
                why: "it has safe_to_bootstrap: 1".into(),
            };
        }
        candidates.sort_by(|a, b| (b.1, b.2).cmp(&(a.1, a.2)).then(a.0.cmp(&b.0)));
        let silent: Vec<&str> = self
            .peers
            .iter()
            .filter(|p| p.error.is_some())
            .map(|p| p.addr.as_str())
            .collect();
        match candidates.first() {
            Some(c) => BootstrapAdvice::Bootstrap {
                node: c.0.clone(),
                why: if silent.is_empty() {
                    format!(
                        "the most advanced data: incarnation {}, seqno {}; force it with --force-safe-to-bootstrap",
                        c.1, c.2
                    )
                } else {
                    format!(
                        "the most advanced data of the nodes that answered: incarnation {}, seqno {}; but {} did \
                         not answer and the last one out (safe_to_bootstrap: 1) may be among them: start those \
                         first, and force only if they are lost",
                        c.1,
                        c.2,
                        silent.join(", ")
                    )
                },
            },
            None => BootstrapAdvice::Unknown,
        }
    }

    /// The rows of [`ClusterStatus::wsrep_rows`] as one JSON object for
    /// `--show-cluster-status --json` and scripts: the same names; counters,
    /// seqnos, `wsrep_flow_control_paused` and `quorate_safe_to_bootstrap`
    /// (0/1) as JSON numbers; `wsrep_connected` and `wsrep_ready` as the
    /// strings `"ON"`/`"OFF"` exactly as the table prints them, so a script
    /// can compare against what an operator sees; `quorate_leader` is `null`
    /// when there is no leader.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = self.wsrep_json();
        if let Some(f) = &self.fenced {
            v["quorate_fenced"] = f.clone().into();
        }
        if let Some(f) = &self.fence_saved {
            v["quorate_fence_saved"] = f.clone().into();
        }
        if let Some(r) = &self.not_primary_reason {
            v["quorate_not_primary_reason"] = r.clone().into();
        }
        if self.arbitrator {
            v["quorate_role"] = "arbitrator".into();
        }
        if !self.peers.is_empty() {
            v["quorate_peers"] = serde_json::to_value(&self.peers).unwrap_or_default();
            v["quorate_bootstrap_advice"] = match self.bootstrap_advice() {
                BootstrapAdvice::JoinPrimary(n) => serde_json::json!({"join_primary": n}),
                BootstrapAdvice::Bootstrap { node, why } => {
                    serde_json::json!({"bootstrap": node, "why": why})
                }
                BootstrapAdvice::Unknown => serde_json::Value::Null,
            };
        }
        v
    }

    fn wsrep_json(&self) -> serde_json::Value {
        serde_json::json!({
            "wsrep_cluster_conf_id": self.cluster_conf_id,
            "wsrep_cluster_size": self.cluster_size,
            "wsrep_cluster_state_uuid": self.cluster_state_uuid.hyphenated().to_string(),
            "wsrep_cluster_status": self.cluster_status.to_string(),
            "wsrep_connected": on_off(self.connected),
            "wsrep_gcomm_uuid": self.gcomm_uuid.hyphenated().to_string(),
            "wsrep_last_committed": self.last_committed,
            "wsrep_local_state_uuid": self.local_state_uuid.hyphenated().to_string(),
            "wsrep_ready": on_off(self.ready),
            "wsrep_local_state_comment": self.local_state.to_string(),
            "wsrep_local_cert_failures": self.local_cert_failures,
            "wsrep_incoming_addresses": self.incoming_addresses.join(","),
            "wsrep_flow_control_paused": self.flow_control_fraction(),
            "quorate_incarnation": self.incarnation,
            "quorate_leader": self.leader,
            "quorate_safe_to_bootstrap": u8::from(self.safe_to_bootstrap),
            "quorate_node_name": self.node_name,
        })
    }

    /// A fraction computed as 0/0 over an idle interval would print as NaN,
    /// which is neither valid JSON nor what Galera shows for "never paused".
    fn flow_control_fraction(&self) -> f64 {
        if self.flow_control_paused.is_finite() {
            self.flow_control_paused
        } else {
            0.0
        }
    }
}

/// A MySQL-client-style two-column table of `(Variable_name, Value)` rows.
/// Columns are as wide as their widest cell, never narrower than the header.
pub fn render_status_table(rows: &[(&str, String)]) -> String {
    const NAME: &str = "Variable_name";
    const VALUE: &str = "Value";
    let name_width = rows
        .iter()
        .map(|(n, _)| n.chars().count())
        .chain([NAME.len()])
        .max();
    let value_width = rows
        .iter()
        .map(|(_, v)| v.chars().count())
        .chain([VALUE.len()])
        .max();
    // `chain` guarantees at least one element; the fallbacks are unreachable.
    let (nw, vw) = (
        name_width.unwrap_or(NAME.len()),
        value_width.unwrap_or(VALUE.len()),
    );

    let rule = format!("+{}+{}+\n", "-".repeat(nw + 2), "-".repeat(vw + 2));
    let line = |n: &str, v: &str| format!("| {n:<nw$} | {v:<vw$} |\n");
    let mut out = String::new();
    out.push_str(&rule);
    out.push_str(&line(NAME, VALUE));
    out.push_str(&rule);
    for (n, v) in rows {
        out.push_str(&line(n, v));
    }
    out.push_str(&rule);
    out
}

fn on_off(b: bool) -> &'static str {
    if b {
        "ON"
    } else {
        "OFF"
    }
}

impl std::fmt::Display for ComponentStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ComponentStatus::Primary => "Primary",
            ComponentStatus::NonPrimary => "non-Primary",
            ComponentStatus::Disconnected => "Disconnected",
        })
    }
}

impl std::fmt::Display for LocalState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LocalState::Initialized => "Initialized",
            LocalState::Joining => "Joining",
            LocalState::Joiner => "Joiner",
            LocalState::Joined => "Joined",
            LocalState::Synced => "Synced",
            LocalState::Donor => "Donor",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DESIGN_TABLE: &str = "\
+--------------------------+--------------------------------------+
| Variable_name            | Value                                |
+--------------------------+--------------------------------------+
| wsrep_cluster_conf_id    | 2                                    |
| wsrep_cluster_size       | 2                                    |
| wsrep_cluster_state_uuid | 8348d5ea-5664-11e7-8628-262d8bf5ad3d |
| wsrep_cluster_status     | Primary                              |
| wsrep_connected          | ON                                   |
| wsrep_gcomm_uuid         | ea4e26e9-5678-11e7-bc53-3e334c415aa8 |
| wsrep_last_committed     | 4                                    |
| wsrep_local_state_uuid   | 8348d5ea-5664-11e7-8628-262d8bf5ad3d |
| wsrep_ready              | ON                                   |
+--------------------------+--------------------------------------+
";

    fn peer(name: &str, seqno: i64, safe: bool, primary: bool) -> PeerReport {
        PeerReport {
            addr: format!("10.0.0.{seqno}:4567"),
            node_name: Some(name.into()),
            state_uuid: Some(Uuid::from_u128(7)),
            seqno: Some(seqno),
            incarnation: Some(0),
            safe_to_bootstrap: Some(safe),
            primary: Some(primary),
            error: None,
            fork_index: None,
        }
    }

    #[test]
    fn bootstrap_advice_follows_galeras_rules() {
        let mut me = example();
        me.node_name = "node-c".into();
        me.local_state_uuid = Uuid::from_u128(7);
        me.last_committed = 5;
        me.incarnation = 0;
        me.safe_to_bootstrap = false;
        // A primary component exists: join it, never bootstrap.
        me.peers = vec![
            peer("node-a", 9, false, true),
            peer("node-b", 3, true, false),
        ];
        assert_eq!(
            me.bootstrap_advice(),
            BootstrapAdvice::JoinPrimary("node-a".into())
        );
        // No primary: the safe node wins even with less data.
        me.peers = vec![
            peer("node-a", 9, false, false),
            peer("node-b", 3, true, false),
        ];
        assert!(
            matches!(me.bootstrap_advice(), BootstrapAdvice::Bootstrap { node, .. } if node == "node-b")
        );
        // Nobody safe (a full crash): the most advanced data.
        me.peers = vec![
            peer("node-a", 9, false, false),
            peer("node-b", 3, false, false),
        ];
        assert!(
            matches!(me.bootstrap_advice(), BootstrapAdvice::Bootstrap { node, .. } if node == "node-a")
        );
        me.last_committed = 12;
        assert!(
            matches!(me.bootstrap_advice(), BootstrapAdvice::Bootstrap { node, .. } if node == "node-c")
        );
        let table = me.render_table();
        assert!(table.contains("Node to bootstrap: node-c"), "{table}");
        assert!(
            table.contains("00000000-0000-0000-0000-000000000007:9:0"),
            "{table}"
        );
        let json = me.to_json();
        assert_eq!(json["quorate_bootstrap_advice"]["bootstrap"], "node-c");
    }

    #[test]
    fn members_table_is_aligned_and_marks_the_leader() {
        let row = |name: &str, state: MemberState, seqno: Option<i64>, leader: bool| MemberRow {
            name: name.into(),
            node_id: "7".into(),
            repl_addr: "10.0.0.1:4567".into(),
            api_addr: "http://10.0.0.1:4001".into(),
            role: MemberRole::Voter,
            state,
            leader,
            last_committed: seqno,
            behind: seqno.map(|s| 12 - s),
            note: (state == MemberState::Left).then(|| "left the membership".into()),
        };
        let table = render_members(&[
            row("node-a", MemberState::Alive, Some(12), true),
            row("node-bb", MemberState::Failed, None, false),
            row("node-c", MemberState::Left, None, false),
        ]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0],
            "Node     Address        API                   Role   State   Seqno  Behind"
        );
        assert_eq!(
            lines[1],
            "node-a*  10.0.0.1:4567  http://10.0.0.1:4001  voter  alive   12     0"
        );
        assert_eq!(
            lines[2],
            "node-bb  10.0.0.1:4567  http://10.0.0.1:4001  voter  failed  -      -"
        );
        assert_eq!(lines[4], "* leader (orders the write-sets)");
        assert_eq!(lines[5], "node-c: left the membership");
        let json = serde_json::to_value(row("n", MemberState::Joining, None, false)).unwrap();
        assert_eq!(json["state"], "joining");
        assert_eq!(json["role"], "voter");
    }

    #[test]
    fn an_arbitrator_is_never_the_node_to_bootstrap() {
        let mut me = example();
        me.arbitrator = true;
        me.node_name = "arb".into();
        me.last_committed = 99;
        me.peers = vec![peer("node-a", 3, false, false)];
        assert!(
            matches!(me.bootstrap_advice(), BootstrapAdvice::Bootstrap { node, .. } if node == "node-a")
        );
        // An arbitrator answers probes without a seqno: not a candidate either.
        let mut silent = peer("arb-2", 50, false, false);
        silent.seqno = None;
        me.peers = vec![silent];
        assert_eq!(me.bootstrap_advice(), BootstrapAdvice::Unknown);
        let table = me.render_table();
        assert!(
            table
                .lines()
                .any(|l| l.contains("quorate_role") && l.contains("arbitrator")),
            "{table}"
        );
        assert_eq!(me.to_json()["quorate_role"], "arbitrator");
    }

    fn example() -> ClusterStatus {
        ClusterStatus {
            node_name: "node-a".into(),
            cluster_name: "mail-gw".into(),
            cluster_conf_id: 2,
            cluster_size: 2,
            cluster_state_uuid: Uuid::parse_str("8348d5ea-5664-11e7-8628-262d8bf5ad3d").unwrap(),
            cluster_status: ComponentStatus::Primary,
            connected: true,
            gcomm_uuid: Uuid::parse_str("ea4e26e9-5678-11e7-bc53-3e334c415aa8").unwrap(),
            last_committed: 4,
            local_state_uuid: Uuid::parse_str("8348d5ea-5664-11e7-8628-262d8bf5ad3d").unwrap(),
            ready: true,
            local_state: LocalState::Synced,
            local_cert_failures: 3,
            incoming_addresses: vec!["192.168.1.11:4001".into(), "192.168.1.12:4001".into()],
            flow_control_paused: 0.0,
            incarnation: 1,
            leader: Some("node-b".into()),
            safe_to_bootstrap: false,
            peers: Vec::new(),
            fenced: None,
            fence_saved: None,
            not_primary_reason: None,
            arbitrator: false,
        }
    }

    #[test]
    fn design_example_layout_is_reproduced_exactly() {
        let rows: Vec<_> = example()
            .wsrep_rows()
            .into_iter()
            .filter(|(n, _)| DESIGN_TABLE.contains(&format!("| {n} ")))
            .collect();
        assert_eq!(rows.len(), 9);
        assert_eq!(render_status_table(&rows), DESIGN_TABLE);
    }

    #[test]
    fn empty_table_keeps_header_widths() {
        assert_eq!(
            render_status_table(&[]),
            "+---------------+-------+\n| Variable_name | Value |\n+---------------+-------+\n\
             +---------------+-------+\n"
        );
    }

    #[test]
    fn full_table_has_every_row_sorted_and_aligned() {
        let table = example().render_table();
        let lines: Vec<&str> = table.lines().collect();
        let width = lines[0].len();
        assert!(
            lines.iter().all(|l| l.chars().count() == width),
            "ragged table:\n{table}"
        );
        let names: Vec<&str> = lines[3..lines.len() - 1]
            .iter()
            .map(|l| l.trim_start_matches("| ").split(' ').next().unwrap())
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert_eq!(
            names,
            [
                "quorate_incarnation",
                "quorate_leader",
                "quorate_node_name",
                "quorate_safe_to_bootstrap",
                "wsrep_cluster_conf_id",
                "wsrep_cluster_size",
                "wsrep_cluster_state_uuid",
                "wsrep_cluster_status",
                "wsrep_connected",
                "wsrep_flow_control_paused",
                "wsrep_gcomm_uuid",
                "wsrep_incoming_addresses",
                "wsrep_last_committed",
                "wsrep_local_cert_failures",
                "wsrep_local_state_comment",
                "wsrep_local_state_uuid",
                "wsrep_ready",
            ]
        );
        assert!(
            table.contains("| wsrep_incoming_addresses  | 192.168.1.11:4001,192.168.1.12:4001 ")
        );
        assert!(table.contains("| wsrep_flow_control_paused | 0.000000 "));
        assert!(table.contains("| wsrep_local_state_comment | Synced "));
        assert!(table.contains("| quorate_leader            | "));
        assert!(table.contains("| quorate_safe_to_bootstrap | 0 "));
    }

    #[test]
    fn rows_reflect_state() {
        let mut s = example();
        s.cluster_status = ComponentStatus::NonPrimary;
        s.connected = false;
        s.ready = false;
        s.leader = None;
        s.safe_to_bootstrap = true;
        s.flow_control_paused = 0.25;
        s.local_state = LocalState::Joiner;
        let rows: std::collections::BTreeMap<_, _> = s.wsrep_rows().into_iter().collect();
        assert_eq!(rows["wsrep_cluster_status"], "non-Primary");
        assert_eq!(rows["wsrep_connected"], "OFF");
        assert_eq!(rows["wsrep_ready"], "OFF");
        assert_eq!(rows["quorate_leader"], "");
        assert_eq!(rows["quorate_safe_to_bootstrap"], "1");
        assert_eq!(rows["wsrep_flow_control_paused"], "0.250000");
        assert_eq!(rows["wsrep_local_state_comment"], "Joiner");
        assert_eq!(rows["quorate_node_name"], "node-a");

        s.flow_control_paused = f64::NAN;
        let rows: std::collections::BTreeMap<_, _> = s.wsrep_rows().into_iter().collect();
        assert_eq!(rows["wsrep_flow_control_paused"], "0.000000");
    }

    #[test]
    fn json_has_the_table_names_with_typed_values() {
        let s = example();
        let json = s.to_json();
        let obj = json.as_object().unwrap();
        let row_names: Vec<_> = s
            .wsrep_rows()
            .into_iter()
            .map(|(n, _)| n.to_string())
            .collect();
        let json_names: Vec<_> = obj.keys().cloned().collect();
        assert_eq!(json_names, row_names);
        assert_eq!(json["wsrep_cluster_size"], 2);
        assert_eq!(json["wsrep_last_committed"], 4);
        assert_eq!(json["wsrep_connected"], "ON");
        assert_eq!(json["wsrep_cluster_status"], "Primary");
        assert_eq!(json["wsrep_flow_control_paused"], 0.0);
        assert_eq!(json["quorate_safe_to_bootstrap"], 0);
        assert_eq!(json["quorate_leader"], "node-b");

        let mut none = s.clone();
        none.leader = None;
        none.flow_control_paused = f64::INFINITY;
        let json = none.to_json();
        assert!(json["quorate_leader"].is_null());
        assert_eq!(json["wsrep_flow_control_paused"], 0.0);
    }

    #[test]
    fn display_matches_galera_spelling() {
        assert_eq!(ComponentStatus::Primary.to_string(), "Primary");
        assert_eq!(ComponentStatus::NonPrimary.to_string(), "non-Primary");
        assert_eq!(ComponentStatus::Disconnected.to_string(), "Disconnected");
        let states = [
            (LocalState::Initialized, "Initialized"),
            (LocalState::Joining, "Joining"),
            (LocalState::Joiner, "Joiner"),
            (LocalState::Joined, "Joined"),
            (LocalState::Synced, "Synced"),
            (LocalState::Donor, "Donor"),
        ];
        for (state, text) in states {
            assert_eq!(state.to_string(), text);
            // Display and the serde name agree, so JSON and table never differ.
            assert_eq!(serde_json::to_value(state).unwrap(), text);
        }
        assert_eq!(
            serde_json::to_value(ComponentStatus::NonPrimary).unwrap(),
            "non-Primary"
        );
    }

    #[test]
    fn banner_is_unchanged() {
        let lines: Vec<&str> = BOOTSTRAP_REFUSED_BANNER.lines().collect();
        assert_eq!(lines.len(), 6);
        assert!(lines.iter().all(|l| l.len() == 70), "box not rectangular");
        assert!(BOOTSTRAP_REFUSED_BANNER.contains("--force-safe-to-bootstrap"));
    }
}
