//! `/v1/integration/settings`: the sync settings of the caller's
//! integration — directions, conflict policy, field mapping.
//!
//! A `PUT` body is read field by field so that every error names the field
//! at fault (`field_mapping.email`), and the field mapping is checked the
//! way the worker builds it: the default mapping with the overrides applied,
//! each field and each HubSpot property at most once.

use std::collections::BTreeMap;

use actix_web::http::header::{self, EntityTag};
use actix_web::{HttpRequest, HttpResponse, get, put, web};
use chrono::{DateTime, Utc};
use leadsync_domain::{ConflictPolicy, LeadField, MappingError};
use leadsync_store::integrations::{
    self, DeletionMode, Directions, PlatformDeletion, SettingsVersion,
};
use leadsync_store::{Integration, IntegrationSettings};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::{Admin, Auth, Read};
use crate::error::{ApiError, ErrorBody};
use crate::input::{Object, join, typed};
use crate::startup::AppState;

/// Who wins when both sides changed a field since they last agreed.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConflictPolicyDoc {
    /// HubSpot's value is applied (the default).
    HubspotWins,
    /// The lead keeps its value; the push overwrites HubSpot.
    PlatformWins,
    /// The later change wins (HubSpot's property history against the lead
    /// field's own updated-at; a tie goes to HubSpot).
    LastWriteWins,
}

impl From<ConflictPolicy> for ConflictPolicyDoc {
    fn from(policy: ConflictPolicy) -> Self {
        match policy {
            ConflictPolicy::HubspotWins => Self::HubspotWins,
            ConflictPolicy::PlatformWins => Self::PlatformWins,
            ConflictPolicy::LastWriteWins => Self::LastWriteWins,
        }
    }
}

/// What a `contact.deletion` in HubSpot does to the linked lead.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeletionModeDoc {
    /// Clear the link, keep the lead (the default).
    Unlink,
    /// Soft-delete the lead.
    SoftDelete,
}

/// What deleting a lead on the platform does to its contact in HubSpot.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PlatformDeletionDoc {
    /// The contact stays (the default).
    Keep,
    /// The contact is archived (restorable in HubSpot for 90 days).
    Archive,
}

/// Sync directions switched on or off.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct DirectionsDoc {
    /// HubSpot → platform (default true).
    pub inbound: bool,
    /// Platform → HubSpot (default true).
    pub outbound: bool,
}

/// The settings of an integration. In a `PUT` every key is optional and an
/// omitted key takes its default: send back what `GET` returned, changed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SettingsDoc {
    /// Directions on/off.
    pub directions: DirectionsDoc,
    /// The integration-wide conflict policy.
    pub conflict_policy: ConflictPolicyDoc,
    /// Lead field → conflict policy, overriding `conflict_policy` for that field.
    #[schema(example = json!({"status": "platform_wins"}))]
    pub field_policies: BTreeMap<String, ConflictPolicyDoc>,
    /// Lead field → HubSpot property, overriding the default mapping for that
    /// field (lower-case letters, digits and `_`; each property at most once).
    #[schema(example = json!({"phone": "mobilephone"}))]
    pub field_mapping: BTreeMap<String, String>,
    /// An empty value never overwrites a filled one, whichever side it comes from.
    pub empty_never_overwrites: bool,
    /// What a `contact.deletion` in HubSpot does to the linked lead.
    pub deletion_mode: DeletionModeDoc,
    /// What deleting a lead on the platform does to its contact in HubSpot.
    pub platform_deletion: PlatformDeletionDoc,
    /// Whether webhook events are processed for this integration.
    pub webhooks_enabled: bool,
}

impl From<&IntegrationSettings> for SettingsDoc {
    fn from(settings: &IntegrationSettings) -> Self {
        // Exhaustive on purpose: a new setting must be added here too.
        let IntegrationSettings {
            directions,
            conflict_policy,
            field_policies,
            field_mapping,
            empty_never_overwrites,
            deletion_mode,
            platform_deletion,
            webhooks_enabled,
        } = settings;
        Self {
            directions: DirectionsDoc {
                inbound: directions.inbound,
                outbound: directions.outbound,
            },
            conflict_policy: (*conflict_policy).into(),
            field_policies: field_policies
                .iter()
                .map(|(f, p)| (f.name().to_owned(), (*p).into()))
                .collect(),
            field_mapping: field_mapping
                .iter()
                .map(|(f, p)| (f.name().to_owned(), p.clone()))
                .collect(),
            empty_never_overwrites: *empty_never_overwrites,
            deletion_mode: match deletion_mode {
                DeletionMode::Unlink => DeletionModeDoc::Unlink,
                DeletionMode::SoftDelete => DeletionModeDoc::SoftDelete,
            },
            platform_deletion: match platform_deletion {
                PlatformDeletion::Keep => PlatformDeletionDoc::Keep,
                PlatformDeletion::Archive => PlatformDeletionDoc::Archive,
            },
            webhooks_enabled: *webhooks_enabled,
        }
    }
}

