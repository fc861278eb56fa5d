//! `quorate demo`: a throw-away cluster on 127.0.0.1 for a first look.
//!
//! It makes a CA and node certificates, starts three (or five) `quorated`
//! found beside this `quorate`, bootstraps the first, lets the others join,
//! shows their status, writes a row through each node and reads them back,
//! prints commands to try, and on Ctrl-C (SIGINT or SIGTERM) stops the
//! nodes gracefully one by one, showing which one ends with
//! `safe_to_bootstrap: 1`: the one to bootstrap next time.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use serde_json::{json, Value};
use tokio::signal::unix::{signal, Signal, SignalKind};

use super::http::NodeClient;
use super::shell::render_table;
use super::start::{last_lines, quorated_path, LOG_FILE, QUORATED_BOOTSTRAP_FLAG};
use super::{failed, CliError, Console};
use crate::config::{Config, TlsConfig};
use crate::grastate::GrastateFile;
use crate::status::{ClusterStatus, ComponentStatus, LocalState};

/// Generous for a 2-core laptop running five nodes: a join includes a
/// state transfer.
const JOIN_TIMEOUT: Duration = Duration::from_secs(120);
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(200);
/// A step that takes longer than this says what it is waiting for.
const PROGRESS_EVERY: Duration = Duration::from_secs(3);
const LOG_TAIL_LINES: usize = 20;
/// The table the demo writes to; the printed commands use it too.
const TABLE: &str = "greetings";

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Nodes in the demo cluster: 3 or 5 (an odd number, so a majority
    /// survives the loss of one or two).
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = parse_node_count)]
    pub nodes: usize,

    /// Directory for the cluster's files (certificates, configs, data,
    /// logs); it must not exist or be empty. Default: a new directory in
    /// the system's temporary directory.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,

    /// Keep the directory after the demo stops, to look at the files or to
    /// start the nodes again by hand.
    #[arg(long)]
    pub keep: bool,
}

fn parse_node_count(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n @ (3 | 5)) => Ok(n),
        _ => Err(format!(
            "the demo runs 3 or 5 nodes, not {s:?}: an odd number of nodes is what a \
             majority needs"
        )),
    }
}

/// One node of the demo and the `quorated` process running it.
struct DemoNode {
    name: String,
    dir: PathBuf,
    config_path: PathBuf,
    api: NodeClient,
    api_addr: SocketAddr,
    repl_addr: SocketAddr,
    child: Option<Child>,
}

impl DemoNode {
    fn log_path(&self) -> PathBuf {
        self.dir.join(LOG_FILE)
    }

    fn grastate_path(&self) -> PathBuf {
        self.dir.join("data").join("grastate.dat")
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        last_lines(&text, LOG_TAIL_LINES)
    }

    /// An error if the process has exited, with the end of its log.
    fn check_running(&mut self) -> Result<(), CliError> {
        let Some(child) = self.child.as_mut() else {
            return Err(failed(format!("{} is not running", self.name)));
        };
        match child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => {
                self.child = None;
                Err(failed(format!(
                    "{} exited ({status}); the end of {}:\n{}",
                    self.name,
                    self.log_path().display(),
                    self.log_tail()
                )))
            }
            Err(e) => Err(failed(format!("cannot check on {}: {e}", self.name))),
        }
    }

    async fn status(&self) -> Option<ClusterStatus> {
        let answer = self.api.get("/status").await.ok()?;
        let json = answer.json()?;
        serde_json::from_value(json["cluster"].clone()).ok()
    }
}

