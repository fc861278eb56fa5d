//! Disk and resource faults on real file systems (root: small tmpfs and
//! loop-mounted ext4): a full disk or a file system that turns read-only
//! under a running node makes it refuse writes with a clear error while it
//! keeps what it acknowledged, without damaging db.sqlite, the log or
//! grastate.dat; once space returns it serves again without a restart (a
//! member of a cluster catches up by itself). A torn write at the end of
//! the log (crash in the middle of an append) is cut on restart, said in
//! the log, and the data agrees.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::cluster::{tail, Cluster};
use common::TestNode;
use serde_json::{json, Value};

/// Mounting needs root; CI runs as root (`.ci/run`), so there a missing
/// privilege is a failure, and elsewhere a note on stderr.
fn can_mount(what: &str) -> bool {
    let probe = tempfile::tempdir().unwrap();
    let ok = nix::unistd::geteuid().is_root()
        && Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(probe.path())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
    if ok {
        let _ = Command::new("umount").arg(probe.path()).status();
        return true;
    }
    common::prerequisite_missing(what, "needs root and mount(8) to make a small tmpfs")
}

/// A tmpfs mounted on a node's data directory, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        run(
            "mount",
            &["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"],
            at,
        );
        Tmpfs(at.to_path_buf())
    }

    fn remount(&self, opts: &str) {
        run("mount", &["-o", &format!("remount,{opts}")], &self.0);
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn run(cmd: &str, args: &[&str], path: &Path) {
    let out = Command::new(cmd).args(args).arg(path).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?} {}: {}",
        path.display(),
        common::stderr(&out)
    );
}

/// POST without panicking on transport errors; `None` when there was no
/// HTTP answer at all.
fn try_post(node: &TestNode, body: &Value) -> Option<(u16, String)> {
    let resp = node
        .agent
        .post(&node.url("/db/execute"))
        .send_json(body.clone());
    match resp {
        Ok(r) => Some((r.status(), r.into_string().unwrap_or_default())),
        Err(ureq::Error::Status(code, r)) => Some((code, r.into_string().unwrap_or_default())),
        Err(_) => None,
    }
}

/// A 200 with no per-statement error: the write is acknowledged.
fn acknowledged(answer: &Option<(u16, String)>) -> bool {
    matches!(answer, Some((200, text)) if !text.contains("\"error\""))
}

fn integrity_check(db: &Path) {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let verdict: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(verdict, "ok", "{} is damaged", db.display());
}

/// Row ids as the node's own database holds them (`level=none` reads
/// even a node that left the primary component).
fn ids(node: &TestNode) -> Vec<i64> {
    node.query_rows_level("SELECT id FROM t ORDER BY id", "none")
        .iter()
        .map(|r| r[0].as_i64().unwrap())
        .collect()
}

fn start_on_tmpfs(size: &str) -> (TestNode, Tmpfs) {
    let mut node = TestNode::new("node-a", "");
    let fs = Tmpfs::mount(&node.data_dir(), size);
    node.start(&["--bootstrap"]);
    node.wait_primary(Duration::from_secs(30));
    node.execute_ok(json!(["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"]));
    (node, fs)
}

/// After a stop, with the files where the node left them: the database is
/// sound, grastate.dat parses, and a restart replays the log and serves.
fn restart_and_check(node: &mut TestNode, kept: &[i64]) {
    if node.child.is_some() {
        let _ = node.stop();
    }
    integrity_check(&node.data_dir().join("db.sqlite"));
    quorate::grastate::GrastateFile::read(&node.grastate_path())
        .expect("grastate.dat must stay readable");
    node.start(&[]);
    node.wait_primary(Duration::from_secs(60));
    // Linearizable: Primary comes before the replay of what the log holds
    // beyond the database (a level=none read could still miss it).
    let now: Vec<i64> = node
        .query_rows_level("SELECT id FROM t ORDER BY id", "linearizable")
        .iter()
        .map(|r| r[0].as_i64().unwrap())
        .collect();
    for id in kept {
        assert!(now.contains(id), "acknowledged row {id} is gone: {now:?}");
    }
    let next = now.last().copied().unwrap_or(0) + 1_000;
    node.execute_ok(json!([["INSERT INTO t(id, v) VALUES(?, 'after')", next]]));
}

