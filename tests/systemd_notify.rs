//! The daemon speaks systemd's notify protocol to a real datagram socket in
//! NOTIFY_SOCKET: READY=1 once serving, STATUS= lines, STOPPING=1 on stop.

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::*;

fn messages(
    socket: &UnixDatagram,
    until: impl Fn(&[String]) -> bool,
    within: Duration,
) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline && !until(&got) {
        if let Ok(n) = socket.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    got
}

#[test]
fn ready_status_and_stopping_reach_the_notify_socket() {
    let mut node = TestNode::new("node-a", "");
    let sock_path = node.dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&sock_path).expect("bind notify socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    node.env
        .push(("NOTIFY_SOCKET".into(), sock_path.display().to_string()));

    node.start(&["--bootstrap"]);
    let got = messages(
        &socket,
        |m| m.iter().any(|s| s == "READY=1") && m.iter().any(|s| s.contains("Synced (Primary)")),
        Duration::from_secs(20),
    );
    assert!(got.iter().any(|s| s == "READY=1"), "no READY=1 in {got:?}");
    assert!(
        got.iter()
            .any(|s| s.starts_with("STATUS=") && s.contains("Synced (Primary)")),
        "no Primary STATUS in {got:?}"
    );

    node.signal(nix::sys::signal::Signal::SIGTERM);
    let got = messages(
        &socket,
        |m| m.iter().any(|s| s.contains("STOPPING=1")),
        Duration::from_secs(20),
    );
    assert!(
        got.iter().any(|s| s.contains("STOPPING=1")),
        "no STOPPING=1 in {got:?}"
    );
    assert!(node.stop().success());
}
