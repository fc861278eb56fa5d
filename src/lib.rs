//! quorate: a Galera-style multi-master cluster manager for SQLite.
//!
//! See `docs/ARCHITECTURE.md` for the module map and the path of one write.

pub mod admin;
pub mod api;
pub mod bench;
pub mod certify;
pub mod cli;
pub mod config;
pub mod grastate;
pub mod log_limit;
pub mod node;
pub mod order;
pub mod sql;
pub mod status;
pub mod store;
pub mod tls;
pub mod transport;
pub mod writeset;
