//! Errors of the queue.

/// Why events could not be queued.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Redis refused, timed out or is unreachable.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// apalis-redis reported an error.
    #[error("apalis-redis: {0}")]
    Apalis(#[from] apalis_redis::Error),
    /// A job could not be serialised.
    #[error("job encoding: {0}")]
    Encode(#[from] serde_json::Error),
    /// The enqueuer's background task is gone (the process is stopping).
    #[error("the enqueuer is shut down")]
    Closed,
    /// Redis did not acknowledge within the deadline.
    #[error("redis did not acknowledge within {0:?}")]
    Deadline(std::time::Duration),
}
