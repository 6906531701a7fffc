//! The audit log: every sync decision with its reason and the before/after
//! (and losing) values of the fields involved. Never tokens.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use leadsync_domain::ContactId;
use serde::{Deserialize, Serialize};
use sqlx::types::Json;
use sqlx::{PgExecutor, QueryBuilder};
use uuid::Uuid;

use crate::text_enum::text_enum;
use crate::{StoreError, db_id, from_db_id};

text_enum! {
    /// Which way the audited sync went.
    pub enum Direction {
        /// HubSpot → platform.
        Inbound => "inbound",
        /// Platform → HubSpot.
        Outbound => "outbound",
    }
}

text_enum! {
    /// What the sync did.
    pub enum AuditAction {
        /// A lead or contact was created.
        Created => "created",
        /// Fields were updated.
        Updated => "updated",
        /// An existing lead was linked to a contact.
        Linked => "linked",
        /// The link was cleared.
        Unlinked => "unlinked",
        /// Personal data was erased (privacy deletion).
        Erased => "erased",
        /// Contacts were merged.
        Merged => "merged",
        /// A deleted contact/lead was restored.
        Restored => "restored",
        /// A contact was archived for a lead deleted on the platform.
        Archived => "archived",
        /// Nothing was written (see the reason, e.g. `echo`, `no_change`).
        Skipped => "skipped",
        /// A conflict was decided (see the reason and losing values).
        Conflict => "conflict",
        /// The event or change went to the dead letters.
        DeadLettered => "dead_lettered",
    }
}

/// The change of one field.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FieldChange {
    /// Value before.
    pub before: Option<String>,
    /// Value after.
    pub after: Option<String>,
    /// The value that lost a conflict, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub losing_value: Option<String>,
}

/// One audit entry to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// The integration.
    pub integration_id: Option<Uuid>,
    /// The lead concerned.
    pub lead_id: Option<Uuid>,
    /// The contact concerned.
    pub contact_id: Option<ContactId>,
    /// The event that caused it.
    pub event_key: Option<String>,
    /// Direction.
    pub direction: Direction,
    /// Action.
    pub action: AuditAction,
    /// Why, as a stable snake_case reason (e.g. `echo`, `no_change`,
    /// `conflict_platform_wins`).
    pub reason: Option<String>,
    /// Field (lead field or HubSpot property) → change.
    pub changes: BTreeMap<String, FieldChange>,
}

impl AuditEntry {
    /// An entry with no ids, reason or changes yet.
    pub fn new(direction: Direction, action: AuditAction) -> Self {
        Self {
            integration_id: None,
            lead_id: None,
            contact_id: None,
            event_key: None,
            direction,
            action,
            reason: None,
            changes: BTreeMap::new(),
        }
    }
}

/// A recorded entry.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    /// Sequence number.
    pub id: i64,
    /// What was recorded.
    pub entry: AuditEntry,
    /// Whether a privacy deletion redacted the values of `entry.changes`
    /// (they are then empty).
    pub changes_redacted: bool,
    /// When it was recorded.
    pub created_at: DateTime<Utc>,
}

/// Records one entry; returns its id.
pub async fn record(exec: impl PgExecutor<'_>, entry: &AuditEntry) -> Result<i64, StoreError> {
    let ids = record_many(exec, std::slice::from_ref(entry)).await?;
    ids.into_iter()
        .next()
        .ok_or_else(|| StoreError::Corrupt("audit insert returned no id".into()))
}

/// Records a batch of entries in one statement; returns their ids.
pub async fn record_many(
    exec: impl PgExecutor<'_>,
    entries: &[AuditEntry],
) -> Result<Vec<i64>, StoreError> {
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    let contacts = entries
        .iter()
        .map(|e| e.contact_id.map(|c| db_id(c.get())).transpose())
        .collect::<Result<Vec<_>, _>>()?;
    let mut qb = QueryBuilder::new(
        "INSERT INTO audit_log (integration_id, lead_id, contact_id, event_key, direction, \
         action, reason, changes) ",
    );
    qb.push_values(entries.iter().zip(contacts), |mut row, (e, contact)| {
        row.push_bind(e.integration_id)
            .push_bind(e.lead_id)
            .push_bind(contact)
            .push_bind(e.event_key.clone())
            .push_bind(e.direction)
            .push_bind(e.action)
            .push_bind(e.reason.clone())
            .push_bind((!e.changes.is_empty()).then(|| Json(e.changes.clone())));
    });
    qb.push(" RETURNING id");
    let ids: Vec<i64> = qb.build_query_scalar().fetch_all(exec).await?;
    Ok(ids)
}

type AuditRow = (
    i64,
    Option<Uuid>,
    Option<Uuid>,
    Option<i64>,
    Option<String>,
    Direction,
    AuditAction,
    Option<String>,
    Option<serde_json::Value>,
    DateTime<Utc>,
);

/// The latest `limit` entries about a lead, newest first.
pub async fn for_lead(
    exec: impl PgExecutor<'_>,
    lead_id: Uuid,
    limit: i64,
) -> Result<Vec<AuditRecord>, StoreError> {
    let rows: Vec<AuditRow> = sqlx::query_as(
        "SELECT id, integration_id, lead_id, contact_id, event_key, direction, action, reason, \
         changes, created_at FROM audit_log WHERE lead_id = $1 \
         ORDER BY created_at DESC, id DESC LIMIT $2",
    )
    .bind(lead_id)
    .bind(limit.clamp(1, 1000))
    .fetch_all(exec)
    .await?;
    Ok(rows.into_iter().map(to_record).collect())
}

/// The latest entry about a lead whose action is one of `actions`, however
/// many newer entries of other actions follow it.
pub async fn latest_for_lead(
    exec: impl PgExecutor<'_>,
    lead_id: Uuid,
    actions: &[AuditAction],
) -> Result<Option<AuditRecord>, StoreError> {
    let actions: Vec<&str> = actions.iter().map(|a| a.as_str()).collect();
    let row: Option<AuditRow> = sqlx::query_as(
        "SELECT id, integration_id, lead_id, contact_id, event_key, direction, action, reason, \
         changes, created_at FROM audit_log WHERE lead_id = $1 AND action = ANY($2) \
         ORDER BY created_at DESC, id DESC LIMIT 1",
    )
    .bind(lead_id)
    .bind(&actions)
    .fetch_optional(exec)
    .await?;
    Ok(row.map(to_record))
}

fn to_record(row: AuditRow) -> AuditRecord {
    let (id, integration_id, lead_id, contact, event_key, direction, action, reason, changes, at) =
        row;
    // A privacy deletion replaces each change with {"redacted": true}.
    let redacted = changes
        .as_ref()
        .and_then(|v| v.as_object())
        .is_some_and(|m| !m.is_empty() && m.values().all(|v| v.get("redacted").is_some()));
    let changes = match changes {
        Some(value) if !redacted => serde_json::from_value(value).unwrap_or_default(),
        _ => BTreeMap::new(),
    };
    AuditRecord {
        id,
        entry: AuditEntry {
            integration_id,
            lead_id,
            contact_id: contact.map(|c| ContactId::new(from_db_id(c))),
            event_key,
            direction,
            action,
            reason,
            changes,
        },
        changes_redacted: redacted,
        created_at: at,
    }
}