/// Entry point of `quorate demo`.
pub async fn run(args: DemoArgs, console: &mut Console<'_>) -> Result<(), CliError> {
    let quorated = quorated_path(std::env::current_exe().ok().as_deref(), Path::is_file);
    let dir = make_dir(args.dir.as_deref())?;
    // Registered before any node starts, so a Ctrl-C at any moment stops
    // what already runs instead of killing the demo and orphaning nodes.
    let mut signals = Signals::new()?;
    console.out(format!(
        "quorate demo: a {}-node cluster on 127.0.0.1, files in {}",
        args.nodes,
        dir.display()
    ));
    let mut nodes = match prepare(&dir, args.nodes) {
        Ok(nodes) => nodes,
        Err(e) => {
            cleanup(&dir, args.keep, console);
            return Err(e);
        }
    };
    for node in &nodes {
        console.out(format!(
            "  {}  api {}  replication {}  config {}",
            node.name,
            node.api.base(),
            node.repl_addr,
            node.config_path.display()
        ));
    }

    let started = tokio::select! {
        r = bring_up(&quorated, &mut nodes, console) => r.map(Some),
        sig = signals.recv() => {
            console.note(format!("\n{sig}: stopping before the cluster was complete"));
            Ok(None)
        }
    };
    let outcome = match started {
        Ok(Some(())) => {
            tour(&nodes, &dir, console).await;
            wait_for_the_end(&mut nodes, &mut signals, console).await;
            Ok(())
        }
        Ok(None) => Ok(()),
        Err(e) => Err(e),
    };
    stop_all(&mut nodes, console).await;
    cleanup(&dir, args.keep, console);
    outcome
}

/// The demo's directory: the one given (new or empty) or a new temporary one.
fn make_dir(given: Option<&Path>) -> Result<PathBuf, CliError> {
    let dir = match given {
        Some(dir) => {
            let empty = match std::fs::read_dir(dir) {
                Ok(mut entries) => entries.next().is_none(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
                Err(e) => {
                    return Err(failed(format!("cannot read {}: {e}", dir.display())));
                }
            };
            if !empty {
                return Err(failed(format!(
                    "{} is not empty; give --dir a new or empty directory, so the demo \
                     removes nothing of yours",
                    dir.display()
                )));
            }
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            dir.to_path_buf()
        }
        None => {
            let base = std::env::temp_dir();
            let mut n = 0;
            loop {
                let dir = base.join(format!("quorate-demo-{}-{n}", std::process::id()));
                match std::fs::create_dir(&dir) {
                    Ok(()) => break dir,
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 100 => n += 1,
                    Err(e) => {
                        return Err(failed(format!("cannot create {}: {e}", dir.display())));
                    }
                }
            }
        }
    };
    // Absolute, so the printed commands work from any directory.
    Ok(std::path::absolute(&dir).unwrap_or(dir))
}

fn cleanup(dir: &Path, keep: bool, console: &mut Console<'_>) {
    if keep {
        console.out(format!("The files stay in {}.", dir.display()));
        return;
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => console.out(format!("Removed {}.", dir.display())),
        Err(e) => console.note(format!("cannot remove {}: {e}", dir.display())),
    }
}

/// The certificates and a config for each node, on free ports.
fn prepare(dir: &Path, count: usize) -> Result<Vec<DemoNode>, CliError> {
    let tls = dir.join("tls");
    crate::tls::write_ca(&tls).context("cannot make the demo's CA")?;
    let ports = free_ports(2 * count)?;
    let localhost = Ipv4Addr::LOCALHOST;
    let repl: Vec<SocketAddr> = (0..count)
        .map(|i| SocketAddr::from((localhost, ports[2 * i])))
        .collect();
    let mut nodes = Vec::new();
    for (i, repl_addr) in repl.iter().enumerate() {
        let name = format!("node-{}", i + 1);
        let node_dir = dir.join(&name);
        std::fs::create_dir_all(&node_dir)
            .with_context(|| format!("cannot create {}", node_dir.display()))?;
        let (cert, key) = crate::tls::write_node_cert(&name, &["127.0.0.1".into()], &tls, &tls)
            .with_context(|| format!("cannot make the certificate of {name}"))?;
        let api_addr = SocketAddr::from((localhost, ports[2 * i + 1]));
        let mut config = Config::new(&name);
        config.cluster_name = "demo".into();
        config.data_dir = node_dir.join("data");
        config.runtime_dir = node_dir.join("run");
        config.api.listen = api_addr;
        config.replication.listen = *repl_addr;
        config.replication.peers = repl.clone();
        config.tls = Some(TlsConfig {
            ca: tls.join(crate::tls::CA_CERT_FILE),
            cert,
            key,
        });
        config
            .validate()
            .with_context(|| format!("the demo made a bad config for {name}"))?;
        let text = toml::to_string(&config)
            .with_context(|| format!("cannot write the config of {name}"))?;
        let config_path = node_dir.join("quorate.toml");
        std::fs::write(
            &config_path,
            format!("# Written by `quorate demo`; see quorate.toml(5).\n{text}"),
        )
        .with_context(|| format!("cannot write {}", config_path.display()))?;
        nodes.push(DemoNode {
            api: NodeClient::new(&api_addr.to_string(), Duration::from_secs(10))
                .map_err(|e| CliError::Failed(e.into()))?,
            name,
            dir: node_dir,
            config_path,
            api_addr,
            repl_addr: *repl_addr,
            child: None,
        });
    }
    Ok(nodes)
}

/// `n` distinct ports on 127.0.0.1 that are free for both TCP (the API)
/// and UDP (QUIC) right now.
fn free_ports(n: usize) -> Result<Vec<u16>, CliError> {
    let mut ports: Vec<u16> = Vec::new();
    for _ in 0..1000 {
        if ports.len() == n {
            break;
        }
        let tcp = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .context("cannot bind a TCP port on 127.0.0.1")?;
        let port = tcp.local_addr().context("cannot read a bound port")?.port();
        if !ports.contains(&port) && UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            ports.push(port);
        }
    }
    if ports.len() < n {
        return Err(failed("cannot find free ports on 127.0.0.1"));
    }
    Ok(ports)
}

