//! `/v1/leads`: the integration's leads.
//!
//! Writes are plain platform writes (no `leadsync.origin` marking), so the
//! outbox trigger on `leads` records them and the worker pushes them to
//! HubSpot exactly like a change made by any other platform code.

use actix_web::http::header;
use actix_web::{HttpResponse, delete, get, patch, post, web};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use leadsync_domain::{Email, FieldMapping, LeadField};
use leadsync_store::leads::{
    self, FieldValues, LeadFields, ListCursor, ListLeads, NewLead, SourceSystem, SyncDirection,
};
use leadsync_store::{IntegrationSettings, Lead, LeadColumn};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::auth::{Auth, Caller, Read, Write};
use crate::error::{ApiError, ErrorBody};
use crate::input::Object;
use crate::startup::AppState;

/// Longest accepted value of a text field, in characters.
pub const MAX_FIELD_CHARS: usize = 2048;
/// The HubSpot property whose values [`HUBSPOT_LEAD_STATUSES`] are.
pub const LEAD_STATUS_PROPERTY: &str = "hs_lead_status";
/// The values HubSpot's standard `hs_lead_status` enumeration accepts, as
/// the platform stores them: lower case, which the field mapping turns into
/// HubSpot's upper case (`in_progress` ↔ `IN_PROGRESS`). HubSpot refuses any
/// other value, and with it the whole write of the contact.
pub const HUBSPOT_LEAD_STATUSES: &[&str] = &[
    "new",
    "open",
    "in_progress",
    "open_deal",
    "unqualified",
    "attempted_to_connect",
    "connected",
    "bad_timing",
];
/// Default page size of the list.
const DEFAULT_LIMIT: i64 = 100;
/// Largest page of the list.
const MAX_LIMIT: i64 = 1000;

/// A lead as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct LeadView {
    /// The lead's id.
    pub id: Uuid,
    /// First name.
    pub first_name: Option<String>,
    /// Last name.
    pub last_name: Option<String>,
    /// "first last", trimmed (derived).
    pub full_name: String,
    /// E-mail address, lower-cased (unique per integration).
    pub email: Option<String>,
    /// Phone number.
    pub phone: Option<String>,
    /// Company.
    pub company: Option<String>,
    /// Job title.
    pub job_title: Option<String>,
    /// City or region (HubSpot `city`).
    pub location: Option<String>,
    /// Country.
    pub country: Option<String>,
    /// Where the lead came from.
    pub source: Option<String>,
    /// The platform it was found on.
    pub platform: Option<String>,
    /// Its URL on that platform.
    pub platform_url: Option<String>,
    /// Profile URL.
    pub profile_url: Option<String>,
    /// Lead status (HubSpot `hs_lead_status`, lower-cased).
    pub status: Option<String>,
    /// The linked HubSpot contact id.
    pub crm_id: Option<u64>,
    /// `not_synced`, `pending`, `synced`, `failed` or `unlinked`.
    pub crm_sync_status: String,
    /// When both sides last agreed.
    pub crm_synced_at: Option<DateTime<Utc>>,
    /// Where the lead was first created: `platform`, `hubspot`, `import`, `manual`.
    pub source_system: String,
    /// `to_crm` or `from_crm`.
    pub last_sync_direction: Option<String>,
    /// Incremented by every sync.
    pub sync_version: i32,
    /// HubSpot's last modification as of the last inbound sync.
    pub last_modified_in_crm: Option<DateTime<Utc>>,
    /// Soft-deletion time.
    pub deleted_at: Option<DateTime<Utc>>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl From<Lead> for LeadView {
    fn from(lead: Lead) -> Self {
        let f = lead.fields;
        Self {
            id: lead.id,
            first_name: f.first_name,
            last_name: f.last_name,
            full_name: lead.full_name,
            email: f.email,
            phone: f.phone,
            company: f.company,
            job_title: f.job_title,
            location: f.location,
            country: f.country,
            source: f.source,
            platform: f.platform,
            platform_url: f.platform_url,
            profile_url: f.profile_url,
            status: f.status,
            crm_id: lead.crm_id.map(|c| c.get()),
            crm_sync_status: lead.crm_sync_status.as_str().to_owned(),
            crm_synced_at: lead.crm_synced_at,
            source_system: lead.source_system.as_str().to_owned(),
            last_sync_direction: lead
                .last_sync_direction
                .map(|d: SyncDirection| d.as_str().to_owned()),
            sync_version: lead.sync_version,
            last_modified_in_crm: lead.last_modified_in_crm,
            deleted_at: lead.deleted_at,
            created_at: lead.created_at,
            updated_at: lead.updated_at,
        }
    }
}