/// The node's fault report from /status, if any.
fn not_primary_reason(node: &TestNode) -> Option<String> {
    let (_, s) = node.get("/status");
    s["cluster"]["not_primary_reason"]
        .as_str()
        .map(str::to_string)
}

/// Write rows of `kib` KiB with ids from `first` on `writer` until
/// `fault_seen` says (after each write) that the fault under test has
/// shown; the ids acknowledged and the last answer. 400 rows must fill the
/// disk (the log and the database each keep a copy of every row).
fn fill_until_refused(
    writer: &TestNode,
    first: i64,
    kib: usize,
    fault_seen: impl Fn(&Option<(u16, String)>) -> bool,
) -> (Vec<i64>, Option<(u16, String)>) {
    let blob = "x".repeat(kib * 1024);
    let mut kept = Vec::new();
    for id in first..first + 400 {
        let started = Instant::now();
        let answer = try_post(
            writer,
            &json!([["INSERT INTO t(id, v) VALUES(?, ?)", id, blob]]),
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "a write on a full disk hung for {:?}",
            started.elapsed()
        );
        if acknowledged(&answer) {
            kept.push(id);
        }
        if fault_seen(&answer) {
            return (kept, answer);
        }
    }
    panic!("400 writes of {kib} KiB did not fill the disk")
}

