//! rqlite-compatible HTTP client API.
//!
//! quorate speaks rqlite's HTTP/JSON API so that existing rqlite clients
//! (pyrqlite, gorqlite, rqlite-js, the `rqlite` shell, `curl` scripts) work
//! unchanged. Where rqlite's behaviour depends on Raft leadership, quorate
//! answers as a multi-master node: every node in the primary component takes
//! writes, so a Primary node never redirects. Writes and `weak` reads first
//! wait until the node has applied what the cluster committed before them
//! (Galera's `wsrep_sync_wait`), so clients that spread requests over the
//! nodes read their own writes.
//!
//! # Endpoints
//!
//! | method | path | what |
//! | --- | --- | --- |
//! | `POST` | `/db/execute` | run write statements as one write-set |
//! | `GET`, `POST` | `/db/query` | run read statements on the local database |
//! | `POST` | `/db/request` | mixed body: all read-only → a query, else an execute |
//! | `GET` | `/db/backup` | SQLite file of the client's tables, SQL dump with `fmt=sql`, gzipped with `compress` |
//! | `POST` | `/db/load` | replace the database with a SQLite file or SQL dump, as one write-set |
//! | `GET` | `/status` | the node's status document |
//! | `GET` | `/nodes` | cluster members |
//! | `GET` | `/readyz` | readiness probe (text) |
//! | `GET` | `/metrics` | Prometheus text exposition (`text/plain; version=0.0.4`) |
//!
//! Any other path is 404; a known path with another method is 405 (with an
//! `Allow` header); `OPTIONS` on a known path is 200 with `Allow`. Every
//! answer names the serving node's replication address in
//! `X-RQLITE-SERVED-BY`.
//!
//! # Request bodies (`/db/execute`, `/db/query` POST, `/db/request`)
//!
//! A JSON array with one element per statement. An element is either a SQL
//! string, or an array `[sql, p1, p2, ...]` of positional parameters, or
//! `[sql, {"name": v, ...}]` of named parameters (the name may carry its
//! `:`/`@`/`$` prefix or not). Mixing positional and named parameters in one
//! statement is refused. Parameter values, as rqlite converts them:
//!
//! | JSON | SQLite value |
//! | --- | --- |
//! | integer that fits i64 | INTEGER |
//! | any other number | REAL |
//! | `true` / `false` | INTEGER 1 / 0 |
//! | string | TEXT, except a SQLite blob literal `"X'0A0B'"`, which is a BLOB |
//! | array of integers 0..=255 | BLOB |
//! | `null` | NULL |
//! | anything else | 400 `bad_request` naming the statement and parameter |
//!
//! With `Content-Type: text/plain` the whole body is one SQL statement
//! (rqlite accepts this too). GET `/db/query` takes its one statement from
//! `q=`. One SQL string may hold several `;`-separated statements: they run
//! in turn and the string's result is its last statement's (or its first
//! error), as with rqlite's driver; such a string may not carry parameters.
//!
//! # Query parameters
//!
//! Flags count when present, whatever their value (as in rqlite).
//!
//! | param | endpoints | effect |
//! | --- | --- | --- |
//! | `transaction` | execute, request | run all statements in one transaction |
//! | `timings` | all `/db/*` | add `time` (seconds) to each result and to the response |
//! | `pretty` | all JSON | indent the JSON with four spaces |
//! | `associative` | all `/db/*` | rows as objects: `{"types":{..},"rows":[{..}]}`; execute results gain `"rows":null` |
//! | `blob_array` | all `/db/*` | BLOBs as arrays of byte values instead of base64 |
//! | `level` | query, request | `none` (local, no wait), `weak` (default; also for unknown values and `auto`: waits for the cluster's committed position, bounded by `primary_timeout_ms`), `linearizable`, `strong` (the same wait, unbounded) |
//! | `raft_index` | all `/db/*` | add `raft_index`: the write-set's seqno, when one was replicated |
//! | `redirect` | `/db/*` | served locally when Primary; else 301 to the sequencer this node knows (503 when it knows none) |
//! | `queue`, `wait` | execute | acknowledged once applied; the answer also carries `sequence_number` (the seqno) when a write-set was replicated |
//! | `fmt`, `compress` | backup | `fmt=sql` for a SQL dump; `compress` gzips |
//! | `timeout`, `db_timeout`, `freshness`, `linearizable_timeout` | all | accepted; must be Go durations (`1s`, `500ms`) or the request is 400 |
//! | `retries` | all | accepted; must be an integer |
//! | `freshness_strict` | query | accepted; requires `freshness` |
//! | `nonvoters` | `/nodes` | include non-voting members (learners) |
//! | `ver=2` | `/nodes` | `{"nodes":[...]}` instead of an object keyed by node id |
//! | `noleader` | `/readyz` | answer 200 `[+]node ok` without checking the cluster |
//!
//! # Responses
//!
//! `/db/execute`: `{"results":[{"last_insert_id":1,"rows_affected":1}]}`.
//! Zero-valued keys are omitted, as rqlite (Go's `omitempty`) does. A failed
//! statement is `{"error":"..."}` in its slot with HTTP 200. When a write-set
//! was replicated the header `X-Quorate-Seqno: N` carries its seqno.
//!
//! `/db/query`: `{"results":[{"columns":["id"],"types":["integer"],"values":[[1]]}]}`;
//! a query with no rows has `columns` and `types` but no `values`. Values are
//! encoded as rqlite encodes them: BLOB as base64 (or a byte array with
//! `blob_array`), REAL that is a whole number without a fraction (`1.0` →
//! `1`), INTEGER in a column declared `boolean` as `true`/`false` (`> 0`),
//! INTEGER in a column declared `date`/`datetime`/`timestamp` as an RFC 3339
//! string (unix seconds, or milliseconds when its magnitude exceeds 10^12),
//! TEXT in such a column parsed as `YYYY-MM-DD[ T]HH:MM[:SS[.f]][±HH:MM|Z]`
//! and printed as RFC 3339 (unparseable text becomes Go's zero time
//! `0001-01-01T00:00:00Z`, exactly as rqlite does). A BLOB in a column of
//! text affinity (declared `text`, `varchar..`, `clob..`, or no type) is text
//! when it is valid UTF-8. An undeclared column type is filled from the first
//! row's value.
//!
//! `/db/request`: like `/db/query` when every statement is read-only, else
//! like `/db/execute`, with the rows each read statement saw inside the
//! transaction. On `/db/execute` a RETURNING clause reports its rows; a
//! SELECT shows none (as in rqlite).
//!
//! `timings` adds a top-level `time`. `/status` is the node's status
//! document; `/nodes` is `{"<id>":{"id":..,"api_addr":..,"addr":..,"voter":..,
//! "reachable":..,"leader":..}}` sorted by id. `/readyz` answers 200
//! `[+]node ok\n[+]leader ok\n[+]store ok\n[+]db ok` or 503 with the reason
//! as the last line.
//!
//! # HTTPS and users
//!
//! `api.tls_cert`/`api.tls_key` make the API HTTPS-only (`https.rs`);
//! `api.users_file` requires rqlite-style basic authentication with
//! per-endpoint permissions (`auth.rs`).
//!
//! # Whole-request errors
//!
//! Body `{"error": "<message>", "code": "<code>"}`:
//!
//! | code | HTTP | meaning |
//! | --- | --- | --- |
//! | `not_primary` | 503 | the node is not part of the primary component; retry elsewhere |
//! | `certification_failed` | 409 | lost a write-write conflict; certainly not applied; retry |
//! | `outcome_unknown` | 504 | submitted, but the node cannot tell whether it committed |
//! | `bad_request` | 400 | malformed body or parameters (JSON errors carry line and column) |
//! | `too_large` | 413 | body over the configured limit |
//! | `internal` | 500 | a bug or a storage failure |
//! | `unauthorized` | 401 | with `api.users_file`: no valid basic credentials (and `*` lacks the permission) |
//! | `forbidden` | 403 | with `api.users_file`: the user lacks the endpoint's permission |
//! | `not_found` | 404 | unknown path |
//! | `method_not_allowed` | 405 | known path, other method |

