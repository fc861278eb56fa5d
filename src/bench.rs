//! `quorate bench`: a sysbench-style load generator that drives a running
//! node or cluster through its HTTP API, so it measures what clients see
//! (HTTP, certification, replication, apply) and nothing else.
//!
//! Clients are spread round-robin over `--nodes`; each client is one task
//! with one keep-alive HTTP/1.1 connection that sends one transaction at a
//! time. Latency percentiles are over committed transactions; a transaction
//! that failed certification (HTTP 409, or a statement error that mentions
//! certification) counts in the certification-failure rate, anything else
//! as an error.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rand::distributions::Alphanumeric;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{json, Value};

/// Rows per transaction while filling the update table.
const FILL_BATCH: u64 = 1_000;
/// How far apart the insert ids of two clients start; a client would need a
/// billion inserts to reach the next client's range.
const INSERT_ID_STRIDE: u64 = 1_000_000_000;
/// Length of the `c` column sysbench updates.
const C_LEN: usize = 120;
/// Length of the `pad` column.
const PAD_LEN: usize = 60;
/// How long a request may outlive the run before the client gives up on it.
const REQUEST_GRACE: Duration = Duration::from_secs(10);
/// Pause after a transport error, so a dead node is not hammered in a loop.
const ERROR_BACKOFF: Duration = Duration::from_millis(50);
/// Progress lines on stderr during long runs.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// Arguments of `quorate bench` (clap).
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Client API addresses, HOST:PORT[,HOST:PORT...]; clients are spread
    /// over them round-robin. The first one runs the prepare step.
    #[arg(long, value_delimiter = ',', required = true)]
    pub nodes: Vec<String>,
    /// `update`: update random rows of a prepared table; `insert`: insert
    /// new rows with ids that never collide; `read`: read random rows of
    /// the update table (`/db/query` at `--level`).
    #[arg(long, value_enum, default_value_t = Workload::Update)]
    pub workload: Workload,
    /// Read consistency of the `read` workload (rqlite's `level`).
    #[arg(long, value_enum, default_value_t = ReadLevel::Weak)]
    pub level: ReadLevel,
    /// Rows in the update table.
    #[arg(long, default_value_t = 10_000)]
    pub rows: u64,
    /// Concurrent clients (one connection each).
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// How long to run: `30s`, `2m`, `500ms`, or plain seconds.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Print exactly one JSON line instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Use the tables as they are (a previous run prepared them).
    #[arg(long)]
    pub no_prepare: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    Update,
    Insert,
    Read,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Update => "update",
            Workload::Insert => "insert",
            Workload::Read => "read",
        }
    }
}

/// The `level` a `read` workload asks for (see docs/API.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReadLevel {
    None,
    Weak,
    Linearizable,
}

impl ReadLevel {
    pub fn name(self) -> &'static str {
        match self {
            ReadLevel::None => "none",
            ReadLevel::Weak => "weak",
            ReadLevel::Linearizable => "linearizable",
        }
    }
}

/// What [`run`] does.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// `HOST:PORT` or `http://HOST:PORT`.
    pub nodes: Vec<String>,
    pub workload: Workload,
    /// What the `read` workload asks for.
    pub level: ReadLevel,
    pub rows: u64,
    pub clients: usize,
    pub duration: Duration,
    /// Create and fill the tables first.
    pub prepare: bool,
    /// Print progress to stderr this often; `None` stays quiet.
    pub progress_every: Option<Duration>,
}

impl From<BenchArgs> for BenchOptions {
    fn from(args: BenchArgs) -> Self {
        BenchOptions {
            nodes: args.nodes,
            workload: args.workload,
            level: args.level,
            rows: args.rows,
            clients: args.clients,
            duration: args.duration,
            prepare: !args.no_prepare,
            progress_every: Some(PROGRESS_EVERY),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    #[error("bad node address {addr:?}: {reason}")]
    BadAddress { addr: String, reason: String },
    #[error("prepare failed on {node}: {message}")]
    Prepare { node: String, message: String },
}

/// Latency percentiles of committed transactions, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Latency {
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    /// `samples` need not be sorted.
    pub fn from_samples(samples: &mut [Duration]) -> Self {
        samples.sort_unstable();
        let ms = |p: f64| percentile(samples, p).as_secs_f64() * 1e3;
        Latency {
            p50_ms: ms(50.0),
            p95_ms: ms(95.0),
            p99_ms: ms(99.0),
            max_ms: ms(100.0),
        }
    }
}

/// The committed transactions of the clients that wrote to one node: a
/// write on a follower takes more hops than one on the leader (the causal
/// wait, the forward), and the overall tail is usually theirs.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeLatency {
    /// The node's API address, as given in `--nodes`.
    pub node: String,
    pub transactions: u64,
    pub latency: Latency,
}

