//! The admin socket refuses other users by their peer credentials, even
//! when its file mode would let them in; and no key material reaches the
//! logs of a running cluster.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::cluster::{tail, Cluster};
use common::{TestNode, QUORATE};

/// `nobody` on Debian-like systems.
const NOBODY: u32 = 65534;

fn can_switch_user(what: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    common::prerequisite_missing(what, "needs root to run the CLI as another user")
}

/// `quorate --show-cluster-status` as uid/gid `NOBODY`.
fn status_as_nobody(node: &TestNode) -> std::process::Output {
    Command::new(QUORATE)
        .arg("--config")
        .arg(&node.config_path)
        .arg("--show-cluster-status")
        .uid(NOBODY)
        .gid(NOBODY)
        .stdin(Stdio::null())
        .output()
        .expect("run quorate as nobody")
}

#[test]
fn the_admin_socket_refuses_other_users() {
    if !can_switch_user("the_admin_socket_refuses_other_users") {
        return;
    }
    let mut node = TestNode::new("node-a", "");
    node.start(&["--bootstrap"]);
    node.wait_primary(Duration::from_secs(30));
    // nobody may read the config and reach the runtime directory; only
    // the socket itself decides.
    std::fs::set_permissions(node.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&node.config_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let socket = node.dir.path().join("run").join("quorate.sock");
    assert!(socket.exists(), "no admin socket at {}", socket.display());

    // Root (the daemon's user here) is served.
    let out = node.cli(&["--show-cluster-status"]);
    assert!(out.status.success(), "{}", common::stderr(&out));

    // As installed (0660): the file mode turns nobody away, with a reason.
    let out = status_as_nobody(&node);
    assert!(
        !out.status.success(),
        "nobody read the status: {}",
        common::stdout(&out)
    );
    let err = common::stderr(&out).to_lowercase();
    assert!(err.contains("permission denied"), "{err}");

    // A socket left world-writable (a runtime directory made by hand, a
    // umask of 0): the peer-credential check still refuses, and says why.
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = status_as_nobody(&node);
    assert!(
        !out.status.success(),
        "nobody read the status: {}",
        common::stdout(&out)
    );
    let err = common::stderr(&out);
    assert!(
        err.contains("permission denied") && err.contains(&format!("uid {NOBODY}")),
        "the refusal must name the uid: {err}"
    );
    let log = node.log();
    assert!(
        log.lines()
            .any(|l| l.contains("admin connection refused") && l.contains(&NOBODY.to_string())),
        "the daemon must log the refusal: {}",
        tail(&log, 20)
    );
    // And it still serves its own user.
    let out = node.cli(&["--show-cluster-status"]);
    assert!(out.status.success(), "{}", common::stderr(&out));
}

#[test]
fn no_key_material_reaches_the_logs() {
    let mut c = Cluster::start(2, "");
    c.nodes[0].execute_ok(serde_json::json!([
        "CREATE TABLE t(id INTEGER PRIMARY KEY)"
    ]));
    c.nodes[1].execute_ok(serde_json::json!([["INSERT INTO t(id) VALUES(1)"]]));
    c.wait_converged(&[0, 1], "t", Duration::from_secs(30));
    // A refused peer and a restart log the most about TLS.
    c.nodes[1].stop();
    c.nodes[1].start(&[]);
    c.wait_size(&[0, 1], 2, Duration::from_secs(60));
    let mut logs = String::new();
    for n in &c.nodes {
        logs.push_str(&n.log());
        for args in [&["--show-cluster-status"][..], &["--recover"][..]] {
            let out = n.cli(args);
            logs.push_str(&common::stdout(&out));
            logs.push_str(&common::stderr(&out));
        }
    }
    assert!(!logs.is_empty());
    assert!(
        !logs.contains("PRIVATE KEY"),
        "a PEM private key in the logs"
    );
    // Any run of a key file's base64 would be a leak, whatever the framing.
    let mut keys = vec![c.tls.path().join("ca.key")];
    keys.extend(
        c.nodes
            .iter()
            .map(|n| c.tls.path().join(format!("{}.key", n.name))),
    );
    for key in keys {
        let pem = std::fs::read_to_string(&key).unwrap();
        for line in pem
            .lines()
            .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        {
            assert!(
                !logs.contains(&line[..16]),
                "material of {} appears in the logs",
                key.display()
            );
        }
    }
}
