//! `quorate.toml`: every setting with its default, validation, and error
//! messages that name the file, the key, the line and what was expected.
//!
//! [`documented_keys`] is the one list of keys: parsing checks documents
//! against it (unknown keys, value shapes), the example file is generated
//! from it, and `quorate.toml(5)` is meant to be.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub const DEFAULT_CONFIG_PATH: &str = "/etc/quorate/quorate.toml";

/// Longest node or cluster name: one DNS label, so a node name fits in its
/// certificate.
pub const MAX_NAME_LEN: usize = 63;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_cluster_name")]
    pub cluster_name: String,
    /// Required; `parse` reports a missing one through `validate`, whose
    /// message says what a node name must look like.
    #[serde(default)]
    pub node_name: String,
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    #[serde(default = "default_runtime_dir")]
    pub runtime_dir: PathBuf,
    #[serde(default = "default_log_level")]
    pub log_level: String,
    /// Threads of the async runtime (network, HTTP, Raft); 0 = one per core.
    #[serde(default = "default_worker_threads")]
    pub worker_threads: usize,
    /// SIGTERM leaves the membership (Consul's `leave_on_terminate`).
    #[serde(default = "default_true")]
    pub leave_on_terminate: bool,
    /// SIGINT keeps the membership (Consul's `skip_leave_on_interrupt`).
    #[serde(default)]
    pub skip_leave_on_interrupt: bool,
    /// A voter without a database (Galera's garbd); `quorated --arbitrator` sets it too.
    #[serde(default)]
    pub arbitrator: bool,
    #[serde(default)]
    pub replication: ReplicationConfig,
    #[serde(default)]
    pub api: ApiConfig,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    #[serde(default)]
    pub storage: StorageConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReplicationConfig {
    pub listen: SocketAddr,
    pub advertise: Option<SocketAddr>,
    pub peers: Vec<SocketAddr>,
    /// Raft heartbeat, milliseconds.
    pub heartbeat_ms: u64,
    /// Raft election timeout (min), milliseconds; max is twice this.
    pub election_timeout_ms: u64,
    /// A node that has not heard from a majority for this long is non-Primary.
    pub primary_timeout_ms: u64,
    pub retry_autocommit: u32,
    /// Whether a write first waits for what the cluster committed before it
    /// (the causal wait, Galera's `wsrep_sync_wait` for writes).
    pub sync_wait_writes: bool,
    pub max_writeset_bytes: usize,
    /// Seqnos a write-set's snapshot may lag behind and still certify.
    pub cert_window: i64,
    /// How long a client waits for its write-set to be ordered and applied.
    pub commit_timeout_ms: u64,
    /// Bound on dialling a peer (QUIC + TLS handshake), milliseconds.
    pub connect_timeout_ms: u64,
    /// Bound on one replication RPC, milliseconds.
    pub rpc_timeout_ms: u64,
    /// QUIC keep-alive interval towards peers, milliseconds.
    pub keep_alive_ms: u64,
    /// A peer connection silent for this long is dead, milliseconds.
    pub idle_timeout_ms: u64,
    /// Write-sets this node may have in flight before new writes wait.
    pub flow_control_limit: usize,
    /// Incoming peer connections (QUIC) served at once.
    pub max_peer_connections: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    pub advertise: Option<String>,
    pub max_body_bytes: usize,
    /// HTTPS: the server certificate chain (PEM); with `tls_key`.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// rqlite's users file: basic authentication and permissions.
    pub users_file: Option<PathBuf>,
    /// Client connections served at once; more are refused with 503.
    pub max_connections: usize,
    /// A connection that sends no whole request header for this long
    /// (idle between requests included) is closed.
    pub idle_timeout_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Write-set log (gcache) entries kept after a snapshot, for IST.
    pub log_retain_entries: u64,
    /// Take a snapshot (and allow purging the log) every this many entries.
    pub snapshot_every_entries: u64,
    /// Read connections in the pool.
    pub read_connections: usize,
    /// Largest snapshot (SST) a joiner accepts, bytes.
    pub max_snapshot_bytes: u64,
}

fn default_cluster_name() -> String {
    "quorate".into()
}
fn default_data_dir() -> PathBuf {
    "/var/lib/quorate".into()
}
fn default_runtime_dir() -> PathBuf {
    "/run/quorate".into()
}
fn default_log_level() -> String {
    "info".into()
}
/// One async thread: see the `worker_threads` entry of [`KEYS`] for why.
const DEFAULT_WORKER_THREADS: usize = 1;
/// More would only add switching; a typo like 1000 is caught.
const MAX_WORKER_THREADS: usize = 256;
fn default_worker_threads() -> usize {
    DEFAULT_WORKER_THREADS
}
fn default_true() -> bool {
    true
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        ReplicationConfig {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 4567),
            advertise: None,
            peers: Vec::new(),
            // Measured: a client on a survivor pauses ~0.9 s when the leader
            // is killed (scripts/failover.py); 100/500/1000 gave 1.7 s.
            heartbeat_ms: 50,
            election_timeout_ms: 250,
            primary_timeout_ms: 500,
            retry_autocommit: 1,
            sync_wait_writes: true,
            max_writeset_bytes: 16 * 1024 * 1024,
            cert_window: 100_000,
            commit_timeout_ms: 10_000,
            connect_timeout_ms: 3_000,
            rpc_timeout_ms: 5_000,
            keep_alive_ms: 1_000,
            idle_timeout_ms: 5_000,
            flow_control_limit: 1024,
            max_peer_connections: 64,
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 4001),
            advertise: None,
            max_body_bytes: 64 * 1024 * 1024,
            tls_cert: None,
            tls_key: None,
            users_file: None,
            max_connections: 1024,
            idle_timeout_ms: 30_000,
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            log_retain_entries: 100_000,
            snapshot_every_entries: 50_000,
            read_connections: 4,
            max_snapshot_bytes: 16 << 30,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{}{}: not valid TOML: {message}", path.display(), line_note(*line))]
    Syntax {
        path: PathBuf,
        line: Option<usize>,
        message: String,
    },
    /// `section` is `[replication]`-style, or `the top level`.
    #[error(
        "unknown key `{key}` in {section} of {}{}; expected one of: {expected}",
        path.display(),
        line_note(*line)
    )]
    UnknownKey {
        path: PathBuf,
        key: String,
        section: String,
        line: Option<usize>,
        expected: String,
    },
    /// A value of the wrong shape: `got` is the value as written in TOML.
    #[error("`{key}` in {}{}: expected {expected}, got {got}", path.display(), line_note(*line))]
    BadValue {
        path: PathBuf,
        key: String,
        line: Option<usize>,
        expected: String,
        got: String,
    },
    /// A value of the right shape that breaks a rule. `path` is `None` when
    /// [`Config::validate`] runs on a config that did not come from a file.
    #[error("`{key}`{}: {message}", location_note(path.as_deref(), *line))]
    Setting {
        path: Option<PathBuf>,
        key: String,
        line: Option<usize>,
        message: String,
    },
}

fn line_note(line: Option<usize>) -> String {
    line.map(|l| format!(" (line {l})")).unwrap_or_default()
}

fn location_note(path: Option<&Path>, line: Option<usize>) -> String {
    match path {
        Some(p) => format!(" in {}{}", p.display(), line_note(line)),
        None => line_note(line),
    }
}

impl ConfigError {
    fn setting(key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Setting {
            path: None,
            key: key.to_string(),
            line: None,
            message: message.into(),
        }
    }

    /// Names the file and, when the key is written in it, the line.
    fn located(self, path: &Path, text: &str) -> ConfigError {
        match self {
            ConfigError::Setting { key, message, .. } => ConfigError::Setting {
                line: key_line(text, &key),
                path: Some(path.to_path_buf()),
                key,
                message,
            },
            other => other,
        }
    }
}

/// One key of `quorate.toml`, for error messages, the example file and the
/// man page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigKeyDoc {
    /// Dotted: `replication.listen`.
    pub key: &'static str,
    /// The default as a TOML value (`"0.0.0.0:4567"`, `100`, `[]`), or empty
    /// when the key has no default (`doc` says what happens without it).
    pub default: &'static str,
    pub doc: &'static str,
    /// What a value looks like, completing "expected ...".
    pub expected: &'static str,
    /// A TOML value to show in the example file: the default when there is one.
    pub example: &'static str,
    kind: Kind,
}

