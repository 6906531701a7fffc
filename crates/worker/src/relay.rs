//! The outbox relay: platform lead changes (`lead_changes`, filled by a
//! trigger on `leads`, docs/adr/0005) → the outbound queue.
//!
//! In one Postgres transaction the relay claims pending outbox rows with
//! `FOR UPDATE SKIP LOCKED` (so replicas share the work and never queue a row
//! twice at once), pushes one [`PushLeadChange`] job per row straight to the
//! queue's active list, and marks the rows relayed. The task id is derived
//! from the row id (`lead-change:{id}`): when the relay dies between the push
//! and the commit, the rows come back and their second push is refused as a
//! duplicate. It wakes on the trigger's `NOTIFY` as soon as a change commits,
//! and polls every `relay_poll_interval_ms` anyway, because notifications
//! sent while its listening connection was down are lost.

use std::collections::HashMap;
use std::time::Duration;

use leadsync_queue::{BulkPusher, OUTBOUND_QUEUE, PushLeadChange, QueueError};
use leadsync_queue::{Janitor, Promoter};
use leadsync_runtime::config::{RedisSettings, WorkerSettings};
use leadsync_runtime::telemetry;
use leadsync_store::outbox::LeadChange;
use leadsync_store::{Store, StoreError, outbox};
use sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use tracing::field::Empty;

use crate::metrics::WorkerMetrics;

/// How the relay works.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayConfig {
    /// Rows claimed (and pushed) per transaction.
    pub batch_size: usize,
    /// How often it looks for rows without being notified.
    pub poll_interval: Duration,
}

impl RelayConfig {
    /// The `[worker]` settings' relay parameters.
    pub fn from_settings(settings: &WorkerSettings) -> Self {
        Self {
            batch_size: settings.relay_batch_size,
            poll_interval: settings.relay_poll_interval(),
        }
    }
}

/// Why a relay round failed; the rows stay pending and the next round
/// takes them.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// Postgres failed.
    #[error("database error: {0}")]
    Store(#[from] StoreError),
    /// Redis refused the push.
    #[error("queue error: {0}")]
    Queue(#[from] QueueError),
}

impl From<sqlx::Error> for RelayError {
    fn from(err: sqlx::Error) -> Self {
        Self::Store(err.into())
    }
}

/// What relay rounds did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayReport {
    /// Outbox rows claimed and marked relayed.
    pub claimed: usize,
    /// Jobs newly queued.
    pub queued: u64,
    /// Rows whose job was already queued (a relay died before its commit).
    pub duplicates: u64,
}

/// Moves outbox rows to the outbound queue; cheap to clone.
#[derive(Clone)]
pub struct Relay {
    store: Store,
    pusher: BulkPusher,
    config: RelayConfig,
    metrics: WorkerMetrics,
}

impl Relay {
    /// A relay from `store` to the outbound queue of `redis` (connected
    /// lazily).
    ///
    /// # Errors
    /// [`QueueError`] when the Redis URL is unusable.
    pub fn new(
        store: Store,
        redis: &RedisSettings,
        config: RelayConfig,
        metrics: WorkerMetrics,
    ) -> Result<Self, QueueError> {
        Ok(Self {
            store,
            pusher: BulkPusher::for_queue(redis, OUTBOUND_QUEUE)?,
            config,
            metrics,
        })
    }

    /// One round: claims up to `batch_size` pending rows, queues them and
    /// marks them relayed, in one transaction.
    ///
    /// # Errors
    /// [`RelayError`]; nothing was marked relayed then.
    pub async fn relay_once(&self) -> Result<RelayReport, RelayError> {
        let span = tracing::info_span!(
            "outbox.relay",
            rows = Empty,
            queued = Empty,
            duplicates = Empty
        );
        async {
            let mut tx = self.store.begin().await?;
            let limit = i64::try_from(self.config.batch_size).unwrap_or(i64::MAX);
            let changes = outbox::claim_batch(&mut tx, limit).await?;
            if changes.is_empty() {
                tx.commit().await?;
                return Ok(RelayReport::default());
            }
            let trace = telemetry::trace_context_of(&tracing::Span::current());
            let jobs: Vec<PushLeadChange> =
                changes.iter().map(|c| push_job(c, trace.clone())).collect();
            // Pushed while the rows are locked: a failure rolls the claim
            // back and the rows stay pending.
            let outcome = self.pusher.push_jobs(&jobs).await?;
            let ids: Vec<i64> = changes.iter().map(|c| c.id).collect();
            outbox::mark_relayed(&mut *tx, &ids).await?;
            tx.commit().await?;
            let report = RelayReport {
                claimed: changes.len(),
                queued: outcome.new,
                duplicates: outcome.duplicates,
            };
            let span = tracing::Span::current();
            span.record("rows", report.claimed);
            span.record("queued", report.queued);
            span.record("duplicates", report.duplicates);
            self.metrics.relayed.inc_by(report.queued);
            self.metrics.relay_duplicates.inc_by(report.duplicates);
            Ok(report)
        }
        .instrument(span)
        .await
    }