/// The outcome of a run.
#[derive(Debug, Clone)]
pub struct BenchReport {
    pub workload: Workload,
    pub clients: usize,
    pub nodes: usize,
    pub elapsed: Duration,
    /// Committed transactions.
    pub transactions: u64,
    pub cert_failures: u64,
    /// Failures other than certification (HTTP errors, statement errors,
    /// transport errors).
    pub errors: u64,
    /// The first error seen, to tell the operator what went wrong.
    pub first_error: Option<String>,
    pub latency: Latency,
    /// The same per node, in `--nodes` order.
    pub per_node: Vec<NodeLatency>,
}

impl BenchReport {
    pub fn attempts(&self) -> u64 {
        self.transactions + self.cert_failures + self.errors
    }

    pub fn tps(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.transactions as f64 / secs
        } else {
            0.0
        }
    }

    pub fn cert_failure_rate(&self) -> f64 {
        match self.attempts() {
            0 => 0.0,
            n => self.cert_failures as f64 / n as f64,
        }
    }

    /// One line, no trailing newline; the first six keys are the contract.
    pub fn to_json_line(&self) -> String {
        #[derive(Serialize)]
        struct NodeLine<'a> {
            node: &'a str,
            transactions: u64,
            p50_ms: f64,
            p99_ms: f64,
        }
        #[derive(Serialize)]
        struct Line<'a> {
            tps: f64,
            p50_ms: f64,
            p95_ms: f64,
            p99_ms: f64,
            max_ms: f64,
            cert_failure_rate: f64,
            transactions: u64,
            attempts: u64,
            cert_failures: u64,
            errors: u64,
            clients: usize,
            nodes: usize,
            workload: &'a str,
            duration_s: f64,
            per_node: Vec<NodeLine<'a>>,
        }
        let line = Line {
            tps: round(self.tps(), 3),
            p50_ms: round(self.latency.p50_ms, 3),
            p95_ms: round(self.latency.p95_ms, 3),
            p99_ms: round(self.latency.p99_ms, 3),
            max_ms: round(self.latency.max_ms, 3),
            cert_failure_rate: round(self.cert_failure_rate(), 6),
            transactions: self.transactions,
            attempts: self.attempts(),
            cert_failures: self.cert_failures,
            errors: self.errors,
            clients: self.clients,
            nodes: self.nodes,
            workload: self.workload.name(),
            duration_s: round(self.elapsed.as_secs_f64(), 3),
            per_node: self
                .per_node
                .iter()
                .map(|n| NodeLine {
                    node: &n.node,
                    transactions: n.transactions,
                    p50_ms: round(n.latency.p50_ms, 3),
                    p99_ms: round(n.latency.p99_ms, 3),
                })
                .collect(),
        };
        // Plain numbers and a fixed string: serialization cannot fail.
        serde_json::to_string(&line).unwrap_or_default()
    }

    /// The human-readable report.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let l = &self.latency;
        let rows = [
            ("workload", self.workload.name().to_string()),
            ("nodes", self.nodes.to_string()),
            ("clients", self.clients.to_string()),
            ("duration", format!("{:.1} s", self.elapsed.as_secs_f64())),
            ("transactions", self.transactions.to_string()),
            ("tps", format!("{:.1}", self.tps())),
            (
                "cert failures",
                format!(
                    "{} ({:.2} % of {} attempts)",
                    self.cert_failures,
                    self.cert_failure_rate() * 100.0,
                    self.attempts()
                ),
            ),
            ("other errors", self.errors.to_string()),
            ("latency p50", format!("{:.2} ms", l.p50_ms)),
            ("latency p95", format!("{:.2} ms", l.p95_ms)),
            ("latency p99", format!("{:.2} ms", l.p99_ms)),
            ("latency max", format!("{:.2} ms", l.max_ms)),
        ];
        for (name, value) in rows {
            let _ = writeln!(out, "{name:<14} {value}");
        }
        if self.per_node.len() > 1 {
            for n in &self.per_node {
                let _ = writeln!(
                    out,
                    "{:<14} {}: {} transactions, p50 {:.2} ms, p99 {:.2} ms",
                    "via node", n.node, n.transactions, n.latency.p50_ms, n.latency.p99_ms
                );
            }
        }
        if let Some(e) = &self.first_error {
            let _ = writeln!(out, "{:<14} {e}", "first error");
        }
        out
    }
}

