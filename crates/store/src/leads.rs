//! Leads: the platform's lead rows, their link to a HubSpot contact and the
//! sync metadata (seed plan's lead model and `crmMetadata`).
//!
//! Writes made inside [`Store::begin_inbound`](crate::Store::begin_inbound)
//! do not enter the outbox; every other write of a synced column does.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use leadsync_domain::{ContactId, LeadField, ValueHash};
use sha2::{Digest, Sha256};
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, Connection, PgConnection, PgExecutor, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::text_enum::text_enum;
use crate::{StoreError, db_id, from_db_id};

text_enum! {
    /// A text column of a lead; the stored text is the column name. The
    /// synced ones are [`LeadField`]s too (see [`LeadColumn::synced`]).
    pub enum LeadColumn {
        /// First name.
        FirstName => "first_name",
        /// Last name.
        LastName => "last_name",
        /// E-mail address (unique per integration, case-insensitively).
        Email => "email",
        /// Phone number.
        Phone => "phone",
        /// Company name.
        Company => "company",
        /// Job title.
        JobTitle => "job_title",
        /// City or region.
        Location => "location",
        /// Country.
        Country => "country",
        /// Where the lead came from (e.g. "HubSpot CRM").
        Source => "source",
        /// Platform the lead was found on.
        Platform => "platform",
        /// URL of the lead on that platform.
        PlatformUrl => "platform_url",
        /// Profile URL.
        ProfileUrl => "profile_url",
        /// Lead status (e.g. "new").
        Status => "status",
    }
}

impl LeadColumn {
    /// The columns synced with HubSpot: a change to one of them is an outbox
    /// row. The columns of [`LeadField::ALL`], in its order; mirrors the SQL
    /// function `leadsync_synced_lead_columns()`.
    pub const SYNCED: [Self; LeadField::ALL.len()] = {
        let mut out = [Self::FirstName; LeadField::ALL.len()];
        let mut i = 0;
        while i < out.len() {
            out[i] = Self::of_field(LeadField::ALL[i]);
            i += 1;
        }
        out
    };

    /// Fields a privacy deletion erases.
    pub const PERSONAL: [Self; 10] = [
        Self::FirstName,
        Self::LastName,
        Self::Email,
        Self::Phone,
        Self::Company,
        Self::JobTitle,
        Self::Location,
        Self::Country,
        Self::PlatformUrl,
        Self::ProfileUrl,
    ];

    /// The column name.
    pub const fn column(self) -> &'static str {
        self.as_str()
    }

    /// Whether changes of this column are synced to HubSpot.
    pub fn is_synced(self) -> bool {
        self.synced().is_some()
    }

    /// The synced field stored in this column; `None` for the platform-only
    /// columns (source, platform and the URLs).
    pub fn synced(self) -> Option<LeadField> {
        LeadField::ALL
            .into_iter()
            .find(|field| Self::of_field(*field) == self)
    }

    /// The column of a synced field; `const`, for [`LeadColumn::SYNCED`].
    const fn of_field(field: LeadField) -> Self {
        match field {
            LeadField::FirstName => Self::FirstName,
            LeadField::LastName => Self::LastName,
            LeadField::Email => Self::Email,
            LeadField::Phone => Self::Phone,
            LeadField::Company => Self::Company,
            LeadField::JobTitle => Self::JobTitle,
            LeadField::Location => Self::Location,
            LeadField::Country => Self::Country,
            LeadField::Status => Self::Status,
        }
    }
}

impl From<LeadField> for LeadColumn {
    fn from(field: LeadField) -> Self {
        Self::of_field(field)
    }
}

text_enum! {
    /// `crm_sync_status` of a lead.
    pub enum CrmSyncStatus {
        /// Never pushed to HubSpot.
        NotSynced => "not_synced",
        /// A push is under way.
        Pending => "pending",
        /// Both sides agree as of `crm_synced_at`.
        Synced => "synced",
        /// The last push failed (see the dead letters).
        Failed => "failed",
        /// The contact was deleted in HubSpot and the link cleared.
        Unlinked => "unlinked",
    }
}

text_enum! {
    /// Where a lead was first created (`crmMetadata.sourceSystem`).
    pub enum SourceSystem {
        /// Created on the platform.
        Platform => "platform",
        /// Created from a HubSpot contact.
        Hubspot => "hubspot",
        /// Bulk import.
        Import => "import",
        /// Entered by hand.
        Manual => "manual",
    }
}

text_enum! {
    /// Direction of the last sync of a lead.
    pub enum SyncDirection {
        /// Platform → HubSpot.
        ToCrm => "to_crm",
        /// HubSpot → platform.
        FromCrm => "from_crm",
    }
}

/// The text fields of a lead; `None` is "no value".
#[derive(Clone, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct LeadFields {
    /// First name.
    pub first_name: Option<String>,
    /// Last name.
    pub last_name: Option<String>,
    /// E-mail address.
    pub email: Option<String>,
    /// Phone number.
    pub phone: Option<String>,
    /// Company.
    pub company: Option<String>,
    /// Job title.
    pub job_title: Option<String>,
    /// City or region.
    pub location: Option<String>,
    /// Country.
    pub country: Option<String>,
    /// Source.
    pub source: Option<String>,
    /// Platform.
    pub platform: Option<String>,
    /// Platform URL.
    pub platform_url: Option<String>,
    /// Profile URL.
    pub profile_url: Option<String>,
    /// Status.
    pub status: Option<String>,
}

