//! `GET /v1/stats`: the integration's persisted sync statistics.

use std::collections::BTreeMap;

use actix_web::{get, web};
use chrono::{DateTime, Utc};
use leadsync_store::stats::{self, SyncStats};
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::{Auth, Read};
use crate::error::{ApiError, ErrorBody};
use crate::startup::AppState;

/// The sync statistics of an integration (counters since it was connected).
#[derive(Debug, Serialize, ToSchema)]
pub struct StatsView {
    /// Webhook events received.
    pub received: i64,
    /// Events processed (with an effect or a decided no-op).
    pub processed: i64,
    /// Events that failed for good (dead-lettered).
    pub failed: i64,
    /// Events skipped, all reasons together.
    pub skipped_total: i64,
    /// Events skipped, by reason (`echo`, `no_change`, ...).
    pub skipped: BTreeMap<String, i64>,
    /// Average processing time of a batch, in milliseconds.
    pub avg_processing_ms: Option<f64>,
    /// Leads written from HubSpot.
    pub from_hubspot_success: i64,
    /// Leads that failed to sync from HubSpot.
    pub from_hubspot_failed: i64,
    /// Leads written to HubSpot.
    pub to_hubspot_success: i64,
    /// Leads that failed to sync to HubSpot.
    pub to_hubspot_failed: i64,
    /// When the last webhook event was counted.
    pub last_event_at: Option<DateTime<Utc>>,
    /// Every counter by name, including any not listed above.
    pub counters: BTreeMap<String, i64>,
}

impl From<SyncStats> for StatsView {
    fn from(s: SyncStats) -> Self {
        Self {
            skipped_total: s.skipped_total(),
            received: s.received,
            processed: s.processed,
            failed: s.failed,
            skipped: s.skipped,
            avg_processing_ms: s.avg_processing_ms,
            from_hubspot_success: s.from_hubspot_success,
            from_hubspot_failed: s.from_hubspot_failed,
            to_hubspot_success: s.to_hubspot_success,
            to_hubspot_failed: s.to_hubspot_failed,
            last_event_at: s.last_event_at,
            counters: s.counters,
        }
    }
}

/// The integration's sync statistics.
#[utoipa::path(
    tag = "sync",
    security(("bearer" = ["read"])),
    responses(
        (status = 200, description = "The statistics", body = StatsView),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
    )
)]
#[get("/v1/stats")]
pub async fn get_stats(
    caller: Auth<Read>,
    state: web::Data<AppState>,
) -> Result<web::Json<StatsView>, ApiError> {
    let stats = stats::read(state.store.pool(), caller.integration_id()).await?;
    Ok(web::Json(stats.into()))
}
