//! Several `;`-separated statements in one SQL string, as rqlite's Go
//! driver runs them: each in turn, the string's result being its last
//! statement's (or the first error).
//!
//! The string is cut where SQLite's own tokenizer (`sqlite3_complete`) says a
//! statement ends, so semicolons inside quotes, comments and trigger bodies
//! stay where they are.

use std::ffi::CString;

use super::error::{bad_request, HttpError};
use crate::sql::{ExecResult, Params, QueryResult, Statement};

/// Whether `sql` ends with a complete SQL statement.
fn is_complete(sql: &str) -> bool {
    let Ok(text) = CString::new(sql) else {
        return false;
    };
    // SAFETY: sqlite3_complete only reads the NUL-terminated string it is
    // given, which lives until the call returns.
    unsafe { rusqlite::ffi::sqlite3_complete(text.as_ptr()) != 0 }
}

/// The statements in `sql`, each with its `;`; text after the last complete
/// statement is one more statement unless it is blank or only comments.
fn split_sql(sql: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, _) in sql.match_indices(';') {
        let candidate = &sql[start..=i];
        if is_complete(candidate) {
            // `;` after nothing but blanks and comments is no statement.
            if !is_blank(&candidate[..candidate.len() - 1]) {
                out.push(candidate.trim());
            }
            start = i + 1;
        }
    }
    let rest = &sql[start..];
    if !is_blank(rest) {
        out.push(rest.trim());
    }
    out
}

/// Only blanks and `--` or `/* */` comments. Used on text that SQLite's
/// tokenizer has already cut, so no quote can hide a comment marker.
fn is_blank(text: &str) -> bool {
    let mut rest = text;
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            return true;
        }
        if let Some(r) = rest.strip_prefix("--") {
            rest = r.find('\n').map_or("", |i| &r[i..]);
        } else if let Some(r) = rest.strip_prefix("/*") {
            rest = r.find("*/").map_or("", |i| &r[i + 2..]);
        } else {
            return false;
        }
    }
}

/// How many statements of the expanded list each original statement became.
pub(crate) type Groups = Vec<usize>;

/// Expand strings holding several statements into one statement each. A
/// string with several statements may not carry parameters: which parameter
/// belongs to which statement would be a guess.
pub(crate) fn expand(statements: Vec<Statement>) -> Result<(Vec<Statement>, Groups), HttpError> {
    let mut out = Vec::with_capacity(statements.len());
    let mut groups = Vec::with_capacity(statements.len());
    for (n, st) in statements.into_iter().enumerate() {
        let parts = split_sql(&st.sql);
        if parts.len() <= 1 {
            out.push(st);
            groups.push(1);
            continue;
        }
        if st.params != Params::None {
            return Err(bad_request(format!(
                "statement {}: holds {} statements separated by ';' and also parameters; \
                 send each statement as an element of its own with its parameters",
                n + 1,
                parts.len()
            )));
        }
        groups.push(parts.len());
        out.extend(parts.into_iter().map(Statement::new));
    }
    Ok((out, groups))
}

/// A per-statement result that may be an error.
pub(crate) trait StatementResult {
    fn is_error(&self) -> bool;
}

impl StatementResult for ExecResult {
    fn is_error(&self) -> bool {
        self.error.is_some()
    }
}

impl StatementResult for QueryResult {
    fn is_error(&self) -> bool {
        self.error.is_some()
    }
}

/// One result per original statement: its first error, else its last
/// statement's result. Results missing at the end (a transaction stopped at
/// an error) stay missing.
pub(crate) fn collapse<R: StatementResult>(results: Vec<R>, groups: &Groups) -> Vec<R> {
    if groups.iter().all(|&g| g == 1) {
        return results;
    }
    let mut out = Vec::with_capacity(groups.len());
    let mut results = results.into_iter();
    for &size in groups {
        let mut chosen: Option<R> = None;
        for _ in 0..size {
            let Some(r) = results.next() else {
                break;
            };
            if chosen.as_ref().is_some_and(StatementResult::is_error) {
                continue;
            }
            chosen = Some(r);
        }
        match chosen {
            Some(r) => out.push(r),
            None => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_where_sqlite_says_statements_end() {
        assert_eq!(split_sql("SELECT 1"), ["SELECT 1"]);
        assert_eq!(split_sql("SELECT 1;"), ["SELECT 1;"]);
        assert_eq!(
            split_sql("CREATE TABLE a(x); INSERT INTO a VALUES ('x;y'); SELECT 2"),
            [
                "CREATE TABLE a(x);",
                "INSERT INTO a VALUES ('x;y');",
                "SELECT 2"
            ]
        );
        assert_eq!(
            split_sql("CREATE TRIGGER t AFTER INSERT ON a BEGIN DELETE FROM b; DELETE FROM c; END; SELECT 1; -- done"),
            [
                "CREATE TRIGGER t AFTER INSERT ON a BEGIN DELETE FROM b; DELETE FROM c; END;",
                "SELECT 1;"
            ]
        );
        assert_eq!(
            split_sql("SELECT 1 /* ; */; ; -- x;\n SELECT \"a;b\""),
            ["SELECT 1 /* ; */;", "-- x;\n SELECT \"a;b\""]
        );
    }

    #[test]
    fn several_statements_become_one_result() {
        let (stmts, groups) = expand(vec![
            Statement::new("INSERT INTO a VALUES (1); INSERT INTO a VALUES (2)"),
            Statement::new("SELECT 3"),
        ])
        .unwrap();
        assert_eq!(stmts.len(), 3);
        assert_eq!(groups, [2, 1]);
        let r = |id: i64, error: Option<&str>| ExecResult {
            last_insert_id: id,
            error: error.map(String::from),
            ..Default::default()
        };
        let out = collapse(vec![r(1, None), r(2, None), r(3, None)], &groups);
        assert_eq!(out, [r(2, None), r(3, None)]);
        let out = collapse(vec![r(1, Some("boom")), r(2, None), r(3, None)], &groups);
        assert_eq!(out, [r(1, Some("boom")), r(3, None)]);
        // A transaction stopped at the first error: nothing after it.
        let out = collapse(vec![r(1, Some("boom"))], &groups);
        assert_eq!(out, [r(1, Some("boom"))]);
    }

    #[test]
    fn parameters_with_several_statements_are_refused() {
        let err = expand(vec![Statement {
            sql: "SELECT ?; SELECT ?".into(),
            params: Params::Positional(vec![crate::sql::SqlValue::Integer(1)]),
        }])
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("statement 1: holds 2 statements"),
            "{err}"
        );
    }
}
