//! The queue consumers: an apalis worker on the inbound queue in Redis and
//! one on the outbound queue of platform lead changes, each kept alive by a
//! supervisor, and the promoter that keeps apalis-redis from stalling on a
//! backlog of due retries.
//!
//! apalis-redis 1.0.0 refuses to register a worker name seen within its
//! heartbeat threshold, even after a graceful stop, so every start gets a
//! new name: `{hostname}-{pid}-{uuid v7}`. A worker stream that fails (Redis
//! restarted, a fetch timed out, a script error) is logged with its cause and
//! restarted under a new name after a backoff with jitter; the jobs the
//! failed worker held are re-queued by the next worker's heartbeat once the
//! old name's heartbeat is older than `heartbeat_interval × missed_heartbeats`.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use apalis::prelude::{
    Attempt, BackendExt as _, Data, WorkerBuilder, WorkerBuilderExt as _, WorkerContext,
    WorkerError,
};
use apalis_redis::RedisStorage;
use backon::{BackoffBuilder as _, ExponentialBuilder};
use leadsync_queue::{InboundEvent, Janitor, Promoter, PushLeadChange, QueueInspector};
use leadsync_runtime::Settings;
use leadsync_runtime::config::RedisSettings;
use redis::AsyncCommands as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use tracing::field::Empty;

use crate::batcher::{BatchError, Batcher, JobOutcome};
use crate::metrics::WorkerMetrics;
use crate::push_batcher::{self, PushBatcher};

/// A fetch moves up to `fetch_batch_size` tasks in one script call; the
/// default response timeout of a Redis connection (500 ms) turns a slow one
/// into a fatal worker error.
pub const MIN_RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// A consumer that ran this long is considered healthy again: the restart
/// backoff starts over.
const STABLE_AFTER: Duration = Duration::from_secs(60);

/// The name of one worker start: `{hostname}-{pid}-{uuid v7}`.
pub fn worker_name() -> String {
    let host = whoami::hostname().unwrap_or_else(|_| "worker".to_owned());
    format!("{host}-{}-{}", std::process::id(), uuid::Uuid::now_v7())
}

/// The apalis-redis configuration the worker consumes with: the queue's own
/// ([`leadsync_queue::inbound_config`]) with the `[worker]` fetch size and
/// heartbeat.
pub fn queue_config(settings: &Settings) -> apalis_redis::Config {
    with_worker_settings(leadsync_queue::inbound_config(&settings.redis), settings)
}

/// The apalis-redis configuration of the outbound queue of lead changes
/// ([`leadsync_queue::outbound_config`]) with the `[worker]` fetch size and
/// heartbeat.
pub fn push_queue_config(settings: &Settings) -> apalis_redis::Config {
    with_worker_settings(leadsync_queue::outbound_config(&settings.redis), settings)
}

fn with_worker_settings(config: apalis_redis::Config, settings: &Settings) -> apalis_redis::Config {
    let worker = &settings.worker;
    config
        .batch_size(worker.fetch_batch_size)
        .heartbeat_interval(worker.heartbeat_interval())
        .missed_heartbeats(worker.missed_heartbeats)
}

/// The queue's connection settings with a response timeout of at least
/// [`MIN_RESPONSE_TIMEOUT`].
pub fn connection_config(redis: &RedisSettings) -> ConnectionManagerConfig {
    let response = Duration::from_millis(redis.response_timeout_ms).max(MIN_RESPONSE_TIMEOUT);
    leadsync_queue::connection_config(redis).set_response_timeout(Some(response))
}

/// Why a job failed; the queue retries it.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Its batch did not commit.
    #[error(transparent)]
    Batch(#[from] BatchError),
}