fn round(x: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (x * scale).round() / scale
}

/// Nearest-rank percentile of sorted samples (`p` in 0..=100); zero when
/// there are none.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// `30s`, `2m`, `500ms`, `1h30m` (Go duration syntax) or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"));
    }
    crate::api::parse_go_duration(s)
        .ok_or_else(|| format!("{s:?} is not a duration (examples: 30s, 2m, 500ms, 45)"))
}

/// Run the benchmark and print its report; the CLI calls this.
pub async fn run_cli(args: BenchArgs) -> anyhow::Result<()> {
    let json_output = args.json;
    let report = run(args.into()).await?;
    if json_output {
        println!("{}", report.to_json_line());
    } else {
        print!("{}", report.to_table());
    }
    if report.transactions == 0 {
        anyhow::bail!(
            "no transaction committed{}",
            report
                .first_error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        );
    }
    Ok(())
}

/// Prepare (unless told not to), then run the clients for the duration.
pub async fn run(opts: BenchOptions) -> Result<BenchReport, BenchError> {
    validate(&opts)?;
    let targets = opts
        .nodes
        .iter()
        .map(|n| Target::parse(n, opts.level))
        .collect::<Result<Vec<_>, _>>()?;
    let first = &targets[0];
    if opts.prepare {
        prepare(first, &opts).await?;
    }

    let committed = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + opts.duration;
    let progress = opts
        .progress_every
        .map(|every| tokio::spawn(report_progress(every, start, Arc::clone(&committed))));
    let tasks: Vec<_> = (0..opts.clients)
        .map(|index| {
            let worker = Worker {
                index,
                target: targets[index % targets.len()].clone(),
                workload: opts.workload,
                rows: opts.rows,
                deadline,
                committed: Arc::clone(&committed),
            };
            (index % targets.len(), tokio::spawn(worker.run()))
        })
        .collect();
    let mut total = ClientStats::default();
    let mut by_node: Vec<Vec<Duration>> = vec![Vec::new(); targets.len()];
    for (node, task) in tasks {
        match task.await {
            Ok(stats) => {
                by_node[node].extend_from_slice(&stats.latencies);
                total.merge(stats);
            }
            Err(e) => total.record_error(format!("client task failed: {e}")),
        }
    }
    let per_node = targets
        .iter()
        .zip(by_node.iter_mut())
        .map(|(target, samples)| NodeLatency {
            node: target.name.clone(),
            transactions: samples.len() as u64,
            latency: Latency::from_samples(samples),
        })
        .collect();
    let elapsed = start.elapsed();
    if let Some(p) = progress {
        p.abort();
    }
    Ok(BenchReport {
        workload: opts.workload,
        clients: opts.clients,
        nodes: targets.len(),
        elapsed,
        transactions: total.committed,
        cert_failures: total.cert_failures,
        errors: total.errors,
        first_error: total.first_error,
        latency: Latency::from_samples(&mut total.latencies),
        per_node,
    })
}

fn validate(opts: &BenchOptions) -> Result<(), BenchError> {
    let invalid = |m: &str| Err(BenchError::InvalidOptions(m.to_string()));
    if opts.nodes.is_empty() {
        return invalid("--nodes names no node");
    }
    if opts.clients == 0 {
        return invalid("--clients must be at least 1");
    }
    if opts.duration.is_zero() {
        return invalid("--duration must be positive");
    }
    if opts.workload != Workload::Insert && opts.rows == 0 {
        return invalid("--rows must be at least 1 for the update and read workloads");
    }
    Ok(())
}

