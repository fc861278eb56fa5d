//! Result encoding, mirroring rqlite byte for byte where clients can tell.
//!
//! rqlite's output is shaped by three layers we reproduce here:
//! - its Go driver (`rqlite/go-sqlite3`) converts values by the column's
//!   declared type: INTEGER in `boolean` columns becomes `val > 0`, INTEGER
//!   and TEXT in `date`/`datetime`/`timestamp` columns become times;
//! - rqlite's `db` package turns BLOBs in text-affinity columns into text and
//!   fills undeclared column types from the first row;
//! - Go's `encoding/json` omits zero-valued fields (`omitempty`), prints a
//!   whole float without a fraction, encodes `[]byte` as base64 and sorts
//!   map keys.

use std::borrow::Cow;
use std::collections::BTreeMap;

use base64::Engine;
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

use crate::sql::{ExecResult, QueryResult, SqlValue};

/// Go's zero `time.Time`, which rqlite's driver yields for unparseable text
/// in a time column.
const GO_ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// Output switches from the query string.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Format {
    pub associative: bool,
    pub blob_array: bool,
}

/// The top-level response of the `/db/*` endpoints.
#[derive(Debug)]
pub(crate) struct Envelope<'a> {
    pub results: Vec<Slot<'a>>,
    pub format: Format,
    /// Seconds the whole request took, when `timings` was asked for.
    pub time: Option<f64>,
    /// rqlite's queued-write sequence number (`queue`).
    pub sequence_number: Option<i64>,
    pub raft_index: Option<i64>,
}

/// One element of `results`.
#[derive(Debug)]
pub(crate) enum Slot<'a> {
    Exec(&'a ExecResult),
    Rows(Rows<'a>),
}

impl<'a> Slot<'a> {
    /// A write statement's result; rows when it returned any (rqlite shows
    /// a SELECT in a mixed request, or a RETURNING clause, as a query).
    pub(crate) fn exec(r: &'a ExecResult) -> Self {
        match &r.rows {
            Some(q) if r.error.is_none() => Slot::rows(q),
            _ => Slot::Exec(r),
        }
    }

    pub(crate) fn rows(q: &'a QueryResult) -> Self {
        Slot::Rows(Rows::new(q))
    }
}

/// A query result after the driver's conversions.
#[derive(Debug)]
pub(crate) struct Rows<'a> {
    columns: &'a [String],
    types: Vec<String>,
    values: Vec<Vec<Cell<'a>>>,
    error: Option<&'a str>,
    time: Option<f64>,
}

/// One value as it will be printed.
#[derive(Debug, Clone, PartialEq)]
enum Cell<'a> {
    Null,
    Integer(i64),
    Real(f64),
    Bool(bool),
    Text(Cow<'a, str>),
    Blob(&'a [u8]),
}

impl<'a> Rows<'a> {
    fn new(q: &'a QueryResult) -> Self {
        // Driver conversions look at the lower-cased declared type.
        let mut types: Vec<String> = (0..q.columns.len())
            .map(|i| {
                q.types
                    .get(i)
                    .map(|t| t.to_ascii_lowercase())
                    .unwrap_or_default()
            })
            .collect();
        let mut fill_types = types.iter().any(String::is_empty);
        let mut values = Vec::with_capacity(q.rows.len());
        for row in &q.rows {
            let cells: Vec<Cell<'a>> = row
                .iter()
                .enumerate()
                .map(|(i, v)| convert(v, types.get(i).map_or("", String::as_str)))
                .collect();
            // rqlite fills undeclared types from the first row only; later
            // rows are converted against the filled-in types.
            if fill_types {
                for (t, cell) in types.iter_mut().zip(&cells) {
                    if t.is_empty() {
                        *t = cell.type_name().to_string();
                    }
                }
                fill_types = false;
            }
            values.push(cells);
        }
        Rows {
            columns: &q.columns,
            types,
            values,
            error: q.error.as_deref().filter(|e| !e.is_empty()),
            time: q.time,
        }
    }
}

impl Cell<'_> {
    fn type_name(&self) -> &'static str {
        match self {
            Cell::Null => "",
            Cell::Integer(_) => "integer",
            Cell::Real(_) => "real",
            Cell::Bool(_) => "boolean",
            Cell::Text(_) => "text",
            Cell::Blob(_) => "blob",
        }
    }
}

