//! URL query parameters, read the way rqlite reads them: a flag counts when
//! its key is present whatever its value, the first of repeated keys wins,
//! and duration-valued keys must be Go durations.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::Query;
use axum::http::Uri;

use super::error::{bad_request, HttpError};
use super::ReadLevel;

/// The query parameters of one request.
#[derive(Debug, Default)]
pub(crate) struct QueryParams {
    values: HashMap<String, String>,
}

/// Keys whose values rqlite parses as Go durations.
const DURATION_KEYS: [&str; 4] = ["timeout", "freshness", "db_timeout", "linearizable_timeout"];
/// Keys whose values rqlite parses as integers.
const INTEGER_KEYS: [&str; 2] = ["retries", "trailing_logs"];

impl QueryParams {
    pub(crate) fn from_uri(uri: &Uri) -> Result<Self, HttpError> {
        let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(uri)
            .map_err(|e| bad_request(format!("invalid query string: {e}")))?;
        let mut values = HashMap::new();
        for (key, value) in pairs {
            values.entry(key).or_insert(value);
        }
        let params = QueryParams { values };
        params.validate()?;
        Ok(params)
    }

    fn validate(&self) -> Result<(), HttpError> {
        if self.has("freshness_strict") && !self.has("freshness") {
            return Err(bad_request("freshness_strict requires freshness"));
        }
        for key in DURATION_KEYS {
            if let Some(v) = self.get(key) {
                if parse_go_duration(v).is_none() {
                    return Err(bad_request(format!("{key} is not a valid duration")));
                }
            }
        }
        for key in INTEGER_KEYS {
            if let Some(v) = self.get(key) {
                if v.parse::<i64>().is_err() {
                    return Err(bad_request(format!("{key} is not a valid integer")));
                }
            }
        }
        if self.get("q") == Some("") {
            return Err(bad_request("query parameter not set"));
        }
        Ok(())
    }

    pub(crate) fn has(&self, key: &str) -> bool {
        self.values.contains_key(key)
    }

    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    /// rqlite maps unknown levels (and `auto`, which means "weak" on a node
    /// that takes writes) to weak.
    pub(crate) fn level(&self) -> ReadLevel {
        match self.get("level").map(str::to_ascii_lowercase).as_deref() {
            Some("none") => ReadLevel::None,
            Some("linearizable") => ReadLevel::Linearizable,
            Some("strong") => ReadLevel::Strong,
            _ => ReadLevel::Weak,
        }
    }

    pub(crate) fn pretty(&self) -> bool {
        self.has("pretty")
    }

    pub(crate) fn timings(&self) -> bool {
        self.has("timings")
    }
}

/// Parse a Go `time.ParseDuration` string (`300ms`, `1.5h`, `2h45m`, `0`).
/// Negative durations are valid Go but mean nothing here, so they are `None`.
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let rest = s.strip_prefix('+').unwrap_or(s);
    if rest.starts_with('-') {
        return None;
    }
    if rest == "0" {
        return Some(Duration::ZERO);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    let mut rest = rest;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, tail) = rest.split_at(number_len);
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return None;
        }
        let value: f64 = number.parse().ok()?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += value * scale;
        rest = tail;
    }
    Duration::try_from_secs_f64(total).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(query: &str) -> Result<QueryParams, HttpError> {
        let uri: Uri = format!("/db/query?{query}").parse().unwrap();
        QueryParams::from_uri(&uri)
    }

    #[test]
    fn flags_count_when_present_whatever_their_value() {
        let p = params("pretty&timings=false&transaction=1").unwrap();
        assert!(p.pretty());
        assert!(p.timings());
        assert!(p.has("transaction"));
        assert!(!p.has("associative"));
    }

    #[test]
    fn first_of_repeated_keys_wins_and_values_are_decoded() {
        let p = params("q=SELECT%201&q=other&level=strong").unwrap();
        assert_eq!(p.get("q"), Some("SELECT 1"));
        let p = params("q=SELECT+2").unwrap();
        assert_eq!(p.get("q"), Some("SELECT 2"));
    }

    #[test]
    fn levels_default_to_weak() {
        assert_eq!(params("").unwrap().level(), ReadLevel::Weak);
        assert_eq!(params("level=none").unwrap().level(), ReadLevel::None);
        assert_eq!(
            params("level=LINEARIZABLE").unwrap().level(),
            ReadLevel::Linearizable
        );
        assert_eq!(params("level=strong").unwrap().level(), ReadLevel::Strong);
        assert_eq!(params("level=auto").unwrap().level(), ReadLevel::Weak);
        assert_eq!(params("level=bogus").unwrap().level(), ReadLevel::Weak);
    }

    #[test]
    fn bad_durations_integers_and_empty_q_are_refused() {
        for (query, message) in [
            ("timeout=5", "timeout is not a valid duration"),
            ("db_timeout=abc", "db_timeout is not a valid duration"),
            ("retries=x", "retries is not a valid integer"),
            ("q=", "query parameter not set"),
            ("freshness_strict", "freshness_strict requires freshness"),
        ] {
            let err = params(query).unwrap_err();
            assert_eq!(err.to_string(), message, "{query}");
        }
        assert!(params("timeout=2s&retries=3&freshness=1m&freshness_strict").is_ok());
    }

    #[test]
    fn go_durations() {
        let ok = [
            ("0", Duration::ZERO),
            ("30s", Duration::from_secs(30)),
            ("2m", Duration::from_secs(120)),
            ("500ms", Duration::from_millis(500)),
            ("1h2m3s", Duration::from_secs(3723)),
            ("1.5s", Duration::from_millis(1500)),
            ("+10us", Duration::from_micros(10)),
            ("10\u{b5}s", Duration::from_micros(10)),
            ("7ns", Duration::from_nanos(7)),
        ];
        for (s, want) in ok {
            let got = parse_go_duration(s).unwrap_or_else(|| panic!("{s} refused"));
            let diff = got.abs_diff(want);
            assert!(diff < Duration::from_nanos(2), "{s}: {got:?} != {want:?}");
        }
        for s in ["", "5", "s", "1x", "-1s", "1..2s", ".s", "1s2"] {
            assert_eq!(parse_go_duration(s), None, "{s:?} accepted");
        }
    }
}
