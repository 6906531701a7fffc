//! Webhook management, Webhooks API v3 (hubspot-api.md §6.1): the app's one
//! target URL and its subscriptions. These calls are made for the app, not for
//! a portal: they authenticate with the developer API key (`?hapikey=`), spend
//! no account's API budget, and apply to every account that installed the app.

use leadsync_domain::AppId;
use reqwest::Method;
use secrecy::SecretString;
use serde::{Deserialize, Deserializer, Serialize};

use super::{Call, Client, Operation, decode};
use crate::error::HubSpotError;

/// The public app whose webhooks are managed, with its developer API key.
#[derive(Debug, Clone)]
pub struct DeveloperApp {
    /// The app id (`{appId}` in the paths).
    pub app_id: AppId,
    /// The developer account's API key (`hapikey`).
    pub api_key: SecretString,
}

impl DeveloperApp {
    fn segments<'a>(&'a self, app_id: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
        ["webhooks", "v3", app_id]
            .into_iter()
            .chain(rest.iter().copied())
            .collect()
    }
}

/// `throttling` of the webhook settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Throttling {
    /// Deliveries in flight at once per account; HubSpot wants more than 5.
    pub max_concurrent_requests: u32,
    /// `SECONDLY`.
    pub period: String,
}

impl Default for Throttling {
    /// HubSpot's default: 10 concurrent requests (hubspot-api.md §1.1).
    fn default() -> Self {
        Self {
            max_concurrent_requests: 10,
            period: "SECONDLY".to_owned(),
        }
    }
}

/// The app's webhook settings (`GET`/`PUT /webhooks/v3/{appId}/settings`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookSettings {
    /// Where HubSpot POSTs every event of the app: one URL per app.
    pub target_url: String,
    /// Delivery concurrency.
    #[serde(default)]
    pub throttling: Throttling,
    /// When the settings were first saved (answers only).
    #[serde(default, skip_serializing)]
    pub created_at: Option<String>,
    /// When they last changed (answers only).
    #[serde(default, skip_serializing)]
    pub updated_at: Option<String>,
}

/// One webhook subscription (`SubscriptionResponse`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    /// Its id: a string in the spec, a number in older docs; kept as text.
    #[serde(deserialize_with = "string_or_number")]
    pub id: String,
    /// `contact.creation`, `contact.propertyChange`, … (`eventType`, not
    /// `subscriptionType`, in this API).
    pub event_type: String,
    /// The property of a `*.propertyChange` subscription.
    #[serde(default)]
    pub property_name: Option<String>,
    /// Whether HubSpot sends its events.
    pub active: bool,
}

/// `POST /webhooks/v3/{appId}/subscriptions` (`SubscriptionCreateRequest`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NewSubscription {
    /// The event type, e.g. `contact.propertyChange`.
    pub event_type: String,
    /// Required for `*.propertyChange`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub property_name: Option<String>,
    /// HubSpot's default is `false`: a subscription sends nothing until active.
    pub active: bool,
}

fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        Text(String),
        Number(u64),
    }
    Ok(match Id::deserialize(d)? {
        Id::Text(s) => s,
        Id::Number(n) => n.to_string(),
    })
}

/// The list answer: `{"results":[…]}` in the spec, a bare array in older docs.
#[derive(Deserialize)]
#[serde(untagged)]
enum SubscriptionList {
    Results { results: Vec<Subscription> },
    Bare(Vec<Subscription>),
}

#[derive(Serialize)]
struct ActiveBody {
    active: bool,
}