/// The TOML shape a key takes; checked before serde sees the document so a
/// wrong value is reported with its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Addr,
    AddrList,
    UInt { max: u64 },
    Int,
    Bool,
}

const U32: Kind = Kind::UInt {
    max: u32::MAX as u64,
};
const U64: Kind = Kind::UInt {
    max: i64::MAX as u64,
};
// TOML integers stop at i64::MAX; a 32-bit usize stops earlier.
const USIZE: Kind = Kind::UInt {
    max: if (usize::MAX as u128) < (i64::MAX as u128) {
        usize::MAX as u64
    } else {
        i64::MAX as u64
    },
};

const NAME_EXPECTED: &str =
    "a name of letters, digits, '.', '_' and '-', at most 63 characters, like \"node-a\"";

const fn doc(
    key: &'static str,
    default: &'static str,
    example: &'static str,
    kind: Kind,
    expected: &'static str,
    doc: &'static str,
) -> ConfigKeyDoc {
    ConfigKeyDoc {
        key,
        default,
        doc,
        expected,
        example,
        kind,
    }
}

const SECTIONS: [&str; 4] = ["replication", "api", "tls", "storage"];

static KEYS: [ConfigKeyDoc; 41] = [
    doc("cluster_name", "\"quorate\"", "\"quorate\"", Kind::Text,
        "a name of letters, digits, '.', '_' and '-', at most 63 characters, like \"mail-gw\"",
        "Name of the cluster. Peers with another cluster_name are refused, so two clusters on \
         one network never merge by mistake."),
    doc("node_name", "", "\"node-a\"", Kind::Text, NAME_EXPECTED,
        "Required. This node's unique name: letters, digits, '.', '_' and '-', at most 63 \
         characters, usable as a DNS name. It must match the name in the node's certificate \
         (`quorate tls node NAME`)."),
    doc("data_dir", "\"/var/lib/quorate\"", "\"/var/lib/quorate\"", Kind::Text,
        "a directory path like \"/var/lib/quorate\"",
        "Directory of the node's state: grastate.dat, the database db.sqlite and the write-set log."),
    doc("runtime_dir", "\"/run/quorate\"", "\"/run/quorate\"", Kind::Text,
        "a directory path like \"/run/quorate\"",
        "Directory of the admin socket quorate.sock, through which the quorate CLI talks to the \
         running daemon."),
    doc("log_level", "\"info\"", "\"info\"", Kind::Text,
        "a level (trace, debug, info, warn, error, off) or a filter like \"info,quorate=debug\"",
        "What to log: a level (trace, debug, info, warn, error, off) or a tracing filter such as \
         \"info,quorate=debug\". The RUST_LOG environment variable overrides it."),
    doc("worker_threads", "1", "1", USIZE,
        "a whole number from 0 to 256, like 1",
        "Threads of the node's async runtime, which runs replication (QUIC, Raft), the HTTP API \
         and the admin socket; 0 means one per CPU core. SQLite work and log fsyncs run on \
         threads of their own whatever this says. One suits the small clusters quorate is made \
         for: a write passes through a dozen tasks, and with one thread they hand over without \
         waking another core (three nodes on two cores used 13% less CPU per transaction and \
         committed 7-10% more than with one thread per core). Raise it only when one thread is \
         busy all the time (top -H shows a quorated `tokio-runtime-w` thread near 100%). A \
         change needs a restart."),
    doc("leave_on_terminate", "true", "true", Kind::Bool, "true or false",
        "What SIGTERM (systemctl stop) does, as Consul's key of that name: true leaves the \
         membership, so the cluster shrinks and keeps its quorum arithmetic small (the graceful \
         stop of DESIGN.md); false stops the node as a member, like a crash but with grastate.dat \
         written, for a quick restart (an upgrade, a reboot) that rejoins without a membership \
         change; meanwhile the node counts against the quorum. SIGHUP reloads it."),
    doc("skip_leave_on_interrupt", "false", "false", Kind::Bool, "true or false",
        "What SIGINT (Ctrl-C) does, as Consul's key of that name: false leaves the membership \
         like SIGTERM's default; true stops the node as a member (see leave_on_terminate). \
         SIGHUP reloads it."),
    doc("arbitrator", "false", "false", Kind::Bool, "true or false",
        "Run this node as an arbitrator (Galera's garbd; `quorated --arbitrator` does the same): \
         it votes, so two data nodes and a small third machine survive the loss of either data \
         node, but it keeps no database (only the write-set log, which voting needs), serves no \
         clients (data requests are answered 503), never leads, never sends a snapshot and is \
         never the node to bootstrap. Fixed for the life of data_dir: an arbitrator's data_dir \
         holds no db.sqlite."),
    doc("replication.listen", "\"0.0.0.0:4567\"", "\"0.0.0.0:4567\"", Kind::Addr,
        "an address like \"0.0.0.0:4567\"",
        "UDP address the replication endpoint (QUIC) listens on."),
    doc("replication.advertise", "", "\"192.168.1.11:4567\"", Kind::Addr,
        "an address like \"192.168.1.11:4567\"",
        "Replication address the other nodes dial. Default: the listen address; required when \
         listen is a wildcard address (0.0.0.0) and peers name other nodes."),
    doc("replication.peers", "[]", "[]", Kind::AddrList,
        "a list of addresses like [\"192.168.1.11:4567\", \"192.168.1.12:4567\"]",
        "Replication addresses of the cluster's nodes, this one's may be included. A starting \
         node contacts them to join its cluster. A node whose peers name other nodes needs [tls]."),
    doc("replication.heartbeat_ms", "50", "50", U64,
        "a number of milliseconds like 50",
        "Interval of the leader's heartbeats, in milliseconds. Must be less than \
         election_timeout_ms."),
    doc("replication.election_timeout_ms", "250", "250", U64,
        "a number of milliseconds like 250",
        "A follower that hears no leader for between this and twice this many milliseconds \
         starts an election."),
    doc("replication.primary_timeout_ms", "500", "500", U64,
        "a number of milliseconds like 500",
        "A node that has not heard from a majority for this many milliseconds becomes \
         non-Primary and refuses clients. At least election_timeout_ms."),
    doc("replication.retry_autocommit", "1", "1", U32,
        "a whole number like 1",
        "How many times the node retries a single-statement write that failed certification \
         before reporting the conflict to the client (Galera's wsrep_retry_autocommit)."),
    doc("replication.sync_wait_writes", "true", "true", Kind::Bool, "true or false",
        "Before it runs a write, the node waits until it has applied everything the cluster \
         committed before the write arrived (Galera's wsrep_sync_wait for writes), so a client \
         that sends each request to another node builds on its own earlier writes. On a \
         follower this asks the leader first: one round trip per write, about a fifth of a \
         follower's write time under load. false runs the write on what the node has applied, \
         as Galera does by default (wsrep_sync_wait = 0): rows changed elsewhere meanwhile \
         still fail certification (and are retried), but a write that depends on a change \
         made through another node a moment ago may not see it. Reads choose with level. \
         SIGHUP reloads it."),
    doc("replication.max_writeset_bytes", "16777216", "16777216", USIZE,
        "a size in bytes of at least 1024, like 16777216",
        "Largest write-set, in bytes. A larger transaction is refused before it is replicated."),
    doc("replication.cert_window", "100000", "100000", Kind::Int,
        "a whole number of at least 1, like 100000",
        "How many seqnos a write-set's snapshot may lag behind the cluster and still be \
         certified; an older one fails certification on every node alike and is retried."),
    doc("replication.flow_control_limit", "1024", "1024", USIZE,
        "a whole number of at least 1, like 1024",
        "How many write-sets this node may have in flight (submitted, not yet applied here) \
         before new writes wait for a slot (flow control; the waiting shows as \
         wsrep_flow_control_paused). Bounds the memory clients can tie up when the cluster stalls."),
    doc("replication.commit_timeout_ms", "10000", "10000", U64,
        "a number of milliseconds like 10000",
        "How long a client waits for its write to be ordered and applied before the outcome is \
         reported as unknown."),
    doc("replication.connect_timeout_ms", "3000", "3000", U64,
        "a number of milliseconds like 3000",
        "Bound on dialling a peer: the QUIC and TLS handshakes and the identity exchange."),
    doc("replication.rpc_timeout_ms", "5000", "5000", U64,
        "a number of milliseconds like 5000",
        "Bound on one replication request to a peer (Raft messages bring their own, shorter \
         bounds); a peer that does not answer in time has its connection dropped and redialled."),
    doc("replication.keep_alive_ms", "1000", "1000", U64,
        "a number of milliseconds like 1000",
        "QUIC keep-alive interval towards peers; must be shorter than idle_timeout_ms."),
    doc("replication.idle_timeout_ms", "5000", "5000", U64,
        "a number of milliseconds like 5000",
        "A connection to a peer that hears nothing for this long is considered dead."),
    doc("replication.max_peer_connections", "64", "64", USIZE,
        "a whole number of at least 1, like 64",
        "Incoming replication connections (QUIC) this node serves at once, authenticated or \
         still in their handshake. Further ones are refused (logged at most every 10 s) until \
         one closes; a cluster needs one per peer, a few more while peers restart."),
    doc("api.listen", "\"127.0.0.1:4001\"", "\"127.0.0.1:4001\"", Kind::Addr,
        "an address like \"127.0.0.1:4001\"",
        "TCP address of the HTTP client API (rqlite-compatible)."),
    doc("api.advertise", "", "\"http://192.168.1.11:4001\"", Kind::Text,
        "a URL like \"http://192.168.1.11:4001\" or an address like \"192.168.1.11:4001\"",
        "Client API address given to clients and other nodes (wsrep_incoming_addresses, \
         redirects). Default: http:// and the api listen address, with the replication \
         advertise address's host when api listen is a wildcard address."),
    doc("api.max_body_bytes", "67108864", "67108864", USIZE,
        "a size in bytes like 67108864",
        "Largest HTTP request body the client API accepts, in bytes."),
    doc("api.tls_cert", "", "\"/etc/quorate/tls/api.pem\"", Kind::Text,
        "a file path like \"/etc/quorate/tls/api.pem\"",
        "Serve the client API over HTTPS with this certificate chain (PEM; the server's \
         certificate first). Requires tls_key. Without both the API speaks plain HTTP, which is \
         fit only for the default loopback listen address: set them (and users_file) before \
         exposing the API. Any certificate clients trust will do, e.g. one made by \
         `quorate tls node NAME --addr IP`."),
    doc("api.tls_key", "", "\"/etc/quorate/tls/api.key\"", Kind::Text,
        "a file path like \"/etc/quorate/tls/api.key\"",
        "The private key (PEM, readable by the quorate user only) of tls_cert."),
    doc("api.users_file", "", "\"/etc/quorate/users.json\"", Kind::Text,
        "a file path like \"/etc/quorate/users.json\"",
        "Require HTTP basic authentication, with users and permissions in rqlite's users-file \
         format: a JSON array of {\"username\", \"password\", \"perms\"} objects; a password is \
         plain or a bcrypt hash; perms are all, execute, query, status, ready, backup, load, join, \
         join-read-only, remove, snapshot; the user \"*\" grants its perms to everybody. A wrong \
         or missing password is answered 401, a missing permission 403. Read at start. Without it \
         every client may do everything."),
    doc("api.max_connections", "1024", "1024", USIZE,
        "a whole number of at least 1, like 1024",
        "Client API connections served at once. Further ones are answered 503 with a body \
         naming this key (over HTTPS closed unanswered) until one closes, and logged at most \
         every 10 s; bounds the file descriptors and memory a flood of connections can take."),
    doc("api.idle_timeout_ms", "30000", "30000", U64,
        "a number of milliseconds of at least 100, like 30000",
        "A client connection that sends no complete request header for this long, idle \
         between requests included, is closed, so idle or trickling connections cannot hold the \
         api.max_connections slots. A request being answered is never cut; clients reconnect."),
    doc("tls.ca", "", "\"/etc/quorate/tls/ca.pem\"", Kind::Text,
        "a file path like \"/etc/quorate/tls/ca.pem\"",
        "Cluster CA certificate (PEM), made by `quorate tls ca`. The [tls] section is optional \
         for a lone node and required when peers name other nodes; when present, ca, cert and \
         key are all required."),
    doc("tls.cert", "", "\"/etc/quorate/tls/node-a.pem\"", Kind::Text,
        "a file path like \"/etc/quorate/tls/node-a.pem\"",
        "This node's certificate (PEM), made by `quorate tls node`; its name must be node_name."),
    doc("tls.key", "", "\"/etc/quorate/tls/node-a.key\"", Kind::Text,
        "a file path like \"/etc/quorate/tls/node-a.key\"",
        "This node's private key (PEM, mode 0600), made by `quorate tls node`."),
    doc("storage.log_retain_entries", "100000", "100000", U64,
        "a whole number like 100000",
        "Write-set log (gcache) entries kept after a snapshot, so a node that was away can catch \
         up by IST instead of a full SST."),
    doc("storage.snapshot_every_entries", "50000", "50000", U64,
        "a whole number of at least 1, like 50000",
        "Take a snapshot, which allows purging the log, every this many entries."),
    doc("storage.read_connections", "4", "4", USIZE,
        "a whole number of at least 1, like 4",
        "SQLite connections in the pool that serves reads."),
    doc("storage.max_snapshot_bytes", "17179869184", "17179869184", U64,
        "a size in bytes of at least 1048576, like 17179869184",
        "Largest snapshot (SST) this node accepts when it joins, in bytes (default 16 GiB). A \
         donor streaming more is cut off and the join fails with an error naming this key: \
         raise it when the database is larger."),
];

