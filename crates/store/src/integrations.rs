//! Integrations: one connected HubSpot account each, with its settings and
//! encrypted OAuth tokens.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
pub use leadsync_domain::ConflictPolicy;
use leadsync_domain::{AppId, FieldMapping, LeadField, MappingError, PortalId, SyncPolicy};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use sqlx::PgExecutor;
use sqlx::types::Json;
use uuid::Uuid;

use crate::crypto::TokenCipher;
use crate::text_enum::text_enum;
use crate::{StoreError, db_id, from_db_id};

text_enum! {
    /// How the integration authenticates to HubSpot.
    pub enum AuthMode {
        /// OAuth 2 app install: access token plus refresh token.
        OAuth => "oauth",
        /// A private-app access token (no refresh).
        PrivateApp => "private_app",
    }
}

/// What a `contact.deletion` in HubSpot does to the linked lead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeletionMode {
    /// Clear the link, keep the lead (the default).
    #[default]
    Unlink,
    /// Soft-delete the lead (it keeps its contact id for `contact.restore`).
    SoftDelete,
}

/// What deleting a lead on the platform does to its contact in HubSpot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlatformDeletion {
    /// The contact stays (the default): CRM records are deleted by people
    /// in HubSpot, not as a side effect of the platform.
    #[default]
    Keep,
    /// The contact is archived (HubSpot keeps it restorable for 90 days).
    Archive,
}

/// Sync directions switched on or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Directions {
    /// HubSpot → platform.
    pub inbound: bool,
    /// Platform → HubSpot.
    pub outbound: bool,
}

impl Default for Directions {
    fn default() -> Self {
        Self {
            inbound: true,
            outbound: true,
        }
    }
}

/// The per-integration settings, stored as `integrations.settings` (jsonb).
/// Missing keys take their defaults, so older rows stay readable.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct IntegrationSettings {
    /// Directions on/off.
    pub directions: Directions,
    /// The integration-wide conflict policy.
    pub conflict_policy: ConflictPolicy,
    /// Per-field overrides of [`conflict_policy`](Self::conflict_policy).
    pub field_policies: BTreeMap<LeadField, ConflictPolicy>,
    /// Lead field → HubSpot property name, overriding the default mapping.
    pub field_mapping: BTreeMap<LeadField, String>,
    /// When set, an empty value never overwrites a filled one, whichever
    /// side it comes from.
    pub empty_never_overwrites: bool,
    /// What `contact.deletion` does.
    pub deletion_mode: DeletionMode,
    /// What deleting a lead on the platform does to its contact.
    pub platform_deletion: PlatformDeletion,
    /// Whether webhook events are processed for this integration.
    pub webhooks_enabled: bool,
}

impl IntegrationSettings {
    /// The conflict policy for `field`: its override, else the default.
    pub fn policy_for(&self, field: LeadField) -> ConflictPolicy {
        self.field_policies
            .get(&field)
            .copied()
            .unwrap_or(self.conflict_policy)
    }

    /// The field mapping: the default one, with the property names these
    /// settings override.
    ///
    /// # Errors
    /// [`MappingError`] when the overrides make it invalid (e.g. two fields
    /// on one property).
    pub fn mapping(&self) -> Result<FieldMapping, MappingError> {
        FieldMapping::with_properties(&self.field_mapping)
    }

    /// The sync policy these settings describe: the conflict policy, its
    /// per-field overrides and the empty-value rule.
    pub fn sync_policy(&self) -> SyncPolicy {
        SyncPolicy {
            conflict: self.conflict_policy,
            per_field: self.field_policies.clone(),
            empty_never_overwrites: self.empty_never_overwrites,
        }
    }
}

