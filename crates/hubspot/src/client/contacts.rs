//! CRM v3 contacts: batch read, get, batch upsert/update, create, search, list
//! (hubspot-api.md §4).

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use leadsync_domain::{AppId, ContactId, PortalId};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::json;

use super::{Call, Client, MAX_BATCH, Operation, decode};
use crate::error::HubSpotError;

const CONTACTS: &[&str] = &["crm", "v3", "objects", "contacts"];

/// HubSpot refuses to page a search past this many results.
pub const SEARCH_RESULT_CAP: u64 = 10_000;
/// The largest search page.
pub const SEARCH_PAGE_SIZE: u32 = 200;
/// The largest list page.
pub const LIST_PAGE_SIZE: u32 = 100;

/// A contact as HubSpot returns it. `Debug` shows property names, never values:
/// they are personal data.
#[derive(Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Contact {
    /// `hs_object_id`.
    #[serde(deserialize_with = "contact_id")]
    pub id: ContactId,
    /// Property values; `None` where HubSpot answered `null` (asked for, not set).
    #[serde(default)]
    pub properties: BTreeMap<String, Option<String>>,
    /// Versions of the properties asked for with history, newest first.
    #[serde(default)]
    pub properties_with_history: BTreeMap<String, Vec<PropertyVersion>>,
    /// `createdAt`.
    pub created_at: Option<DateTime<Utc>>,
    /// `updatedAt`.
    pub updated_at: Option<DateTime<Utc>>,
    /// Whether it is in the recycle bin.
    #[serde(default)]
    pub archived: bool,
}

impl Contact {
    /// The value of `name`, if set.
    pub fn property(&self, name: &str) -> Option<&str> {
        self.properties.get(name).and_then(Option::as_deref)
    }
}

impl std::fmt::Debug for Contact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Contact")
            .field("id", &self.id)
            .field("properties", &self.properties.keys().collect::<Vec<_>>())
            .field(
                "properties_with_history",
                &self.properties_with_history.keys().collect::<Vec<_>>(),
            )
            .field("updated_at", &self.updated_at)
            .field("archived", &self.archived)
            .finish()
    }
}

/// One version of a property (`ValueWithTimestamp`).
#[derive(Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PropertyVersion {
    /// The value it was set to.
    pub value: String,
    /// When.
    pub timestamp: DateTime<Utc>,
    /// Who changed it: `INTEGRATION`, `CRM_UI`, `IMPORT`, … (an open set).
    pub source_type: String,
    /// The app id for `INTEGRATION`, `userId:N` for UI edits.
    pub source_id: Option<String>,
    /// The HubSpot user, for UI edits.
    pub updated_by_user_id: Option<u64>,
}

impl PropertyVersion {
    /// Whether an app wrote this version: `sourceType` `INTEGRATION` with
    /// the app's id as `sourceId` (hubspot-api.md §1.5). With `app` unknown
    /// (a private app's id is not documented), any integration's write.
    pub fn written_by_app(&self, app: Option<AppId>) -> bool {
        self.source_type == "INTEGRATION"
            && app.is_none_or(|app| {
                self.source_id
                    .as_deref()
                    .and_then(|id| id.parse::<AppId>().ok())
                    == Some(app)
            })
    }
}

impl std::fmt::Debug for PropertyVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PropertyVersion")
            .field("timestamp", &self.timestamp)
            .field("source_type", &self.source_type)
            .field("source_id", &self.source_id)
            .finish_non_exhaustive()
    }
}

fn contact_id<'de, D: Deserializer<'de>>(d: D) -> Result<ContactId, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Number(u64),
    }
    match Raw::deserialize(d)? {
        Raw::Number(n) => Ok(ContactId::new(n)),
        Raw::Text(s) => s.parse().map_err(serde::de::Error::custom),
    }
}

/// A failed part of a batch call (a 207 `errors[]` item).
#[derive(Clone, Deserialize)]
pub struct BatchError {
    /// `OBJECT_NOT_FOUND`, `VALIDATION_ERROR`, …
    pub category: Option<String>,
    /// HubSpot's message; it can quote values, so it is left out of `Debug`.
    pub message: Option<String>,
    /// `context`, e.g. `ids` of the inputs concerned.
    #[serde(default)]
    pub context: HashMap<String, Vec<String>>,
}