/// The body of `POST /v1/leads`, and of `PATCH /v1/leads/{id}`, where an
/// absent field is left as it is and `null` clears it. Values are trimmed;
/// an empty string is no value.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)] // Documents the body; it is read field by field (`parse_fields`).
pub struct LeadInput {
    /// First name.
    first_name: Option<String>,
    /// Last name.
    last_name: Option<String>,
    /// E-mail address; must be `local@domain`. Stored lower-cased, unique
    /// per integration (409 `duplicate_email` otherwise).
    email: Option<String>,
    /// Phone number.
    phone: Option<String>,
    /// Company.
    company: Option<String>,
    /// Job title.
    job_title: Option<String>,
    /// City or region.
    location: Option<String>,
    /// Country.
    country: Option<String>,
    /// Where the lead came from.
    source: Option<String>,
    /// The platform it was found on.
    platform: Option<String>,
    /// Its URL on that platform.
    platform_url: Option<String>,
    /// Profile URL.
    profile_url: Option<String>,
    /// Lead status; `new` when a created lead has none. While the field
    /// mapping sends it to HubSpot's `hs_lead_status` (the default), one of
    /// `new`, `open`, `in_progress`, `open_deal`, `unqualified`,
    /// `attempted_to_connect`, `connected`, `bad_timing` (any letter case;
    /// stored lower-cased).
    status: Option<String>,
    /// Creation only: `platform` (default), `import` or `manual`.
    #[schema(value_type = Option<String>, example = "platform")]
    source_system: Option<String>,
}

/// The fields of a lead body, each naming itself in its error: `Some(None)`
/// clears a field, an absent field is not in the map.
///
/// Surrounding whitespace is trimmed; a control character left inside a
/// value (U+0000–U+001F, U+007F–U+009F: NUL, which Postgres cannot store in
/// text, but tabs and line breaks too, which no single-line field of a lead
/// holds) refuses it. `status` is checked against HubSpot's lead statuses
/// while the integration's mapping sends it there.
fn parse_fields(
    object: &mut Object,
    settings: &IntegrationSettings,
) -> Result<FieldValues, ApiError> {
    let mut values = FieldValues::new();
    for column in LeadColumn::ALL {
        let name = column.as_str();
        let Some(raw) = object.take(name) else {
            continue;
        };
        let value = match raw {
            Value::Null => None,
            Value::String(s) => Some(s.trim().to_owned()).filter(|s| !s.is_empty()),
            _ => return Err(ApiError::invalid(name, "must be a string or null")),
        };
        if value
            .as_deref()
            .is_some_and(|v| v.chars().any(char::is_control))
        {
            return Err(ApiError::invalid(
                name,
                "must not contain control characters (U+0000–U+001F, U+007F–U+009F), \
                 tabs and line breaks included",
            ));
        }
        if value
            .as_deref()
            .is_some_and(|v| v.chars().count() > MAX_FIELD_CHARS)
        {
            return Err(ApiError::invalid(
                name,
                format!("must be at most {MAX_FIELD_CHARS} characters"),
            ));
        }
        let value = match (column, value) {
            (LeadColumn::Email, Some(raw)) => Some(
                Email::parse(&raw)
                    .map_err(|e| ApiError::invalid(name, e.to_string()))?
                    .as_str()
                    .to_owned(),
            ),
            (LeadColumn::Status, Some(raw)) if status_is_hubspot_lead_status(settings) => {
                Some(parse_lead_status(&raw)?)
            }
            (_, value) => value,
        };
        values.insert(*column, value);
    }
    Ok(values)
}