/// Retry a write on `node` until it is acknowledged (the node serves
/// again); panics with the node's log after `within`.
fn write_when_served(node: &TestNode, id: i64, within: Duration) {
    let started = Instant::now();
    let deadline = started + within;
    loop {
        let answer = try_post(
            node,
            &json!([["INSERT INTO t(id, v) VALUES(?, 'back')", id]]),
        );
        if acknowledged(&answer) {
            eprintln!(
                "{} took a write again after {:?}",
                node.name,
                started.elapsed()
            );
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} did not serve writes again within {within:?} (no restart): {answer:?}\nlog:\n{}",
            node.name,
            tail(&node.log(), 40)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn says_disk_full(text: &str) -> bool {
    let lower = text.to_lowercase();
    lower.contains("no space left") || lower.contains("disk is full")
}

#[test]
fn a_full_disk_refuses_writes_and_resumes_without_a_restart_when_space_returns() {
    if !can_mount("a_full_disk_refuses_writes_and_resumes_without_a_restart_when_space_returns") {
        return;
    }
    let (mut node, fs) = start_on_tmpfs("24m");
    let pid = node.child.as_ref().map(|c| c.id());
    // Until Raft itself stopped on the full disk (a refusal in the local
    // SQLite transaction alone leaves the node Primary).
    let (kept, refusal) = fill_until_refused(&node, 1, 256, |answer| {
        !acknowledged(answer) && not_primary_reason(&node).is_some()
    });
    eprintln!("refused after {} writes: {refusal:?}", kept.len());
    assert!(!kept.is_empty(), "nothing fitted before the disk filled");
    let log = node.log();
    assert!(!log.contains("panicked"), "{}", tail(&log, 40));
    let (code, text) = refusal
        .clone()
        .expect("the node must answer, not drop the connection");
    let lower = text.to_lowercase();
    assert!(
        code >= 400
            && (lower.contains("disk") || lower.contains("space") || lower.contains("full")),
        "the refusal must say the disk is full: {code} {text}\nlog:\n{}",
        tail(&log, 30)
    );

    // While full: the status, /readyz and every refusal say what failed and
    // what to do; reads keep working; the fault is logged once.
    let reason = not_primary_reason(&node).expect("a fault report");
    let mount = node.data_dir().canonicalize().unwrap();
    for needle in [
        "storage fault".to_string(),
        format!(
            "free space on the file system mounted at {}",
            mount.display()
        ),
        "resumes by itself".to_string(),
    ] {
        assert!(
            reason.contains(&needle),
            "status lacks {needle:?}: {reason}"
        );
    }
    assert!(says_disk_full(&reason), "{reason}");
    let readyz = node.agent.get(&node.url("/readyz")).call();
    match readyz {
        Err(ureq::Error::Status(503, r)) => {
            let body = r.into_string().unwrap();
            assert!(body.contains("free space on"), "/readyz: {body}");
        }
        other => panic!("/readyz must be 503 while the disk is full: {other:?}"),
    }
    let (code, text) = try_post(
        &node,
        &json!([["INSERT INTO t(id, v) VALUES(100000, 'no')"]]),
    )
    .unwrap();
    assert!(
        code == 503 && text.contains("free space on") && says_disk_full(&text),
        "a write while full must be refused naming the fault: {code} {text}"
    );
    let now = ids(&node);
    for id in &kept {
        assert!(now.contains(id), "acknowledged row {id} is gone while full");
    }
    // A few retries go by (every 1-2 s); the log said it once.
    std::thread::sleep(Duration::from_secs(5));
    let log = node.log();
    let reports = log
        .lines()
        .filter(|l| l.contains("storage fault: ") && !l.contains("lost Primary"))
        .count();
    assert_eq!(
        reports,
        1,
        "the fault must be logged once:\n{}",
        tail(&log, 40)
    );

    // Space returns: the same file system, bigger; the same process serves again.
    fs.remount("size=128m");
    write_when_served(&node, 100_001, Duration::from_secs(90));
    assert_eq!(
        node.child.as_ref().map(|c| c.id()),
        pid,
        "the node restarted"
    );
    assert!(
        node.log().contains("storage fault cleared"),
        "{}",
        tail(&node.log(), 30)
    );
    assert_eq!(not_primary_reason(&node), None);
    let now = ids(&node);
    for id in kept.iter().chain([&100_001]) {
        assert!(
            now.contains(id),
            "acknowledged row {id} is gone after resuming"
        );
    }
    restart_and_check(&mut node, &[kept.clone(), vec![100_001]].concat());
}

/// One member of three on a small disk: it fills and drops out while the
/// other two keep committing; once space returns it catches up by itself
/// (no restart) and all three hold the same rows, every acknowledged one.
/// node-1 bootstraps, so it leads at first.
fn a_member_with_a_full_disk_catches_up(full: usize) {
    let mut c = Cluster::new(3, "");
    let fs = Tmpfs::mount(&c.nodes[full].data_dir(), "12m");
    c.nodes[0].start(&["--bootstrap"]);
    c.nodes[0].wait_primary(Duration::from_secs(30));
    for node in c.nodes.iter_mut().skip(1) {
        node.start(&[]);
    }
    c.wait_size(&[0, 1, 2], 3, Duration::from_secs(60));
    let others: Vec<usize> = (0..3).filter(|&i| i != full).collect();
    let pid = c.nodes[full].child.as_ref().map(|ch| ch.id());
    c.nodes[others[0]].execute_ok(json!(["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"]));

    // Writes go to another node until the full one reports the fault. Rows
    // are small enough that a follower a few entries behind catches up
    // within one replication round trip on a loaded machine.
    let (mut kept, _) = fill_until_refused(&c.nodes[others[0]], 1, 64, |_| {
        not_primary_reason(&c.nodes[full]).is_some_and(|r| says_disk_full(&r))
    });
    let reason = not_primary_reason(&c.nodes[full]).unwrap();
    assert!(reason.contains("free space on"), "{reason}");
    let (code, text) = try_post(
        &c.nodes[full],
        &json!([["INSERT INTO t(id, v) VALUES(100000, 'no')"]]),
    )
    .unwrap();
    assert!(
        code == 503 && text.contains("free space on"),
        "the full member must refuse writes naming the fault: {code} {text}"
    );
    // The other two go on (a new leader among them if the full one led).
    c.wait_size(&others, 3, Duration::from_secs(60));
    for id in 1_000..1_010 {
        c.nodes[others[id as usize % 2]]
            .execute_ok(json!([["INSERT INTO t(id, v) VALUES(?, 'two')", id]]));
        kept.push(id);
    }
    c.wait_converged(&others, "t", Duration::from_secs(60));

    fs.remount("size=256m");
    c.wait_size(&[0, 1, 2], 3, Duration::from_secs(120));
    c.wait_converged(&[0, 1, 2], "t", Duration::from_secs(120));
    let name = c.nodes[full].name.clone();
    assert_eq!(
        c.nodes[full].child.as_ref().map(|ch| ch.id()),
        pid,
        "{name} restarted"
    );
    assert!(
        c.nodes[full].log().contains("storage fault cleared"),
        "{}",
        tail(&c.nodes[full].log(), 30)
    );
    for node in &c.nodes {
        let now = ids(node);
        for id in &kept {
            assert!(
                now.contains(id),
                "acknowledged row {id} is missing on {}",
                node.name
            );
        }
    }
    // And it takes writes itself again.
    write_when_served(&c.nodes[full], 100_001, Duration::from_secs(60));
    c.wait_converged(&[0, 1, 2], "t", Duration::from_secs(60));
    let _ = c.nodes[full].stop();
    integrity_check(&c.nodes[full].data_dir().join("db.sqlite"));
    quorate::grastate::GrastateFile::read(&c.nodes[full].grastate_path())
        .expect("grastate.dat must stay readable");
}

#[test]
fn a_follower_with_a_full_disk_drops_out_and_catches_up_when_space_returns() {
    if can_mount("a_follower_with_a_full_disk_drops_out_and_catches_up_when_space_returns") {
        a_member_with_a_full_disk_catches_up(2);
    }
}

/// The leader's disk fills: the other two elect a leader and go on.
#[test]
fn the_leader_with_a_full_disk_drops_out_and_catches_up_when_space_returns() {
    if can_mount("the_leader_with_a_full_disk_drops_out_and_catches_up_when_space_returns") {
        a_member_with_a_full_disk_catches_up(0);
    }
}

/// Loop devices, mkfs.ext4 and ext4's error trigger: root and e2fsprogs
/// (`.ci/run` installs it); as with `can_mount`, a failure under CI.
fn can_loop_mount(what: &str) -> bool {
    if !can_mount(what) {
        return false;
    }
    let probe = tempfile::tempdir().unwrap();
    let works = std::panic::catch_unwind(|| {
        let fs = LoopExt4::mount(probe.path(), &probe.path().join("mnt"), 8);
        assert!(
            fs.trigger_file().exists(),
            "no {}",
            fs.trigger_file().display()
        );
    });
    if works.is_ok() {
        return true;
    }
    common::prerequisite_missing(
        what,
        "needs losetup, mkfs.ext4 (e2fsprogs) and loop devices",
    )
}

/// An ext4 file system in an image file, on a loop device, mounted with
/// `errors=remount-ro` so that an error turns it read-only at once, open
/// files or not. Unmounted and detached on drop.
struct LoopExt4 {
    image: PathBuf,
    device: String,
    at: PathBuf,
}

impl LoopExt4 {
    fn mount(image_dir: &Path, at: &Path, mib: u64) -> LoopExt4 {
        let image = image_dir.join("ext4.img");
        std::fs::File::create(&image)
            .unwrap()
            .set_len(mib << 20)
            .unwrap();
        run("mkfs.ext4", &["-q", "-F"], &image);
        let out = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&image)
            .output()
            .unwrap();
        assert!(out.status.success(), "losetup: {}", common::stderr(&out));
        let device = common::stdout(&out).trim().to_string();
        let fs = LoopExt4 {
            image,
            device,
            at: at.to_path_buf(),
        };
        fs.mount_again();
        fs
    }

    fn mount_again(&self) {
        std::fs::create_dir_all(&self.at).unwrap();
        run(
            "mount",
            &["-t", "ext4", "-o", "errors=remount-ro", &self.device],
            &self.at,
        );
    }

    /// ext4's own test hook: writing to it reports a file system error.
    fn trigger_file(&self) -> PathBuf {
        let name = Path::new(&self.device).file_name().unwrap();
        Path::new("/sys/fs/ext4")
            .join(name)
            .join("trigger_fs_error")
    }

    /// The kernel finds an error: the file system goes read-only under
    /// the running node (as after a failing disk).
    fn fail(&self) {
        std::fs::write(self.trigger_file(), "1").unwrap();
    }

    /// What an operator does after the error: unmount, check, mount again.
    /// Only possible once nothing holds the file system open.
    fn repair(&self) {
        run("umount", &[], &self.at);
        let out = Command::new("e2fsck")
            .args(["-f", "-y"])
            .arg(&self.image)
            .output()
            .unwrap();
        // 0: clean; 1: errors corrected (the triggered error is recorded).
        assert!(
            matches!(out.status.code(), Some(0 | 1)),
            "e2fsck: {}{}",
            common::stdout(&out),
            common::stderr(&out)
        );
        self.mount_again();
    }
}

impl Drop for LoopExt4 {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.at).status();
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
    }
}

