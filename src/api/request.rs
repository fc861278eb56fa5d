//! Request bodies: reading them within the size limit and turning rqlite's
//! JSON statement arrays into [`Statement`]s.

use axum::body::Body;
use axum::http::{header, HeaderMap};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::Value;

use super::error::{bad_request, HttpError};
use super::ApiError;
use crate::sql::{Params, SqlValue, Statement};

/// Past the limit, bodies up to this size are read to the end before the
/// refusal; larger ones are refused at once.
const DRAIN_MAX_BYTES: u64 = 8 << 20;

/// Read the whole body, refusing it once it exceeds `limit` bytes.
pub(crate) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<bytes::Bytes, HttpError> {
    let too_large = || {
        HttpError::Api(ApiError::TooLarge(format!(
            "request body is larger than the limit of {limit} bytes"
        )))
    };
    // Refuse early what the client announced, so it need not send it all.
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = announced.filter(|n| *n > limit as u64) {
        // A body of modest size is read and dropped first: a connection
        // closed with unread data is reset by the kernel, and the client
        // would see a broken pipe instead of this answer.
        if n <= DRAIN_MAX_BYTES {
            let mut body = body;
            while let Some(Ok(_)) = body.frame().await {}
        }
        return Err(too_large());
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Err(e) => Err(bad_request(format!("reading request body: {e}"))),
    }
}

/// Whether the body is one bare SQL statement rather than JSON (rqlite
/// accepts `Content-Type: text/plain` for that).
pub(crate) fn is_plain_text(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain"))
}

/// The statements of a request whose body is a single SQL text.
pub(crate) fn parse_plain_text(body: &[u8]) -> Result<Vec<Statement>, HttpError> {
    let sql = std::str::from_utf8(body)
        .map_err(|e| bad_request(format!("request body is not UTF-8: {e}")))?;
    if sql.trim().is_empty() {
        return Err(bad_request("no statements"));
    }
    Ok(vec![Statement::new(sql)])
}

/// Parse a JSON statement array: `["SQL", ["SQL", p1, p2], ["SQL", {"n": v}]]`.
pub(crate) fn parse_statements(body: &[u8]) -> Result<Vec<Statement>, HttpError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| bad_request(format!("invalid JSON body: {e}")))?;
    let Value::Array(elements) = value else {
        return Err(bad_request(format!(
            "request body must be a JSON array of statements, not {}",
            kind(&value)
        )));
    };
    if elements.is_empty() {
        return Err(bad_request("no statements"));
    }
    elements
        .into_iter()
        .enumerate()
        .map(|(i, element)| parse_statement(i + 1, element))
        .collect()
}

/// `n` counts from 1 so that messages match what a person sees in the body.
fn parse_statement(n: usize, element: Value) -> Result<Statement, HttpError> {
    let items = match element {
        Value::String(sql) => return Ok(Statement::new(sql)),
        Value::Array(items) => items,
        other => {
            return Err(bad_request(format!(
                "statement {n}: must be a SQL string or an array [sql, params...], not {}",
                kind(&other)
            )))
        }
    };
    let mut items = items.into_iter();
    let sql = match items.next() {
        Some(Value::String(sql)) => sql,
        Some(other) => {
            return Err(bad_request(format!(
                "statement {n}: first element must be the SQL string, not {}",
                kind(&other)
            )))
        }
        None => return Err(bad_request(format!("statement {n}: empty array"))),
    };
    let mut positional = Vec::new();
    let mut named = Vec::new();
    for (i, item) in items.enumerate() {
        let p = i + 1;
        match item {
            Value::Object(map) => {
                for (name, v) in map {
                    let value = to_sql_value(v).map_err(|what| {
                        bad_request(format!("statement {n}: parameter {name:?}: {what}"))
                    })?;
                    named.push((strip_sigil(name), value));
                }
            }
            v => {
                let value = to_sql_value(v)
                    .map_err(|what| bad_request(format!("statement {n}: parameter {p}: {what}")))?;
                positional.push(value);
            }
        }
    }
    let params = match (positional.is_empty(), named.is_empty()) {
        (true, true) => Params::None,
        (false, true) => Params::Positional(positional),
        (true, false) => Params::Named(named),
        (false, false) => {
            return Err(bad_request(format!(
                "statement {n}: mixes positional and named parameters"
            )))
        }
    };
    Ok(Statement { sql, params })
}

/// Names travel without their SQLite prefix (see [`Params::Named`]).
fn strip_sigil(name: String) -> String {
    match name.strip_prefix([':', '@', '$']) {
        Some(stripped) => stripped.to_string(),
        None => name,
    }
}