/// Whether the integration's field mapping sends `status` to HubSpot's
/// `hs_lead_status` (the default mapping does).
fn status_is_hubspot_lead_status(settings: &IntegrationSettings) -> bool {
    match settings.field_mapping.get(&LeadField::Status) {
        Some(property) => property == LEAD_STATUS_PROPERTY,
        None => {
            FieldMapping::default().property_of(LeadField::Status) == Some(LEAD_STATUS_PROPERTY)
        }
    }
}

/// A lead status HubSpot accepts, lower-cased, or a 422 listing them.
fn parse_lead_status(raw: &str) -> Result<String, ApiError> {
    let status = raw.to_ascii_lowercase();
    if HUBSPOT_LEAD_STATUSES.contains(&status.as_str()) {
        return Ok(status);
    }
    let accepted: Vec<String> = HUBSPOT_LEAD_STATUSES
        .iter()
        .map(|s| format!("`{s}`"))
        .collect();
    Err(ApiError::invalid(
        LeadColumn::Status.as_str(),
        format!(
            "must be one of {} (HubSpot's lead statuses, `{LEAD_STATUS_PROPERTY}`), \
             or null",
            accepted.join(", ")
        ),
    ))
}

fn parse_source_system(object: &mut Object) -> Result<Option<SourceSystem>, ApiError> {
    const FIELD: &str = "source_system";
    let Some(raw) = object.take(FIELD) else {
        return Ok(None);
    };
    match raw {
        Value::Null => Ok(None),
        Value::String(s) => match s.as_str() {
            "platform" => Ok(Some(SourceSystem::Platform)),
            "import" => Ok(Some(SourceSystem::Import)),
            "manual" => Ok(Some(SourceSystem::Manual)),
            _ => Err(ApiError::invalid(
                FIELD,
                "must be `platform`, `import` or `manual`",
            )),
        },
        _ => Err(ApiError::invalid(FIELD, "must be a string or null")),
    }
}

/// Query of `GET /v1/leads`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Page size, 1–1000 (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Include soft-deleted leads (default false).
    #[param(value_type = Option<bool>)]
    include_deleted: Option<String>,
}

/// A page of leads, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct LeadPage {
    /// The leads.
    pub data: Vec<LeadView>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// A page size from the query, or a 422 naming `field`.
pub fn parse_limit(raw: Option<&str>, field: &str) -> Result<i64, ApiError> {
    let Some(raw) = raw else {
        return Ok(DEFAULT_LIMIT);
    };
    match raw.parse::<i64>() {
        Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        _ => Err(ApiError::invalid(
            field,
            format!("must be an integer between 1 and {MAX_LIMIT}"),
        )),
    }
}

/// A boolean from the query, or a 422 naming `field`.
pub fn parse_flag(raw: Option<&str>, field: &str) -> Result<bool, ApiError> {
    match raw {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(_) => Err(ApiError::invalid(field, "must be `true` or `false`")),
    }
}

fn encode_cursor(lead: &Lead) -> String {
    let micros = lead.created_at.timestamp_micros();
    URL_SAFE_NO_PAD.encode(format!("{micros}.{}", lead.id))
}

fn decode_cursor(raw: &str) -> Result<ListCursor, ApiError> {
    let invalid = || ApiError::invalid("cursor", "is not a cursor this API returned");
    let text = URL_SAFE_NO_PAD.decode(raw).map_err(|_| invalid())?;
    let text = String::from_utf8(text).map_err(|_| invalid())?;
    let (micros, id) = text.split_once('.').ok_or_else(invalid)?;
    let micros: i64 = micros.parse().map_err(|_| invalid())?;
    Ok(ListCursor {
        created_at: DateTime::from_timestamp_micros(micros).ok_or_else(invalid)?,
        id: id.parse().map_err(|_| invalid())?,
    })
}