/// Runs one inbound job: hands the event to the batcher and waits for its
/// batch. `Ok` only once the batch committed, so the job is acknowledged
/// after its effect.
///
/// # Errors
/// [`JobError`] when the batch failed: the queue re-schedules the job.
pub async fn handle_event(
    event: InboundEvent,
    attempt: Attempt,
    batcher: Data<Batcher>,
) -> Result<(), JobError> {
    let span = tracing::info_span!(
        "job.inbound",
        event.key = %event.key,
        portal.id = event.portal_id.map(|p| p.get()),
        attempt = attempt.current(),
        outcome = Empty,
    );
    leadsync_runtime::telemetry::continue_trace(&span, &event.trace);
    async move {
        let outcome = batcher.submit(event, attempt.current()).await;
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
                Err(e.into())
            }
        }
    }
    .instrument(span)
    .await
}

/// The running consumer's context, for readiness checks.
#[derive(Clone, Default)]
pub struct ConsumerStatus {
    current: Arc<Mutex<Option<WorkerContext>>>,
}

impl ConsumerStatus {
    fn set(&self, ctx: Option<WorkerContext>) {
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = ctx;
    }

    /// Whether a consumer is registered in Redis and taking jobs.
    pub fn is_ready(&self) -> bool {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .is_some_and(WorkerContext::is_ready)
    }

    /// The running consumer's worker name, if one runs.
    pub fn worker_name(&self) -> Option<String> {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|c| c.name().to_owned())
    }
}

/// Why a consumer run ended without being asked to.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerFailure {
    /// The apalis worker stream failed (registration, fetch, heartbeat or ack).
    #[error(transparent)]
    Stream(#[from] WorkerError),
    /// The worker stream ended although nobody stopped it.
    #[error("the worker stream ended without being stopped")]
    Ended,
}

/// How one consumer run ended.
enum RunEnd {
    /// Shutdown was requested and the consumer stopped.
    Stopped,
    /// The consumer failed.
    Failed(ConsumerFailure),
}

/// Which queue a consumer drains, and where its jobs go.
#[derive(Clone)]
pub(crate) enum ConsumerJobs {
    /// Webhook events ([`InboundEvent`]) to the inbound batcher.
    Inbound(Batcher),
    /// Platform lead changes ([`PushLeadChange`]) to the push batcher.
    Outbound(PushBatcher),
}

impl ConsumerJobs {
    fn label(&self) -> &'static str {
        match self {
            Self::Inbound(_) => "inbound",
            Self::Outbound(_) => "outbound",
        }
    }
}

/// The supervised queue consumer.
pub(crate) struct Consumer {
    /// The queue's Redis.
    pub(crate) conn: ConnectionManager,
    /// The queue configuration (see [`queue_config`]).
    pub(crate) config: apalis_redis::Config,
    /// How often an idle consumer fetches.
    pub(crate) poll_interval: Duration,
    /// Jobs in flight.
    pub(crate) concurrency: usize,
    /// Where jobs go.
    pub(crate) jobs: ConsumerJobs,
    /// Promotes due retries before each start.
    pub(crate) promoter: Promoter,
    /// Restarts are counted here.
    pub(crate) metrics: WorkerMetrics,
    /// Readiness of the current run.
    pub(crate) status: ConsumerStatus,
}

