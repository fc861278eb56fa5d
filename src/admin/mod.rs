//! Admin channel between `quorate` and `quorated`. SKELETON: the contract.

use std::future::Future;

use serde::{Deserialize, Serialize};

use crate::status::ClusterStatus;
use crate::writeset::Position;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    Status,
    /// Start a new primary component from this node (`--bootstrap-node`).
    Bootstrap,
    SafeToBootstrap,
    ForceSafeToBootstrap,
    Recover,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Response {
    Status(Box<ClusterStatus>),
    Bootstrapped { state_uuid: uuid::Uuid },
    /// Bootstrap refused because safe_to_bootstrap is 0 (print the banner).
    BootstrapRefused { reason: String },
    SafeToBootstrap(bool),
    Position(Position),
    Done,
    Error(String),
}

/// Implemented by the node; the admin server calls it for each request.
pub trait AdminHandler: Send + Sync + 'static {
    fn handle(&self, cmd: Command) -> impl Future<Output = Response> + Send;
}
