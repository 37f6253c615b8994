//! Group commit: every door hands its validated entries to one queue, and a
//! few writer tasks each take whatever has queued up (at most
//! `batching.max_batch`) and store it with a single unordered `insert_many`.
//!
//! A lone entry goes out at once, so latency stays that of a single insert;
//! batches only form from writes that arrived while earlier batches were on
//! their way, which is what lets throughput under load exceed the rate of
//! single inserts. Each request is answered only after its own batch is
//! stored; a failure of one entry fails only that entry.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bson::{DateTime, Document};
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::task::JoinSet;

use crate::entry::ValidEntry;
use crate::metrics::LoggerMetrics;
use crate::store::{self, Health, StoreError};

/// One queued write and where its outcome goes.
struct Job {
    document: Document,
    reply: oneshot::Sender<Result<(), StoreError>>,
}

/// The doors' handle on the writers. Cloning is cheap; the writers stop once
/// every handle is dropped and the queue is empty.
#[derive(Clone)]
pub struct Writer {
    queue: mpsc::Sender<Job>,
    health: Arc<Health>,
    counters: Arc<Counters>,
    metrics: LoggerMetrics,
}

/// How the writes were grouped so far (for tests, benchmarks and the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BatchStats {
    /// `insert_many` calls made.
    pub batches: u64,
    /// Entries handed to those calls.
    pub entries: u64,
    /// The most entries in one call.
    pub largest_batch: u64,
}

#[derive(Debug, Default)]
struct Counters {
    batches: AtomicU64,
    entries: AtomicU64,
    largest_batch: AtomicU64,
}

impl Counters {
    fn record(&self, entries: usize) {
        let entries = u64::try_from(entries).unwrap_or(u64::MAX);
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.entries.fetch_add(entries, Ordering::Relaxed);
        self.largest_batch.fetch_max(entries, Ordering::Relaxed);
    }

    fn snapshot(&self) -> BatchStats {
        BatchStats {
            batches: self.batches.load(Ordering::Relaxed),
            entries: self.entries.load(Ordering::Relaxed),
            largest_batch: self.largest_batch.load(Ordering::Relaxed),
        }
    }
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").finish_non_exhaustive()
    }
}

/// The writer tasks. They stop once every [`Writer`] is dropped and the
/// queue is empty.
#[derive(Debug)]
pub struct Writers {
    tasks: JoinSet<()>,
    counters: Arc<Counters>,
}

impl Writers {
    /// Waits until the writers stored what was queued and stopped (drop every
    /// [`Writer`] first), and says how the writes were grouped.
    pub async fn finish(mut self) -> BatchStats {
        while self.tasks.join_next().await.is_some() {}
        self.counters.snapshot()
    }
}

/// Starts `writers` writer tasks on `store`.
pub fn start(
    store: store::Store,
    health: Arc<Health>,
    max_batch: usize,
    writers: usize,
    metrics: &LoggerMetrics,
) -> (Writer, Writers) {
    let max_batch = max_batch.max(1);
    let writers = writers.max(1);
    // Room for every writer's next batch: enough to keep them busy, small
    // enough that a flood waits at the door (backpressure) instead of in memory.
    let (queue, receiver) = mpsc::channel(max_batch * writers * 2);
    let receiver = Arc::new(Mutex::new(receiver));
    let counters = Arc::new(Counters::default());
    let mut tasks = JoinSet::new();
    for _ in 0..writers {
        tasks.spawn(write_batches(
            Arc::clone(&receiver),
            store.clone(),
            Arc::clone(&health),
            Arc::clone(&counters),
            max_batch,
            metrics.clone(),
        ));
    }
    let writer = Writer {
        queue,
        health,
        counters: Arc::clone(&counters),
        metrics: metrics.clone(),
    };
    (writer, Writers { tasks, counters })
}

impl Writer {
    /// How the writes were grouped so far.
    pub fn stats(&self) -> BatchStats {
        self.counters.snapshot()
    }

    /// Stores `entry`; returns once its batch is stored (or failed).
    pub async fn write(&self, entry: &ValidEntry) -> Result<(), StoreError> {
        // While the store is known to be gone, fail at once instead of
        // letting every request wait out the server selection timeout.
        if let Some(reason) = self.health.down_reason() {
            return Err(StoreError::Unavailable(reason));
        }
        let _waiting = self.metrics.waiting();
        let (reply, outcome) = oneshot::channel();
        let job = Job {
            document: store::document(entry, DateTime::now()),
            reply,
        };
        self.queue
            .send(job)
            .await
            .map_err(|_| StoreError::Unavailable("the logger is shutting down".into()))?;
        outcome
            .await
            .unwrap_or_else(|_| Err(StoreError::Unavailable("the writer stopped".into())))
    }
}

async fn write_batches(
    receiver: Arc<Mutex<mpsc::Receiver<Job>>>,
    store: store::Store,
    health: Arc<Health>,
    counters: Arc<Counters>,
    max_batch: usize,
    metrics: LoggerMetrics,
) {
    let mut jobs: Vec<Job> = Vec::with_capacity(max_batch);
    loop {
        // One writer at a time takes what is queued; the others are busy
        // inserting their batches or wait here for their turn.
        let received = receiver.lock().await.recv_many(&mut jobs, max_batch).await;
        if received == 0 {
            return; // every Writer handle is gone and the queue is empty
        }
        // A requester that gave up (client disconnected, RPC deadline passed)
        // was told nothing was stored; keep it that way.
        jobs.retain(|job| !job.reply.is_closed());
        if jobs.is_empty() {
            continue;
        }
        let outcomes = match health.down_reason() {
            Some(reason) => vec![Err(StoreError::Unavailable(reason)); jobs.len()],
            None => {
                let documents: Vec<&Document> = jobs.iter().map(|job| &job.document).collect();
                let started = std::time::Instant::now();
                let outcomes = store.insert_batch(&documents).await;
                metrics.batch_stored(documents.len(), started.elapsed());
                counters.record(documents.len());
                if let Some(Err(StoreError::Unavailable(reason))) = outcomes.first() {
                    health.mark_down(reason);
                }
                outcomes
            }
        };
        tracing::debug!(entries = jobs.len(), "batch written");
        for (job, outcome) in jobs.drain(..).zip(outcomes) {
            // The requester may have gone meanwhile; nothing to tell then.
            let _ = job.reply.send(outcome);
        }
    }
}