/// Every key of `quorate.toml`, in file order.
pub fn documented_keys() -> &'static [ConfigKeyDoc] {
    &KEYS
}

fn key_doc(dotted: &str) -> Option<&'static ConfigKeyDoc> {
    KEYS.iter().find(|d| d.key == dotted)
}

/// The one rule for node names, shared with `quorate tls node`: the name
/// goes into the node's certificate as a DNS name, so it must be one.
/// The error completes "expected a name ..., ": `got "x y": ' ' is not allowed`.
pub fn check_node_name(name: &str) -> Result<(), String> {
    check_name_charset(name)?;
    rustls::pki_types::DnsName::try_from(name).map_err(|_| {
        format!(
            "got {name:?}, which is not usable as a DNS name in a certificate: parts between \
             dots must not be empty or begin or end with '-', and the last part must not be a \
             number"
        )
    })?;
    Ok(())
}

fn check_name_charset(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("got \"\"".into());
    }
    let len = name.chars().count();
    if len > MAX_NAME_LEN {
        return Err(format!("got a name of {len} characters"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!("got {name:?}: {c:?} is not allowed"));
    }
    Ok(())
}

const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

fn check_log_level(filter: &str) -> Result<(), String> {
    let trimmed = filter.trim();
    if LEVELS.iter().any(|l| l.eq_ignore_ascii_case(trimmed)) {
        return Ok(());
    }
    // A bare word that is not a level ("verbose", "infoo") would be taken as
    // a target name and silently log nothing useful: call it a mistake.
    if trimmed.is_empty() || !trimmed.contains(['=', ',']) {
        return Err(format!("got {filter:?}, which is not a level"));
    }
    tracing_subscriber::EnvFilter::try_new(trimmed)
        .map(|_| ())
        .map_err(|e| format!("got {filter:?}, which is not a valid filter: {e}"))
}

impl Config {
    /// A config with every default and this node name (not validated).
    pub fn new(node_name: impl Into<String>) -> Config {
        Config {
            cluster_name: default_cluster_name(),
            node_name: node_name.into(),
            data_dir: default_data_dir(),
            runtime_dir: default_runtime_dir(),
            log_level: default_log_level(),
            worker_threads: DEFAULT_WORKER_THREADS,
            leave_on_terminate: true,
            skip_leave_on_interrupt: false,
            arbitrator: false,
            replication: ReplicationConfig::default(),
            api: ApiConfig::default(),
            tls: None,
            storage: StorageConfig::default(),
        }
    }

