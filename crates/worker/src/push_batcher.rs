//! The push batcher: many lead-change jobs, one [`process_push_batch`] call.
//!
//! The outbound twin of [`crate::batcher`]. Every job handler
//! ([`handle_change`]) submits its lead change and waits for the outcome of
//! the batch that carried it. One batching task gathers submissions until the
//! batch names `push_batch_max_leads` distinct leads or `push_batch_window_ms`
//! passed since its first change, then pushes it: one batch upsert or update
//! per 100 leads of an account, one Postgres transaction. Only then does it
//! answer the waiters, so a job is acknowledged after its effect is committed;
//! a failed batch fails every job in it, and the queue retries them.
//!
//! Changes of a lead already in the collecting batch join it even once the
//! batch is full: a lead edited five times is pushed once, with its state
//! after the fifth edit.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use apalis::prelude::{Attempt, Data};
use leadsync_queue::{OutboundLetter, PushLeadChange};
use leadsync_runtime::config::WorkerSettings;
use leadsync_runtime::telemetry;
use leadsync_store::dead_letters::{self, DeadLetterKind, NewDeadLetter};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use tracing::field::Empty;
use uuid::Uuid;

use crate::batcher::{JobOutcome, LAST_ATTEMPT};
use crate::coalesce::{self, Coalesced, Collecting};
use crate::metrics::WorkerMetrics;
use crate::outbound::{OutboundDeps, OutboundError, PushReport, process_push_batch};

/// How the push batcher cuts batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushBatcherConfig {
    /// Most distinct leads in one batch.
    pub max_leads: usize,
    /// How long a batch waits for more changes after its first.
    pub window: Duration,
    /// Batches processed at once.
    pub max_in_flight: usize,
}

impl PushBatcherConfig {
    /// The `[worker]` settings' push batch parameters. A batch never waits
    /// for more leads than jobs can be in flight (`concurrency`).
    pub fn from_settings(settings: &WorkerSettings) -> Self {
        Self {
            max_leads: settings
                .push_batch_max_leads
                .min(settings.concurrency.max(1)),
            window: settings.push_batch_window(),
            max_in_flight: settings.max_batches_in_flight,
        }
    }
}

/// Why a lead-change job's batch did not commit; the job is retried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushBatchError {
    /// Pushing failed as a whole (database, or a transient HubSpot error).
    #[error("the outbound batch failed ({code}); the job will be retried")]
    Failed {
        /// A stable snake_case cause: `database` or a HubSpot error code.
        code: &'static str,
    },
    /// The batcher stopped before answering (the process is stopping).
    #[error("the push batcher stopped before the batch committed")]
    Closed,
}

/// One job waiting for its batch.
struct Submission {
    job: PushLeadChange,
    attempt: usize,
    link: std::collections::HashMap<String, String>,
    arrived: Instant,
    reply: oneshot::Sender<Result<JobOutcome, PushBatchError>>,
}

/// Hands lead changes to the batching task; cheap to clone. The task ends
/// once every clone is dropped and its batches are answered.
#[derive(Clone, Debug)]
pub struct PushBatcher {
    tx: mpsc::UnboundedSender<Submission>,
}

struct Shared {
    deps: OutboundDeps,
    metrics: WorkerMetrics,
}