impl std::fmt::Debug for BatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchError")
            .field("category", &self.category)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct BatchWire<T> {
    #[serde(default = "Vec::new")]
    results: Vec<T>,
    #[serde(default)]
    errors: Vec<BatchError>,
}

/// The outcome of [`Client::batch_read`].
#[derive(Debug, Clone, Default)]
pub struct BatchRead {
    /// The contacts found.
    pub contacts: Vec<Contact>,
    /// Ids HubSpot does not have (deleted, merged away, never existed).
    pub not_found: Vec<ContactId>,
    /// Any other per-input error.
    pub errors: Vec<BatchError>,
}

/// A contact to create or update by email. `Debug` hides the email and values.
#[derive(Clone)]
pub struct ContactInput {
    /// The email that identifies it.
    pub email: String,
    /// Properties to set (`""` clears one).
    pub properties: BTreeMap<String, String>,
}

impl std::fmt::Debug for ContactInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContactInput")
            .field("properties", &self.properties.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// New property values for a contact known by id. `Debug` hides the values.
#[derive(Clone)]
pub struct ContactUpdate {
    /// The contact.
    pub id: ContactId,
    /// Properties to set (`""` clears one).
    pub properties: BTreeMap<String, String>,
}

impl std::fmt::Debug for ContactUpdate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContactUpdate")
            .field("id", &self.id)
            .field("properties", &self.properties.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// One result of [`Client::batch_upsert_by_email`].
#[derive(Debug, Clone)]
pub struct UpsertResult {
    /// The contact's id.
    pub id: ContactId,
    /// Whether the call created it.
    pub new: bool,
    /// The contact after the write.
    pub contact: Contact,
}

#[derive(Deserialize)]
struct UpsertWire {
    #[serde(flatten)]
    contact: Contact,
    #[serde(default)]
    new: bool,
}

/// A page of [`Client::search_modified_since`].
#[derive(Debug, Clone)]
pub struct SearchPage {
    /// Matches of the whole query.
    pub total: u64,
    /// This page, oldest modification first.
    pub contacts: Vec<Contact>,
    /// The cursor of the next page.
    pub next_after: Option<String>,
    /// True when more results exist beyond HubSpot's 10,000-result cap: search
    /// again with `since` = the last contact's `lastmodifieddate`.
    pub capped: bool,
}

/// A page of [`Client::list_contacts`].
#[derive(Debug, Clone)]
pub struct ListPage {
    /// This page.
    pub contacts: Vec<Contact>,
    /// The cursor of the next page.
    pub next_after: Option<String>,
}

#[derive(Deserialize)]
struct Paging {
    next: Option<NextPage>,
}

#[derive(Deserialize)]
struct NextPage {
    after: String,
}

#[derive(Deserialize)]
struct PageWire {
    #[serde(default)]
    total: u64,
    #[serde(default)]
    results: Vec<Contact>,
    paging: Option<Paging>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IdInput {
    id: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BatchReadBody<'a> {
    inputs: Vec<IdInput>,
    properties: &'a [&'a str],
    properties_with_history: &'a [&'a str],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WriteInput<'a> {
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    id_property: Option<&'static str>,
    properties: &'a BTreeMap<String, String>,
}

fn contacts_path<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    CONTACTS.iter().chain(extra).copied().collect()
}

fn unique(ids: &[ContactId]) -> Vec<ContactId> {
    let mut seen = HashSet::with_capacity(ids.len());
    ids.iter().copied().filter(|id| seen.insert(*id)).collect()
}

impl Client {
    /// Reads contacts by id, up to 100 per HTTP call (larger inputs take several
    /// calls, each with its own permit). Ids HubSpot does not know come back in
    /// [`BatchRead::not_found`], not as an error.
    pub async fn batch_read(
        &self,
        portal: PortalId,
        ids: &[ContactId],
        properties: &[&str],
        with_history: &[&str],
    ) -> Result<BatchRead, HubSpotError> {
        let mut out = BatchRead::default();
        for chunk in unique(ids).chunks(MAX_BATCH) {
            let body = BatchReadBody {
                inputs: chunk
                    .iter()
                    .map(|id| IdInput { id: id.to_string() })
                    .collect(),
                properties,
                properties_with_history: with_history,
            };
            let path = contacts_path(&["batch", "read"]);
            let call =
                Call::post_json(Operation::BatchRead, &path, &body)?.query("archived", "false");
            let bytes = self.execute(Some(portal), &call).await?;
            let wire: BatchWire<Contact> = decode(Operation::BatchRead, &bytes)?;
            out.contacts.extend(wire.results);
            for error in wire.errors {
                if error.category.as_deref() == Some("OBJECT_NOT_FOUND") {
                    let ids = error.context.get("ids").into_iter().flatten();
                    out.not_found
                        .extend(ids.filter_map(|s| s.parse::<ContactId>().ok()));
                } else {
                    out.errors.push(error);
                }
            }
        }
        Ok(out)
    }