impl Consumer {
    /// Runs consumers until `shutdown`, restarting a failed one under a new
    /// name. On shutdown the consumer stops fetching and in-flight jobs get
    /// `grace` to finish (their batches commit and they are acknowledged).
    pub(crate) async fn supervise(self, shutdown: CancellationToken, grace: Duration) {
        let backoff = || {
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(500))
                .with_max_delay(Duration::from_secs(30))
                .with_jitter()
                .without_max_times()
                .build()
        };
        let mut delays = backoff();
        while !shutdown.is_cancelled() {
            match self.promoter.promote_due().await {
                Ok(n) => self.metrics.promoted.inc_by(n),
                // The worker's own fetch promotes too; it only stalls on a
                // very large backlog, which the promoter loop keeps trying.
                Err(e) => {
                    tracing::warn!(error = %e, "Promoting due tasks before starting the consumer failed")
                }
            }
            let name = worker_name();
            let started = Instant::now();
            let end = self.run_once(&name, &shutdown, grace).await;
            self.status.set(None);
            let RunEnd::Failed(error) = end else {
                break;
            };
            self.metrics.restarts.inc();
            if started.elapsed() > STABLE_AFTER {
                delays = backoff();
            }
            let delay = delays.next().unwrap_or(Duration::from_secs(30));
            let queue = self.jobs.label();
            tracing::error!(
                worker.name = %name,
                queue,
                error = %error,
                "Queue consumer {name} ({queue}) failed: {error}; restarting under a new name in {delay:?}"
            );
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = shutdown.cancelled() => break,
            }
        }
    }

    async fn run_once(&self, name: &str, shutdown: &CancellationToken, grace: Duration) -> RunEnd {
        let ctx = WorkerContext::new(name);
        // Boxed as `dyn Future + Send` here, where its types are concrete:
        // left generic, the catch-panic layer's handler type fails the
        // higher-ranked `Send` check of the spawned supervisor.
        let mut run: Pin<Box<dyn Future<Output = Result<(), WorkerError>> + Send>> =
            match &self.jobs {
                ConsumerJobs::Inbound(batcher) => {
                    let storage = RedisStorage::<InboundEvent>::new(self.conn.clone())
                        .with_config(self.config.clone())
                        // After an empty fetch apalis waits for the next
                        // heartbeat; polling keeps an idle worker's latency low.
                        .poll_with_interval(self.poll_interval);
                    let worker = WorkerBuilder::new(ctx.clone())
                        .backend(storage)
                        .concurrency(self.concurrency)
                        .catch_panic()
                        .data(batcher.clone())
                        .build(handle_event);
                    Box::pin(worker.run())
                }
                ConsumerJobs::Outbound(batcher) => {
                    let storage = RedisStorage::<PushLeadChange>::new(self.conn.clone())
                        .with_config(self.config.clone())
                        .poll_with_interval(self.poll_interval);
                    let worker = WorkerBuilder::new(ctx.clone())
                        .backend(storage)
                        .concurrency(self.concurrency)
                        .catch_panic()
                        .data(batcher.clone())
                        .build(push_batcher::handle_change);
                    Box::pin(worker.run())
                }
            };
        self.status.set(Some(ctx.clone()));
        let queue = self.jobs.label();
        tracing::info!(worker.name = %name, queue, "Queue consumer {name} ({queue}) starting");
        tokio::select! {
            result = &mut run => match result {
                Err(e) => RunEnd::Failed(e.into()),
                Ok(()) if shutdown.is_cancelled() => RunEnd::Stopped,
                Ok(()) => RunEnd::Failed(ConsumerFailure::Ended),
            },
            () = shutdown.cancelled() => {
                if ctx.stop().is_err() {
                    // Never started: nothing is in flight.
                    return RunEnd::Stopped;
                }
                match tokio::time::timeout(grace, &mut run).await {
                    Ok(Ok(())) => {
                        tracing::info!(worker.name = %name, "Queue consumer {name} stopped; in-flight jobs finished");
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(worker.name = %name, error = %e, "Queue consumer {name} failed while stopping: {e}");
                    }
                    Err(_) => {
                        tracing::warn!(
                            worker.name = %name,
                            "In-flight jobs of {name} did not finish within {grace:?}; another worker takes them over after the heartbeat timeout"
                        );
                    }
                }
                RunEnd::Stopped
            }
        }
    }
}

/// Fields of a queued payload the gauges need.
#[derive(Deserialize)]
struct Received {
    received_at_ms: i64,
}

/// Queue depth and age of the oldest ready job.
pub(crate) struct QueueGauges {
    inspector: QueueInspector,
    conn: ConnectionManager,
    config: apalis_redis::Config,
}

impl QueueGauges {
    /// Gauges of the queue `config` describes.
    pub(crate) fn new(
        inspector: QueueInspector,
        conn: ConnectionManager,
        config: apalis_redis::Config,
    ) -> Self {
        Self {
            inspector,
            conn,
            config,
        }
    }

