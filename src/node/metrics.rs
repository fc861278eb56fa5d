//! `/metrics` in the Prometheus text format: the wsrep figures, counters of
//! write-sets, the commit latency histogram and the progress of state
//! transfers (SST as transfers under way, IST as the entries each member
//! still lacks).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::Node;
use crate::status::{ComponentStatus, LocalState};

/// Upper bounds of the commit latency buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A fixed-bucket latency histogram that many request tasks update at once.
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += self.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// Counters the client path keeps.
#[derive(Debug, Default)]
pub struct ClientCounters {
    pub commit_latency: Histogram,
    pub replicated_writesets: AtomicU64,
    pub replicated_bytes: AtomicU64,
    pub commits: AtomicU64,
    pub outcome_unknown: AtomicU64,
    /// Causal waits (`sync_wait`) before writes and weak reads.
    pub sync_waits: AtomicU64,
}

fn gauge(out: &mut String, name: &str, help: &str, value: f64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
    );
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
    );
}

impl Node {
    pub fn render_metrics(&self) -> String {
        let st = self.cluster_status();
        let m = self.seq.metrics();
        let (donating, receiving) = self.seq.transfers();
        let c = &self.counters;
        let mut out = String::new();
        let _ = writeln!(out, "# HELP quorate_cluster_status Whether this node is Primary, non-Primary or Disconnected (1 for the current one).\n# TYPE quorate_cluster_status gauge");
        for (label, s) in [
            ("Primary", ComponentStatus::Primary),
            ("non-Primary", ComponentStatus::NonPrimary),
            ("Disconnected", ComponentStatus::Disconnected),
        ] {
            let _ = writeln!(
                out,
                "quorate_cluster_status{{status=\"{label}\"}} {}",
                u8::from(st.cluster_status == s)
            );
        }
        let _ = writeln!(out, "# HELP quorate_local_state This node's state in the cluster (wsrep_local_state_comment; 1 for the current one).\n# TYPE quorate_local_state gauge");
        for state in [
            LocalState::Initialized,
            LocalState::Joining,
            LocalState::Joiner,
            LocalState::Joined,
            LocalState::Synced,
            LocalState::Donor,
        ] {
            let _ = writeln!(
                out,
                "quorate_local_state{{state=\"{state:?}\"}} {}",
                u8::from(st.local_state == state)
            );
        }
        gauge(
            &mut out,
            "quorate_safe_to_bootstrap",
            "1 when this node may bootstrap a new primary component (as grastate.dat would say).",
            f64::from(u8::from(st.safe_to_bootstrap)),
        );
        gauge(
            &mut out,
            "quorate_cluster_size",
            "Members of the primary component this node reaches (wsrep_cluster_size).",
            st.cluster_size as f64,
        );
        gauge(
            &mut out,
            "quorate_cluster_conf_id",
            "Changes with every membership change (wsrep_cluster_conf_id).",
            st.cluster_conf_id as f64,
        );
        gauge(
            &mut out,
            "quorate_ready",
            "1 while the node serves clients (wsrep_ready).",
            f64::from(u8::from(st.ready)),
        );
        gauge(
            &mut out,
            "quorate_last_committed",
            "Last applied seqno (wsrep_last_committed).",
            st.last_committed as f64,
        );
        gauge(
            &mut out,
            "quorate_incarnation",
            "Cluster incarnation (bumped by a forced bootstrap).",
            st.incarnation as f64,
        );
        gauge(
            &mut out,
            "quorate_flow_control_paused",
            "Fraction of time paused by flow control (wsrep_flow_control_paused).",
            st.flow_control_paused,
        );
        gauge(
            &mut out,
            "quorate_raft_term",
            "Current Raft term.",
            m.current_term as f64,
        );
        gauge(
            &mut out,
            "quorate_raft_last_log_index",
            "Index of the last entry in the write-set log.",
            m.last_log_index.unwrap_or(0) as f64,
        );
        gauge(
            &mut out,
            "quorate_raft_applied_index",
            "Index of the last log entry applied to the database.",
            m.last_applied.as_ref().map(|l| l.index).unwrap_or(0) as f64,
        );
        gauge(
            &mut out,
            "quorate_apply_queue",
            "Log entries committed or appended but not yet applied here.",
            m.last_log_index
                .unwrap_or(0)
                .saturating_sub(m.last_applied.as_ref().map(|l| l.index).unwrap_or(0))
                as f64,
        );
        gauge(
            &mut out,
            "quorate_raft_snapshot_index",
            "Index of the last log entry in this node's newest snapshot (what an SST sends).",
            m.snapshot.as_ref().map(|l| l.index).unwrap_or(0) as f64,
        );
        // IST progress: only the leader knows how far each member has got.
        let _ = writeln!(out, "# HELP quorate_member_lag_entries Log entries a member still lacks, as the leader sees it (an IST in progress); only the leader reports it.\n# TYPE quorate_member_lag_entries gauge");
        if let Some(replication) = &m.replication {
            let last = m.last_log_index.unwrap_or(0);
            for (id, info, _) in self.seq.members() {
                let Some(matched) = replication.get(&id) else {
                    continue;
                };
                let have = matched.as_ref().map(|l| l.index).unwrap_or(0);
                let _ = writeln!(
                    out,
                    "quorate_member_lag_entries{{member=\"{}\"}} {}",
                    info.name,
                    last.saturating_sub(have)
                );
            }
        }
        gauge(
            &mut out,
            "quorate_joiners",
            "Joining nodes the leader is catching up right now.",
            self.joining.lock().map(|j| j.len()).unwrap_or(0) as f64,
        );
        gauge(
            &mut out,
            "quorate_sst_donating",
            "Snapshot transfers this node is sending (Donor).",
            donating as f64,
        );
        gauge(
            &mut out,
            "quorate_sst_receiving",
            "Snapshot transfers this node is receiving (Joiner).",
            receiving as f64,
        );
        counter(&mut out, "quorate_local_cert_failures_total", "Write-sets from this node's clients that failed certification (wsrep_local_cert_failures).", st.local_cert_failures);
        counter(
            &mut out,
            "quorate_replicated_writesets_total",
            "Write-sets this node's clients submitted to the order.",
            c.replicated_writesets.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "quorate_replicated_bytes_total",
            "Bytes of the write-sets this node submitted.",
            c.replicated_bytes.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "quorate_received_bytes_total",
            "Bytes received from peers over the replication transport: requests, write-sets, \
             snapshots and answers (frame payloads).",
            self.transport().map_or(0, |t| t.received_bytes()),
        );
        let proposed = self.seq.proposal_counts();
        counter(
            &mut out,
            "quorate_proposals_total",
            "Batches of write-sets this node proposed to the order while it led (one log append each).",
            proposed.batches(),
        );
        counter(
            &mut out,
            "quorate_proposed_writesets_total",
            "Write-sets in those proposals: this node's own and those forwarded to it.",
            proposed.writesets(),
        );
        let forwarded = self.seq.forward_counts();
        counter(
            &mut out,
            "quorate_forward_requests_total",
            "Requests that carried this node's write-sets to the leader.",
            forwarded.map_or(0, |f| f.batches()),
        );
        counter(
            &mut out,
            "quorate_forwarded_writesets_total",
            "Write-sets this node forwarded to the leader (a retry counts again).",
            forwarded.map_or(0, |f| f.writesets()),
        );
        let tc = self.seq.transfer_counters();
        gauge(
            &mut out,
            "quorate_sst_donor_sent_bytes",
            "Bytes sent so far of the latest snapshot (SST) this node donated.",
            tc.donor_sent_bytes.load(Ordering::Relaxed) as f64,
        );
        gauge(
            &mut out,
            "quorate_sst_donor_total_bytes",
            "Size of the latest snapshot (SST) this node donated.",
            tc.donor_total_bytes.load(Ordering::Relaxed) as f64,
        );
        gauge(
            &mut out,
            "quorate_sst_joiner_received_bytes",
            "Bytes received so far of the latest snapshot (SST) this node was sent.",
            tc.joiner_received_bytes.load(Ordering::Relaxed) as f64,
        );
        counter(
            &mut out,
            "quorate_received_writesets_total",
            "Write-sets applied by this node from every origin.",
            self.seq.waiters().applied_writesets.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "quorate_commits_total",
            "Client transactions committed through this node.",
            c.commits.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "quorate_outcome_unknown_total",
            "Client transactions whose outcome this node could not learn.",
            c.outcome_unknown.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "quorate_sync_waits_total",
            "Writes and weak reads that first waited for what the cluster had committed \
             (replication.sync_wait_writes, level=weak).",
            c.sync_waits.load(Ordering::Relaxed),
        );
        c.commit_latency.render(
            &mut out,
            "quorate_commit_latency_seconds",
            "Time from a client's execute request to its committed answer.",
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_count_everything() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(30));
        let mut out = String::new();
        h.render(&mut out, "x_seconds", "help");
        assert!(out.contains("x_seconds_bucket{le=\"0.0005\"} 1\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"0.005\"} 2\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"10\"} 2\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_seconds_count 3\n"), "{out}");
        assert!(out.contains("# TYPE x_seconds histogram"), "{out}");
    }
}
