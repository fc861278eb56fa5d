//! Test double of the node and a real HTTP server around it, shared by the
//! HTTP-layer tests and the bench tests.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::oneshot;

use super::{
    serve, ApiError, ApiOptions, Backend, BackupFormat, ExecuteRequest, ExecuteResponse,
    NodeDescription, QueryRequest,
};
use crate::sql::{ExecResult, QueryResult, SqlValue};

/// An in-memory stand-in for the node. SQL is not interpreted; markers in
/// the statement text choose the outcome:
/// `NOT_PRIMARY`, `UNKNOWN_OUTCOME`, `CONFLICT` fail the whole request,
/// `BAD_SQL` fails its statement.
pub(crate) struct FakeBackend {
    pub executes: Mutex<Vec<ExecuteRequest>>,
    pub queries: Mutex<Vec<QueryRequest>>,
    /// Canned answers by SQL text; other queries echo their SQL.
    pub query_results: Mutex<HashMap<String, QueryResult>>,
    pub nodes: Mutex<Vec<NodeDescription>>,
    pub ready: Mutex<Result<(), String>>,
    /// Every n-th execute fails certification; 0 never.
    pub cert_fail_every: AtomicU64,
    /// Bodies given to `/db/load`.
    pub loads: Mutex<Vec<Bytes>>,
    executes_seen: AtomicU64,
    seqno: AtomicI64,
    last_insert_id: AtomicI64,
}

impl FakeBackend {
    pub(crate) fn new() -> Arc<Self> {
        let select_one = QueryResult {
            columns: vec!["1".into()],
            types: vec!["".into()],
            rows: vec![vec![SqlValue::Integer(1)]],
            error: None,
            time: None,
        };
        Arc::new(FakeBackend {
            executes: Mutex::new(Vec::new()),
            queries: Mutex::new(Vec::new()),
            query_results: Mutex::new(HashMap::from([("SELECT 1".to_string(), select_one)])),
            nodes: Mutex::new(Vec::new()),
            ready: Mutex::new(Ok(())),
            cert_fail_every: AtomicU64::new(0),
            loads: Mutex::new(Vec::new()),
            executes_seen: AtomicU64::new(0),
            seqno: AtomicI64::new(0),
            last_insert_id: AtomicI64::new(0),
        })
    }

    pub(crate) fn execute_count(&self) -> usize {
        self.executes.lock().unwrap().len()
    }
}

impl Backend for FakeBackend {
    async fn execute(&self, req: ExecuteRequest) -> Result<ExecuteResponse, ApiError> {
        self.executes.lock().unwrap().push(req.clone());
        let n = self.executes_seen.fetch_add(1, Ordering::SeqCst) + 1;
        let every = self.cert_fail_every.load(Ordering::SeqCst);
        let has = |marker: &str| req.statements.iter().any(|s| s.sql.contains(marker));
        if (every > 0 && n.is_multiple_of(every)) || has("CONFLICT") {
            return Err(ApiError::CertificationFailed(
                "certification failed: a concurrent transaction changed the same rows".into(),
            ));
        }
        if has("NOT_PRIMARY") {
            return Err(ApiError::NotPrimary(
                "node is not part of the primary component".into(),
            ));
        }
        if has("UNKNOWN_OUTCOME") {
            return Err(ApiError::OutcomeUnknown(
                "lost the primary component after submitting".into(),
            ));
        }
        let results: Vec<ExecResult> = req
            .statements
            .iter()
            .map(|s| {
                if s.sql.contains("BAD_SQL") {
                    ExecResult {
                        error: Some("near \"BAD_SQL\": syntax error".into()),
                        ..Default::default()
                    }
                } else {
                    ExecResult {
                        rows_affected: 1,
                        last_insert_id: self.last_insert_id.fetch_add(1, Ordering::SeqCst) + 1,
                        error: None,
                        time: req.timings.then_some(0.000_5),
                        rows: None,
                    }
                }
            })
            .collect();
        let changed = results.iter().any(|r| r.error.is_none());
        let seqno = changed.then(|| self.seqno.fetch_add(1, Ordering::SeqCst) + 1);
        Ok(ExecuteResponse { results, seqno })
    }

    async fn query(&self, req: QueryRequest) -> Result<Vec<QueryResult>, ApiError> {
        self.queries.lock().unwrap().push(req.clone());
        if req.statements.iter().any(|s| s.sql.contains("NOT_PRIMARY")) {
            return Err(ApiError::NotPrimary(
                "node is not part of the primary component".into(),
            ));
        }
        let canned = self.query_results.lock().unwrap();
        Ok(req
            .statements
            .iter()
            .map(|s| {
                canned.get(&s.sql).cloned().unwrap_or_else(|| QueryResult {
                    columns: vec!["sql".into()],
                    types: vec!["text".into()],
                    rows: vec![vec![SqlValue::Text(s.sql.clone())]],
                    error: None,
                    time: None,
                })
            })
            .collect())
    }

    async fn status(&self) -> serde_json::Value {
        serde_json::json!({ "node": { "name": "fake" }, "http": { "bind_addr": "x" } })
    }

    async fn nodes(&self) -> Vec<NodeDescription> {
        self.nodes.lock().unwrap().clone()
    }

    async fn ready(&self) -> Result<(), String> {
        self.ready.lock().unwrap().clone()
    }

    fn is_read_only(&self, sql: &str) -> bool {
        sql.trim_start().to_ascii_uppercase().starts_with("SELECT")
    }

    async fn backup(&self, format: BackupFormat) -> Result<Vec<u8>, ApiError> {
        if !self.ready.lock().unwrap().is_ok() {
            return Err(ApiError::NotPrimary("not primary".into()));
        }
        Ok(match format {
            BackupFormat::Sqlite => b"SQLite format 3\0fake".to_vec(),
            BackupFormat::Sql => {
                b"PRAGMA foreign_keys=OFF;\nBEGIN TRANSACTION;\nCOMMIT;\n".to_vec()
            }
        })
    }

    async fn load(&self, data: Bytes) -> Result<ExecuteResponse, ApiError> {
        if data.starts_with(b"BAD") {
            return Err(ApiError::BadRequest("cannot load: bad".into()));
        }
        self.loads.lock().unwrap().push(data);
        Ok(ExecuteResponse {
            results: Vec::new(),
            seqno: Some(self.seqno.fetch_add(1, Ordering::SeqCst) + 1),
        })
    }

    fn served_by(&self) -> String {
        "127.0.0.1:4567".to_string()
    }

    async fn metrics(&self) -> String {
        "# TYPE quorate_up gauge\nquorate_up 1\n".to_string()
    }
}

/// The API served on 127.0.0.1 on a free port; stops when dropped.
pub(crate) struct TestServer {
    pub addr: SocketAddr,
    pub backend: Arc<FakeBackend>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

pub(crate) async fn spawn_server(backend: Arc<FakeBackend>, opts: ApiOptions) -> TestServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let server_backend = Arc::clone(&backend);
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = rx.await;
        };
        serve(listener, server_backend, opts, shutdown).await
    });
    TestServer {
        addr,
        backend,
        shutdown: Some(tx),
    }
}

pub(crate) struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// One request over real HTTP.
pub(crate) async fn send(
    addr: SocketAddr,
    method: Method,
    path_and_query: &str,
    content_type: Option<&str>,
    body: impl Into<Bytes>,
) -> Reply {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut builder = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path_and_query}"));
    if let Some(ct) = content_type {
        builder = builder.header("content-type", ct);
    }
    let response = client
        .request(builder.body(Full::new(body.into())).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}
