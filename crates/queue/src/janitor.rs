//! Retirement of finished tasks: the other half of the queue's deduplication.
//!
//! The ingester's push script refuses an event whose id is in the queue's
//! data hash. apalis-redis leaves a finished task's payload and metadata
//! there forever (and its vacuum would forget the id at once, letting a late
//! HubSpot redelivery in again). The worker runs a [`Janitor`] that shrinks
//! each finished task to an empty entry, remembered for the idempotency TTL
//! (at least 7 days, longer than HubSpot's ~24 h of retries), then deleted.
//! A duplicate thus costs the ingester no extra Redis command, and a finished
//! event costs Redis a tombstone instead of its payload.

use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use leadsync_runtime::config::RedisSettings;

use crate::{INBOUND_QUEUE, QueueError, queue_config, queue_name, redis_client};

static RETIRE_SCRIPT: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("retire_done.lua")));

/// Ids handled per Lua call: short calls, far below `unpack()`'s limit.
pub const RETIRE_SLICE: usize = 1_000;

/// What one [`Janitor::sweep`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sweep {
    /// Finished tasks whose payload and metadata were dropped.
    pub retired: u64,
    /// Remembered ids older than the idempotency TTL, now forgotten.
    pub forgotten: u64,
}

/// Retires finished tasks of a queue (the inbound one unless built with
/// [`Janitor::for_queue`]).
#[derive(Clone)]
pub struct Janitor {
    conn: redis::aio::MultiplexedConnection,
    config: apalis_redis::Config,
    ttl: Duration,
    /// Retired ids scored by retirement time, next to apalis-redis's keys.
    remembered: String,
}

impl Janitor {
    /// Connects to the inbound queue's Redis.
    pub async fn connect(settings: &RedisSettings) -> Result<Self, QueueError> {
        Self::for_queue(settings, INBOUND_QUEUE).await
    }

    /// Connects to the Redis of `queue` (e.g. [`crate::OUTBOUND_QUEUE`]).
    pub async fn for_queue(settings: &RedisSettings, queue: &str) -> Result<Self, QueueError> {
        Ok(Self {
            conn: redis_client(settings)?
                .get_multiplexed_async_connection()
                .await?,
            remembered: remembered_set_of(settings, queue),
            ttl: Duration::from_secs(settings.idempotency_ttl_secs),
            config: queue_config(settings, queue),
        })
    }

    /// Retires every finished task and forgets ids retired more than the
    /// idempotency TTL ago, [`RETIRE_SLICE`] at a time.
    pub async fn sweep(&self) -> Result<Sweep, QueueError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.sweep_at(now).await
    }

    /// [`Janitor::sweep`] as if the clock read `now` (seconds since the
    /// epoch): retirement times are recorded, and the TTL measured, with it.
    pub async fn sweep_at(&self, now: u64) -> Result<Sweep, QueueError> {
        let mut conn = self.conn.clone();
        let mut total = Sweep::default();
        loop {
            let (retired, forgotten): (u64, u64) = RETIRE_SCRIPT
                .key(self.config.job_data_hash())
                .key(self.config.done_jobs_set())
                .key(self.config.job_meta_hash())
                .key(&self.remembered)
                .arg(now)
                .arg(self.ttl.as_secs())
                .arg(RETIRE_SLICE)
                .invoke_async(&mut conn)
                .await?;
            total.retired += retired;
            total.forgotten += forgotten;
            if retired < RETIRE_SLICE as u64 && forgotten < RETIRE_SLICE as u64 {
                return Ok(total);
            }
        }
    }
}

/// The sorted set of retired ids of the inbound queue, scored by retirement
/// time (seconds), next to apalis-redis's keys of the queue.
pub fn remembered_set(settings: &RedisSettings) -> String {
    remembered_set_of(settings, INBOUND_QUEUE)
}

/// The sorted set of retired ids of `queue`.
pub fn remembered_set_of(settings: &RedisSettings, queue: &str) -> String {
    format!("{}:remembered", queue_name(settings, queue))
}
