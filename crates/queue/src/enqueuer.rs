//! Group commit for webhook events.
//!
//! One Redis round trip per HTTP request caps a single-event workload at the
//! round-trip rate. Instead every request hands its events to a dispatcher,
//! which gathers whatever concurrent requests have queued (up to
//! `redis.max_push_batch` events) into one apalis-redis bulk push and tells
//! each request when Redis acknowledged its events. Under light load a push
//! holds one request; under heavy load pushes grow and their number stays low.

use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use apalis::prelude::{TaskBuilder, TaskId};
use apalis_redis::RedisTask;
use leadsync_runtime::config::RedisSettings;
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tracing::Instrument as _;

use crate::{
    InboundEvent, QueueError, QueueJob, connection_config, inbound_config, queue_config,
    redis_client,
};

/// Counters of the enqueuer, registered in the binary's registry.
#[derive(Clone)]
pub struct QueueMetrics {
    enqueued: IntCounter,
    duplicates: IntCounter,
    pushes: IntCounterVec,
    push_size: Histogram,
    push_seconds: Histogram,
}

impl QueueMetrics {
    /// Creates and registers the collectors.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let enqueued = IntCounter::with_opts(Opts::new(
            "leadsync_events_enqueued_total",
            "Webhook events newly written to the queue",
        ))?;
        let duplicates = IntCounter::with_opts(Opts::new(
            "leadsync_events_duplicate_total",
            "Webhook events already queued (HubSpot redeliveries), not queued again",
        ))?;
        let pushes = IntCounterVec::new(
            Opts::new(
                "leadsync_queue_pushes_total",
                "Bulk pushes to Redis by outcome",
            ),
            &["outcome"],
        )?;
        let push_size = Histogram::with_opts(
            HistogramOpts::new("leadsync_queue_push_events", "Events per bulk push").buckets(vec![
                1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0,
            ]),
        )?;
        let push_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "leadsync_queue_push_seconds",
                "Duration of one bulk push to Redis",
            )
            .buckets(leadsync_runtime::metrics::LATENCY_BUCKETS.to_vec()),
        )?;
        registry.register(Box::new(enqueued.clone()))?;
        registry.register(Box::new(duplicates.clone()))?;
        registry.register(Box::new(pushes.clone()))?;
        registry.register(Box::new(push_size.clone()))?;
        registry.register(Box::new(push_seconds.clone()))?;
        Ok(Self {
            enqueued,
            duplicates,
            pushes,
            push_size,
            push_seconds,
        })
    }

    /// Collectors registered nowhere (tools and tests that do not export them).
    pub fn unregistered() -> Self {
        Self::register(&Registry::new()).expect("a fresh registry accepts every collector")
    }
}

/// Pushes jobs straight to Redis in one bulk call, without the enqueuer's
/// batching: the queue's own ceiling, for benchmarks and tools, and the
/// worker's outbox relay ([`BulkPusher::for_queue`]). Every queue uses the
/// same script (`push_events.lua`): a job whose task id is already stored is
/// refused.
#[derive(Clone)]
pub struct BulkPusher {
    conn: Arc<Connection>,
    config: apalis_redis::Config,
}

/// What a bulk push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushOutcome {
    /// Events newly queued.
    pub new: u64,
    /// Events whose key was already queued.
    pub duplicates: u64,
}

impl BulkPusher {
    /// Connects lazily to the inbound queue's Redis.
    pub fn new(settings: &RedisSettings) -> Result<Self, QueueError> {
        Ok(Self {
            conn: Arc::new(Connection::new(settings)?),
            config: inbound_config(settings),
        })
    }

    /// Connects lazily to the Redis of `queue` (e.g. [`crate::OUTBOUND_QUEUE`]).
    pub fn for_queue(settings: &RedisSettings, queue: &str) -> Result<Self, QueueError> {
        Ok(Self {
            conn: Arc::new(Connection::new(settings)?),
            config: queue_config(settings, queue),
        })
    }

    /// Opens the connection now rather than on the first push.
    pub async fn connect(&self) -> Result<(), QueueError> {
        self.conn.get().await.map(drop)
    }

    /// Queues `events` in one Lua call.
    pub async fn push(&self, events: &[InboundEvent]) -> Result<PushOutcome, QueueError> {
        self.push_jobs(events).await
    }

    /// Queues `jobs` in one Lua call, each under its [`QueueJob::task_id`];
    /// ids already stored (queued, running, failed or remembered after
    /// finishing) are refused and counted as duplicates.
    pub async fn push_jobs<J: QueueJob>(&self, jobs: &[J]) -> Result<PushOutcome, QueueError> {
        let tasks = jobs.iter().map(encode).collect::<Result<Vec<_>, _>>()?;
        push_tasks(&self.conn, &self.config, &tasks).await
    }