/// The integration and its settings.
#[derive(Debug, Serialize, ToSchema)]
pub struct SettingsView {
    /// The integration's id.
    pub integration_id: Uuid,
    /// Its name (the `{integration}` of its webhook URL).
    pub integration_name: String,
    /// Its HubSpot account.
    pub portal_id: u64,
    /// The settings as stored.
    pub settings: SettingsDoc,
    /// Lead field → HubSpot property: the mapping in effect (the default
    /// with `field_mapping` applied).
    pub effective_field_mapping: BTreeMap<String, String>,
    /// When the integration last changed.
    pub updated_at: DateTime<Utc>,
}

impl SettingsView {
    fn of(integration: &Integration) -> Self {
        let effective = integration
            .settings
            .mapping()
            .map(|m| {
                m.entries()
                    .iter()
                    .map(|e| (e.field.name().to_owned(), e.property.clone()))
                    .collect()
            })
            .unwrap_or_default();
        Self {
            integration_id: integration.id,
            integration_name: integration.name.clone(),
            portal_id: integration.portal_id.get(),
            settings: (&integration.settings).into(),
            effective_field_mapping: effective,
            updated_at: integration.updated_at,
        }
    }
}

/// The integration's settings, with their version as `ETag`.
#[utoipa::path(
    tag = "integration",
    security(("bearer" = ["read"])),
    responses(
        (status = 200, description = "The settings", body = SettingsView,
            headers(("ETag" = String, description = "The settings' version; send it back in \
                `If-Match` to replace them only if nobody else did in between"))),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
    )
)]
#[get("/v1/integration/settings")]
pub async fn get_settings(
    caller: Auth<Read>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    // Read again, with the version, so the body and the ETag are one row's.
    let (integration, version) =
        integrations::get_versioned(state.store.pool(), caller.integration_id())
            .await?
            .ok_or(ApiError::InvalidToken)?;
    Ok(with_etag(&integration, version))
}

/// Replaces the integration's settings; an omitted key takes its default.
///
/// With `If-Match: <ETag of a GET>`, only while the settings are still at
/// that version (otherwise 412 and nothing changes); without `If-Match`
/// (or with `If-Match: *`), unconditionally.
#[utoipa::path(
    tag = "integration",
    request_body = SettingsDoc,
    params(("If-Match" = Option<String>, Header,
        description = "The `ETag` of the settings the change was made on, e.g. `\"7\"`")),
    security(("bearer" = ["admin"])),
    responses(
        (status = 200, description = "The settings now in force", body = SettingsView,
            headers(("ETag" = String, description = "The new settings' version"))),
        (status = 400, description = "Not a JSON object, an unknown field, or an `If-Match` \
            that is not one entity tag (`invalid_if_match`)", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "This route needs a token of scope `admin` (`insufficient_scope`)", body = ErrorBody),
        (status = 412, description = "`If-Match` names another version: the settings changed \
            since they were read, and were left alone (`precondition_failed`)", body = ErrorBody),
        (status = 422, description = "A value is invalid; `field` names it", body = ErrorBody),
    )
)]
#[put("/v1/integration/settings")]
pub async fn put_settings(
    caller: Auth<Admin>,
    state: web::Data<AppState>,
    request: HttpRequest,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let precondition = if_match(&request)?;
    let settings = parse_settings(body.into_inner())?;
    let if_version = match precondition {
        IfMatch::Any => None,
        IfMatch::Version(version) => Some(version),
        IfMatch::Never => return Err(ApiError::PreconditionFailed),
    };
    let (integration, version) = integrations::replace_settings(
        state.store.pool(),
        caller.integration_id(),
        &settings,
        if_version,
    )
    .await?
    .ok_or(match if_version {
        Some(_) => ApiError::PreconditionFailed,
        // The token cascades with its integration: it is gone with it.
        None => ApiError::InvalidToken,
    })?;
    tracing::info!(
        integration.id = %integration.id,
        settings.version = version.get(),
        "Settings of integration {} replaced through the API",
        integration.id
    );
    Ok(with_etag(&integration, version))
}

