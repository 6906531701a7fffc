//! What the simulator counts, for tests and benchmarks to assert on.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::webhooks::delivery::DeliveryStats;

/// Every API endpoint the simulator serves, for per-endpoint call counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    ContactsList,
    ContactsCreate,
    ContactsGet,
    ContactsUpdate,
    ContactsArchive,
    ContactsBatchRead,
    ContactsBatchCreate,
    ContactsBatchUpdate,
    ContactsBatchUpsert,
    ContactsBatchArchive,
    ContactsSearch,
    ContactsMerge,
    ContactsGdprDelete,
    PropertiesList,
    PropertiesCreate,
    PropertiesGet,
    PropertiesUpdate,
    PropertiesArchive,
    AccountDetails,
    OAuthToken,
    OAuthAccessTokenInfo,
    OAuthRefreshTokenInfo,
    OAuthRefreshTokenDelete,
    WebhookSettingsGet,
    WebhookSettingsPut,
    WebhookSettingsDelete,
    SubscriptionsList,
    SubscriptionsCreate,
    SubscriptionsGet,
    SubscriptionsUpdate,
    SubscriptionsDelete,
    SubscriptionsBatchUpdate,
}

impl Endpoint {
    const ALL: [Self; 32] = [
        Self::ContactsList,
        Self::ContactsCreate,
        Self::ContactsGet,
        Self::ContactsUpdate,
        Self::ContactsArchive,
        Self::ContactsBatchRead,
        Self::ContactsBatchCreate,
        Self::ContactsBatchUpdate,
        Self::ContactsBatchUpsert,
        Self::ContactsBatchArchive,
        Self::ContactsSearch,
        Self::ContactsMerge,
        Self::ContactsGdprDelete,
        Self::PropertiesList,
        Self::PropertiesCreate,
        Self::PropertiesGet,
        Self::PropertiesUpdate,
        Self::PropertiesArchive,
        Self::AccountDetails,
        Self::OAuthToken,
        Self::OAuthAccessTokenInfo,
        Self::OAuthRefreshTokenInfo,
        Self::OAuthRefreshTokenDelete,
        Self::WebhookSettingsGet,
        Self::WebhookSettingsPut,
        Self::WebhookSettingsDelete,
        Self::SubscriptionsList,
        Self::SubscriptionsCreate,
        Self::SubscriptionsGet,
        Self::SubscriptionsUpdate,
        Self::SubscriptionsDelete,
        Self::SubscriptionsBatchUpdate,
    ];

    /// The API endpoint (contacts, properties or account details: the calls
    /// that pass the API gate) whose key is `key`.
    pub(crate) fn gated(key: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|e| e.as_str() == key && (e.is_crm() || *e == Self::AccountDetails))
    }

    /// A contacts or properties endpoint.
    pub(crate) fn is_crm(self) -> bool {
        self.as_str().contains(" /crm/")
    }

    /// The key in [`SimStats::calls_by_endpoint`].
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::ContactsList => "GET /crm/v3/objects/contacts",
            Self::ContactsCreate => "POST /crm/v3/objects/contacts",
            Self::ContactsGet => "GET /crm/v3/objects/contacts/{contactId}",
            Self::ContactsUpdate => "PATCH /crm/v3/objects/contacts/{contactId}",
            Self::ContactsArchive => "DELETE /crm/v3/objects/contacts/{contactId}",
            Self::ContactsBatchRead => "POST /crm/v3/objects/contacts/batch/read",
            Self::ContactsBatchCreate => "POST /crm/v3/objects/contacts/batch/create",
            Self::ContactsBatchUpdate => "POST /crm/v3/objects/contacts/batch/update",
            Self::ContactsBatchUpsert => "POST /crm/v3/objects/contacts/batch/upsert",
            Self::ContactsBatchArchive => "POST /crm/v3/objects/contacts/batch/archive",
            Self::ContactsSearch => "POST /crm/v3/objects/contacts/search",
            Self::ContactsMerge => "POST /crm/v3/objects/contacts/merge",
            Self::ContactsGdprDelete => "POST /crm/v3/objects/contacts/gdpr-delete",
            Self::PropertiesList => "GET /crm/v3/properties/contacts",
            Self::PropertiesCreate => "POST /crm/v3/properties/contacts",
            Self::PropertiesGet => "GET /crm/v3/properties/contacts/{propertyName}",
            Self::PropertiesUpdate => "PATCH /crm/v3/properties/contacts/{propertyName}",
            Self::PropertiesArchive => "DELETE /crm/v3/properties/contacts/{propertyName}",
            Self::AccountDetails => "GET /account-info/v3/details",
            Self::OAuthToken => "POST /oauth/v1/token",
            Self::OAuthAccessTokenInfo => "GET /oauth/v1/access-tokens/{token}",
            Self::OAuthRefreshTokenInfo => "GET /oauth/v1/refresh-tokens/{token}",
            Self::OAuthRefreshTokenDelete => "DELETE /oauth/v1/refresh-tokens/{token}",
            Self::WebhookSettingsGet => "GET /webhooks/v3/{appId}/settings",
            Self::WebhookSettingsPut => "PUT /webhooks/v3/{appId}/settings",
            Self::WebhookSettingsDelete => "DELETE /webhooks/v3/{appId}/settings",
            Self::SubscriptionsList => "GET /webhooks/v3/{appId}/subscriptions",
            Self::SubscriptionsCreate => "POST /webhooks/v3/{appId}/subscriptions",
            Self::SubscriptionsGet => "GET /webhooks/v3/{appId}/subscriptions/{subscriptionId}",
            Self::SubscriptionsUpdate => {
                "PATCH /webhooks/v3/{appId}/subscriptions/{subscriptionId}"
            }
            Self::SubscriptionsDelete => {
                "DELETE /webhooks/v3/{appId}/subscriptions/{subscriptionId}"
            }
            Self::SubscriptionsBatchUpdate => {
                "POST /webhooks/v3/{appId}/subscriptions/batch/update"
            }
        }
    }
}

