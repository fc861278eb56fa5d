//! Flow control: a bound on the write-sets a node has in flight.
//!
//! Every client transaction holds its write-set in memory from submission
//! until this node applied it. Without a bound, a stalled cluster (a leader
//! that lost its quorum, a slow disk) lets clients pile up memory without
//! limit. Past the limit a new write waits for a slot; the time writers
//! spend waiting is the node's flow-control pause, shown as
//! `wsrep_flow_control_paused` (as in Galera: the fraction of recent time
//! paused) and counted for `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, SemaphorePermit};

/// How long one sample of the paused fraction covers.
const WINDOW: Duration = Duration::from_secs(10);

pub struct FlowControl {
    slots: Semaphore,
    limit: usize,
    started: Instant,
    /// Nanoseconds writers spent waiting for a slot, in total.
    paused_ns: AtomicU64,
    /// Times a writer had to wait.
    pauses: AtomicU64,
    /// (window start, paused_ns at that start, fraction of the last full window).
    window: Mutex<(Duration, u64, f64)>,
}

impl FlowControl {
    pub fn new(limit: usize) -> FlowControl {
        let limit = limit.clamp(1, Semaphore::MAX_PERMITS);
        FlowControl {
            slots: Semaphore::new(limit),
            limit,
            started: Instant::now(),
            paused_ns: AtomicU64::new(0),
            pauses: AtomicU64::new(0),
            window: Mutex::new((Duration::ZERO, 0, 0.0)),
        }
    }

    /// A slot for one write-set, waited for when all are taken.
    pub async fn admit(&self) -> Option<SemaphorePermit<'_>> {
        if let Ok(p) = self.slots.try_acquire() {
            return Some(p);
        }
        let waited = Instant::now();
        let permit = self.slots.acquire().await.ok();
        let ns = u64::try_from(waited.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.paused_ns.fetch_add(ns, Ordering::Relaxed);
        self.pauses.fetch_add(1, Ordering::Relaxed);
        permit
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Write-sets in flight now.
    pub fn in_flight(&self) -> usize {
        self.limit - self.slots.available_permits()
    }

    pub fn paused_seconds_total(&self) -> f64 {
        self.paused_ns.load(Ordering::Relaxed) as f64 / 1e9
    }

    pub fn pauses_total(&self) -> u64 {
        self.pauses.load(Ordering::Relaxed)
    }

    /// Fraction of the last full window (10 s) writers spent paused, at
    /// most 1 (overlapping waits of several writers count once per second
    /// of wall time at most). Any number of readers may ask.
    pub fn paused_fraction(&self) -> f64 {
        let now = self.started.elapsed();
        let paused = self.paused_ns.load(Ordering::Relaxed);
        let Ok(mut w) = self.window.lock() else {
            return 0.0;
        };
        let (start, at_start, last) = *w;
        let span = now.saturating_sub(start);
        if span >= WINDOW {
            let fraction =
                (paused.saturating_sub(at_start) as f64 / span.as_nanos() as f64).min(1.0);
            *w = (now, paused, fraction);
            return fraction;
        }
        last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writers_past_the_limit_wait_and_the_wait_is_counted() {
        let fc = FlowControl::new(2);
        let a = fc.admit().await;
        let _b = fc.admit().await;
        assert_eq!(fc.in_flight(), 2);
        let waiter = async {
            let _c = fc.admit().await;
        };
        let release = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            drop(a);
        };
        tokio::join!(waiter, release);
        assert_eq!(fc.pauses_total(), 1);
        assert!(fc.paused_seconds_total() > 0.0);
        assert_eq!(fc.in_flight(), 1, "the waiter's slot was returned");
    }

    #[test]
    fn the_fraction_never_exceeds_one() {
        let fc = FlowControl::new(1);
        fc.paused_ns.store(u64::MAX / 2, Ordering::Relaxed);
        *fc.window.lock().unwrap() = (Duration::ZERO, 0, 0.0);
        // Pretend a full window passed.
        let fc = FlowControl {
            started: Instant::now() - WINDOW * 2,
            ..fc
        };
        assert_eq!(fc.paused_fraction(), 1.0);
    }
}
