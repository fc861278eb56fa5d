//! Routing and the endpoint handlers. Routing is by hand rather than with
//! axum's router so that 404 and 405 carry the same JSON error body as
//! every other failure.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::Value;

use super::auth::{basic_credentials, Denied, Perm};
use super::encode::{to_json, Envelope, Format, Slot};
use super::error::{bad_request, HttpError};
use super::params::QueryParams;
use super::request::{is_plain_text, parse_plain_text, parse_statements, read_body};
use super::split;
use super::{
    ApiError, ApiOptions, Backend, BackupFormat, ExecuteRequest, NodeDescription, QueryRequest,
    ReadLevel,
};
use crate::sql::Statement;

/// Header carrying the seqno of the write-set a request replicated.
pub(crate) const SEQNO_HEADER: &str = "x-quorate-seqno";
/// rqlite names the node that served a request in this header.
pub(crate) const SERVED_BY_HEADER: &str = "x-rqlite-served-by";
const OCTET_STREAM: &str = "application/octet-stream";
const JSON_CONTENT_TYPE: &str = "application/json; charset=utf-8";
const TEXT_CONTENT_TYPE: &str = "text/plain; charset=utf-8";
const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4";

struct App<B> {
    backend: Arc<B>,
    opts: ApiOptions,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Execute,
    Query,
    Request,
    Status,
    Nodes,
    Readyz,
    Metrics,
    Backup,
    Load,
}

impl Endpoint {
    fn from_path(path: &str) -> Option<Self> {
        // rqlite matches these by prefix, so a trailing slash is fine too.
        let path = path.strip_suffix('/').unwrap_or(path);
        Some(match path {
            "/db/execute" => Endpoint::Execute,
            "/db/query" => Endpoint::Query,
            "/db/request" => Endpoint::Request,
            "/status" => Endpoint::Status,
            "/nodes" => Endpoint::Nodes,
            "/readyz" => Endpoint::Readyz,
            "/metrics" => Endpoint::Metrics,
            "/db/backup" => Endpoint::Backup,
            "/db/load" => Endpoint::Load,
            _ => return None,
        })
    }

    fn allows(self, method: &Method) -> bool {
        match self {
            Endpoint::Execute | Endpoint::Request | Endpoint::Load => method == Method::POST,
            Endpoint::Query => method == Method::GET || method == Method::POST,
            Endpoint::Status
            | Endpoint::Nodes
            | Endpoint::Readyz
            | Endpoint::Metrics
            | Endpoint::Backup => method == Method::GET,
        }
    }

    /// The permission a users file must grant (rqlite's names).
    /// `/db/request` needs `query` or `execute` by what its body does.
    fn perm(self) -> Perm {
        match self {
            Endpoint::Execute => Perm::Execute,
            Endpoint::Query | Endpoint::Request => Perm::Query,
            Endpoint::Status | Endpoint::Nodes | Endpoint::Metrics => Perm::Status,
            Endpoint::Readyz => Perm::Ready,
            Endpoint::Backup => Perm::Backup,
            Endpoint::Load => Perm::Load,
        }
    }

    /// Endpoints whose answer depends on this node being Primary, so that
    /// `redirect` may send the client elsewhere.
    fn needs_primary(self) -> bool {
        matches!(
            self,
            Endpoint::Execute
                | Endpoint::Query
                | Endpoint::Request
                | Endpoint::Backup
                | Endpoint::Load
        )
    }

    fn allow_header(self) -> &'static str {
        match self {
            Endpoint::Execute | Endpoint::Request | Endpoint::Load => "POST, OPTIONS",
            Endpoint::Query => "GET, POST, OPTIONS",
            Endpoint::Status
            | Endpoint::Nodes
            | Endpoint::Readyz
            | Endpoint::Metrics
            | Endpoint::Backup => "GET, OPTIONS",
        }
    }
}

pub(crate) fn router<B: Backend>(backend: Arc<B>, opts: ApiOptions) -> Router {
    let app = Arc::new(App { backend, opts });
    Router::new().fallback(move |req: Request| {
        let app = Arc::clone(&app);
        async move {
            let mut response = match dispatch(&app, req).await {
                Ok(response) => response,
                Err(e) => e.into_response(),
            };
            if let Ok(v) = HeaderValue::from_str(&app.backend.served_by()) {
                response.headers_mut().insert(SERVED_BY_HEADER, v);
            }
            response
        }
    })
}

async fn dispatch<B: Backend>(app: &App<B>, req: Request) -> Result<Response, HttpError> {
    let path = req.uri().path().to_string();
    let Some(endpoint) = Endpoint::from_path(&path) else {
        return Err(HttpError::NotFound { path });
    };
    if req.method() == Method::OPTIONS {
        let mut response = StatusCode::OK.into_response();
        response.headers_mut().insert(
            header::ALLOW,
            HeaderValue::from_static(endpoint.allow_header()),
        );
        return Ok(response);
    }
    if !endpoint.allows(req.method()) {
        return Err(HttpError::MethodNotAllowed {
            method: req.method().clone(),
            path,
            allow: endpoint.allow_header(),
        });
    }
    let credentials = basic_credentials(req.headers());
    if endpoint != Endpoint::Request {
        authorize(app, credentials.as_ref(), endpoint.perm())?;
    }
    let params = QueryParams::from_uri(req.uri())?;
    if params.has("redirect") && endpoint.needs_primary() {
        let path_and_query = req
            .uri()
            .path_and_query()
            .map_or_else(|| "/".to_string(), |p| p.as_str().to_string());
        if let Some(response) = redirect(app, &path_and_query).await {
            return Ok(response);
        }
    }
    match endpoint {
        Endpoint::Execute => execute(app, &params, req).await,
        Endpoint::Query => query(app, &params, req).await,
        Endpoint::Request => request(app, &params, req, credentials.as_ref()).await,
        Endpoint::Status => status(app, &params).await,
        Endpoint::Nodes => nodes(app, &params).await,
        Endpoint::Readyz => readyz(app, &params).await,
        Endpoint::Metrics => metrics(app).await,
        Endpoint::Backup => backup(app, &params).await,
        Endpoint::Load => load(app, &params, req).await,
    }
}

