//! Resuming after a storage fault, without a restart.
//!
//! openraft stops its core for good on any storage error: a full disk, a
//! file system gone read-only, EIO on the log or the database. The node is
//! then not Primary: it refuses writes and still serves reads of what it
//! holds (`level=none`). The watcher here notices the stop, says once what
//! failed and what to do, and probes the data directory with backoff. Once a
//! probe file can be written and synced again it re-reads the log from its
//! files (so a half-written append is cut exactly like a torn tail after a
//! power cut) and starts Raft again on the same storage: same node id,
//! membership and incarnation. The state machine re-reads its position from
//! SQLite, where each apply commits with the position in one transaction,
//! so a write-set whose apply failed left nothing behind and is applied
//! again, never skipped. A single node becomes Primary again by itself; a
//! member of a cluster is caught up by the leader (IST) and rejoins.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::error::Fatal;
use tokio::sync::watch;

use super::{OrderError, Sequencer};

/// Written, synced and removed in the data directory and in the log
/// directory to learn whether they take writes again.
const PROBE_FILE: &str = ".quorate-write-probe";
/// The probe asks for some room, not one block: a disk with a few KiB free
/// would let Raft restart only to fail again on the next write-set.
const PROBE_BYTES: usize = 1 << 20;
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(2);
/// A fault again within this long of resuming is the same trouble (a disk
/// with just enough room for the probe, damage that a restart meets
/// again): the first retry then waits longer, doubling up to
/// [`MAX_REPEAT_WAIT`], so the node does not restart Raft in a tight loop.
const RELAPSE_WITHIN: Duration = Duration::from_secs(60);
const MAX_REPEAT_WAIT: Duration = Duration::from_secs(60);

/// What kind of fault the error text describes, for the advice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FaultKind {
    Full,
    ReadOnly,
    Other,
}

fn classify(error: &str) -> FaultKind {
    let lower = error.to_lowercase();
    if lower.contains("no space left")
        || lower.contains("disk is full")
        || lower.contains("quota exceeded")
    {
        FaultKind::Full
    } else if lower.contains("read-only") || lower.contains("readonly") {
        FaultKind::ReadOnly
    } else {
        FaultKind::Other
    }
}

/// The mount point holding `path`: the longest mount point in `mountinfo`
/// (the text of /proc/self/mountinfo) that `path` lies under.
fn mount_point_in(mountinfo: &str, path: &Path) -> Option<PathBuf> {
    mountinfo
        .lines()
        // Field 5 is the mount point, with spaces and the like octal-escaped.
        .filter_map(|line| line.split(' ').nth(4))
        .map(|m| PathBuf::from(m.replace("\\040", " ").replace("\\011", "\t")))
        .filter(|m| path.starts_with(m))
        .max_by_key(|m| m.components().count())
}

fn mount_point(path: &Path) -> Option<PathBuf> {
    let path = std::fs::canonicalize(path).ok()?;
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mount_point_in(&info, &path)
}

/// The operator's message: what failed, what the node does meanwhile, and
/// what to do.
fn describe(error: &str, data_dir: &Path, mount: Option<&Path>) -> String {
    // openraft's boxed error source prefixes the type name: noise here.
    let error = error.replace("std::io::error::Error: ", "");
    let fs = match mount {
        Some(m) => format!("the file system mounted at {}", m.display()),
        None => format!("the file system holding {}", data_dir.display()),
    };
    let advice = match classify(&error) {
        FaultKind::Full => format!("free space on {fs}"),
        FaultKind::ReadOnly => format!("make {fs} writable again"),
        FaultKind::Other => format!("check the disk under {fs} (see dmesg)"),
    };
    format!(
        "storage fault: {error}. This node stopped ordering write-sets and refuses writes; what it \
         acknowledged is kept and reads with level=none are served. What to do: {advice}; the \
         node retries every {} s and resumes by itself",
        MAX_RETRY.as_secs()
    )
}

