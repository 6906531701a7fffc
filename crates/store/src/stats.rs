//! Persisted sync statistics per integration (the seed plan's webhook and
//! sync metrics): named counters, incremented in batches.
//!
//! Workers add up their deltas per batch and flush them in one statement, so
//! a busy portal's counter rows are locked once per batch, not per event.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::StoreError;

/// Webhook events received.
pub const RECEIVED: &str = "received";
/// Events processed with an effect or a decided no-op.
pub const PROCESSED: &str = "processed";
/// Events that failed for good.
pub const FAILED: &str = "failed";
/// Prefix of the skip counters: `skipped.<reason>`.
pub const SKIPPED_PREFIX: &str = "skipped.";
/// Sum of processing times, in milliseconds.
pub const PROCESSING_MS_TOTAL: &str = "processing_ms_total";
/// Number of timed processings (the divisor of the average).
pub const PROCESSING_COUNT: &str = "processing_count";
/// Leads written from HubSpot.
pub const FROM_HUBSPOT_SUCCESS: &str = "from_hubspot_success";
/// Leads that failed to sync from HubSpot.
pub const FROM_HUBSPOT_FAILED: &str = "from_hubspot_failed";
/// Leads written to HubSpot.
pub const TO_HUBSPOT_SUCCESS: &str = "to_hubspot_success";
/// Leads that failed to sync to HubSpot.
pub const TO_HUBSPOT_FAILED: &str = "to_hubspot_failed";

/// Counter increments to apply together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsDelta {
    counters: BTreeMap<String, i64>,
}

impl StatsDelta {
    /// An empty delta.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `n` to counter `name`.
    pub fn add(&mut self, name: &str, n: i64) -> &mut Self {
        if n != 0 {
            *self.counters.entry(name.to_owned()).or_default() += n;
        }
        self
    }

    /// `n` events received.
    pub fn received(&mut self, n: i64) -> &mut Self {
        self.add(RECEIVED, n)
    }

    /// `n` events processed.
    pub fn processed(&mut self, n: i64) -> &mut Self {
        self.add(PROCESSED, n)
    }

    /// `n` events failed.
    pub fn failed(&mut self, n: i64) -> &mut Self {
        self.add(FAILED, n)
    }

    /// `n` events skipped for `reason` (a snake_case word such as `echo`).
    pub fn skipped(&mut self, reason: &str, n: i64) -> &mut Self {
        self.add(&format!("{SKIPPED_PREFIX}{reason}"), n)
    }

    /// One processing that took `elapsed`.
    pub fn processing_time(&mut self, elapsed: Duration) -> &mut Self {
        let ms = i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX);
        self.add(PROCESSING_MS_TOTAL, ms).add(PROCESSING_COUNT, 1)
    }

    /// `n` leads synced from HubSpot, successfully or not.
    pub fn from_hubspot(&mut self, success: bool, n: i64) -> &mut Self {
        self.add(
            if success {
                FROM_HUBSPOT_SUCCESS
            } else {
                FROM_HUBSPOT_FAILED
            },
            n,
        )
    }

    /// `n` leads synced to HubSpot, successfully or not.
    pub fn to_hubspot(&mut self, success: bool, n: i64) -> &mut Self {
        self.add(
            if success {
                TO_HUBSPOT_SUCCESS
            } else {
                TO_HUBSPOT_FAILED
            },
            n,
        )
    }

    /// Whether there is nothing to apply.
    pub fn is_empty(&self) -> bool {
        self.counters.is_empty()
    }

    /// The increments, by counter name.
    pub fn counters(&self) -> &BTreeMap<String, i64> {
        &self.counters
    }
}

/// Applies a delta in one statement (counters in name order, so concurrent
/// flushes lock rows in the same order and cannot deadlock).
pub async fn increment(
    exec: impl PgExecutor<'_>,
    integration_id: Uuid,
    delta: &StatsDelta,
) -> Result<(), StoreError> {
    if delta.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = delta.counters.keys().map(String::as_str).collect();
    let values: Vec<i64> = delta.counters.values().copied().collect();
    sqlx::query(
        "INSERT INTO sync_stats (integration_id, name, value, updated_at) \
         SELECT $1, n, v, now() FROM unnest($2::text[], $3::bigint[]) WITH ORDINALITY AS t(n, v, o) \
         ORDER BY o \
         ON CONFLICT (integration_id, name) DO UPDATE \
         SET value = sync_stats.value + EXCLUDED.value, updated_at = EXCLUDED.updated_at",
    )
    .bind(integration_id)
    .bind(names)
    .bind(values)
    .execute(exec)
    .await?;
    Ok(())
}

/// The statistics of one integration.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SyncStats {
    /// Events received.
    pub received: i64,
    /// Events processed.
    pub processed: i64,
    /// Events failed.
    pub failed: i64,
    /// Events skipped, by reason.
    pub skipped: BTreeMap<String, i64>,
    /// Average processing time in milliseconds, when any was timed.
    pub avg_processing_ms: Option<f64>,
    /// Leads synced from HubSpot.
    pub from_hubspot_success: i64,
    /// Leads that failed to sync from HubSpot.
    pub from_hubspot_failed: i64,
    /// Leads synced to HubSpot.
    pub to_hubspot_success: i64,
    /// Leads that failed to sync to HubSpot.
    pub to_hubspot_failed: i64,
    /// When the last event was counted as received.
    pub last_event_at: Option<DateTime<Utc>>,
    /// Every counter, by name (including any not listed above).
    pub counters: BTreeMap<String, i64>,
}

impl SyncStats {
    /// Events skipped for any reason.
    pub fn skipped_total(&self) -> i64 {
        self.skipped.values().sum()
    }
}

/// Reads the statistics of an integration (all zero when none were counted).
pub async fn read(
    exec: impl PgExecutor<'_>,
    integration_id: Uuid,
) -> Result<SyncStats, StoreError> {
    let rows: Vec<(String, i64, DateTime<Utc>)> =
        sqlx::query_as("SELECT name, value, updated_at FROM sync_stats WHERE integration_id = $1")
            .bind(integration_id)
            .fetch_all(exec)
            .await?;
    let mut stats = SyncStats::default();
    for (name, value, updated_at) in rows {
        match name.as_str() {
            RECEIVED => {
                stats.received = value;
                stats.last_event_at = Some(updated_at);
            }
            PROCESSED => stats.processed = value,
            FAILED => stats.failed = value,
            FROM_HUBSPOT_SUCCESS => stats.from_hubspot_success = value,
            FROM_HUBSPOT_FAILED => stats.from_hubspot_failed = value,
            TO_HUBSPOT_SUCCESS => stats.to_hubspot_success = value,
            TO_HUBSPOT_FAILED => stats.to_hubspot_failed = value,
            other => {
                if let Some(reason) = other.strip_prefix(SKIPPED_PREFIX) {
                    stats.skipped.insert(reason.to_owned(), value);
                }
            }
        }
        stats.counters.insert(name, value);
    }
    let total = stats.counters.get(PROCESSING_MS_TOTAL).copied();
    let count = stats.counters.get(PROCESSING_COUNT).copied();
    if let (Some(total), Some(count)) = (total, count)
        && count > 0
    {
        #[allow(clippy::cast_precision_loss)] // counts far below 2^52
        let avg = total as f64 / count as f64;
        stats.avg_processing_ms = Some(avg);
    }
    Ok(stats)
}