/// A 200 with the settings and their version as `ETag`.
fn with_etag(integration: &Integration, version: SettingsVersion) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::ETAG, etag(version)))
        .json(SettingsView::of(integration))
}

/// The strong entity tag of a settings version: `"7"`.
pub fn etag(version: SettingsVersion) -> EntityTag {
    EntityTag::new_strong(version.get().to_string())
}

/// What an `If-Match` header asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IfMatch {
    /// No header, or `*`: replace whatever the version.
    Any,
    /// Replace only while the settings are at this version.
    Version(SettingsVersion),
    /// An entity tag no version of the settings ever has (weak, or not
    /// one of ours): it cannot match.
    Never,
}

/// Reads `If-Match`: absent or `*`, or exactly one entity tag.
fn if_match(request: &HttpRequest) -> Result<IfMatch, ApiError> {
    let invalid = || {
        ApiError::bad_request(
            "invalid_if_match",
            "`If-Match` takes `*` or one entity tag, the `ETag` of a `GET`, e.g. `\"7\"`",
        )
    };
    let mut values = request.headers().get_all(header::IF_MATCH);
    let Some(value) = values.next() else {
        return Ok(IfMatch::Any);
    };
    if values.next().is_some() {
        return Err(invalid());
    }
    let value = value.to_str().map_err(|_| invalid())?.trim();
    if value == "*" {
        return Ok(IfMatch::Any);
    }
    let tag: EntityTag = value.parse().map_err(|_| invalid())?;
    // RFC 9110 §13.1.1: If-Match compares strongly, so a weak tag never
    // matches.
    if tag.weak {
        return Ok(IfMatch::Never);
    }
    Ok(tag
        .tag()
        .parse::<i64>()
        .ok()
        .and_then(SettingsVersion::new)
        .map_or(IfMatch::Never, IfMatch::Version))
}

/// Reads a settings body; every error names its field.
pub fn parse_settings(body: Value) -> Result<IntegrationSettings, ApiError> {
    let defaults = IntegrationSettings::default();
    let mut object = Object::new(body)?;
    let directions = match object.take("directions") {
        None => defaults.directions,
        Some(value) => {
            let mut d = sub_object(value, "directions")?;
            let directions = Directions {
                inbound: d
                    .take_as("inbound", "directions.inbound")?
                    .unwrap_or(defaults.directions.inbound),
                outbound: d
                    .take_as("outbound", "directions.outbound")?
                    .unwrap_or(defaults.directions.outbound),
            };
            d.finish("directions")?;
            directions
        }
    };
    let conflict_policy = object
        .take_as("conflict_policy", "conflict_policy")?
        .unwrap_or(defaults.conflict_policy);
    let field_policies = per_field(&mut object, "field_policies", |path, v| {
        typed::<ConflictPolicy>(path, v)
    })?;
    let field_mapping = per_field(&mut object, "field_mapping", |path, v| {
        let property: String = typed(path, v)?;
        let valid = !property.is_empty()
            && property
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if valid {
            Ok(property)
        } else {
            Err(ApiError::invalid(
                path,
                "must be a HubSpot property name: lower-case letters, digits and `_`",
            ))
        }
    })?;
    let settings = IntegrationSettings {
        directions,
        conflict_policy,
        field_policies,
        field_mapping,
        empty_never_overwrites: object
            .take_as("empty_never_overwrites", "empty_never_overwrites")?
            .unwrap_or(defaults.empty_never_overwrites),
        deletion_mode: object
            .take_as::<DeletionMode>("deletion_mode", "deletion_mode")?
            .unwrap_or(defaults.deletion_mode),
        platform_deletion: object
            .take_as::<PlatformDeletion>("platform_deletion", "platform_deletion")?
            .unwrap_or(defaults.platform_deletion),
        webhooks_enabled: object
            .take_as("webhooks_enabled", "webhooks_enabled")?
            .unwrap_or(defaults.webhooks_enabled),
    };
    object.finish("")?;
    if let Err(err) = settings.mapping() {
        return Err(mapping_error(&settings, &err));
    }
    Ok(settings)
}

fn sub_object(value: Value, path: &str) -> Result<Object, ApiError> {
    match value {
        Value::Object(_) => Object::new(value),
        _ => Err(ApiError::invalid(path, "must be an object")),
    }
}

