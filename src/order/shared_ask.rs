//! One question to the leader shared by the writes that need it at once.
//!
//! Before a follower runs a write it asks the leader what is committed
//! (the causal wait, see `Sequencer::causal_barrier`). Asked per write, that
//! is a QUIC stream both ways and a task on the leader for every write of
//! every follower. The answer may serve every write that arrived before the
//! question was sent, so the first caller yields once (the callers ready in
//! the same turn join it, as the forwarder batches write-sets) and asks for
//! all of them; a caller that comes later asks again itself, so no caller
//! waits for a question sent before it arrived, and none waits longer for
//! one in flight.

use std::future::Future;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::oneshot;

/// Callers waiting for the question that is about to be sent.
pub(crate) struct SharedAsk<T> {
    batch: Mutex<Vec<oneshot::Sender<T>>>,
}

impl<T> Default for SharedAsk<T> {
    fn default() -> Self {
        SharedAsk {
            batch: Mutex::new(Vec::new()),
        }
    }
}

impl<T> SharedAsk<T> {
    fn lock(&self) -> MutexGuard<'_, Vec<oneshot::Sender<T>>> {
        // Nothing panics while it is held; a poisoned list is still whole.
        self.batch.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<T: Clone> SharedAsk<T> {
    /// The answer of an `ask` sent after this call began: this caller's own,
    /// or that of a caller of the same turn. `None` when that caller gave up
    /// before it answered (its future was dropped): ask yourself then.
    pub(crate) async fn get<F, Fut>(&self, ask: F) -> Option<T>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        let (tx, rx) = oneshot::channel();
        let first = {
            let mut batch = self.lock();
            batch.push(tx);
            batch.len() == 1
        };
        if first {
            let mut collecting = Collecting {
                shared: self,
                done: false,
            };
            tokio::task::yield_now().await;
            let batch = collecting.close();
            let answer = ask().await;
            for caller in batch {
                let _ = caller.send(answer.clone());
            }
        }
        rx.await.ok()
    }
}

/// The first caller's hold on the batch until it sends the question. If
/// that caller is dropped first, the batch goes with it: its callers get
/// `None` and ask themselves.
struct Collecting<'a, T> {
    shared: &'a SharedAsk<T>,
    done: bool,
}

impl<T> Collecting<'_, T> {
    fn close(&mut self) -> Vec<oneshot::Sender<T>> {
        self.done = true;
        std::mem::take(&mut *self.shared.lock())
    }
}

impl<T> Drop for Collecting<'_, T> {
    fn drop(&mut self) {
        if !self.done {
            self.shared.lock().clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use tokio::sync::Notify;

    use super::*;

    /// Counts its questions and answers each with its number.
    #[derive(Default)]
    struct Leader {
        asked: AtomicU64,
        /// When set, a question is answered only once this is notified.
        hold: Option<Arc<Notify>>,
    }

    impl Leader {
        async fn ask(&self) -> u64 {
            let n = self.asked.fetch_add(1, Ordering::SeqCst) + 1;
            if let Some(hold) = &self.hold {
                hold.notified().await;
            }
            n
        }
    }

    /// A write's causal wait, as a task of its own.
    fn caller(
        shared: &Arc<SharedAsk<u64>>,
        leader: &Arc<Leader>,
    ) -> tokio::task::JoinHandle<Option<u64>> {
        let (shared, leader) = (shared.clone(), leader.clone());
        tokio::spawn(async move { shared.get(|| leader.ask()).await })
    }

    #[tokio::test(flavor = "current_thread")]
    async fn callers_of_one_turn_share_one_question() {
        let shared = Arc::new(SharedAsk::default());
        let leader = Arc::new(Leader::default());
        let callers: Vec<_> = (0..5).map(|_| caller(&shared, &leader)).collect();
        for c in callers {
            assert_eq!(c.await.unwrap(), Some(1));
        }
        assert_eq!(leader.asked.load(Ordering::SeqCst), 1);
        // A caller of a later turn asks again.
        assert_eq!(shared.get(|| leader.ask()).await, Some(2));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_caller_after_the_question_was_sent_asks_again() {
        let hold = Arc::new(Notify::new());
        let shared = Arc::new(SharedAsk::default());
        let leader = Arc::new(Leader {
            hold: Some(hold.clone()),
            ..Leader::default()
        });
        let early = caller(&shared, &leader);
        while leader.asked.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        // The first question is out and unanswered: a new caller must not
        // take its answer, which may predate it.
        let late = caller(&shared, &leader);
        while leader.asked.load(Ordering::SeqCst) == 1 {
            tokio::task::yield_now().await;
        }
        hold.notify_waiters();
        assert_eq!(early.await.unwrap(), Some(1));
        assert_eq!(late.await.unwrap(), Some(2));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_callers_of_one_that_gives_up_are_told_to_ask_themselves() {
        let shared = Arc::new(SharedAsk::default());
        let leader = Arc::new(Leader {
            hold: Some(Arc::new(Notify::new())), // never answers
            ..Leader::default()
        });
        let first = caller(&shared, &leader);
        let joined = caller(&shared, &leader);
        while leader.asked.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        first.abort();
        let joined = tokio::time::timeout(std::time::Duration::from_secs(10), joined).await;
        assert_eq!(
            joined.expect("the joined caller was left waiting").unwrap(),
            None
        );
        assert_eq!(leader.asked.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_first_caller_dropped_before_asking_leaves_no_one_waiting() {
        let shared = Arc::new(SharedAsk::<u64>::default());
        let leader = Arc::new(Leader::default());
        {
            // Polled once: it joins as first caller and yields; then dropped.
            let mut first = Box::pin(shared.get(|| leader.ask()));
            let waker = futures::task::noop_waker();
            let mut cx = std::task::Context::from_waker(&waker);
            assert!(first.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(leader.asked.load(Ordering::SeqCst), 0);
        // The batch went with it: the next caller starts a new one.
        let next = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            shared.get(|| leader.ask()),
        )
        .await;
        assert_eq!(next.expect("the next caller joined a dead batch"), Some(1));
    }
}