// Personal data: Debug says which fields are set, never their values.
impl std::fmt::Debug for LeadFields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set: Vec<&str> = LeadColumn::ALL
            .iter()
            .filter(|field| self.get(**field).is_some())
            .map(|field| field.as_str())
            .collect();
        f.debug_struct("LeadFields").field("set", &set).finish()
    }
}

impl LeadFields {
    /// The value of `field`.
    pub fn get(&self, field: LeadColumn) -> Option<&str> {
        self.slot(field).as_deref()
    }

    /// Sets `field`.
    pub fn set(&mut self, field: LeadColumn, value: Option<String>) {
        *self.slot_mut(field) = value;
    }

    fn slot(&self, field: LeadColumn) -> &Option<String> {
        match field {
            LeadColumn::FirstName => &self.first_name,
            LeadColumn::LastName => &self.last_name,
            LeadColumn::Email => &self.email,
            LeadColumn::Phone => &self.phone,
            LeadColumn::Company => &self.company,
            LeadColumn::JobTitle => &self.job_title,
            LeadColumn::Location => &self.location,
            LeadColumn::Country => &self.country,
            LeadColumn::Source => &self.source,
            LeadColumn::Platform => &self.platform,
            LeadColumn::PlatformUrl => &self.platform_url,
            LeadColumn::ProfileUrl => &self.profile_url,
            LeadColumn::Status => &self.status,
        }
    }

    fn slot_mut(&mut self, field: LeadColumn) -> &mut Option<String> {
        match field {
            LeadColumn::FirstName => &mut self.first_name,
            LeadColumn::LastName => &mut self.last_name,
            LeadColumn::Email => &mut self.email,
            LeadColumn::Phone => &mut self.phone,
            LeadColumn::Company => &mut self.company,
            LeadColumn::JobTitle => &mut self.job_title,
            LeadColumn::Location => &mut self.location,
            LeadColumn::Country => &mut self.country,
            LeadColumn::Source => &mut self.source,
            LeadColumn::Platform => &mut self.platform,
            LeadColumn::PlatformUrl => &mut self.platform_url,
            LeadColumn::ProfileUrl => &mut self.profile_url,
            LeadColumn::Status => &mut self.status,
        }
    }
}

/// Column → new value, for updates of selected columns.
pub type FieldValues = BTreeMap<LeadColumn, Option<String>>;

/// A lead row.
#[derive(Clone, PartialEq)]
pub struct Lead {
    /// Primary key.
    pub id: Uuid,
    /// The integration (tenant) it belongs to.
    pub integration_id: Uuid,
    /// Its text fields.
    pub fields: LeadFields,
    /// "first last", trimmed (generated by Postgres).
    pub full_name: String,
    /// The linked HubSpot contact.
    pub crm_id: Option<ContactId>,
    /// The contact a deletion in HubSpot unlinked the lead from (kept for
    /// a later privacy deletion or restore of that contact).
    pub unlinked_crm_id: Option<ContactId>,
    /// Sync state.
    pub crm_sync_status: CrmSyncStatus,
    /// When both sides last agreed.
    pub crm_synced_at: Option<DateTime<Utc>>,
    /// Where the lead was first created.
    pub source_system: SourceSystem,
    /// Direction of the last sync.
    pub last_sync_direction: Option<SyncDirection>,
    /// Incremented by every sync.
    pub sync_version: i32,
    /// HubSpot's `lastmodifieddate` as of the last inbound sync.
    pub last_modified_in_crm: Option<DateTime<Utc>>,
    /// Field → when the platform last changed it.
    pub field_updated_at: BTreeMap<LeadField, DateTime<Utc>>,
    /// Field → hash of the value both sides last agreed on (merge base).
    pub synced_values: BTreeMap<LeadField, ValueHash>,
    /// Soft-deletion time.
    pub deleted_at: Option<DateTime<Utc>>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

// Personal data stays out of logs: no field values here.
impl std::fmt::Debug for Lead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lead")
            .field("id", &self.id)
            .field("integration_id", &self.integration_id)
            .field("crm_id", &self.crm_id)
            .field("crm_sync_status", &self.crm_sync_status)
            .field("sync_version", &self.sync_version)
            .field("deleted_at", &self.deleted_at)
            .field("fields", &self.fields)
            .finish_non_exhaustive()
    }
}

