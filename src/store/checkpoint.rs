//! WAL checkpoints off the commit path.
//!
//! SQLite checkpoints from inside the COMMIT that crosses
//! `wal_autocheckpoint` pages, so one write-set in every few hundred paid
//! for copying the WAL back into the database. Here a thread of its own
//! checkpoints on a timer; the apply connection's automatic checkpoint is
//! only a backstop (`BACKSTOP_BYTES`) should this thread fall behind.
//!
//! Under steady writes the backstop still fires now and then: SQLite starts
//! the WAL file over only when a writer begins while every frame is copied
//! back, and a checkpoint that takes milliseconds always ends behind the
//! writer's newest commits. So the WAL grows to the backstop, where one
//! commit copies what the last timed checkpoint left and the WAL starts
//! over (every 6-9 s at 2,000 write-sets a second): the largest stall of
//! the benchmark. Finishing each timed checkpoint on the writer's
//! connection while holding the writer (so that the next commit starts the
//! WAL over) was measured too: p99 worse (p99/p50 3.4-3.9 against 2.6),
//! since the writer then waits for that checkpoint's fsyncs every 3 s
//! instead of once in 6-9 s.

use std::path::PathBuf;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

/// WAL size after which a commit checkpoints by itself anyway. Sized in
/// bytes, not pages: a write-set puts about five pages in the WAL (its row,
/// its certification key, `_quorate_trx` and its index, `_quorate_meta`),
/// so 16 clients wrote ~20,000 frames a second, and the 10,000 pages this
/// used to be (10 MiB with the 1 KiB pages of new databases) sent a commit
/// into a checkpoint twice a second, timer or not.
pub(crate) const BACKSTOP_BYTES: u64 = 64 << 20;

/// [`BACKSTOP_BYTES`] as `wal_autocheckpoint` pages for a database of this
/// page size.
pub(crate) fn backstop_pages(page_size: u32) -> u32 {
    let pages = BACKSTOP_BYTES / u64::from(page_size.max(512));
    u32::try_from(pages).unwrap_or(u32::MAX)
}

pub(crate) struct Checkpointer {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    pub(crate) fn start(db: PathBuf, every: Duration) -> std::io::Result<Checkpointer> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("quorate-checkpoint".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                    if let Err(e) = checkpoint(&db) {
                        // The backstop keeps the WAL bounded meanwhile.
                        tracing::debug!("WAL checkpoint of {} skipped: {e}", db.display());
                    }
                }
            })?;
        Ok(Checkpointer {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

/// A connection of its own each time: an SST replaces the database file,
/// and a connection kept open would go on checkpointing the old one.
fn checkpoint(db: &std::path::Path) -> rusqlite::Result<()> {
    let conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_millis(100))?;
    // PASSIVE never waits for the writer or readers; what it cannot copy
    // now it copies next time.
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
