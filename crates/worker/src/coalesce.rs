//! The batching loop both batchers share: submissions are gathered into a
//! batch until it names `max` distinct keys (contacts, or leads) or `window`
//! passed since its first submission, then the batch is processed on its own
//! task while the next one fills. Submissions about a key already in the
//! collecting batch join it even once it is full, so a burst about the same
//! keys costs one batch; submissions about other keys wait for the next one.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// A submission a batch can coalesce.
pub(crate) trait Coalesced {
    /// What the batch counts: submissions with the same key share a slot.
    type Key: Eq + Hash + Copy;
    /// Its key; `None` takes no slot (it is dead-lettered, say).
    fn key(&self) -> Option<Self::Key>;
    /// When it was submitted (its batch's window starts with the first).
    fn arrived(&self) -> Instant;
}

/// How batches are cut.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Most distinct keys in one batch.
    pub(crate) max_keys: usize,
    /// How long a batch waits for more after its first submission.
    pub(crate) window: Duration,
    /// Batches processed at once.
    pub(crate) max_in_flight: usize,
}

/// A batch being collected.
pub(crate) struct Collecting<S: Coalesced> {
    /// Its submissions, in arrival order.
    pub(crate) jobs: Vec<S>,
    /// The distinct keys they name.
    pub(crate) keys: HashSet<S::Key>,
}

impl<S: Coalesced> Collecting<S> {
    fn new() -> Self {
        Self {
            jobs: Vec::new(),
            keys: HashSet::new(),
        }
    }

    /// Takes `s` if its key is already in the batch or there is room for
    /// one more; hands it back otherwise.
    fn offer(&mut self, s: S, max: usize) -> Option<S> {
        if let Some(key) = s.key()
            && !self.keys.contains(&key)
        {
            if self.keys.len() >= max {
                return Some(s);
            }
            self.keys.insert(key);
        }
        self.jobs.push(s);
        None
    }

    fn is_full(&self, max: usize) -> bool {
        self.keys.len() >= max
    }
}

/// Cuts batches from `rx` until every sender is gone, runs `process` on each
/// (at most `limits.max_in_flight` at once) and waits for the last. Once
/// `shutdown` is cancelled, batches no longer wait for their window.
/// `what` names the batches in the log line of a panicking one.
pub(crate) async fn collect<S, F, Fut>(
    mut rx: mpsc::UnboundedReceiver<S>,
    limits: Limits,
    shutdown: CancellationToken,
    what: &'static str,
    process: F,
) where
    S: Coalesced + Send + 'static,
    F: Fn(Collecting<S>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(limits.max_in_flight.max(1)));
    let mut carried: VecDeque<S> = VecDeque::new();
    let mut running = JoinSet::new();
    let max = limits.max_keys.max(1);
    loop {
        // A free slot first: while every slot is busy, submissions pile up
        // in the channel and the next batch fills from them.
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            break;
        };
        let first = match carried.pop_front() {
            Some(s) => s,
            None => match rx.recv().await {
                Some(s) => s,
                None => break,
            },
        };
        let deadline = first.arrived() + limits.window;
        let mut batch = Collecting::new();
        // The first submission always fits an empty batch.
        let _ = batch.offer(first, max);
        let mut waiting = VecDeque::with_capacity(carried.len());
        for s in carried.drain(..) {
            if let Some(back) = batch.offer(s, max) {
                waiting.push_back(back);
            }
        }
        carried = waiting;
        while !batch.is_full(max) && !shutdown.is_cancelled() && Instant::now() < deadline {
            tokio::select! {
                received = rx.recv() => match received {
                    Some(s) => {
                        if let Some(back) = batch.offer(s, max) {
                            carried.push_back(back);
                        }
                    }
                    None => break,
                },
                () = tokio::time::sleep_until(deadline.into()) => break,
                () = shutdown.cancelled() => break,
            }
        }
        // Submissions already waiting about keys of this batch join it.
        while let Ok(s) = rx.try_recv() {
            if let Some(back) = batch.offer(s, max) {
                carried.push_back(back);
            }
        }
        let work = process(batch);
        running.spawn(async move {
            work.await;
            drop(permit);
        });
        while let Some(done) = running.try_join_next() {
            report_panic(done, what);
        }
    }
    while let Some(done) = running.join_next().await {
        report_panic(done, what);
    }
}

fn report_panic(done: Result<(), tokio::task::JoinError>, what: &str) {
    // The panicking batch's waiters see their reply dropped and retry.
    if let Err(e) = done {
        tracing::error!(error = %e, "An {what} batch panicked; its jobs will be retried");
    }
}