/// A connected HubSpot account. Its tokens are read separately with
/// [`tokens`], so they are not carried around with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Integration {
    /// Primary key.
    pub id: Uuid,
    /// Unique name, the `{integration}` segment of the per-tenant webhook URL.
    pub name: String,
    /// The HubSpot account.
    pub portal_id: PortalId,
    /// The HubSpot app installed in it, if known.
    pub app_id: Option<AppId>,
    /// How it authenticates.
    pub auth_mode: AuthMode,
    /// When the access token expires (OAuth).
    pub token_expires_at: Option<DateTime<Utc>>,
    /// Settings.
    pub settings: IntegrationSettings,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct IntegrationRow {
    id: Uuid,
    name: String,
    portal_id: i64,
    app_id: Option<i64>,
    auth_mode: AuthMode,
    token_expires_at: Option<DateTime<Utc>>,
    settings: serde_json::Value,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<IntegrationRow> for Integration {
    type Error = StoreError;

    fn try_from(row: IntegrationRow) -> Result<Self, StoreError> {
        let settings = serde_json::from_value(row.settings)
            .map_err(|e| StoreError::Corrupt(format!("integration settings: {e}")))?;
        Ok(Self {
            id: row.id,
            name: row.name,
            portal_id: PortalId::new(from_db_id(row.portal_id)),
            app_id: row.app_id.map(|a| AppId::new(from_db_id(a))),
            auth_mode: row.auth_mode,
            token_expires_at: row.token_expires_at,
            settings,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

const COLUMNS: &str =
    "id, name, portal_id, app_id, auth_mode, token_expires_at, settings, created_at, updated_at";

/// The version of an integration's settings: 1 at creation, one more at
/// each replacement (and only then: a token refresh leaves it alone). The
/// REST API's ETag of the settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SettingsVersion(i64);

impl SettingsVersion {
    /// A version as a number, e.g. read back from an ETag; `None` unless
    /// positive.
    pub fn new(raw: i64) -> Option<Self> {
        (raw > 0).then_some(Self(raw))
    }

    /// The number.
    pub fn get(self) -> i64 {
        self.0
    }
}

#[derive(sqlx::FromRow)]
struct VersionedRow {
    #[sqlx(flatten)]
    row: IntegrationRow,
    settings_version: i64,
}

impl TryFrom<VersionedRow> for (Integration, SettingsVersion) {
    type Error = StoreError;

    fn try_from(versioned: VersionedRow) -> Result<Self, StoreError> {
        let version = SettingsVersion::new(versioned.settings_version).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "settings version {} is not positive",
                versioned.settings_version
            ))
        })?;
        Ok((versioned.row.try_into()?, version))
    }
}

/// What [`create`] needs.
#[derive(Debug, Clone)]
pub struct NewIntegration {
    /// Unique name: lowercase letters, digits, `-` and `_`, at most 63.
    pub name: String,
    /// The HubSpot account.
    pub portal_id: PortalId,
    /// The HubSpot app, if known.
    pub app_id: Option<AppId>,
    /// How it authenticates.
    pub auth_mode: AuthMode,
    /// Initial settings.
    pub settings: IntegrationSettings,
}

/// Plain OAuth / private-app tokens. `Debug` shows no secret.
#[derive(Debug, Clone)]
pub struct Tokens {
    /// The bearer token.
    pub access: SecretString,
    /// The OAuth refresh token (none for private apps).
    pub refresh: Option<SecretString>,
    /// When `access` expires.
    pub expires_at: Option<DateTime<Utc>>,
}

/// Creates an integration.
///
/// # Errors
/// [`StoreError::DuplicateIntegrationName`], [`StoreError::DuplicateIntegrationPortal`],
/// [`StoreError::Invalid`] for a malformed name.
pub async fn create(
    exec: impl PgExecutor<'_>,
    new: &NewIntegration,
) -> Result<Integration, StoreError> {
    let app_id = new.app_id.map(|a| db_id(a.get())).transpose()?;
    let row: IntegrationRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO integrations (name, portal_id, app_id, auth_mode, settings) \
         VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}"
    )))
    .bind(&new.name)
    .bind(db_id(new.portal_id.get())?)
    .bind(app_id)
    .bind(new.auth_mode)
    .bind(Json(&new.settings))
    .fetch_one(exec)
    .await?;
    row.try_into()
}