/// With a users file: whether these credentials grant `perm`.
fn authorize<B>(
    app: &App<B>,
    credentials: Option<&(String, String)>,
    perm: Perm,
) -> Result<(), HttpError> {
    let Some(users) = &app.opts.users else {
        return Ok(());
    };
    let credentials = credentials.map(|(u, p)| (u.as_str(), p.as_str()));
    users
        .check(credentials, perm)
        .map_err(|denied| match denied {
            Denied::Unauthenticated => HttpError::Unauthorized,
            Denied::Forbidden { user, perm } => HttpError::Forbidden {
                user,
                perm: perm.name(),
            },
        })
}

/// rqlite's `redirect`: instead of failing, a node that cannot serve answers
/// 301 with a node that can. Any Primary node serves, so this node redirects
/// only when it is not Primary itself and knows the sequencer (the leader).
async fn redirect<B: Backend>(app: &App<B>, path_and_query: &str) -> Option<Response> {
    if app.backend.ready().await.is_ok() {
        return None;
    }
    let nodes = app.backend.nodes().await;
    let target = nodes
        .iter()
        .find(|n| n.leader && !n.api_addr.is_empty() && n.api_addr != app.opts.advertise)?;
    let location = format!("{}{path_and_query}", target.api_addr.trim_end_matches('/'));
    let mut response = StatusCode::MOVED_PERMANENTLY.into_response();
    response
        .headers_mut()
        .insert(header::LOCATION, HeaderValue::from_str(&location).ok()?);
    Some(response)
}

/// `GET /db/backup`: a SQLite file, or with `fmt=sql` a SQL dump; gzipped
/// with `compress`.
async fn backup<B: Backend>(app: &App<B>, params: &QueryParams) -> Result<Response, HttpError> {
    let format = match params.get("fmt") {
        None | Some("") | Some("binary") | Some("sqlite") => BackupFormat::Sqlite,
        Some("sql") => BackupFormat::Sql,
        Some(other) => {
            return Err(bad_request(format!(
                "fmt={other} is not a backup format: use fmt=sql for a SQL dump, or no fmt for a SQLite file"
            )))
        }
    };
    let mut data = app.backend.backup(format).await?;
    let content_type = match format {
        BackupFormat::Sqlite => OCTET_STREAM,
        BackupFormat::Sql => TEXT_CONTENT_TYPE,
    };
    let mut response_headers = HeaderMap::new();
    if params.has("compress") {
        data = gzip(&data).map_err(|e| {
            HttpError::Api(ApiError::Internal(format!("compressing the backup: {e}")))
        })?;
        response_headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(OCTET_STREAM));
    } else {
        response_headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    let mut response = (StatusCode::OK, Body::from(data)).into_response();
    response.headers_mut().extend(response_headers);
    Ok(response)
}

fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data)?;
    encoder.finish()
}

/// Undo a gzip the client applied, within `limit` bytes of output.
fn gunzip(data: &[u8], limit: usize) -> Result<Vec<u8>, HttpError> {
    use std::io::Read;
    let mut out = Vec::new();
    let mut decoder = flate2::read::GzDecoder::new(data).take(limit as u64 + 1);
    decoder.read_to_end(&mut out).map_err(|e| {
        bad_request(format!(
            "the body looks gzipped but does not decompress: {e}"
        ))
    })?;
    if out.len() > limit {
        return Err(HttpError::Api(ApiError::TooLarge(format!(
            "the decompressed body is larger than the limit of {limit} bytes"
        ))));
    }
    Ok(out)
}

/// `POST /db/load`: replace the database with a SQLite file or a SQL dump
/// (gzipped or not), as one write-set that every node applies.
async fn load<B: Backend>(
    app: &App<B>,
    params: &QueryParams,
    req: Request,
) -> Result<Response, HttpError> {
    let (parts, body) = req.into_parts();
    let data = read_body(&parts.headers, body, app.opts.max_body_bytes).await?;
    let data = if data.starts_with(&[0x1f, 0x8b]) {
        bytes::Bytes::from(gunzip(&data, app.opts.max_body_bytes)?)
    } else {
        data
    };
    let resp = app.backend.load(data).await?;
    let envelope = Envelope {
        results: resp.results.iter().map(Slot::Exec).collect(),
        format: format(params),
        time: None,
        sequence_number: None,
        raft_index: resp.seqno.filter(|_| params.has("raft_index")),
    };
    let mut response = json_response(StatusCode::OK, &envelope, params.pretty())?;
    add_seqno(response.headers_mut(), resp.seqno);
    Ok(response)
}

