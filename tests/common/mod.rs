//! Test harness: real `quorated` processes in temp dirs on loopback, the
//! real `quorate` CLI, and HTTP through the rqlite-compatible API.
#![allow(dead_code)]

pub mod cluster;
pub mod netns;

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const QUORATED: &str = env!("CARGO_BIN_EXE_quorated");
pub const QUORATE: &str = env!("CARGO_BIN_EXE_quorate");

/// A port free for both TCP and UDP right now, outside the kernel's
/// ephemeral range (so no outgoing socket of another process takes it
/// between this check and the daemon's bind), never handed out twice.
pub fn free_port() -> u16 {
    use std::sync::Mutex;
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..10_000 {
        let port = 20_000 + (rand_u32() % 12_000) as u16;
        if given.contains(&port) {
            continue;
        }
        let tcp = TcpListener::bind(("127.0.0.1", port));
        let udp = std::net::UdpSocket::bind(("127.0.0.1", port));
        if tcp.is_ok() && udp.is_ok() {
            given.push(port);
            return port;
        }
    }
    panic!("no free port found");
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish() as u32
}

pub struct TestNode {
    pub name: String,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub api_port: u16,
    pub child: Option<Child>,
    pub agent: ureq::Agent,
    /// Address the API listens on (loopback unless the node lives in a netns).
    pub api_host: String,
    /// Network namespace the daemon runs in, if any.
    pub netns: Option<String>,
    /// Extra environment for the daemon (e.g. NOTIFY_SOCKET).
    pub env: Vec<(String, String)>,
}