mod accept;
pub mod auth;
pub mod dump;
mod encode;
mod error;
mod https;
pub mod limit;
mod params;
mod request;
mod routes;
mod split;
#[cfg(test)]
pub(crate) mod testing;

use std::future::Future;
use std::sync::Arc;

use serde::Serialize;

use crate::sql::{ExecResult, QueryResult, Statement};

pub use params::parse_go_duration;

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
    /// quorate's view of the member (role, state, seqno, lag), when known.
    pub member: Option<crate::status::MemberRow>,
}

/// Whole-request errors. Each has a stable `code` and HTTP status (see the
/// table in this module's documentation).
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

/// What `/db/backup` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupFormat {
    /// A SQLite database file (the default).
    Sqlite,
    /// A SQL dump (`fmt=sql`), laid out as the `sqlite3` shell's `.dump`.
    Sql,
}

/// What the HTTP layer needs from the node.
pub trait Backend: Send + Sync + 'static {
    fn execute(
        &self,
        req: ExecuteRequest,
    ) -> impl Future<Output = Result<ExecuteResponse, ApiError>> + Send;
    fn query(
        &self,
        req: QueryRequest,
    ) -> impl Future<Output = Result<Vec<QueryResult>, ApiError>> + Send;
    /// The `/status` document.
    fn status(&self) -> impl Future<Output = serde_json::Value> + Send;
    fn nodes(&self) -> impl Future<Output = Vec<NodeDescription>> + Send;
    /// `Ok(())` when the node serves clients, else why not.
    fn ready(&self) -> impl Future<Output = Result<(), String>> + Send;
    /// Whether `sql` only reads (SQLite's `sqlite3_stmt_readonly`); routes
    /// `/db/request` bodies. A statement that does not prepare is not
    /// read-only, so it takes the write path and reports its error there.
    fn is_read_only(&self, sql: &str) -> bool;
    /// A consistent copy of the client's data, including every write
    /// committed in the cluster before the request (`/db/backup`).
    fn backup(
        &self,
        format: BackupFormat,
    ) -> impl Future<Output = Result<Vec<u8>, ApiError>> + Send;
    /// Replace the database with the SQLite file or SQL dump in `data`, as
    /// one write-set replicated to every node (`/db/load`).
    fn load(
        &self,
        data: bytes::Bytes,
    ) -> impl Future<Output = Result<ExecuteResponse, ApiError>> + Send;
    /// How this node names itself in `X-RQLITE-SERVED-BY` (its replication
    /// address, as rqlite names a node by its Raft address).
    fn served_by(&self) -> String;
    /// Prometheus text exposition for `/metrics`.
    fn metrics(&self) -> impl Future<Output = String> + Send {
        async { String::new() }
    }
}