#[derive(sqlx::FromRow)]
struct LeadRow {
    id: Uuid,
    integration_id: Uuid,
    #[sqlx(flatten)]
    fields: LeadFields,
    full_name: String,
    crm_id: Option<i64>,
    unlinked_crm_id: Option<i64>,
    crm_sync_status: CrmSyncStatus,
    crm_synced_at: Option<DateTime<Utc>>,
    source_system: SourceSystem,
    last_sync_direction: Option<SyncDirection>,
    sync_version: i32,
    last_modified_in_crm: Option<DateTime<Utc>>,
    field_updated_at: Json<BTreeMap<LeadField, DateTime<Utc>>>,
    synced_values: Json<BTreeMap<LeadField, ValueHash>>,
    deleted_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<LeadRow> for Lead {
    fn from(row: LeadRow) -> Self {
        Self {
            id: row.id,
            integration_id: row.integration_id,
            fields: row.fields,
            full_name: row.full_name,
            crm_id: row.crm_id.map(|c| ContactId::new(from_db_id(c))),
            unlinked_crm_id: row.unlinked_crm_id.map(|c| ContactId::new(from_db_id(c))),
            crm_sync_status: row.crm_sync_status,
            crm_synced_at: row.crm_synced_at,
            source_system: row.source_system,
            last_sync_direction: row.last_sync_direction,
            sync_version: row.sync_version,
            last_modified_in_crm: row.last_modified_in_crm,
            field_updated_at: row.field_updated_at.0,
            synced_values: row.synced_values.0,
            deleted_at: row.deleted_at,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// The columns read into a [`Lead`].
const COLUMNS: &str = "id, integration_id, first_name, last_name, email, phone, company, \
    job_title, location, country, source, platform, platform_url, profile_url, status, \
    full_name, crm_id, unlinked_crm_id, crm_sync_status, crm_synced_at, source_system, last_sync_direction, \
    sync_version, last_modified_in_crm, field_updated_at, synced_values, deleted_at, \
    created_at, updated_at";

/// The `SET` list of all text fields from `$first..` in `LeadColumn::ALL` order.
fn field_columns() -> String {
    LeadColumn::ALL
        .iter()
        .map(|f| f.column())
        .collect::<Vec<_>>()
        .join(", ")
}

fn contact_db(contact: ContactId) -> Result<i64, StoreError> {
    db_id(contact.get())
}

/// SHA-256 of the integration id and the trimmed, lowercased address: what a
/// tombstone keeps instead of the address. The integration id keeps one
/// tenant's hashes useless for another's.
pub fn email_hash(integration_id: Uuid, email: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(integration_id.as_bytes());
    hasher.update(email.trim().to_lowercase().as_bytes());
    hasher.finalize().into()
}

fn usable_email(email: Option<&str>) -> Option<&str> {
    email.map(str::trim).filter(|e| !e.is_empty())
}

// ---------------------------------------------------------------------------
// Reads
// ---------------------------------------------------------------------------

/// The lead with this id (soft-deleted ones included).
pub async fn by_id(
    exec: impl PgExecutor<'_>,
    integration_id: Uuid,
    id: Uuid,
) -> Result<Option<Lead>, StoreError> {
    fetch_one(exec, integration_id, "id = $2", id).await
}

/// The lead linked to this contact (soft-deleted ones included).
pub async fn by_crm_id(
    exec: impl PgExecutor<'_>,
    integration_id: Uuid,
    crm_id: ContactId,
) -> Result<Option<Lead>, StoreError> {
    fetch_one(exec, integration_id, "crm_id = $2", contact_db(crm_id)?).await
}

/// The live lead with this address, compared case-insensitively.
pub async fn by_email(
    exec: impl PgExecutor<'_>,
    integration_id: Uuid,
    email: &str,
) -> Result<Option<Lead>, StoreError> {
    let Some(email) = usable_email(Some(email)) else {
        return Ok(None);
    };
    fetch_one(
        exec,
        integration_id,
        "lower(email) = lower($2) AND email <> '' AND deleted_at IS NULL",
        email,
    )
    .await
}

/// The one lead of the integration matching the fixed condition `filter`,
/// whose only parameter `$2` is `key`.
async fn fetch_one<'k, K>(
    exec: impl PgExecutor<'_>,
    integration_id: Uuid,
    filter: &'static str,
    key: K,
) -> Result<Option<Lead>, StoreError>
where
    K: 'k + Send + sqlx::Encode<'k, Postgres> + sqlx::Type<Postgres>,
{
    let row: Option<LeadRow> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM leads WHERE integration_id = $1 AND {filter}"
    )))
    .bind(integration_id)
    .bind(key)
    .fetch_optional(exec)
    .await?;
    Ok(row.map(Lead::from))
}

/// The leads linked to any of these contacts, in one query (a batch read of
/// up to 100 contacts maps to one call).
pub async fn by_crm_ids(
    exec: impl PgExecutor<'_>,
    integration_id: Uuid,
    crm_ids: &[ContactId],
) -> Result<Vec<Lead>, StoreError> {
    fetch_by_crm_ids(exec, integration_id, crm_ids, "").await
}

/// As [`by_crm_ids`], locking the rows until the transaction ends (in id
/// order, so concurrent batches cannot deadlock).
pub async fn by_crm_ids_for_update(
    conn: &mut PgConnection,
    integration_id: Uuid,
    crm_ids: &[ContactId],
) -> Result<Vec<Lead>, StoreError> {
    fetch_by_crm_ids(conn, integration_id, crm_ids, " FOR UPDATE").await
}

