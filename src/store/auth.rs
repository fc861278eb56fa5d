//! The authorizer: what a client statement may do, and what it touches.
//!
//! SQLite calls the authorizer while it compiles a statement. For client
//! statements it both enforces the policy (deny what cannot be replicated or
//! would escape the transaction) and records what capture needs to know:
//! the tables written, whether there is a schema change, which functions
//! are called. Our own statements run in `Mode::Internal`: allowed, not
//! recorded.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::Connection;

use crate::sql::{Params, SqlValue};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Capture and apply connections.
    Writer,
    /// `query_only` readers.
    Reader,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Internal,
    /// A client statement compiles.
    Client,
    /// A client statement runs: it may compile SQLite's own statements too
    /// (the session reads `PRAGMA table_xinfo` when a table first changes).
    ClientStep,
}

/// What the authorizer saw while one statement compiled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct StmtInfo {
    /// Tables of the main database written, ASCII lower-cased.
    pub writes: BTreeSet<String>,
    /// A schema change, described for messages ("CREATE TABLE t").
    pub ddl: Option<String>,
    /// Functions called, lower-cased.
    pub functions: BTreeSet<String>,
    /// An INSERT is among the writes.
    pub inserts: bool,
    /// A SELECT is part of it (e.g. CREATE TABLE ... AS SELECT).
    pub selects: bool,
    /// Anything at all was reported (a compile happened).
    pub seen: bool,
}

impl StmtInfo {
    pub fn merge(&mut self, other: &StmtInfo) {
        self.writes.extend(other.writes.iter().cloned());
        if self.ddl.is_none() {
            self.ddl.clone_from(&other.ddl);
        }
        self.functions.extend(other.functions.iter().cloned());
        self.inserts |= other.inserts;
        self.selects |= other.selects;
        self.seen |= other.seen;
    }
}

pub(crate) struct AuthState {
    role: Role,
    mode: Mode,
    log: StmtInfo,
    /// Why the last denied action was denied (SQLite itself only says
    /// "not authorized").
    denied: Option<String>,
}

pub(crate) type AuthHandle = Arc<Mutex<AuthState>>;

/// Install the authorizer on `conn`; it starts in `Mode::Internal`.
pub(crate) fn install(conn: &mut Connection, role: Role) -> rusqlite::Result<AuthHandle> {
    let handle: AuthHandle = Arc::new(Mutex::new(AuthState {
        role,
        mode: Mode::Internal,
        log: StmtInfo::default(),
        denied: None,
    }));
    let shared = Arc::clone(&handle);
    conn.authorizer(Some(move |ctx: AuthContext<'_>| {
        let mut st = lock(&shared);
        if st.mode == Mode::Internal {
            return Authorization::Allow;
        }
        st.log.seen = true;
        let stepping = st.mode == Mode::ClientStep;
        let verdict = match st.role {
            Role::Writer if stepping && is_session_pragma(&ctx) => Ok(()),
            Role::Writer => writer_policy(&ctx, &mut st.log),
            Role::Reader => reader_policy(&ctx),
        };
        match verdict {
            Ok(()) => Authorization::Allow,
            Err(reason) => {
                if st.denied.is_none() {
                    st.denied = Some(reason);
                }
                Authorization::Deny
            }
        }
    }))?;
    Ok(handle)
}

fn lock(h: &AuthHandle) -> MutexGuard<'_, AuthState> {
    // The state is plain data rewritten at every statement: a panic while
    // it was held leaves nothing inconsistent worth refusing service for.
    h.lock().unwrap_or_else(|p| p.into_inner())
}

/// Client mode for as long as the scope lives, with a fresh log.
pub(crate) struct ClientScope<'a> {
    handle: &'a AuthHandle,
}

impl<'a> ClientScope<'a> {
    pub fn begin(handle: &'a AuthHandle) -> Self {
        Self::enter(handle, Mode::Client)
    }

    /// For running a prepared client statement.
    pub fn stepping(handle: &'a AuthHandle) -> Self {
        Self::enter(handle, Mode::ClientStep)
    }