impl PushBatcher {
    /// Starts the batching task on the current runtime. Once `shutdown` is
    /// cancelled, batches no longer wait for their window.
    pub fn start(
        deps: OutboundDeps,
        metrics: WorkerMetrics,
        config: PushBatcherConfig,
        shutdown: CancellationToken,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared { deps, metrics });
        let task = tokio::spawn(coalesce::collect(
            rx,
            coalesce::Limits {
                max_keys: config.max_leads,
                window: config.window,
                max_in_flight: config.max_in_flight,
            },
            shutdown,
            "outbound",
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
    /// [`PushBatchError`] when the batch failed or the batcher stopped: the
    /// job must be retried.
    pub async fn submit(
        &self,
        job: PushLeadChange,
        attempt: usize,
    ) -> Result<JobOutcome, PushBatchError> {
        let mut link = telemetry::trace_context_of(&tracing::Span::current());
        if link.is_empty() {
            link.clone_from(&job.trace);
        }
        let (reply, outcome) = oneshot::channel();
        self.tx
            .send(Submission {
                job,
                attempt,
                link,
                arrived: Instant::now(),
                reply,
            })
            .map_err(|_| PushBatchError::Closed)?;
        outcome.await.unwrap_or(Err(PushBatchError::Closed))
    }
}

/// Runs one lead-change job: hands it to the push batcher and waits for its
/// batch. `Ok` only once the batch committed, so the job is acknowledged
/// after its effect.
///
/// # Errors
/// [`PushBatchError`] when the batch failed: the queue re-schedules the job.
pub async fn handle_change(
    job: PushLeadChange,
    attempt: Attempt,
    batcher: Data<PushBatcher>,
) -> Result<(), PushBatchError> {
    let span = tracing::info_span!(
        "job.push_lead_change",
        change.id = job.change_id,
        lead.id = %job.lead_id,
        integration.id = %job.integration_id,
        attempt = attempt.current(),
        outcome = Empty,
    );
    telemetry::continue_trace(&span, &job.trace);
    async move {
        let outcome = batcher.submit(job, attempt.current()).await;
        let span = tracing::Span::current();
        match outcome {
            Ok(JobOutcome::Committed) => {
                span.record("outcome", "committed");
                Ok(())
            }
            Ok(JobOutcome::DeadLettered) => {
                span.record("outcome", "dead_lettered");
                Ok(())
            }
            Err(e) => {
                span.record("outcome", "retry");
                Err(e)
            }
        }
    }
    .instrument(span)
    .await
}

impl Coalesced for Submission {
    type Key = (Uuid, Uuid);

    fn key(&self) -> Option<Self::Key> {
        Some((self.job.integration_id, self.job.lead_id))
    }

    fn arrived(&self) -> Instant {
        self.arrived
    }
}

struct Waiter {
    change_id: i64,
    changed_at_ms: i64,
    attempt: usize,
    reply: oneshot::Sender<Result<JobOutcome, PushBatchError>>,
}

async fn process(shared: &Shared, batch: Collecting<Submission>) {
    let span = tracing::info_span!(
        "worker.push_batch",
        jobs = batch.jobs.len(),
        leads = batch.keys.len(),
        created = Empty,
        linked = Empty,
        updated = Empty,
        dead_lettered = Empty,
        outcome = Empty,
        error.code = Empty,
    );
    let mut jobs = Vec::with_capacity(batch.jobs.len());
    let mut waiters = Vec::with_capacity(batch.jobs.len());
    let mut last_chance = Vec::new();
    for s in batch.jobs {
        telemetry::link_trace(&span, &s.link);
        if s.attempt >= LAST_ATTEMPT {
            last_chance.push(s.job.clone());
        }
        waiters.push(Waiter {
            change_id: s.job.change_id,
            changed_at_ms: s.job.changed_at_ms,
            attempt: s.attempt,
            reply: s.reply,
        });
        jobs.push(s.job);
    }
    let leads = batch.keys.len();
    async {
        let started = Instant::now();
        let result = process_push_batch(&shared.deps, jobs).await;
        let elapsed = started.elapsed();
        let metrics = &shared.metrics;
        metrics.push_batch_seconds.observe(elapsed.as_secs_f64());
        metrics.push_batch_leads.observe(leads as f64);
        match result {
            Ok(report) => committed(shared, &report, waiters, elapsed),
            Err(err) => failed(shared, &err, waiters, last_chance).await,
        }
    }
    .instrument(span)
    .await;
}

fn committed(shared: &Shared, report: &PushReport, waiters: Vec<Waiter>, elapsed: Duration) {
    let span = tracing::Span::current();
    span.record("created", report.created);
    span.record("linked", report.linked);
    span.record("updated", report.updated);
    span.record("dead_lettered", report.dead_lettered);
    span.record("outcome", "committed");
    let metrics = &shared.metrics;
    metrics.record_push(report);
    metrics.push_batches.with_label_values(&["committed"]).inc();
    let now_ms = chrono::Utc::now().timestamp_millis();
    for w in &waiters {
        if w.changed_at_ms > 0 {
            let lag_ms = (now_ms - w.changed_at_ms).max(0);
            metrics.push_lag_seconds.observe(lag_ms as f64 / 1000.0);
        }
    }
    tracing::info!(
        jobs = report.jobs,
        leads = report.leads,
        created = report.created,
        linked = report.linked,
        updated = report.updated,
        archived = report.archived,
        unlinked = report.unlinked,
        deleted = report.deleted,
        merged = report.merged,
        dead_lettered = report.dead_lettered,
        upsert_calls = report.upsert_calls,
        update_calls = report.update_calls,
        read_calls = report.read_calls,
        archive_calls = report.archive_calls,
        skipped = ?report.skipped,
        duration_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        "Outbound batch of {} lead changes committed",
        report.jobs
    );
    for w in waiters {
        let _ = w.reply.send(Ok(JobOutcome::Committed));
    }
}

async fn failed(
    shared: &Shared,
    err: &OutboundError,
    waiters: Vec<Waiter>,
    last_chance: Vec<PushLeadChange>,
) {
    let code = err.code();
    let span = tracing::Span::current();
    span.record("outcome", "failed");
    span.record("error.code", code);
    let metrics = &shared.metrics;
    metrics.push_batches.with_label_values(&["failed"]).inc();
    tracing::warn!(
        error = %err,
        error.code = code,
        jobs = waiters.len(),
        "Outbound batch of {} lead changes failed; its jobs will be retried",
        waiters.len()
    );
    let rescued = dead_letter_last_attempts(shared, code, &last_chance).await;
    for w in waiters {
        let outcome = if w.attempt >= LAST_ATTEMPT && rescued.contains(&w.change_id) {
            metrics.push_dead_lettered.inc();
            tracing::error!(
                change.id = w.change_id,
                attempt = w.attempt,
                "Lead change {} failed on its last attempt and was dead-lettered",
                w.change_id
            );
            Ok(JobOutcome::DeadLettered)
        } else {
            metrics.push_failed.inc();
            Err(PushBatchError::Failed { code })
        };
        let _ = w.reply.send(outcome);
    }
}

/// Dead-letters the jobs of a failed batch that were on their last attempt;
/// returns the change ids recorded.
async fn dead_letter_last_attempts(
    shared: &Shared,
    code: &str,
    jobs: &[PushLeadChange],
) -> HashSet<i64> {
    let mut recorded = HashSet::new();
    let reason = format!("retries_exhausted_{code}");
    for job in jobs {
        let letter = NewDeadLetter {
            // The integration may be gone; the payload names it.
            integration_id: None,
            portal_id: None,
            event_key: PushLeadChange::task_id_of(job.change_id),
            kind: DeadLetterKind::OutboundChange,
            reason: reason.clone(),
            // The shape of every outbound letter (see `outbound`): what to
            // push again on replay is the lead, not the row.
            payload: OutboundLetter::of(job.integration_id, job.lead_id, std::slice::from_ref(job))
                .to_json(),
        };
        match dead_letters::record(shared.deps.store.pool(), &letter).await {
            Ok(_) => {
                recorded.insert(job.change_id);
            }
            Err(e) => {
                tracing::error!(
                    change.id = job.change_id,
                    error = %e,
                    "Failed to dead-letter lead change {} after its last attempt; the queue keeps it in its dead set",
                    job.change_id
                );
            }
        }
    }
    recorded
}