    /// Queues `events` with apalis-redis's own bulk push, for comparison in
    /// benchmarks. Its tasks wait in the scheduled set (see `push_events.lua`).
    pub async fn push_with_apalis_script(
        &self,
        events: &[InboundEvent],
    ) -> Result<PushOutcome, QueueError> {
        let tasks = events
            .iter()
            .map(|e| {
                Ok(TaskBuilder::new(serde_json::to_vec(e)?)
                    .task_id(TaskId::from_string(e.key.as_str()))
                    .idempotency_key(e.key.as_str())
                    .build())
            })
            .collect::<Result<Vec<RedisTask>, QueueError>>()?;
        let mut manager = self.conn.get().await?;
        let (enqueued, scheduled) =
            apalis_redis::queries::push_tasks(&mut manager, &self.config, &tasks).await?;
        let new = u64::from(enqueued) + u64::from(scheduled);
        Ok(PushOutcome {
            new,
            duplicates: (tasks.len() as u64).saturating_sub(new),
        })
    }
}

async fn push_tasks(
    conn: &Connection,
    config: &apalis_redis::Config,
    tasks: &[EncodedEvent],
) -> Result<PushOutcome, QueueError> {
    if tasks.is_empty() {
        return Ok(PushOutcome {
            new: 0,
            duplicates: 0,
        });
    }
    let mut manager = conn.get().await?;
    let mut invocation = PUSH_SCRIPT.key(config.job_data_hash());
    invocation
        .key(config.active_jobs_list())
        .key(config.signal_list())
        .key(config.job_meta_hash())
        .arg(MAX_ATTEMPTS);
    for task in tasks {
        invocation.arg(&task.id).arg(&task.payload);
    }
    let new: u64 = invocation.invoke_async(&mut manager).await?;
    Ok(PushOutcome {
        new,
        duplicates: (tasks.len() as u64).saturating_sub(new),
    })
}

/// Events of one request, and where to report the outcome.
struct PushRequest {
    tasks: Vec<EncodedEvent>,
    reply: oneshot::Sender<Result<(), Arc<QueueError>>>,
}

/// Hands events to Redis in bulk; cheap to clone.
#[derive(Clone)]
pub struct Enqueuer {
    tx: mpsc::Sender<PushRequest>,
    conn: Arc<Connection>,
}

/// A lazily established connection: the ingester starts (and answers 503)
/// while Redis is down, and connects once it is back.
struct Connection {
    client: redis::Client,
    config: redis::aio::ConnectionManagerConfig,
    manager: tokio::sync::OnceCell<redis::aio::ConnectionManager>,
}

impl Connection {
    fn new(settings: &RedisSettings) -> Result<Self, QueueError> {
        Ok(Self::with_client(redis_client(settings)?, settings))
    }

    fn with_client(client: redis::Client, settings: &RedisSettings) -> Self {
        Self {
            client,
            config: connection_config(settings),
            manager: tokio::sync::OnceCell::new(),
        }
    }

    async fn get(&self) -> Result<redis::aio::ConnectionManager, QueueError> {
        let manager = self
            .manager
            .get_or_try_init(|| {
                self.client
                    .get_connection_manager_with_config(self.config.clone())
            })
            .await?;
        Ok(manager.clone())
    }
}

impl Enqueuer {
    /// Starts the dispatcher on the current tokio runtime. No connection is
    /// made until the first push or [`Enqueuer::ping`].
    pub fn start(settings: &RedisSettings, metrics: QueueMetrics) -> Result<Self, QueueError> {
        Ok(Self::start_with_client(
            redis_client(settings)?,
            settings,
            metrics,
        ))
    }

    /// Like [`Enqueuer::start`] with a client opened beforehand. An HTTP
    /// server starts one enqueuer per worker thread: requests, dispatcher and
    /// Redis connection then share a thread and never wake another.
    pub fn start_with_client(
        client: redis::Client,
        settings: &RedisSettings,
        metrics: QueueMetrics,
    ) -> Self {
        let conn = Arc::new(Connection::with_client(client, settings));
        // A bounded channel: when Redis stalls, requests wait here (and hit
        // their deadline) instead of piling up without limit.
        let (tx, rx) = mpsc::channel(settings.max_push_batch * settings.push_concurrency * 4);
        let dispatcher = Dispatcher {
            rx,
            conn: Arc::clone(&conn),
            config: inbound_config(settings),
            max_batch: settings.max_push_batch,
            permits: Arc::new(Semaphore::new(settings.push_concurrency)),
            metrics,
        };
        tokio::spawn(dispatcher.run());
        Self { tx, conn }
    }

