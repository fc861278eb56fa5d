//! A cluster of real `quorated` processes on loopback with real TLS
//! material made by `quorate tls`.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::*;

pub struct Cluster {
    pub nodes: Vec<TestNode>,
    pub tls: tempfile::TempDir,
    pub repl_ports: Vec<u16>,
}

/// `quorate tls ca` into `dir`.
pub fn make_ca(dir: &Path) {
    let out = Command::new(QUORATE)
        .args(["tls", "ca", "--out"])
        .arg(dir)
        .output()
        .expect("quorate tls ca");
    assert!(out.status.success(), "tls ca: {}", stderr(&out));
}

/// `quorate tls node NAME` signed by the CA in `ca_dir`.
pub fn make_node_cert(name: &str, ca_dir: &Path, out_dir: &Path) {
    let out = Command::new(QUORATE)
        .args(["tls", "node", name, "--addr", "127.0.0.1", "--ca-dir"])
        .arg(ca_dir)
        .arg("--out")
        .arg(out_dir)
        .output()
        .expect("quorate tls node");
    assert!(out.status.success(), "tls node {name}: {}", stderr(&out));
}

pub fn node_config(
    name: &str,
    repl_port: u16,
    peers: &[u16],
    tls_dir: &Path,
    extra: &str,
) -> String {
    let hosts: Vec<String> = peers.iter().map(|_| "127.0.0.1".to_string()).collect();
    node_config_at(name, "127.0.0.1", repl_port, &hosts, peers, tls_dir, extra)
}

/// A node config with explicit addresses (nodes in network namespaces).
pub fn node_config_at(
    name: &str,
    host: &str,
    repl_port: u16,
    peer_hosts: &[String],
    peers: &[u16],
    tls_dir: &Path,
    extra: &str,
) -> String {
    let peers: Vec<String> = peers
        .iter()
        .zip(peer_hosts)
        .map(|(p, h)| format!("\"{h}:{p}\""))
        .collect();
    format!(
        "[replication]\nlisten = \"{host}:{repl_port}\"\npeers = [{}]\nheartbeat_ms = 100\nelection_timeout_ms = 400\nprimary_timeout_ms = 1000\n{extra}\n[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
        peers.join(", "),
        tls_dir.join("ca.pem").display(),
        tls_dir.join(format!("{name}.pem")).display(),
        tls_dir.join(format!("{name}.key")).display(),
    )
}

impl Cluster {
    /// `n` nodes, each in a network namespace of `net`, on the same ports.
    pub fn new_in(net: &super::netns::Net, n: usize, extra: &str) -> Cluster {
        let tls = tempfile::tempdir().expect("tempdir");
        make_ca(tls.path());
        let repl_ports: Vec<u16> = vec![4567; n];
        let hosts: Vec<String> = (0..n).map(|i| net.ip(i)).collect();
        let nodes = (0..n)
            .map(|i| {
                let name = format!("node-{}", i + 1);
                make_node_cert(&name, tls.path(), tls.path());
                let cfg = node_config_at(
                    &name,
                    &hosts[i],
                    4567,
                    &hosts,
                    &repl_ports,
                    tls.path(),
                    extra,
                );
                let mut node = TestNode::new(&name, &cfg);
                // The API listens on the node's own address inside its namespace.
                let text = std::fs::read_to_string(&node.config_path).expect("config");
                let text = text.replace(
                    &format!("listen = \"127.0.0.1:{}\"", node.api_port),
                    &format!("listen = \"{}:4001\"", hosts[i]),
                );
                std::fs::write(&node.config_path, text).expect("config");
                node.api_port = 4001;
                node.api_host = hosts[i].clone();
                node.netns = Some(net.ns(i));
                node
            })
            .collect();
        Cluster {
            nodes,
            tls,
            repl_ports,
        }
    }

    /// Bootstrap node 0 of a configured cluster, start the rest, wait for all.
    pub fn start_configured(mut self) -> Cluster {
        let n = self.nodes.len();
        self.nodes[0].start(&["--bootstrap"]);
        self.nodes[0].wait_primary(Duration::from_secs(30));
        for node in self.nodes.iter_mut().skip(1) {
            node.start(&[]);
        }
        self.wait_size(
            &(0..n).collect::<Vec<_>>(),
            n as i64,
            Duration::from_secs(60),
        );
        self
    }

    /// `n` configured nodes (not started), all listing each other as peers.
    pub fn new(n: usize, extra: &str) -> Cluster {
        let tls = tempfile::tempdir().expect("tempdir");
        make_ca(tls.path());
        let repl_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let nodes = (0..n)
            .map(|i| {
                let name = format!("node-{}", i + 1);
                make_node_cert(&name, tls.path(), tls.path());
                TestNode::new(
                    &name,
                    &node_config(&name, repl_ports[i], &repl_ports, tls.path(), extra),
                )
            })
            .collect();
        Cluster {
            nodes,
            tls,
            repl_ports,
        }
    }