    fn enter(handle: &'a AuthHandle, mode: Mode) -> Self {
        let mut st = lock(handle);
        st.mode = mode;
        st.log = StmtInfo::default();
        st.denied = None;
        ClientScope { handle }
    }

    /// What was recorded so far, and why something was denied, if it was.
    pub fn take(&self) -> (StmtInfo, Option<String>) {
        let mut st = lock(self.handle);
        (std::mem::take(&mut st.log), st.denied.take())
    }
}

impl Drop for ClientScope<'_> {
    fn drop(&mut self) {
        lock(self.handle).mode = Mode::Internal;
    }
}

const INTERNAL_PREFIX: &str = "_quorate_";

fn is_session_pragma(ctx: &AuthContext<'_>) -> bool {
    matches!(ctx.action, AuthAction::Pragma { pragma_name, .. } if pragma_name.eq_ignore_ascii_case("table_xinfo"))
}

pub(crate) fn is_internal(name: &str) -> bool {
    let (name, prefix) = (name.as_bytes(), INTERNAL_PREFIX.as_bytes());
    name.len() >= prefix.len() && name[..prefix.len()].eq_ignore_ascii_case(prefix)
}

fn internal_refusal(name: &str) -> String {
    format!("table {name} is internal to quorate and cannot be changed by clients")
}

