//! `GET /v1/leads/{id}/sync-status`: where a lead stands with HubSpot, and
//! why — its link and sync state, plus the audit trail of the decisions
//! taken about it ("why was this skipped?").

use std::collections::BTreeMap;

use actix_web::{get, web};
use chrono::{DateTime, Utc};
use leadsync_store::audit::{self, AuditAction, AuditRecord};
use leadsync_store::leads;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::auth::{Auth, Read};
use crate::error::{ApiError, ErrorBody};
use crate::startup::AppState;

/// Default number of audit entries returned.
const DEFAULT_HISTORY: i64 = 20;
/// Most audit entries returned.
const MAX_HISTORY: i64 = 200;

/// Query of the sync status.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SyncStatusQuery {
    /// Audit entries to return, newest first: 1–200 (default 20).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 200)]
    history: Option<String>,
}

/// The change of one field in an audit entry.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FieldChangeView {
    /// Value before.
    pub before: Option<String>,
    /// Value after.
    pub after: Option<String>,
    /// The value that lost a conflict, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub losing_value: Option<String>,
}

/// One sync decision about the lead.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditView {
    /// Sequence number.
    pub id: i64,
    /// When it was decided.
    pub at: DateTime<Utc>,
    /// `inbound` (HubSpot → platform) or `outbound` (platform → HubSpot).
    pub direction: String,
    /// `created`, `updated`, `linked`, `unlinked`, `erased`, `merged`,
    /// `restored`, `skipped`, `conflict` or `dead_lettered`.
    pub action: String,
    /// Stable snake_case reason, e.g. `echo`, `no_change`, `outbound_disabled`.
    pub reason: Option<String>,
    /// What the reason means, for the reasons leadsync records.
    pub explanation: Option<String>,
    /// The HubSpot contact concerned.
    pub contact_id: Option<u64>,
    /// The webhook event or outbox change that caused it.
    pub event_key: Option<String>,
    /// Field → change (empty once a privacy deletion redacted them).
    pub changes: BTreeMap<String, FieldChangeView>,
    /// Whether a privacy deletion redacted the values of `changes`.
    pub changes_redacted: bool,
}

impl From<AuditRecord> for AuditView {
    fn from(record: AuditRecord) -> Self {
        let entry = record.entry;
        Self {
            id: record.id,
            at: record.created_at,
            direction: entry.direction.as_str().to_owned(),
            action: entry.action.as_str().to_owned(),
            explanation: entry.reason.as_deref().and_then(explain).map(str::to_owned),
            reason: entry.reason,
            contact_id: entry.contact_id.map(|c| c.get()),
            event_key: entry.event_key,
            changes: entry
                .changes
                .into_iter()
                .map(|(field, c)| {
                    (
                        field,
                        FieldChangeView {
                            before: c.before,
                            after: c.after,
                            losing_value: c.losing_value,
                        },
                    )
                })
                .collect(),
            changes_redacted: record.changes_redacted,
        }
    }
}

/// Where a lead stands with HubSpot.
#[derive(Debug, Serialize, ToSchema)]
pub struct SyncStatusView {
    /// The lead.
    pub lead_id: Uuid,
    /// The linked HubSpot contact id.
    pub crm_id: Option<u64>,
    /// `not_synced`, `pending`, `synced`, `failed` or `unlinked`.
    pub crm_sync_status: String,
    /// When both sides last agreed.
    pub crm_synced_at: Option<DateTime<Utc>>,
    /// `to_crm` or `from_crm`.
    pub last_sync_direction: Option<String>,
    /// Incremented by every sync.
    pub sync_version: i32,
    /// HubSpot's last modification as of the last inbound sync.
    pub last_modified_in_crm: Option<DateTime<Utc>>,
    /// Soft-deletion time.
    pub deleted_at: Option<DateTime<Utc>>,
    /// The latest decision that left the lead (or one of its fields)
    /// unwritten, with its reason: the answer to "why was this skipped?".
    pub last_skip: Option<AuditView>,
    /// The latest decisions about the lead, newest first.
    pub history: Vec<AuditView>,
}

