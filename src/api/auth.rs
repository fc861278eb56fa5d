//! Who may do what on the client API: rqlite's users file and HTTP basic
//! authentication.
//!
//! The file is a JSON array of users, each with a password and permissions:
//!
//! ```json
//! [
//!   {"username": "app", "password": "secret", "perms": ["query", "execute"]},
//!   {"username": "ops", "password": "$2a$10$...", "perms": ["all"]},
//!   {"username": "*", "perms": ["status", "ready"]}
//! ]
//! ```
//!
//! A password is plain text or a bcrypt hash (`$2a$`, `$2b$`, `$2y$`). The
//! user `*` gives its permissions to everybody, also to requests without
//! credentials. As in rqlite, `all` holds every permission.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Mutex;

use serde::Deserialize;

/// rqlite's permission names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Perm {
    All,
    Execute,
    Query,
    Status,
    Ready,
    Backup,
    Load,
    Join,
    JoinReadOnly,
    Remove,
    Snapshot,
}

impl Perm {
    const NAMES: [(&'static str, Perm); 11] = [
        ("all", Perm::All),
        ("execute", Perm::Execute),
        ("query", Perm::Query),
        ("status", Perm::Status),
        ("ready", Perm::Ready),
        ("backup", Perm::Backup),
        ("load", Perm::Load),
        ("join", Perm::Join),
        ("join-read-only", Perm::JoinReadOnly),
        ("remove", Perm::Remove),
        ("snapshot", Perm::Snapshot),
    ];

    fn parse(name: &str) -> Option<Perm> {
        Self::NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, p)| *p)
    }

    pub fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, p)| *p == self)
            .map_or("?", |(n, _)| n)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    #[error("cannot read the users file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// Never quotes the file: it holds passwords.
    #[error("the users file {path} is not valid: {why}")]
    Invalid { path: String, why: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    username: String,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    perms: Vec<String>,
}

enum Secret {
    Plain(String),
    Bcrypt(String),
}

struct User {
    name: String,
    secret: Option<Secret>,
    perms: HashSet<Perm>,
}

/// Why a request is not allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No (valid) credentials, and everybody's permissions do not suffice: 401.
    Unauthenticated,
    /// Valid credentials without the permission: 403.
    Forbidden { user: String, perm: Perm },
}

/// The users of the client API.
pub struct Users {
    users: Vec<User>,
    /// Credentials already found good: a bcrypt check costs tens of
    /// milliseconds, too much for every request.
    verified: Mutex<HashSet<(String, String)>>,
}

/// Above this many remembered credentials, forget them all rather than grow.
const MAX_VERIFIED: usize = 1024;

const EVERYBODY: &str = "*";

impl Users {
    pub fn load(path: &Path) -> Result<Users, UsersError> {
        let text = std::fs::read_to_string(path).map_err(|source| UsersError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Users::parse(&text).map_err(|why| UsersError::Invalid {
            path: path.display().to_string(),
            why,
        })
    }

    /// `Err` says what is wrong, without quoting any password.
    pub fn parse(text: &str) -> Result<Users, String> {
        let entries: Vec<Entry> = serde_json::from_str(text).map_err(|e| {
            // serde's message may quote a value; line and column suffice.
            format!(
                "expected a JSON array of {{\"username\", \"password\", \"perms\"}} objects \
                 (error at line {} column {}: {})",
                e.line(),
                e.column(),
                match e.classify() {
                    serde_json::error::Category::Syntax => "syntax",
                    serde_json::error::Category::Eof => "unexpected end",
                    _ => "wrong shape",
                }
            )
        })?;
        let mut users = Vec::with_capacity(entries.len());
        for (i, entry) in entries.into_iter().enumerate() {
            let n = i + 1;
            if entry.username.is_empty() {
                return Err(format!("user {n} has an empty username"));
            }
            if users.iter().any(|u: &User| u.name == entry.username) {
                return Err(format!("user {:?} is listed twice", entry.username));
            }
            let mut perms = HashSet::new();
            for p in &entry.perms {
                let perm = Perm::parse(p).ok_or_else(|| {
                    format!(
                        "user {:?} has an unknown permission {p:?}; known: {}",
                        entry.username,
                        Perm::NAMES.map(|(n, _)| n).join(", ")
                    )
                })?;
                perms.insert(perm);
            }
            let secret = match entry.password {
                None if entry.username == EVERYBODY => None,
                None => {
                    return Err(format!("user {:?} has no password", entry.username));
                }
                Some(p) if ["$2a$", "$2b$", "$2y$"].iter().any(|v| p.starts_with(v)) => {
                    Some(Secret::Bcrypt(p))
                }
                Some(p) => Some(Secret::Plain(p)),
            };
            users.push(User {
                name: entry.username,
                secret,
                perms,
            });
        }
        Ok(Users {
            users,
            verified: Mutex::new(HashSet::new()),
        })
    }

    fn has(&self, name: &str, perm: Perm) -> bool {
        self.users
            .iter()
            .find(|u| u.name == name)
            .is_some_and(|u| u.perms.contains(&perm) || u.perms.contains(&Perm::All))
    }

    /// rqlite's rule: what everybody (`*`) may do needs no credentials;
    /// anything else needs a known user with the right password who has the
    /// permission (or `all`).
    pub fn check(&self, credentials: Option<(&str, &str)>, perm: Perm) -> Result<(), Denied> {
        if self.has(EVERYBODY, perm) {
            return Ok(());
        }
        let Some((name, password)) = credentials else {
            return Err(Denied::Unauthenticated);
        };
        if name == EVERYBODY || !self.authenticate(name, password) {
            return Err(Denied::Unauthenticated);
        }
        if self.has(name, perm) {
            Ok(())
        } else {
            Err(Denied::Forbidden {
                user: name.to_string(),
                perm,
            })
        }
    }

    fn authenticate(&self, name: &str, password: &str) -> bool {
        let Some(user) = self.users.iter().find(|u| u.name == name) else {
            return false;
        };
        match &user.secret {
            None => false,
            Some(Secret::Plain(p)) => constant_time_eq(p.as_bytes(), password.as_bytes()),
            Some(Secret::Bcrypt(hash)) => {
                let key = (name.to_string(), password.to_string());
                let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
                if verified.contains(&key) {
                    return true;
                }
                drop(verified);
                let ok = bcrypt::verify(password, hash).unwrap_or(false);
                if ok {
                    verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
                    if verified.len() >= MAX_VERIFIED {
                        verified.clear();
                    }
                    verified.insert(key);
                }
                ok
            }
        }
    }
}

/// Compare without stopping at the first difference, so the time taken
/// does not tell how much of a guessed password was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The user and password of an `Authorization: Basic` header, if it has one
/// that decodes.
pub fn basic_credentials(headers: &axum::http::HeaderMap) -> Option<(String, String)> {
    use base64::Engine;
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"[
        {"username": "app", "password": "s3cret", "perms": ["query", "execute"]},
        {"username": "ops", "password": "HASH", "perms": ["all"]},
        {"username": "*", "perms": ["status", "ready"]}
    ]"#;

