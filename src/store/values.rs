//! Conversions between `SqlValue` and SQLite values, and parameter binding.

use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use rusqlite::Statement as SqliteStatement;

use crate::certify::KeyValue;
use crate::sql::{Params, SqlValue};

pub(crate) fn to_value_ref(v: &SqlValue) -> ValueRef<'_> {
    match v {
        SqlValue::Null => ValueRef::Null,
        SqlValue::Integer(i) => ValueRef::Integer(*i),
        SqlValue::Real(r) => ValueRef::Real(*r),
        SqlValue::Text(t) => ValueRef::Text(t.as_bytes()),
        SqlValue::Blob(b) => ValueRef::Blob(b),
    }
}

pub(crate) fn from_value_ref(v: ValueRef<'_>) -> SqlValue {
    match v {
        ValueRef::Null => SqlValue::Null,
        ValueRef::Integer(i) => SqlValue::Integer(i),
        ValueRef::Real(r) => SqlValue::Real(r),
        // SQLite does not check that TEXT is UTF-8; a client can store
        // anything through a blob cast. Show it rather than fail the query.
        ValueRef::Text(t) => SqlValue::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => SqlValue::Blob(b.to_vec()),
    }
}

pub(crate) fn key_value(v: &Value) -> KeyValue<'_> {
    match v {
        Value::Null => KeyValue::Null,
        Value::Integer(i) => KeyValue::Integer(*i),
        Value::Real(r) => KeyValue::Real(*r),
        Value::Text(t) => KeyValue::Text(t.as_bytes()),
        Value::Blob(b) => KeyValue::Blob(b),
    }
}

/// An owned copy that keeps invalid UTF-8 text as its bytes (a `Value`
/// cannot hold it, and keys must not depend on a lossy conversion).
pub(crate) fn owned(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Integer(i),
        ValueRef::Real(r) => Value::Real(r),
        ValueRef::Text(t) => match std::str::from_utf8(t) {
            Ok(s) => Value::Text(s.to_owned()),
            Err(_) => Value::Blob(t.to_vec()),
        },
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    }
}

/// Bind a statement's parameters. The error is the message for the client.
pub(crate) fn bind(stmt: &mut SqliteStatement<'_>, params: &Params) -> Result<(), String> {
    match params {
        Params::None => Ok(()),
        Params::Positional(values) => {
            let expected = stmt.parameter_count();
            if values.len() > expected {
                return Err(format!(
                    "too many parameters: the statement takes {expected}, {} were given",
                    values.len()
                ));
            }
            for (i, v) in values.iter().enumerate() {
                stmt.raw_bind_parameter(i + 1, ToSqlOutput::Borrowed(to_value_ref(v)))
                    .map_err(|e| e.to_string())?;
            }
            Ok(())
        }
        Params::Named(values) => {
            for (name, v) in values {
                let index = parameter_index(stmt, name)?
                    .ok_or_else(|| format!("no parameter named {name} in the statement"))?;
                stmt.raw_bind_parameter(index, ToSqlOutput::Borrowed(to_value_ref(v)))
                    .map_err(|e| e.to_string())?;
            }
            Ok(())
        }
    }
}

/// Clients name parameters with or without the SQL prefix; the statement
/// may use any of `:`, `@`, `$`.
fn parameter_index(stmt: &SqliteStatement<'_>, name: &str) -> Result<Option<usize>, String> {
    if name.starts_with([':', '@', '$']) {
        return stmt.parameter_index(name).map_err(|e| e.to_string());
    }
    for prefix in [':', '@', '$'] {
        if let Some(i) = stmt
            .parameter_index(&format!("{prefix}{name}"))
            .map_err(|e| e.to_string())?
        {
            return Ok(Some(i));
        }
    }
    Ok(None)
}