/// A lead's sync state and the recent decisions about it.
#[utoipa::path(
    tag = "sync",
    params(("id" = Uuid, Path, description = "The lead's id"), SyncStatusQuery),
    security(("bearer" = ["read"])),
    responses(
        (status = 200, description = "The lead's sync status", body = SyncStatusView),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 404, description = "No such lead in this integration", body = ErrorBody),
        (status = 422, description = "Invalid `history`", body = ErrorBody),
    )
)]
#[get("/v1/leads/{id}/sync-status")]
pub async fn get_sync_status(
    caller: Auth<Read>,
    state: web::Data<AppState>,
    id: web::Path<Uuid>,
    query: web::Query<SyncStatusQuery>,
) -> Result<web::Json<SyncStatusView>, ApiError> {
    let id = id.into_inner();
    tracing::Span::current().record("lead.id", tracing::field::display(id));
    let history = match query.history.as_deref() {
        None => DEFAULT_HISTORY,
        Some(raw) => raw
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=MAX_HISTORY).contains(n))
            .ok_or_else(|| {
                ApiError::invalid(
                    "history",
                    format!("must be an integer between 1 and {MAX_HISTORY}"),
                )
            })?,
    };
    let pool = state.store.pool();
    // Soft-deleted leads keep a status: why a deletion did or did not reach
    // HubSpot is a fair question.
    let lead = leads::by_id(pool, caller.integration_id(), id)
        .await?
        .ok_or(ApiError::NotFound("lead"))?;
    let records = audit::for_lead(pool, lead.id, history).await?;
    let history: Vec<AuditView> = records.into_iter().map(AuditView::from).collect();
    // Looked up on its own: the latest skip may be older than the page of
    // `history` returned.
    let last_skip = audit::latest_for_lead(pool, lead.id, SKIPS)
        .await?
        .map(AuditView::from);
    Ok(web::Json(SyncStatusView {
        lead_id: lead.id,
        crm_id: lead.crm_id.map(|c| c.get()),
        crm_sync_status: lead.crm_sync_status.as_str().to_owned(),
        crm_synced_at: lead.crm_synced_at,
        last_sync_direction: lead.last_sync_direction.map(|d| d.as_str().to_owned()),
        sync_version: lead.sync_version,
        last_modified_in_crm: lead.last_modified_in_crm,
        deleted_at: lead.deleted_at,
        last_skip,
        history,
    }))
}

/// Decisions that left something unwritten: a skip, a lost conflict, a
/// dead letter.
const SKIPS: &[AuditAction] = &[
    AuditAction::Skipped,
    AuditAction::Conflict,
    AuditAction::DeadLettered,
];

/// What a recorded reason means; `None` for reasons without an entry here
/// (e.g. a HubSpot error code), which speak for themselves.
pub fn explain(reason: &str) -> Option<&'static str> {
    Some(match reason {
        "echo" => {
            "HubSpot sent back a value leadsync itself had just written there (its own echo), \
             so there was nothing to apply"
        }
        "no_change" => "the change carried no value the other side did not already have",
        "inbound_disabled" => {
            "the integration's inbound direction (HubSpot → platform) is switched off in its settings"
        }
        "outbound_disabled" => {
            "the integration's outbound direction (platform → HubSpot) is switched off in its settings"
        }
        "duplicate_email" => "another lead of the integration already has this e-mail address",
        "email_linked_elsewhere" => {
            "the lead with this e-mail address is already linked to another HubSpot contact"
        }
        "lead_deleted" => "the lead is deleted",
        "lead_not_found" => "the lead no longer exists",
        "no_email" => "the lead has no e-mail address, which HubSpot needs to create a contact",
        "no_linked_lead" => "no lead is linked to the HubSpot contact",
        "tombstoned" => {
            "a privacy deletion in HubSpot forbids re-creating this contact or e-mail address"
        }
        "empty_never_overwrites" => {
            "the integration's settings keep an empty value from overwriting a filled one"
        }
        "conflict_hubspot_wins" => {
            "both sides changed the field; the conflict policy `hubspot_wins` kept HubSpot's value"
        }
        "conflict_platform_wins" => {
            "both sides changed the field; the conflict policy `platform_wins` kept the platform's value"
        }
        "conflict_hubspot_newer" => {
            "both sides changed the field; under `last_write_wins` HubSpot's change was the later one"
        }
        "conflict_platform_newer" => {
            "both sides changed the field; under `last_write_wins` the platform's change was the later one"
        }
        "contact_deleted" => {
            "the change was made for a HubSpot contact since deleted in HubSpot; the integration's \
             deletion mode unlinked or soft-deleted the lead, and this change was not sent"
        }
        "link_changed" => {
            "a HubSpot change moved the lead's link while this push applied a merge; its next change \
             is pushed as the lead then stands"
        }
        "awaiting_push" => {
            "the contact holds exactly what a push of this lead wrote; the push links it"
        }
        "platform_ahead" => {
            "the lead has a newer platform change not yet pushed, which HubSpot's older value must not \
             overwrite; a push of it was requested"
        }
        "invalid_field_mapping" => "the integration's field mapping is invalid; fix its settings",
        "unknown_integration" => "the lead's integration no longer exists",
        _ => return None,
    })
}