/// Lists the integration's leads, oldest first, a page at a time.
#[utoipa::path(
    tag = "leads",
    params(ListQuery),
    security(("bearer" = ["read"])),
    responses(
        (status = 200, description = "A page of leads", body = LeadPage),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 422, description = "Invalid `limit` or `cursor`", body = ErrorBody),
    )
)]
#[get("/v1/leads")]
pub async fn list_leads(
    caller: Auth<Read>,
    state: web::Data<AppState>,
    query: web::Query<ListQuery>,
) -> Result<web::Json<LeadPage>, ApiError> {
    let limit = parse_limit(query.limit.as_deref(), "limit")?;
    let params = ListLeads {
        after: query.cursor.as_deref().map(decode_cursor).transpose()?,
        limit,
        include_deleted: parse_flag(query.include_deleted.as_deref(), "include_deleted")?,
    };
    let page = leads::list(state.store.pool(), caller.integration_id(), &params).await?;
    let next_cursor = (page.len() as i64 == limit)
        .then(|| page.last().map(encode_cursor))
        .flatten();
    Ok(web::Json(LeadPage {
        data: page.into_iter().map(LeadView::from).collect(),
        next_cursor,
    }))
}

/// Creates a lead; it is pushed to HubSpot like any platform write.
#[utoipa::path(
    tag = "leads",
    request_body = LeadInput,
    security(("bearer" = ["write"])),
    responses(
        (status = 201, description = "Created", body = LeadView,
            headers(("Location" = String, description = "The lead's URL"))),
        (status = 400, description = "Not a JSON object, or an unknown field", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "A `read` token: this route needs scope `write` or `admin` (`insufficient_scope`)", body = ErrorBody),
        (status = 409, description = "Another lead has this e-mail address", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 422, description = "A field's value is invalid; `field` names it", body = ErrorBody),
    )
)]
#[post("/v1/leads")]
pub async fn create_lead(
    caller: Auth<Write>,
    state: web::Data<AppState>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let mut object = Object::new(body.into_inner())?;
    let values = parse_fields(&mut object, &caller.integration.settings)?;
    let source_system = parse_source_system(&mut object)?;
    object.finish("")?;
    let mut fields = LeadFields::default();
    for (column, value) in values {
        fields.set(column, value);
    }
    let new = NewLead {
        fields,
        source_system,
    };
    let lead = leads::create(state.store.pool(), caller.integration_id(), &new).await?;
    tracing::Span::current().record("lead.id", tracing::field::display(lead.id));
    tracing::info!(
        integration.id = %lead.integration_id,
        lead.id = %lead.id,
        "Lead {} created through the API",
        lead.id
    );
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/v1/leads/{}", lead.id)))
        .json(LeadView::from(lead)))
}

/// A live lead of the caller's integration, or 404 (also for another
/// integration's lead: its existence is not revealed).
async fn live_lead(state: &AppState, caller: &Caller, id: Uuid) -> Result<Lead, ApiError> {
    tracing::Span::current().record("lead.id", tracing::field::display(id));
    leads::by_id(state.store.pool(), caller.integration_id(), id)
        .await?
        .filter(|lead| lead.deleted_at.is_none())
        .ok_or(ApiError::NotFound("lead"))
}

/// One lead.
#[utoipa::path(
    tag = "leads",
    params(("id" = Uuid, Path, description = "The lead's id")),
    security(("bearer" = ["read"])),
    responses(
        (status = 200, description = "The lead", body = LeadView),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 404, description = "No such live lead in this integration", body = ErrorBody),
    )
)]
#[get("/v1/leads/{id}")]
pub async fn get_lead(
    caller: Auth<Read>,
    state: web::Data<AppState>,
    id: web::Path<Uuid>,
) -> Result<web::Json<LeadView>, ApiError> {
    let lead = live_lead(&state, &caller, id.into_inner()).await?;
    Ok(web::Json(lead.into()))
}

