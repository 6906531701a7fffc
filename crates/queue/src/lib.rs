//! The job queue: the only crate of leadsync that knows apalis.
//!
//! Queues live in Redis in apalis-redis's layout, so apalis workers consume
//! them. The ingester pushes through [`Enqueuer`], which gathers the events of
//! concurrent requests into one bulk push (one Lua call) and answers each
//! request once Redis has acknowledged its events. The worker's outbox relay
//! pushes platform lead changes to a second queue ([`OUTBOUND_QUEUE`]) with
//! the same push script ([`BulkPusher::push_jobs`]).

mod enqueuer;
pub mod error;
pub mod inspect;
pub mod janitor;
pub mod jobs;
pub mod promote;

pub use enqueuer::{BulkPusher, Enqueuer, PushOutcome, QueueMetrics};
pub use error::QueueError;
pub use inspect::QueueInspector;
pub use janitor::{Janitor, Sweep, remembered_set, remembered_set_of};
pub use jobs::{
    INBOUND_QUEUE, InboundEvent, LEAD_CHANGE_TASK_PREFIX, OUTBOUND_QUEUE, OutboundLetter,
    PushLeadChange, QueueJob,
};
pub use promote::Promoter;

use std::time::Duration;

use leadsync_runtime::config::RedisSettings;

/// The full Redis name of a queue: `{key_prefix}:{queue}`.
pub fn queue_name(settings: &RedisSettings, queue: &str) -> String {
    format!("{}:{queue}", settings.key_prefix)
}

/// The apalis-redis configuration of the inbound-event queue.
///
/// The idempotency TTL is set for apalis-redis's own pushes (benchmarks):
/// with its default (`None`) a pushed idempotency key is deleted at once and
/// nothing is deduplicated. The queue's own push dedupes on the task id
/// instead, remembered by the [`Janitor`] for the same TTL.
pub fn inbound_config(settings: &RedisSettings) -> apalis_redis::Config {
    queue_config(settings, INBOUND_QUEUE)
}

/// The apalis-redis configuration of the outbound queue of platform lead
/// changes ([`PushLeadChange`]): the same layout and settings as the inbound
/// queue, under its own name.
pub fn outbound_config(settings: &RedisSettings) -> apalis_redis::Config {
    queue_config(settings, OUTBOUND_QUEUE)
}

/// The apalis-redis configuration of `queue` ([`INBOUND_QUEUE`] or
/// [`OUTBOUND_QUEUE`]); see [`inbound_config`].
pub fn queue_config(settings: &RedisSettings, queue: &str) -> apalis_redis::Config {
    apalis_redis::Config::default()
        .queue(queue_name(settings, queue))
        .idempotency_ttl(Some(Duration::from_secs(settings.idempotency_ttl_secs)))
        // Nobody subscribes to apalis-board's pub/sub events; each would cost a PUBLISH.
        .emit_events(false)
        .heartbeat_interval(Duration::from_secs(10))
        .missed_heartbeats(3)
        // apalis-redis's lease script runs `LREM` on the whole ready list for
        // every fetched task (the fetch already took it off the list): with a
        // backlog of 100,000 that was 136 s of Redis time. Nothing here reads
        // the lock fields it writes; a dead worker's jobs come back through
        // its in-flight set and heartbeat, not the lock.
        .lock_tasks(false)
}

/// Opens a Redis client (no connection is made until first use).
pub fn redis_client(settings: &RedisSettings) -> Result<redis::Client, QueueError> {
    use redis::IntoConnectionInfo as _;
    use secrecy::ExposeSecret as _;
    let info = settings
        .url
        .expose_secret()
        .into_connection_info()?
        // Pushes are pipelined on one connection: with Nagle's algorithm a
        // push waits for the previous one's ACK, adding delayed-ACK latency.
        .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
    redis::Client::open(info).map_err(QueueError::from)
}

/// Connection-manager settings derived from the configured timeouts.
pub fn connection_config(settings: &RedisSettings) -> redis::aio::ConnectionManagerConfig {
    redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(settings.connect_timeout_ms)))
        .set_response_timeout(Some(Duration::from_millis(settings.response_timeout_ms)))
        .set_number_of_retries(1)
}
