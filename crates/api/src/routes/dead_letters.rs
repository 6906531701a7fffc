//! `/v1/dead-letters`: what failed for good, and its replay.
//!
//! A replay puts the failed work back on the queue it came from, in the form
//! the worker consumes there: a webhook event becomes an [`InboundEvent`]
//! again (under its original event key, so the Postgres dedupe still
//! applies), a lead change becomes [`PushLeadChange`] jobs (the worker
//! pushes the lead's current state). A webhook event is routed by its
//! portal, as the app-wide webhook URL routes it, never by the integration
//! a webhook URL named: an event another portal posted to an integration's
//! URL belongs to that portal's integration, which alone sees and replays it.
//!
//! The queue remembers the ids of finished jobs to refuse redeliveries, so a
//! replayed job gets an id of its own, derived from the letter and its
//! failure count: `replay:{letter id}:{attempts}:{original task id}`. Each
//! failure recorded on an open letter bumps `attempts`, so the replay of a
//! new failure is never refused as the replay of an earlier one.
//!
//! The letter is marked replayed in the same transaction that is committed
//! only once Redis acknowledged the push, and only when the push queued at
//! least one job: a failed push leaves it open, and so does a push refused
//! as a duplicate (a replay of this very failure whose commit was lost is
//! still on the queue), which answers 409 `already_queued`.

use std::collections::HashMap;

use actix_web::{get, post, web};
use chrono::{DateTime, Utc};
use leadsync_domain::{EventKey, WebhookEvent};
use leadsync_queue::{
    INBOUND_QUEUE, InboundEvent, OUTBOUND_QUEUE, OutboundLetter, PushLeadChange, PushOutcome,
    QueueJob,
};
use leadsync_store::dead_letters::{self, DeadLetter, DeadLetterFilter, DeadLetterKind};
use leadsync_store::{Integration, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::auth::{Admin, Auth, Read};
use crate::error::{ApiError, ErrorBody};
use crate::routes::leads::{parse_flag, parse_limit};
use crate::startup::AppState;

/// Query of `GET /v1/dead-letters`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeadLetterQuery {
    /// Only `inbound_event` (webhook events) or `outbound_change` (lead
    /// changes bound for HubSpot).
    kind: Option<String>,
    /// Include letters already replayed (default false).
    #[param(value_type = Option<bool>)]
    include_replayed: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Page size, 1–1000 (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
}

/// A dead letter.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterView {
    /// Its id (what replay takes).
    pub id: i64,
    /// `inbound_event` or `outbound_change`.
    pub kind: String,
    /// The event key (inbound) or `lead-change:{id}` (outbound).
    pub event_key: String,
    /// Why it failed (the latest failure's reason), e.g. `hubspot_validation`.
    pub reason: String,
    /// How many times it failed for good.
    pub attempts: i32,
    /// The HubSpot account, when known.
    pub portal_id: Option<u64>,
    /// First failure.
    pub first_failed_at: DateTime<Utc>,
    /// Latest failure.
    pub last_failed_at: DateTime<Utc>,
    /// When it was replayed; open letters have none.
    pub replayed_at: Option<DateTime<Utc>>,
    /// The failed webhook event as HubSpot sent it, or the lead change
    /// (`integration_id`, `lead_id`, `change_ids`, `operations`).
    #[schema(value_type = Object)]
    pub payload: Value,
}

impl From<DeadLetter> for DeadLetterView {
    fn from(letter: DeadLetter) -> Self {
        Self {
            portal_id: letter.portal_id().map(|p| p.get()),
            id: letter.id,
            kind: letter.kind.as_str().to_owned(),
            event_key: letter.event_key,
            reason: letter.reason,
            attempts: letter.attempts,
            first_failed_at: letter.first_failed_at,
            last_failed_at: letter.last_failed_at,
            replayed_at: letter.replayed_at,
            payload: letter.payload,
        }
    }
}

/// A page of dead letters, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterPage {
    /// The letters.
    pub data: Vec<DeadLetterView>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// What a replay did.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayView {
    /// The letter.
    pub dead_letter_id: i64,
    /// `replayed` now, or `already_replayed` earlier (nothing was queued again).
    pub outcome: String,
    /// When it was replayed.
    pub replayed_at: Option<DateTime<Utc>>,
    /// The queue it went back to (`hubspot:events` or `platform:lead-changes`).
    pub queue: String,
    /// Jobs newly queued by this request.
    pub jobs_queued: u64,
    /// Jobs this request found already queued.
    pub jobs_already_queued: u64,
    /// A readable summary.
    pub message: String,
}