    /// Reads one contact. A contact that does not exist is [`HubSpotError::NotFound`].
    pub async fn get_contact(
        &self,
        portal: PortalId,
        id: ContactId,
        properties: &[&str],
        with_history: &[&str],
    ) -> Result<Contact, HubSpotError> {
        let id = id.to_string();
        let path = contacts_path(&[id.as_str()]);
        let mut call = Call::get(Operation::GetContact, &path);
        if !properties.is_empty() {
            call = call.query("properties", properties.join(","));
        }
        if !with_history.is_empty() {
            call = call.query("propertiesWithHistory", with_history.join(","));
        }
        let bytes = self.execute(Some(portal), &call).await?;
        decode(Operation::GetContact, &bytes)
    }

    /// Creates or updates contacts keyed by email, up to 100 per HTTP call.
    /// Emails must be unique within `inputs`. If a later call fails, the
    /// earlier calls' writes stand; upserts are idempotent, so retrying is safe.
    pub async fn batch_upsert_by_email(
        &self,
        portal: PortalId,
        inputs: &[ContactInput],
    ) -> Result<Vec<UpsertResult>, HubSpotError> {
        let mut out = Vec::with_capacity(inputs.len());
        for chunk in inputs.chunks(MAX_BATCH) {
            let body = json!({
                "inputs": chunk.iter().map(|i| WriteInput {
                    id: i.email.clone(),
                    id_property: Some("email"),
                    properties: &i.properties,
                }).collect::<Vec<_>>()
            });
            let path = contacts_path(&["batch", "upsert"]);
            let call = Call::post_json(Operation::BatchUpsert, &path, &body)?;
            let bytes = self.execute(Some(portal), &call).await?;
            let wire: BatchWire<UpsertWire> = decode(Operation::BatchUpsert, &bytes)?;
            out.extend(wire.results.into_iter().map(|w| UpsertResult {
                id: w.contact.id,
                new: w.new,
                contact: w.contact,
            }));
        }
        Ok(out)
    }

    /// Updates contacts by id, up to 100 per HTTP call; returns them after the write.
    pub async fn batch_update(
        &self,
        portal: PortalId,
        inputs: &[ContactUpdate],
    ) -> Result<Vec<Contact>, HubSpotError> {
        let mut out = Vec::with_capacity(inputs.len());
        for chunk in inputs.chunks(MAX_BATCH) {
            let body = json!({
                "inputs": chunk.iter().map(|i| WriteInput {
                    id: i.id.to_string(),
                    id_property: None,
                    properties: &i.properties,
                }).collect::<Vec<_>>()
            });
            let path = contacts_path(&["batch", "update"]);
            let call = Call::post_json(Operation::BatchUpdate, &path, &body)?;
            let bytes = self.execute(Some(portal), &call).await?;
            let wire: BatchWire<Contact> = decode(Operation::BatchUpdate, &bytes)?;
            out.extend(wire.results);
        }
        Ok(out)
    }

    /// Archives contacts by id (HubSpot's "delete": they can be restored
    /// within 90 days), up to 100 per HTTP call. HubSpot answers 204 for ids
    /// it does not know or already archived, so archiving twice succeeds.
    pub async fn batch_archive(
        &self,
        portal: PortalId,
        ids: &[ContactId],
    ) -> Result<(), HubSpotError> {
        for chunk in unique(ids).chunks(MAX_BATCH) {
            let body = json!({
                "inputs": chunk.iter().map(|id| IdInput { id: id.to_string() }).collect::<Vec<_>>()
            });
            let path = contacts_path(&["batch", "archive"]);
            let call = Call::post_json(Operation::BatchArchive, &path, &body)?;
            self.execute(Some(portal), &call).await?;
        }
        Ok(())
    }

