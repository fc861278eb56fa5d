//! The client write and read paths (DESIGN.md §2) behind the HTTP API.

use std::sync::atomic::Ordering;

use super::Node;
use crate::api::dump::{self, DumpError};
use crate::api::{
    ApiError, Backend, BackupFormat, ExecuteRequest, ExecuteResponse, NodeDescription,
    QueryRequest, ReadLevel,
};
use crate::order::SubmitError;
use crate::sql::{ExecResult, QueryResult, SqlValue};
use crate::writeset::{Verdict, WriteSet};

/// Galera's wording, so operators recognise it, plus what to do.
const NOT_PRIMARY: &str =
    "WSREP has not yet prepared node for application use: this node is not part of \
the primary component (see `quorate --show-cluster-status`)";

/// What an arbitrator answers to every data request (with 503).
const ARBITRATOR: &str = "this node is an arbitrator: it votes in the cluster but holds no \
database and serves no clients; send requests to a data node (`quorate --show-cluster-status` \
lists their API addresses as wsrep_incoming_addresses)";

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::Internal(e.to_string())
}

impl Node {
    async fn execute_once(&self, req: &ExecuteRequest) -> Result<Attempt, ApiError> {
        // A small request is a short local transaction: run it here when
        // the writer is free (a hop to the blocking pool and back cost as
        // much as the capture itself); anything else on the blocking pool.
        let inline = if is_small(&req.statements) {
            self.store.try_capture(&req.statements, req.transaction)
        } else {
            None
        };
        let captured = match inline {
            Some(captured) => captured,
            None => {
                let store = self.store.clone();
                let stmts = req.statements.clone();
                let transaction = req.transaction;
                tokio::task::spawn_blocking(move || store.capture(&stmts, transaction))
                    .await
                    .map_err(internal)?
            }
        };
        let captured = captured.map_err(|e| match e {
            crate::store::StoreError::Refused(msg) => ApiError::BadRequest(msg),
            other => ApiError::Internal(other.to_string()),
        })?;
        let Some(ws) = captured.writeset else {
            return Ok(Attempt::Done(ExecuteResponse {
                results: captured.results,
                seqno: None,
            }));
        };
        let writeset = WriteSet {
            origin: self.config.node_name.clone(),
            trx_id: self.next_trx.fetch_add(1, Ordering::Relaxed),
            snapshot_seqno: ws.snapshot_seqno,
            keys: ws.keys,
            payload: ws.payload,
        };
        self.counters
            .replicated_writesets
            .fetch_add(1, Ordering::Relaxed);
        self.counters
            .replicated_bytes
            .fetch_add(writeset.payload_len() as u64, Ordering::Relaxed);
        let outcome = self
            .seq
            .submit(writeset, self.config.commit_timeout())
            .await
            .map_err(|e| match e {
                SubmitError::NotPrimary(m) => ApiError::NotPrimary(format!("{NOT_PRIMARY}; {m}")),
                SubmitError::Unknown(m) => {
                    self.counters
                        .outcome_unknown
                        .fetch_add(1, Ordering::Relaxed);
                    ApiError::OutcomeUnknown(m)
                }
            })?;
        match outcome.verdict {
            Verdict::Committed { toi_results } => Ok(Attempt::Done(ExecuteResponse {
                results: match toi_results {
                    // Replayed statements report what they did where they
                    // were applied; the time and any rows returned are the
                    // local execution's.
                    Some(mut results) => {
                        for (r, local) in results.iter_mut().zip(captured.results) {
                            r.time = r.time.or(local.time);
                            r.rows = local.rows;
                        }
                        results
                    }
                    None => captured.results,
                },
                seqno: Some(outcome.seqno),
            })),
            Verdict::Failed(reason) if reason.is_certification_failure() => Ok(
                Attempt::CertificationFailed(format!("seqno {}: {reason}", outcome.seqno)),
            ),
            Verdict::Failed(reason) => {
                let message = reason.to_string();
                let results = req
                    .statements
                    .iter()
                    .map(|_| ExecResult {
                        error: Some(message.clone()),
                        ..Default::default()
                    })
                    .collect();
                Ok(Attempt::Done(ExecuteResponse {
                    results,
                    seqno: Some(outcome.seqno),
                }))
            }
        }
    }
}

impl Node {
    /// The refusal of a node outside the primary component; on a storage
    /// fault it says what failed and what to do.
    fn not_primary_text(&self) -> String {
        match self.seq.storage_fault() {
            Some(fault) => format!("{NOT_PRIMARY}; {fault}"),
            None => NOT_PRIMARY.to_string(),
        }
    }

    /// `503 not_primary` outside the primary component.
    fn refuse_unless_primary(&self) -> Result<(), ApiError> {
        if !self.is_primary() {
            return Err(ApiError::NotPrimary(self.not_primary_text()));
        }
        Ok(())
    }

