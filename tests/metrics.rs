//! `GET /metrics` of a real three-node cluster, read with a Prometheus
//! text-format parser: every line is valid exposition, every family has its
//! HELP and TYPE, names follow Prometheus conventions, the expected families
//! are there, and their values agree with what the cluster did.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::cluster::Cluster;
use prometheus_parse::{LineInfo, Scrape, Value};
use serde_json::json;

/// Parses strictly: the parser skips lines it does not understand, so each
/// line is checked on its own first.
fn parse(text: &str) -> Scrape {
    for line in text.lines() {
        let info = LineInfo::parse(line);
        assert!(
            !matches!(info, LineInfo::Ignored | LineInfo::Empty),
            "not a Prometheus exposition line: {line:?}"
        );
        if let LineInfo::Sample { value, .. } = info {
            assert!(value.parse::<f64>().is_ok(), "bad value in {line:?}");
        }
    }
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("the parser accepts /metrics")
}

/// family name -> TYPE, checking HELP and TYPE come once each, before the
/// family's samples.
fn families(text: &str) -> BTreeMap<String, String> {
    let mut types = BTreeMap::new();
    let mut helps = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap().to_string();
            assert!(helps.insert(name.clone()), "HELP of {name} twice");
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').unwrap();
            assert!(helps.contains(name), "TYPE of {name} before its HELP");
            assert!(
                types.insert(name.to_string(), ty.to_string()).is_none(),
                "TYPE of {name} twice"
            );
        } else {
            let name = line.split(['{', ' ']).next().unwrap();
            let family = types.keys().find(|f| {
                name == f.as_str()
                    || ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|s| name == format!("{f}{s}"))
            });
            assert!(family.is_some(), "sample {name} has no TYPE before it");
        }
    }
    for (name, ty) in &types {
        let valid_name = name
            .chars()
            .enumerate()
            .all(|(i, c)| c.is_ascii_lowercase() || c == '_' || (i > 0 && c.is_ascii_digit()));
        assert!(valid_name, "{name}: not a snake_case metric name");
        assert!(name.starts_with("quorate_"), "{name}: no quorate_ prefix");
        assert_eq!(
            ty == "counter",
            name.ends_with("_total"),
            "{name} ({ty}): counters, and only counters, end in _total"
        );
        assert!(
            ["counter", "gauge", "histogram"].contains(&ty.as_str()),
            "{name}: type {ty}"
        );
    }
    types
}

/// The value of an unlabelled sample, or of the one with `label`="`value`".
fn value(scrape: &Scrape, name: &str, label: Option<(&str, &str)>) -> f64 {
    let sample = scrape
        .samples
        .iter()
        .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
        .unwrap_or_else(|| panic!("no sample {name} {label:?}"));
    match sample.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
        ref other => panic!("{name}: unexpected {other:?}"),
    }
}