/// A file system that turns read-only under a running node (ext4 with
/// `errors=remount-ro` after an error): writes are refused naming it,
/// reads go on, nothing acknowledged is lost or damaged. Linux does not
/// let such a file system become writable again while files on it are
/// open (a remount, even of a bind mount, is refused while files are open
/// for writing, and ext4 keeps an emergency read-only state until it is
/// unmounted), so here the node is stopped, the file system checked and
/// mounted again, and the restarted node has everything. Resuming without
/// a restart once the disk takes writes again is the full-disk tests' job
/// (the same mechanism).
#[test]
fn a_data_dir_that_turns_read_only_under_a_running_node_refuses_writes_and_loses_nothing() {
    let what =
        "a_data_dir_that_turns_read_only_under_a_running_node_refuses_writes_and_loses_nothing";
    if !can_loop_mount(what) {
        return;
    }
    let mut node = TestNode::new("node-a", "");
    let fs = LoopExt4::mount(node.dir.path(), &node.data_dir(), 64);
    node.start(&["--bootstrap"]);
    node.wait_primary(Duration::from_secs(30));
    node.execute_ok(json!(["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"]));
    let kept: Vec<i64> = (1..=5).collect();
    for id in &kept {
        node.execute_ok(json!([["INSERT INTO t(id, v) VALUES(?, 'before')", id]]));
    }

    fs.fail();
    let names_read_only = |text: &str| {
        let lower = text.to_lowercase();
        lower.contains("read-only") || lower.contains("readonly")
    };
    // Each write is refused naming the cause; the first may fail in the
    // log append (its outcome then unknown), the next ones find the node
    // out of the primary component with the fault report.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut id = 100;
    let reason = loop {
        let started = Instant::now();
        let answer = try_post(
            &node,
            &json!([["INSERT INTO t(id, v) VALUES(?, 'ro')", id]]),
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "a write on a read-only disk hung"
        );
        let (code, text) = answer.expect("the node must answer, not drop the connection");
        assert!(
            code >= 400 && names_read_only(&text),
            "a write on a read-only disk must be refused naming it: {code} {text}\nlog:\n{}",
            tail(&node.log(), 30)
        );
        if let Some(reason) = not_primary_reason(&node) {
            break reason;
        }
        assert!(
            Instant::now() < deadline,
            "the node did not report the read-only data directory:\n{}",
            tail(&node.log(), 30)
        );
        id += 1;
        std::thread::sleep(Duration::from_millis(200));
    };
    let mount = node.data_dir().canonicalize().unwrap();
    assert!(
        names_read_only(&reason)
            && reason.contains(&format!(
                "make the file system mounted at {} writable again",
                mount.display()
            )),
        "{reason}"
    );
    // Reads are served from what the node holds.
    assert_eq!(ids(&node), kept);
    let log = node.log();
    assert!(!log.contains("panicked"), "{}", tail(&log, 40));

    let _ = node.stop();
    fs.repair();
    restart_and_check(&mut node, &kept);
}