    fn users() -> Users {
        let hash = bcrypt::hash("opspw", 4).unwrap();
        Users::parse(&FILE.replace("HASH", &hash)).unwrap()
    }

    #[test]
    fn rqlite_rules() {
        let u = users();
        assert_eq!(u.check(None, Perm::Status), Ok(()));
        assert_eq!(u.check(None, Perm::Query), Err(Denied::Unauthenticated));
        assert_eq!(u.check(Some(("app", "s3cret")), Perm::Query), Ok(()));
        assert_eq!(
            u.check(Some(("app", "wrong")), Perm::Query),
            Err(Denied::Unauthenticated)
        );
        assert_eq!(
            u.check(Some(("nobody", "s3cret")), Perm::Query),
            Err(Denied::Unauthenticated)
        );
        assert_eq!(
            u.check(Some(("app", "s3cret")), Perm::Backup),
            Err(Denied::Forbidden {
                user: "app".into(),
                perm: Perm::Backup
            })
        );
        // `all`, with a bcrypt password, twice (the second from memory).
        for _ in 0..2 {
            assert_eq!(u.check(Some(("ops", "opspw")), Perm::Load), Ok(()));
        }
        assert_eq!(
            u.check(Some(("ops", "nope")), Perm::Load),
            Err(Denied::Unauthenticated)
        );
        // `*` is nobody's login.
        assert_eq!(
            u.check(Some(("*", "")), Perm::Query),
            Err(Denied::Unauthenticated)
        );
    }

    #[test]
    fn bad_files_say_what_is_wrong_without_quoting_passwords() {
        for (text, want) in [
            ("{}", "expected a JSON array"),
            (
                r#"[{"username": "a", "password": "topsecret", "perms": ["query"],}]"#,
                "line 1",
            ),
            (
                r#"[{"username": "a", "password": "topsecret", "perms": ["reed"]}]"#,
                "unknown permission \"reed\"",
            ),
            (
                r#"[{"username": "a", "perms": ["query"]}]"#,
                "user \"a\" has no password",
            ),
            (
                r#"[{"username": "", "password": "x"}]"#,
                "user 1 has an empty username",
            ),
            (
                r#"[{"username": "a", "password": "x"}, {"username": "a", "password": "y"}]"#,
                "listed twice",
            ),
            (r#"[{"username": "a", "pass": "topsecret"}]"#, "wrong shape"),
        ] {
            let err = Users::parse(text).err().unwrap();
            assert!(err.contains(want), "{text}: {err}");
            assert!(!err.contains("topsecret"), "{err}");
        }
    }

    #[test]
    fn basic_header_parsing() {
        let mut h = axum::http::HeaderMap::new();
        assert_eq!(basic_credentials(&h), None);
        h.insert("authorization", "Basic YXBwOnMzY3I6ZXQ=".parse().unwrap());
        assert_eq!(
            basic_credentials(&h),
            Some(("app".into(), "s3cr:et".into()))
        );
        h.insert("authorization", "Bearer x".parse().unwrap());
        assert_eq!(basic_credentials(&h), None);
        h.insert("authorization", "Basic !!!".parse().unwrap());
        assert_eq!(basic_credentials(&h), None);
    }
}