async fn fetch_by_crm_ids(
    exec: impl PgExecutor<'_>,
    integration_id: Uuid,
    crm_ids: &[ContactId],
    lock: &'static str,
) -> Result<Vec<Lead>, StoreError> {
    if crm_ids.is_empty() {
        return Ok(Vec::new());
    }
    let ids = crm_ids
        .iter()
        .map(|c| contact_db(*c))
        .collect::<Result<Vec<_>, _>>()?;
    let rows: Vec<LeadRow> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM leads WHERE integration_id = $1 AND crm_id = ANY($2) ORDER BY id{lock}"
    )))
    .bind(integration_id)
    .bind(ids)
    .fetch_all(exec)
    .await?;
    Ok(rows.into_iter().map(Lead::from).collect())
}

/// The leads with these ids (soft-deleted ones included), in one query: an
/// outbound batch reads every lead it pushes at once.
pub async fn by_ids(
    exec: impl PgExecutor<'_>,
    integration_id: Uuid,
    ids: &[Uuid],
) -> Result<Vec<Lead>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<LeadRow> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM leads WHERE integration_id = $1 AND id = ANY($2) ORDER BY id"
    )))
    .bind(integration_id)
    .bind(ids)
    .fetch_all(exec)
    .await?;
    Ok(rows.into_iter().map(Lead::from).collect())
}

/// Which of these addresses a privacy deletion tombstoned, in one query; the
/// addresses are returned as given.
pub async fn tombstoned_emails<'e>(
    exec: impl PgExecutor<'_>,
    integration_id: Uuid,
    emails: &[&'e str],
) -> Result<Vec<&'e str>, StoreError> {
    let usable: Vec<&'e str> = emails
        .iter()
        .copied()
        .filter(|e| usable_email(Some(e)).is_some())
        .collect();
    if usable.is_empty() {
        return Ok(Vec::new());
    }
    let hashes: Vec<Vec<u8>> = usable
        .iter()
        .map(|e| email_hash(integration_id, e).to_vec())
        .collect();
    let found: Vec<Vec<u8>> = sqlx::query_scalar(
        "SELECT email_hash FROM lead_tombstones WHERE integration_id = $1 AND email_hash = ANY($2)",
    )
    .bind(integration_id)
    .bind(&hashes)
    .fetch_all(exec)
    .await?;
    Ok(usable
        .into_iter()
        .zip(hashes)
        .filter(|(_, hash)| found.contains(hash))
        .map(|(email, _)| email)
        .collect())
}

/// A page position for [`list`]: the last lead of the previous page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListCursor {
    /// `created_at` of the last lead seen.
    pub created_at: DateTime<Utc>,
    /// `id` of the last lead seen.
    pub id: Uuid,
}

impl From<&Lead> for ListCursor {
    fn from(lead: &Lead) -> Self {
        Self {
            created_at: lead.created_at,
            id: lead.id,
        }
    }
}

/// Parameters of [`list`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListLeads {
    /// Start after this lead (keyset pagination).
    pub after: Option<ListCursor>,
    /// Page size, clamped to 1..=1000.
    pub limit: i64,
    /// Include soft-deleted leads.
    pub include_deleted: bool,
}

impl Default for ListLeads {
    fn default() -> Self {
        Self {
            after: None,
            limit: 100,
            include_deleted: false,
        }
    }
}

/// A page of an integration's leads, oldest first.
pub async fn list(
    exec: impl PgExecutor<'_>,
    integration_id: Uuid,
    params: &ListLeads,
) -> Result<Vec<Lead>, StoreError> {
    let rows: Vec<LeadRow> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM leads WHERE integration_id = $1 \
         AND ($2::timestamptz IS NULL OR (created_at, id) > ($2, $3)) \
         AND ($4 OR deleted_at IS NULL) \
         ORDER BY created_at, id LIMIT $5"
    )))
    .bind(integration_id)
    .bind(params.after.map(|c| c.created_at))
    .bind(params.after.map(|c| c.id))
    .bind(params.include_deleted)
    .bind(params.limit.clamp(1, 1000))
    .fetch_all(exec)
    .await?;
    Ok(rows.into_iter().map(Lead::from).collect())
}

// ---------------------------------------------------------------------------
// Platform-side writes (the REST API): these enter the outbox.
// ---------------------------------------------------------------------------

/// A lead created on the platform.
#[derive(Debug, Clone, Default)]
pub struct NewLead {
    /// Its fields; a missing status becomes `new`.
    pub fields: LeadFields,
    /// Where it comes from (platform, import, manual).
    pub source_system: Option<SourceSystem>,
}