/// The integration with this id.
pub async fn get(exec: impl PgExecutor<'_>, id: Uuid) -> Result<Option<Integration>, StoreError> {
    let row: Option<IntegrationRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM integrations WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(exec)
    .await?;
    row.map(Integration::try_from).transpose()
}

/// The integration with this id and the version of its settings, read
/// together (the pair a client must send back to replace the settings).
pub async fn get_versioned(
    exec: impl PgExecutor<'_>,
    id: Uuid,
) -> Result<Option<(Integration, SettingsVersion)>, StoreError> {
    let row: Option<VersionedRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS}, settings_version FROM integrations WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(exec)
    .await?;
    row.map(TryInto::try_into).transpose()
}

/// The integration connected to this HubSpot portal (webhook routing).
pub async fn by_portal(
    exec: impl PgExecutor<'_>,
    portal: PortalId,
) -> Result<Option<Integration>, StoreError> {
    let row: Option<IntegrationRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM integrations WHERE portal_id = $1"
    )))
    .bind(db_id(portal.get())?)
    .fetch_optional(exec)
    .await?;
    row.map(Integration::try_from).transpose()
}

/// The integration with this name (the per-tenant webhook URL).
pub async fn by_name(
    exec: impl PgExecutor<'_>,
    name: &str,
) -> Result<Option<Integration>, StoreError> {
    let row: Option<IntegrationRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM integrations WHERE name = $1"
    )))
    .bind(name)
    .fetch_optional(exec)
    .await?;
    row.map(Integration::try_from).transpose()
}

/// Every integration, by name.
pub async fn list(exec: impl PgExecutor<'_>) -> Result<Vec<Integration>, StoreError> {
    let rows: Vec<IntegrationRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM integrations ORDER BY name"
    )))
    .fetch_all(exec)
    .await?;
    rows.into_iter().map(Integration::try_from).collect()
}

/// Replaces the settings of an integration, whatever their version; see
/// [`replace_settings`].
///
/// # Errors
/// [`StoreError::NotFound`] when there is no such integration.
pub async fn update_settings(
    exec: impl PgExecutor<'_>,
    id: Uuid,
    settings: &IntegrationSettings,
) -> Result<Integration, StoreError> {
    replace_settings(exec, id, settings, None)
        .await?
        .map(|(integration, _)| integration)
        .ok_or(StoreError::NotFound("integration"))
}

/// Replaces the settings of an integration and bumps their version; with
/// `if_version`, only while the settings are still at that version. Its
/// leads forget the merge base of every field the new settings map to
/// another HubSpot property.
///
/// The check and the write are one statement holding the integration's row
/// lock: of two replacements made from the same version, the second finds
/// the version moved and changes nothing (no lost update).
///
/// `None` when there is no such integration or, with `if_version`, when its
/// settings are at another version; nothing is changed then.
pub async fn replace_settings(
    exec: impl PgExecutor<'_>,
    id: Uuid,
    settings: &IntegrationSettings,
    if_version: Option<SettingsVersion>,
) -> Result<Option<(Integration, SettingsVersion)>, StoreError> {
    // A field mapped to another HubSpot property has no merge base any more:
    // the value both sides agreed on was the old property's. Keeping it would
    // make the new property's (often empty) value look like a HubSpot-only
    // change and erase the lead's value. Without a base, the lead's value
    // counts as the platform's and is pushed to the new property.
    //
    // `FOR UPDATE` makes a concurrent replacement wait, then re-reads the
    // row it committed: the version is checked, and the remapped fields are
    // computed, against the settings actually being replaced.
    let fields: Vec<&str> = LeadField::ALL.iter().map(|f| f.name()).collect();
    let row: Option<VersionedRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "WITH old AS ( \
             SELECT id, settings FROM integrations \
             WHERE id = $1 AND ($4::bigint IS NULL OR settings_version = $4) FOR UPDATE), \
         remapped AS ( \
             SELECT coalesce(array_agg(f), '{{}}') AS fields FROM old, unnest($3::text[]) AS f \
             WHERE old.settings -> 'field_mapping' ->> f \
                   IS DISTINCT FROM $2::jsonb -> 'field_mapping' ->> f), \
         forgotten AS ( \
             UPDATE leads SET synced_values = synced_values - (SELECT fields FROM remapped) \
             WHERE integration_id = $1 AND synced_values ?| (SELECT fields FROM remapped)) \
         UPDATE integrations i SET settings = $2, settings_version = i.settings_version + 1, \
             updated_at = now() \
         FROM old WHERE i.id = old.id RETURNING {cols}, i.settings_version",
        cols = qualified("i")
    )))
    .bind(id)
    .bind(Json(settings))
    .bind(&fields)
    .bind(if_version.map(SettingsVersion::get))
    .fetch_optional(exec)
    .await?;
    row.map(TryInto::try_into).transpose()
}