fn format(params: &QueryParams) -> Format {
    Format {
        associative: params.has("associative"),
        blob_array: params.has("blob_array"),
    }
}

/// The statements of a POST body, JSON or (with `text/plain`) bare SQL.
async fn body_statements<B>(app: &App<B>, req: Request) -> Result<Vec<Statement>, HttpError> {
    let (parts, body) = req.into_parts();
    let bytes = read_body(&parts.headers, body, app.opts.max_body_bytes).await?;
    if is_plain_text(&parts.headers) {
        parse_plain_text(&bytes)
    } else {
        parse_statements(&bytes)
    }
}

/// `queue`/`wait` are taken as synchronous writes: the answer comes once the
/// write-set is applied, which is what `wait` asks for and is never less than
/// `queue` promises.
async fn execute<B: Backend>(
    app: &App<B>,
    params: &QueryParams,
    req: Request,
) -> Result<Response, HttpError> {
    let statements = body_statements(app, req).await?;
    run_execute(app, params, statements, Endpoint::Execute).await
}

/// The write path shared by `/db/execute` and a writing `/db/request`.
async fn run_execute<B: Backend>(
    app: &App<B>,
    params: &QueryParams,
    statements: Vec<Statement>,
    endpoint: Endpoint,
) -> Result<Response, HttpError> {
    let start = Instant::now();
    let (statements, groups) = split::expand(statements)?;
    // rqlite's /db/execute runs a SELECT but shows no rows for it; rows of
    // a RETURNING clause it shows everywhere, and a read's on /db/request.
    let sqls: Vec<String> = if endpoint == Endpoint::Execute {
        statements.iter().map(|s| s.sql.clone()).collect()
    } else {
        Vec::new()
    };
    let mut resp = app
        .backend
        .execute(ExecuteRequest {
            statements,
            transaction: params.has("transaction"),
            timings: params.timings(),
        })
        .await?;
    for (i, r) in resp.results.iter_mut().enumerate() {
        if r.rows.is_some() && sqls.get(i).is_some_and(|sql| app.backend.is_read_only(sql)) {
            r.rows = None;
        }
        if !params.timings() {
            r.time = None;
            if let Some(q) = r.rows.as_mut() {
                q.time = None;
            }
        }
    }
    let results = split::collapse(resp.results, &groups);
    // rqlite answers `queue` with a sequence number; here the write has
    // already been applied when it does, and the number is the seqno.
    let queued = endpoint == Endpoint::Execute && params.has("queue");
    let envelope = Envelope {
        results: results.iter().map(Slot::exec).collect(),
        format: format(params),
        time: params.timings().then(|| start.elapsed().as_secs_f64()),
        sequence_number: resp.seqno.filter(|_| queued),
        raft_index: resp.seqno.filter(|_| params.has("raft_index")),
    };
    let mut response = json_response(StatusCode::OK, &envelope, params.pretty())?;
    add_seqno(response.headers_mut(), resp.seqno);
    Ok(response)
}

async fn query<B: Backend>(
    app: &App<B>,
    params: &QueryParams,
    req: Request,
) -> Result<Response, HttpError> {
    let statements = if req.method() == Method::GET {
        match params.get("q") {
            Some(q) => vec![Statement::new(q)],
            None => return Err(bad_request("missing query parameter q")),
        }
    } else {
        body_statements(app, req).await?
    };
    run_query(app, params, statements).await
}

async fn run_query<B: Backend>(
    app: &App<B>,
    params: &QueryParams,
    statements: Vec<Statement>,
) -> Result<Response, HttpError> {
    let start = Instant::now();
    let (statements, groups) = split::expand(statements)?;
    let results = app
        .backend
        .query(QueryRequest {
            statements,
            level: params.level(),
            timings: params.timings(),
        })
        .await?;
    let results = split::collapse(results, &groups);
    let envelope = Envelope {
        results: results.iter().map(Slot::rows).collect(),
        format: format(params),
        time: params.timings().then(|| start.elapsed().as_secs_f64()),
        sequence_number: None,
        raft_index: None,
    };
    json_response(StatusCode::OK, &envelope, params.pretty())
}

/// rqlite's unified endpoint: a body that only reads is served locally like
/// `/db/query`; one write makes the whole body a write-set.
async fn request<B: Backend>(
    app: &App<B>,
    params: &QueryParams,
    req: Request,
    credentials: Option<&(String, String)>,
) -> Result<Response, HttpError> {
    let statements = body_statements(app, req).await?;
    let (expanded, _) = split::expand(statements.clone())?;
    if expanded.iter().all(|s| app.backend.is_read_only(&s.sql)) {
        authorize(app, credentials, Perm::Query)?;
        return run_query(app, params, statements).await;
    }
    authorize(app, credentials, Perm::Execute)?;
    run_execute(app, params, statements, Endpoint::Request).await
}