    pub fn socket_path(&self) -> PathBuf {
        self.runtime_dir.join("quorate.sock")
    }
    pub fn grastate_path(&self) -> PathBuf {
        self.data_dir.join("grastate.dat")
    }
    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("db.sqlite")
    }
    pub fn commit_timeout(&self) -> Duration {
        Duration::from_millis(self.replication.commit_timeout_ms)
    }

    /// The replication address other nodes dial: `advertise`, else `listen`.
    /// A wildcard listen address is nobody's address; a lone node then uses
    /// loopback (`validate` refuses a node with peers in that situation).
    pub fn advertise_addr(&self) -> SocketAddr {
        if let Some(a) = self.replication.advertise {
            return a;
        }
        let listen = self.replication.listen;
        match listen.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => {
                SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), listen.port())
            }
            IpAddr::V6(ip) if ip.is_unspecified() => {
                SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), listen.port())
            }
            _ => listen,
        }
    }

    /// The client API as others reach it, `http://host:port`.
    pub fn api_advertise(&self) -> String {
        if let Some(a) = &self.api.advertise {
            if a.starts_with("http://") || a.starts_with("https://") {
                return a.clone();
            }
            return format!("{}://{a}", self.api_scheme());
        }
        let listen = self.api.listen;
        let addr = if listen.ip().is_unspecified() {
            SocketAddr::new(self.advertise_addr().ip(), listen.port())
        } else {
            listen
        };
        format!("{}://{addr}", self.api_scheme())
    }

    fn api_scheme(&self) -> &'static str {
        if self.api.tls_cert.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// Peers other than this node itself (a shared peer list names every node).
    pub fn other_peers(&self) -> Vec<SocketAddr> {
        let own = self.advertise_addr();
        self.replication
            .peers
            .iter()
            .copied()
            .filter(|p| *p != own && *p != self.replication.listen)
            .collect()
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.to_path_buf(),
            cause: e,
        })?;
        Config::parse(&text, path)
    }

    /// Parses and validates a config; `path` names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let table: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| ConfigError::Syntax {
                    path: path.to_path_buf(),
                    line: e.span().map(|s| line_of_offset(text, s.start)),
                    message: one_line(e.message()),
                })?;
        check_shapes(&table, text, path)?;
        let config: Config =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| {
                    // check_shapes accepts only what serde accepts; reaching this
                    // means the two disagree, so at least say so plainly.
                    ConfigError::Invalid {
                        path: path.to_path_buf(),
                        message: one_line(e.message()),
                    }
                })?;
        config.validate().map_err(|e| e.located(path, text))?;
        Ok(config)
    }

    /// Rules between keys and on values that TOML types cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.node_name.is_empty() {
            return Err(ConfigError::setting(
                "node_name",
                "required: name this node, like node_name = \"node-a\" (letters, digits, '.', '_' \
                 and '-', at most 63 characters; it must match the node's certificate)",
            ));
        }
        check_node_name(&self.node_name).map_err(|why| {
            ConfigError::setting("node_name", format!("expected {NAME_EXPECTED}, {why}"))
        })?;
        check_name_charset(&self.cluster_name).map_err(|why| {
            ConfigError::setting(
                "cluster_name",
                format!("expected {}, {why}", KEYS[0].expected),
            )
        })?;
        for (key, dir) in [
            ("data_dir", &self.data_dir),
            ("runtime_dir", &self.runtime_dir),
        ] {
            if dir.as_os_str().is_empty() {
                return Err(ConfigError::setting(
                    key,
                    "expected a directory path, got \"\"",
                ));
            }
        }
        check_log_level(&self.log_level).map_err(|why| {
            ConfigError::setting(
                "log_level",
                format!(
                    "expected a level (trace, debug, info, warn, error, off) or a filter like \
                         \"info,quorate=debug\", {why}"
                ),
            )
        })?;
        if self.worker_threads > MAX_WORKER_THREADS {
            return Err(ConfigError::setting(
                "worker_threads",
                format!(
                    "must be at most {MAX_WORKER_THREADS} (0 means one per CPU core), got {}",
                    self.worker_threads
                ),
            ));
        }
        self.validate_replication()?;
        self.validate_api()?;
        self.validate_tls()?;
        self.validate_storage()
    }

    fn validate_replication(&self) -> Result<(), ConfigError> {
        let r = &self.replication;
        if r.heartbeat_ms == 0 || r.heartbeat_ms >= r.election_timeout_ms {
            return Err(ConfigError::setting(
                "replication.heartbeat_ms",
                format!(
                    "must be at least 1 and less than replication.election_timeout_ms ({}), got {}",
                    r.election_timeout_ms, r.heartbeat_ms
                ),
            ));
        }
        if r.primary_timeout_ms < r.election_timeout_ms {
            return Err(ConfigError::setting(
                "replication.primary_timeout_ms",
                format!(
                    "must be at least replication.election_timeout_ms ({}), got {}",
                    r.election_timeout_ms, r.primary_timeout_ms
                ),
            ));
        }
        if r.max_writeset_bytes < 1024 {
            return Err(ConfigError::setting(
                "replication.max_writeset_bytes",
                format!(
                    "must be at least 1024 (1 KiB), got {}",
                    r.max_writeset_bytes
                ),
            ));
        }
        if r.cert_window < 1 {
            return Err(ConfigError::setting(
                "replication.cert_window",
                format!("must be at least 1, got {}", r.cert_window),
            ));
        }
        if r.max_peer_connections < 1 {
            return Err(ConfigError::setting(
                "replication.max_peer_connections",
                "must be at least 1, got 0".to_string(),
            ));
        }
        if self.api.idle_timeout_ms < 100 {
            return Err(ConfigError::setting(
                "api.idle_timeout_ms",
                format!("must be at least 100, got {}", self.api.idle_timeout_ms),
            ));
        }
        if self.api.max_connections == 0 {
            return Err(ConfigError::setting(
                "api.max_connections",
                "must be at least 1, got 0".to_string(),
            ));
        }
        if self.storage.max_snapshot_bytes < 1 << 20 {
            return Err(ConfigError::setting(
                "storage.max_snapshot_bytes",
                format!(
                    "must be at least 1048576, got {}",
                    self.storage.max_snapshot_bytes
                ),
            ));
        }
        if r.flow_control_limit < 1 {
            return Err(ConfigError::setting(
                "replication.flow_control_limit",
                "must be at least 1, got 0".to_string(),
            ));
        }
        for (key, v) in [
            ("replication.commit_timeout_ms", r.commit_timeout_ms),
            ("replication.connect_timeout_ms", r.connect_timeout_ms),
            ("replication.rpc_timeout_ms", r.rpc_timeout_ms),
            ("replication.keep_alive_ms", r.keep_alive_ms),
            ("replication.idle_timeout_ms", r.idle_timeout_ms),
        ] {
            if v == 0 {
                return Err(ConfigError::setting(key, "must be at least 1, got 0"));
            }
        }
        if r.keep_alive_ms >= r.idle_timeout_ms {
            return Err(ConfigError::setting(
                "replication.keep_alive_ms",
                format!(
                    "must be shorter than replication.idle_timeout_ms ({} ms), got {} ms",
                    r.idle_timeout_ms, r.keep_alive_ms
                ),
            ));
        }
        if let Some(a) = r.advertise {
            if a.ip().is_unspecified() || a.port() == 0 {
                return Err(ConfigError::setting(
                    "replication.advertise",
                    format!("expected an address other nodes can dial, like \"192.168.1.11:4567\", got \"{a}\""),
                ));
            }
        }
        if let Some(p) = r
            .peers
            .iter()
            .find(|p| p.ip().is_unspecified() || p.port() == 0)
        {
            return Err(ConfigError::setting(
                "replication.peers",
                format!("expected addresses other nodes can dial, like \"192.168.1.12:4567\", got \"{p}\""),
            ));
        }
        if self.other_peers().is_empty() {
            return Ok(());
        }
        if r.advertise.is_none() && r.listen.ip().is_unspecified() {
            return Err(ConfigError::setting(
                "replication.advertise",
                format!(
                    "required when replication.listen is a wildcard address (\"{}\") and \
                     replication.peers names other nodes: set the address they dial to reach \
                     this node, like advertise = \"192.168.1.11:{}\"",
                    r.listen,
                    r.listen.port()
                ),
            ));
        }
        if self.tls.is_none() {
            return Err(ConfigError::setting(
                "replication.peers",
                "a node with peers needs [tls]: make the material with `quorate tls ca` and \
                 `quorate tls node`, then set tls.ca, tls.cert and tls.key",
            ));
        }
        Ok(())
    }

    fn validate_api(&self) -> Result<(), ConfigError> {
        match (&self.api.tls_cert, &self.api.tls_key) {
            (Some(_), None) => {
                return Err(ConfigError::setting(
                    "api.tls_cert",
                    "is set without api.tls_key: set both to serve HTTPS, or neither".to_string(),
                ))
            }
            (None, Some(_)) => {
                return Err(ConfigError::setting(
                    "api.tls_key",
                    "is set without api.tls_cert: set both to serve HTTPS, or neither".to_string(),
                ))
            }
            _ => {}
        }
        let Some(a) = &self.api.advertise else {
            return Ok(());
        };
        let rest = a
            .strip_prefix("http://")
            .or_else(|| a.strip_prefix("https://"))
            .unwrap_or(a);
        if rest.is_empty() || rest.contains(char::is_whitespace) || rest.contains("://") {
            return Err(ConfigError::setting(
                "api.advertise",
                format!("expected {}, got {a:?}", key_doc_expected("api.advertise")),
            ));
        }
        Ok(())
    }

    fn validate_tls(&self) -> Result<(), ConfigError> {
        let Some(tls) = &self.tls else { return Ok(()) };
        for (key, p) in [
            ("tls.ca", &tls.ca),
            ("tls.cert", &tls.cert),
            ("tls.key", &tls.key),
        ] {
            if p.as_os_str().is_empty() {
                return Err(ConfigError::setting(
                    key,
                    format!("expected {}, got \"\"", key_doc_expected(key)),
                ));
            }
        }
        Ok(())
    }

    fn validate_storage(&self) -> Result<(), ConfigError> {
        let s = &self.storage;
        if s.snapshot_every_entries == 0 {
            return Err(ConfigError::setting(
                "storage.snapshot_every_entries",
                "must be at least 1, got 0",
            ));
        }
        if s.read_connections == 0 {
            return Err(ConfigError::setting(
                "storage.read_connections",
                "must be at least 1, got 0",
            ));
        }
        Ok(())
    }

    /// A commented `quorate.toml` with every key and its default, generated
    /// from [`documented_keys`]. Settings are commented out as `#key = value`
    /// (prose as `# ...`), except node_name, the one key without a default.
    pub fn example_toml() -> String {
        let mut out = String::from(
            "# quorate.toml: configuration of the quorate node daemon, quorated.\n\
             # Every key is shown with its default (see quorate.toml(5)); only node_name is\n\
             # required. Uncomment a line to change a setting.\n",
        );
        let mut section = "";
        for d in &KEYS {
            let (sec, name) = d.key.split_once('.').unwrap_or(("", d.key));
            if sec != section {
                section = sec;
                // An empty [tls] would be an error (ca, cert and key are
                // required in it), so its header is commented out too.
                let hash = if sec == "tls" { "#" } else { "" };
                out.push_str(&format!("\n{hash}[{sec}]\n"));
            }
            out.push('\n');
            for line in wrap(d.doc, 76) {
                out.push_str(&format!("# {line}\n"));
            }
            let hash = if d.key == "node_name" { "" } else { "#" };
            out.push_str(&format!("{hash}{name} = {}\n", d.example));
        }
        out
    }
}