/// Creates a lead.
///
/// # Errors
/// [`StoreError::DuplicateEmail`] when a live lead has the address.
pub async fn create(
    exec: impl PgExecutor<'_>,
    integration_id: Uuid,
    new: &NewLead,
) -> Result<Lead, StoreError> {
    let n = LeadColumn::ALL.len();
    let values: Vec<String> = (2..n + 2).map(|i| format!("${i}")).collect();
    let mut query = sqlx::query_as::<_, LeadRow>(AssertSqlSafe(
        format!(
            "INSERT INTO leads (integration_id, {fields}, source_system) \
         VALUES ($1, {values}, $last) RETURNING {COLUMNS}",
            fields = field_columns(),
            values = values.join(", "),
        )
        .replace("$last", &format!("${}", n + 2)),
    ))
    .bind(integration_id);
    for field in LeadColumn::ALL {
        let value = match field {
            LeadColumn::Status => Some(new.fields.get(*field).unwrap_or("new")),
            _ => new.fields.get(*field),
        };
        query = query.bind(value);
    }
    let row = query
        .bind(new.source_system.unwrap_or(SourceSystem::Platform))
        .fetch_one(exec)
        .await?;
    Ok(row.into())
}

/// Sets selected fields of a live lead; `None` when there is none.
///
/// # Errors
/// [`StoreError::DuplicateEmail`] when another live lead has the new address.
pub async fn update(
    exec: impl PgExecutor<'_>,
    integration_id: Uuid,
    id: Uuid,
    values: &FieldValues,
) -> Result<Option<Lead>, StoreError> {
    let mut qb = QueryBuilder::new("UPDATE leads SET ");
    let mut set = qb.separated(", ");
    // An empty patch still returns the row (updated_at untouched).
    set.push("id = id");
    for (field, value) in values {
        set.push(format!("{} = ", field.column()));
        set.push_bind_unseparated(value.clone());
    }
    qb.push(" WHERE integration_id = ")
        .push_bind(integration_id)
        .push(" AND id = ")
        .push_bind(id)
        .push(" AND deleted_at IS NULL RETURNING ")
        .push(COLUMNS);
    let row: Option<LeadRow> = qb.build_query_as().fetch_optional(exec).await?;
    Ok(row.map(Lead::from))
}

/// Soft-deletes a live lead; false when there is none. From a platform
/// transaction this is an outbox `delete`.
pub async fn delete(
    exec: impl PgExecutor<'_>,
    integration_id: Uuid,
    id: Uuid,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE leads SET deleted_at = now() \
         WHERE integration_id = $1 AND id = $2 AND deleted_at IS NULL",
    )
    .bind(integration_id)
    .bind(id)
    .execute(exec)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Sets the sync status of leads (outbound: `pending` before a push,
/// `failed` after a permanent failure).
pub async fn set_sync_status(
    exec: impl PgExecutor<'_>,
    integration_id: Uuid,
    ids: &[Uuid],
    status: CrmSyncStatus,
) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "UPDATE leads SET crm_sync_status = $3 WHERE integration_id = $1 AND id = ANY($2)",
    )
    .bind(integration_id)
    .bind(ids)
    .bind(status)
    .execute(exec)
    .await?;
    Ok(done.rows_affected())
}

// ---------------------------------------------------------------------------
// Sync writes (inbound worker inside begin_inbound(); outbound bookkeeping)
// ---------------------------------------------------------------------------

/// A contact to create a lead from, or link to an existing lead.
#[derive(Debug, Clone)]
pub struct InboundLead {
    /// The HubSpot contact.
    pub crm_id: ContactId,
    /// The mapped fields.
    pub fields: LeadFields,
    /// Hashes of the values both sides now agree on (for a created lead:
    /// every mapped synced field).
    pub synced_values: BTreeMap<LeadField, ValueHash>,
    /// HubSpot's `lastmodifieddate`.
    pub last_modified_in_crm: Option<DateTime<Utc>>,
}

/// What [`insert_or_link`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum LinkOutcome {
    /// A new lead was created from the contact.
    Created(Lead),
    /// An unlinked live lead with the contact's address now links to it; its
    /// fields are untouched (merging them is the caller's decision).
    Linked(Lead),
    /// A lead was already linked to this contact; nothing was written.
    AlreadyLinked(Lead),
    /// The live lead with this address is linked to another contact; nothing
    /// was written.
    EmailLinkedElsewhere(Lead),
    /// A privacy deletion forbids re-creating this contact or address.
    Tombstoned,
}

