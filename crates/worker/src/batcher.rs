//! The in-process batcher: many queue jobs, one [`process_batch`] call.
//!
//! Every job handler submits its event and waits for the outcome of the batch
//! that carried it. One batching task gathers submissions until the batch
//! holds `batch_max_contacts` distinct (portal, contact) pairs or
//! `batch_window_ms` passed since its first event, then processes it: one
//! HubSpot batch read per portal, one Postgres transaction. Only then does it
//! answer the waiters, so a job is acknowledged after its effect is committed;
//! a failed batch fails every job in it, and the queue retries them. An event
//! whose data the database refuses does not fail its batch: the batch is
//! split until that event is alone, and it is dead-lettered (see
//! [`process_batch`]).
//!
//! Events of a contact already in the collecting batch join it even once the
//! batch is full, so a burst of events about the same contacts costs one
//! read per contact; events of other contacts wait for the next batch.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use leadsync_domain::{ContactId, PortalId};
use leadsync_queue::InboundEvent;
use leadsync_runtime::config::WorkerSettings;
use leadsync_runtime::telemetry;
use leadsync_store::dead_letters::{self, DeadLetterKind, NewDeadLetter};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use tracing::field::Empty;

use crate::coalesce::{self, Coalesced, Collecting};
use crate::contact_event::{self, ContactEventKind};
use crate::inbound::{BatchReport, InboundDeps, InboundError, payload_of, process_batch};
use crate::metrics::WorkerMetrics;
use crate::tokens::Credentials;

/// apalis-redis 1.0.0's ack script re-schedules a failed task while its
/// attempt is below 25 (hard-coded in its Lua) and moves it to the dead set
/// after. A job failing on this attempt is dead-lettered here instead, where
/// the CLI lists and replays it.
pub const LAST_ATTEMPT: usize = 25;

/// How the batcher cuts batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatcherConfig {
    /// Most distinct (portal, contact) pairs in one batch.
    pub max_contacts: usize,
    /// How long a batch waits for more events after its first.
    pub window: Duration,
    /// Batches processed at once.
    pub max_in_flight: usize,
}

impl BatcherConfig {
    /// The `[worker]` settings' batch parameters.
    pub fn from_settings(settings: &WorkerSettings) -> Self {
        Self {
            max_contacts: settings.batch_max_contacts,
            window: settings.batch_window(),
            max_in_flight: settings.max_batches_in_flight,
        }
    }
}

/// How a job's batch ended for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobOutcome {
    /// Its batch committed: the event was applied, skipped, recognised as a
    /// duplicate or dead-lettered in the batch's transaction (or, when the
    /// database refused the data of some of its events, in the transaction
    /// of the part of the batch that held it).
    Committed,
    /// Its batch failed on the job's last attempt: the event was
    /// dead-lettered on its own instead of being given up by the queue.
    DeadLettered,
}

/// Why a job's batch did not commit; the job is retried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// Processing failed as a whole (database, or a transient HubSpot error).
    #[error("the inbound batch failed ({code}); the job will be retried")]
    Failed {
        /// A stable snake_case cause: `database` or a HubSpot error code.
        code: &'static str,
    },
    /// The batcher stopped before answering (the process is stopping).
    #[error("the batcher stopped before the batch committed")]
    Closed,
}

/// One job waiting for its batch.
struct Submission {
    job: InboundEvent,
    attempt: usize,
    contact: Option<(PortalId, ContactId)>,
    /// Trace context of the job's span, for the batch span's links.
    link: HashMap<String, String>,
    arrived: Instant,
    reply: oneshot::Sender<Result<JobOutcome, BatchError>>,
}

/// Hands jobs to the batching task; cheap to clone. The task ends once every
/// clone is dropped and its batches are answered.
#[derive(Clone, Debug)]
pub struct Batcher {
    tx: mpsc::UnboundedSender<Submission>,
}

/// What a batch's processing needs.
struct Shared {
    deps: InboundDeps,
    credentials: Option<Arc<Credentials>>,
    metrics: WorkerMetrics,
}