/// Lock-free process-wide counters.
#[derive(Debug)]
pub(crate) struct Counters {
    by_endpoint: [AtomicU64; Endpoint::ALL.len()],
    pub(crate) rate_limited: AtomicU64,
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            by_endpoint: std::array::from_fn(|_| AtomicU64::new(0)),
            rate_limited: AtomicU64::new(0),
        }
    }
}

impl Counters {
    pub(crate) fn count(&self, endpoint: Endpoint) {
        self.by_endpoint[endpoint as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn reset(&self) {
        for c in &self.by_endpoint {
            c.store(0, Ordering::Relaxed);
        }
        self.rate_limited.store(0, Ordering::Relaxed);
    }

    /// (total, per endpoint with at least one call).
    pub(crate) fn by_endpoint(&self) -> (u64, BTreeMap<String, u64>) {
        let mut total = 0;
        let mut map = BTreeMap::new();
        for e in Endpoint::ALL {
            let n = self.by_endpoint[e as usize].load(Ordering::Relaxed);
            if n > 0 {
                total += n;
                map.insert(e.as_str().to_owned(), n);
            }
        }
        (total, map)
    }
}

/// A snapshot of every counter.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SimStats {
    /// Requests to the HubSpot API surface (not the control API), any outcome.
    pub api_calls: u64,
    /// 429 responses served, all portals and policies.
    pub rate_limited: u64,
    /// Requests per endpoint, keyed like `"POST /crm/v3/objects/contacts/batch/read"`.
    pub calls_by_endpoint: BTreeMap<String, u64>,
    /// Per portal, keyed by portal id.
    pub portals: BTreeMap<u64, PortalStats>,
    /// Webhook delivery.
    pub delivery: DeliveryStats,
    /// Injected API errors served (see `Control::inject_api_fault`).
    #[serde(default)]
    pub api_faults_served: u64,
}

impl SimStats {
    /// Calls to one endpoint, by its key (e.g. `"POST /crm/v3/objects/contacts/batch/read"`).
    pub fn calls(&self, endpoint: &str) -> u64 {
        self.calls_by_endpoint.get(endpoint).copied().unwrap_or(0)
    }
}

/// Counters of one portal.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortalStats {
    /// Authenticated CRM calls (contacts, search and properties), any outcome.
    pub api_calls: u64,
    /// Of which searches.
    pub search_calls: u64,
    /// 429s served to this portal.
    pub rate_limited: u64,
    /// Most burst-policy calls (all but search, refused ones included) in any
    /// rolling 10 seconds: what a client *sent*, to check it never exceeded its budget.
    pub max_calls_in_10s: u64,
    /// Calls counted against today's quota.
    pub daily_used: u64,
    /// Contacts stored (archived ones included).
    pub contacts: u64,
}
