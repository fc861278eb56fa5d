//! Cluster CA and node certificates (`quorate tls`). SKELETON: contract only.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{0}")]
    Other(String),
}

/// `quorate tls ca --out DIR`: writes `ca.pem` and `ca.key` (0600); returns their paths.
pub fn write_ca(_out_dir: &Path) -> Result<(PathBuf, PathBuf), TlsError> {
    unimplemented!("skeleton")
}

/// `quorate tls node NAME --addr IP[,IP...] --ca-dir DIR --out DIR`: writes
/// `NAME.pem` and `NAME.key` (0600); returns their paths.
pub fn write_node_cert(_name: &str, _addrs: &[String], _ca_dir: &Path, _out_dir: &Path) -> Result<(PathBuf, PathBuf), TlsError> {
    unimplemented!("skeleton")
}
