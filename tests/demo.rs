//! `quorate demo`: the cluster it starts really forms (checked from outside
//! through the addresses it prints), and on SIGINT it stops every node
//! gracefully, leaving exactly one with `safe_to_bootstrap: 1`, the one it
//! names.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{read, QUORATE};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

/// Kills the demo and every node it started if the test fails half-way.
struct Guard {
    demo: Child,
    node_pids: Vec<i32>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        for pid in &self.node_pids {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
        let _ = self.demo.kill();
        let _ = self.demo.wait();
    }
}

fn get(agent: &ureq::Agent, url: &str) -> Value {
    agent
        .get(url)
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .into_json()
        .unwrap_or_else(|e| panic!("GET {url}: not JSON: {e}"))
}

#[test]
fn demo_forms_a_cluster_and_stops_it_gracefully_on_sigint() {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("demo");
    let mut demo = Command::new(QUORATE)
        .args(["demo", "--keep", "--dir"])
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start quorate demo");
    let stdout = demo.stdout.take().unwrap();
    let mut stderr = demo.stderr.take().unwrap();
    let mut guard = Guard {
        demo,
        node_pids: Vec::new(),
    };
    let (tx, lines) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let progress = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });

    // Up to the line that says the cluster runs.
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                let done = line.contains("Press Ctrl-C to stop the cluster");
                out.push(line);
                if done {
                    break;
                }
            }
            Err(e) => panic!(
                "the demo did not report a running cluster ({e}); stdout so far:\n{}",
                out.join("\n")
            ),
        }
    }
    let text = out.join("\n");

    // "  node-1  api http://127.0.0.1:P  replication ...": the demo's own
    // account of where its nodes are; everything else is asked of them.
    let apis: Vec<(String, String)> = out
        .iter()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let name = words.next()?;
            if words.next()? != "api" {
                return None;
            }
            Some((name.to_string(), words.next()?.to_string()))
        })
        .collect();
    assert_eq!(apis.len(), 3, "expected 3 node lines:\n{text}");
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .build();
    for (name, api) in &apis {
        let status = get(&agent, &format!("{api}/status"));
        let cluster = &status["cluster"];
        assert_eq!(cluster["node_name"], name.as_str(), "{status}");
        assert_eq!(cluster["cluster_status"], "Primary", "{name}: {status}");
        assert_eq!(cluster["cluster_size"], 3, "{name}: {status}");
        guard
            .node_pids
            .push(status["node"]["pid"].as_i64().expect("pid in /status") as i32);
        let nodes = get(&agent, &format!("{api}/nodes?ver=2"));
        assert_eq!(
            nodes["nodes"].as_array().map(Vec::len),
            Some(3),
            "{name}: {nodes}"
        );
        // The rows the demo wrote through every node are on every node.
        let q = agent
            .post(&format!("{api}/db/query?level=linearizable"))
            .send_json(serde_json::json!([
                "SELECT node FROM greetings ORDER BY id"
            ]))
            .unwrap_or_else(|e| panic!("{name}: query: {e}"))
            .into_json::<Value>()
            .unwrap();
        assert_eq!(
            q["results"][0]["values"],
            serde_json::json!([["node-1"], ["node-2"], ["node-3"]]),
            "{name}: {q}"
        );
    }
    let mut pids = guard.node_pids.clone();
    pids.sort_unstable();
    pids.dedup();
    assert_eq!(pids.len(), 3, "three distinct processes: {pids:?}");

    kill(Pid::from_raw(guard.demo.id() as i32), Signal::SIGINT).expect("SIGINT the demo");
    let deadline = Instant::now() + Duration::from_secs(240);
    let status = loop {
        if let Some(status) = guard.demo.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the demo did not stop within 240 s after SIGINT"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let rest: Vec<String> = lines.try_iter().collect();
    let rest = rest.join("\n");
    let progress = progress.join().unwrap();
    assert!(
        status.success(),
        "demo exited {status}\nstdout:\n{rest}\nstderr:\n{progress}"
    );
    assert!(progress.contains("SIGINT"), "{progress}");

    // Every node stopped, each by a clean exit, last started first.
    for pid in &pids {
        assert!(
            kill(Pid::from_raw(*pid), None).is_err(),
            "node process {pid} still runs after the demo ended"
        );
    }
    let stopped: Vec<&str> = rest
        .lines()
        .filter(|l| l.contains(" stopped (exit status: 0,"))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(stopped, ["node-3", "node-2", "node-1"], "{rest}");

    // The files agree with what the demo said: one node, and only the one
    // it names, may bootstrap; each recorded the same last seqno.
    let mut safe = Vec::new();
    let mut seqnos = Vec::new();
    for (name, _) in &apis {
        let grastate = read(&dir.join(name).join("data/grastate.dat"));
        if grastate.contains("\nsafe_to_bootstrap: 1") {
            safe.push(name.clone());
        }
        let seqno: i64 = grastate
            .lines()
            .find_map(|l| l.strip_prefix("seqno:"))
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name}: no seqno in grastate.dat:\n{grastate}"));
        seqnos.push(seqno);
    }
    assert_eq!(safe.len(), 1, "safe_to_bootstrap: 1 on {safe:?}");
    assert!(
        rest.contains(&format!("{} ends with safe_to_bootstrap: 1", safe[0])),
        "the demo does not name {} as the node to bootstrap:\n{rest}",
        safe[0]
    );
    assert!(
        seqnos[0] > 0,
        "a graceful stop records the seqno: {seqnos:?}"
    );
    assert!(seqnos.windows(2).all(|w| w[0] == w[1]), "{seqnos:?}");
    // --keep kept the files.
    assert!(rest.contains("The files stay in"), "{rest}");
    assert!(
        text.contains("quorate") && text.contains("shell --node"),
        "{text}"
    );
}
