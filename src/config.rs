//! `quorate.toml`: every setting with its default. (Skeleton: loading,
//! validation and error messages are being completed.)

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub const DEFAULT_CONFIG_PATH: &str = "/etc/quorate/quorate.toml";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_cluster_name")]
    pub cluster_name: String,
    pub node_name: String,
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    #[serde(default = "default_runtime_dir")]
    pub runtime_dir: PathBuf,
    #[serde(default = "default_log_level")]
    pub log_level: String,
    #[serde(default)]
    pub replication: ReplicationConfig,
    #[serde(default)]
    pub api: ApiConfig,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    #[serde(default)]
    pub storage: StorageConfig,
}

#[derive(Debug, Clone, Deserialize)]
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
    pub max_writeset_bytes: usize,
    /// Seqnos a write-set's snapshot may lag behind and still certify.
    pub cert_window: i64,
    /// How long a client waits for its write-set to be ordered and applied.
    pub commit_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    pub advertise: Option<String>,
    pub max_body_bytes: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Write-set log (gcache) entries kept after a snapshot, for IST.
    pub log_retain_entries: u64,
    /// Take a snapshot (and allow purging the log) every this many entries.
    pub snapshot_every_entries: u64,
    /// Read connections in the pool.
    pub read_connections: usize,
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

impl Default for ReplicationConfig {
    fn default() -> Self {
        ReplicationConfig {
            listen: "0.0.0.0:4567".parse().expect("constant address"),
            advertise: None,
            peers: Vec::new(),
            heartbeat_ms: 100,
            election_timeout_ms: 500,
            primary_timeout_ms: 1000,
            retry_autocommit: 1,
            max_writeset_bytes: 16 * 1024 * 1024,
            cert_window: 100_000,
            commit_timeout_ms: 10_000,
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: "127.0.0.1:4001".parse().expect("constant address"),
            advertise: None,
            max_body_bytes: 64 * 1024 * 1024,
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig { log_retain_entries: 100_000, snapshot_every_entries: 50_000, read_connections: 4 }
    }
}

impl Config {
    pub fn socket_path(&self) -> PathBuf {
        self.runtime_dir.join("quorate.sock")
    }
    pub fn grastate_path(&self) -> PathBuf {
        self.data_dir.join("grastate.dat")
    }
    pub fn commit_timeout(&self) -> Duration {
        Duration::from_millis(self.replication.commit_timeout_ms)
    }
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Read { path: path.to_path_buf(), source: e })?;
        Config::parse(&text, path)
    }
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Invalid { path: path.to_path_buf(), message: e.to_string() })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid config file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}
