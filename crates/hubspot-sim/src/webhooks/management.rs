//! The app's webhook settings and subscriptions, as the v3 management API
//! exposes them (docs/hubspot-sim.md, "Webhook management"; the SPEC shape: `{"results":[…]}`,
//! string ids, PATCH).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::SubscriptionSpec;
use crate::crm::{ChangeKind, iso};

/// HubSpot's per-app subscription cap.
pub(crate) const MAX_SUBSCRIPTIONS: usize = 1000;
/// Property-change subscriptions HubSpot refuses (docs/hubspot-sim.md, "Webhook payloads").
const UNSUBSCRIBABLE: &[&str] = &["num_unique_conversion_events", "hs_lastmodifieddate"];
const EVENT_TYPES: &[&str] = &[
    "contact.creation",
    "contact.deletion",
    "contact.propertyChange",
    "contact.privacyDeletion",
    "contact.merge",
    "contact.restore",
    "contact.associationChange",
];
/// Real ids are seven digits (captures show 3,327,050 and 7,562,680).
const FIRST_SUBSCRIPTION_ID: u64 = 3_300_001;

/// `GET /webhooks/v3/{appId}/settings`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Settings {
    pub(crate) created_at: String,
    pub(crate) target_url: String,
    pub(crate) throttling: Throttling,
    pub(crate) updated_at: String,
}

/// `throttling` of the settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Throttling {
    pub(crate) max_concurrent_requests: u32,
    #[serde(default = "secondly")]
    pub(crate) period: String,
}

fn secondly() -> String {
    "SECONDLY".to_owned()
}

/// `PUT /webhooks/v3/{appId}/settings`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SettingsInput {
    target_url: Option<String>,
    throttling: Option<Throttling>,
}

/// One subscription.
#[derive(Debug, Clone)]
pub(crate) struct Subscription {
    pub(crate) id: u64,
    pub(crate) event_type: String,
    pub(crate) property_name: Option<String>,
    pub(crate) active: bool,
    created_at: i64,
    updated_at: i64,
}

/// SPEC `SubscriptionResponse`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SubscriptionJson<'a> {
    id: String,
    event_type: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    property_name: Option<&'a str>,
    active: bool,
    created_at: String,
    updated_at: String,
}

impl Subscription {
    pub(crate) fn json(&self) -> SubscriptionJson<'_> {
        SubscriptionJson {
            id: self.id.to_string(),
            event_type: &self.event_type,
            property_name: self.property_name.as_deref(),
            active: self.active,
            created_at: iso(self.created_at),
            updated_at: iso(self.updated_at),
        }
    }
}

/// `POST /webhooks/v3/{appId}/subscriptions` (SPEC `SubscriptionCreateRequest`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SubscriptionInput {
    event_type: Option<String>,
    property_name: Option<String>,
    /// The API's default is false (SPEC).
    #[serde(default)]
    active: bool,
}

/// Why a subscription was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SubscriptionError {
    Invalid(String),
    Exists(u64),
    Cap,
}

/// The public app's webhook configuration.
#[derive(Debug, Clone)]
pub(crate) struct WebhookApp {
    pub(crate) settings: Option<Settings>,
    subscriptions: BTreeMap<u64, Subscription>,
    next_id: u64,
}

impl WebhookApp {
    pub(crate) fn new(
        target_url: Option<&str>,
        max_concurrent: u32,
        specs: &[SubscriptionSpec],
        now: i64,
    ) -> Result<Self, String> {
        let mut app = Self {
            settings: None,
            subscriptions: BTreeMap::new(),
            next_id: FIRST_SUBSCRIPTION_ID,
        };
        if let Some(url) = target_url {
            app.put_settings(
                SettingsInput {
                    target_url: Some(url.to_owned()),
                    throttling: Some(Throttling {
                        max_concurrent_requests: max_concurrent,
                        period: secondly(),
                    }),
                },
                now,
            )?;
        }
        for spec in specs {
            app.subscribe(
                &spec.event_type,
                spec.property_name.clone(),
                spec.active,
                now,
            )
            .map_err(|e| format!("subscription {spec:?}: {e:?}"))?;
        }
        Ok(app)
    }