/// Creates a lead from a HubSpot contact, or links the existing lead with
/// its address; never creates a second lead for one contact or address, even
/// when concurrent workers race (the unique indexes arbitrate).
///
/// Runs several statements: call it inside a transaction.
pub async fn insert_or_link(
    conn: &mut PgConnection,
    integration_id: Uuid,
    contact: &InboundLead,
) -> Result<LinkOutcome, StoreError> {
    let email = usable_email(contact.fields.email.as_deref());
    if is_tombstoned(&mut *conn, integration_id, Some(contact.crm_id), email).await? {
        return Ok(LinkOutcome::Tombstoned);
    }
    let crm_id = contact_db(contact.crm_id)?;
    // A concurrent transaction can make each step's premise false; a few
    // rounds always settle because every step waits on the other's commit.
    for _ in 0..4 {
        if let Some(lead) = try_insert(&mut *conn, integration_id, crm_id, contact).await? {
            return Ok(LinkOutcome::Created(lead));
        }
        if let Some(lead) = by_crm_id(&mut *conn, integration_id, contact.crm_id).await? {
            return Ok(LinkOutcome::AlreadyLinked(lead));
        }
        let Some(email) = email else { continue };
        // A savepoint: losing a race on the crm_id index must not abort the
        // caller's transaction.
        let mut sp = conn.begin().await?;
        let linked = sqlx::query_as::<_, LeadRow>(AssertSqlSafe(format!(
            "UPDATE leads SET crm_id = $3, crm_sync_status = 'synced', crm_synced_at = now(), \
             last_modified_in_crm = coalesce($4, last_modified_in_crm) \
             WHERE integration_id = $1 AND lower(email) = lower($2) AND email <> '' \
             AND deleted_at IS NULL AND crm_id IS NULL RETURNING {COLUMNS}"
        )))
        .bind(integration_id)
        .bind(email)
        .bind(crm_id)
        .bind(contact.last_modified_in_crm)
        .fetch_optional(&mut *sp)
        .await;
        match linked {
            Ok(Some(row)) => {
                sp.commit().await?;
                return Ok(LinkOutcome::Linked(row.into()));
            }
            Ok(None) => sp.commit().await?,
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                sp.rollback().await?;
                continue;
            }
            Err(err) => return Err(err.into()),
        }
        if let Some(lead) = by_email(&mut *conn, integration_id, email).await? {
            return Ok(LinkOutcome::EmailLinkedElsewhere(lead));
        }
    }
    Err(StoreError::Invalid(
        "insert_or_link did not settle under concurrent changes".into(),
    ))
}

async fn try_insert(
    conn: &mut PgConnection,
    integration_id: Uuid,
    crm_id: i64,
    contact: &InboundLead,
) -> Result<Option<Lead>, StoreError> {
    let n = LeadColumn::ALL.len();
    let values: Vec<String> = (2..n + 2).map(|i| format!("${i}")).collect();
    let (p_crm, p_mod, p_hashes) = (n + 2, n + 3, n + 4);
    let mut query = sqlx::query_as::<_, LeadRow>(AssertSqlSafe(format!(
        "INSERT INTO leads (integration_id, {fields}, crm_id, crm_sync_status, crm_synced_at, \
         source_system, last_sync_direction, last_modified_in_crm, synced_values) \
         VALUES ($1, {values}, ${p_crm}, 'synced', now(), 'hubspot', 'from_crm', ${p_mod}, ${p_hashes}) \
         ON CONFLICT DO NOTHING RETURNING {COLUMNS}",
        fields = field_columns(),
        values = values.join(", "),
    )))
    .bind(integration_id);
    for field in LeadColumn::ALL {
        query = query.bind(contact.fields.get(*field));
    }
    let row = query
        .bind(crm_id)
        .bind(contact.last_modified_in_crm)
        .bind(Json(&contact.synced_values))
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.map(Lead::from))
}

/// A sync applied to a lead: new field values, the new merge base, and the
/// sync metadata.
#[derive(Debug, Clone)]
pub struct SyncUpdate {
    /// Which way this sync went.
    pub direction: SyncDirection,
    /// Fields to set (inbound); empty for outbound bookkeeping.
    pub values: FieldValues,
    /// Hashes of the values both sides now agree on; merged into
    /// `synced_values`.
    pub synced_values: BTreeMap<LeadField, ValueHash>,
    /// HubSpot's `lastmodifieddate`, when known.
    pub last_modified_in_crm: Option<DateTime<Utc>>,
    /// Link to this contact (an outbound create learns the id).
    pub link_crm_id: Option<ContactId>,
}

/// Applies a sync to a lead: sets the fields, merges the hashes, bumps
/// `sync_version`, records the direction and marks it synced. `None` when
/// there is no such lead.
///
/// # Errors
/// [`StoreError::DuplicateEmail`] / [`StoreError::DuplicateCrmId`] when the
/// new address or link belongs to another lead.
pub async fn apply_sync(
    exec: impl PgExecutor<'_>,
    integration_id: Uuid,
    id: Uuid,
    update: &SyncUpdate,
) -> Result<Option<Lead>, StoreError> {
    let mut qb = QueryBuilder::new("UPDATE leads SET ");
    let mut set = qb.separated(", ");
    for (field, value) in &update.values {
        set.push(format!("{} = ", field.column()));
        set.push_bind_unseparated(value.clone());
    }
    set.push("synced_values = synced_values || ");
    set.push_bind_unseparated(Json(update.synced_values.clone()));
    set.push("last_modified_in_crm = coalesce(");
    set.push_bind_unseparated(update.last_modified_in_crm);
    set.push_unseparated(", last_modified_in_crm)");
    set.push("sync_version = sync_version + 1");
    set.push("last_sync_direction = ");
    set.push_bind_unseparated(update.direction);
    set.push("crm_sync_status = 'synced'");
    set.push("crm_synced_at = now()");
    if let Some(crm_id) = update.link_crm_id {
        set.push("crm_id = ");
        set.push_bind_unseparated(contact_db(crm_id)?);
    }
    qb.push(" WHERE integration_id = ")
        .push_bind(integration_id)
        .push(" AND id = ")
        .push_bind(id)
        .push(" RETURNING ")
        .push(COLUMNS);
    let row: Option<LeadRow> = qb.build_query_as().fetch_optional(exec).await?;
    Ok(row.map(Lead::from))
}

