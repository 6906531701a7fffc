//! Webhook management (Webhooks API v3): the app's settings and subscriptions,
//! authenticated with the developer API key.

use leadsync_domain::AppId;
use leadsync_hubspot::{DeveloperApp, HubSpotError, NewSubscription, Throttling, WebhookSettings};

use crate::helpers::{client, sim};

const APP_ID: u64 = 1_160_452;

fn app(key: &str) -> DeveloperApp {
    DeveloperApp {
        app_id: AppId::new(APP_ID),
        api_key: key.into(),
    }
}

fn new_subscription(event_type: &str, property: Option<&str>) -> NewSubscription {
    NewSubscription {
        event_type: event_type.to_owned(),
        property_name: property.map(str::to_owned),
        active: true,
    }
}

#[tokio::test]
async fn settings_are_absent_then_saved_and_a_wrong_key_is_refused() {
    // Arrange
    let sim = sim().await;
    let client = client(&sim);
    let app = app("sim-developer-key");

    // Act
    let before = client.get_webhook_settings(&app).await;
    let saved = client
        .put_webhook_settings(
            &app,
            &WebhookSettings {
                target_url: "https://leadsync.example.com/webhooks/hubspot/acme".to_owned(),
                throttling: Throttling::default(),
                created_at: None,
                updated_at: None,
            },
        )
        .await;
    let after = client.get_webhook_settings(&app).await;
    let wrong_key = client.get_webhook_settings(&self::app("not-the-key")).await;

    // Assert
    assert_eq!(before.expect("read"), None);
    let saved = saved.expect("saved");
    assert_eq!(
        saved.target_url,
        "https://leadsync.example.com/webhooks/hubspot/acme"
    );
    assert_eq!(saved.throttling.max_concurrent_requests, 10);
    assert!(saved.updated_at.is_some());
    assert_eq!(after.expect("read"), Some(saved));
    assert!(
        matches!(wrong_key, Err(HubSpotError::Unauthorized { .. })),
        "{wrong_key:?}"
    );
    let stats = sim.control().stats();
    assert_eq!(stats.calls("PUT /webhooks/v3/{appId}/settings"), 1);
    assert_eq!(stats.calls("GET /webhooks/v3/{appId}/settings"), 3);
    sim.stop().await;
}

#[tokio::test]
async fn subscriptions_are_created_listed_and_switched_on_and_off() {
    // Arrange
    let sim = sim().await;
    let client = client(&sim);
    let app = app("sim-developer-key");

    // Act
    let empty = client.list_subscriptions(&app).await.expect("listed");
    let creation = client
        .create_subscription(&app, &new_subscription("contact.creation", None))
        .await
        .expect("created");
    let email = client
        .create_subscription(
            &app,
            &new_subscription("contact.propertyChange", Some("email")),
        )
        .await
        .expect("created");
    let duplicate = client
        .create_subscription(
            &app,
            &new_subscription("contact.propertyChange", Some("email")),
        )
        .await;
    let off = client
        .set_subscription_active(&app, &email.id, false)
        .await
        .expect("updated");
    let listed = client.list_subscriptions(&app).await.expect("listed");

    // Assert
    assert!(empty.is_empty());
    assert_eq!(creation.event_type, "contact.creation");
    assert!(creation.active);
    assert_eq!(creation.property_name, None);
    assert_eq!(email.property_name.as_deref(), Some("email"));
    assert!(
        matches!(duplicate, Err(HubSpotError::Permanent { status: 409, .. })),
        "{duplicate:?}"
    );
    assert!(!off.active);
    assert_eq!(listed.len(), 2);
    let listed_email = listed
        .iter()
        .find(|s| s.id == email.id)
        .expect("listed by id");
    assert!(!listed_email.active);
    assert!(listed.iter().any(|s| s.id == creation.id && s.active));
    sim.stop().await;
}