    /// Creates one contact. An email HubSpot already has is
    /// [`HubSpotError::Conflict`] with the existing contact's id.
    pub async fn create_contact(
        &self,
        portal: PortalId,
        properties: &BTreeMap<String, String>,
    ) -> Result<Contact, HubSpotError> {
        let body = json!({ "properties": properties });
        let call = Call::post_json(Operation::CreateContact, CONTACTS, &body)?;
        let bytes = self.execute(Some(portal), &call).await?;
        decode(Operation::CreateContact, &bytes)
    }

    /// Contacts with `since <= lastmodifieddate < until`, oldest modification
    /// first, 200 per page. Search has its own limit (5 per second) and sends
    /// no rate headers; a query pages through at most 10,000 results (see
    /// [`SearchPage::capped`]). New changes appear in search after a delay.
    pub async fn search_modified_since(
        &self,
        portal: PortalId,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        after: Option<&str>,
    ) -> Result<SearchPage, HubSpotError> {
        let mut body = json!({
            "filterGroups": [{ "filters": [
                { "propertyName": "lastmodifieddate", "operator": "GTE", "value": since.timestamp_millis().to_string() },
                { "propertyName": "lastmodifieddate", "operator": "LT", "value": until.timestamp_millis().to_string() },
            ]}],
            "sorts": [{ "propertyName": "lastmodifieddate", "direction": "ASCENDING" }],
            "limit": SEARCH_PAGE_SIZE,
        });
        if let Some(after) = after {
            body["after"] = json!(after);
        }
        let path = contacts_path(&["search"]);
        let call = Call::post_json(Operation::SearchContacts, &path, &body)?;
        let bytes = self.execute(Some(portal), &call).await?;
        let wire: PageWire = decode(Operation::SearchContacts, &bytes)?;
        let next = wire.paging.and_then(|p| p.next).map(|n| n.after);
        // HubSpot still offers `after=10000`, then answers it with a 400.
        let capped = next
            .as_deref()
            .and_then(|a| a.parse::<u64>().ok())
            .is_some_and(|a| a >= SEARCH_RESULT_CAP);
        Ok(SearchPage {
            total: wire.total,
            contacts: wire.results,
            next_after: if capped { None } else { next },
            capped,
        })
    }

    /// A page of all contacts (`limit` is clamped to 1–100), for backfill.
    pub async fn list_contacts(
        &self,
        portal: PortalId,
        after: Option<&str>,
        limit: u32,
        properties: &[&str],
    ) -> Result<ListPage, HubSpotError> {
        let mut call = Call::get(Operation::ListContacts, CONTACTS)
            .query("limit", limit.clamp(1, LIST_PAGE_SIZE).to_string());
        if let Some(after) = after {
            call = call.query("after", after);
        }
        if !properties.is_empty() {
            call = call.query("properties", properties.join(","));
        }
        let bytes = self.execute(Some(portal), &call).await?;
        let wire: PageWire = decode(Operation::ListContacts, &bytes)?;
        Ok(ListPage {
            contacts: wire.results,
            next_after: wire.paging.and_then(|p| p.next).map(|n| n.after),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(source_type: &str, source_id: Option<&str>) -> PropertyVersion {
        serde_json::from_value(json!({
            "value": "v",
            "timestamp": "2026-11-29T10:00:00Z",
            "sourceType": source_type,
            "sourceId": source_id,
        }))
        .expect("a version")
    }

    #[test]
    fn a_version_is_the_apps_when_an_integration_with_its_id_wrote_it() {
        let app = Some(AppId::new(8_151_242));
        assert!(version("INTEGRATION", Some("8151242")).written_by_app(app));
        assert!(!version("INTEGRATION", Some("999")).written_by_app(app));
        assert!(!version("INTEGRATION", None).written_by_app(app));
        assert!(!version("CRM_UI", Some("userId:51446676")).written_by_app(app));
        assert!(!version("IMPORT", Some("8151242")).written_by_app(app));
    }

    #[test]
    fn with_the_app_unknown_any_integrations_version_counts() {
        assert!(version("INTEGRATION", Some("999")).written_by_app(None));
        assert!(!version("CRM_UI", None).written_by_app(None));
    }
}