    /// Queues `events` and waits until Redis has acknowledged all of them, or
    /// `deadline` passes. Events already queued (same key) are not queued again.
    pub async fn enqueue(
        &self,
        events: Vec<InboundEvent>,
        deadline: Duration,
    ) -> Result<(), QueueError> {
        if events.is_empty() {
            return Ok(());
        }
        let tasks = events.iter().map(encode).collect::<Result<Vec<_>, _>>()?;
        let (reply, outcome) = oneshot::channel();
        let wait = async {
            self.tx
                .send(PushRequest { tasks, reply })
                .await
                .map_err(|_| QueueError::Closed)?;
            match outcome.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(shared)) => Err(unshare(&shared)),
                Err(_) => Err(QueueError::Closed),
            }
        };
        tokio::time::timeout(deadline, wait)
            .await
            .map_err(|_| QueueError::Deadline(deadline))?
    }

    /// Checks that Redis answers (readiness).
    pub async fn ping(&self, deadline: Duration) -> Result<(), QueueError> {
        let ping = async {
            let mut conn = self.conn.get().await?;
            redis::cmd("PING").query_async::<String>(&mut conn).await?;
            Ok(())
        };
        tokio::time::timeout(deadline, ping)
            .await
            .map_err(|_| QueueError::Deadline(deadline))?
    }
}

/// A push failure is shared by every request of the push; each gets its own copy.
fn unshare(e: &QueueError) -> QueueError {
    match e {
        QueueError::Redis(r) => QueueError::Redis(redis::RedisError::from((
            r.kind(),
            "bulk push failed",
            r.to_string(),
        ))),
        QueueError::Deadline(d) => QueueError::Deadline(*d),
        QueueError::Closed => QueueError::Closed,
        other => QueueError::Redis(redis::RedisError::from((
            redis::ErrorKind::Client,
            "bulk push failed",
            other.to_string(),
        ))),
    }
}

/// A job ready for the push script: its task id and its payload in
/// apalis's JSON codec.
#[derive(Debug, Clone)]
pub(crate) struct EncodedEvent {
    id: String,
    payload: Vec<u8>,
}

fn encode<J: QueueJob>(job: &J) -> Result<EncodedEvent, QueueError> {
    Ok(EncodedEvent {
        id: job.task_id(),
        payload: serde_json::to_vec(job)?,
    })
}

/// Tasks whose attempts apalis-redis records as unlimited in practice: its
/// ack script re-schedules failures until 25 attempts whatever this says.
const MAX_ATTEMPTS: u32 = 25;

static PUSH_SCRIPT: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("push_events.lua")));

struct Dispatcher {
    rx: mpsc::Receiver<PushRequest>,
    conn: Arc<Connection>,
    config: apalis_redis::Config,
    max_batch: usize,
    permits: Arc<Semaphore>,
    metrics: QueueMetrics,
}

impl Dispatcher {
    async fn run(mut self) {
        while let Some(first) = self.rx.recv().await {
            // Wait for a free push slot first: while all slots are busy, more
            // requests arrive and join this push.
            let Ok(permit) = Arc::clone(&self.permits).acquire_owned().await else {
                return;
            };
            let mut size = first.tasks.len();
            let mut requests = vec![first];
            // Step back once so that the requests this thread has already
            // read from their sockets reach the channel too: under load one
            // push then carries all of them, for no added wait when idle.
            for _ in 0..2 {
                while size < self.max_batch {
                    match self.rx.try_recv() {
                        Ok(next) => {
                            size += next.tasks.len();
                            requests.push(next);
                        }
                        Err(_) => break,
                    }
                }
                if size >= self.max_batch {
                    break;
                }
                tokio::task::yield_now().await;
            }
            let conn = Arc::clone(&self.conn);
            let config = self.config.clone();
            let metrics = self.metrics.clone();
            tokio::spawn(
                async move {
                    push(&conn, &config, requests, &metrics).await;
                    drop(permit);
                }
                .instrument(tracing::debug_span!("queue.push", events = size)),
            );
        }
    }
}

async fn push(
    conn: &Connection,
    config: &apalis_redis::Config,
    requests: Vec<PushRequest>,
    metrics: &QueueMetrics,
) {
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(requests.iter().map(|r| r.tasks.len()).sum());
    let mut replies = Vec::with_capacity(requests.len());
    for r in requests {
        // A request whose caller already gave up (deadline) still gets
        // pushed: HubSpot will redeliver it and the key makes that harmless.
        tasks.extend(r.tasks);
        replies.push(r.reply);
    }
    let result = push_tasks(conn, config, &tasks).await;
    metrics
        .push_seconds
        .observe(started.elapsed().as_secs_f64());
    metrics.push_size.observe(tasks.len() as f64);
    let outcome = match result {
        Ok(PushOutcome { new, duplicates }) => {
            metrics.enqueued.inc_by(new);
            metrics.duplicates.inc_by(duplicates);
            metrics.pushes.with_label_values(&["ok"]).inc();
            Ok(())
        }
        Err(e) => {
            metrics.pushes.with_label_values(&["error"]).inc();
            tracing::warn!(error = %e, events = tasks.len(), "Bulk push to Redis failed");
            Err(Arc::new(e))
        }
    };
    for reply in replies {
        // The receiver is gone when its request hit its deadline.
        let _ = reply.send(outcome.clone());
    }
}