async fn status<B: Backend>(app: &App<B>, params: &QueryParams) -> Result<Response, HttpError> {
    let mut doc = app.backend.status().await;
    if let Value::Object(map) = &mut doc {
        // rqlite reports its HTTP service under "http"; fill in what only
        // this layer knows without overriding what the node reported.
        let http = map
            .entry("http")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Value::Object(http) = http {
            http.entry("addr")
                .or_insert_with(|| Value::String(app.opts.advertise.clone()));
            let auth = if app.opts.users.is_some() {
                "enabled"
            } else {
                "disabled"
            };
            http.entry("auth")
                .or_insert_with(|| Value::String(auth.to_string()));
        }
    }
    let doc = match params.get("key") {
        Some(key) if !key.is_empty() => sub_document(doc, key),
        _ => doc,
    };
    json_response(StatusCode::OK, &doc, params.pretty())
}

/// rqlite's `key=a.b`: the sub-document at that path, `{}` when it is
/// missing, or the first non-object met on the way.
fn sub_document(mut doc: Value, key: &str) -> Value {
    for part in key.split('.') {
        doc = match doc {
            Value::Object(mut map) => match map.remove(part) {
                Some(v) => v,
                None => return Value::Object(Default::default()),
            },
            other => return other,
        };
    }
    doc
}

/// A member as rqlite's `/nodes` prints it (Go field order, `omitempty` on
/// the strings).
#[derive(serde::Serialize)]
struct NodeOut<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    id: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    api_addr: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    addr: &'a str,
    voter: bool,
    reachable: bool,
    leader: bool,
    // quorate's additions (rqlite clients ignore unknown fields).
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<crate::status::MemberRole>,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<crate::status::MemberState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_committed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    behind: Option<i64>,
}

impl<'a> From<&'a NodeDescription> for NodeOut<'a> {
    fn from(n: &'a NodeDescription) -> Self {
        NodeOut {
            id: &n.id,
            api_addr: &n.api_addr,
            addr: &n.addr,
            voter: n.voter,
            reachable: n.reachable,
            leader: n.leader,
            role: n.member.as_ref().map(|m| m.role),
            state: n.member.as_ref().map(|m| m.state),
            last_committed: n.member.as_ref().and_then(|m| m.last_committed),
            behind: n.member.as_ref().and_then(|m| m.behind),
        }
    }
}

async fn nodes<B: Backend>(app: &App<B>, params: &QueryParams) -> Result<Response, HttpError> {
    let mut nodes = app.backend.nodes().await;
    if !params.has("nonvoters") {
        nodes.retain(|n| n.voter);
    }
    nodes.sort_by(|a, b| a.id.cmp(&b.id));
    let out: Vec<NodeOut> = nodes.iter().map(NodeOut::from).collect();
    if params.get("ver") == Some("2") {
        json_response(
            StatusCode::OK,
            &serde_json::json!({ "nodes": out }),
            params.pretty(),
        )
    } else {
        let keyed: std::collections::BTreeMap<&str, &NodeOut> =
            out.iter().map(|n| (n.id, n)).collect();
        json_response(StatusCode::OK, &keyed, params.pretty())
    }
}

/// rqlite's probe text: one `[+]` line per check, the failing one last.
async fn readyz<B: Backend>(app: &App<B>, params: &QueryParams) -> Result<Response, HttpError> {
    let mut text = String::from("[+]node ok");
    if params.has("noleader") {
        return Ok(text_response(StatusCode::OK, text));
    }
    if let Err(reason) = app.backend.ready().await {
        text.push_str("\n[+]");
        text.push_str(&reason);
        return Ok(text_response(StatusCode::SERVICE_UNAVAILABLE, text));
    }
    text.push_str("\n[+]leader ok\n[+]store ok");
    let probe = app
        .backend
        .query(QueryRequest {
            statements: vec![Statement::new("SELECT 1")],
            level: ReadLevel::None,
            timings: false,
        })
        .await;
    match probe {
        Ok(results) if select_one_succeeded(&results) => {
            text.push_str("\n[+]db ok");
            Ok(text_response(StatusCode::OK, text))
        }
        Ok(results) => {
            let why = results
                .first()
                .and_then(|r| r.error.clone())
                .unwrap_or_else(|| "unexpected result of SELECT 1".to_string());
            text.push_str(&format!("\n[+]db not ok: {why}"));
            Ok(text_response(StatusCode::SERVICE_UNAVAILABLE, text))
        }
        Err(e) => {
            text.push_str(&format!("\n[+]db not ok: {e}"));
            Ok(text_response(StatusCode::SERVICE_UNAVAILABLE, text))
        }
    }
}

fn select_one_succeeded(results: &[crate::sql::QueryResult]) -> bool {
    matches!(
        results,
        [r] if r.error.is_none() && r.rows == [vec![crate::sql::SqlValue::Integer(1)]]
    )
}

async fn metrics<B: Backend>(app: &App<B>) -> Result<Response, HttpError> {
    let body = app.backend.metrics().await;
    let mut response = (StatusCode::OK, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(PROMETHEUS_CONTENT_TYPE),
    );
    Ok(response)
}

fn json_response(
    status: StatusCode,
    value: &impl serde::Serialize,
    pretty: bool,
) -> Result<Response, HttpError> {
    let body = to_json(value, pretty)
        .map_err(|e| HttpError::Api(ApiError::Internal(format!("encoding response: {e}"))))?;
    let mut response = (status, Body::from(body)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(JSON_CONTENT_TYPE),
    );
    Ok(response)
}

fn text_response(status: StatusCode, text: String) -> Response {
    let mut response = (status, text).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(TEXT_CONTENT_TYPE),
    );
    response
}

