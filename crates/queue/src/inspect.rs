//! Read-only views of a queue (and a purge for tests and tools): depth,
//! stored payloads, keys.

use leadsync_domain::EventKey;
use leadsync_runtime::config::RedisSettings;
use redis::AsyncCommands as _;

use crate::{InboundEvent, QueueError, inbound_config, redis_client};

/// Looks into the inbound-event queue.
pub struct QueueInspector {
    conn: redis::aio::MultiplexedConnection,
    config: apalis_redis::Config,
    prefix: String,
}

impl QueueInspector {
    /// Connects to the queue's Redis.
    pub async fn connect(settings: &RedisSettings) -> Result<Self, QueueError> {
        let conn = redis_client(settings)?
            .get_multiplexed_async_connection()
            .await?;
        Ok(Self {
            conn,
            config: inbound_config(settings),
            prefix: settings.key_prefix.clone(),
        })
    }

    /// Job ids stored: waiting, running, failed, dead, or finished and still
    /// remembered (the [`crate::Janitor`] keeps a finished id, without its
    /// payload, for the idempotency TTL).
    pub async fn stored(&mut self) -> Result<u64, QueueError> {
        Ok(self.conn.hlen(self.config.job_data_hash()).await?)
    }

    /// Jobs waiting for a worker (scheduled or ready).
    pub async fn waiting(&mut self) -> Result<u64, QueueError> {
        let scheduled: u64 = self.conn.zcard(self.config.scheduled_jobs_set()).await?;
        let active: u64 = self.conn.llen(self.config.active_jobs_list()).await?;
        Ok(scheduled + active)
    }

    /// Jobs acknowledged as done and not yet retired by the janitor.
    pub async fn done(&mut self) -> Result<u64, QueueError> {
        Ok(self.conn.scard(self.config.done_jobs_set()).await?)
    }

    /// Every stored job id.
    pub async fn ids(&mut self) -> Result<Vec<String>, QueueError> {
        Ok(self.conn.hkeys(self.config.job_data_hash()).await?)
    }

    /// The payload stored for `key`; `None` once the task was retired.
    pub async fn get(&mut self, key: &EventKey) -> Result<Option<InboundEvent>, QueueError> {
        let raw: Option<Vec<u8>> = self
            .conn
            .hget(self.config.job_data_hash(), key.as_str())
            .await?;
        raw.filter(|bytes| !bytes.is_empty())
            .map(|bytes| serde_json::from_slice(&bytes).map_err(QueueError::from))
            .transpose()
    }

    /// CPU seconds the Redis server has used since it started (user + system),
    /// from `INFO cpu`: benchmarks charge the queue's cost per event with it.
    pub async fn server_cpu_seconds(&mut self) -> Result<f64, QueueError> {
        let info: String = redis::cmd("INFO")
            .arg("cpu")
            .query_async(&mut self.conn)
            .await?;
        Ok(info
            .lines()
            .filter_map(|l| {
                l.strip_prefix("used_cpu_sys:")
                    .or_else(|| l.strip_prefix("used_cpu_user:"))
            })
            .filter_map(|v| v.trim().parse::<f64>().ok())
            .sum())
    }

    /// Deletes every key under the configured prefix. For tests and local
    /// resets only: it drops queued work.
    ///
    /// Pages of 1,000 keys are unlinked as the scan finds them: a benchmark
    /// leaves hundreds of thousands of keys, and SCAN's default page of 10
    /// would take tens of thousands of round trips (every test's clean-up
    /// on the same Redis slowed to seconds).
    pub async fn purge(&mut self) -> Result<u64, QueueError> {
        let pattern = format!("{}:*", self.prefix);
        let mut deleted = 0;
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut self.conn)
                .await?;
            if !keys.is_empty() {
                deleted += self.conn.unlink::<_, u64>(&keys).await?;
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }
}