#[test]
fn metrics_parse_and_carry_the_cluster_figures() {
    let c = Cluster::start(3, "");
    let writer = &c.nodes[1];
    writer.execute_ok(json!(["CREATE TABLE m (id INTEGER PRIMARY KEY, v TEXT)"]));
    for i in 0..5 {
        writer.execute_ok(json!([["INSERT INTO m VALUES (?, ?)", i, "some text"]]));
    }
    let seqno = c.wait_converged(&[0, 1, 2], "m", Duration::from_secs(60));

    let expected = [
        ("quorate_cluster_size", "gauge"),
        ("quorate_cluster_status", "gauge"),
        ("quorate_local_state", "gauge"),
        ("quorate_ready", "gauge"),
        ("quorate_last_committed", "gauge"),
        ("quorate_safe_to_bootstrap", "gauge"),
        ("quorate_local_cert_failures_total", "counter"),
        ("quorate_replicated_writesets_total", "counter"),
        ("quorate_replicated_bytes_total", "counter"),
        ("quorate_received_writesets_total", "counter"),
        ("quorate_commits_total", "counter"),
        ("quorate_flow_control_paused", "gauge"),
        ("quorate_apply_queue", "gauge"),
        ("quorate_commit_latency_seconds", "histogram"),
        ("quorate_sst_donating", "gauge"),
        ("quorate_sst_receiving", "gauge"),
        ("quorate_member_lag_entries", "gauge"),
        ("quorate_joiners", "gauge"),
        ("quorate_raft_snapshot_index", "gauge"),
        ("quorate_received_bytes_total", "counter"),
        ("quorate_sst_donor_sent_bytes", "gauge"),
        ("quorate_sst_donor_total_bytes", "gauge"),
        ("quorate_sst_joiner_received_bytes", "gauge"),
        ("quorate_proposals_total", "counter"),
        ("quorate_proposed_writesets_total", "counter"),
        ("quorate_forward_requests_total", "counter"),
        ("quorate_forwarded_writesets_total", "counter"),
        ("quorate_sync_waits_total", "counter"),
    ];
    let mut proposed_everywhere = 0.0;
    let mut leaders = 0;
    for (i, node) in c.nodes.iter().enumerate() {
        let text = node.metrics_text();
        let types = families(&text);
        for (name, ty) in expected {
            assert_eq!(
                types.get(name).map(String::as_str),
                Some(ty),
                "{}: family {name}",
                node.name
            );
        }
        let scrape = parse(&text);
        let v = |name: &str| value(&scrape, name, None);
        assert_eq!(v("quorate_cluster_size"), 3.0, "{}", node.name);
        assert_eq!(
            value(
                &scrape,
                "quorate_cluster_status",
                Some(("status", "Primary"))
            ),
            1.0
        );
        assert_eq!(
            value(
                &scrape,
                "quorate_cluster_status",
                Some(("status", "non-Primary"))
            ),
            0.0
        );
        assert_eq!(
            value(&scrape, "quorate_local_state", Some(("state", "Synced"))),
            1.0
        );
        assert_eq!(v("quorate_ready"), 1.0);
        assert_eq!(v("quorate_last_committed"), seqno as f64);
        assert_eq!(v("quorate_safe_to_bootstrap"), 0.0, "three members");
        // Every write-set reached every node; only node-2's clients wrote.
        assert!(
            v("quorate_received_writesets_total") >= 6.0,
            "{}",
            node.name
        );
        let (replicated, commits) = if i == 1 { (6.0, 6.0) } else { (0.0, 0.0) };
        assert_eq!(
            v("quorate_replicated_writesets_total"),
            replicated,
            "{}",
            node.name
        );
        assert_eq!(v("quorate_commits_total"), commits, "{}", node.name);
        // Batches hold at least one write-set each.
        assert!(v("quorate_proposals_total") <= v("quorate_proposed_writesets_total"));
        assert!(v("quorate_forward_requests_total") <= v("quorate_forwarded_writesets_total"));
        proposed_everywhere += v("quorate_proposed_writesets_total");
        if i == 1 {
            // Each of the six went to the order once: proposed here as the
            // leader, or forwarded to the leader.
            assert_eq!(
                v("quorate_proposed_writesets_total") + v("quorate_forwarded_writesets_total"),
                6.0,
                "{}",
                node.name
            );
        } else {
            assert_eq!(v("quorate_forwarded_writesets_total"), 0.0, "{}", node.name);
        }
        if i == 1 {
            // Five rows of "some text" and a CREATE TABLE are more than 100 bytes.
            assert!(v("quorate_replicated_bytes_total") > 100.0);
        } else {
            assert_eq!(v("quorate_replicated_bytes_total"), 0.0);
        }
        assert_eq!(v("quorate_local_cert_failures_total"), 0.0);
        assert_eq!(v("quorate_sst_receiving"), 0.0);
        // Every node hears from its peers: heartbeats and write-sets from
        // the leader, answers to its own requests, forwarded writes.
        assert!(
            v("quorate_received_bytes_total") > 100.0,
            "{}: {}",
            node.name,
            v("quorate_received_bytes_total")
        );
        assert_eq!(v("quorate_sst_joiner_received_bytes"), 0.0, "no SST here");

        let latency = scrape
            .samples
            .iter()
            .find(|s| s.metric == "quorate_commit_latency_seconds")
            .expect("the latency histogram");
        let Value::Histogram(buckets) = &latency.value else {
            panic!("not a histogram: {latency:?}");
        };
        assert!(buckets.len() > 5, "{buckets:?}");
        assert!(
            buckets
                .windows(2)
                .all(|w| w[0].less_than < w[1].less_than && w[0].count <= w[1].count),
            "buckets not cumulative: {buckets:?}"
        );
        let inf = buckets.last().unwrap();
        assert!(inf.less_than.is_infinite());
        assert_eq!(inf.count, commits);
        assert_eq!(v("quorate_commit_latency_seconds_count"), commits);
        assert_eq!(v("quorate_commit_latency_seconds_sum") > 0.0, commits > 0.0);

        // The leader reports how far every member is behind; after
        // convergence nobody lacks anything (the leader's own figures may
        // trail the acknowledgements by a moment).
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut scrape = scrape;
        loop {
            let lags = member_lags(&scrape);
            if lags.is_empty() {
                break;
            }
            assert_eq!(lags.len(), 3, "{}: {lags:?}", node.name);
            if lags.iter().all(|l| *l == 0.0) {
                leaders += 1;
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{}: members still lag after convergence: {lags:?}",
                node.name
            );
            std::thread::sleep(Duration::from_millis(100));
            scrape = parse(&node.metrics_text());
        }
    }
    assert_eq!(leaders, 1, "exactly one node reports member lag");
    // The CREATE TABLE and the five rows, and the bootstrap's own entries
    // go in by other paths: six proposed write-sets in all, wherever.
    assert_eq!(proposed_everywhere, 6.0);
}

fn member_lags(scrape: &Scrape) -> Vec<f64> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == "quorate_member_lag_entries")
        .map(|s| match s.value {
            Value::Gauge(v) => v,
            ref other => panic!("{other:?}"),
        })
        .collect()
}