/// Convert one JSON parameter as rqlite does; `Err` says what is wrong.
fn to_sql_value(v: Value) -> Result<SqlValue, String> {
    Ok(match v {
        Value::Null => SqlValue::Null,
        Value::Bool(b) => SqlValue::Integer(i64::from(b)),
        Value::Number(n) => match n.as_i64() {
            Some(i) => SqlValue::Integer(i),
            None => match n.as_f64() {
                Some(f) => SqlValue::Real(f),
                None => return Err(format!("invalid number {n}")),
            },
        },
        Value::String(s) => match parse_blob_literal(&s) {
            Some(bytes) => SqlValue::Blob(bytes),
            None => SqlValue::Text(s),
        },
        Value::Array(items) => SqlValue::Blob(
            items
                .iter()
                .map(|item| {
                    item.as_u64()
                        .and_then(|b| u8::try_from(b).ok())
                        .ok_or_else(|| {
                            format!("unsupported type: blob array element {item} is not a byte (0..=255)")
                        })
                })
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(_) => return Err("unsupported type: object".to_string()),
    })
}

/// rqlite binds a string that is a SQLite blob literal (`X'0AFF'`) as a BLOB.
fn parse_blob_literal(s: &str) -> Option<Vec<u8>> {
    let t = s.trim();
    let rest = t.strip_prefix(['x', 'X'])?;
    let hex = rest.strip_prefix('\'')?.strip_suffix('\'')?;
    if hex.len() % 2 != 0 {
        return None;
    }
    hex.as_bytes()
        .chunks(2)
        .map(|pair| {
            let digits = std::str::from_utf8(pair).ok()?;
            u8::from_str_radix(digits, 16).ok()
        })
        .collect()
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<Vec<Statement>, String> {
        parse_statements(body.as_bytes()).map_err(|e| e.to_string())
    }

    #[test]
    fn plain_strings_are_statements_without_params() {
        let stmts = parse(r#"["CREATE TABLE t(id INTEGER PRIMARY KEY)", "SELECT 1"]"#).unwrap();
        assert_eq!(
            stmts,
            vec![
                Statement::new("CREATE TABLE t(id INTEGER PRIMARY KEY)"),
                Statement::new("SELECT 1"),
            ]
        );
    }

    #[test]
    fn positional_parameters_keep_their_types() {
        let stmts = parse(
            r#"[["INSERT INTO t VALUES(?,?,?,?,?,?,?,?,?)", 1, -7, 1.5, 2.0, "x", null, true, false, 18446744073709551615]]"#,
        )
        .unwrap();
        assert_eq!(
            stmts[0].params,
            Params::Positional(vec![
                SqlValue::Integer(1),
                SqlValue::Integer(-7),
                SqlValue::Real(1.5),
                SqlValue::Real(2.0),
                SqlValue::Text("x".into()),
                SqlValue::Null,
                SqlValue::Integer(1),
                SqlValue::Integer(0),
                SqlValue::Real(18446744073709551615.0),
            ])
        );
    }

    #[test]
    fn named_parameters_lose_their_sigil() {
        let stmts = parse(r#"[["SELECT :a, :b", {"a": 1, ":b": "two"}]]"#).unwrap();
        let Params::Named(mut named) = stmts[0].params.clone() else {
            panic!("not named: {:?}", stmts[0].params);
        };
        named.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(
            named,
            vec![
                ("a".to_string(), SqlValue::Integer(1)),
                ("b".to_string(), SqlValue::Text("two".into())),
            ]
        );
    }

    #[test]
    fn blobs_from_byte_arrays_and_hex_literals() {
        let stmts =
            parse(r#"[["INSERT INTO t VALUES(?,?,?)", [0, 1, 255], "X'0aFF'", "x''"]]"#).unwrap();
        assert_eq!(
            stmts[0].params,
            Params::Positional(vec![
                SqlValue::Blob(vec![0, 1, 255]),
                SqlValue::Blob(vec![0x0a, 0xff]),
                SqlValue::Blob(vec![]),
            ])
        );
        // Not a well-formed literal: stays text.
        let stmts = parse(r#"[["SELECT ?", "X'0G'"]]"#).unwrap();
        assert_eq!(
            stmts[0].params,
            Params::Positional(vec![SqlValue::Text("X'0G'".into())])
        );
    }

    #[test]
    fn sql_only_array_has_no_params() {
        assert_eq!(
            parse(r#"[["SELECT 1"]]"#).unwrap(),
            vec![Statement::new("SELECT 1")]
        );
    }

    #[test]
    fn malformed_bodies_say_what_and_where() {
        let err = parse("[\"SELECT 1\",\n  ]").unwrap_err();
        assert!(err.starts_with("invalid JSON body: "), "{err}");
        assert!(err.contains("line 2 column 3"), "{err}");

        for (body, want) in [
            ("{}", "request body must be a JSON array of statements, not an object"),
            ("[]", "no statements"),
            ("[1]", "statement 1: must be a SQL string or an array [sql, params...], not a number"),
            (r#"["ok", []]"#, "statement 2: empty array"),
            (r#"["ok", [1]]"#, "statement 2: first element must be the SQL string, not a number"),
            (r#"[["SELECT ?", {"x": 1}, 2]]"#, "statement 1: mixes positional and named parameters"),
            (r#"[["SELECT ?", [1, 256]]]"#, "statement 1: parameter 1: unsupported type: blob array element 256 is not a byte (0..=255)"),
            (r#"[["SELECT ?", 1, {"a": {"b": 1}}]]"#, "statement 1: parameter \"a\": unsupported type: object"),
        ] {
            assert_eq!(parse(body).unwrap_err(), want, "{body}");
        }
    }

    #[tokio::test]
    async fn body_limit_holds_without_content_length() {
        let headers = HeaderMap::new();
        let err = read_body(&headers, Body::from(vec![b'x'; 100]), 10)
            .await
            .unwrap_err();
        assert!(
            matches!(err, HttpError::Api(ApiError::TooLarge(_))),
            "{err}"
        );
        let ok = read_body(&headers, Body::from("[\"SELECT 1\"]"), 100)
            .await
            .unwrap();
        assert_eq!(&ok[..], b"[\"SELECT 1\"]");
        let mut announced = HeaderMap::new();
        announced.insert(header::CONTENT_LENGTH, 1_000.into());
        assert!(read_body(&announced, Body::empty(), 10).await.is_err());
    }

    #[test]
    fn plain_text_body_is_one_statement() {
        assert_eq!(
            parse_plain_text(b"SELECT 1; SELECT 2").unwrap(),
            vec![Statement::new("SELECT 1; SELECT 2")]
        );
        assert!(parse_plain_text(b"  ").is_err());
        assert!(parse_plain_text(&[0xff]).is_err());
    }
}