    fn refuse_if_arbitrator(&self) -> Result<(), ApiError> {
        if self.is_arbitrator() {
            return Err(ApiError::NotPrimary(ARBITRATOR.into()));
        }
        Ok(())
    }

    /// Wait until this node has applied every write-set committed in the
    /// cluster before now (Galera's `wsrep_sync_wait`), so what it runs next
    /// sees them: a client that spreads its requests over the nodes (as
    /// rqlite clients do) reads its own writes and builds on them.
    ///
    /// `Err` when the node is not Primary when asked. Best effort
    /// otherwise: while the sequencer cannot be asked (a leader change), the
    /// node goes on with what it has after at most `primary_timeout_ms`, as
    /// it would without the wait; a write is still certified, so staleness
    /// costs at worst a retryable conflict.
    async fn sync_wait(&self) -> Result<(), ApiError> {
        self.refuse_unless_primary()?;
        self.counters.sync_waits.fetch_add(1, Ordering::Relaxed);
        match tokio::time::timeout(self.primary_timeout(), self.seq.causal_barrier()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!("sync wait skipped: {e}"),
            Err(_) => tracing::debug!("sync wait skipped: the sequencer did not answer in time"),
        }
        // Not asked again: a write goes on to the order, which waits out an
        // election by itself (and reports an outcome it cannot know as such).
        Ok(())
    }

    /// Client objects of the live database, as `(type, name)`.
    async fn client_objects(&self) -> Result<Vec<(String, String)>, ApiError> {
        let store = self.store.clone();
        let listing = crate::sql::Statement::new(
            "SELECT type, name FROM sqlite_schema WHERE type IN ('table', 'view') \
             AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'",
        );
        let results = tokio::task::spawn_blocking(move || store.query(&[listing], false))
            .await
            .map_err(internal)?
            .map_err(internal)?;
        let result = results
            .into_iter()
            .next()
            .ok_or_else(|| internal("listing the schema returned nothing"))?;
        if let Some(e) = result.error {
            return Err(internal(format!("listing the schema: {e}")));
        }
        Ok(result
            .rows
            .into_iter()
            .filter_map(|row| match row.as_slice() {
                [SqlValue::Text(kind), SqlValue::Text(name)] => Some((kind.clone(), name.clone())),
                _ => None,
            })
            .collect())
    }
}

/// A scratch file beside nothing else of the node's, removed when dropped.
struct ScratchFile(std::path::PathBuf);

impl ScratchFile {
    fn new(what: &str) -> ScratchFile {
        ScratchFile(std::env::temp_dir().join(format!(
            "quorate-{what}-{}-{}.sqlite",
            std::process::id(),
            uuid::Uuid::new_v4()
        )))
    }
}

impl Drop for ScratchFile {
    fn drop(&mut self) {
        for suffix in ["", "-journal", "-wal", "-shm"] {
            let mut path = self.0.clone().into_os_string();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }
}

fn dump_error(e: DumpError) -> ApiError {
    match e {
        DumpError::Invalid(m) => ApiError::BadRequest(format!("cannot load: {m}")),
        other => ApiError::Internal(other.to_string()),
    }
}

/// Few statements of little text: a capture that takes well under a
/// millisecond unless one statement touches many rows.
fn is_small(statements: &[crate::sql::Statement]) -> bool {
    const STATEMENTS: usize = 8;
    const SQL_BYTES: usize = 16 * 1024;
    statements.len() <= STATEMENTS
        && statements.iter().map(|s| s.sql.len()).sum::<usize>() <= SQL_BYTES
}

enum Attempt {
    Done(ExecuteResponse),
    CertificationFailed(String),
}

impl Backend for Node {
    async fn execute(&self, req: ExecuteRequest) -> Result<ExecuteResponse, ApiError> {
        self.refuse_if_arbitrator()?;
        if self.sync_wait_writes.load(Ordering::Relaxed) {
            self.sync_wait().await?;
        } else {
            self.refuse_unless_primary()?;
        }
        // Galera's wsrep_retry_autocommit: only a lone statement is retried,
        // a multi-statement transaction goes back to the client.
        let retries = if req.statements.len() == 1 {
            self.config.replication.retry_autocommit
        } else {
            0
        };
        let started = std::time::Instant::now();
        let mut attempt = 0;
        loop {
            match self.execute_once(&req).await? {
                Attempt::Done(resp) => {
                    if resp.seqno.is_some() {
                        self.counters.commits.fetch_add(1, Ordering::Relaxed);
                        self.counters.commit_latency.observe(started.elapsed());
                    }
                    return Ok(resp);
                }
                Attempt::CertificationFailed(msg) if attempt >= retries => {
                    return Err(ApiError::CertificationFailed(format!(
                        "{msg} (tried {} time{})",
                        attempt + 1,
                        if attempt == 0 { "" } else { "s" }
                    )));
                }
                Attempt::CertificationFailed(msg) => {
                    tracing::debug!("certification failed, retrying autocommit: {msg}");
                    attempt += 1;
                }
            }
        }
    }