fn key_doc_expected(key: &str) -> &'static str {
    key_doc(key).map(|d| d.expected).unwrap_or("a valid value")
}

fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// Checks every key against [`KEYS`] and every value's TOML shape, so the
/// errors can name the key; serde's own errors cannot.
fn check_shapes(table: &toml::Table, text: &str, path: &Path) -> Result<(), ConfigError> {
    let unknown = |key: &str, section: &str, dotted: &str| {
        let (section_name, expected) = if section.is_empty() {
            let mut names: Vec<String> = KEYS
                .iter()
                .filter(|d| !d.key.contains('.'))
                .map(|d| d.key.to_string())
                .collect();
            names.extend(SECTIONS.iter().map(|s| format!("[{s}]")));
            ("the top level".to_string(), names.join(", "))
        } else {
            let prefix = format!("{section}.");
            let names: Vec<&str> = KEYS
                .iter()
                .filter_map(|d| d.key.strip_prefix(prefix.as_str()))
                .collect();
            (format!("[{section}]"), names.join(", "))
        };
        ConfigError::UnknownKey {
            path: path.to_path_buf(),
            key: key.to_string(),
            section: section_name,
            line: key_line(text, dotted),
            expected,
        }
    };
    for (key, value) in table {
        if SECTIONS.contains(&key.as_str()) {
            let Some(sub) = value.as_table() else {
                return Err(ConfigError::BadValue {
                    path: path.to_path_buf(),
                    key: key.clone(),
                    line: key_line(text, key),
                    expected: format!("a table [{key}]"),
                    got: value.to_string(),
                });
            };
            for (sub_key, sub_value) in sub {
                let dotted = format!("{key}.{sub_key}");
                let doc = (!sub_key.contains('.')).then(|| key_doc(&dotted)).flatten();
                let Some(doc) = doc else {
                    return Err(unknown(sub_key, key, &dotted));
                };
                check_shape(doc, sub_value, text, path)?;
            }
            if key == "tls" {
                for required in ["ca", "cert", "key"] {
                    if !sub.contains_key(required) {
                        let dotted = format!("tls.{required}");
                        return Err(ConfigError::Setting {
                            path: Some(path.to_path_buf()),
                            line: key_line(text, "tls"),
                            message: format!(
                                "required in [tls] (ca, cert and key go together): expected {}",
                                key_doc_expected(&dotted)
                            ),
                            key: dotted,
                        });
                    }
                }
            }
            continue;
        }
        let doc = (!key.contains('.')).then(|| key_doc(key)).flatten();
        let Some(doc) = doc else {
            return Err(unknown(key, "", key));
        };
        check_shape(doc, value, text, path)?;
    }
    Ok(())
}

fn check_shape(
    doc: &ConfigKeyDoc,
    value: &toml::Value,
    text: &str,
    path: &Path,
) -> Result<(), ConfigError> {
    let is_addr = |v: &toml::Value| v.as_str().is_some_and(|s| s.parse::<SocketAddr>().is_ok());
    let bad = match doc.kind {
        Kind::Text => (!value.is_str()).then_some(value),
        Kind::Addr => (!is_addr(value)).then_some(value),
        Kind::AddrList => match value.as_array() {
            // Name the one bad entry, not the whole list.
            Some(items) => items.iter().find(|v| !is_addr(v)),
            None => Some(value),
        },
        Kind::UInt { max } => {
            let fits = value
                .as_integer()
                .is_some_and(|i| i >= 0 && (i as u64) <= max);
            (!fits).then_some(value)
        }
        Kind::Int => (!value.is_integer()).then_some(value),
        Kind::Bool => (!value.is_bool()).then_some(value),
    };
    match bad {
        None => Ok(()),
        Some(got) => Err(ConfigError::BadValue {
            path: path.to_path_buf(),
            key: doc.key.to_string(),
            line: key_line(text, doc.key),
            expected: doc.expected.to_string(),
            got: got.to_string(),
        }),
    }
}

/// toml's messages span lines ("invalid table header\nexpected `.`, `]`");
/// an error that reaches a journal should be one line.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

fn line_of_offset(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// The line where a dotted key (or a `[section]` header) is written, found
/// by a line scan: good for the usual layout of a config file, `None` for
/// exotic ones (inline tables), which is why errors say "the line if known".
fn key_line(text: &str, dotted: &str) -> Option<usize> {
    let mut section = String::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(header) = line.strip_prefix('[') {
            let name = header.split(']').next().unwrap_or("");
            section = normalize_key(name.trim_start_matches('['));
            if section == dotted {
                return Some(index + 1);
            }
            continue;
        }
        let Some((key, _)) = line.split_once('=') else {
            continue;
        };
        let key = normalize_key(key);
        let full = if section.is_empty() {
            key
        } else {
            format!("{section}.{key}")
        };
        if full == dotted {
            return Some(index + 1);
        }
    }
    None
}

