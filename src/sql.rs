//! SQL values, statements and per-statement results shared by the client API,
//! the store and the write-set (DDL travels as statements).

use serde::{Deserialize, Serialize};

/// One SQLite value as it crosses process boundaries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SqlValue {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

/// Parameters of one statement: none, positional (`?`) or named (`:name`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub enum Params {
    #[default]
    None,
    Positional(Vec<SqlValue>),
    /// Names as the client gave them, without the leading `:`/`@`/`$`.
    Named(Vec<(String, SqlValue)>),
}

/// One SQL statement with its parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Statement {
    pub sql: String,
    #[serde(default)]
    pub params: Params,
}

impl Statement {
    pub fn new(sql: impl Into<String>) -> Self {
        Statement {
            sql: sql.into(),
            params: Params::None,
        }
    }
}

/// Result of one statement of an execute request (rqlite's `results[i]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExecResult {
    pub rows_affected: i64,
    pub last_insert_id: i64,
    /// Statement-level error (rqlite reports these with HTTP 200).
    pub error: Option<String>,
    /// Seconds spent, when timings were asked for.
    pub time: Option<f64>,
    /// The rows of a statement that returns rows (a SELECT in a mixed
    /// request, a RETURNING clause), as the origin saw them. Local to the
    /// origin: never replicated.
    #[serde(skip)]
    pub rows: Option<QueryResult>,
}

/// Result of one query statement (rqlite's `results[i]` for `/db/query`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct QueryResult {
    pub columns: Vec<String>,
    /// Declared column types, lower-cased as SQLite reports them ("" when none).
    pub types: Vec<String>,
    pub rows: Vec<Vec<SqlValue>>,
    pub error: Option<String>,
    pub time: Option<f64>,
}
