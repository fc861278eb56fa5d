//! `grastate.dat` in Galera's format (version 2.1). SKELETON: contract only.

use std::path::{Path, PathBuf};

use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrastateFile {
    pub uuid: Uuid,
    pub seqno: i64,
    pub safe_to_bootstrap: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum GrastateError {
    #[error("cannot access {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} line {line}: {message}")]
    Damaged { path: PathBuf, line: usize, message: String },
}

impl GrastateFile {
    /// `Ok(None)` when the file does not exist (a node that never started).
    pub fn read(_path: &Path) -> Result<Option<GrastateFile>, GrastateError> {
        unimplemented!("skeleton")
    }
    pub fn write_atomic(&self, _path: &Path) -> Result<(), GrastateError> {
        unimplemented!("skeleton")
    }
}