/// The integration's dead letters, oldest first, a page at a time.
#[utoipa::path(
    tag = "sync",
    params(DeadLetterQuery),
    security(("bearer" = ["read"])),
    responses(
        (status = 200, description = "A page of dead letters", body = DeadLetterPage),
        (status = 400, description = "Unknown query parameter", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 422, description = "Invalid `kind`, `cursor` or `limit`", body = ErrorBody),
    )
)]
#[get("/v1/dead-letters")]
pub async fn list_dead_letters(
    caller: Auth<Read>,
    state: web::Data<AppState>,
    query: web::Query<DeadLetterQuery>,
) -> Result<web::Json<DeadLetterPage>, ApiError> {
    let kind = query
        .kind
        .as_deref()
        .map(|k| {
            k.parse::<DeadLetterKind>().map_err(|_| {
                ApiError::invalid("kind", "must be `inbound_event` or `outbound_change`")
            })
        })
        .transpose()?;
    let after_id = query
        .cursor
        .as_deref()
        .map(|c| {
            c.parse::<i64>()
                .ok()
                .filter(|id| *id > 0)
                .ok_or_else(|| ApiError::invalid("cursor", "is not a cursor this API returned"))
        })
        .transpose()?;
    let limit = parse_limit(query.limit.as_deref(), "limit")?;
    let filter = DeadLetterFilter {
        integration_id: Some(caller.integration_id()),
        kind,
        include_replayed: parse_flag(query.include_replayed.as_deref(), "include_replayed")?,
        after_id,
        limit,
    };
    let integration = &caller.integration;
    let letters = dead_letters::list_owned(
        state.store.pool(),
        integration.id,
        integration.portal_id,
        &filter,
    )
    .await?;
    let next_cursor = (letters.len() as i64 == limit)
        .then(|| letters.last().map(|l| l.id.to_string()))
        .flatten();
    Ok(web::Json(DeadLetterPage {
        data: letters.into_iter().map(DeadLetterView::from).collect(),
        next_cursor,
    }))
}

/// Puts a dead letter's event or change back on its queue and marks it
/// replayed. Replaying it again changes nothing and says so; a letter whose
/// replay is already on the queue stays open (409 `already_queued`).
#[utoipa::path(
    tag = "sync",
    params(("id" = i64, Path, description = "The dead letter's id")),
    security(("bearer" = ["admin"])),
    responses(
        (status = 200, description = "Replayed now, or earlier (`outcome`)", body = ReplayView),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "This route needs a token of scope `admin` (`insufficient_scope`)", body = ErrorBody),
        (status = 404, description = "No such dead letter in this integration", body = ErrorBody),
        (status = 409, description = "The letter's payload cannot be replayed (`unreplayable`), \
            or this failure's replay is already on the queue and nothing was queued: \
            the letter stays open (`already_queued`)", body = ErrorBody),
        (status = 503, description = "The queue is unavailable; the letter stays open", body = ErrorBody),
    )
)]
#[post("/v1/dead-letters/{id}/replay")]
pub async fn replay_dead_letter(
    caller: Auth<Admin>,
    state: web::Data<AppState>,
    id: web::Path<i64>,
) -> Result<web::Json<ReplayView>, ApiError> {
    let id = id.into_inner();
    tracing::Span::current().record("dead_letter.id", id);
    let integration = &caller.integration;
    let pool = state.store.pool();
    let letter = dead_letters::get_owned(pool, integration.id, integration.portal_id, id)
        .await?
        .ok_or(ApiError::NotFound("dead letter"))?;
    if letter.replayed_at.is_some() {
        return Ok(web::Json(already_replayed(&letter)));
    }
    let mut tx = state.store.begin().await?;
    // The row lock taken here makes a concurrent replay wait for this one,
    // then find the letter replayed.
    let Some(letter) = dead_letters::mark_replayed(&mut *tx, id).await? else {
        drop(tx);
        let letter = dead_letters::get_owned(pool, integration.id, integration.portal_id, id)
            .await?
            .ok_or(ApiError::NotFound("dead letter"))?;
        return Ok(web::Json(already_replayed(&letter)));
    };
    let (queue, outcome) = match letter.kind {
        DeadLetterKind::InboundEvent => {
            let job = inbound_job(&letter, integration)?;
            (INBOUND_QUEUE, state.inbound.push_jobs(&[job]).await?)
        }
        DeadLetterKind::OutboundChange => {
            let jobs = outbound_jobs(&letter, integration)?;
            (OUTBOUND_QUEUE, state.outbound.push_jobs(&jobs).await?)
        }
    };
    let PushOutcome { new, duplicates } = outcome;
    if new == 0 {
        // Every job is known to the queue: the replay of this very failure
        // went out before, and its commit was lost. Marking the letter now
        // would close it although this request queued nothing.
        drop(tx);
        tracing::warn!(
            integration.id = %integration.id,
            dead_letter.id = id,
            queue,
            duplicates,
            "Dead letter {id} not replayed: its jobs are already on {queue}"
        );
        return Err(ApiError::Conflict {
            code: "already_queued",
            message: format!(
                "the replay of dead letter {id} (failure {attempts}) is already on the queue \
                 `{queue}`; nothing was queued and the letter stays open. If the work fails \
                 again the letter records it and can be replayed again",
                attempts = letter.attempts
            ),
        });
    }
    tx.commit().await.map_err(StoreError::from)?;
    tracing::info!(
        integration.id = %integration.id,
        dead_letter.id = id,
        queue,
        jobs = new,
        "Dead letter {id} replayed onto {queue}"
    );
    Ok(web::Json(ReplayView {
        dead_letter_id: id,
        outcome: "replayed".to_owned(),
        replayed_at: letter.replayed_at,
        queue: queue.to_owned(),
        jobs_queued: new,
        jobs_already_queued: duplicates,
        message: format!("dead letter {id} is back on the queue `{queue}`"),
    }))
}