/// A file system that came back read-only after a reboot: the node must
/// refuse to start, say why, and leave its files intact.
#[test]
fn a_read_only_data_dir_is_refused_at_start_and_nothing_is_lost() {
    if !can_mount("a_read_only_data_dir_is_refused_at_start_and_nothing_is_lost") {
        return;
    }
    let (mut node, fs) = start_on_tmpfs("64m");
    let kept: Vec<i64> = (1..=5).collect();
    for id in &kept {
        node.execute_ok(json!([["INSERT INTO t(id, v) VALUES(?, 'before')", id]]));
    }
    let _ = node.stop();
    let grastate = std::fs::read(node.grastate_path()).unwrap();
    fs.remount("ro");
    let started = Instant::now();
    let out = Command::new(common::QUORATED)
        .arg("--config")
        .arg(&node.config_path)
        .output()
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "start on a read-only disk hung"
    );
    assert!(
        !out.status.success(),
        "it started on a read-only data directory"
    );
    let err = common::stderr(&out);
    let lower = err.to_lowercase();
    assert!(
        lower.contains("read-only") || lower.contains("readonly") || lower.contains("read only"),
        "the error must say the data directory is read-only: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    fs.remount("rw");
    assert_eq!(
        std::fs::read(node.grastate_path()).unwrap(),
        grastate,
        "grastate.dat changed"
    );
    node.start(&[]);
    node.wait_primary(Duration::from_secs(60));
    assert_eq!(ids(&node), kept);
    restart_and_check(&mut node, &kept);
}