fn is_time_type(decl: &str) -> bool {
    matches!(decl, "date" | "datetime" | "timestamp")
}

/// SQLite text affinity as rqlite's `isTextType` judges it.
fn is_text_type(decl: &str) -> bool {
    matches!(decl, "text" | "json" | "")
        || [
            "varchar",
            "varying character",
            "nchar",
            "native character",
            "nvarchar",
            "clob",
        ]
        .iter()
        .any(|prefix| decl.starts_with(prefix))
}

fn convert<'a>(value: &'a SqlValue, decl: &str) -> Cell<'a> {
    match value {
        SqlValue::Null => Cell::Null,
        SqlValue::Integer(v) if is_time_type(decl) => match unix_to_rfc3339(*v) {
            Some(s) => Cell::Text(Cow::Owned(s)),
            // Go cannot print a year outside 0..=9999 and rqlite fails the
            // whole query; showing the stored number loses nothing.
            None => Cell::Integer(*v),
        },
        SqlValue::Integer(v) if decl == "boolean" => Cell::Bool(*v > 0),
        SqlValue::Integer(v) => Cell::Integer(*v),
        SqlValue::Real(f) => Cell::Real(*f),
        SqlValue::Text(s) if is_time_type(decl) => Cell::Text(Cow::Owned(
            parse_sqlite_time(s)
                .and_then(format_rfc3339)
                .unwrap_or_else(|| GO_ZERO_TIME.to_string()),
        )),
        SqlValue::Text(s) => Cell::Text(Cow::Borrowed(s)),
        // rqlite makes text of any BLOB in a text-affinity column; bytes that
        // are not UTF-8 would be mangled by that, so they stay a BLOB.
        SqlValue::Blob(b) if is_text_type(decl) => match std::str::from_utf8(b) {
            Ok(s) => Cell::Text(Cow::Borrowed(s)),
            Err(_) => Cell::Blob(b),
        },
        SqlValue::Blob(b) => Cell::Blob(b),
    }
}

/// The driver's rule: seconds, or milliseconds when too large for seconds.
fn unix_to_rfc3339(v: i64) -> Option<String> {
    let t = if !(-1_000_000_000_000..=1_000_000_000_000).contains(&v) {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(v) * 1_000_000).ok()?
    } else {
        OffsetDateTime::from_unix_timestamp(v).ok()?
    };
    format_rfc3339(t)
}