impl Client {
    /// The app's webhook settings; `None` when none are saved (404).
    pub async fn get_webhook_settings(
        &self,
        app: &DeveloperApp,
    ) -> Result<Option<WebhookSettings>, HubSpotError> {
        let id = app.app_id.to_string();
        let call = Call::get(
            Operation::GetWebhookSettings,
            &app.segments(&id, &["settings"]),
        )
        .developer_key(&app.api_key);
        match self.execute(None, &call).await {
            Ok(bytes) => decode(Operation::GetWebhookSettings, &bytes).map(Some),
            Err(HubSpotError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Saves the app's webhook settings (target URL and throttling), replacing
    /// the previous ones.
    pub async fn put_webhook_settings(
        &self,
        app: &DeveloperApp,
        settings: &WebhookSettings,
    ) -> Result<WebhookSettings, HubSpotError> {
        let id = app.app_id.to_string();
        let call = Call::json(
            Operation::PutWebhookSettings,
            Method::PUT,
            &app.segments(&id, &["settings"]),
            settings,
        )?
        .developer_key(&app.api_key);
        let bytes = self.execute(None, &call).await?;
        decode(Operation::PutWebhookSettings, &bytes)
    }

    /// Every subscription of the app.
    pub async fn list_subscriptions(
        &self,
        app: &DeveloperApp,
    ) -> Result<Vec<Subscription>, HubSpotError> {
        let id = app.app_id.to_string();
        let call = Call::get(
            Operation::ListSubscriptions,
            &app.segments(&id, &["subscriptions"]),
        )
        .developer_key(&app.api_key);
        let bytes = self.execute(None, &call).await?;
        Ok(
            match decode::<SubscriptionList>(Operation::ListSubscriptions, &bytes)? {
                SubscriptionList::Results { results } | SubscriptionList::Bare(results) => results,
            },
        )
    }

    /// Creates a subscription. One that exists already (same event type and
    /// property) is refused with a 409 ([`HubSpotError::Permanent`]).
    pub async fn create_subscription(
        &self,
        app: &DeveloperApp,
        subscription: &NewSubscription,
    ) -> Result<Subscription, HubSpotError> {
        let id = app.app_id.to_string();
        let call = Call::json(
            Operation::CreateSubscription,
            Method::POST,
            &app.segments(&id, &["subscriptions"]),
            subscription,
        )?
        .developer_key(&app.api_key);
        let bytes = self.execute(None, &call).await?;
        decode(Operation::CreateSubscription, &bytes)
    }

    /// Turns a subscription on or off (`PATCH …/subscriptions/{id}`).
    pub async fn set_subscription_active(
        &self,
        app: &DeveloperApp,
        subscription_id: &str,
        active: bool,
    ) -> Result<Subscription, HubSpotError> {
        let id = app.app_id.to_string();
        let call = Call::json(
            Operation::UpdateSubscription,
            Method::PATCH,
            &app.segments(&id, &["subscriptions", subscription_id]),
            &ActiveBody { active },
        )?
        .developer_key(&app.api_key);
        let bytes = self.execute(None, &call).await?;
        decode(Operation::UpdateSubscription, &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_parse_in_both_documented_shapes() {
        // Arrange
        let spec = br#"{"results":[{"active":true,"createdAt":"2019-06-06T16:56:16.652Z","eventType":"contact.propertyChange","id":"1234","propertyName":"firstname","updatedAt":"2019-08-06T16:56:16.652Z"}]}"#;
        let docs = br#"[{"id":25,"createdAt":1461704185000,"createdBy":529872,"eventType":"contact.propertyChange","propertyName":"lifecyclestage","active":false}]"#;

        // Act
        let spec: SubscriptionList = serde_json::from_slice(spec).expect("spec shape");
        let docs: SubscriptionList = serde_json::from_slice(docs).expect("docs shape");

        // Assert
        let SubscriptionList::Results { results } = spec else {
            panic!("spec shape is {{results}}")
        };
        assert_eq!(results[0].id, "1234");
        assert_eq!(results[0].property_name.as_deref(), Some("firstname"));
        let SubscriptionList::Bare(results) = docs else {
            panic!("docs shape is an array")
        };
        assert_eq!(results[0].id, "25");
        assert!(!results[0].active);
    }

    #[test]
    fn new_subscriptions_use_event_type_and_omit_a_missing_property() {
        let body = serde_json::to_string(&NewSubscription {
            event_type: "contact.creation".to_owned(),
            property_name: None,
            active: true,
        })
        .expect("serialises");
        assert_eq!(body, r#"{"eventType":"contact.creation","active":true}"#);
    }
}