/// `contact.deletion` in unlink mode: clears the link and the merge base;
/// the lead stays, remembering the contact as `unlinked_crm_id` for a later
/// privacy deletion. `None` when no lead is linked to the contact.
pub async fn unlink(
    exec: impl PgExecutor<'_>,
    integration_id: Uuid,
    crm_id: ContactId,
) -> Result<Option<Lead>, StoreError> {
    update_by_crm_id(
        exec,
        integration_id,
        crm_id,
        // The contact id is kept aside: a privacy deletion of that contact
        // may still arrive and must find this lead (see `erase`).
        "unlinked_crm_id = crm_id, crm_id = NULL, crm_sync_status = 'unlinked', \
         synced_values = '{}'",
    )
    .await
}

/// `contact.deletion` in soft-delete mode: the linked lead is soft-deleted
/// and keeps its contact id, so `contact.restore` finds it again.
pub async fn soft_delete_by_crm_id(
    exec: impl PgExecutor<'_>,
    integration_id: Uuid,
    crm_id: ContactId,
) -> Result<Option<Lead>, StoreError> {
    update_by_crm_id(
        exec,
        integration_id,
        crm_id,
        "deleted_at = coalesce(deleted_at, now())",
    )
    .await
}

/// `contact.restore`: undoes a soft delete of the linked lead.
///
/// # Errors
/// [`StoreError::DuplicateEmail`] when a live lead took the address meanwhile.
pub async fn restore_by_crm_id(
    exec: impl PgExecutor<'_>,
    integration_id: Uuid,
    crm_id: ContactId,
) -> Result<Option<Lead>, StoreError> {
    update_by_crm_id(exec, integration_id, crm_id, "deleted_at = NULL").await
}

/// Applies the fixed `SET` list `set` to the lead linked to `crm_id` and
/// returns it as updated; `None` when no lead is linked to the contact.
async fn update_by_crm_id(
    exec: impl PgExecutor<'_>,
    integration_id: Uuid,
    crm_id: ContactId,
    set: &'static str,
) -> Result<Option<Lead>, StoreError> {
    let row: Option<LeadRow> = sqlx::query_as(AssertSqlSafe(format!(
        "UPDATE leads SET {set} WHERE integration_id = $1 AND crm_id = $2 RETURNING {COLUMNS}"
    )))
    .bind(integration_id)
    .bind(contact_db(crm_id)?)
    .fetch_optional(exec)
    .await?;
    Ok(row.map(Lead::from))
}

/// What [`erase`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Erasure {
    /// The lead whose personal data was erased, if one was found.
    pub lead_id: Option<Uuid>,
}

/// `contact.privacyDeletion`: erases the personal fields of the lead linked
/// to the contact (or unlinked from it, or live with the address), soft-deletes and unlinks it,
/// redacts its audit trail, forgets the contact's echo-ledger entries, and
/// leaves tombstones for the contact id and the address hash that block
/// re-creation. Idempotent.
///
/// Runs several statements: call it inside a transaction.
pub async fn erase(
    conn: &mut PgConnection,
    integration_id: Uuid,
    crm_id: Option<ContactId>,
    email: Option<&str>,
) -> Result<Erasure, StoreError> {
    let mut lead = match crm_id {
        Some(c) => match by_crm_id(&mut *conn, integration_id, c).await? {
            Some(lead) => Some(lead),
            // Unlinked by an earlier `contact.deletion`.
            None => {
                fetch_one(
                    &mut *conn,
                    integration_id,
                    "unlinked_crm_id = $2 ORDER BY updated_at DESC LIMIT 1",
                    contact_db(c)?,
                )
                .await?
            }
        },
        None => None,
    };
    if lead.is_none()
        && let Some(e) = usable_email(email)
    {
        lead = by_email(&mut *conn, integration_id, e).await?;
    }
    let crm_id = crm_id.or_else(|| lead.as_ref().and_then(|l| l.crm_id));
    let address = usable_email(email)
        .map(str::to_owned)
        .or_else(|| lead.as_ref().and_then(|l| l.fields.email.clone()));

    if let Some(lead) = &lead {
        let personal = LeadColumn::PERSONAL
            .iter()
            .map(|f| format!("{} = NULL", f.column()))
            .collect::<Vec<_>>()
            .join(", ");
        sqlx::query(AssertSqlSafe(format!(
            "UPDATE leads SET {personal}, crm_id = NULL, crm_sync_status = 'unlinked', \
             field_updated_at = '{{}}', synced_values = '{{}}', \
             deleted_at = coalesce(deleted_at, now()) WHERE id = $1"
        )))
        .bind(lead.id)
        .execute(&mut *conn)
        .await?;
        // The audit trail keeps which fields changed, never their values.
        sqlx::query(
            "UPDATE audit_log SET changes = (SELECT jsonb_object_agg(k, '{\"redacted\": true}'::jsonb) \
             FROM jsonb_object_keys(changes) AS k) \
             WHERE lead_id = $1 AND changes IS NOT NULL AND jsonb_typeof(changes) = 'object'",
        )
        .bind(lead.id)
        .execute(&mut *conn)
        .await?;
    }
    if let Some(crm_id) = crm_id {
        sqlx::query(
            "DELETE FROM echo_ledger e USING integrations i \
             WHERE i.id = $1 AND e.portal_id = i.portal_id AND e.contact_id = $2",
        )
        .bind(integration_id)
        .bind(contact_db(crm_id)?)
        .execute(&mut *conn)
        .await?;
    }
    // One tombstone per identity, so each is blocked even when the other was
    // tombstoned alone before.
    let hash = address
        .as_deref()
        .map(|a| email_hash(integration_id, a).to_vec());
    let crm = crm_id.map(contact_db).transpose()?;
    sqlx::query(
        "INSERT INTO lead_tombstones (integration_id, crm_id, email_hash) \
         SELECT $1, c, h FROM (VALUES ($2::bigint, NULL::bytea), (NULL::bigint, $3::bytea)) AS t(c, h) \
         WHERE c IS NOT NULL OR h IS NOT NULL \
         ON CONFLICT DO NOTHING",
    )
    .bind(integration_id)
    .bind(crm)
    .bind(hash)
    .execute(&mut *conn)
    .await?;
    Ok(Erasure {
        lead_id: lead.map(|l| l.id),
    })
}

