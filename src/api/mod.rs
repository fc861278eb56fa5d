//! rqlite-compatible HTTP client API. SKELETON: the contract between the
//! HTTP layer and the node.

use std::future::Future;

use serde::Serialize;

use crate::sql::{ExecResult, QueryResult, Statement};

/// rqlite's read consistency levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadLevel {
    None,
    #[default]
    Weak,
    Linearizable,
    Strong,
}

#[derive(Debug, Clone)]
pub struct ExecuteRequest {
    pub statements: Vec<Statement>,
    pub transaction: bool,
    pub timings: bool,
}

#[derive(Debug, Clone)]
pub struct ExecuteResponse {
    pub results: Vec<ExecResult>,
    /// The write-set's seqno when it was replicated; `None` when nothing changed.
    pub seqno: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct QueryRequest {
    pub statements: Vec<Statement>,
    pub level: ReadLevel,
    pub timings: bool,
}

/// A cluster member as `/nodes` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct NodeDescription {
    pub id: String,
    pub api_addr: String,
    pub addr: String,
    pub reachable: bool,
    pub leader: bool,
    pub voter: bool,
}

/// Whole-request errors. Each has a stable `code` and HTTP status (docs/API.md).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// 503 `not_primary`: the node is not part of the primary component.
    #[error("{0}")]
    NotPrimary(String),
    /// 409 `certification_failed`: retryable; the transaction was not applied anywhere.
    #[error("{0}")]
    CertificationFailed(String),
    /// 504 `outcome_unknown`: submitted but the node cannot tell whether it committed.
    #[error("{0}")]
    OutcomeUnknown(String),
    /// 400 `bad_request`.
    #[error("{0}")]
    BadRequest(String),
    /// 413 `too_large`.
    #[error("{0}")]
    TooLarge(String),
    /// 500 `internal`.
    #[error("{0}")]
    Internal(String),
}

/// What the HTTP layer needs from the node.
pub trait Backend: Send + Sync + 'static {
    fn execute(&self, req: ExecuteRequest) -> impl Future<Output = Result<ExecuteResponse, ApiError>> + Send;
    fn query(&self, req: QueryRequest) -> impl Future<Output = Result<Vec<QueryResult>, ApiError>> + Send;
    /// The `/status` document.
    fn status(&self) -> impl Future<Output = serde_json::Value> + Send;
    fn nodes(&self) -> impl Future<Output = Vec<NodeDescription>> + Send;
    /// `Ok(())` when the node serves clients, else why not.
    fn ready(&self) -> impl Future<Output = Result<(), String>> + Send;
}
