//! Processed webhook events: the Postgres backup of the queue's dedupe
//! (design.md §2.1). Marked in the transaction that applies the event, so a
//! redelivered job finds its key and does nothing.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::StoreError;

/// Records `key` as processed; true if it was new, false if it was already
/// recorded (`ON CONFLICT DO NOTHING`).
pub async fn mark_processed(
    exec: impl PgExecutor<'_>,
    integration_id: Option<Uuid>,
    key: &str,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "INSERT INTO processed_events (event_key, integration_id) VALUES ($1, $2) \
         ON CONFLICT (event_key) DO NOTHING",
    )
    .bind(key)
    .bind(integration_id)
    .execute(exec)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Records a batch of keys in one statement; returns the keys that were new.
pub async fn mark_processed_many(
    exec: impl PgExecutor<'_>,
    integration_id: Option<Uuid>,
    keys: &[&str],
) -> Result<HashSet<String>, StoreError> {
    if keys.is_empty() {
        return Ok(HashSet::new());
    }
    let new: Vec<String> = sqlx::query_scalar(
        "INSERT INTO processed_events (event_key, integration_id) \
         SELECT DISTINCT k, $2::uuid FROM unnest($1::text[]) AS k \
         ON CONFLICT (event_key) DO NOTHING RETURNING event_key",
    )
    .bind(keys)
    .bind(integration_id)
    .fetch_all(exec)
    .await?;
    Ok(new.into_iter().collect())
}

/// The keys among `keys` that were already processed, in one query.
pub async fn processed_among(
    exec: impl PgExecutor<'_>,
    keys: &[&str],
) -> Result<HashSet<String>, StoreError> {
    if keys.is_empty() {
        return Ok(HashSet::new());
    }
    let found: Vec<String> = sqlx::query_scalar(
        "SELECT event_key FROM processed_events WHERE event_key = ANY($1::text[])",
    )
    .bind(keys)
    .fetch_all(exec)
    .await?;
    Ok(found.into_iter().collect())
}

/// Whether `key` was processed.
pub async fn is_processed(exec: impl PgExecutor<'_>, key: &str) -> Result<bool, StoreError> {
    let found: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM processed_events WHERE event_key = $1)")
            .bind(key)
            .fetch_one(exec)
            .await?;
    Ok(found)
}

/// Forgets keys processed before `before` (older than HubSpot's ~24 h
/// redelivery window plus the queue's dedupe TTL).
pub async fn prune(exec: impl PgExecutor<'_>, before: DateTime<Utc>) -> Result<u64, StoreError> {
    let done = sqlx::query("DELETE FROM processed_events WHERE processed_at < $1")
        .bind(before)
        .execute(exec)
        .await?;
    Ok(done.rows_affected())
}