/// Starts `quorated` for `node`; its output goes to the node's log file.
fn spawn(quorated: &Path, node: &mut DemoNode, bootstrap: bool) -> Result<(), CliError> {
    let log_path = node.log_path();
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("cannot create {}", log_path.display()))?;
    let stdout = log
        .try_clone()
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let mut cmd = std::process::Command::new(quorated);
    cmd.arg("--config").arg(&node.config_path);
    if bootstrap {
        cmd.arg(QUORATED_BOOTSTRAP_FLAG);
    }
    cmd.stdin(Stdio::null()).stdout(stdout).stderr(log);
    // SAFETY: runs in the forked child before exec and only makes two
    // async-signal-safe system calls. Its own process group keeps the
    // terminal's Ctrl-C away from the nodes, so the demo stops them one by
    // one; the parent-death signal stops them gracefully if the demo itself
    // is killed. The demo spawns from the thread that lives until it exits
    // (the parent-death signal follows the spawning thread).
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setpgid(nix::unistd::Pid::from_raw(0), nix::unistd::Pid::from_raw(0))
                .map_err(std::io::Error::from)?;
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                .map_err(std::io::Error::from)
        });
    }
    let child = cmd.spawn().with_context(|| {
        format!(
            "cannot start {} (quorate demo runs the quorated installed beside quorate, else the \
             one on PATH)",
            quorated.display()
        )
    })?;
    node.child = Some(child);
    Ok(())
}