async fn report_progress(every: Duration, start: Instant, committed: Arc<AtomicU64>) {
    let mut last = 0u64;
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        ticker.tick().await;
        let now = committed.load(Ordering::Relaxed);
        let secs = start.elapsed().as_secs_f64();
        eprintln!(
            "[{secs:>5.0}s] tps {:.1} (last {}s: {:.1}), {now} committed",
            now as f64 / secs,
            every.as_secs(),
            (now - last) as f64 / every.as_secs_f64()
        );
        last = now;
    }
}

/// One node's `/db/execute` and `/db/query` endpoints.
#[derive(Debug, Clone)]
struct Target {
    name: String,
    execute: Uri,
    execute_tx: Uri,
    /// At the level the run reads with.
    query: Uri,
}

impl Target {
    fn parse(addr: &str, level: ReadLevel) -> Result<Self, BenchError> {
        let bad = |reason: &str| BenchError::BadAddress {
            addr: addr.to_string(),
            reason: reason.to_string(),
        };
        let host_port = match addr.split_once("://") {
            Some(("http", rest)) => rest.trim_end_matches('/'),
            Some((scheme, _)) => return Err(bad(&format!("scheme {scheme} is not supported"))),
            None => addr,
        };
        if host_port.is_empty() || host_port.contains('/') {
            return Err(bad("expected HOST:PORT"));
        }
        let uri = |path: &str| {
            format!("http://{host_port}{path}")
                .parse::<Uri>()
                .map_err(|e| bad(&e.to_string()))
        };
        Ok(Target {
            name: host_port.to_string(),
            execute: uri("/db/execute")?,
            execute_tx: uri("/db/execute?transaction")?,
            query: uri(&format!("/db/query?level={}", level.name()))?,
        })
    }
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A client keeps at most one idle connection, so its sequential requests
/// share one keep-alive connection.
fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1)
        .build_http()
}

async fn post(client: &HttpClient, uri: &Uri, body: &Value) -> Result<(StatusCode, Bytes), String> {
    let request = Request::builder()
        .method(Method::POST)
        .uri(uri.clone())
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| e.to_string())?;
    let response = client.request(request).await.map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body))
}

/// How one transaction ended.
#[derive(Debug, PartialEq)]
enum Outcome {
    Committed,
    CertificationFailed,
    Failed(String),
}

fn classify(status: StatusCode, body: &[u8]) -> Outcome {
    if status == StatusCode::CONFLICT {
        return Outcome::CertificationFailed;
    }
    let text = || String::from_utf8_lossy(body).trim().to_string();
    if !status.is_success() {
        return Outcome::Failed(format!("HTTP {status}: {}", text()));
    }
    let Ok(doc) = serde_json::from_slice::<Value>(body) else {
        return Outcome::Failed(format!("response is not JSON: {}", text()));
    };
    let statement_errors = doc["results"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["error"].as_str());
    match doc["error"]
        .as_str()
        .into_iter()
        .chain(statement_errors)
        .next()
    {
        None => Outcome::Committed,
        Some(e) if e.to_ascii_lowercase().contains("certification") => Outcome::CertificationFailed,
        Some(e) => Outcome::Failed(e.to_string()),
    }
}