impl Batcher {
    /// Starts the batching task on the current runtime. Once `shutdown` is
    /// cancelled, batches no longer wait for their window: whatever was
    /// submitted is processed at once.
    ///
    /// `credentials`, when given, is reloaded before a batch that names a
    /// portal the HubSpot client has no credentials for.
    pub fn start(
        deps: InboundDeps,
        credentials: Option<Arc<Credentials>>,
        metrics: WorkerMetrics,
        config: BatcherConfig,
        shutdown: CancellationToken,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            deps,
            credentials,
            metrics,
        });
        let task = tokio::spawn(coalesce::collect(
            rx,
            coalesce::Limits {
                max_keys: config.max_contacts,
                window: config.window,
                max_in_flight: config.max_in_flight,
            },
            shutdown,
            "inbound",
            move |batch| {
                let shared = Arc::clone(&shared);
                async move { process(&shared, batch).await }
            },
        ));
        (Self { tx }, task)
    }

    /// Submits `job` (on its `attempt`-th run) and waits until its batch
    /// committed or failed.
    ///
    /// # Errors
    /// [`BatchError`] when the batch failed or the batcher stopped: the job
    /// must be retried.
    pub async fn submit(
        &self,
        job: InboundEvent,
        attempt: usize,
    ) -> Result<JobOutcome, BatchError> {
        let contact = contact_of(&job);
        let mut link = telemetry::trace_context_of(&tracing::Span::current());
        if link.is_empty() {
            link.clone_from(&job.trace);
        }
        let (reply, outcome) = oneshot::channel();
        self.tx
            .send(Submission {
                job,
                attempt,
                contact,
                link,
                arrived: Instant::now(),
                reply,
            })
            .map_err(|_| BatchError::Closed)?;
        outcome.await.unwrap_or(Err(BatchError::Closed))
    }
}

/// The (portal, contact) an event makes dirty: the surviving contact of a
/// merge. Events that do not parse need no read; the processor dead-letters them.
fn contact_of(job: &InboundEvent) -> Option<(PortalId, ContactId)> {
    let event = contact_event::parse(&job.event).ok()?;
    let contact = match &event.kind {
        ContactEventKind::Merge { primary, .. } => *primary,
        _ => event.contact,
    };
    Some((event.portal, contact))
}

impl Coalesced for Submission {
    type Key = (PortalId, ContactId);

    fn key(&self) -> Option<Self::Key> {
        self.contact
    }

    fn arrived(&self) -> Instant {
        self.arrived
    }
}

/// What each waiter needs once its batch is done.
struct Waiter {
    key: String,
    portal: Option<PortalId>,
    received_at_ms: i64,
    attempt: usize,
    reply: oneshot::Sender<Result<JobOutcome, BatchError>>,
}

async fn process(shared: &Shared, batch: Collecting<Submission>) {
    let span = tracing::info_span!(
        "worker.batch",
        jobs = batch.jobs.len(),
        contacts = batch.keys.len(),
        portals = Empty,
        batch_reads = Empty,
        processed = Empty,
        duplicates = Empty,
        dead_lettered = Empty,
        outcome = Empty,
        error.code = Empty,
    );
    let mut jobs = Vec::with_capacity(batch.jobs.len());
    let mut waiters = Vec::with_capacity(batch.jobs.len());
    // Kept only for jobs on their last attempt: if the batch fails they are
    // dead-lettered with their payload.
    let mut last_chance = Vec::new();
    let mut portals: HashSet<PortalId> = batch.keys.iter().map(|(p, _)| *p).collect();
    for s in batch.jobs {
        telemetry::link_trace(&span, &s.link);
        if let Some(p) = s.job.portal_id {
            portals.insert(p);
        }
        if s.attempt >= LAST_ATTEMPT {
            last_chance.push(s.job.clone());
        }
        waiters.push(Waiter {
            key: s.job.key.as_str().to_owned(),
            portal: s.job.portal_id,
            received_at_ms: s.job.received_at_ms,
            attempt: s.attempt,
            reply: s.reply,
        });
        jobs.push(s.job);
    }
    span.record("portals", portals.len());
    async {
        if let Some(credentials) = &shared.credentials {
            credentials.ensure(portals.iter().copied()).await;
        }
        let started = Instant::now();
        let result = process_batch(&shared.deps, jobs).await;
        let elapsed = started.elapsed();
        let metrics = &shared.metrics;
        metrics.batch_seconds.observe(elapsed.as_secs_f64());
        metrics.batch_jobs.observe(waiters.len() as f64);
        metrics.batch_contacts.observe(batch.keys.len() as f64);
        match result {
            Ok(report) => committed(shared, &report, waiters, elapsed),
            Err(err) => failed(shared, &err, waiters, last_chance).await,
        }
    }
    .instrument(span)
    .await;
}