/// [`COLUMNS`], each prefixed with `alias.` (for a statement joining
/// another relation with columns of the same names).
fn qualified(alias: &str) -> String {
    COLUMNS
        .split(", ")
        .map(|c| format!("{alias}.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The associated data binding a token ciphertext to its row and column.
fn token_context(id: Uuid, column: &str) -> Vec<u8> {
    let mut ctx = id.as_bytes().to_vec();
    ctx.extend_from_slice(column.as_bytes());
    ctx
}

/// Encrypts and stores the tokens of an integration (after an OAuth code
/// exchange or refresh, or when a private-app token is set).
///
/// # Errors
/// [`StoreError::NotFound`] when there is no such integration.
pub async fn store_tokens(
    exec: impl PgExecutor<'_>,
    id: Uuid,
    cipher: &TokenCipher,
    tokens: &Tokens,
) -> Result<(), StoreError> {
    let access = cipher.encrypt(&tokens.access, &token_context(id, "access_token"))?;
    let refresh = tokens
        .refresh
        .as_ref()
        .map(|r| cipher.encrypt(r, &token_context(id, "refresh_token")))
        .transpose()?;
    let done = sqlx::query(
        "UPDATE integrations SET access_token_enc = $2, refresh_token_enc = $3, \
         token_expires_at = $4, updated_at = now() WHERE id = $1",
    )
    .bind(id)
    .bind(access)
    .bind(refresh)
    .bind(tokens.expires_at)
    .execute(exec)
    .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound("integration"));
    }
    Ok(())
}

/// Encrypted access token, encrypted refresh token, expiry.
type TokenRow = (Option<Vec<u8>>, Option<Vec<u8>>, Option<DateTime<Utc>>);

/// Reads and decrypts the tokens of an integration; `None` when none are
/// stored.
///
/// # Errors
/// [`StoreError::Crypto`] when the key is wrong or the data was altered.
pub async fn tokens(
    exec: impl PgExecutor<'_>,
    id: Uuid,
    cipher: &TokenCipher,
) -> Result<Option<Tokens>, StoreError> {
    let row: Option<TokenRow> = sqlx::query_as(
        "SELECT access_token_enc, refresh_token_enc, token_expires_at FROM integrations WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(exec)
    .await?;
    let Some((Some(access), refresh, expires_at)) = row else {
        return Ok(None);
    };
    Ok(Some(Tokens {
        access: cipher.decrypt(&access, &token_context(id, "access_token"))?,
        refresh: refresh
            .map(|r| cipher.decrypt(&r, &token_context(id, "refresh_token")))
            .transpose()?,
        expires_at,
    }))
}

/// Deletes an integration that has no leads left.
///
/// # Errors
/// [`StoreError::Invalid`] while leads still reference it.
pub async fn delete(exec: impl PgExecutor<'_>, id: Uuid) -> Result<bool, StoreError> {
    let done = sqlx::query("DELETE FROM integrations WHERE id = $1")
        .bind(id)
        .execute(exec)
        .await?;
    Ok(done.rows_affected() > 0)
}