/// Settings of the HTTP server.
#[derive(Clone)]
pub struct ApiOptions {
    /// Larger request bodies are refused with 413.
    pub max_body_bytes: usize,
    /// `http://host:port` under which clients reach this node.
    pub advertise: String,
    /// Serve HTTPS with this instead of plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Require these users' credentials and permissions.
    pub users: Option<Arc<auth::Users>>,
    /// Connections served at once; more are refused with `503`.
    pub max_connections: usize,
    /// Closes a connection that sends no whole request header for this long.
    pub idle_timeout: std::time::Duration,
}

impl std::fmt::Debug for ApiOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the users: they hold passwords.
        f.debug_struct("ApiOptions")
            .field("max_body_bytes", &self.max_body_bytes)
            .field("advertise", &self.advertise)
            .field("tls", &self.tls.is_some())
            .field("users", &self.users.is_some())
            .field("max_connections", &self.max_connections)
            .field("idle_timeout", &self.idle_timeout)
            .finish()
    }
}

impl Default for ApiOptions {
    fn default() -> Self {
        ApiOptions {
            max_body_bytes: 64 * 1024 * 1024,
            advertise: "http://127.0.0.1:4001".to_string(),
            tls: None,
            users: None,
            max_connections: 1024,
            idle_timeout: std::time::Duration::from_secs(30),
        }
    }
}

/// Why the client API cannot be set up as configured.
#[derive(Debug, thiserror::Error)]
pub enum ApiSetupError {
    #[error(transparent)]
    Https(#[from] https::HttpsError),
    #[error(transparent)]
    Users(#[from] auth::UsersError),
}

impl ApiOptions {
    /// The options the `[api]` section of the config asks for: certificate
    /// and users files are read here, so a bad one stops the start.
    pub fn from_config(config: &crate::config::Config) -> Result<ApiOptions, ApiSetupError> {
        let api = &config.api;
        let tls = match (&api.tls_cert, &api.tls_key) {
            (Some(cert), Some(key)) => Some(Arc::new(https::server_config(cert, key)?)),
            // The config check refuses one without the other.
            _ => None,
        };
        let users = match &api.users_file {
            Some(path) => Some(Arc::new(auth::Users::load(path)?)),
            None => None,
        };
        Ok(ApiOptions {
            max_body_bytes: api.max_body_bytes,
            advertise: config.api_advertise(),
            tls,
            users,
            max_connections: api.max_connections,
            idle_timeout: std::time::Duration::from_millis(api.idle_timeout_ms),
        })
    }
}

/// Serve the client API on `listener` until `shutdown` completes; requests
/// under way when it does are finished first.
pub async fn serve<B: Backend>(
    listener: tokio::net::TcpListener,
    backend: Arc<B>,
    opts: ApiOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let tls = opts.tls.clone();
    let idle_timeout = opts.idle_timeout;
    let limit = limit::ConnectionLimit::new(opts.max_connections);
    let app = routes::router(backend, opts);
    accept::serve(listener, app, tls, limit, idle_timeout, shutdown).await
}