fn add_seqno(headers: &mut HeaderMap, seqno: Option<i64>) {
    if let Some(n) = seqno {
        headers.insert(SEQNO_HEADER, HeaderValue::from(n));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::testing::{send, spawn_server, FakeBackend, Reply, TestServer};
    use crate::sql::{Params, QueryResult, SqlValue};
    use serde_json::json;

    async fn server() -> TestServer {
        spawn_server(FakeBackend::new(), ApiOptions::default()).await
    }

    async fn post(s: &TestServer, path: &str, body: &str) -> Reply {
        send(
            s.addr,
            Method::POST,
            path,
            Some("application/json"),
            body.to_string(),
        )
        .await
    }

    async fn get(s: &TestServer, path: &str) -> Reply {
        send(s.addr, Method::GET, path, None, "").await
    }

    #[tokio::test]
    async fn execute_returns_results_and_seqno_header() {
        let s = server().await;
        let r = post(
            &s,
            "/db/execute?transaction",
            r#"["INSERT INTO t(name) VALUES('a')", ["INSERT INTO t(name) VALUES(?)", "b"]]"#,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(
            r.body,
            r#"{"results":[{"last_insert_id":1,"rows_affected":1},{"last_insert_id":2,"rows_affected":1}]}"#
        );
        assert_eq!(r.headers[SEQNO_HEADER], "1");
        assert_eq!(r.headers[header::CONTENT_TYPE], JSON_CONTENT_TYPE);
        let seen = s.backend.executes.lock().unwrap();
        assert!(seen[0].transaction);
        assert!(!seen[0].timings);
        assert_eq!(
            seen[0].statements[1].params,
            Params::Positional(vec![SqlValue::Text("b".into())])
        );
    }

    #[tokio::test]
    async fn statement_errors_are_200_and_no_seqno_when_nothing_changed() {
        let s = server().await;
        let r = post(&s, "/db/execute", r#"["BAD_SQL"]"#).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(
            r.body,
            r#"{"results":[{"error":"near \"BAD_SQL\": syntax error"}]}"#
        );
        assert!(r.headers.get(SEQNO_HEADER).is_none());
    }

    #[tokio::test]
    async fn execute_extras_timings_queue_raft_index_associative() {
        let s = server().await;
        let r = post(
            &s,
            "/db/execute?timings&queue&raft_index&associative&redirect&timeout=5s",
            r#"["INSERT INTO t VALUES(1)"]"#,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let v = r.json();
        assert_eq!(v["results"][0]["rows_affected"], 1);
        assert_eq!(v["results"][0]["time"], 0.0005);
        assert!(v["results"][0]["rows"].is_null());
        assert!(v["results"][0].as_object().unwrap().contains_key("rows"));
        assert!(v["time"].as_f64().unwrap() > 0.0);
        assert_eq!(v["sequence_number"], 1);
        assert_eq!(v["raft_index"], 1);
        assert!(s.backend.executes.lock().unwrap()[0].timings);
    }

    #[tokio::test]
    async fn whole_request_errors_map_to_status_and_code() {
        let s = server().await;
        for (sql, status, code) in [
            ("CONFLICT", 409, "certification_failed"),
            ("NOT_PRIMARY", 503, "not_primary"),
            ("UNKNOWN_OUTCOME", 504, "outcome_unknown"),
        ] {
            let r = post(&s, "/db/execute", &format!("[\"{sql}\"]")).await;
            assert_eq!(r.status.as_u16(), status, "{sql}: {}", r.body);
            assert_eq!(r.json()["code"], code);
            assert!(r.json()["error"].as_str().unwrap().len() > 5);
        }
    }

    #[tokio::test]
    async fn malformed_json_is_400_with_position() {
        let s = server().await;
        let r = post(&s, "/db/execute", "[\"SELECT 1\",\n  ]").await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        let v = r.json();
        assert_eq!(v["code"], "bad_request");
        let msg = v["error"].as_str().unwrap();
        assert!(msg.contains("line 2 column 3"), "{msg}");

        let r = post(
            &s,
            "/db/execute",
            r#"[["INSERT INTO t VALUES(?)", {"a": [1, "x"]}]]"#,
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        let msg = r.json()["error"].as_str().unwrap().to_string();
        assert!(msg.starts_with("statement 1: parameter \"a\""), "{msg}");
        assert_eq!(s.backend.execute_count(), 0);
    }

    #[tokio::test]
    async fn body_over_limit_is_413() {
        let opts = ApiOptions {
            max_body_bytes: 64,
            ..ApiOptions::default()
        };
        let s = spawn_server(FakeBackend::new(), opts).await;
        let big = format!("[\"{}\"]", "x".repeat(100));
        let r = post(&s, "/db/execute", &big).await;
        assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(r.json()["code"], "too_large");
        let r = post(&s, "/db/execute", r#"["INSERT INTO t VALUES(1)"]"#).await;
        assert_eq!(r.status, StatusCode::OK);
    }

    #[tokio::test]
    async fn unknown_path_is_404_and_wrong_method_is_405() {
        let s = server().await;
        let r = get(&s, "/db/nope").await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        assert_eq!(r.json()["code"], "not_found");
        let r = get(&s, "/db/execute").await;
        assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(r.json()["code"], "method_not_allowed");
        assert_eq!(r.headers[header::ALLOW], "POST, OPTIONS");
        let r = post(&s, "/status", "").await;
        assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
        let r = send(s.addr, Method::OPTIONS, "/db/query", None, "").await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.headers[header::ALLOW], "GET, POST, OPTIONS");
    }

    #[tokio::test]
    async fn bad_query_params_are_400() {
        let s = server().await;
        let r = get(&s, "/db/query?q=SELECT+1&timeout=forever").await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_eq!(r.json()["error"], "timeout is not a valid duration");
        let r = get(&s, "/db/query").await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn query_get_and_post_with_level_and_encodings() {
        let s = server().await;
        s.backend.query_results.lock().unwrap().insert(
            "SELECT * FROM t".into(),
            QueryResult {
                columns: vec!["id".into(), "ok".into(), "data".into()],
                types: vec!["integer".into(), "boolean".into(), "blob".into()],
                rows: vec![vec![
                    SqlValue::Integer(1),
                    SqlValue::Integer(1),
                    SqlValue::Blob(vec![104, 105]),
                ]],
                error: None,
                time: None,
            },
        );
        let r = get(&s, "/db/query?q=SELECT%20*%20FROM%20t&level=linearizable").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(
            r.body,
            r#"{"results":[{"columns":["id","ok","data"],"types":["integer","boolean","blob"],"values":[[1,true,"aGk="]]}]}"#
        );
        assert_eq!(
            s.backend.queries.lock().unwrap()[0].level,
            ReadLevel::Linearizable
        );

        let r = post(
            &s,
            "/db/query?associative&blob_array&level=none",
            r#"["SELECT * FROM t"]"#,
        )
        .await;
        assert_eq!(
            r.body,
            r#"{"results":[{"types":{"data":"blob","id":"integer","ok":"boolean"},"rows":[{"data":[104,105],"id":1,"ok":true}]}]}"#
        );
        assert_eq!(s.backend.queries.lock().unwrap()[1].level, ReadLevel::None);

        let r = send(
            s.addr,
            Method::POST,
            "/db/query",
            Some("text/plain"),
            "SELECT * FROM t",
        )
        .await;
        assert_eq!(r.json()["results"][0]["values"], json!([[1, true, "aGk="]]));
    }

    #[tokio::test]
    async fn query_errors_are_whole_request_errors() {
        let s = server().await;
        let r = get(&s, "/db/query?q=NOT_PRIMARY").await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.json()["code"], "not_primary");
    }

    #[tokio::test]
    async fn pretty_indents_four_spaces() {
        let s = server().await;
        let r = get(&s, "/db/query?q=SELECT+1&pretty").await;
        assert!(
            r.body.starts_with("{\n    \"results\": [\n        {\n"),
            "{}",
            r.body
        );
        assert_eq!(r.json()["results"][0]["types"], json!(["integer"]));
    }

    #[tokio::test]
    async fn request_routes_by_read_only() {
        let s = server().await;
        let r = post(&s, "/db/request", r#"["SELECT 1", ["SELECT ?", 2]]"#).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.json()["results"][0]["values"], json!([[1]]));
        assert_eq!(s.backend.execute_count(), 0);
        assert_eq!(s.backend.queries.lock().unwrap().len(), 1);

        let r = post(
            &s,
            "/db/request?transaction",
            r#"["SELECT 1", "INSERT INTO t VALUES(1)"]"#,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(
            r.body,
            r#"{"results":[{"last_insert_id":1,"rows_affected":1},{"last_insert_id":2,"rows_affected":1}]}"#
        );
        assert_eq!(r.headers[SEQNO_HEADER], "1");
        let seen = s.backend.executes.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert!(seen[0].transaction);
    }

    #[tokio::test]
    async fn status_adds_http_addr_and_supports_key() {
        let opts = ApiOptions {
            advertise: "http://10.0.0.1:4001".into(),
            ..ApiOptions::default()
        };
        let s = spawn_server(FakeBackend::new(), opts).await;
        let r = get(&s, "/status").await;
        assert_eq!(r.status, StatusCode::OK);
        let v = r.json();
        assert_eq!(v["http"]["addr"], "http://10.0.0.1:4001");
        assert_eq!(v["http"]["bind_addr"], "x");
        assert_eq!(v["node"]["name"], "fake");
        let r = get(&s, "/status?key=node.name").await;
        assert_eq!(r.body, r#""fake""#);
        let r = get(&s, "/status?key=nope").await;
        assert_eq!(r.body, "{}");
        let r = get(&s, "/status?pretty").await;
        assert!(r.body.starts_with("{\n    \""), "{}", r.body);
    }

    #[tokio::test]
    async fn nodes_legacy_and_v2() {
        let s = server().await;
        let node = |id: &str, voter: bool| NodeDescription {
            id: id.into(),
            api_addr: format!("http://{id}:4001"),
            addr: format!("{id}:4567"),
            reachable: true,
            leader: id == "b",
            voter,
            member: None,
        };
        *s.backend.nodes.lock().unwrap() = vec![node("c", false), node("b", true), node("a", true)];
        let r = get(&s, "/nodes").await;
        assert_eq!(
            r.body,
            concat!(
                r#"{"a":{"id":"a","api_addr":"http://a:4001","addr":"a:4567","voter":true,"reachable":true,"leader":false},"#,
                r#""b":{"id":"b","api_addr":"http://b:4001","addr":"b:4567","voter":true,"reachable":true,"leader":true}}"#
            )
        );
        let r = get(&s, "/nodes?ver=2&nonvoters").await;
        let v = r.json();
        let ids: Vec<&str> = v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["a", "b", "c"]);
        assert_eq!(v["nodes"][2]["voter"], false);
    }

    #[tokio::test]
    async fn readyz_texts() {
        let s = server().await;
        let r = get(&s, "/readyz").await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.body, "[+]node ok\n[+]leader ok\n[+]store ok\n[+]db ok");
        assert_eq!(r.headers[header::CONTENT_TYPE], TEXT_CONTENT_TYPE);

        *s.backend.ready.lock().unwrap() = Err("not part of the primary component".into());
        let r = get(&s, "/readyz").await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.body, "[+]node ok\n[+]not part of the primary component");
        let r = get(&s, "/readyz?noleader").await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.body, "[+]node ok");

        *s.backend.ready.lock().unwrap() = Ok(());
        s.backend.query_results.lock().unwrap().insert(
            "SELECT 1".into(),
            QueryResult {
                error: Some("disk I/O error".into()),
                ..Default::default()
            },
        );
        let r = get(&s, "/readyz").await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            r.body.ends_with("[+]db not ok: disk I/O error"),
            "{}",
            r.body
        );
    }

    #[tokio::test]
    async fn metrics_is_prometheus_text() {
        let s = server().await;
        let r = get(&s, "/metrics").await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.headers[header::CONTENT_TYPE], PROMETHEUS_CONTENT_TYPE);
        assert!(r.body.contains("quorate_up 1"));
    }

    #[tokio::test]
    async fn backup_formats_and_compression() {
        let s = server().await;
        let r = get(&s, "/db/backup").await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.headers[header::CONTENT_TYPE], OCTET_STREAM);
        assert!(r.body.starts_with("SQLite format 3"));
        let r = get(&s, "/db/backup?fmt=sql").await;
        assert_eq!(r.headers[header::CONTENT_TYPE], TEXT_CONTENT_TYPE);
        assert!(r.body.starts_with("PRAGMA foreign_keys=OFF;\n"));
        let r = get(&s, "/db/backup?fmt=csv").await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert!(r.json()["error"].as_str().unwrap().contains("fmt=sql"));

        let client: hyper_util::client::legacy::Client<_, http_body_util::Full<bytes::Bytes>> =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http();
        let response = client
            .get(
                format!("http://{}/db/backup?fmt=sql&compress", s.addr)
                    .parse()
                    .unwrap(),
            )
            .await
            .unwrap();
        use http_body_util::BodyExt;
        let gz = response.into_body().collect().await.unwrap().to_bytes();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz[..]), &mut text)
            .unwrap();
        assert!(text.starts_with("PRAGMA foreign_keys=OFF;"), "{text}");
    }

    #[tokio::test]
    async fn load_takes_plain_or_gzipped_bodies() {
        let s = server().await;
        let r = send(
            s.addr,
            Method::POST,
            "/db/load?raft_index",
            Some("text/plain"),
            "CREATE TABLE t(id INTEGER PRIMARY KEY);",
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.json()["results"], json!([]));
        assert_eq!(r.json()["raft_index"], 1);
        assert_eq!(r.headers[SEQNO_HEADER], "1");
        let gz = gzip(b"SQL TEXT").unwrap();
        let r = send(s.addr, Method::POST, "/db/load", Some(OCTET_STREAM), gz).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let loads = s.backend.loads.lock().unwrap().clone();
        assert_eq!(loads[1], "SQL TEXT");
        let r = send(
            s.addr,
            Method::POST,
            "/db/load",
            Some(OCTET_STREAM),
            vec![0x1f, 0x8b, 1, 2],
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert!(r.json()["error"]
            .as_str()
            .unwrap()
            .contains("does not decompress"));
        let r = send(s.addr, Method::POST, "/db/load", Some("text/plain"), "BAD").await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_eq!(r.json()["error"], "cannot load: bad");
        let r = get(&s, "/db/load").await;
        assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    }

    #[tokio::test]
    async fn every_answer_names_the_node_that_served_it() {
        let s = server().await;
        for r in [
            get(&s, "/status").await,
            get(&s, "/nope").await,
            post(&s, "/db/execute", "[\"INSERT\"]").await,
        ] {
            assert_eq!(r.headers[SERVED_BY_HEADER], "127.0.0.1:4567");
        }
    }

    #[tokio::test]
    async fn redirect_sends_a_client_to_the_leader_only_when_this_node_cannot_serve() {
        let opts = ApiOptions {
            advertise: "http://10.0.0.1:4001".into(),
            ..ApiOptions::default()
        };
        let s = spawn_server(FakeBackend::new(), opts).await;
        *s.backend.nodes.lock().unwrap() = vec![NodeDescription {
            id: "b".into(),
            api_addr: "http://10.0.0.2:4001".into(),
            addr: "10.0.0.2:4567".into(),
            reachable: true,
            leader: true,
            voter: true,
            member: None,
        }];
        // A Primary node serves the request itself: any node takes writes.
        let r = get(&s, "/db/query?q=SELECT+1&redirect").await;
        assert_eq!(r.status, StatusCode::OK);
        *s.backend.ready.lock().unwrap() = Err("not part of the primary component".into());
        let r = get(&s, "/db/query?q=SELECT+1&redirect").await;
        assert_eq!(r.status, StatusCode::MOVED_PERMANENTLY);
        assert_eq!(
            r.headers[header::LOCATION],
            "http://10.0.0.2:4001/db/query?q=SELECT+1&redirect"
        );
        // Without `redirect` the client hears why this node cannot serve.
        let r = get(&s, "/db/query?q=NOT_PRIMARY").await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        // No leader known: nothing to redirect to.
        s.backend.nodes.lock().unwrap()[0].leader = false;
        let r = get(&s, "/db/query?q=NOT_PRIMARY&redirect").await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[tokio::test]
    async fn several_statements_in_one_string_answer_once() {
        let s = server().await;
        let r = post(
            &s,
            "/db/execute",
            r#"["INSERT INTO t VALUES(1); INSERT INTO t VALUES(2)", "INSERT INTO t VALUES(3)"]"#,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(
            r.body,
            r#"{"results":[{"last_insert_id":2,"rows_affected":1},{"last_insert_id":3,"rows_affected":1}]}"#
        );
        assert_eq!(s.backend.executes.lock().unwrap()[0].statements.len(), 3);
        let r = post(&s, "/db/query", r#"["SELECT 1; SELECT 2"]"#).await;
        assert_eq!(r.json()["results"][0]["values"], json!([["SELECT 2"]]));
    }

    #[tokio::test]
    async fn users_file_gates_each_endpoint_by_permission() {
        let users = crate::api::auth::Users::parse(
            r#"[{"username": "reader", "password": "r", "perms": ["query"]},
                {"username": "writer", "password": "w", "perms": ["execute", "query"]},
                {"username": "*", "perms": ["ready"]}]"#,
        )
        .unwrap();
        let opts = ApiOptions {
            users: Some(Arc::new(users)),
            ..ApiOptions::default()
        };
        let s = spawn_server(FakeBackend::new(), opts).await;
        let with = |user: &str, password: &str| {
            use base64::Engine;
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            )
        };
        let call =
            |method: Method, path: &'static str, auth: Option<String>, body: &'static str| {
                let addr = s.addr;
                async move {
                    let client: hyper_util::client::legacy::Client<
                        _,
                        http_body_util::Full<bytes::Bytes>,
                    > = hyper_util::client::legacy::Client::builder(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .build_http();
                    let mut b = hyper::Request::builder()
                        .method(method)
                        .uri(format!("http://{addr}{path}"))
                        .header("content-type", "application/json");
                    if let Some(a) = auth {
                        b = b.header("authorization", a);
                    }
                    let r = client
                        .request(
                            b.body(http_body_util::Full::new(bytes::Bytes::from(body)))
                                .unwrap(),
                        )
                        .await
                        .unwrap();
                    (r.status(), r.headers().clone())
                }
            };
        // Everybody may ask /readyz; nobody anonymous may read.
        assert_eq!(
            call(Method::GET, "/readyz", None, "").await.0,
            StatusCode::OK
        );
        let (status, headers) = call(Method::GET, "/db/query?q=SELECT+1", None, "").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(headers[header::WWW_AUTHENTICATE], "Basic realm=\"rqlite\"");
        let q = "/db/query?q=SELECT+1";
        assert_eq!(
            call(Method::GET, q, Some(with("reader", "r")), "").await.0,
            StatusCode::OK
        );
        assert_eq!(
            call(Method::GET, q, Some(with("reader", "x")), "").await.0,
            StatusCode::UNAUTHORIZED
        );
        let w = r#"["INSERT INTO t VALUES(1)"]"#;
        assert_eq!(
            call(Method::POST, "/db/execute", Some(with("reader", "r")), w)
                .await
                .0,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            call(Method::POST, "/db/execute", Some(with("writer", "w")), w)
                .await
                .0,
            StatusCode::OK
        );
        // /db/request needs what its body does.
        assert_eq!(
            call(
                Method::POST,
                "/db/request",
                Some(with("reader", "r")),
                r#"["SELECT 1"]"#
            )
            .await
            .0,
            StatusCode::OK
        );
        assert_eq!(
            call(Method::POST, "/db/request", Some(with("reader", "r")), w)
                .await
                .0,
            StatusCode::FORBIDDEN
        );
        for path in ["/status", "/nodes", "/metrics", "/db/backup"] {
            assert_eq!(
                call(Method::GET, path, Some(with("writer", "w")), "")
                    .await
                    .0,
                StatusCode::FORBIDDEN,
                "{path}"
            );
        }
        assert_eq!(
            call(Method::POST, "/db/load", Some(with("writer", "w")), "x")
                .await
                .0,
            StatusCode::FORBIDDEN
        );
        assert_eq!(s.backend.execute_count(), 1);
    }

    #[tokio::test]
    async fn shutdown_future_stops_the_server() {
        let s = server().await;
        let addr = s.addr;
        assert_eq!(get(&s, "/metrics").await.status, StatusCode::OK);
        drop(s);
        let mut refused = false;
        for _ in 0..50 {
            if tokio::net::TcpStream::connect(addr).await.is_err() {
                refused = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(refused, "server still accepting after shutdown");
    }
}
