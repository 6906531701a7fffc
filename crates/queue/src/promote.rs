//! Bounded promotion of due tasks, the cure for apalis-redis 1.0.0's stall.
//!
//! Failed jobs are re-scheduled by apalis-redis's ack script into the
//! scheduled set. Its fetch script then moves *all* due ids to the active list
//! with a single `unpack()`, which fails past ~8,000 ids ("too many results to
//! unpack"): every fetch fails and consumption stops until someone intervenes.
//! A HubSpot outage that fails 10,000 jobs is enough. The worker runs a
//! [`Promoter`] before it starts and then continuously, so the due set never
//! grows to that size, and again whenever a worker stream fails.

use std::sync::LazyLock;
use std::time::{SystemTime, UNIX_EPOCH};

use leadsync_runtime::config::RedisSettings;

use crate::{INBOUND_QUEUE, QueueError, queue_config, redis_client};

static PROMOTE_SCRIPT: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("promote.lua")));

/// Ids moved per Lua call: far below the ~8,000 `unpack()` limit.
pub const PROMOTE_SLICE: usize = 1_000;

/// Moves due tasks of a queue from `scheduled` to `active`.
#[derive(Clone)]
pub struct Promoter {
    conn: redis::aio::MultiplexedConnection,
    config: apalis_redis::Config,
}

impl Promoter {
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
            config: queue_config(settings, queue),
        })
    }

    /// Promotes every task due now, [`PROMOTE_SLICE`] at a time; returns how many.
    pub async fn promote_due(&self) -> Result<u64, QueueError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut conn = self.conn.clone();
        let mut total = 0;
        loop {
            let moved: u64 = PROMOTE_SCRIPT
                .key(self.config.scheduled_jobs_set())
                .key(self.config.active_jobs_list())
                .key(self.config.signal_list())
                .arg(now)
                .arg(PROMOTE_SLICE)
                .invoke_async(&mut conn)
                .await?;
            total += moved;
            if moved < PROMOTE_SLICE as u64 {
                return Ok(total);
            }
        }
    }
}