fn writer_policy(ctx: &AuthContext<'_>, log: &mut StmtInfo) -> Result<(), String> {
    let main = ctx
        .database_name
        .is_none_or(|d| d.eq_ignore_ascii_case("main"));
    let ddl = |log: &mut StmtInfo, what: &str, table: &str| {
        if is_internal(table) {
            return Err(internal_refusal(table));
        }
        if log.ddl.is_none() {
            log.ddl = Some(format!("{what} {table}"));
        }
        Ok(())
    };
    match ctx.action {
        AuthAction::Insert { table_name }
        | AuthAction::Delete { table_name }
        | AuthAction::Update { table_name, .. } => {
            if is_internal(table_name) {
                return Err(internal_refusal(table_name));
            }
            if main {
                log.writes.insert(table_name.to_ascii_lowercase());
                log.inserts |= matches!(ctx.action, AuthAction::Insert { .. });
            }
            Ok(())
        }
        AuthAction::CreateTable { table_name } => ddl(log, "CREATE TABLE", table_name),
        AuthAction::CreateIndex { table_name, .. } => ddl(log, "CREATE INDEX ON", table_name),
        AuthAction::CreateTrigger { table_name, .. } => ddl(log, "CREATE TRIGGER ON", table_name),
        AuthAction::CreateView { view_name } => ddl(log, "CREATE VIEW", view_name),
        AuthAction::DropTable { table_name } => ddl(log, "DROP TABLE", table_name),
        AuthAction::DropIndex { table_name, .. } => ddl(log, "DROP INDEX ON", table_name),
        AuthAction::DropTrigger { table_name, .. } => ddl(log, "DROP TRIGGER ON", table_name),
        AuthAction::DropView { view_name } => ddl(log, "DROP VIEW", view_name),
        AuthAction::AlterTable { table_name, .. } => ddl(log, "ALTER TABLE", table_name),
        AuthAction::Reindex { index_name } => ddl(log, "REINDEX", index_name),
        AuthAction::Analyze { table_name } => ddl(log, "ANALYZE", table_name),
        // Temporary objects live in this connection only and are rolled
        // back with the capture: local scratch space, not a schema change.
        AuthAction::CreateTempTable { .. }
        | AuthAction::CreateTempIndex { .. }
        | AuthAction::CreateTempTrigger { .. }
        | AuthAction::CreateTempView { .. }
        | AuthAction::DropTempTable { .. }
        | AuthAction::DropTempIndex { .. }
        | AuthAction::DropTempTrigger { .. }
        | AuthAction::DropTempView { .. } => Ok(()),
        AuthAction::CreateVtable { table_name, .. } | AuthAction::DropVtable { table_name, .. } => Err(format!(
            "virtual table {table_name}: quorate cannot replicate virtual tables (their changes are not captured)"
        )),
        AuthAction::Attach { .. } | AuthAction::Detach { .. } => {
            Err("ATTACH and DETACH are not allowed: quorate replicates exactly one database".to_string())
        }
        AuthAction::Pragma { pragma_name, .. } => Err(format!(
            "PRAGMA {pragma_name} is not allowed in an execute request: settings are not replicated; run read-only pragmas as a query"
        )),
        AuthAction::Transaction { .. } | AuthAction::Savepoint { .. } => Err(
            "transaction control statements (BEGIN, COMMIT, ROLLBACK, SAVEPOINT, RELEASE) are not allowed: \
             each request is its own transaction; ask for transaction=true to make its statements all-or-nothing"
                .to_string(),
        ),
        AuthAction::Select => {
            log.selects = true;
            Ok(())
        }
        AuthAction::Function { function_name } => {
            if function_name.eq_ignore_ascii_case("load_extension") {
                return Err("load_extension() is not allowed".to_string());
            }
            log.functions.insert(function_name.to_ascii_lowercase());
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Pragmas that only read and take an argument (a table or index name, a
/// limit).
const READ_PRAGMAS_WITH_ARG: &[&str] = &[
    "table_info",
    "table_xinfo",
    "table_list",
    "index_list",
    "index_info",
    "index_xinfo",
    "foreign_key_list",
    "foreign_key_check",
    "integrity_check",
    "quick_check",
];

/// Pragmas that act even without a value.
const ACTING_PRAGMAS: &[&str] = &[
    "optimize",
    "shrink_memory",
    "wal_checkpoint",
    "incremental_vacuum",
    "analysis_limit",
];

fn reader_policy(ctx: &AuthContext<'_>) -> Result<(), String> {
    match ctx.action {
        AuthAction::Attach { .. } | AuthAction::Detach { .. } => {
            Err("ATTACH and DETACH are not allowed".to_string())
        }
        AuthAction::Transaction { .. } | AuthAction::Savepoint { .. } => Err(
            "transaction control statements are not allowed in a query; each query request reads one snapshot".to_string(),
        ),
        AuthAction::Pragma { pragma_name, pragma_value } => {
            let name = pragma_name.to_ascii_lowercase();
            let reads = READ_PRAGMAS_WITH_ARG.contains(&name.as_str())
                || (pragma_value.is_none() && !ACTING_PRAGMAS.contains(&name.as_str()));
            if reads {
                Ok(())
            } else {
                Err(format!("PRAGMA {pragma_name} with a value changes settings and is not allowed in a query"))
            }
        }
        AuthAction::Function { function_name } if function_name.eq_ignore_ascii_case("load_extension") => {
            Err("load_extension() is not allowed".to_string())
        }
        _ => Ok(()),
    }
}

/// Functions whose result differs between nodes or runs, whatever the
/// arguments.
const ALWAYS_NONDETERMINISTIC: &[&str] = &[
    "random",
    "randomblob",
    "changes",
    "total_changes",
    "last_insert_rowid",
    "sqlite_version",
    "sqlite_source_id",
    "sqlite_compileoption_get",
    "sqlite_compileoption_used",
    "current_time",
    "current_date",
    "current_timestamp",
];

/// Date and time functions: non-deterministic when they read the clock,
/// i.e. with 'now' or without a time value.
const DATE_TIME: &[&str] = &[
    "date",
    "time",
    "datetime",
    "julianday",
    "unixepoch",
    "strftime",
    "timediff",
];

/// The non-deterministic calls of a statement, as `name()` strings. The
/// authorizer gives names, not arguments, so for the date and time functions
/// the SQL text and the parameters are examined, erring on the side of
/// refusal.
pub(crate) fn nondeterministic_calls(info: &StmtInfo, sql: &str, params: &Params) -> Vec<String> {
    let mut found = Vec::new();
    // A plain CREATE TABLE reports the functions of its column defaults, but
    // does not call them: they run at each INSERT (see the schema's
    // `nondeterministic_default`).
    if !info.selects
        && info
            .ddl
            .as_deref()
            .is_some_and(|d| d.starts_with("CREATE TABLE"))
    {
        return found;
    }
    let lower = sql.to_ascii_lowercase();
    let param_is_now =
        |v: &SqlValue| matches!(v, SqlValue::Text(t) if t.trim().eq_ignore_ascii_case("now"));
    let now_param = match params {
        Params::None => false,
        Params::Positional(v) => v.iter().any(param_is_now),
        Params::Named(v) => v.iter().any(|(_, v)| param_is_now(v)),
    };
    for f in &info.functions {
        if ALWAYS_NONDETERMINISTIC.contains(&f.as_str()) {
            found.push(format!("{f}()"));
        } else if DATE_TIME.contains(&f.as_str()) {
            let reads_clock = now_param
                || lower.contains("now")
                || call_arg_counts(&lower, f).is_none_or(|counts| {
                    counts
                        .iter()
                        .any(|&n| n == 0 || (f == "strftime" && n == 1))
                });
            if reads_clock {
                found.push(format!("{f}() with 'now'"));
            }
        }
    }
    found
}

/// Argument counts of every call of `name` in `sql` (lower-cased). `None`
/// when the text cannot be followed (then assume the worst).
fn call_arg_counts(sql: &str, name: &str) -> Option<Vec<usize>> {
    let bytes = sql.as_bytes();
    let mut counts = Vec::new();
    let mut from = 0;
    while let Some(pos) = sql[from..].find(name) {
        let start = from + pos;
        let end = start + name.len();
        from = end;
        let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
        if start > 0 && ident(bytes[start - 1]) {
            continue;
        }
        let mut i = end;
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= bytes.len() || bytes[i] != b'(' {
            continue;
        }
        counts.push(count_args(bytes, i + 1)?);
    }
    Some(counts)
}

/// Count the top-level arguments of a call whose `(` is just before `i`.
fn count_args(bytes: &[u8], mut i: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut commas = 0usize;
    let mut any = false;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'\'' | b'"' | b'`' => {
                any = true;
                i += 1;
                loop {
                    if i >= bytes.len() {
                        return None;
                    }
                    if bytes[i] == b {
                        if i + 1 < bytes.len() && bytes[i + 1] == b {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
            }
            b'(' => {
                any = true;
                depth += 1;
            }
            b')' if depth == 0 => return Some(if any { commas + 1 } else { 0 }),
            b')' => depth -= 1,
            b',' if depth == 0 => commas += 1,
            _ if b.is_ascii_whitespace() => {}
            _ => any = true,
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(fs: &[&str]) -> StmtInfo {
        StmtInfo {
            functions: fs.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn date_functions_are_nondeterministic_only_when_reading_the_clock() {
        let none = Params::None;
        let cases: &[(&str, &[&str], bool)] = &[
            ("SELECT date('2024-01-01')", &["date"], false),
            ("SELECT date('now')", &["date"], true),
            ("SELECT date( 'NOW', '+1 day')", &["date"], true),
            ("SELECT date()", &["date"], true),
            ("SELECT date( )", &["date"], true),
            ("SELECT strftime('%s')", &["strftime"], true),
            ("SELECT strftime('%s', '2024-01-01')", &["strftime"], false),
            ("SELECT strftime('%s,(', x)", &["strftime"], false),
            ("SELECT update_date(x), date(x, ')')", &["date"], false),
            ("SELECT random()", &["random"], true),
            ("SELECT abs(1)", &["abs"], false),
            ("SELECT date('2024", &["date"], true),
        ];
        for (sql, fs, want) in cases {
            let got = !nondeterministic_calls(&info(fs), sql, &none).is_empty();
            assert_eq!(got, *want, "{sql}");
        }
        let now = Params::Positional(vec![SqlValue::Text(" Now".into())]);
        assert!(!nondeterministic_calls(&info(&["date"]), "SELECT date(?)", &now).is_empty());
        let not_now = Params::Positional(vec![SqlValue::Text("2024-01-01".into())]);
        assert!(nondeterministic_calls(&info(&["date"]), "SELECT date(?)", &not_now).is_empty());
    }

    #[test]
    fn internal_names_match_case_insensitively() {
        assert!(is_internal("_quorate_meta"));
        assert!(is_internal("_QUORATE_cert"));
        assert!(!is_internal("_quorate"));
        assert!(!is_internal("quorate_meta"));
        assert!(!is_internal("é"));
    }
}