/// Whether a privacy deletion tombstoned this contact or address.
pub async fn is_tombstoned(
    exec: impl PgExecutor<'_>,
    integration_id: Uuid,
    crm_id: Option<ContactId>,
    email: Option<&str>,
) -> Result<bool, StoreError> {
    let crm = crm_id.map(contact_db).transpose()?;
    let hash = usable_email(email).map(|e| email_hash(integration_id, e).to_vec());
    if crm.is_none() && hash.is_none() {
        return Ok(false);
    }
    let found: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM lead_tombstones WHERE integration_id = $1 \
         AND (crm_id = $2 OR email_hash = $3))",
    )
    .bind(integration_id)
    .bind(crm)
    .bind(hash)
    .fetch_one(exec)
    .await?;
    Ok(found)
}

/// What [`repoint_merged`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MergeOutcome {
    /// The lead now linked to the primary contact, if any.
    pub kept: Option<Uuid>,
    /// Whether `kept` was moved to the primary by this call (`false`: it
    /// was linked to the primary already, e.g. by an earlier merge).
    pub repointed: bool,
    /// Leads of merged contacts that could not take the primary's id (one
    /// lead per contact) and were unlinked.
    pub unlinked: Vec<Uuid>,
}

/// `contact.merge`: the leads of the merged contacts move to the primary
/// contact. A lead already linked to the primary stays; otherwise the oldest
/// lead of the merged contacts takes the primary's id; the rest are unlinked.
///
/// Runs several statements: call it inside a transaction.
pub async fn repoint_merged(
    conn: &mut PgConnection,
    integration_id: Uuid,
    merged: &[ContactId],
    primary: ContactId,
) -> Result<MergeOutcome, StoreError> {
    let mut all: Vec<ContactId> = merged.to_vec();
    all.push(primary);
    let mut leads = by_crm_ids_for_update(&mut *conn, integration_id, &all).await?;
    if leads.is_empty() {
        return Ok(MergeOutcome::default());
    }
    leads.sort_by_key(|l| (l.crm_id != Some(primary), l.created_at, l.id));
    let keeper = leads.remove(0);
    let mut outcome = MergeOutcome {
        kept: Some(keeper.id),
        repointed: keeper.crm_id != Some(primary),
        unlinked: Vec::new(),
    };
    let others: Vec<Uuid> = leads.iter().map(|l| l.id).collect();
    if !others.is_empty() {
        sqlx::query(
            "UPDATE leads SET crm_id = NULL, crm_sync_status = 'unlinked', synced_values = '{}' \
             WHERE id = ANY($1)",
        )
        .bind(&others)
        .execute(&mut *conn)
        .await?;
        outcome.unlinked = others;
    }
    if outcome.repointed {
        // The primary's id is free now; the merge base no longer applies to
        // the surviving contact's values.
        sqlx::query("UPDATE leads SET crm_id = $2, synced_values = '{}' WHERE id = $1")
            .bind(keeper.id)
            .bind(contact_db(primary)?)
            .execute(&mut *conn)
            .await?;
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synced_columns_are_exactly_the_domain_fields() {
        // Arrange
        let from_domain: Vec<LeadColumn> = LeadField::ALL.into_iter().map(Into::into).collect();

        // Act
        let synced: Vec<LeadField> = LeadColumn::ALL.iter().filter_map(|c| c.synced()).collect();

        // Assert
        assert_eq!(from_domain, LeadColumn::SYNCED);
        assert_eq!(synced, LeadField::ALL);
        for field in LeadField::ALL {
            let column = LeadColumn::from(field);
            assert_eq!(column.column(), field.name());
            assert_eq!(column.synced(), Some(field));
            assert!(column.is_synced());
        }
        for column in [
            LeadColumn::Source,
            LeadColumn::Platform,
            LeadColumn::PlatformUrl,
            LeadColumn::ProfileUrl,
        ] {
            assert_eq!(column.synced(), None);
        }
    }
}
