//! Admin channel between `quorate` (the CLI) and `quorated` (the daemon).
//!
//! The daemon listens on a Unix socket in its runtime directory (mode 0660,
//! peer credentials checked on every connection). Each message is one frame:
//! a 4-byte big-endian length followed by that many bytes of JSON. The client
//! sends a [`Request`] and the daemon answers each with one [`Response`];
//! a connection may carry several request/response pairs.
//!
//! The wire types live here, shared by [`server`] and [`client`], so the two
//! sides cannot drift apart (corrosion's `corro-admin` model).

pub mod client;
pub mod frame;
pub mod server;

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::status::ClusterStatus;
use crate::writeset::Position;

pub use client::{daemon_pid, request};
pub use frame::{FrameError, MAX_FRAME};
pub use server::{peer_allowed, serve};

/// Bumped on any incompatible change of [`Command`] or [`Response`]; the
/// daemon answers a request of another version with a [`Response::Error`]
/// naming both versions instead of guessing at its meaning.
pub const PROTOCOL_VERSION: u32 = 1;

/// What the CLI sends: one command, tagged with the protocol version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub version: u32,
    pub command: Command,
}

impl Request {
    pub fn new(command: Command) -> Request {
        Request {
            version: PROTOCOL_VERSION,
            command,
        }
    }
}

/// The commands the daemon accepts. Each CLI action maps to one of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// The node's wsrep-style status (`--show-cluster-status`); answered
    /// with [`Response::Status`].
    Status,
    /// Start a new primary component from this node (`--bootstrap-node`);
    /// answered with [`Response::Bootstrapped`] or
    /// [`Response::BootstrapRefused`].
    Bootstrap,
    /// The current `safe_to_bootstrap` (`--safe-to-bootstrap`); answered with
    /// [`Response::SafeToBootstrap`].
    SafeToBootstrap,
    /// Set `safe_to_bootstrap` to 1 (`--force-safe-to-bootstrap`); answered
    /// with [`Response::Done`] (or [`Response::SafeToBootstrap`]`(true)`).
    ForceSafeToBootstrap,
    /// The position of the local data (`--recover`); answered with
    /// [`Response::Position`].
    Recover,
    /// Every member and every node seen recently (`--members`); answered
    /// with [`Response::Members`].
    Members,
    /// Remove a member that is gone for good (`--remove-node NAME`,
    /// Consul's force-leave); answered with [`Response::Removed`] or
    /// [`Response::Error`] naming why it was refused.
    RemoveNode { name: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Response {
    Status(Box<ClusterStatus>),
    Bootstrapped {
        state_uuid: uuid::Uuid,
    },
    /// Bootstrap refused because safe_to_bootstrap is 0 (print the banner).
    BootstrapRefused {
        reason: String,
    },
    SafeToBootstrap(bool),
    Position(Position),
    Members(Vec<crate::status::MemberRow>),
    /// What the cluster looks like after the removal, for the operator.
    Removed {
        summary: String,
    },
    Done,
    /// The request failed: malformed, refused (permission, protocol
    /// version) or the command itself failed. The text is for the operator.
    Error(String),
}

/// Implemented by the node; the admin server calls it for each request.
pub trait AdminHandler: Send + Sync + 'static {
    fn handle(&self, cmd: Command) -> impl Future<Output = Response> + Send;
}

/// Errors of the admin channel, on either side.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No daemon listens: the socket file is missing or refuses connections.
    /// The CLI falls back to the files in `data_dir`.
    #[error("quorated is not running (no answer on admin socket {})", path.display())]
    NotRunning { path: PathBuf },
    /// `serve` found a live daemon on its socket path.
    #[error("another quorated is running with admin socket {}", path.display())]
    AlreadyRunning { path: PathBuf },
    /// The socket exists but this user may not connect to it.
    #[error(
        "permission denied on admin socket {}: run as root, as the daemon's user or as a member of the socket's group",
        path.display()
    )]
    PermissionDenied { path: PathBuf },
    #[error("no answer from quorated on {} within {} s", path.display(), timeout.as_secs_f64())]
    Timeout { path: PathBuf, timeout: Duration },
    #[error("admin protocol error on {}: {source}", path.display())]
    Protocol { path: PathBuf, source: FrameError },
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

impl AdminError {
    fn io(
        action: &'static str,
        path: &std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> AdminError {
        let path = path.to_path_buf();
        move |source| AdminError::Io {
            action,
            path,
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_wire_form_is_stable() {
        // The CLI and the daemon may come from different builds during an
        // upgrade; the JSON shape is the contract between them.
        let json = serde_json::to_string(&Request::new(Command::Status)).unwrap();
        assert_eq!(json, r#"{"version":1,"command":"Status"}"#);
        let back: Request = serde_json::from_str(&json).unwrap();
        assert_eq!(back, Request::new(Command::Status));
        let remove = Request::new(Command::RemoveNode {
            name: "node-c".into(),
        });
        let json = serde_json::to_string(&remove).unwrap();
        assert_eq!(
            json,
            r#"{"version":1,"command":{"RemoveNode":{"name":"node-c"}}}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&json).unwrap(), remove);
    }

    #[test]
    fn response_round_trips() {
        for r in [
            Response::Done,
            Response::SafeToBootstrap(true),
            Response::Error("x".into()),
            Response::Removed {
                summary: "removed node-c".into(),
            },
            Response::Members(Vec::new()),
            Response::BootstrapRefused {
                reason: "safe_to_bootstrap is 0".into(),
            },
            Response::Position(Position {
                state_uuid: uuid::Uuid::nil(),
                seqno: -1,
                incarnation: 2,
            }),
        ] {
            let json = serde_json::to_vec(&r).unwrap();
            assert_eq!(serde_json::from_slice::<Response>(&json).unwrap(), r);
        }
    }

    #[test]
    fn not_running_message_names_the_socket() {
        let e = AdminError::NotRunning {
            path: "/run/quorate/quorate.sock".into(),
        };
        assert!(e.to_string().contains("/run/quorate/quorate.sock"), "{e}");
    }
}
