//! Real packet loss without root: every node's replication traffic passes
//! through a UDP relay the test controls. Node X listens on its own port but
//! advertises (and is listed in every peer list under) its relay port; the
//! relay forwards each datagram to X from a socket kept per sender, and
//! X's answers back to the sender. A sender is known by its source address,
//! which is its node's listen address (a node sends from its one QUIC
//! endpoint). `cut(a, b)` drops every datagram between `a` and `b` in both
//! relays, so QUIC sees real loss; `heal` lets them through again.
//!
//! Include it, and `nemesis.rs` (its `Links`), next to `mod common;` with
//! `#[path = "common/relay.rs"] mod relay;`.
#![allow(dead_code)]

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::common::cluster::{make_ca, make_node_cert, node_config, Cluster};
use crate::common::{free_port, TestNode};
use crate::nemesis::Links;

type Blocked = Arc<Mutex<HashSet<(usize, usize)>>>;

pub struct Relay {
    /// The address each node really listens on.
    pub listen: Vec<SocketAddr>,
    /// The address the others dial to reach each node (its relay).
    pub front: Vec<SocketAddr>,
    blocked: Blocked,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn is_blocked(blocked: &Blocked, a: usize, b: usize) -> bool {
    let set = blocked.lock().unwrap_or_else(|e| e.into_inner());
    set.contains(&(a, b)) || set.contains(&(b, a))
}

impl Relay {
    /// Relays for `n` nodes, on free ports, forwarding already.
    pub fn new(n: usize) -> Relay {
        let listen: Vec<SocketAddr> = (0..n).map(|_| loopback(free_port())).collect();
        let front: Vec<SocketAddr> = (0..n).map(|_| loopback(free_port())).collect();
        let mut relay = Relay {
            listen: listen.clone(),
            front: front.clone(),
            blocked: Arc::default(),
            stop: Arc::default(),
            threads: Vec::new(),
        };
        for (to, &addr) in front.iter().enumerate() {
            let socket = UdpSocket::bind(addr).expect("bind relay");
            socket
                .set_read_timeout(Some(Duration::from_millis(100)))
                .expect("relay timeout");
            let (blocked, stop, listen) =
                (relay.blocked.clone(), relay.stop.clone(), listen.clone());
            relay.threads.push(std::thread::spawn(move || {
                forward_to(to, socket, listen, blocked, stop)
            }));
        }
        relay
    }

    /// Drop every datagram between nodes `a` and `b`, both ways.
    pub fn cut(&self, a: usize, b: usize) {
        self.blocked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((a, b));
    }

    pub fn heal(&self, a: usize, b: usize) {
        let mut set = self.blocked.lock().unwrap_or_else(|e| e.into_inner());
        set.remove(&(a, b));
        set.remove(&(b, a));
    }

    /// `n` configured nodes (not started) whose replication goes through
    /// this relay; start them with `Cluster::start_configured`.
    pub fn cluster(&self, extra: &str) -> Cluster {
        let n = self.front.len();
        let tls = tempfile::tempdir().expect("tempdir");
        make_ca(tls.path());
        let fronts: Vec<u16> = self.front.iter().map(SocketAddr::port).collect();
        let nodes = (0..n)
            .map(|i| {
                let name = format!("node-{}", i + 1);
                make_node_cert(&name, tls.path(), tls.path());
                let extra = format!("advertise = \"{}\"\n{extra}", self.front[i]);
                let cfg = node_config(&name, self.listen[i].port(), &fronts, tls.path(), &extra);
                TestNode::new(&name, &cfg)
            })
            .collect();
        Cluster {
            nodes,
            tls,
            repl_ports: fronts,
        }
    }
}

impl Links for Relay {
    fn cut(&self, a: usize, b: usize) {
        Relay::cut(self, a, b)
    }
    fn heal(&self, a: usize, b: usize) {
        Relay::heal(self, a, b)
    }
    fn how(&self) -> &'static str {
        "a UDP relay that drops datagrams"
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The relay in front of node `to`: datagrams from a node go to `to` from a
/// socket of that sender's own, whose answers go back to the sender.
fn forward_to(
    to: usize,
    front: UdpSocket,
    listen: Vec<SocketAddr>,
    blocked: Blocked,
    stop: Arc<AtomicBool>,
) {
    let mut upstream: HashMap<SocketAddr, UdpSocket> = HashMap::new();
    let mut threads = Vec::new();
    let mut buf = vec![0u8; 65_536];
    while !stop.load(Ordering::Relaxed) {
        let Ok((len, from)) = front.recv_from(&mut buf) else {
            continue; // the read timeout: look at `stop` again
        };
        // Only nodes speak on replication ports; anything else is dropped.
        let Some(sender) = listen.iter().position(|a| *a == from) else {
            continue;
        };
        if is_blocked(&blocked, sender, to) {
            continue;
        }
        let socket = match upstream.entry(from) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                let Ok(socket) = UdpSocket::bind(loopback(0)) else {
                    continue;
                };
                let _ = socket.set_read_timeout(Some(Duration::from_millis(100)));
                let (Ok(back), Ok(reply)) = (socket.try_clone(), front.try_clone()) else {
                    continue;
                };
                let (blocked, stop) = (blocked.clone(), stop.clone());
                threads.push(std::thread::spawn(move || {
                    let mut buf = vec![0u8; 65_536];
                    while !stop.load(Ordering::Relaxed) {
                        let Ok((len, _)) = back.recv_from(&mut buf) else {
                            continue;
                        };
                        if !is_blocked(&blocked, sender, to) {
                            let _ = reply.send_to(&buf[..len], from);
                        }
                    }
                }));
                e.insert(socket)
            }
        };
        let _ = socket.send_to(&buf[..len], listen[to]);
    }
    for t in threads {
        let _ = t.join();
    }
}