/// Changes some fields of a lead: absent fields stay, `null` clears one.
#[utoipa::path(
    tag = "leads",
    params(("id" = Uuid, Path, description = "The lead's id")),
    request_body = LeadInput,
    security(("bearer" = ["write"])),
    responses(
        (status = 200, description = "The updated lead", body = LeadView),
        (status = 400, description = "Not a JSON object, or an unknown field", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "A `read` token: this route needs scope `write` or `admin` (`insufficient_scope`)", body = ErrorBody),
        (status = 404, description = "No such live lead in this integration", body = ErrorBody),
        (status = 409, description = "Another lead has this e-mail address", body = ErrorBody),
        (status = 422, description = "A field's value is invalid; `field` names it", body = ErrorBody),
    )
)]
#[patch("/v1/leads/{id}")]
pub async fn update_lead(
    caller: Auth<Write>,
    state: web::Data<AppState>,
    id: web::Path<Uuid>,
    body: web::Json<Value>,
) -> Result<web::Json<LeadView>, ApiError> {
    let id = id.into_inner();
    tracing::Span::current().record("lead.id", tracing::field::display(id));
    let mut object = Object::new(body.into_inner())?;
    let values = parse_fields(&mut object, &caller.integration.settings)?;
    if object.take("source_system").is_some() {
        return Err(ApiError::invalid(
            "source_system",
            "is set when a lead is created and cannot change",
        ));
    }
    object.finish("")?;
    let lead = leads::update(state.store.pool(), caller.integration_id(), id, &values)
        .await?
        .ok_or(ApiError::NotFound("lead"))?;
    Ok(web::Json(lead.into()))
}

/// Deletes a lead (a soft delete). Its contact stays in HubSpot unless the
/// integration's `platform_deletion` is `archive`.
#[utoipa::path(
    tag = "leads",
    params(("id" = Uuid, Path, description = "The lead's id")),
    security(("bearer" = ["write"])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "A `read` token: this route needs scope `write` or `admin` (`insufficient_scope`)", body = ErrorBody),
        (status = 404, description = "No such live lead in this integration", body = ErrorBody),
    )
)]
#[delete("/v1/leads/{id}")]
pub async fn delete_lead(
    caller: Auth<Write>,
    state: web::Data<AppState>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    tracing::Span::current().record("lead.id", tracing::field::display(id));
    if !leads::delete(state.store.pool(), caller.integration_id(), id).await? {
        return Err(ApiError::NotFound("lead"));
    }
    Ok(HttpResponse::NoContent().finish())
}

#[cfg(test)]
mod tests {
    use utoipa::PartialSchema as _;
    use utoipa::openapi::{RefOr, Schema};

    use super::*;

    #[test]
    fn the_documented_body_lists_exactly_the_fields_read() {
        // Arrange
        let RefOr::T(Schema::Object(schema)) = LeadInput::schema() else {
            panic!("LeadInput is an object schema");
        };
        let mut expected: Vec<&str> = LeadColumn::ALL.iter().map(|c| c.as_str()).collect();
        expected.push("source_system");
        expected.sort_unstable();

        // Act
        let mut documented: Vec<&str> = schema.properties.keys().map(String::as_str).collect();
        documented.sort_unstable();

        // Assert
        assert_eq!(documented, expected);
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        // Arrange
        let created_at = DateTime::from_timestamp_micros(1_780_000_000_123_456).unwrap();
        let id = Uuid::now_v7();
        let raw = URL_SAFE_NO_PAD.encode(format!("{}.{id}", created_at.timestamp_micros()));

        // Act
        let cursor = decode_cursor(&raw).unwrap();

        // Assert
        assert_eq!(cursor, ListCursor { created_at, id });
        assert!(decode_cursor("not-a-cursor").is_err());
        assert!(decode_cursor(&URL_SAFE_NO_PAD.encode("1.x")).is_err());
    }
}