    /// Rounds until no pending row is left (or another relay holds them).
    ///
    /// # Errors
    /// [`RelayError`] of the first failed round; earlier rounds stand.
    pub async fn drain(&self) -> Result<RelayReport, RelayError> {
        self.drain_until(&CancellationToken::new()).await
    }

    /// [`Relay::drain`], stopping between rounds once `shutdown` is cancelled
    /// (a large backlog is left to the next start or another replica).
    async fn drain_until(&self, shutdown: &CancellationToken) -> Result<RelayReport, RelayError> {
        let mut total = RelayReport::default();
        loop {
            let round = self.relay_once().await?;
            total.claimed += round.claimed;
            total.queued += round.queued;
            total.duplicates += round.duplicates;
            if round.claimed < self.config.batch_size || shutdown.is_cancelled() {
                return Ok(total);
            }
        }
    }

    /// Sets the outbox backlog gauges.
    async fn refresh_backlog(&self) {
        match outbox::backlog(self.store.pool()).await {
            Ok((pending, oldest)) => {
                self.metrics.outbox_pending.set(pending);
                let age = oldest.map_or(0.0, |at| {
                    (chrono::Utc::now() - at).num_milliseconds().max(0) as f64 / 1000.0
                });
                self.metrics.outbox_oldest_age_seconds.set(age);
            }
            Err(e) => tracing::debug!(error = %e, "Reading the outbox backlog failed"),
        }
    }

    /// Relays until `shutdown`: at once, whenever the trigger notifies, and
    /// every `poll_interval` otherwise.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut listener: Option<PgListener> = None;
        loop {
            // Listening starts before the drain, so no commit in between is missed.
            if listener.is_none() {
                match outbox::listener(self.store.pool()).await {
                    Ok(l) => listener = Some(l),
                    Err(e) => tracing::warn!(
                        error = %e,
                        "Listening on {} failed; the relay polls every {:?}",
                        outbox::CHANNEL,
                        self.config.poll_interval
                    ),
                }
            }
            let failed = match self.drain_until(&shutdown).await {
                Ok(report) => {
                    if report.claimed > 0 {
                        tracing::debug!(
                            rows = report.claimed,
                            queued = report.queued,
                            duplicates = report.duplicates,
                            "Relayed {} lead change(s) to the outbound queue",
                            report.claimed
                        );
                    }
                    false
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Relaying lead changes failed; retrying in {:?}", self.config.poll_interval);
                    true
                }
            };
            self.refresh_backlog().await;
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(self.config.poll_interval) => {}
                // After a failure, wait for the poll interval instead of
                // retrying at every notification.
                () = next_notification(&mut listener), if !failed => {}
            }
        }
    }
}

/// Waits for the next notification; pends forever without a listener. A
/// lost connection returns too (notifications may have been missed), and a
/// failed listener is dropped, to be opened again by the next round.
async fn next_notification(listener: &mut Option<PgListener>) {
    let Some(l) = listener.as_mut() else {
        return std::future::pending().await;
    };
    match l.try_recv().await {
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(error = %e, "The outbox listener failed; reconnecting");
            *listener = None;
        }
    }
}

/// Every `every` until `shutdown`: promotes the outbound queue's due retries
/// and retires its finished tasks (their ids stay remembered, so a relay that
/// pushes a row again is refused).
pub(crate) async fn maintain_outbound_queue(
    promoter: Promoter,
    janitor: Janitor,
    metrics: WorkerMetrics,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        match promoter.promote_due().await {
            Ok(n) => metrics.promoted.inc_by(n),
            Err(e) => tracing::warn!(error = %e, "Promoting due lead changes failed"),
        }
        match janitor.sweep().await {
            Ok(sweep) => metrics.retired.inc_by(sweep.retired),
            Err(e) => tracing::warn!(error = %e, "Retiring finished lead changes failed"),
        }
    }
}

/// The outbound job of one claimed outbox row, carrying `trace` (the
/// relaying span's context).
pub fn push_job(change: &LeadChange, trace: HashMap<String, String>) -> PushLeadChange {
    PushLeadChange {
        change_id: change.id,
        integration_id: change.integration_id,
        lead_id: change.lead_id,
        operation: change.operation.as_str().to_owned(),
        changed_at_ms: change.created_at.timestamp_millis(),
        crm_id: change.crm_id,
        trace,
    }
}