/// A `{lead field: value}` object of the body at `key`.
fn per_field<T>(
    object: &mut Object,
    key: &str,
    mut parse: impl FnMut(&str, Value) -> Result<T, ApiError>,
) -> Result<BTreeMap<LeadField, T>, ApiError> {
    let Some(value) = object.take(key) else {
        return Ok(BTreeMap::new());
    };
    let mut entries = sub_object(value, key)?;
    let mut out = BTreeMap::new();
    for (name, value) in entries.drain() {
        let path = join(key, &name);
        let field = LeadField::from_name(&name).ok_or_else(|| {
            let known: Vec<&str> = LeadField::ALL.iter().map(|f| f.name()).collect();
            ApiError::invalid(
                &path,
                format!(
                    "is not a synced lead field; expected one of {}",
                    known.join(", ")
                ),
            )
        })?;
        out.insert(field, parse(&path, value)?);
    }
    Ok(out)
}

/// Names the override that made the mapping invalid.
fn mapping_error(settings: &IntegrationSettings, err: &MappingError) -> ApiError {
    let (MappingError::Duplicate(name) | MappingError::InvalidProperty(name)) = err;
    // The culprit is an override: of this field, or one mapping to this property.
    let culprit = settings
        .field_mapping
        .iter()
        .find(|(field, property)| field.name() == name || *property == name)
        .map(|(field, _)| field.name());
    let path = culprit.map_or_else(|| "field_mapping".to_owned(), |f| join("field_mapping", f));
    let message = match err {
        MappingError::Duplicate(property) => format!(
            "maps to `{property}`, which another lead field already maps to; each HubSpot property \
             can take one field"
        ),
        MappingError::InvalidProperty(property) => {
            format!("`{property}` is not a valid HubSpot property name")
        }
    };
    ApiError::invalid(path, message)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn field_of(err: ApiError) -> String {
        match err {
            ApiError::Invalid { field, .. } => field,
            ApiError::BadRequest { field, .. } => field.unwrap_or_default(),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_full_body_reads_into_settings() {
        // Arrange
        let body = json!({
            "directions": {"inbound": true, "outbound": false},
            "conflict_policy": "last_write_wins",
            "field_policies": {"status": "platform_wins"},
            "field_mapping": {"phone": "mobilephone"},
            "empty_never_overwrites": true,
            "deletion_mode": "soft_delete",
            "platform_deletion": "archive",
            "webhooks_enabled": true,
        });

        // Act
        let settings = parse_settings(body).unwrap();

        // Assert
        assert!(!settings.directions.outbound && settings.directions.inbound);
        assert_eq!(settings.conflict_policy, ConflictPolicy::LastWriteWins);
        assert_eq!(
            settings.policy_for(LeadField::Status),
            ConflictPolicy::PlatformWins
        );
        assert_eq!(settings.field_mapping[&LeadField::Phone], "mobilephone");
        assert_eq!(settings.deletion_mode, DeletionMode::SoftDelete);
        assert_eq!(settings.platform_deletion, PlatformDeletion::Archive);
        assert_eq!(
            parse_settings(json!({})).unwrap(),
            IntegrationSettings::default()
        );
    }

    #[test]
    fn every_error_names_its_field() {
        let cases = [
            (
                json!({"conflict_policy": "loudest_wins"}),
                "conflict_policy",
            ),
            (
                json!({"directions": {"inbound": "yes"}}),
                "directions.inbound",
            ),
            (
                json!({"directions": {"sideways": true}}),
                "directions.sideways",
            ),
            (json!({"directions": 1}), "directions"),
            (json!({"platform_deletion": "shred"}), "platform_deletion"),
            (
                json!({"field_policies": {"fist_name": "platform_wins"}}),
                "field_policies.fist_name",
            ),
            (
                json!({"field_policies": {"status": "nope"}}),
                "field_policies.status",
            ),
            (
                json!({"field_mapping": {"phone": "Mobile Phone"}}),
                "field_mapping.phone",
            ),
            (
                json!({"field_mapping": {"phone": "email"}}),
                "field_mapping.phone",
            ),
            (json!({"deletion_mode": "shred"}), "deletion_mode"),
            (json!({"colour": "blue"}), "colour"),
        ];
        for (body, expected) in cases {
            let err = parse_settings(body.clone()).expect_err(&body.to_string());
            assert_eq!(field_of(err), expected, "{body}");
        }
    }
}
