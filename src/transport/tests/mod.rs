//! In-process tests over real UDP on 127.0.0.1, with certificates made by
//! `crate::tls` in temporary directories. This file is the shared harness;
//! each submodule tests one behaviour.

mod calls;
mod refusals;
mod sessions;
mod uploads;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::*;
use crate::tls::{load_node_identity, write_ca, write_node_cert, NodeIdentity};

pub(super) const ECHO: u8 = 1;
pub(super) const FAIL: u8 = 2;
pub(super) const SLOW: u8 = 3;
pub(super) const SNAPSHOT: u8 = 9;
pub(super) const MAX_FRAME: usize = 1024 * 1024;
pub(super) const RPC_TIMEOUT: Duration = Duration::from_millis(800);

pub(crate) struct Pki {
    _dir: tempfile::TempDir,
    ca_dir: PathBuf,
    out: PathBuf,
}

pub(crate) fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("ca");
    let out = dir.path().join("out");
    write_ca(&ca_dir).unwrap();
    Pki {
        _dir: dir,
        ca_dir,
        out,
    }
}

/// The node's certificate, made on first use.
pub(crate) fn identity(p: &Pki, name: &str) -> NodeIdentity {
    let cert = p.out.join(format!("{name}.pem"));
    let key = p.out.join(format!("{name}.key"));
    if !cert.exists() {
        write_node_cert(name, &[], &p.ca_dir, &p.out).unwrap();
    }
    load_node_identity(&p.ca_dir.join("ca.pem"), &cert, &key).unwrap()
}

pub(super) fn opts(cluster: &str, name: &str) -> TransportOptions {
    TransportOptions {
        connect_timeout: Duration::from_secs(2),
        rpc_timeout: RPC_TIMEOUT,
        keep_alive: Duration::from_millis(300),
        idle_timeout: Duration::from_secs(3),
        max_frame_bytes: MAX_FRAME,
        // Tests here send every kind of bad frame on one connection; the
        // disconnect past the limit is tested against a daemon
        // (tests/connection_limits.rs).
        max_bad_frames: 64,
        ..TransportOptions::new(cluster, name)
    }
}

pub(super) fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

#[derive(Debug)]
pub(super) struct Upload {
    pub header: Bytes,
    pub result: Result<(u64, u32), String>,
}

pub(super) struct TestHandler {
    name: String,
    uploads: mpsc::UnboundedSender<Upload>,
}

impl RpcHandler for TestHandler {
    async fn handle(&self, peer: PeerIdentity, kind: u8, body: Bytes) -> Result<Bytes, RpcFailure> {
        match kind {
            ECHO => {
                let mut out = format!("{} heard {}: ", self.name, peer.node_name).into_bytes();
                out.extend_from_slice(&body);
                Ok(Bytes::from(out))
            }
            FAIL => Err(RpcFailure::new("no such table")),
            SLOW => {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok(Bytes::new())
            }
            other => Err(RpcFailure::new(format!("unknown kind {other}"))),
        }
    }

    async fn handle_stream(
        &self,
        _peer: PeerIdentity,
        _kind: u8,
        header: Bytes,
        mut chunks: ChunkStream,
    ) -> Result<Bytes, RpcFailure> {
        let mut crc = crc32fast::Hasher::new();
        let mut len = 0u64;
        let result = loop {
            match chunks.next().await {
                Ok(Some(data)) => {
                    crc.update(&data);
                    len += data.len() as u64;
                }
                Ok(None) => break Ok((len, crc.clone().finalize())),
                Err(e) => break Err(e.to_string()),
            }
        };
        let answer = match &result {
            Ok((len, crc)) => Ok(Bytes::from(format!("{len}:{crc}"))),
            Err(e) => Err(RpcFailure::new(e.clone())),
        };
        let _ = self.uploads.send(Upload { header, result });
        answer
    }

    /// ECHO sessions answer each message with the header, the message and
    /// its number, and finish after the peer did; other kinds are refused
    /// with a reason naming this node.
    async fn handle_session(
        &self,
        peer: PeerIdentity,
        kind: u8,
        header: Bytes,
        mut messages: SessionReceiver,
        mut replies: SessionSender,
    ) {
        if kind != ECHO {
            return replies
                .fail(&format!("{} serves no sessions of kind {kind}", self.name))
                .await;
        }
        let mut n = 0u32;
        loop {
            match messages.next().await {
                Ok(Some(m)) => {
                    n += 1;
                    let mut out = format!(
                        "{} to {} #{n} {}: ",
                        self.name,
                        peer.node_name,
                        String::from_utf8_lossy(&header)
                    )
                    .into_bytes();
                    out.extend_from_slice(&m);
                    if replies.send(Bytes::from(out)).await.is_err() {
                        return;
                    }
                }
                Ok(None) => return replies.finish(),
                Err(e) => return replies.fail(&e.to_string()).await,
            }
        }
    }
}

pub(super) struct Node {
    pub t: Transport,
    pub uploads: mpsc::UnboundedReceiver<Upload>,
    _serve: tokio::task::JoinHandle<()>,
}

impl Node {
    pub fn addr(&self) -> SocketAddr {
        self.t.local_addr()
    }
}

pub(super) async fn start(t: Transport) -> Node {
    let (tx, uploads) = mpsc::unbounded_channel();
    let handler = Arc::new(TestHandler {
        name: t.options().node_name.clone(),
        uploads: tx,
    });
    let serve = t.serve(handler);
    Node {
        t,
        uploads,
        _serve: serve,
    }
}

pub(super) async fn node_at(p: &Pki, cluster: &str, name: &str, listen: SocketAddr) -> Node {
    let t = Transport::bind(listen, identity(p, name), opts(cluster, name))
        .await
        .unwrap();
    start(t).await
}

pub(super) async fn node(p: &Pki, cluster: &str, name: &str) -> Node {
    node_at(p, cluster, name, localhost()).await
}

pub(super) fn echo_answer(to: &str, from: &str, body: &str) -> Bytes {
    Bytes::from(format!("{to} heard {from}: {body}"))
}

pub(super) async fn next_upload(n: &mut Node) -> Upload {
    tokio::time::timeout(Duration::from_secs(5), n.uploads.recv())
        .await
        .expect("the handler reports the upload")
        .unwrap()
}

pub(super) fn test_data(len: usize) -> Vec<u8> {
    // xorshift: cheap, and no chunk repeats another.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