/// Go's `time.RFC3339Nano`: fraction without trailing zeros, `Z` for UTC.
fn format_rfc3339(t: OffsetDateTime) -> Option<String> {
    if !(0..=9999).contains(&t.year()) {
        return None;
    }
    let mut s = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    if t.nanosecond() != 0 {
        let frac = format!("{:09}", t.nanosecond());
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    let offset = t.offset();
    if offset.is_utc() {
        s.push('Z');
    } else {
        let sign = if offset.is_negative() { '-' } else { '+' };
        s.push_str(&format!(
            "{sign}{:02}:{:02}",
            offset.whole_hours().unsigned_abs(),
            offset.minutes_past_hour().unsigned_abs()
        ));
    }
    Some(s)
}

/// The layouts of go-sqlite3's `SQLiteTimestampFormats`, after it trims one
/// trailing `Z`: `YYYY-MM-DD`, then `[ T]HH:MM`, then `:SS`, then `.fraction`,
/// then `±HH:MM` (the offset only after seconds).
fn parse_sqlite_time(s: &str) -> Option<OffsetDateTime> {
    let s = s.strip_suffix('Z').unwrap_or(s);
    let b = s.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<u32> {
        let digits = b.get(range)?;
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(digits).ok()?.parse().ok()
    };
    let expect = |i: usize, c: u8| b.get(i) == Some(&c);

    if !(expect(4, b'-') && expect(7, b'-')) {
        return None;
    }
    let year = i32::try_from(num(0..4)?).ok()?;
    let month = Month::try_from(u8::try_from(num(5..7)?).ok()?).ok()?;
    let date = Date::from_calendar_date(year, month, u8::try_from(num(8..10)?).ok()?).ok()?;
    if b.len() == 10 {
        return Some(PrimitiveDateTime::new(date, Time::MIDNIGHT).assume_utc());
    }
    if !(expect(10, b' ') || expect(10, b'T')) || !expect(13, b':') {
        return None;
    }
    let hour = u8::try_from(num(11..13)?).ok()?;
    let minute = u8::try_from(num(14..16)?).ok()?;
    if b.len() == 16 {
        let time = Time::from_hms(hour, minute, 0).ok()?;
        return Some(PrimitiveDateTime::new(date, time).assume_utc());
    }
    if !expect(16, b':') {
        return None;
    }
    let second = u8::try_from(num(17..19)?).ok()?;
    let mut i = 19;
    let mut nanos = 0u32;
    if expect(i, b'.') {
        let start = i + 1;
        let end = b[start..]
            .iter()
            .position(|c| !c.is_ascii_digit())
            .map_or(b.len(), |p| start + p);
        if end == start {
            return None;
        }
        // Go reads at most nine digits of fraction and ignores the rest.
        let digits = &s[start..end.min(start + 9)];
        nanos = digits.parse::<u32>().ok()? * 10u32.pow(9 - digits.len() as u32);
        i = end;
    }
    let time = Time::from_hms_nano(hour, minute, second, nanos).ok()?;
    let local = PrimitiveDateTime::new(date, time);
    if i == b.len() {
        return Some(local.assume_utc());
    }
    let sign: i8 = match b.get(i) {
        Some(b'+') => 1,
        Some(b'-') => -1,
        _ => return None,
    };
    if !expect(i + 3, b':') || b.len() != i + 6 {
        return None;
    }
    let oh = i8::try_from(num(i + 1..i + 3)?).ok()?;
    let om = i8::try_from(num(i + 4..i + 6)?).ok()?;
    let offset = UtcOffset::from_hms(sign * oh, sign * om, 0).ok()?;
    Some(local.assume_offset(offset))
}

struct CellOut<'c, 'a> {
    cell: &'c Cell<'a>,
    blob_array: bool,
}

impl Serialize for CellOut<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.cell {
            Cell::Null => s.serialize_unit(),
            Cell::Integer(v) => s.serialize_i64(*v),
            Cell::Real(f) => serialize_real(*f, s),
            Cell::Bool(b) => s.serialize_bool(*b),
            Cell::Text(t) => s.serialize_str(t),
            Cell::Blob(bytes) if self.blob_array => {
                let mut seq = s.serialize_seq(Some(bytes.len()))?;
                for byte in bytes.iter() {
                    seq.serialize_element(byte)?;
                }
                seq.end()
            }
            Cell::Blob(bytes) => {
                s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
            }
        }
    }
}

/// Go prints a whole float without a fraction (`1.0` → `1`). JSON has no
/// infinities; Go fails the whole response on one, we print `null`.
fn serialize_real<S: Serializer>(f: f64, s: S) -> Result<S::Ok, S::Error> {
    const I64_BOUND: f64 = 9_223_372_036_854_775_808.0; // 2^63
    if !f.is_finite() {
        s.serialize_unit()
    } else if f.fract() == 0.0 && (-I64_BOUND..I64_BOUND).contains(&f) {
        // In range and whole, so the cast is exact.
        s.serialize_i64(f as i64)
    } else {
        s.serialize_f64(f)
    }
}

struct RowsOut<'r, 'a> {
    rows: &'r Rows<'a>,
    format: Format,
}

impl Serialize for RowsOut<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let Rows {
            columns,
            types,
            values,
            error,
            time,
        } = self.rows;
        let blob_array = self.format.blob_array;
        let mut map = s.serialize_map(None)?;
        if self.format.associative {
            let type_map: BTreeMap<&str, &str> = columns
                .iter()
                .map(String::as_str)
                .zip(types.iter().map(String::as_str))
                .collect();
            if !type_map.is_empty() {
                map.serialize_entry("types", &type_map)?;
            }
            let objects: Vec<BTreeMap<&str, CellOut>> = values
                .iter()
                .map(|row| {
                    columns
                        .iter()
                        .map(String::as_str)
                        .zip(row.iter().map(|cell| CellOut { cell, blob_array }))
                        .collect()
                })
                .collect();
            map.serialize_entry("rows", &objects)?;
        } else {
            if !columns.is_empty() {
                map.serialize_entry("columns", columns)?;
            }
            if !types.is_empty() {
                map.serialize_entry("types", types)?;
            }
            if !values.is_empty() {
                let rows: Vec<Vec<CellOut>> = values
                    .iter()
                    .map(|row| {
                        row.iter()
                            .map(|cell| CellOut { cell, blob_array })
                            .collect()
                    })
                    .collect();
                map.serialize_entry("values", &rows)?;
            }
        }
        if let Some(e) = error {
            map.serialize_entry("error", e)?;
        }
        if let Some(t) = time.filter(|t| *t != 0.0) {
            map.serialize_entry("time", &t)?;
        }
        map.end()
    }
}