    pub(crate) fn put_settings(
        &mut self,
        input: SettingsInput,
        now: i64,
    ) -> Result<&Settings, String> {
        let target_url = input
            .target_url
            .ok_or_else(|| "targetUrl is required.".to_owned())?;
        let parsed = url::Url::parse(&target_url)
            .map_err(|e| format!("targetUrl {target_url} is not a valid URL: {e}"))?;
        // HubSpot requires HTTPS; a local simulator has to allow plain HTTP.
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!("targetUrl {target_url} must be an http(s) URL."));
        }
        let throttling = input.throttling.unwrap_or(Throttling {
            max_concurrent_requests: 10,
            period: secondly(),
        });
        // "a number greater than five" (webhooks docs, settings table).
        if throttling.max_concurrent_requests <= 5 {
            return Err(format!(
                "throttling.maxConcurrentRequests must be greater than 5, got {}.",
                throttling.max_concurrent_requests
            ));
        }
        let created_at = self
            .settings
            .as_ref()
            .map_or_else(|| iso(now), |s| s.created_at.clone());
        Ok(self.settings.insert(Settings {
            created_at,
            target_url,
            throttling,
            updated_at: iso(now),
        }))
    }

    pub(crate) fn delete_settings(&mut self) {
        self.settings = None;
    }

    /// (URL, max in flight) when a target is configured.
    pub(crate) fn target(&self) -> Option<(String, usize)> {
        self.settings.as_ref().map(|s| {
            (
                s.target_url.clone(),
                s.throttling.max_concurrent_requests as usize,
            )
        })
    }

    pub(crate) fn subscriptions(&self) -> impl Iterator<Item = &Subscription> {
        self.subscriptions.values()
    }

    pub(crate) fn subscription(&self, id: u64) -> Option<&Subscription> {
        self.subscriptions.get(&id)
    }

    pub(crate) fn create(
        &mut self,
        input: SubscriptionInput,
        now: i64,
    ) -> Result<&Subscription, SubscriptionError> {
        let event_type = input
            .event_type
            .ok_or_else(|| SubscriptionError::Invalid("eventType is required.".to_owned()))?;
        self.subscribe(&event_type, input.property_name, input.active, now)
    }

    fn subscribe(
        &mut self,
        event_type: &str,
        property_name: Option<String>,
        active: bool,
        now: i64,
    ) -> Result<&Subscription, SubscriptionError> {
        if !EVENT_TYPES.contains(&event_type) {
            return Err(SubscriptionError::Invalid(format!(
                "Unknown eventType {event_type}. Supported: {}",
                EVENT_TYPES.join(", ")
            )));
        }
        let property_name = if event_type == "contact.propertyChange" {
            let name = property_name.filter(|p| !p.is_empty()).ok_or_else(|| {
                SubscriptionError::Invalid(
                    "propertyName is required for contact.propertyChange.".to_owned(),
                )
            })?;
            if UNSUBSCRIBABLE.contains(&name.as_str()) {
                return Err(SubscriptionError::Invalid(format!(
                    "Property {name} cannot be subscribed to."
                )));
            }
            Some(name)
        } else {
            None
        };
        if let Some(existing) = self
            .subscriptions
            .values()
            .find(|s| s.event_type == event_type && s.property_name == property_name)
        {
            return Err(SubscriptionError::Exists(existing.id));
        }
        if self.subscriptions.len() >= MAX_SUBSCRIPTIONS {
            return Err(SubscriptionError::Cap);
        }
        let id = self.next_id;
        self.next_id += 1;
        let sub = Subscription {
            id,
            event_type: event_type.to_owned(),
            property_name,
            active,
            created_at: now,
            updated_at: now,
        };
        Ok(self.subscriptions.entry(id).or_insert(sub))
    }

    pub(crate) fn set_active(&mut self, id: u64, active: bool, now: i64) -> Option<&Subscription> {
        let sub = self.subscriptions.get_mut(&id)?;
        sub.active = active;
        sub.updated_at = now;
        Some(sub)
    }

    pub(crate) fn delete(&mut self, id: u64) -> bool {
        self.subscriptions.remove(&id).is_some()
    }

    /// Ids of the active subscriptions `kind` fires.
    pub(crate) fn matching<'a>(&'a self, kind: &'a ChangeKind) -> impl Iterator<Item = u64> + 'a {
        let event_type = kind.subscription_type();
        let property = match kind {
            ChangeKind::PropertyChange { name, .. } => Some(name.as_str()),
            _ => None,
        };
        self.subscriptions
            .values()
            .filter(move |s| {
                s.active && s.event_type == event_type && s.property_name.as_deref() == property
            })
            .map(|s| s.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_validate_and_match() {
        let mut app = WebhookApp::new(Some("http://127.0.0.1:1/hook"), 10, &[], 0).expect("app");
        let input = |json: &str| serde_json::from_str::<SubscriptionInput>(json).expect("input");
        let id = app
            .create(input(r#"{"eventType":"contact.propertyChange","propertyName":"email","active":true}"#), 1)
            .expect("created")
            .id;
        assert_eq!(
            app.create(
                input(r#"{"eventType":"contact.propertyChange","propertyName":"email"}"#),
                1
            )
            .unwrap_err(),
            SubscriptionError::Exists(id)
        );
        assert!(
            app.create(input(r#"{"eventType":"contact.propertyChange"}"#), 1)
                .is_err()
        );
        assert!(
            app.create(input(r#"{"eventType":"deal.creation"}"#), 1)
                .is_err()
        );
        let inactive = app
            .create(input(r#"{"eventType":"contact.creation"}"#), 1)
            .expect("created")
            .id;
        let change = ChangeKind::PropertyChange {
            name: "email".into(),
            value: "a@b.c".into(),
        };
        assert_eq!(app.matching(&change).collect::<Vec<_>>(), vec![id]);
        assert_eq!(
            app.matching(&ChangeKind::Creation).count(),
            0,
            "inactive by default"
        );
        app.set_active(inactive, true, 2);
        assert_eq!(
            app.matching(&ChangeKind::Creation).collect::<Vec<_>>(),
            vec![inactive]
        );
    }

    #[test]
    fn settings_require_a_url_and_more_than_five_concurrent_requests() {
        let mut app = WebhookApp::new(None, 10, &[], 0).expect("app");
        let input = |json: &str| serde_json::from_str::<SettingsInput>(json).expect("input");
        assert!(
            app.put_settings(input(r#"{"throttling":{"maxConcurrentRequests":10}}"#), 1)
                .is_err()
        );
        assert!(
            app.put_settings(
                input(
                    r#"{"targetUrl":"https://x.test/h","throttling":{"maxConcurrentRequests":5}}"#
                ),
                1
            )
            .is_err()
        );
        let s = app
            .put_settings(
                input(
                    r#"{"targetUrl":"https://x.test/h","throttling":{"maxConcurrentRequests":6}}"#,
                ),
                1,
            )
            .expect("saved");
        assert_eq!(s.throttling.period, "SECONDLY");
        assert_eq!(app.target(), Some(("https://x.test/h".to_owned(), 6)));
    }
}