fn random_text(rng: &mut StdRng, len: usize) -> String {
    rng.sample_iter(Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

async fn prepare(target: &Target, opts: &BenchOptions) -> Result<(), BenchError> {
    let client = http_client();
    let fail = |message: String| BenchError::Prepare {
        node: target.name.clone(),
        message,
    };
    let run = |uri: &Uri, body: Value| {
        let client = &client;
        let uri = uri.clone();
        async move {
            match post(client, &uri, &body).await {
                Ok((status, bytes)) => match classify(status, &bytes) {
                    Outcome::Committed => Ok(()),
                    Outcome::CertificationFailed => Err("certification failed".to_string()),
                    Outcome::Failed(e) => Err(e),
                },
                Err(e) => Err(e),
            }
        }
    };
    let (table, create) = match opts.workload {
        Workload::Update | Workload::Read => (
            "bench_update",
            "CREATE TABLE bench_update(id INTEGER PRIMARY KEY, k INTEGER NOT NULL, \
             c TEXT NOT NULL, pad TEXT NOT NULL)",
        ),
        Workload::Insert => (
            "bench_insert",
            "CREATE TABLE bench_insert(id INTEGER PRIMARY KEY, k INTEGER, c TEXT, pad TEXT)",
        ),
    };
    run(
        &target.execute,
        json!([format!("DROP TABLE IF EXISTS {table}"), create]),
    )
    .await
    .map_err(fail)?;
    if opts.workload == Workload::Insert {
        return Ok(());
    }
    let mut rng = StdRng::from_entropy();
    let mut first = 1;
    while first <= opts.rows {
        let last = (first + FILL_BATCH - 1).min(opts.rows);
        let statements: Vec<Value> = (first..=last)
            .map(|id| {
                json!([
                    "INSERT INTO bench_update(id, k, c, pad) VALUES(?, ?, ?, ?)",
                    id,
                    rng.gen_range(1..=opts.rows),
                    random_text(&mut rng, C_LEN),
                    random_text(&mut rng, PAD_LEN),
                ])
            })
            .collect();
        run(&target.execute_tx, Value::Array(statements))
            .await
            .map_err(|e| fail(format!("filling rows {first}..={last}: {e}")))?;
        first = last + 1;
    }
    Ok(())
}

#[derive(Debug, Default)]
struct ClientStats {
    latencies: Vec<Duration>,
    committed: u64,
    cert_failures: u64,
    errors: u64,
    first_error: Option<String>,
}

impl ClientStats {
    fn record_error(&mut self, e: String) {
        self.errors += 1;
        self.first_error.get_or_insert(e);
    }

    fn merge(&mut self, other: ClientStats) {
        self.latencies.extend(other.latencies);
        self.committed += other.committed;
        self.cert_failures += other.cert_failures;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

struct Worker {
    index: usize,
    target: Target,
    workload: Workload,
    rows: u64,
    deadline: Instant,
    committed: Arc<AtomicU64>,
}

impl Worker {
    async fn run(self) -> ClientStats {
        let client = http_client();
        let mut rng = StdRng::from_entropy();
        let mut stats = ClientStats::default();
        let mut counter = 0u64;
        while Instant::now() < self.deadline {
            let (uri, body) = match self.workload {
                Workload::Read => (
                    &self.target.query,
                    json!([[
                        "SELECT c FROM bench_update WHERE id=?",
                        rng.gen_range(1..=self.rows),
                    ]]),
                ),
                Workload::Update => (
                    &self.target.execute,
                    json!([[
                        "UPDATE bench_update SET c=? WHERE id=?",
                        random_text(&mut rng, C_LEN),
                        rng.gen_range(1..=self.rows),
                    ]]),
                ),
                Workload::Insert => {
                    counter += 1;
                    (
                        &self.target.execute,
                        json!([[
                            "INSERT INTO bench_insert(id, k, c, pad) VALUES(?, ?, ?, ?)",
                            self.index as u64 * INSERT_ID_STRIDE + counter,
                            rng.gen_range(1..=self.rows.max(1)),
                            random_text(&mut rng, C_LEN),
                            random_text(&mut rng, PAD_LEN),
                        ]]),
                    )
                }
            };
            let limit = self.deadline.saturating_duration_since(Instant::now()) + REQUEST_GRACE;
            let started = Instant::now();
            let sent = tokio::time::timeout(limit, post(&client, uri, &body)).await;
            let latency = started.elapsed();
            match sent {
                Ok(Ok((status, bytes))) => match classify(status, &bytes) {
                    Outcome::Committed => {
                        stats.committed += 1;
                        stats.latencies.push(latency);
                        self.committed.fetch_add(1, Ordering::Relaxed);
                    }
                    Outcome::CertificationFailed => stats.cert_failures += 1,
                    Outcome::Failed(e) => stats.record_error(format!("{}: {e}", self.target.name)),
                },
                Ok(Err(e)) => {
                    stats.record_error(format!("{}: {e}", self.target.name));
                    let pause =
                        ERROR_BACKOFF.min(self.deadline.saturating_duration_since(Instant::now()));
                    tokio::time::sleep(pause).await;
                }
                Err(_) => {
                    stats.record_error(format!(
                        "{}: no answer within {:?} after the run ended",
                        self.target.name, REQUEST_GRACE
                    ));
                    break;
                }
            }
        }
        stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::testing::{spawn_server, FakeBackend};
    use crate::api::ApiOptions;
    use crate::sql::{Params, SqlValue};

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    /// A run of `workload` against `nodes` with the defaults the tests
    /// share; each test overrides what it is about.
    fn options(nodes: Vec<String>, workload: Workload) -> BenchOptions {
        BenchOptions {
            nodes,
            workload,
            level: ReadLevel::Weak,
            rows: 10,
            clients: 1,
            duration: ms(300),
            prepare: true,
            progress_every: None,
        }
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut samples: Vec<Duration> = (1..=100).rev().map(ms).collect();
        let l = Latency::from_samples(&mut samples);
        assert_eq!(
            l,
            Latency {
                p50_ms: 50.0,
                p95_ms: 95.0,
                p99_ms: 99.0,
                max_ms: 100.0
            }
        );

        let sorted: Vec<Duration> = (1..=10).map(ms).collect();
        assert_eq!(percentile(&sorted, 50.0), ms(5));
        assert_eq!(percentile(&sorted, 95.0), ms(10));
        assert_eq!(percentile(&sorted, 0.0), ms(1));
        assert_eq!(percentile(&[ms(7)], 99.0), ms(7));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
        assert_eq!(Latency::from_samples(&mut []), Latency::default());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("500ms"), Ok(ms(500)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("1.5"), Ok(ms(1500)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        for bad in ["", "ten", "5x", "-3", "-3s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    fn report() -> BenchReport {
        BenchReport {
            workload: Workload::Update,
            clients: 16,
            nodes: 3,
            elapsed: Duration::from_secs(10),
            transactions: 1234,
            cert_failures: 6,
            errors: 0,
            first_error: None,
            latency: Latency {
                p50_ms: 1.5,
                p95_ms: 4.25,
                p99_ms: 9.0,
                max_ms: 20.125,
            },
            per_node: vec![
                NodeLatency {
                    node: "127.0.0.1:4001".into(),
                    transactions: 734,
                    latency: Latency {
                        p50_ms: 1.25,
                        p95_ms: 3.0,
                        p99_ms: 6.5,
                        max_ms: 10.0,
                    },
                },
                NodeLatency {
                    node: "127.0.0.1:4002".into(),
                    transactions: 500,
                    latency: Latency {
                        p50_ms: 2.0,
                        p95_ms: 6.0,
                        p99_ms: 12.75,
                        max_ms: 20.125,
                    },
                },
            ],
        }
    }

    #[test]
    fn json_line_starts_with_the_contract_keys() {
        let line = report().to_json_line();
        assert!(!line.contains('\n'));
        assert!(
            line.starts_with(
                r#"{"tps":123.4,"p50_ms":1.5,"p95_ms":4.25,"p99_ms":9.0,"max_ms":20.125,"cert_failure_rate":0.004839,"#
            ),
            "{line}"
        );
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["transactions"], 1234);
        assert_eq!(v["attempts"], 1240);
        assert_eq!(v["workload"], "update");
        assert_eq!(v["clients"], 16);
        assert_eq!(v["per_node"][1]["node"], "127.0.0.1:4002");
        assert_eq!(v["per_node"][1]["transactions"], 500);
        assert_eq!(v["per_node"][1]["p99_ms"], 12.75);
    }

    #[test]
    fn table_names_every_figure() {
        let mut r = report();
        r.first_error = Some("HTTP 503: not primary".into());
        let table = r.to_table();
        for needle in [
            "tps",
            "123.4",
            "p99",
            "9.00 ms",
            "0.48 %",
            "first error",
            "HTTP 503",
            "via node       127.0.0.1:4002: 500 transactions, p50 2.00 ms, p99 12.75 ms",
        ] {
            assert!(table.contains(needle), "{needle} missing from\n{table}");
        }
    }

    #[test]
    fn outcomes() {
        assert_eq!(
            classify(StatusCode::OK, br#"{"results":[{"rows_affected":1}]}"#),
            Outcome::Committed
        );
        assert_eq!(
            classify(StatusCode::CONFLICT, b"{}"),
            Outcome::CertificationFailed
        );
        assert_eq!(
            classify(
                StatusCode::OK,
                br#"{"results":[{"error":"Certification failed: conflict"}]}"#
            ),
            Outcome::CertificationFailed
        );
        assert_eq!(
            classify(
                StatusCode::OK,
                br#"{"results":[{},{"error":"no such table: x"}]}"#
            ),
            Outcome::Failed("no such table: x".into())
        );
        assert!(
            matches!(classify(StatusCode::SERVICE_UNAVAILABLE, b"down"), Outcome::Failed(e) if e.contains("503"))
        );
        assert!(matches!(
            classify(StatusCode::OK, b"<html>"),
            Outcome::Failed(_)
        ));
    }

    #[test]
    fn targets_and_options_are_checked() {
        let t = Target::parse("10.0.0.1:4001", ReadLevel::Weak).unwrap();
        assert_eq!(t.execute.to_string(), "http://10.0.0.1:4001/db/execute");
        let t = Target::parse("http://node-a:4001/", ReadLevel::Linearizable).unwrap();
        assert_eq!(
            t.execute_tx.to_string(),
            "http://node-a:4001/db/execute?transaction"
        );
        assert_eq!(
            t.query.to_string(),
            "http://node-a:4001/db/query?level=linearizable"
        );
        assert!(Target::parse("https://a:1", ReadLevel::Weak).is_err());
        assert!(Target::parse("a:1/x", ReadLevel::Weak).is_err());
        assert!(Target::parse("", ReadLevel::Weak).is_err());

        let opts = BenchOptions {
            duration: Duration::from_secs(1),
            prepare: false,
            ..options(vec!["a:1".into()], Workload::Update)
        };
        assert!(validate(&opts).is_ok());
        assert!(validate(&BenchOptions {
            clients: 0,
            ..opts.clone()
        })
        .is_err());
        assert!(validate(&BenchOptions {
            rows: 0,
            ..opts.clone()
        })
        .is_err());
        assert!(validate(&BenchOptions {
            nodes: vec![],
            ..opts.clone()
        })
        .is_err());
        assert!(validate(&BenchOptions {
            duration: Duration::ZERO,
            ..opts
        })
        .is_err());
    }

    #[tokio::test]
    async fn update_run_prepares_spreads_clients_and_counts_conflicts() {
        let a = spawn_server(FakeBackend::new(), ApiOptions::default()).await;
        let b = spawn_server(FakeBackend::new(), ApiOptions::default()).await;
        b.backend.cert_fail_every.store(4, Ordering::SeqCst);
        let report = run(BenchOptions {
            rows: 1_500,
            clients: 4,
            duration: ms(800),
            ..options(
                vec![a.addr.to_string(), format!("http://{}", b.addr)],
                Workload::Update,
            )
        })
        .await
        .unwrap();

        assert!(report.transactions > 0, "{report:?}");
        assert_eq!(report.errors, 0, "{report:?}");
        assert!(report.cert_failures > 0, "{report:?}");
        assert!(report.cert_failure_rate() > 0.0 && report.cert_failure_rate() < 1.0);
        assert!(report.elapsed >= ms(800));
        assert!(report.latency.max_ms >= report.latency.p50_ms && report.latency.p50_ms > 0.0);

        let seen = a.backend.executes.lock().unwrap();
        let sqls: Vec<&str> = seen[0].statements.iter().map(|s| s.sql.as_str()).collect();
        assert_eq!(sqls[0], "DROP TABLE IF EXISTS bench_update");
        assert!(sqls[1].starts_with("CREATE TABLE bench_update("));
        assert_eq!(seen[1].statements.len(), 1_000);
        assert!(seen[1].transaction);
        assert_eq!(seen[2].statements.len(), 500);
        assert!(
            matches!(&seen[2].statements[499].params,
                Params::Positional(p) if p[0] == SqlValue::Integer(1_500) && p.len() == 4),
            "last fill row: {:?}",
            seen[2].statements[499].params
        );
        let updates = &seen[3..];
        assert!(!updates.is_empty());
        for u in updates {
            assert_eq!(u.statements.len(), 1);
            assert_eq!(
                u.statements[0].sql,
                "UPDATE bench_update SET c=? WHERE id=?"
            );
            let Params::Positional(p) = &u.statements[0].params else {
                panic!("{:?}", u.statements[0].params);
            };
            assert!(matches!(&p[0], SqlValue::Text(c) if c.len() == 120));
            assert!(matches!(p[1], SqlValue::Integer(id) if (1..=1_500).contains(&id)));
        }
        // Round-robin: the second node got clients too, and no prepare.
        let on_b = b.backend.executes.lock().unwrap();
        assert!(!on_b.is_empty());
        assert!(on_b
            .iter()
            .all(|r| r.statements[0].sql.starts_with("UPDATE")));
    }

    #[tokio::test]
    async fn insert_run_uses_unique_ids() {
        let s = spawn_server(FakeBackend::new(), ApiOptions::default()).await;
        let report = run(BenchOptions {
            clients: 3,
            ..options(vec![s.addr.to_string()], Workload::Insert)
        })
        .await
        .unwrap();
        assert!(report.transactions > 0);
        let seen = s.backend.executes.lock().unwrap();
        assert_eq!(
            seen[0].statements[0].sql,
            "DROP TABLE IF EXISTS bench_insert"
        );
        let mut ids: Vec<i64> = seen[1..]
            .iter()
            .map(|r| match &r.statements[0].params {
                Params::Positional(p) => match p[0] {
                    SqlValue::Integer(id) => id,
                    ref other => panic!("id {other:?}"),
                },
                other => panic!("{other:?}"),
            })
            .collect();
        let n = ids.len();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), n, "duplicate insert ids");
        assert!(
            ids.iter().any(|id| *id > INSERT_ID_STRIDE as i64),
            "only one client inserted"
        );
    }

    #[tokio::test]
    async fn read_run_queries_random_rows_at_the_level_asked() {
        let s = spawn_server(FakeBackend::new(), ApiOptions::default()).await;
        let report = run(BenchOptions {
            level: ReadLevel::Linearizable,
            rows: 50,
            clients: 2,
            ..options(vec![s.addr.to_string()], Workload::Read)
        })
        .await
        .unwrap();
        assert!(report.transactions > 0, "{report:?}");
        assert_eq!(report.errors, 0, "{report:?}");
        assert_eq!(report.workload.name(), "read");
        // Prepared like the update workload, then only reads.
        let executes = s.backend.executes.lock().unwrap();
        assert_eq!(
            executes[0].statements[0].sql,
            "DROP TABLE IF EXISTS bench_update"
        );
        assert_eq!(executes.len(), 2, "create, then one fill batch; no writes");
        let queries = s.backend.queries.lock().unwrap();
        assert_eq!(queries.len() as u64, report.transactions);
        for q in queries.iter() {
            assert_eq!(q.level, crate::api::ReadLevel::Linearizable);
            assert_eq!(q.statements[0].sql, "SELECT c FROM bench_update WHERE id=?");
            assert!(matches!(&q.statements[0].params,
                Params::Positional(p) if matches!(p[0], SqlValue::Integer(id) if (1..=50).contains(&id))));
        }
    }

    #[tokio::test]
    async fn unreachable_node_is_counted_as_errors() {
        // Bind and drop to get a port nobody listens on.
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let report = run(BenchOptions {
            duration: ms(200),
            prepare: false,
            ..options(vec![addr.to_string()], Workload::Update)
        })
        .await
        .unwrap();
        assert_eq!(report.transactions, 0);
        assert!(report.errors > 0);
        assert!(report.first_error.is_some());
        let err = run(BenchOptions {
            duration: ms(200),
            ..options(vec![addr.to_string()], Workload::Update)
        })
        .await
        .unwrap_err();
        assert!(matches!(err, BenchError::Prepare { .. }), "{err}");
    }
}
