//! Real rqlite clients against real quorate nodes: the test suite that the
//! `rqdb` Python client ships in its PyPI source distribution, run unchanged
//! against a single node and against a 3-node cluster on the ports it expects
//! (127.0.0.1:4001, 4003, 4005).
//!
//! Needs `python3` with `venv` and PyPI. Locally the tests say why they did
//! not run when something is missing; under `CI=true` that is a failure.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::Duration;

use common::cluster::Cluster;
use common::{stderr, stdout, TestNode};

/// The client version under test. Its suite is written for rqlite; quorate
/// must pass it as written.
const RQDB_VERSION: &str = "1.6.5";
/// The API ports the suite talks to.
const SUITE_PORTS: [u16; 3] = [4001, 4003, 4005];

/// Both tests use the same fixed ports, so they take turns.
static PORTS: Mutex<()> = Mutex::new(());

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Stop here (locally) or fail (in CI) because a prerequisite is missing.
fn unavailable(why: &str) {
    assert!(!in_ci(), "CI=true but the rqdb suite cannot run: {why}");
    eprintln!("SKIPPED (not in CI): the rqdb suite did not run: {why}");
}

fn run(cmd: &mut Command) -> Result<Output, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "{cmd:?} failed ({}):\n{}\n{}",
            out.status,
            stdout(&out),
            stderr(&out)
        ))
    }
}

/// The pinned Python environment and the unpacked rqdb sdist, made once
/// under the target dir and reused while the pins do not change.
struct Suite {
    python: PathBuf,
    sdist: PathBuf,
}

fn python_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python")
}

fn prepare_suite() -> Result<Suite, String> {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("rqdb-suite");
    let requirements = python_dir().join("requirements.txt");
    let pins = std::fs::read_to_string(&requirements)
        .map_err(|e| format!("{}: {e}", requirements.display()))?;
    let stamp = format!("rqdb=={RQDB_VERSION}\n{pins}");
    let venv = base.join("venv");
    let python = venv.join("bin/python");
    let sdist = base.join(format!("rqdb-{RQDB_VERSION}"));
    let stamp_path = base.join("prepared");
    if std::fs::read_to_string(&stamp_path).ok().as_deref() == Some(stamp.as_str()) {
        return Ok(Suite { python, sdist });
    }
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).map_err(|e| format!("{}: {e}", base.display()))?;
    run(Command::new("python3").args(["-m", "venv"]).arg(&venv)).map_err(|e| {
        format!("cannot make a Python venv (install python3 and python3-venv): {e}")
    })?;
    run(Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
        ])
        .arg(&requirements))
    .map_err(|e| format!("cannot install the pinned test requirements from PyPI: {e}"))?;
    // The suite exists only in the source distribution.
    let download = base.join("download");
    run(Command::new(&python)
        .args([
            "-m",
            "pip",
            "download",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "--no-binary",
            ":all:",
            "--dest",
        ])
        .arg(&download)
        .arg(format!("rqdb=={RQDB_VERSION}")))
    .map_err(|e| format!("cannot download the rqdb {RQDB_VERSION} sdist from PyPI: {e}"))?;
    let archive = download.join(format!("rqdb-{RQDB_VERSION}.tar.gz"));
    run(Command::new("tar")
        .arg("-xzf")
        .arg(&archive)
        .arg("-C")
        .arg(&base))
    .map_err(|e| format!("cannot unpack {}: {e}", archive.display()))?;
    for needed in ["tests/test_sync.py", "tests/test_async.py", "src/rqdb"] {
        if !sdist.join(needed).exists() {
            return Err(format!(
                "the rqdb {RQDB_VERSION} sdist has no {needed}; the pin no longer matches"
            ));
        }
    }
    std::fs::write(&stamp_path, stamp).map_err(|e| format!("{}: {e}", stamp_path.display()))?;
    Ok(Suite { python, sdist })
}

/// Why the suite's fixed ports cannot be used here, if they cannot.
fn ports_taken() -> Option<String> {
    let taken: Vec<u16> = SUITE_PORTS
        .iter()
        .copied()
        .filter(|&p| std::net::TcpListener::bind(("127.0.0.1", p)).is_err())
        .collect();
    (!taken.is_empty()).then(|| {
        format!("the rqdb suite needs 127.0.0.1 ports {SUITE_PORTS:?}, but {taken:?} are in use")
    })
}

/// Move a configured (not started) node's client API to `port`.
fn listen_on(node: &mut TestNode, port: u16) {
    let text = std::fs::read_to_string(&node.config_path).expect("config");
    let text = text.replace(
        &format!("listen = \"127.0.0.1:{}\"", node.api_port),
        &format!("listen = \"127.0.0.1:{port}\""),
    );
    std::fs::write(&node.config_path, text).expect("config");
    node.api_port = port;
}

/// Run the whole suite with pytest; panics with its output on failure.
fn run_suite(suite: &Suite, nodes: &[&TestNode]) {
    let out = Command::new(&suite.python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"])
        .current_dir(&suite.sdist)
        .env("PYTHONPATH", python_dir())
        .env("RQDB_SRC", suite.sdist.join("src"))
        .output()
        .expect("run pytest");
    let report = format!("{}\n{}", stdout(&out), stderr(&out));
    let logs: Vec<String> = nodes
        .iter()
        .map(|n| {
            format!(
                "{} log tail:\n{}",
                n.name,
                common::cluster::tail(&n.log(), 30)
            )
        })
        .collect();
    assert!(
        out.status.success(),
        "rqdb {RQDB_VERSION} suite failed:\n{report}\n{}",
        logs.join("\n")
    );
    // A suite that collected nothing would pass without testing anything.
    assert!(
        report.contains(" passed") && !report.contains("no tests ran"),
        "{report}"
    );
    let summary = report.lines().rev().find(|l| l.contains(" passed"));
    eprintln!("rqdb {RQDB_VERSION} suite: {}", summary.unwrap_or_default());
}

fn suite_or_skip() -> Option<Suite> {
    if let Some(why) = ports_taken() {
        unavailable(&why);
        return None;
    }
    match prepare_suite() {
        Ok(suite) => Some(suite),
        Err(why) => {
            unavailable(&why);
            None
        }
    }
}

#[test]
fn rqdb_suite_passes_against_a_single_node() {
    let _turn = PORTS.lock().unwrap_or_else(|e| e.into_inner());
    let Some(suite) = suite_or_skip() else {
        return;
    };
    let mut node = TestNode::new("solo", "");
    listen_on(&mut node, SUITE_PORTS[0]);
    node.start(&["--bootstrap"]);
    node.wait_primary(Duration::from_secs(30));
    run_suite(&suite, &[&node]);
}

#[test]
fn rqdb_suite_passes_against_a_three_node_cluster() {
    let _turn = PORTS.lock().unwrap_or_else(|e| e.into_inner());
    let Some(suite) = suite_or_skip() else {
        return;
    };
    let mut cluster = Cluster::new(3, "");
    for (node, port) in cluster.nodes.iter_mut().zip(SUITE_PORTS) {
        listen_on(node, port);
    }
    let cluster = cluster.start_configured();
    let nodes: Vec<&TestNode> = cluster.nodes.iter().collect();
    run_suite(&suite, &nodes);
}