/// Bootstraps the first node, then lets the others join one at a time.
async fn bring_up(
    quorated: &Path,
    nodes: &mut [DemoNode],
    console: &mut Console<'_>,
) -> Result<(), CliError> {
    let count = nodes.len();
    let began = Instant::now();
    for (i, node) in nodes.iter_mut().enumerate() {
        let bootstrap = i == 0;
        let what = if bootstrap {
            format!("bootstrapping {} (a new primary component)", node.name)
        } else {
            format!("starting {}: it joins and receives the state", node.name)
        };
        console.note(format!("{what} ..."));
        let step = Instant::now();
        spawn(quorated, node, bootstrap)?;
        wait_for(node, console, |s| {
            s.cluster_status == ComponentStatus::Primary && s.local_state == LocalState::Synced
        })
        .await?;
        console.note(format!(
            "  {} is Primary and Synced ({:.1} s)",
            node.name,
            step.elapsed().as_secs_f64()
        ));
    }
    // A member that joined first may not have seen the last join yet.
    for node in nodes.iter_mut() {
        wait_for(node, console, |s| s.cluster_size == count as u64).await?;
    }
    console.note(format!(
        "all {count} nodes are members ({:.1} s)",
        began.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// Polls a node's status until `done`, saying what it waits for now and then.
async fn wait_for(
    node: &mut DemoNode,
    console: &mut Console<'_>,
    done: impl Fn(&ClusterStatus) -> bool,
) -> Result<(), CliError> {
    let start = Instant::now();
    let mut next_note = start + PROGRESS_EVERY;
    loop {
        node.check_running()?;
        let status = node.status().await;
        if status.as_ref().is_some_and(&done) {
            return Ok(());
        }
        let now = Instant::now();
        let seen = match &status {
            Some(s) => format!(
                "{} {:?}, cluster size {}",
                match s.cluster_status {
                    ComponentStatus::Primary => "Primary",
                    ComponentStatus::NonPrimary => "non-Primary",
                    ComponentStatus::Disconnected => "Disconnected",
                },
                s.local_state,
                s.cluster_size
            ),
            None => "its API does not answer yet".to_string(),
        };
        if now >= start + JOIN_TIMEOUT {
            return Err(CliError::Timeout(format!(
                "{} did not get there in {} s (last seen: {seen}); the end of {}:\n{}",
                node.name,
                JOIN_TIMEOUT.as_secs(),
                node.log_path().display(),
                node.log_tail()
            )));
        }
        if now >= next_note {
            console.note(format!(
                "  ... still waiting for {} ({} s): {seen}",
                node.name,
                (now - start).as_secs()
            ));
            next_note = now + PROGRESS_EVERY;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// What the demo shows once the cluster runs: status, a few rows written
/// through every node, and commands to try.
async fn tour(nodes: &[DemoNode], dir: &Path, console: &mut Console<'_>) {
    console.out("\nThe cluster, as each node sees it:");
    let mut rows = Vec::new();
    let mut first_status = None;
    for node in nodes {
        let Some(s) = node.status().await else {
            rows.push(vec![node.name.clone(), node.api.base().to_string()]);
            continue;
        };
        rows.push(vec![
            node.name.clone(),
            node.api.base().to_string(),
            match s.cluster_status {
                ComponentStatus::Primary => "Primary".into(),
                ComponentStatus::NonPrimary => "non-Primary".into(),
                ComponentStatus::Disconnected => "Disconnected".into(),
            },
            s.cluster_size.to_string(),
            format!("{:?}", s.local_state),
            s.last_committed.to_string(),
            s.leader.clone().unwrap_or_default(),
        ]);
        first_status.get_or_insert(s);
    }
    let columns = [
        "node",
        "api",
        "cluster_status",
        "cluster_size",
        "local_state",
        "last_committed",
        "leader",
    ]
    .map(String::from);
    console.out(render_table(&columns, &rows).trim_end());
    if let (Some(s), Some(first)) = (first_status, nodes.first()) {
        console.out(format!(
            "\nThe full status of {} (what `quorate --show-cluster-status` prints on it):",
            first.name
        ));
        console.out(s.render_table().trim_end());
    }

    console.out(format!("\nWriting one row through each node into {TABLE}:"));
    if let Err(e) = write_rows(nodes, console).await {
        console.note(format!("  the sample writes failed: {e}"));
    }

    let quorate = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "quorate".into());
    let addrs: Vec<String> = nodes.iter().map(|n| n.api_addr.to_string()).collect();
    let (first, last) = (&addrs[0], &addrs[addrs.len() - 1]);
    console.out(format!(
        "\nTry it while it runs:\n  \
         curl -s -XPOST {first}/db/execute -H 'Content-Type: application/json' \\\n    \
         -d '[[\"INSERT INTO {TABLE}(node, said) VALUES(?, ?)\", \"you\", \"hi\"]]'\n  \
         curl -s -G {last}/db/query --data-urlencode 'q=SELECT * FROM {TABLE}'\n  \
         {quorate} shell --node {last}\n  \
         {quorate} --config {config} --show-cluster-status\n  \
         {quorate} bench --nodes {all} --clients 8 --duration 10s\n  \
         tail -f {log}\n\
         Each node's files are in {dir}/node-N (config, data/, quorated.log).\n\
         Press Ctrl-C to stop the cluster.",
        config = nodes[0].config_path.display(),
        all = addrs.join(","),
        log = nodes[0].log_path().display(),
        dir = dir.display(),
    ));
}

async fn write_rows(nodes: &[DemoNode], console: &mut Console<'_>) -> Result<(), String> {
    let create = format!(
        "CREATE TABLE IF NOT EXISTS {TABLE} (id INTEGER PRIMARY KEY, node TEXT NOT NULL, \
         said TEXT NOT NULL)"
    );
    execute(&nodes[0], json!([create])).await?;
    for node in nodes {
        let insert = json!([[
            format!("INSERT INTO {TABLE}(node, said) VALUES(?, ?)"),
            node.name,
            format!("hello from {}", node.name)
        ]]);
        let body = execute(node, insert).await?;
        console.out(format!(
            "  {} committed it as seqno {}",
            node.name, body["raft_index"]
        ));
    }
    let reader = &nodes[nodes.len() - 1];
    let answer = reader
        .api
        .post(
            "/db/query?level=linearizable",
            &json!([format!("SELECT * FROM {TABLE} ORDER BY id")]),
        )
        .await
        .map_err(|e| e.to_string())?;
    let body = answer
        .json()
        .ok_or_else(|| format!("{} answered {}", reader.name, answer.text))?;
    let result = &body["results"][0];
    let cells = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .map(|c| c.as_str().map_or_else(|| c.to_string(), String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let rows: Vec<Vec<String>> = result["values"]
        .as_array()
        .map(|rows| rows.iter().map(cells).collect())
        .unwrap_or_default();
    console.out(format!(
        "Read back on {} (level=linearizable):\n{}",
        reader.name,
        render_table(&cells(&result["columns"]), &rows).trim_end()
    ));
    Ok(())
}

/// Runs a write on `node`; the answer's body, or why it failed.
async fn execute(node: &DemoNode, statements: Value) -> Result<Value, String> {
    let answer = node
        .api
        .post("/db/execute?transaction&raft_index", &statements)
        .await
        .map_err(|e| e.to_string())?;
    let body = answer.json().unwrap_or(Value::Null);
    let error = body["error"]
        .as_str()
        .or_else(|| body["results"][0]["error"].as_str());
    match (answer.status.as_u16(), error) {
        (200, None) => Ok(body),
        (status, Some(e)) => Err(format!("{} answered {status}: {e}", node.name)),
        (status, None) => Err(format!("{} answered {status}: {}", node.name, answer.text)),
    }
}

/// Runs until SIGINT or SIGTERM; says so if a node exits meanwhile.
async fn wait_for_the_end(
    nodes: &mut [DemoNode],
    signals: &mut Signals,
    console: &mut Console<'_>,
) {
    loop {
        tokio::select! {
            sig = signals.recv() => {
                console.note(format!("\n{sig}: stopping the cluster"));
                return;
            }
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                for node in nodes.iter_mut().filter(|n| n.child.is_some()) {
                    if let Err(e) = node.check_running() {
                        console.note(format!("{e}"));
                    }
                }
            }
        }
    }
}

/// Stops the nodes gracefully, last started first, and shows what each
/// leaves in grastate.dat.
async fn stop_all(nodes: &mut [DemoNode], console: &mut Console<'_>) {
    if nodes.iter().all(|n| n.child.is_none()) {
        return;
    }
    console.out(
        "\nStopping the nodes one by one (SIGTERM: each leaves the cluster and records its \
         position in grastate.dat):",
    );
    let mut safe = Vec::new();
    for node in nodes.iter_mut().rev() {
        let Some(mut child) = node.child.take() else {
            continue;
        };
        let began = Instant::now();
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let exit = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status.to_string(),
                Ok(None) if began.elapsed() < STOP_TIMEOUT => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break format!(
                        "killed: it did not stop within {} s",
                        STOP_TIMEOUT.as_secs()
                    );
                }
            }
        };
        let grastate = match GrastateFile::read(&node.grastate_path()) {
            Ok(Some(g)) => {
                if g.safe_to_bootstrap {
                    safe.push(node.name.clone());
                }
                format!(
                    "seqno: {}  safe_to_bootstrap: {}",
                    g.seqno,
                    u8::from(g.safe_to_bootstrap)
                )
            }
            Ok(None) => "no grastate.dat".into(),
            Err(e) => e.to_string(),
        };
        console.out(format!(
            "  {} stopped ({exit}, {:.1} s); grastate.dat: {grastate}",
            node.name,
            began.elapsed().as_secs_f64()
        ));
    }
    match safe.as_slice() {
        [one] => console.out(format!(
            "{one} ends with safe_to_bootstrap: 1: it left last and holds every commit, so it \
             is the node to bootstrap next time (quorate --bootstrap-node); the others join it \
             (quorate --restart-node)."
        )),
        [] => console
            .out("No node ends with safe_to_bootstrap: 1; see OUTAGE PROCEDURES in quorate(8)."),
        many => console.out(format!(
            "Several nodes end with safe_to_bootstrap: 1 ({}); see OUTAGE PROCEDURES in \
             quorate(8).",
            many.join(", ")
        )),
    }
}

/// SIGINT (Ctrl-C) and SIGTERM.
struct Signals {
    interrupt: Signal,
    terminate: Signal,
}

impl Signals {
    fn new() -> Result<Signals, CliError> {
        let register = |kind| {
            signal(kind).map_err(|e| failed(format!("cannot handle Ctrl-C and SIGTERM: {e}")))
        };
        Ok(Signals {
            interrupt: register(SignalKind::interrupt())?,
            terminate: register(SignalKind::terminate())?,
        })
    }

    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_count_is_3_or_5() {
        assert_eq!(parse_node_count("3"), Ok(3));
        assert_eq!(parse_node_count("5"), Ok(5));
        for bad in ["1", "2", "4", "7", "three", ""] {
            let e = parse_node_count(bad).unwrap_err();
            assert!(e.contains("3 or 5"), "{e}");
        }
    }

    #[test]
    fn ports_are_distinct() {
        let ports = free_ports(10).unwrap();
        let mut sorted = ports.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 10);
    }

    #[test]
    fn a_given_dir_must_be_new_or_empty() {
        let base = std::env::temp_dir().join(format!("quorate-demo-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let dir = make_dir(Some(&base)).unwrap();
        assert!(dir.is_dir() && dir.is_absolute());
        std::fs::write(dir.join("mine"), "x").unwrap();
        let e = make_dir(Some(&base)).unwrap_err().to_string();
        assert!(e.contains("not empty"), "{e}");
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn prepared_configs_load_and_name_every_peer() {
        let base = std::env::temp_dir().join(format!("quorate-demo-prep-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let dir = make_dir(Some(&base)).unwrap();
        let nodes = prepare(&dir, 3).unwrap();
        assert_eq!(nodes.len(), 3);
        for node in &nodes {
            let config = Config::load(&node.config_path).unwrap();
            assert_eq!(config.node_name, node.name);
            assert_eq!(config.replication.peers.len(), 3);
            assert_eq!(config.api.listen, node.api_addr);
            let tls = config.tls.unwrap();
            crate::tls::load_node_identity(&tls.ca, &tls.cert, &tls.key).unwrap();
        }
        std::fs::remove_dir_all(&base).unwrap();
    }
}