/// The newest segment file of a node's log.
fn last_segment(node: &TestNode) -> PathBuf {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(node.data_dir().join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segs.sort();
    segs.pop().expect("a log segment")
}

#[test]
fn a_torn_log_tail_is_cut_on_restart_and_the_data_agrees() {
    let c = Cluster::start(3, "");
    c.nodes[0].execute_ok(json!(["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"]));
    c.wait_synced(&[0, 1, 2], Duration::from_secs(30));
    for id in 1..=21 {
        c.nodes[id % 3].execute_ok(json!([["INSERT INTO t(id, v) VALUES(?, 'x')", id]]));
    }
    c.wait_converged(&[0, 1, 2], "t", Duration::from_secs(30));
    let mut c = c;

    // Power cut on node-3 in the middle of an append: the start of a
    // record (a copy of its last one, cut in half) where the next record
    // was to go, in the zeroes the log reserves ahead of its writes.
    c.nodes[2].kill();
    let seg = last_segment(&c.nodes[2]);
    let bytes = std::fs::read(&seg).unwrap();
    let mut at = 0usize;
    let mut last = 0usize;
    while at + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        last = at;
        at += 8 + len;
    }
    assert!(
        bytes[at..].iter().all(|b| *b == 0),
        "the segment holds something after its records"
    );
    let mut torn = bytes.clone();
    let half = bytes[last..at].len() / 2;
    torn.resize(torn.len().max(at + half), 0);
    torn[at..at + half].copy_from_slice(&bytes[last..last + half]);
    std::fs::write(&seg, &torn).unwrap();

    // More writes while node-2 is down, so it has to catch up too.
    for id in 22..=25 {
        c.nodes[0].execute_ok(json!([["INSERT INTO t(id, v) VALUES(?, 'y')", id]]));
    }
    c.nodes[2].start(&[]);
    c.wait_size(&[0, 1, 2], 3, Duration::from_secs(60));
    let seqno = c.wait_converged(&[0, 1, 2], "t", Duration::from_secs(60));
    assert!(seqno > 0);
    let log = c.nodes[2].log();
    assert!(
        log.lines()
            .any(|l| l.contains("cutting the torn tail") && l.contains(&seg.display().to_string())),
        "the repair must be logged with the file: {}",
        tail(&log, 30)
    );
    assert_eq!(ids(&c.nodes[2]), (1..=25).collect::<Vec<i64>>());

    // Same again with zeroes (an extended but unwritten file).
    c.nodes[2].kill();
    let seg = last_segment(&c.nodes[2]);
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes.extend_from_slice(&[0u8; 4096]);
    std::fs::write(&seg, &bytes).unwrap();
    c.nodes[2].start(&[]);
    c.wait_size(&[0, 1, 2], 3, Duration::from_secs(60));
    c.nodes[2].execute_ok(json!([["INSERT INTO t(id, v) VALUES(26, 'z')"]]));
    c.wait_converged(&[0, 1, 2], "t", Duration::from_secs(60));
    assert_eq!(ids(&c.nodes[0]), (1..=26).collect::<Vec<i64>>());
    integrity_check(&c.nodes[0].data_dir().join("db.sqlite"));
}