fn normalize_key(key: &str) -> String {
    key.split('.')
        .map(|part| part.trim().trim_matches(|c| c == '"' || c == '\''))
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    const FILE: &str = "/etc/quorate/quorate.toml";

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new(FILE))
    }

    fn err(text: &str) -> String {
        match parse(text) {
            Ok(c) => panic!("accepted {text:?} as {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    const TLS: &str = "[tls]\nca = \"/t/ca.pem\"\ncert = \"/t/n.pem\"\nkey = \"/t/n.key\"\n";

    #[test]
    fn minimal_config_gets_every_default() {
        let c = parse("node_name = \"node-a\"\n").unwrap();
        assert_eq!(c, Config::new("node-a"));
        assert_eq!(c.replication.listen, "0.0.0.0:4567".parse().unwrap());
        assert_eq!(c.api.listen, "127.0.0.1:4001".parse().unwrap());
        assert_eq!(c.data_dir, Path::new("/var/lib/quorate"));
        assert_eq!(
            c.grastate_path(),
            Path::new("/var/lib/quorate/grastate.dat")
        );
        assert_eq!(c.db_path(), Path::new("/var/lib/quorate/db.sqlite"));
        assert_eq!(c.socket_path(), Path::new("/run/quorate/quorate.sock"));
        assert_eq!(c.commit_timeout(), Duration::from_secs(10));
    }

    #[test]
    fn design_example_parses() {
        let text = r#"
# /etc/quorate/quorate.toml
cluster_name = "mail-gw"           # peers with another cluster_name are refused
node_name    = "node-a"            # unique; must match the node's certificate
data_dir     = "/var/lib/quorate"  # grastate.dat, db.sqlite, the log
runtime_dir  = "/run/quorate"      # quorate.sock (admin socket)

[replication]
listen    = "0.0.0.0:4567"                     # UDP (QUIC)
advertise = "192.168.1.11:4567"                # what peers dial; default: listen
peers     = ["192.168.1.11:4567", "192.168.1.12:4567", "192.168.1.13:4567"]

[api]
listen = "127.0.0.1:4001"                      # HTTP client API

[tls]                                          # made by `quorate tls ca` / `quorate tls node`
ca   = "/etc/quorate/tls/ca.pem"
cert = "/etc/quorate/tls/node-a.pem"
key  = "/etc/quorate/tls/node-a.key"
"#;
        let c = parse(text).unwrap();
        assert_eq!(c.cluster_name, "mail-gw");
        assert_eq!(c.replication.peers.len(), 3);
        assert_eq!(c.advertise_addr(), "192.168.1.11:4567".parse().unwrap());
        assert_eq!(
            c.other_peers(),
            vec![
                "192.168.1.12:4567".parse().unwrap(),
                "192.168.1.13:4567".parse().unwrap()
            ]
        );
        assert_eq!(
            c.tls.as_ref().unwrap().cert,
            Path::new("/etc/quorate/tls/node-a.pem")
        );
        assert_eq!(c.api_advertise(), "http://127.0.0.1:4001");
    }

    #[test]
    fn stop_and_role_keys_are_booleans_with_consul_defaults() {
        let c = Config::parse("node_name = \"a\"\n", Path::new("/q.toml")).unwrap();
        assert!(c.leave_on_terminate && !c.skip_leave_on_interrupt && !c.arbitrator);
        let c = Config::parse(
            "node_name = \"a\"\nleave_on_terminate = false\nskip_leave_on_interrupt = true\n\
             arbitrator = true\n",
            Path::new("/q.toml"),
        )
        .unwrap();
        assert!(!c.leave_on_terminate && c.skip_leave_on_interrupt && c.arbitrator);
        let e = err("node_name = \"a\"\nleave_on_terminate = \"no\"\n");
        assert!(
            e.contains("leave_on_terminate") && e.contains("true or false") && e.contains("line 2"),
            "{e}"
        );
    }

    #[test]
    fn unknown_key_names_section_file_line_and_choices() {
        let e = err("node_name = \"a\"\n[replication]\nlisten = \"0.0.0.0:1\"\nfoo = 1\n");
        assert_eq!(
            e,
            "unknown key `foo` in [replication] of /etc/quorate/quorate.toml (line 4); expected \
             one of: listen, advertise, peers, heartbeat_ms, election_timeout_ms, \
             primary_timeout_ms, retry_autocommit, sync_wait_writes, max_writeset_bytes, cert_window, \
             flow_control_limit, commit_timeout_ms, connect_timeout_ms, rpc_timeout_ms, \
             keep_alive_ms, idle_timeout_ms, max_peer_connections"
        );
        let e = err("node_name = \"a\"\nnodename = \"b\"\n");
        assert_eq!(
            e,
            "unknown key `nodename` in the top level of /etc/quorate/quorate.toml (line 2); \
             expected one of: cluster_name, node_name, data_dir, runtime_dir, log_level, \
             worker_threads, leave_on_terminate, skip_leave_on_interrupt, arbitrator, [replication], [api], \
             [tls], [storage]"
        );
        let e = err("node_name = \"a\"\n\n[replicaton]\nlisten = \"0.0.0.0:1\"\n");
        assert!(
            e.starts_with("unknown key `replicaton` in the top level of"),
            "{e}"
        );
        assert!(e.contains("(line 3)"), "{e}");
        // Dotted keys are found too.
        let e = err("node_name = \"a\"\napi.bogus = 1\n");
        assert!(
            e.starts_with("unknown key `bogus` in [api] of /etc/quorate/quorate.toml (line 2)"),
            "{e}"
        );
        assert!(
            e.ends_with(
                "expected one of: listen, advertise, max_body_bytes, tls_cert, tls_key, users_file, \
                 max_connections, idle_timeout_ms"
            ),
            "{e}"
        );
        // A quoted key with a dot is one key, not a path.
        let e = err("node_name = \"a\"\n\"api.listen\" = \"1.2.3.4:5\"\n");
        assert!(
            e.starts_with("unknown key `api.listen` in the top level"),
            "{e}"
        );
    }

    #[test]
    fn bad_values_name_key_file_line_and_expectation() {
        let e = err("node_name = \"a\"\n[replication]\nlisten = \"abc\"\n");
        assert_eq!(
            e,
            "`replication.listen` in /etc/quorate/quorate.toml (line 3): expected an address \
             like \"0.0.0.0:4567\", got \"abc\""
        );
        let e = err("node_name = \"a\"\n[replication]\npeers = [\"10.0.0.1:4567\",\n  \"nope\"]\n");
        assert_eq!(
            e,
            "`replication.peers` in /etc/quorate/quorate.toml (line 3): expected a list of \
             addresses like [\"192.168.1.11:4567\", \"192.168.1.12:4567\"], got \"nope\""
        );
        let e = err("node_name = \"a\"\n[replication]\npeers = \"10.0.0.1:4567\"\n");
        assert!(e.contains("expected a list of addresses"), "{e}");
        let e = err("node_name = \"a\"\n[storage]\nread_connections = -1\n");
        assert_eq!(
            e,
            "`storage.read_connections` in /etc/quorate/quorate.toml (line 3): expected a whole \
             number of at least 1, like 4, got -1"
        );
        let e = err("node_name = \"a\"\n[replication]\nretry_autocommit = 5000000000\n");
        assert!(e.starts_with("`replication.retry_autocommit`"), "{e}");
        let e = err("node_name = \"a\"\n[replication]\nheartbeat_ms = \"100\"\n");
        assert!(
            e.ends_with("expected a number of milliseconds like 50, got \"100\""),
            "{e}"
        );
        let e = err("node_name = 7\n");
        assert!(
            e.starts_with("`node_name` in /etc/quorate/quorate.toml (line 1): expected a name"),
            "{e}"
        );
        let e = err("node_name = \"a\"\nreplication = 5\n");
        assert!(
            e.contains("`replication`") && e.contains("expected a table [replication], got 5"),
            "{e}"
        );
        let e = err("node_name = \"a\"\napi = { listen = \"x\" }\n");
        // Inline tables have no line of their own for the key.
        assert_eq!(
            e,
            "`api.listen` in /etc/quorate/quorate.toml: expected an address like \
             \"127.0.0.1:4001\", got \"x\""
        );
    }

    #[test]
    fn syntax_errors_name_file_and_line() {
        let e = err("node_name = \"a\"\n[replication\nlisten = 1\n");
        assert!(
            e.starts_with("/etc/quorate/quorate.toml (line 2): not valid TOML:"),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");
        let e = err("node_name = \"a\"\nnode_name = \"b\"\n");
        assert!(
            e.starts_with("/etc/quorate/quorate.toml (line 2): not valid TOML:"),
            "{e}"
        );
        assert!(e.contains("duplicate key"), "{e}");
    }

    #[test]
    fn node_name_rules() {
        let e = err("cluster_name = \"x\"\n");
        assert!(
            e.starts_with("`node_name` in /etc/quorate/quorate.toml: required"),
            "{e}"
        );
        let e = err("node_name = \"\"\n");
        assert!(
            e.starts_with("`node_name` in /etc/quorate/quorate.toml (line 1): required"),
            "{e}"
        );
        for bad in [
            "node a",
            "nöde",
            "node/a",
            "-node",
            "node-",
            "a..b",
            ".a",
            "node.1",
            "123",
            &"n".repeat(64),
        ] {
            let text = format!("node_name = {bad:?}\n");
            let e = err(&text);
            assert!(
                e.starts_with("`node_name` in /etc/quorate/quorate.toml (line 1): expected a name"),
                "{bad:?}: {e}"
            );
        }
        for good in [
            "node-a",
            "a",
            "node_1",
            "gw.example.org",
            "N0DE",
            &"n".repeat(63),
        ] {
            let c = parse(&format!("node_name = {good:?}\n")).unwrap();
            assert_eq!(c.node_name, good);
            assert_eq!(check_node_name(good), Ok(()));
        }
        assert!(check_node_name("x y").unwrap_err().contains("' '"));
        assert!(check_node_name(&"n".repeat(64))
            .unwrap_err()
            .contains("64 characters"));
    }

    #[test]
    fn cluster_name_rules() {
        let e = err("node_name = \"a\"\ncluster_name = \"mail gw\"\n");
        assert!(
            e.starts_with("`cluster_name` in /etc/quorate/quorate.toml (line 2): expected"),
            "{e}"
        );
        let e = err("node_name = \"a\"\ncluster_name = \"\"\n");
        assert!(e.ends_with("like \"mail-gw\", got \"\""), "{e}");
        // Cluster names do not go into certificates, so DNS rules do not apply.
        assert!(parse("node_name = \"a\"\ncluster_name = \"-x.1\"\n").is_ok());
    }

    #[test]
    fn timing_rules() {
        let e = err("node_name = \"a\"\n[replication]\nheartbeat_ms = 250\n");
        assert_eq!(
            e,
            "`replication.heartbeat_ms` in /etc/quorate/quorate.toml (line 3): must be at least 1 \
             and less than replication.election_timeout_ms (250), got 250"
        );
        let e = err("node_name = \"a\"\n[replication]\nheartbeat_ms = 0\n");
        assert!(e.starts_with("`replication.heartbeat_ms`"), "{e}");
        let e = err("node_name = \"a\"\n[replication]\nprimary_timeout_ms = 249\n");
        assert!(
            e.contains("must be at least replication.election_timeout_ms (250), got 249"),
            "{e}"
        );
        assert!(parse("node_name = \"a\"\n[replication]\nprimary_timeout_ms = 500\n").is_ok());
        let e = err("node_name = \"a\"\n[replication]\ncommit_timeout_ms = 0\n");
        assert!(e.starts_with("`replication.commit_timeout_ms`"), "{e}");
    }

    #[test]
    fn limit_rules() {
        let e = err("node_name = \"a\"\n[replication]\nmax_writeset_bytes = 1023\n");
        assert!(e.contains("must be at least 1024 (1 KiB), got 1023"), "{e}");
        assert!(parse("node_name = \"a\"\n[replication]\nmax_writeset_bytes = 1024\n").is_ok());
        let e = err("node_name = \"a\"\n[replication]\ncert_window = 0\n");
        assert!(
            e.starts_with("`replication.cert_window` in /etc/quorate/quorate.toml (line 3)"),
            "{e}"
        );
        let e = err("node_name = \"a\"\n[storage]\nread_connections = 0\n");
        assert!(e.starts_with("`storage.read_connections`"), "{e}");
        let e = err("node_name = \"a\"\n[storage]\nsnapshot_every_entries = 0\n");
        assert!(e.starts_with("`storage.snapshot_every_entries`"), "{e}");
        let e = err("node_name = \"a\"\nworker_threads = 257\n");
        assert!(
            e.starts_with(
                "`worker_threads` in /etc/quorate/quorate.toml (line 2): must be at most 256"
            ),
            "{e}"
        );
        let e = err("node_name = \"a\"\nworker_threads = -1\n");
        assert!(e.starts_with("`worker_threads` in"), "{e}");
        for (text, threads) in [
            ("", 1),
            ("worker_threads = 0\n", 0),
            ("worker_threads = 256\n", 256),
        ] {
            let c = parse(&format!("node_name = \"a\"\n{text}")).expect(text);
            assert_eq!(c.worker_threads, threads, "{text}");
        }
    }

    #[test]
    fn log_level_rules() {
        for good in [
            "info",
            "DEBUG",
            "off",
            "info,quorate=debug",
            "quorate::order=trace,warn",
        ] {
            let c = parse(&format!("node_name = \"a\"\nlog_level = {good:?}\n"));
            assert!(c.is_ok(), "{good}: {c:?}");
        }
        for bad in ["", "verbose", "infoo", "quorate=verbose", "info,=,"] {
            let e = err(&format!("node_name = \"a\"\nlog_level = {bad:?}\n"));
            assert!(
                e.starts_with(
                    "`log_level` in /etc/quorate/quorate.toml (line 2): expected a level"
                ),
                "{bad:?}: {e}"
            );
        }
    }

    #[test]
    fn peers_need_tls_and_a_dialable_address() {
        let peers = "[replication]\nadvertise = \"10.0.0.1:4567\"\n\
                     peers = [\"10.0.0.1:4567\", \"10.0.0.2:4567\"]\n";
        let e = err(&format!("node_name = \"a\"\n{peers}"));
        assert_eq!(
            e,
            "`replication.peers` in /etc/quorate/quorate.toml (line 4): a node with peers needs \
             [tls]: make the material with `quorate tls ca` and `quorate tls node`, then set \
             tls.ca, tls.cert and tls.key"
        );
        assert!(parse(&format!("node_name = \"a\"\n{peers}{TLS}")).is_ok());

        // Peers that are only this node itself: a lone node, no TLS needed.
        let lone = "node_name = \"a\"\n[replication]\nlisten = \"0.0.0.0:4567\"\n\
                    peers = [\"127.0.0.1:4567\"]\n";
        let c = parse(lone).unwrap();
        assert!(c.other_peers().is_empty());
        let lone = "node_name = \"a\"\n[replication]\nlisten = \"10.0.0.1:4567\"\n\
                    peers = [\"10.0.0.1:4567\"]\n";
        assert!(parse(lone).is_ok());

        // A wildcard listen address cannot be dialled: advertise is needed.
        let e = err(&format!(
            "node_name = \"a\"\n[replication]\npeers = [\"10.0.0.2:4567\"]\n{TLS}"
        ));
        assert!(
            e.starts_with("`replication.advertise` in /etc/quorate/quorate.toml: required when"),
            "{e}"
        );
        let e = err(&format!(
            "node_name = \"a\"\n[replication]\nadvertise = \"0.0.0.0:4567\"\n{TLS}"
        ));
        assert!(
            e.contains("expected an address other nodes can dial"),
            "{e}"
        );
        let e = err(&format!(
            "node_name = \"a\"\n[replication]\nadvertise = \"10.0.0.1:4567\"\n\
             peers = [\"0.0.0.0:4567\"]\n{TLS}"
        ));
        assert!(e.starts_with("`replication.peers`"), "{e}");
    }

    #[test]
    fn tls_section_needs_all_three_paths() {
        let e = err("node_name = \"a\"\n[tls]\nca = \"/t/ca.pem\"\ncert = \"/t/a.pem\"\n");
        assert_eq!(
            e,
            "`tls.key` in /etc/quorate/quorate.toml (line 2): required in [tls] (ca, cert and key \
             go together): expected a file path like \"/etc/quorate/tls/node-a.key\""
        );
        let e =
            err("node_name = \"a\"\n[tls]\nca = \"\"\ncert = \"/t/a.pem\"\nkey = \"/t/a.key\"\n");
        assert!(
            e.starts_with("`tls.ca` in /etc/quorate/quorate.toml (line 3): expected a file path"),
            "{e}"
        );
        let e = err("node_name = \"a\"\n[tls]\nca = 1\ncert = \"/t/a.pem\"\nkey = \"/t/a.key\"\n");
        assert!(
            e.starts_with("`tls.ca` in /etc/quorate/quorate.toml (line 3): expected a file path"),
            "{e}"
        );
        let e =
            err("node_name = \"a\"\n[tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\ncrl = \"d\"\n");
        assert!(e.ends_with("expected one of: ca, cert, key"), "{e}");
    }

    #[test]
    fn validate_without_a_file_names_only_the_key() {
        let mut c = Config::new("node-a");
        assert!(c.validate().is_ok());
        c.storage.read_connections = 0;
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "`storage.read_connections`: must be at least 1, got 0"
        );
    }

    #[test]
    fn advertise_defaults() {
        let mut c = Config::new("a");
        assert_eq!(c.advertise_addr(), "127.0.0.1:4567".parse().unwrap());
        c.replication.listen = "[::]:4567".parse().unwrap();
        assert_eq!(c.advertise_addr(), "[::1]:4567".parse().unwrap());
        c.replication.listen = "10.1.2.3:4567".parse().unwrap();
        assert_eq!(c.advertise_addr(), "10.1.2.3:4567".parse().unwrap());
        c.replication.advertise = Some("192.168.1.11:4567".parse().unwrap());
        assert_eq!(c.advertise_addr(), "192.168.1.11:4567".parse().unwrap());

        assert_eq!(c.api_advertise(), "http://127.0.0.1:4001");
        c.api.listen = "0.0.0.0:4001".parse().unwrap();
        assert_eq!(c.api_advertise(), "http://192.168.1.11:4001");
        c.replication.advertise = Some("[fd00::1]:4567".parse().unwrap());
        assert_eq!(c.api_advertise(), "http://[fd00::1]:4001");
        c.api.advertise = Some("gw.example.org:80".into());
        assert_eq!(c.api_advertise(), "http://gw.example.org:80");
        c.api.advertise = Some("https://gw.example.org".into());
        assert_eq!(c.api_advertise(), "https://gw.example.org");
        c.api.advertise = Some("http://".into());
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("`api.advertise`: expected a URL"));
    }

    /// Dotted paths of every leaf in a TOML table.
    fn leaves(prefix: &str, table: &toml::Table, out: &mut BTreeSet<String>) {
        for (k, v) in table {
            let key = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match v.as_table() {
                Some(t) => leaves(&key, t, out),
                None => {
                    out.insert(key);
                }
            }
        }
    }

    fn full_config() -> Config {
        let mut c = Config::new("node-a");
        c.replication.advertise = Some("192.168.1.11:4567".parse().unwrap());
        c.api.advertise = Some("http://192.168.1.11:4001".into());
        c.api.tls_cert = Some("/etc/quorate/tls/api.pem".into());
        c.api.tls_key = Some("/etc/quorate/tls/api.key".into());
        c.api.users_file = Some("/etc/quorate/users.json".into());
        c.tls = Some(TlsConfig {
            ca: "/ca".into(),
            cert: "/c".into(),
            key: "/k".into(),
        });
        c
    }

    #[test]
    fn every_field_is_documented_and_nothing_else() {
        let value = toml::Value::try_from(full_config()).unwrap();
        let mut fields = BTreeSet::new();
        leaves("", value.as_table().unwrap(), &mut fields);
        let documented: BTreeSet<String> = documented_keys()
            .iter()
            .map(|d| d.key.to_string())
            .collect();
        assert_eq!(fields, documented);
        assert_eq!(
            documented.len(),
            documented_keys().len(),
            "a key is documented twice"
        );
        for d in documented_keys() {
            assert!(
                !d.doc.is_empty() && !d.expected.is_empty() && !d.example.is_empty(),
                "{d:?}"
            );
        }
    }

    #[test]
    fn documented_defaults_are_the_real_defaults() {
        let value = toml::Value::try_from(Config::new("node-a")).unwrap();
        for d in documented_keys().iter().filter(|d| !d.default.is_empty()) {
            assert_eq!(
                d.default, d.example,
                "{}: example differs from default",
                d.key
            );
            let parsed: toml::Table = format!("v = {}", d.default).parse().unwrap();
            let actual = d.key.split('.').try_fold(&value, |v, part| v.get(part));
            assert_eq!(actual, parsed.get("v"), "default of {}", d.key);
        }
        // Keys without a default are absent from a default config, except
        // node_name which has no meaningful default at all.
        for d in documented_keys()
            .iter()
            .filter(|d| d.default.is_empty() && d.key != "node_name")
        {
            let actual = d.key.split('.').try_fold(&value, |v, part| v.get(part));
            assert_eq!(actual, None, "{} has a default but documents none", d.key);
        }
    }

    #[test]
    fn example_parses_as_written_and_uncommented() {
        let example = Config::example_toml();
        assert_eq!(parse(&example).unwrap(), Config::new("node-a"));
        for d in documented_keys() {
            let name = d.key.rsplit('.').next().unwrap();
            assert!(
                example.contains(&format!("{name} = {}", d.example)),
                "{} missing",
                d.key
            );
        }
        assert!(
            example.lines().all(|l| l.len() <= 80),
            "long line in example"
        );

        let uncommented: String = example
            .lines()
            .map(|l| match l.strip_prefix('#') {
                Some(rest) if rest.starts_with(|c: char| c.is_ascii_lowercase() || c == '[') => {
                    rest
                }
                _ => l,
            })
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(parse(&uncommented).unwrap(), {
            let mut c = full_config();
            c.tls = Some(TlsConfig {
                ca: "/etc/quorate/tls/ca.pem".into(),
                cert: "/etc/quorate/tls/node-a.pem".into(),
                key: "/etc/quorate/tls/node-a.key".into(),
            });
            c
        });
    }

    #[test]
    fn load_reads_the_file_and_reports_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("quorate.toml");
        std::fs::write(
            &path,
            "node_name = \"node-b\"\n[api]\nlisten = \"0.0.0.0:4002\"\n",
        )
        .unwrap();
        let c = Config::load(&path).unwrap();
        assert_eq!(c.node_name, "node-b");
        assert_eq!(c.api.listen.port(), 4002);

        std::fs::write(&path, "node_name = \"node-b\"\n[api]\nlisten = \"x\"\n").unwrap();
        let e = Config::load(&path).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("`api.listen` in {} (line 3)", path.display())),
            "{e}"
        );

        let missing = dir.path().join("nope.toml");
        let e = Config::load(&missing).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }));
        assert!(e.to_string().contains("nope.toml"), "{e}");
    }

    #[test]
    fn key_line_handles_layouts() {
        let text = "a = 1\n[x]\n  b = 2\n\"c\" = 3\n[ y . z ]\nd=4\nx.e = 5\n";
        assert_eq!(key_line(text, "a"), Some(1));
        assert_eq!(key_line(text, "x"), Some(2));
        assert_eq!(key_line(text, "x.b"), Some(3));
        assert_eq!(key_line(text, "x.c"), Some(4));
        assert_eq!(key_line(text, "y.z.d"), Some(6));
        assert_eq!(key_line(text, "y.z.x.e"), Some(7));
        assert_eq!(key_line(text, "q"), None);
    }

    mod hostile {
        use proptest::prelude::*;

        use super::*;

        /// The packaged example: every key an operator is likely to touch.
        const EXAMPLE: &str = include_str!("../packaging/quorate.toml");

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(500))]

            #[test]
            fn arbitrary_text_is_a_config_or_an_error(text in "\\PC{0,300}") {
                if let Err(e) = parse(&text) {
                    prop_assert!(e.to_string().contains(FILE), "{e}");
                }
            }

            /// The example with a piece cut out or a line of junk spliced
            /// in: an error naming the file, or a config; never a panic.
            #[test]
            fn mangled_example_never_panics(
                at in any::<prop::sample::Index>(),
                cut in 0usize..40,
                junk in "[\\PC\n=\\[\\]\"#]{0,30}",
            ) {
                let chars: Vec<char> = EXAMPLE.chars().collect();
                let i = at.index(chars.len());
                let j = (i + cut).min(chars.len());
                let text: String = chars[..i].iter().chain(junk.chars().collect::<Vec<_>>().iter()).chain(chars[j..].iter()).collect();
                if let Err(e) = parse(&text) {
                    prop_assert!(e.to_string().contains(FILE), "{e}");
                }
            }

            /// Numbers at and past the edges of their types.
            #[test]
            fn extreme_numbers_are_refused_or_accepted_cleanly(
                key in prop::sample::select(vec![
                    "replication.heartbeat_ms", "replication.election_timeout_ms",
                    "replication.primary_timeout_ms", "replication.max_writeset_bytes",
                    "replication.retry_autocommit", "replication.cert_window",
                ]),
                value in prop::sample::select(vec![
                    "0", "-1", "9223372036854775807", "-9223372036854775808",
                    "18446744073709551616", "1e308", "nan", "inf", "\"1\"", "[]", "{}",
                ]),
            ) {
                let (table, name) = key.split_once('.').map_or(("", key), |(t, n)| (t, n));
                let text = if table.is_empty() {
                    format!("node_name = \"a\"\n{name} = {value}\n")
                } else {
                    format!("node_name = \"a\"\n[{table}]\n{name} = {value}\n")
                };
                let _ = parse(&text);
            }
        }
    }
}
