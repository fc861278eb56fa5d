//! A node with a certificate from another CA cannot join, and the refusal
//! names the peer and the reason.

mod common;

use std::time::Duration;

use common::cluster::{make_ca, make_node_cert, node_config, Cluster};

#[test]
fn certificate_from_another_ca_cannot_join() {
    let c = Cluster::start(2, "");
    let rogue_ca = tempfile::tempdir().unwrap();
    make_ca(rogue_ca.path());
    make_node_cert("node-9", rogue_ca.path(), rogue_ca.path());
    let port = common::free_port();
    let mut rogue = common::TestNode::new(
        "node-9",
        &node_config("node-9", port, &c.repl_ports, rogue_ca.path(), ""),
    );
    rogue.start(&[]);
    std::thread::sleep(Duration::from_secs(4));
    let (code, _) = rogue.get("/readyz");
    assert_eq!(code, 503, "a node from another CA must not become Primary");
    assert_eq!(
        c.status(0)["cluster"]["cluster_size"],
        2,
        "the cluster must not grow"
    );
    let member_logs = format!("{}{}", c.nodes[0].log(), c.nodes[1].log());
    let rogue_log = rogue.log();
    let said_why = |l: &str| {
        l.contains("127.0.0.1")
            && (l.contains("certificate") || l.contains("TLS") || l.contains("refused"))
    };
    assert!(
        member_logs.lines().any(said_why) || rogue_log.lines().any(said_why),
        "the refusal must be logged with the peer address and why; members:\n{}\nrogue:\n{}",
        common::cluster::tail(&member_logs, 20),
        common::cluster::tail(&rogue_log, 20)
    );
}
