//! Request and response types of the control API, shared by the in-process
//! [`crate::Control`] and the HTTP [`crate::ControlClient`]. JSON is camelCase.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::RateLimitConfig;

/// A contact with its current values and full property history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContactRecord {
    /// The contact id (`hs_object_id`).
    pub id: u64,
    /// Current value of every property that was ever set (`""` when cleared).
    pub properties: BTreeMap<String, String>,
    /// Every property's versions, newest first.
    pub history: BTreeMap<String, Vec<PropertyVersion>>,
    /// `createdAt`, ISO-8601.
    pub created_at: String,
    /// `updatedAt`, ISO-8601.
    pub updated_at: String,
    /// In the recycle bin.
    pub archived: bool,
    /// When it was archived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archived_at: Option<String>,
}

impl ContactRecord {
    /// The current value of `property`.
    pub fn get(&self, property: &str) -> Option<&str> {
        self.properties.get(property).map(String::as_str)
    }
}

/// One version of a property value, as `propertiesWithHistory` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PropertyVersion {
    /// The value.
    pub value: String,
    /// When it was set, ISO-8601.
    pub timestamp: String,
    /// `INTEGRATION`, `CRM_UI` or `IMPORT`.
    pub source_type: String,
    /// App id, `userId:N`, or import id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_id: Option<String>,
    /// The HubSpot user, for UI edits and imports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_by_user_id: Option<u64>,
}

/// Property edits made by a HubSpot user in the CRM UI (`changeSource: CRM_UI`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserEdit {
    /// Property name → new value (`""` clears).
    pub properties: BTreeMap<String, String>,
    /// The acting user (default: [`crate::SimConfig::default_user_id`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<u64>,
}

impl UserEdit {
    /// Edits from `(name, value)` pairs, by the default user.
    pub fn new<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        Self {
            properties: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            user_id: None,
        }
    }

    /// The same edits made by `user_id`.
    pub fn by(mut self, user_id: u64) -> Self {
        self.user_id = Some(user_id);
        self
    }
}

/// Merge `object_id_to_merge` into `primary_object_id`, as a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MergeRequest {
    /// The winner, which keeps its id.
    pub primary_object_id: u64,
    /// The contact merged into it.
    pub object_id_to_merge: u64,
    /// The acting user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<u64>,
}

/// A CRM import (`changeSource: IMPORT`) of generated contacts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ImportRequest {
    /// Contacts in the file. Each gets email, firstname, lastname, phone,
    /// company and jobtitle; a row whose email exists updates that contact.
    pub count: u32,
    /// Property edits applied to each contact after it is created, each to a
    /// different property (firstname, lastname, phone, company, jobtitle, city,
    /// state, country, website, cycling), each one `contact.propertyChange`.
    pub extra_edits: u32,
    /// Domain of the generated emails (default `import.example.com`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email_domain: Option<String>,
    /// Values set on every imported contact as well.
    pub properties: BTreeMap<String, String>,
    /// The user who ran the import.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<u64>,
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportResult {
    /// The import's id (`sourceId` of its property history).
    pub import_id: u64,
    /// Contacts created.
    pub created: u32,
    /// Existing contacts updated (their email was already known).
    pub updated: u32,
    /// Ids of all rows, in file order.
    pub ids: Vec<u64>,
}

/// A user of `portal_id` clicks "connect" on the app's install page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizeRequest {
    /// The account installing the app (created if it does not exist).
    pub portal_id: u64,
    /// The installing user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<u64>,
    /// If set, the token exchange must send the same `redirect_uri`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_uri: Option<String>,
}

/// The result of [`AuthorizeRequest`]: what HubSpot appends to the redirect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizationCode {
    /// The one-time code for `POST /oauth/v1/token`.
    pub code: String,
    /// The portal it is for.
    pub portal_id: u64,
    /// `redirect_uri?code=…`, when a redirect URI was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_url: Option<String>,
}

/// A private-app token registered in a portal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PrivateAppToken {
    /// The portal.
    pub portal_id: u64,
    /// The bearer token.
    pub token: String,
    /// The private app's id (`sourceId` of its writes).
    pub app_id: u64,
}

/// Creates a portal (HubSpot account) with the app installed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatePortal {
    /// The account id.
    pub portal_id: u64,
    /// A private-app token to register right away.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_app_token: Option<String>,
    /// Its own rate limits (default: the simulator's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitConfig>,
}

/// What a separate process needs to talk to the simulator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SimInfo {
    /// The public app's id.
    pub app_id: u64,
    /// Its OAuth client id.
    pub client_id: String,
    /// Existing portals.
    pub portals: Vec<u64>,
    /// The seed.
    pub seed: u64,
}