impl TestNode {
    /// A node with its own data dir, runtime dir and ports; `extra` is
    /// appended to the config (e.g. a `[replication]` table).
    pub fn new(name: &str, extra: &str) -> TestNode {
        let dir = tempfile::tempdir().expect("tempdir");
        let api_port = free_port();
        let repl_port = free_port();
        let config_path = dir.path().join("quorate.toml");
        let has_replication = extra.contains("[replication]");
        let replication = if has_replication {
            String::new()
        } else {
            format!("[replication]\nlisten = \"127.0.0.1:{repl_port}\"\n")
        };
        let text = format!(
            "cluster_name = \"test\"\nnode_name = \"{name}\"\ndata_dir = \"{}\"\nruntime_dir = \"{}\"\n\n[api]\nlisten = \"127.0.0.1:{api_port}\"\n\n{replication}{extra}\n",
            dir.path().join("data").display(),
            dir.path().join("run").display(),
        );
        fs::write(&config_path, text).expect("write config");
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(30))
            .build();
        TestNode {
            name: name.into(),
            dir,
            config_path,
            api_port,
            child: None,
            agent,
            api_host: "127.0.0.1".into(),
            netns: None,
            env: Vec::new(),
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn grastate_path(&self) -> PathBuf {
        self.data_dir().join("grastate.dat")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("quorated.log")
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Start the daemon; its stderr goes to `log_path()`.
    pub fn start(&mut self, args: &[&str]) {
        assert!(self.child.is_none(), "{} already running", self.name);
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open log");
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, QUORATED]);
                c
            }
            None => Command::new(QUORATED),
        };
        cmd.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        // Its own process group: when another child of the test exits and
        // leaves a group with stopped members orphaned, the kernel sends
        // them SIGCONT, which would end a SIGSTOP fault early.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd
            .arg("--config")
            .arg(&self.config_path)
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("QUORATE_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("spawn quorated");
        self.child = Some(child);
        self.wait_http(Duration::from_secs(30));
    }

    /// Wait until the HTTP API answers at all.
    pub fn wait_http(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "{} exited early with {status}; log:\n{}",
                        self.name,
                        self.log()
                    );
                }
            }
            if self.agent.get(&self.url("/status")).call().is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "{}: HTTP API did not come up in {timeout:?}; log:\n{}",
            self.name,
            self.log()
        );
    }

    /// Wait until `/readyz` says the node serves clients.
    pub fn wait_primary(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.agent.get(&self.url("/readyz")).call().is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "{} did not become Primary in {timeout:?}; log:\n{}",
            self.name,
            self.log()
        );
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}:{}{}", self.api_host, self.api_port, path)
    }

    /// Wait until the node's log contains `what`; returns the log.
    pub fn wait_log(&self, what: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log();
            if log.contains(what) {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "{} never logged {what:?}; log tail:\n{}",
                self.name,
                cluster::tail(&log, 30)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `GET /metrics`: the Prometheus text exposition.
    pub fn metrics_text(&self) -> String {
        self.agent
            .get(&self.url("/metrics"))
            .call()
            .unwrap_or_else(|e| panic!("GET /metrics from {}: {e}", self.name))
            .into_string()
            .unwrap_or_else(|e| panic!("/metrics of {}: {e}", self.name))
    }

    /// The value of an unlabelled metric in `/metrics`.
    pub fn metric(&self, name: &str) -> f64 {
        let text = self.metrics_text();
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{}: no {name} in /metrics", self.name));
        line.trim()
            .parse()
            .unwrap_or_else(|e| panic!("{}: {name} {line}: {e}", self.name))
    }

    /// POST a JSON body; returns (HTTP status, JSON body).
    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        match self.agent.post(&self.url(path)).send_json(body.clone()) {
            Ok(r) => (r.status(), r.into_json().unwrap_or(Value::Null)),
            Err(ureq::Error::Status(code, r)) => (code, r.into_json().unwrap_or(Value::Null)),
            Err(e) => panic!("POST {path} to {}: {e}", self.name),
        }
    }

    pub fn post_raw(&self, path: &str, body: &str) -> (u16, String) {
        let req = self
            .agent
            .post(&self.url(path))
            .set("Content-Type", "application/json");
        match req.send_string(body) {
            Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
            Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
            Err(e) => panic!("POST {path} to {}: {e}", self.name),
        }
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        match self.agent.get(&self.url(path)).call() {
            Ok(r) => (r.status(), r.into_json().unwrap_or(Value::Null)),
            Err(ureq::Error::Status(code, r)) => (code, r.into_json().unwrap_or(Value::Null)),
            Err(e) => panic!("GET {path} from {}: {e}", self.name),
        }
    }

    /// Execute statements; panics unless HTTP 200 and no statement error.
    pub fn execute_ok(&self, body: Value) -> Value {
        let (code, resp) = self.post("/db/execute", &body);
        assert_eq!(
            code,
            200,
            "{}: execute {body} -> {code} {resp}\nlog tail:\n{}",
            self.name,
            cluster::tail(&self.log(), 40)
        );
        for r in resp["results"].as_array().expect("results array") {
            assert!(
                r.get("error").is_none(),
                "{}: execute {body} -> {resp}",
                self.name
            );
        }
        resp
    }

    /// Rows of a single query, as JSON arrays.
    pub fn query_rows(&self, sql: &str) -> Vec<Value> {
        let (code, resp) = self.post("/db/query?level=weak", &serde_json::json!([sql]));
        assert_eq!(code, 200, "{}: query {sql} -> {code} {resp}", self.name);
        let r = &resp["results"][0];
        assert!(r.get("error").is_none(), "query {sql}: {resp}");
        r.get("values")
            .and_then(|v| v.as_array())
            .cloned()
            .unwrap_or_default()
    }

    /// Rows of a query at a read consistency level (`none` reads even a non-Primary node).
    pub fn query_rows_level(&self, sql: &str, level: &str) -> Vec<Value> {
        let (code, resp) = self.post(
            &format!("/db/query?level={level}"),
            &serde_json::json!([sql]),
        );
        assert_eq!(code, 200, "{}: query {sql} -> {code} {resp}", self.name);
        let r = &resp["results"][0];
        assert!(r.get("error").is_none(), "query {sql}: {resp}");
        r.get("values")
            .and_then(|v| v.as_array())
            .cloned()
            .unwrap_or_default()
    }

    pub fn scalar(&self, sql: &str) -> i64 {
        let rows = self.query_rows(sql);
        rows.first()
            .and_then(|r| r[0].as_i64())
            .unwrap_or_else(|| panic!("{sql}: no integer in {rows:?}"))
    }

    /// Run the `quorate` CLI against this node's config.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(QUORATE)
            .arg("--config")
            .arg(&self.config_path)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run quorate")
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        if let Some(child) = &self.child {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig)
                .expect("signal");
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for a graceful exit; returns its exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("node running");
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "{} did not stop within 30 s after SIGTERM; log:\n{}",
                    self.name,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Adopt a daemon the CLI started (found by the pid in /status).
    pub fn kill_by_status_pid(&self) {
        let (_, status) = self.get("/status");
        if let Some(pid) = status["node"]["pid"].as_i64() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A test whose prerequisite (root, a tool, a kernel feature) is missing:
/// a failure under CI, which must provide it (`.ci/run`), and elsewhere a
/// line on stderr saying what did not run and why. Returns `false`, for
/// `if !can { return; }` style callers.
pub fn prerequisite_missing(what: &str, why: &str) -> bool {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{what} cannot run under CI=true: {why}; .ci/run must provide it"
    );
    eprintln!("SKIPPED {what}: {why}");
    false
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}
