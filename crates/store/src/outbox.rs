//! The transactional outbox of platform-side lead changes (`lead_changes`),
//! filled by a trigger on `leads` (docs/adr/0005). A relay claims batches,
//! hands them to the queue, and marks them relayed in the same transaction.

use chrono::{DateTime, Utc};
use leadsync_domain::{ContactId, LeadField};
use sqlx::postgres::PgListener;
use sqlx::{PgConnection, PgExecutor, PgPool};
use uuid::Uuid;

use crate::text_enum::text_enum;
use crate::{StoreError, db_id, from_db_id};

/// The channel the trigger notifies (payload: the integration id) after a
/// transaction that wrote outbox rows commits.
pub const CHANNEL: &str = "leadsync_lead_changes";

text_enum! {
    /// What happened to the lead.
    pub enum ChangeOperation {
        /// Created (or restored from a soft delete).
        Insert => "insert",
        /// Synced fields changed.
        Update => "update",
        /// Deleted or soft-deleted.
        Delete => "delete",
    }
}

/// One outbox row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeadChange {
    /// Sequence number (the relay's order).
    pub id: i64,
    /// The integration.
    pub integration_id: Uuid,
    /// The lead (it may no longer exist after a hard delete).
    pub lead_id: Uuid,
    /// The lead's contact when the change was made.
    pub crm_id: Option<ContactId>,
    /// What happened.
    pub operation: ChangeOperation,
    /// The synced fields that changed, in [`LeadField::ALL`] order.
    pub changed_fields: Vec<LeadField>,
    /// When.
    pub created_at: DateTime<Utc>,
}

type ChangeRow = (
    i64,
    Uuid,
    Uuid,
    Option<i64>,
    ChangeOperation,
    Vec<String>,
    DateTime<Utc>,
);

fn to_change(row: ChangeRow) -> Result<LeadChange, StoreError> {
    let (id, integration_id, lead_id, crm_id, operation, changed_fields, created_at) = row;
    let changed_fields = changed_fields
        .iter()
        .map(|name| {
            LeadField::from_name(name)
                .ok_or_else(|| StoreError::Corrupt(format!("unknown synced field `{name}`")))
        })
        .collect::<Result<_, _>>()?;
    Ok(LeadChange {
        id,
        integration_id,
        lead_id,
        crm_id: crm_id.map(|c| ContactId::new(from_db_id(c))),
        operation,
        changed_fields,
        created_at,
    })
}

/// Claims up to `limit` pending changes, oldest first, skipping rows another
/// relay holds (`FOR UPDATE SKIP LOCKED`). Call it inside a transaction and
/// [`mark_relayed`] the rows in that same transaction once they are handed
/// on; if the relay dies first, the lock goes and the rows come back.
pub async fn claim_batch(
    conn: &mut PgConnection,
    limit: i64,
) -> Result<Vec<LeadChange>, StoreError> {
    let rows: Vec<ChangeRow> = sqlx::query_as(
        "SELECT id, integration_id, lead_id, crm_id, operation, changed_fields, created_at \
         FROM lead_changes WHERE relayed_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(limit.clamp(1, 10_000))
    .fetch_all(conn)
    .await?;
    rows.into_iter().map(to_change).collect()
}

/// Asks for a push of `fields` of a linked lead although no platform write
/// is being made now: the inbound side found them changed on the platform
/// only (HubSpot still holds the agreed value, or nothing) with no change of
/// the lead pending in the outbox — e.g. a lead linked by address to an
/// existing contact, whose own push found no contact to update. Adds no row
/// when one for the lead is still pending (the push reads the lead whole).
/// Returns whether a row was added.
pub async fn request_push(
    conn: &mut PgConnection,
    integration_id: Uuid,
    lead_id: Uuid,
    crm_id: Option<ContactId>,
    fields: &[LeadField],
) -> Result<bool, StoreError> {
    let names: Vec<&str> = fields.iter().map(|f| f.name()).collect();
    let crm_id = crm_id.map(|c| db_id(c.get())).transpose()?;
    let added = sqlx::query(
        "INSERT INTO lead_changes (integration_id, lead_id, crm_id, operation, changed_fields) \
         SELECT $1, $2, $3, 'update', $4 \
         WHERE NOT EXISTS (SELECT 1 FROM lead_changes WHERE lead_id = $2 AND relayed_at IS NULL)",
    )
    .bind(integration_id)
    .bind(lead_id)
    .bind(crm_id)
    .bind(&names)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        > 0;
    if added {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(integration_id.to_string())
            .execute(&mut *conn)
            .await?;
    }
    Ok(added)
}

/// Marks changes relayed; returns how many were pending.
pub async fn mark_relayed(exec: impl PgExecutor<'_>, ids: &[i64]) -> Result<u64, StoreError> {
    if ids.is_empty() {
        return Ok(0);
    }
    let done = sqlx::query(
        "UPDATE lead_changes SET relayed_at = now() WHERE id = ANY($1) AND relayed_at IS NULL",
    )
    .bind(ids)
    .execute(exec)
    .await?;
    Ok(done.rows_affected())
}

/// Pending changes and the age of the oldest, for metrics.
pub async fn backlog(
    exec: impl PgExecutor<'_>,
) -> Result<(i64, Option<DateTime<Utc>>), StoreError> {
    let row: (i64, Option<DateTime<Utc>>) = sqlx::query_as(
        "SELECT count(*), min(created_at) FROM lead_changes WHERE relayed_at IS NULL",
    )
    .fetch_one(exec)
    .await?;
    Ok(row)
}

/// Deletes changes relayed before `before`.
pub async fn prune_relayed(
    exec: impl PgExecutor<'_>,
    before: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let done = sqlx::query("DELETE FROM lead_changes WHERE relayed_at < $1")
        .bind(before)
        .execute(exec)
        .await?;
    Ok(done.rows_affected())
}

/// A listener on [`CHANNEL`], so a relay wakes as soon as a change commits
/// instead of polling (it should still poll slowly: notifications are lost
/// while it is disconnected).
pub async fn listener(pool: &PgPool) -> Result<PgListener, StoreError> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}