    /// Bootstrap node 0, start the others, wait until all are Primary members.
    pub fn start(n: usize, extra: &str) -> Cluster {
        let mut c = Cluster::new(n, extra);
        c.nodes[0].start(&["--bootstrap"]);
        c.nodes[0].wait_primary(Duration::from_secs(30));
        for node in c.nodes.iter_mut().skip(1) {
            node.start(&[]);
        }
        c.wait_size(
            &(0..n).collect::<Vec<_>>(),
            n as i64,
            Duration::from_secs(60),
        );
        c
    }

    /// Indexes of the nodes whose process runs.
    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].child.is_some())
            .collect()
    }

    /// The `safe_to_bootstrap:` line of node `i`'s grastate.dat.
    pub fn safe_line(&self, i: usize) -> String {
        let g = read(&self.nodes[i].grastate_path());
        g.lines()
            .find(|l| l.starts_with("safe_to_bootstrap:"))
            .unwrap_or("")
            .to_string()
    }

    /// `quorate --force-safe-to-bootstrap` then `--bootstrap-node` on node
    /// `i`, a running non-Primary member: refused first with the banner,
    /// then done.
    pub fn force_bootstrap(&self, i: usize) {
        let out = self.nodes[i].cli(&["--bootstrap-node", "--no-systemd"]);
        assert_eq!(
            out.status.code(),
            Some(3),
            "not forced yet, so refused with the banner: {}{}",
            stdout(&out),
            stderr(&out)
        );
        assert!(stderr(&out).contains("It is not safe to bootstrap this node"));
        let out = self.nodes[i].cli(&["--force-safe-to-bootstrap"]);
        assert!(out.status.success(), "force: {}", stderr(&out));
        let out = self.nodes[i].cli(&["--bootstrap-node", "--no-systemd"]);
        assert!(
            out.status.success(),
            "forced bootstrap of a running non-Primary member: {}{}",
            stdout(&out),
            stderr(&out)
        );
    }

    /// Writes on node 0 still commit and reach node 1 (table `t(id, v)`).
    pub fn still_serves(&self, id: i64) {
        self.nodes[0].execute_ok(serde_json::json!([[
            "INSERT INTO t(id, v) VALUES(?, 'ok')",
            id
        ]]));
        self.wait_converged(&[0, 1], "t", Duration::from_secs(30));
        assert_eq!(
            self.nodes[1].scalar(&format!("SELECT COUNT(*) FROM t WHERE id = {id}")),
            1
        );
    }

    pub fn status(&self, i: usize) -> Value {
        let (_, s) = self.nodes[i].get("/status");
        s
    }

    /// Wait until every node in `which` is Primary and sees `size` members.
    pub fn wait_size(&self, which: &[usize], size: i64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let all = which.iter().all(|&i| {
                let s = self.status(i);
                s["cluster"]["cluster_status"] == "Primary" && s["cluster"]["cluster_size"] == size
            });
            if all {
                return;
            }
            if Instant::now() > deadline {
                let report: Vec<String> = which
                    .iter()
                    .map(|&i| {
                        format!(
                            "{}: {}\nlog tail:\n{}",
                            self.nodes[i].name,
                            self.status(i)["cluster"],
                            tail(&self.nodes[i].log(), 30)
                        )
                    })
                    .collect();
                panic!(
                    "cluster did not reach size {size} on {which:?} in {timeout:?}:\n{}",
                    report.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The same last applied seqno on every node in `which`, if they agree.
    fn common_seqno(&self, which: &[usize]) -> Result<i64, Vec<i64>> {
        let seqnos: Vec<i64> = which
            .iter()
            .map(|&i| {
                self.status(i)["cluster"]["last_committed"]
                    .as_i64()
                    .unwrap_or(-2)
            })
            .collect();
        if seqnos.windows(2).all(|w| w[0] == w[1]) {
            Ok(seqnos[0])
        } else {
            Err(seqnos)
        }
    }

    /// Wait until every node in `which` has applied the same last seqno (for
    /// instance after a schema change, before clients use other nodes).
    pub fn wait_synced(&self, which: &[usize], timeout: Duration) -> i64 {
        self.wait_converged_on(which, None, timeout)
    }

    /// Wait until every node in `which` has applied the same last seqno and
    /// holds the same rows in `table`; returns that seqno.
    pub fn wait_converged(&self, which: &[usize], table: &str, timeout: Duration) -> i64 {
        self.wait_converged_on(which, Some(table), timeout)
    }

    fn wait_converged_on(&self, which: &[usize], table: Option<&str>, timeout: Duration) -> i64 {
        let deadline = Instant::now() + timeout;
        loop {
            let agreed = self.common_seqno(which);
            if let Ok(seqno) = agreed {
                let same_rows = table.is_none_or(|table| {
                    let sql = format!("SELECT * FROM {table} ORDER BY 1");
                    let dumps: Vec<Vec<Value>> = which
                        .iter()
                        .map(|&i| self.nodes[i].query_rows_level(&sql, "none"))
                        .collect();
                    dumps.windows(2).all(|w| w[0] == w[1])
                });
                if same_rows {
                    return seqno;
                }
            }
            assert!(
                Instant::now() < deadline,
                "nodes {which:?} did not converge{}: seqnos {agreed:?}",
                table.map(|t| format!(" on {t}")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