fn already_replayed(letter: &DeadLetter) -> ReplayView {
    ReplayView {
        dead_letter_id: letter.id,
        outcome: "already_replayed".to_owned(),
        replayed_at: letter.replayed_at,
        queue: queue_of(letter.kind).to_owned(),
        jobs_queued: 0,
        jobs_already_queued: 0,
        message: format!(
            "dead letter {} was already replayed; nothing was queued again",
            letter.id
        ),
    }
}

fn queue_of(kind: DeadLetterKind) -> &'static str {
    match kind {
        DeadLetterKind::InboundEvent => INBOUND_QUEUE,
        DeadLetterKind::OutboundChange => OUTBOUND_QUEUE,
    }
}

/// A job queued again under a task id of its own; its payload is the job's.
#[derive(Debug)]
pub struct Replayed<J> {
    task_id: String,
    job: J,
}

impl<J> Replayed<J> {
    fn new(letter: &DeadLetter, original_task_id: &str, job: J) -> Self {
        Self {
            task_id: replay_task_id(letter.id, letter.attempts, original_task_id),
            job,
        }
    }
}

impl<J: Serialize> Serialize for Replayed<J> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.job.serialize(serializer)
    }
}

impl<J: Serialize> QueueJob for Replayed<J> {
    fn task_id(&self) -> String {
        self.task_id.clone()
    }
}

/// The queue task id of the replay of `original_task_id` from letter
/// `letter_id` after its `attempts`-th failure: unique per failure, so a
/// replay is refused only as a repeat of the replay of the same failure.
pub fn replay_task_id(letter_id: i64, attempts: i32, original_task_id: &str) -> String {
    format!("replay:{letter_id}:{attempts}:{original_task_id}")
}

fn unreplayable(letter: &DeadLetter, why: &str) -> ApiError {
    ApiError::Conflict {
        code: "unreplayable",
        message: format!("dead letter {} cannot be replayed: {why}", letter.id),
    }
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// The webhook event of an inbound letter, as the ingester queued it from
/// the app-wide webhook URL. Its key stays the event's own: the worker's
/// Postgres dedupe recognises an event processed meanwhile.
fn inbound_job(
    letter: &DeadLetter,
    integration: &Integration,
) -> Result<Replayed<InboundEvent>, ApiError> {
    let raw = serde_json::value::to_raw_value(&letter.payload)
        .map_err(|_| unreplayable(letter, "its payload is not an event"))?;
    let key: EventKey = serde_json::from_value(Value::String(letter.event_key.clone()))
        .map_err(|_| unreplayable(letter, "its event key is malformed"))?;
    let trace: HashMap<String, String> =
        leadsync_runtime::telemetry::trace_context_of(&tracing::Span::current());
    let event = WebhookEvent::from_raw(&raw);
    // Routed by the event's portal, like an event of the app-wide URL: the
    // integration a webhook URL named may be another portal's (a
    // `portal_mismatch`), and the event is that portal's integration's. Only
    // an event without a portal is routed by name; the worker then checks
    // it against this integration's portal.
    let by_name = match event.portal_id() {
        Some(portal) if portal != integration.portal_id => {
            return Err(unreplayable(letter, "its event is of another portal"));
        }
        Some(_) => None,
        None => Some(integration.name.clone()),
    };
    let mut job = InboundEvent::new(event, now_ms(), trace, by_name);
    job.key = key;
    Ok(Replayed::new(letter, &letter.event_key, job))
}

/// The lead-change jobs of an outbound letter: one per change it recorded
/// (the worker pushes the lead's current state, so they coalesce).
fn outbound_jobs(
    letter: &DeadLetter,
    integration: &Integration,
) -> Result<Vec<Replayed<PushLeadChange>>, ApiError> {
    let mut payload: OutboundLetter = serde_json::from_value(letter.payload.clone())
        .map_err(|_| unreplayable(letter, "its payload names no lead change"))?;
    if payload.integration_id != integration.id {
        return Err(unreplayable(letter, "it names another integration"));
    }
    if payload.change_ids.is_empty()
        && let Some(id) = letter
            .event_key
            .strip_prefix(leadsync_queue::LEAD_CHANGE_TASK_PREFIX)
            .and_then(|id| id.parse().ok())
    {
        payload.change_ids.push(id);
    }
    if payload.change_ids.is_empty() {
        return Err(unreplayable(letter, "it names no lead change"));
    }
    let trace = leadsync_runtime::telemetry::trace_context_of(&tracing::Span::current());
    Ok(payload
        .jobs(now_ms(), &trace)
        .into_iter()
        .map(|job| Replayed::new(letter, &PushLeadChange::task_id_of(job.change_id), job))
        .collect())
}