struct ExecOut<'r> {
    result: &'r ExecResult,
    associative: bool,
}

impl Serialize for ExecOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.result;
        let mut map = s.serialize_map(None)?;
        // A failed statement is rqlite's bare `{"error": ...}`.
        if let Some(e) = r.error.as_deref().filter(|e| !e.is_empty()) {
            map.serialize_entry("error", e)?;
            return map.end();
        }
        if r.last_insert_id != 0 {
            map.serialize_entry("last_insert_id", &r.last_insert_id)?;
        }
        if r.rows_affected != 0 {
            map.serialize_entry("rows_affected", &r.rows_affected)?;
        }
        if let Some(t) = r.time.filter(|t| *t != 0.0) {
            map.serialize_entry("time", &t)?;
        }
        // Lets associative clients tell an execute result from a query result.
        if self.associative {
            map.serialize_entry("rows", &())?;
        }
        map.end()
    }
}

struct SlotOut<'s, 'a> {
    slot: &'s Slot<'a>,
    format: Format,
}

impl Serialize for SlotOut<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.slot {
            Slot::Exec(result) => ExecOut {
                result,
                associative: self.format.associative,
            }
            .serialize(s),
            Slot::Rows(rows) => RowsOut {
                rows,
                format: self.format,
            }
            .serialize(s),
        }
    }
}

impl Serialize for Envelope<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        let results: Vec<SlotOut> = self
            .results
            .iter()
            .map(|slot| SlotOut {
                slot,
                format: self.format,
            })
            .collect();
        map.serialize_entry("results", &results)?;
        if let Some(t) = self.time.filter(|t| *t != 0.0) {
            map.serialize_entry("time", &t)?;
        }
        if let Some(n) = self.sequence_number.filter(|n| *n != 0) {
            map.serialize_entry("sequence_number", &n)?;
        }
        if let Some(n) = self.raft_index.filter(|n| *n != 0) {
            map.serialize_entry("raft_index", &n)?;
        }
        map.end()
    }
}