    /// Reads the queue and sets the gauges.
    pub(crate) async fn refresh(
        &mut self,
        metrics: &WorkerMetrics,
    ) -> Result<(), leadsync_queue::QueueError> {
        let waiting = self.inspector.waiting().await?;
        metrics
            .queue_waiting
            .set(i64::try_from(waiting).unwrap_or(i64::MAX));
        let head: Option<String> = self.conn.lindex(self.config.active_jobs_list(), 0).await?;
        let mut age = 0.0;
        if let Some(id) = head {
            let raw: Option<Vec<u8>> = self.conn.hget(self.config.job_data_hash(), &id).await?;
            if let Some(received) = raw.and_then(|r| serde_json::from_slice::<Received>(&r).ok())
                && received.received_at_ms > 0
            {
                let now = chrono::Utc::now().timestamp_millis();
                age = (now - received.received_at_ms).max(0) as f64 / 1000.0;
            }
        }
        metrics.queue_oldest_age_seconds.set(age);
        Ok(())
    }
}

/// Every `every` until `shutdown`: promotes due retries, retires finished
/// tasks (their ids stay remembered for deduplication, see
/// [`leadsync_queue::Janitor`]) and refreshes the queue gauges.
pub(crate) async fn maintain_periodically(
    promoter: Promoter,
    janitor: Janitor,
    mut gauges: QueueGauges,
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
            Err(e) => tracing::warn!(error = %e, "Promoting due tasks failed"),
        }
        match janitor.sweep().await {
            Ok(sweep) => metrics.retired.inc_by(sweep.retired),
            Err(e) => tracing::warn!(error = %e, "Retiring finished tasks failed"),
        }
        if let Err(e) = gauges.refresh(&metrics).await {
            tracing::debug!(error = %e, "Reading the queue depth failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_start_gets_a_new_name_naming_host_and_process() {
        let (a, b) = (worker_name(), worker_name());
        assert_ne!(a, b);
        assert!(a.contains(&format!("-{}-", std::process::id())), "{a}");
    }

    #[test]
    fn the_queue_config_takes_the_worker_settings_and_keeps_the_queue() {
        let settings = Settings::from_toml(
            "[redis]\nkey_prefix = \"p\"\n[worker]\nfetch_batch_size = 600\nconcurrency = 1200\n\
             heartbeat_interval_secs = 2\nmissed_heartbeats = 4",
        )
        .expect("valid");
        let config = queue_config(&settings);
        assert_eq!(config.batch_size, 600);
        assert_eq!(config.orphaned_duration(), Duration::from_secs(8));
        assert_eq!(config.active_jobs_list(), "p:hubspot:events:active");
        assert!(
            config.idempotency_ttl.is_some(),
            "the queue's own settings stay"
        );
    }

    #[test]
    fn the_push_queue_config_names_the_outbound_queue_with_the_worker_settings() {
        let settings = Settings::from_toml(
            "[redis]\nkey_prefix = \"p\"\n[worker]\nfetch_batch_size = 600\nconcurrency = 1200\nheartbeat_interval_secs = 2",
        )
        .expect("valid");
        let config = push_queue_config(&settings);
        assert_eq!(config.batch_size, 600);
        assert_eq!(config.active_jobs_list(), "p:platform:lead-changes:active");
        assert_ne!(
            config.active_jobs_list(),
            queue_config(&settings).active_jobs_list()
        );
    }

    #[test]
    fn a_fetch_gets_at_least_five_seconds_to_answer() {
        let settings = Settings::from_toml("").expect("valid");
        assert_eq!(
            connection_config(&settings.redis).response_timeout(),
            Some(MIN_RESPONSE_TIMEOUT)
        );
        let slow = Settings::from_toml("[redis]\nresponse_timeout_ms = 9000").expect("valid");
        assert_eq!(
            connection_config(&slow.redis).response_timeout(),
            Some(Duration::from_secs(9))
        );
    }
}
