//! SIGHUP: re-read the config file the daemon started with, apply what can
//! change while it runs, and say what needs a restart.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::Node;
use crate::config::Config;

/// Sets a new log filter (`log_level` syntax), or says why it cannot.
pub type SetLogFilter = dyn Fn(&str) -> Result<(), String> + Send + Sync;

/// Replaces the log filter of the running daemon (a tracing reload handle).
#[derive(Clone)]
pub struct LogReload(pub Arc<SetLogFilter>);

impl std::fmt::Debug for LogReload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogReload")
    }
}

/// Keys SIGHUP applies. Every other change needs a restart: the Raft
/// timings (openraft fixes them when it starts; its runtime switches only
/// turn heartbeats and elections on or off), the addresses, TLS, storage.
pub const RELOADABLE: [&str; 6] = [
    "log_level",
    "leave_on_terminate",
    "skip_leave_on_interrupt",
    "replication.peers",
    "replication.primary_timeout_ms",
    "replication.sync_wait_writes",
];

/// What one SIGHUP did, key by key (`key: old -> new`).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReloadReport {
    pub applied: Vec<String>,
    pub needs_restart: Vec<String>,
}

/// Every leaf key whose value differs, dotted, with both values as TOML-ish text.
pub fn changed_keys(old: &Config, new: &Config) -> Vec<(String, String, String)> {
    let (old, new) = (flatten(old), flatten(new));
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    let none = String::from("(unset)");
    keys.into_iter()
        .filter(|k| old.get(*k) != new.get(*k))
        .map(|k| {
            (
                k.clone(),
                old.get(k).unwrap_or(&none).clone(),
                new.get(k).unwrap_or(&none).clone(),
            )
        })
        .collect()
}

fn flatten(config: &Config) -> BTreeMap<String, String> {
    fn walk(prefix: &str, v: &serde_json::Value, out: &mut BTreeMap<String, String>) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, v, out);
                }
            }
            serde_json::Value::Null => {}
            other => {
                out.insert(prefix.to_string(), other.to_string());
            }
        }
    }
    let mut out = BTreeMap::new();
    if let Ok(v) = serde_json::to_value(config) {
        walk("", &v, &mut out);
    }
    out
}

impl Node {
    /// Apply `new` (already validated) where it can change at run time.
    pub fn reload(&self, new: &Config, log: Option<&LogReload>) -> ReloadReport {
        let mut report = ReloadReport::default();
        let mut running = match self.running.lock() {
            Ok(r) => r,
            Err(poisoned) => poisoned.into_inner(),
        };
        for (key, old_v, new_v) in changed_keys(&running, new) {
            let change = format!("{key}: {old_v} -> {new_v}");
            if !RELOADABLE.contains(&key.as_str()) {
                report.needs_restart.push(change);
                continue;
            }
            let applied = match key.as_str() {
                "log_level" => match log {
                    Some(reload) => {
                        reload.0(&new.log_level).map(|()| running.log_level = new.log_level.clone())
                    }
                    None => Err("this daemon has no log filter to replace".into()),
                },
                "leave_on_terminate" => {
                    running.leave_on_terminate = new.leave_on_terminate;
                    Ok(())
                }
                "skip_leave_on_interrupt" => {
                    running.skip_leave_on_interrupt = new.skip_leave_on_interrupt;
                    Ok(())
                }
                "replication.peers" => {
                    running.replication.peers = new.replication.peers.clone();
                    Ok(())
                }
                "replication.primary_timeout_ms" => {
                    let ms = new.replication.primary_timeout_ms;
                    // Checked against the election timeout in effect, which
                    // a reload cannot change.
                    if ms < running.replication.election_timeout_ms {
                        Err(format!(
                            "it must be at least the running replication.election_timeout_ms ({})",
                            running.replication.election_timeout_ms
                        ))
                    } else {
                        running.replication.primary_timeout_ms = ms;
                        self.primary_timeout_ms.store(ms, Ordering::Relaxed);
                        Ok(())
                    }
                }
                "replication.sync_wait_writes" => {
                    let on = new.replication.sync_wait_writes;
                    running.replication.sync_wait_writes = on;
                    self.sync_wait_writes.store(on, Ordering::Relaxed);
                    Ok(())
                }
                _ => Err("not handled".into()),
            };
            match applied {
                Ok(()) => report.applied.push(change),
                Err(why) => report.needs_restart.push(format!("{change} ({why})")),
            }
        }
        report
    }

    /// SIGTERM leaves the membership unless `leave_on_terminate = false`.
    pub fn leave_on_terminate(&self) -> bool {
        self.running
            .lock()
            .map(|r| r.leave_on_terminate)
            .unwrap_or(true)
    }

    /// SIGINT leaves the membership unless `skip_leave_on_interrupt = true`.
    pub fn leave_on_interrupt(&self) -> bool {
        self.running
            .lock()
            .map(|r| !r.skip_leave_on_interrupt)
            .unwrap_or(true)
    }

    /// The peers other than this node, as last (re)loaded.
    pub fn other_peers(&self) -> Vec<std::net::SocketAddr> {
        match self.running.lock() {
            Ok(r) => r.other_peers(),
            Err(_) => self.config.other_peers(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_named_by_dotted_key() {
        let old = Config::new("node-a");
        let mut new = old.clone();
        new.log_level = "debug".into();
        new.replication.peers = vec!["127.0.0.1:4568".parse().unwrap()];
        new.node_name = "node-b".into();
        let changed = changed_keys(&old, &new);
        let keys: Vec<&str> = changed.iter().map(|(k, _, _)| k.as_str()).collect();
        assert_eq!(keys, ["log_level", "node_name", "replication.peers"]);
        assert_eq!(changed[0].1, "\"info\"");
        assert_eq!(changed[0].2, "\"debug\"");
        assert!(changed_keys(&old, &old).is_empty());
    }

    #[test]
    fn a_section_appearing_names_its_keys() {
        let old = Config::new("node-a");
        let mut new = old.clone();
        new.tls = Some(crate::config::TlsConfig {
            ca: "/ca.pem".into(),
            cert: "/c.pem".into(),
            key: "/c.key".into(),
        });
        let keys: Vec<String> = changed_keys(&old, &new).into_iter().map(|c| c.0).collect();
        assert_eq!(keys, ["tls.ca", "tls.cert", "tls.key"]);
    }
}