/// Serialize compactly, or indented by four spaces as rqlite's `pretty` is.
pub(crate) fn to_json(value: &impl Serialize, pretty: bool) -> serde_json::Result<Vec<u8>> {
    if !pretty {
        return serde_json::to_vec(value);
    }
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
    value.serialize(&mut serializer)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(columns: &[&str], types: &[&str], rows: Vec<Vec<SqlValue>>) -> QueryResult {
        QueryResult {
            columns: columns.iter().map(|s| s.to_string()).collect(),
            types: types.iter().map(|s| s.to_string()).collect(),
            rows,
            error: None,
            time: None,
        }
    }

    fn encode(slots: Vec<Slot>, format: Format) -> String {
        let envelope = Envelope {
            results: slots,
            format,
            time: None,
            sequence_number: None,
            raft_index: None,
        };
        String::from_utf8(to_json(&envelope, false).unwrap()).unwrap()
    }

    #[test]
    fn exec_results_omit_zero_values_like_go() {
        let results = [
            ExecResult {
                rows_affected: 1,
                last_insert_id: 7,
                ..Default::default()
            },
            ExecResult::default(),
            ExecResult {
                rows_affected: 3,
                error: Some("ignored".into()),
                ..Default::default()
            },
            ExecResult {
                rows_affected: 2,
                time: Some(0.5),
                ..Default::default()
            },
        ];
        let slots = results.iter().map(Slot::Exec).collect();
        assert_eq!(
            encode(slots, Format::default()),
            r#"{"results":[{"last_insert_id":7,"rows_affected":1},{},{"error":"ignored"},{"rows_affected":2,"time":0.5}]}"#
        );
        let slots = results[..2].iter().map(Slot::Exec).collect();
        let format = Format {
            associative: true,
            blob_array: false,
        };
        assert_eq!(
            encode(slots, format),
            r#"{"results":[{"last_insert_id":7,"rows_affected":1,"rows":null},{"rows":null}]}"#
        );
    }

    #[test]
    fn rows_encode_values_as_rqlite_does() {
        let q = query(
            &["id", "r", "whole", "name", "data", "nothing"],
            &["INTEGER", "real", "real", "text", "blob", "text"],
            vec![vec![
                SqlValue::Integer(1),
                SqlValue::Real(2.5),
                SqlValue::Real(3.0),
                SqlValue::Text("fiona".into()),
                SqlValue::Blob(vec![1, 2, 255]),
                SqlValue::Null,
            ]],
        );
        assert_eq!(
            encode(vec![Slot::rows(&q)], Format::default()),
            r#"{"results":[{"columns":["id","r","whole","name","data","nothing"],"types":["integer","real","real","text","blob","text"],"values":[[1,2.5,3,"fiona","AQL/",null]]}]}"#
        );
        let format = Format {
            associative: false,
            blob_array: true,
        };
        assert!(encode(vec![Slot::rows(&q)], format).contains(r#""fiona",[1,2,255],null"#));
    }

    #[test]
    fn zero_rows_keep_columns_and_types_but_no_values() {
        let q = query(&["id"], &["integer"], vec![]);
        assert_eq!(
            encode(vec![Slot::rows(&q)], Format::default()),
            r#"{"results":[{"columns":["id"],"types":["integer"]}]}"#
        );
        let format = Format {
            associative: true,
            blob_array: false,
        };
        assert_eq!(
            encode(vec![Slot::rows(&q)], format),
            r#"{"results":[{"types":{"id":"integer"},"rows":[]}]}"#
        );
    }

    #[test]
    fn associative_rows_are_objects_with_sorted_keys() {
        let q = query(
            &["name", "id"],
            &["text", "integer"],
            vec![
                vec![SqlValue::Text("a".into()), SqlValue::Integer(1)],
                vec![SqlValue::Text("b".into()), SqlValue::Integer(2)],
            ],
        );
        let format = Format {
            associative: true,
            blob_array: false,
        };
        assert_eq!(
            encode(vec![Slot::rows(&q)], format),
            r#"{"results":[{"types":{"id":"integer","name":"text"},"rows":[{"id":1,"name":"a"},{"id":2,"name":"b"}]}]}"#
        );
    }

    #[test]
    fn query_errors_and_timings() {
        let mut q = query(&[], &[], vec![]);
        q.error = Some("no such table: nope".into());
        q.time = Some(0.25);
        assert_eq!(
            encode(vec![Slot::rows(&q)], Format::default()),
            r#"{"results":[{"error":"no such table: nope","time":0.25}]}"#
        );
    }

    #[test]
    fn declared_types_drive_conversions() {
        let cases: Vec<(&str, SqlValue, Cell)> = vec![
            ("boolean", SqlValue::Integer(1), Cell::Bool(true)),
            ("boolean", SqlValue::Integer(0), Cell::Bool(false)),
            ("boolean", SqlValue::Integer(-3), Cell::Bool(false)),
            (
                "boolean",
                SqlValue::Text("yes".into()),
                Cell::Text("yes".into()),
            ),
            (
                "datetime",
                SqlValue::Integer(0),
                Cell::Text("1970-01-01T00:00:00Z".into()),
            ),
            (
                "timestamp",
                SqlValue::Integer(1_700_000_000),
                Cell::Text("2023-11-14T22:13:20Z".into()),
            ),
            (
                "date",
                SqlValue::Integer(1_700_000_000_123),
                Cell::Text("2023-11-14T22:13:20.123Z".into()),
            ),
            // Go's driver leaves REAL alone, even in a time column.
            ("datetime", SqlValue::Real(1.5), Cell::Real(1.5)),
            (
                "datetime",
                SqlValue::Text("2024-01-02 03:04:05".into()),
                Cell::Text("2024-01-02T03:04:05Z".into()),
            ),
            (
                "datetime",
                SqlValue::Text("2024-01-02T03:04:05.120Z".into()),
                Cell::Text("2024-01-02T03:04:05.12Z".into()),
            ),
            (
                "datetime",
                SqlValue::Text("2024-01-02 03:04:05.5+02:00".into()),
                Cell::Text("2024-01-02T03:04:05.5+02:00".into()),
            ),
            (
                "datetime",
                SqlValue::Text("2024-01-02T03:04:05-00:00".into()),
                Cell::Text("2024-01-02T03:04:05Z".into()),
            ),
            (
                "date",
                SqlValue::Text("2024-02-29".into()),
                Cell::Text("2024-02-29T00:00:00Z".into()),
            ),
            (
                "date",
                SqlValue::Text("2024-02-29 13:14".into()),
                Cell::Text("2024-02-29T13:14:00Z".into()),
            ),
            (
                "date",
                SqlValue::Text("yesterday".into()),
                Cell::Text(GO_ZERO_TIME.into()),
            ),
            (
                "date",
                SqlValue::Text("2023-02-29".into()),
                Cell::Text(GO_ZERO_TIME.into()),
            ),
            ("date", SqlValue::Null, Cell::Null),
            (
                "varchar(20)",
                SqlValue::Blob(b"hi".to_vec()),
                Cell::Text("hi".into()),
            ),
            ("", SqlValue::Blob(vec![0xff]), Cell::Blob(&[0xff])),
            ("blob", SqlValue::Blob(b"hi".to_vec()), Cell::Blob(b"hi")),
        ];
        for (decl, value, want) in &cases {
            assert_eq!(&convert(value, decl), want, "{decl} {value:?}");
        }
    }

    #[test]
    fn out_of_range_times_stay_numbers() {
        assert_eq!(
            convert(&SqlValue::Integer(i64::MAX), "datetime"),
            Cell::Integer(i64::MAX)
        );
        assert_eq!(
            convert(&SqlValue::Integer(300_000_000_000), "datetime"),
            Cell::Integer(300_000_000_000)
        );
    }

    #[test]
    fn undeclared_types_come_from_the_first_row() {
        let q = query(
            &["a", "b", "c", "d"],
            &["", "", "", ""],
            vec![
                vec![
                    SqlValue::Integer(1),
                    SqlValue::Real(0.5),
                    SqlValue::Null,
                    SqlValue::Blob(b"x".to_vec()),
                ],
                vec![
                    SqlValue::Text("t".into()),
                    SqlValue::Real(1.0),
                    SqlValue::Integer(2),
                    SqlValue::Blob(vec![0xfe]),
                ],
            ],
        );
        assert_eq!(
            encode(vec![Slot::rows(&q)], Format::default()),
            r#"{"results":[{"columns":["a","b","c","d"],"types":["integer","real","","text"],"values":[[1,0.5,null,"x"],["t",1,2,"/g=="]]}]}"#
        );
    }

    #[test]
    fn reals_print_like_go() {
        let out = |f: f64| {
            let mut buf = Vec::new();
            serialize_real(f, &mut serde_json::Serializer::new(&mut buf)).unwrap();
            String::from_utf8(buf).unwrap()
        };
        assert_eq!(out(1.0), "1");
        assert_eq!(out(-42.0), "-42");
        assert_eq!(out(0.1), "0.1");
        assert_eq!(out(1e18), "1000000000000000000");
        assert_eq!(out(f64::INFINITY), "null");
        let big: f64 = out(1e300).parse().unwrap();
        assert_eq!(big, 1e300);
    }

    #[test]
    fn envelope_extras_and_pretty() {
        let r = ExecResult {
            rows_affected: 1,
            ..Default::default()
        };
        let envelope = Envelope {
            results: vec![Slot::Exec(&r)],
            format: Format::default(),
            time: Some(0.001),
            sequence_number: Some(9),
            raft_index: Some(9),
        };
        assert_eq!(
            String::from_utf8(to_json(&envelope, false).unwrap()).unwrap(),
            r#"{"results":[{"rows_affected":1}],"time":0.001,"sequence_number":9,"raft_index":9}"#
        );
        let pretty = String::from_utf8(to_json(&envelope, true).unwrap()).unwrap();
        assert!(
            pretty
                .starts_with("{\n    \"results\": [\n        {\n            \"rows_affected\": 1"),
            "{pretty}"
        );
    }
}