    async fn query(&self, req: QueryRequest) -> Result<Vec<QueryResult>, ApiError> {
        self.refuse_if_arbitrator()?;
        match req.level {
            ReadLevel::None => {}
            // rqlite's weak read is served by the leader, which has applied
            // every acknowledged write; here any node serves it, so it
            // waits for the cluster's committed position first.
            ReadLevel::Weak => self.sync_wait().await?,
            ReadLevel::Linearizable | ReadLevel::Strong => {
                self.refuse_unless_primary()?;
                self.seq
                    .linearizable_barrier()
                    .await
                    .map_err(|e| ApiError::NotPrimary(e.to_string()))?;
            }
        }
        let store = self.store.clone();
        let timings = req.timings;
        tokio::task::spawn_blocking(move || store.query(&req.statements, timings))
            .await
            .map_err(internal)?
            .map_err(internal)
    }

    async fn backup(&self, format: BackupFormat) -> Result<Vec<u8>, ApiError> {
        // Like rqlite's backup from the leader: everything committed before
        // the request is in it.
        self.refuse_if_arbitrator()?;
        self.sync_wait().await?;
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            let copy = ScratchFile::new("backup");
            store.snapshot_into(&copy.0).map_err(internal)?;
            dump::strip_internal(&copy.0).map_err(internal)?;
            match format {
                BackupFormat::Sqlite => std::fs::read(&copy.0)
                    .map_err(|e| internal(format!("reading {}: {e}", copy.0.display()))),
                BackupFormat::Sql => dump::sql_dump(&copy.0).map_err(internal),
            }
        })
        .await
        .map_err(internal)?
    }

    async fn load(&self, data: bytes::Bytes) -> Result<ExecuteResponse, ApiError> {
        self.refuse_if_arbitrator()?;
        self.sync_wait().await?;
        let existing = self.client_objects().await?;
        let statements = tokio::task::spawn_blocking(move || {
            let scratch = ScratchFile::new("load");
            let conn = dump::open_upload(&data, &scratch.0).map_err(dump_error)?;
            dump::restore_statements(&conn, &existing).map_err(dump_error)
        })
        .await
        .map_err(internal)??;
        let n = statements.len();
        // One write-set: the whole restore commits on every node or nowhere.
        let resp = self
            .execute(ExecuteRequest {
                statements,
                transaction: true,
                timings: false,
            })
            .await
            .map_err(|e| match e {
                ApiError::BadRequest(m) => ApiError::BadRequest(format!("cannot load: {m}")),
                other => other,
            })?;
        if let Some((i, e)) = resp
            .results
            .iter()
            .enumerate()
            .find_map(|(i, r)| r.error.as_ref().map(|e| (i, e)))
        {
            return Err(ApiError::BadRequest(format!(
                "cannot load: statement {} of {n} of the restore failed, nothing was loaded: {e}",
                i + 1
            )));
        }
        Ok(ExecuteResponse {
            results: Vec::new(),
            seqno: resp.seqno,
        })
    }

    fn served_by(&self) -> String {
        self.config.advertise_addr().to_string()
    }

    async fn metrics(&self) -> String {
        self.render_metrics()
    }

    fn is_read_only(&self, sql: &str) -> bool {
        // A statement that does not even prepare is sent down the write
        // path, where the client gets SQLite's error for it.
        self.store.is_read_only(sql).unwrap_or(false)
    }

    async fn status(&self) -> serde_json::Value {
        self.status_document()
    }

    async fn nodes(&self) -> Vec<NodeDescription> {
        use crate::status::{MemberRole, MemberState};
        let rows = self.members_view().await;
        // `/nodes` is keyed by name: a member's old self (a removed node
        // that rejoined as a new member) would hide it.
        let current: std::collections::HashSet<String> = rows
            .iter()
            .filter(|r| r.state != MemberState::Left)
            .map(|r| r.name.clone())
            .collect();
        rows.into_iter()
            .filter(|r| r.state != MemberState::Left || !current.contains(&r.name))
            .map(|row| NodeDescription {
                id: row.name.clone(),
                api_addr: row.api_addr.clone(),
                addr: row.repl_addr.clone(),
                reachable: matches!(row.state, MemberState::Alive | MemberState::Joining),
                leader: row.leader,
                // A node that left votes no more; rqlite lists it with the non-voters.
                voter: row.state != MemberState::Left && row.role != MemberRole::Learner,
                member: Some(row),
            })
            .collect()
    }

    async fn ready(&self) -> Result<(), String> {
        // Not ready for clients ever, so no load balancer sends it any.
        if self.is_arbitrator() {
            return Err(format!(
                "{ARBITRATOR}; it is {} the primary component",
                if self.is_primary() { "in" } else { "not in" }
            ));
        }
        if self.is_primary() {
            Ok(())
        } else {
            Err(self.not_primary_text())
        }
    }
}
