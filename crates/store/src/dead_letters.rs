//! Dead letters: events and changes that failed for good, with the reason
//! and the raw payload; listed and replayed from the CLI. Nothing is dropped
//! silently (design.md §2.5).

use chrono::{DateTime, Utc};
use leadsync_domain::PortalId;
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::text_enum::text_enum;
use crate::{StoreError, db_id, from_db_id};

text_enum! {
    /// What failed.
    pub enum DeadLetterKind {
        /// A HubSpot webhook event.
        InboundEvent => "inbound_event",
        /// A platform lead change bound for HubSpot.
        OutboundChange => "outbound_change",
    }
}

/// A failure to record.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDeadLetter {
    /// The integration, when known (an unknown portal has none).
    pub integration_id: Option<Uuid>,
    /// The HubSpot portal, when known.
    pub portal_id: Option<PortalId>,
    /// The event key (inbound) or change id (outbound).
    pub event_key: String,
    /// What failed.
    pub kind: DeadLetterKind,
    /// Why, as a stable snake_case reason or a short message. No personal
    /// data or tokens.
    pub reason: String,
    /// The raw event or change.
    pub payload: serde_json::Value,
}

/// A recorded dead letter.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct DeadLetter {
    /// Sequence number.
    pub id: i64,
    /// The integration, when known.
    pub integration_id: Option<Uuid>,
    /// The HubSpot portal, when known (raw id).
    #[sqlx(rename = "portal_id")]
    portal: Option<i64>,
    /// The event key or change id.
    pub event_key: String,
    /// What failed.
    pub kind: DeadLetterKind,
    /// Why (the latest failure's reason).
    pub reason: String,
    /// The raw event or change (the latest failure's).
    pub payload: serde_json::Value,
    /// How many times it failed for good.
    pub attempts: i32,
    /// First failure.
    pub first_failed_at: DateTime<Utc>,
    /// Latest failure.
    pub last_failed_at: DateTime<Utc>,
    /// When it was handed back for another try.
    pub replayed_at: Option<DateTime<Utc>>,
}

impl DeadLetter {
    /// The HubSpot portal, when known.
    pub fn portal_id(&self) -> Option<PortalId> {
        self.portal.map(|p| PortalId::new(from_db_id(p)))
    }
}

const COLUMNS: &str = "id, integration_id, portal_id, event_key, kind, reason, payload, \
    attempts, first_failed_at, last_failed_at, replayed_at";

/// Records a failure. While a letter for the same event and kind is open
/// (not replayed), the failure bumps its `attempts` instead of adding one.
pub async fn record(
    exec: impl PgExecutor<'_>,
    new: &NewDeadLetter,
) -> Result<DeadLetter, StoreError> {
    let portal = new.portal_id.map(|p| db_id(p.get())).transpose()?;
    let letter = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO dead_letters (integration_id, portal_id, event_key, kind, reason, payload) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (event_key, kind) WHERE replayed_at IS NULL DO UPDATE SET \
         attempts = dead_letters.attempts + 1, last_failed_at = now(), \
         reason = EXCLUDED.reason, payload = EXCLUDED.payload, \
         integration_id = coalesce(EXCLUDED.integration_id, dead_letters.integration_id), \
         portal_id = coalesce(EXCLUDED.portal_id, dead_letters.portal_id) \
         RETURNING {COLUMNS}"
    )))
    .bind(new.integration_id)
    .bind(portal)
    .bind(&new.event_key)
    .bind(new.kind)
    .bind(&new.reason)
    .bind(&new.payload)
    .fetch_one(exec)
    .await?;
    Ok(letter)
}

/// Filter and page of [`list`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadLetterFilter {
    /// Only this integration's.
    pub integration_id: Option<Uuid>,
    /// Only this kind.
    pub kind: Option<DeadLetterKind>,
    /// Include replayed letters.
    pub include_replayed: bool,
    /// Start after this id.
    pub after_id: Option<i64>,
    /// Page size, clamped to 1..=1000.
    pub limit: i64,
}

impl Default for DeadLetterFilter {
    fn default() -> Self {
        Self {
            integration_id: None,
            kind: None,
            include_replayed: false,
            after_id: None,
            limit: 100,
        }
    }
}