fn committed(shared: &Shared, report: &BatchReport, waiters: Vec<Waiter>, elapsed: Duration) {
    let span = tracing::Span::current();
    span.record("batch_reads", report.batch_reads);
    span.record("processed", report.processed);
    span.record("duplicates", report.duplicates);
    span.record("dead_lettered", report.dead_lettered);
    span.record("outcome", "committed");
    let metrics = &shared.metrics;
    metrics.record(report);
    metrics.batches.with_label_values(&["committed"]).inc();
    let now_ms = chrono::Utc::now().timestamp_millis();
    for w in &waiters {
        // Events queued without an acceptance time (tools, tests) have no lag.
        if w.received_at_ms > 0 {
            let lag_ms = (now_ms - w.received_at_ms).max(0);
            metrics.lag_seconds.observe(lag_ms as f64 / 1000.0);
        }
    }
    tracing::info!(
        jobs = report.jobs,
        batch_reads = report.batch_reads,
        processed = report.processed,
        duplicates = report.duplicates,
        dead_lettered = report.dead_lettered,
        created = report.created,
        linked = report.linked,
        updated = report.updated,
        unlinked = report.unlinked,
        deleted = report.deleted,
        restored = report.restored,
        erased = report.erased,
        merged = report.merged,
        skipped = ?report.skipped,
        duration_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        "Inbound batch of {} jobs committed",
        report.jobs
    );
    for w in waiters {
        // A waiter that went away (its job was cancelled) needs no answer.
        let _ = w.reply.send(Ok(JobOutcome::Committed));
    }
}

fn error_code(err: &InboundError) -> &'static str {
    match err {
        InboundError::Store(_) => "database",
        InboundError::HubSpot(e) => e.code(),
    }
}

async fn failed(
    shared: &Shared,
    err: &InboundError,
    waiters: Vec<Waiter>,
    last_chance: Vec<InboundEvent>,
) {
    let code = error_code(err);
    let span = tracing::Span::current();
    span.record("outcome", "failed");
    span.record("error.code", code);
    let metrics = &shared.metrics;
    metrics.batches.with_label_values(&["failed"]).inc();
    tracing::warn!(
        error = %err,
        error.code = code,
        jobs = waiters.len(),
        "Inbound batch of {} jobs failed; its jobs will be retried",
        waiters.len()
    );
    let rescued = dead_letter_last_attempts(shared, code, &last_chance).await;
    for w in waiters {
        let outcome = if w.attempt >= LAST_ATTEMPT && rescued.contains(&w.key) {
            metrics.dead_lettered.inc();
            tracing::error!(
                event.key = %w.key,
                portal.id = w.portal.map(|p| p.get()),
                attempt = w.attempt,
                "Event {} failed on its last attempt and was dead-lettered",
                w.key
            );
            Ok(JobOutcome::DeadLettered)
        } else {
            metrics.failed.inc();
            Err(BatchError::Failed { code })
        };
        let _ = w.reply.send(outcome);
    }
}

/// Dead-letters the jobs of a failed batch that were on their last attempt;
/// returns the keys recorded. When this fails too (the database is down),
/// the queue moves them to its dead set, where they are still kept.
async fn dead_letter_last_attempts(
    shared: &Shared,
    code: &str,
    jobs: &[InboundEvent],
) -> HashSet<String> {
    let mut recorded = HashSet::new();
    if jobs.is_empty() {
        return recorded;
    }
    let reason = format!("retries_exhausted_{code}");
    let pool = shared.deps.store.pool();
    for job in jobs {
        let letter = NewDeadLetter {
            integration_id: None,
            portal_id: job.portal_id,
            event_key: job.key.as_str().to_owned(),
            kind: DeadLetterKind::InboundEvent,
            reason: reason.clone(),
            payload: payload_of(job),
        };
        match dead_letters::record(pool, &letter).await {
            Ok(_) => {
                recorded.insert(letter.event_key);
            }
            Err(e) => {
                tracing::error!(
                    event.key = %letter.event_key,
                    error = %e,
                    "Failed to dead-letter event {} after its last attempt; the queue keeps it in its dead set",
                    letter.event_key
                );
            }
        }
    }
    recorded
}