/// Write, sync and remove a probe file in `dir`.
fn probe(dir: &Path) -> std::io::Result<()> {
    let path = dir.join(PROBE_FILE);
    let result = (|| {
        let mut f = std::fs::File::create(&path)?;
        f.write_all(&vec![0u8; PROBE_BYTES])?;
        f.sync_all()
    })();
    let removed = std::fs::remove_file(&path);
    result
        .and(removed)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

impl Sequencer {
    /// Why Raft is stopped on a storage fault and what to do, while it is.
    pub fn storage_fault(&self) -> Option<String> {
        self.storage_fault
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_storage_fault(&self, fault: Option<String>) {
        *self.storage_fault.lock().unwrap_or_else(|p| p.into_inner()) = fault;
    }

    /// Watch Raft for a stop on a storage error and restart it once the
    /// disk takes writes again (see the module doc). Runs until `shutdown`
    /// or [`Sequencer::shutdown`].
    pub async fn resume_after_storage_faults(&self, mut shutdown: watch::Receiver<bool>) {
        let mut last_resumed: Option<std::time::Instant> = None;
        let mut relapses: u32 = 0;
        loop {
            let raft = self.raft();
            let mut metrics = raft.metrics();
            let stopped = loop {
                if let Err(fatal) = metrics.borrow_watched().running_state.clone() {
                    break fatal;
                }
                tokio::select! {
                    changed = metrics.changed() => if changed.is_err() {
                        match metrics.borrow_watched().running_state.clone() {
                            Err(fatal) => break fatal,
                            Ok(()) => break Fatal::Stopped,
                        }
                    },
                    _ = shutdown.changed() => return,
                }
            };
            drop(metrics);
            drop(raft);
            if self.stopping.load(Ordering::SeqCst) || *shutdown.borrow() {
                return;
            }
            match stopped {
                Fatal::StorageError(e) => {
                    relapses = match last_resumed {
                        Some(at) if at.elapsed() < RELAPSE_WITHIN => relapses.saturating_add(1),
                        _ => 0,
                    };
                    let first_wait = FIRST_RETRY
                        .saturating_mul(1 << relapses.min(6))
                        .min(MAX_REPEAT_WAIT);
                    if !self.resume(&e.to_string(), first_wait, &mut shutdown).await {
                        return;
                    }
                    last_resumed = Some(std::time::Instant::now());
                }
                // Stopped on purpose (fenced, removed, a forced bootstrap
                // about to replace it): look again in a while.
                _ => {
                    tokio::select! {
                        _ = tokio::time::sleep(MAX_RETRY) => {}
                        _ = shutdown.changed() => return,
                    }
                }
            }
        }
    }

    /// Say what failed, then probe and restart until Raft runs again;
    /// `false` when the node stops meanwhile.
    async fn resume(
        &self,
        error: &str,
        first_wait: Duration,
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        let reason = describe(
            error,
            &self.data_dir,
            mount_point(&self.data_dir).as_deref(),
        );
        tracing::error!("{reason}");
        self.set_storage_fault(Some(reason));
        let mut wait = first_wait;
        let mut last_failure = String::new();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return false,
            }
            if self.stopping.load(Ordering::SeqCst) || *shutdown.borrow() {
                return false;
            }
            wait = (wait * 2).min(MAX_RETRY.max(first_wait));
            let dirs = [self.data_dir.clone(), self.log_dir()];
            let probed =
                tokio::task::spawn_blocking(move || dirs.iter().try_for_each(|d| probe(d)))
                    .await
                    .map_err(|e| std::io::Error::other(e.to_string()))
                    .and_then(|r| r);
            let attempt = match probed {
                Err(e) => Err(format!("the data directory still takes no writes: {e}")),
                Ok(()) => self
                    .restart_raft_on_same_storage()
                    .await
                    .map_err(|e| e.to_string()),
            };
            match attempt {
                Ok(()) => {
                    self.set_storage_fault(None);
                    tracing::warn!(
                        "storage fault cleared: {} takes writes again; Raft restarted on the same \
                         log and database, this node serves again once it is back in the primary \
                         component",
                        self.data_dir.display()
                    );
                    return true;
                }
                // Once per distinct failure: the retries go on every 2 s.
                Err(e) if e != last_failure => {
                    tracing::warn!("not resumed yet: {e}");
                    last_failure = e;
                }
                Err(e) => tracing::debug!("not resumed yet: {e}"),
            }
        }
    }

    fn log_dir(&self) -> PathBuf {
        self.data_dir.join("log")
    }

    /// Stop what is left of Raft, re-read the log from disk and start Raft
    /// again on it: no membership, vote or incarnation change.
    async fn restart_raft_on_same_storage(&self) -> Result<(), OrderError> {
        let _only_one = self.restarting.lock().await;
        let old = self.raft();
        // A forced bootstrap may have replaced it meanwhile: leave that one be.
        if old.metrics().borrow_watched().running_state.is_ok() {
            return Ok(());
        }
        // Already stopped by the fault; this waits for its tasks to end.
        let _ = old.shutdown().await;
        drop(old);
        let log = self.log.clone();
        let dir = self.log_dir();
        tokio::task::spawn_blocking(move || log.reload())
            .await
            .map_err(|e| OrderError::Start(e.to_string()))?
            .map_err(|source| OrderError::Log {
                path: dir.display().to_string(),
                source,
            })?;
        let raft = self.start_raft().await?;
        if self.stopping.load(Ordering::SeqCst) {
            let _ = raft.shutdown().await;
            return Err(OrderError::Start("the node is stopping".into()));
        }
        self.replace_raft(raft);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_advice_fits_the_fault() {
        let dir = Path::new("/var/lib/quorate");
        let full = describe(
            "when Write Logs: std::io::error::Error: /var/lib/quorate/log/log-1.seg: No space left on device (os error 28)",
            dir,
            Some(Path::new("/var")),
        );
        assert!(
            full.contains("free space on the file system mounted at /var"),
            "{full}"
        );
        assert!(
            full.contains("Logs: /var/lib/quorate/log/log-1.seg: No space left on device"),
            "{full}"
        );
        assert!(full.contains("resumes by itself"), "{full}");
        let ro = describe("Read-only file system (os error 30)", dir, None);
        assert!(
            ro.contains("make the file system holding /var/lib/quorate writable again"),
            "{ro}"
        );
        let sqlite = describe("db.sqlite: database or disk is full", dir, None);
        assert!(sqlite.contains("free space"), "{sqlite}");
        let eio = describe("Input/output error (os error 5)", dir, None);
        assert!(eio.contains("check the disk"), "{eio}");
    }

    #[test]
    fn the_mount_point_is_the_longest_that_holds_the_path() {
        let info = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 22 0:40 / /var rw,relatime shared:2 - ext4 /dev/sda2 rw
31 30 0:41 / /var/lib/quorate\\040data rw - tmpfs tmpfs rw,size=1024k
32 22 0:42 / /variant rw - tmpfs tmpfs rw
";
        assert_eq!(
            mount_point_in(info, Path::new("/var/lib/quorate data/log")),
            Some(PathBuf::from("/var/lib/quorate data"))
        );
        assert_eq!(
            mount_point_in(info, Path::new("/var/lib/other")),
            Some(PathBuf::from("/var"))
        );
        // /variant is not under /var: components, not string prefixes.
        assert_eq!(
            mount_point_in(info, Path::new("/variant/x")),
            Some(PathBuf::from("/variant"))
        );
        assert_eq!(mount_point_in("", Path::new("/x")), None);
    }

    #[test]
    fn a_probe_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        probe(dir.path()).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let err = probe(&dir.path().join("missing")).unwrap_err();
        assert!(err.to_string().contains(PROBE_FILE), "{err}");
    }
}