/// Dead letters, oldest first.
pub async fn list(
    exec: impl PgExecutor<'_>,
    filter: &DeadLetterFilter,
) -> Result<Vec<DeadLetter>, StoreError> {
    let letters = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM dead_letters \
         WHERE ($1::uuid IS NULL OR integration_id = $1) \
         AND ($2::text IS NULL OR kind = $2) \
         AND ($3 OR replayed_at IS NULL) \
         AND id > coalesce($4, 0) \
         ORDER BY id LIMIT $5"
    )))
    .bind(filter.integration_id)
    .bind(filter.kind)
    .bind(filter.include_replayed)
    .bind(filter.after_id)
    .bind(filter.limit.clamp(1, 1000))
    .fetch_all(exec)
    .await?;
    Ok(letters)
}

/// One dead letter.
pub async fn get(exec: impl PgExecutor<'_>, id: i64) -> Result<Option<DeadLetter>, StoreError> {
    let letter = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM dead_letters WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(exec)
    .await?;
    Ok(letter)
}

/// Marks an open letter replayed and returns it (its payload is what to
/// re-enqueue); `None` when it does not exist or was already replayed, so
/// two operators cannot replay it twice.
pub async fn mark_replayed(
    exec: impl PgExecutor<'_>,
    id: i64,
) -> Result<Option<DeadLetter>, StoreError> {
    let letter = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE dead_letters SET replayed_at = now() WHERE id = $1 AND replayed_at IS NULL \
         RETURNING {COLUMNS}"
    )))
    .bind(id)
    .fetch_optional(exec)
    .await?;
    Ok(letter)
}

/// How many letters are open, for an integration or all.
pub async fn count_open(
    exec: impl PgExecutor<'_>,
    integration_id: Option<Uuid>,
) -> Result<i64, StoreError> {
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM dead_letters WHERE replayed_at IS NULL \
         AND ($1::uuid IS NULL OR integration_id = $1)",
    )
    .bind(integration_id)
    .fetch_one(exec)
    .await?;
    Ok(n)
}

/// The letters of one integration (`$1`, whose portal is `$2`).
///
/// An inbound event belongs to the integration of the portal it came from
/// whenever the letter has one, whatever integration it was recorded under:
/// an event posted to one integration's webhook URL by another portal
/// (`portal_mismatch`) is recorded under the URL's integration, yet its
/// payload is the other portal's data. Only an event without a portal falls
/// back to its recorded integration. A lead change belongs to the
/// integration of its lead: the one it was recorded with or, recorded before
/// the worker knew it, the one its payload names.
const OWNED_BY: &str = "( \
    (kind = 'inbound_event' AND (portal_id = $2 \
        OR (portal_id IS NULL AND integration_id = $1))) \
    OR (kind = 'outbound_change' AND (integration_id = $1 \
        OR (integration_id IS NULL AND payload ->> 'integration_id' = $1::text))))";

/// [`list`] restricted to the letters of one integration (see
/// [`get_owned`]); `filter.integration_id` is ignored.
pub async fn list_owned(
    exec: impl PgExecutor<'_>,
    integration_id: Uuid,
    portal_id: PortalId,
    filter: &DeadLetterFilter,
) -> Result<Vec<DeadLetter>, StoreError> {
    let letters = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM dead_letters WHERE {OWNED_BY} \
         AND ($3::text IS NULL OR kind = $3) \
         AND ($4 OR replayed_at IS NULL) \
         AND id > coalesce($5, 0) \
         ORDER BY id LIMIT $6"
    )))
    .bind(integration_id)
    .bind(db_id(portal_id.get())?)
    .bind(filter.kind)
    .bind(filter.include_replayed)
    .bind(filter.after_id)
    .bind(filter.limit.clamp(1, 1000))
    .fetch_all(exec)
    .await?;
    Ok(letters)
}

/// One letter of an integration: an inbound event of its portal (or,
/// without a portal, recorded with its id), or a change of one of its
/// leads. `None` for another integration's letter.
pub async fn get_owned(
    exec: impl PgExecutor<'_>,
    integration_id: Uuid,
    portal_id: PortalId,
    id: i64,
) -> Result<Option<DeadLetter>, StoreError> {
    let letter = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM dead_letters WHERE {OWNED_BY} AND id = $3"
    )))
    .bind(integration_id)
    .bind(db_id(portal_id.get())?)
    .bind(id)
    .fetch_optional(exec)
    .await?;
    Ok(letter)
}
