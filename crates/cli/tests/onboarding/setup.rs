//! `leadsync setup`: the property, the target URL and the subscriptions are
//! created once; a second run sends no write to HubSpot.

use leadsync_cli::connect;
use leadsync_cli::setup::{self, Change, SetupOptions};
use leadsync_domain::PortalId;
use leadsync_hubspot::{NewSubscription, Subscription, Throttling, TokenSource, WebhookSettings};
use secrecy::SecretString;

use crate::helpers::{APP_ID, Env, PORTAL, PRIVATE_TOKEN, PUBLIC_BASE_URL};
use crate::lossy_proxy::LossyProxy;

/// Every HubSpot endpoint that changes the property or the webhooks.
const WRITES: [&str; 6] = [
    "POST /crm/v3/properties/contacts",
    "PATCH /crm/v3/properties/contacts/{propertyName}",
    "PUT /webhooks/v3/{appId}/settings",
    "POST /webhooks/v3/{appId}/subscriptions",
    "PATCH /webhooks/v3/{appId}/subscriptions/{subscriptionId}",
    "POST /webhooks/v3/{appId}/subscriptions/batch/update",
];

/// The mapped properties of the default field mapping.
const MAPPED: [&str; 9] = [
    "firstname",
    "lastname",
    "email",
    "phone",
    "company",
    "jobtitle",
    "city",
    "country",
    "hs_lead_status",
];

async fn connect_oauth(env: &Env) {
    connect::oauth(&env.settings, "acme", &env.authorize(), None)
        .await
        .expect("connected");
}

/// The options of `lead_source_system`, read with the account's private-app token.
async fn source_property_options(env: &Env) -> Vec<String> {
    let client = env.client();
    let portal = PortalId::new(PORTAL);
    client.set_token_source(portal, TokenSource::PrivateApp(PRIVATE_TOKEN.into()));
    client
        .get_property(portal, "lead_source_system")
        .await
        .expect("the property exists")
        .options
        .into_iter()
        .map(|o| o.value)
        .collect()
}

fn writes(env: &Env) -> u64 {
    WRITES.iter().map(|e| env.calls(e)).sum()
}

/// The app's subscriptions as (event type, property, active), sorted.
async fn subscriptions(env: &Env) -> Vec<Subscription> {
    let mut all = env
        .client()
        .list_subscriptions(&env.developer())
        .await
        .expect("listed");
    all.sort_by(|a, b| a.id.cmp(&b.id));
    all
}

#[tokio::test]
async fn setup_creates_the_property_the_target_url_and_an_active_subscription_per_event() {
    // Arrange
    let env = Env::new().await;
    connect_oauth(&env).await;

    // Act
    let report = setup::run(&env.settings, "acme", SetupOptions::default())
        .await
        .expect("setup runs");

    // Assert
    assert_eq!(report.created(), 1 + 1 + 5 + MAPPED.len(), "{report}");
    assert_eq!(report.changed(), report.created(), "{report}");
    assert_eq!(source_property_options(&env).await, ["jazzaam"]);
    let settings = env
        .client()
        .get_webhook_settings(&env.developer())
        .await
        .expect("read")
        .expect("saved");
    assert_eq!(
        settings.target_url,
        format!("{PUBLIC_BASE_URL}/webhooks/hubspot/acme")
    );
    let subscriptions = subscriptions(&env).await;
    assert!(subscriptions.iter().all(|s| s.active), "{subscriptions:?}");
    let mut got: Vec<(String, Option<String>)> = subscriptions
        .into_iter()
        .map(|s| (s.event_type, s.property_name))
        .collect();
    got.sort();
    let mut wanted: Vec<(String, Option<String>)> = setup::event_types()
        .map(|t| (t.as_str().to_owned(), None))
        .chain(
            MAPPED
                .iter()
                .map(|p| ("contact.propertyChange".to_owned(), Some((*p).to_owned()))),
        )
        .collect();
    wanted.sort();
    assert_eq!(got, wanted);
    assert_eq!(env.calls("POST /crm/v3/properties/contacts"), 1);
    env.finish().await;
}

#[tokio::test]
async fn a_second_run_creates_nothing_and_changes_nothing() {
    // Arrange
    let env = Env::new().await;
    connect_oauth(&env).await;
    setup::run(&env.settings, "acme", SetupOptions::default())
        .await
        .expect("first run");
    let writes_before = writes(&env);
    let settings_before = env
        .client()
        .get_webhook_settings(&env.developer())
        .await
        .expect("read");
    let subscriptions_before = subscriptions(&env).await;

    // Act
    let second = setup::run(&env.settings, "acme", SetupOptions::default())
        .await
        .expect("second run");

    // Assert
    assert_eq!(second.changed(), 0, "{second}");
    assert!(
        second.steps.iter().all(|s| s.change == Change::Existed),
        "{second}"
    );
    assert_eq!(second.steps.len(), 1 + 1 + 5 + MAPPED.len());
    assert_eq!(writes(&env), writes_before, "no write reached HubSpot");
    let settings_after = env
        .client()
        .get_webhook_settings(&env.developer())
        .await
        .expect("read");
    assert_eq!(settings_after, settings_before, "updatedAt unchanged too");
    assert_eq!(subscriptions(&env).await, subscriptions_before);
    env.finish().await;
}

#[tokio::test]
async fn an_inactive_subscription_is_activated_and_an_app_wide_url_is_kept() {
    // Arrange
    let env = Env::new().await;
    connect_oauth(&env).await;
    let client = env.client();
    let app = env.developer();
    let app_wide = format!("{PUBLIC_BASE_URL}/webhooks/hubspot");
    client
        .put_webhook_settings(
            &app,
            &WebhookSettings {
                target_url: app_wide.clone(),
                throttling: Throttling::default(),
                created_at: None,
                updated_at: None,
            },
        )
        .await
        .expect("saved");
    let inactive = client
        .create_subscription(
            &app,
            &NewSubscription {
                event_type: "contact.creation".to_owned(),
                property_name: None,
                active: false,
            },
        )
        .await
        .expect("created");

    // Act
    let report = setup::run(&env.settings, "acme", SetupOptions::default())
        .await
        .expect("setup runs");

    // Assert
    let creation = report
        .steps
        .iter()
        .find(|s| s.item == "subscription contact.creation")
        .expect("handled");
    assert_eq!(creation.change, Change::Updated("activated".to_owned()));
    let target = report
        .steps
        .iter()
        .find(|s| s.item.starts_with("webhook target URL"))
        .expect("handled");
    assert_eq!(target.change, Change::Existed, "{report}");
    let after = subscriptions(&env).await;
    assert!(after.iter().any(|s| s.id == inactive.id && s.active));
    let settings = client
        .get_webhook_settings(&app)
        .await
        .expect("read")
        .expect("saved");
    assert_eq!(settings.target_url, app_wide);
    env.finish().await;
}

#[tokio::test]
async fn a_subscription_create_retried_after_a_lost_answer_counts_as_existing() {
    // Arrange
    let env = Env::new().await;
    connect_oauth(&env).await;
    // HubSpot creates the first subscription, its answer is lost (502), the
    // client retries, and the retry is answered 409: it exists.
    let proxy = LossyProxy::spawn(
        &env.sim.base_url(),
        &format!("POST /webhooks/v3/{APP_ID}/subscriptions?"),
        1,
    )
    .await;
    let mut settings = env.settings.clone();
    settings.hubspot.api_base_url.clone_from(&proxy.url);

    // Act
    let report = setup::run(&settings, "acme", SetupOptions::default())
        .await
        .expect("setup runs");
    let creates = env.calls("POST /webhooks/v3/{appId}/subscriptions");
    let lists = env.calls("GET /webhooks/v3/{appId}/subscriptions");

    // Assert
    assert_eq!(proxy.lost(), 1);
    let creation = report
        .steps
        .iter()
        .find(|s| s.item == "subscription contact.creation")
        .expect("handled");
    assert_eq!(creation.change, Change::Existed, "{report}");
    assert_eq!(report.created(), 1 + 1 + 4 + MAPPED.len(), "{report}");
    let all = subscriptions(&env).await;
    assert_eq!(all.len(), 5 + MAPPED.len(), "one each: {all:?}");
    assert!(all.iter().all(|s| s.active), "{all:?}");
    assert_eq!(
        creates,
        1 + 5 + MAPPED.len() as u64,
        "the lost create was sent again"
    );
    assert_eq!(lists, 2, "listed again after the 409");
    env.finish().await;
}

#[tokio::test]
async fn another_integrations_target_url_is_not_overwritten_unless_asked_for_the_app_wide_one() {
    // Arrange
    let env = Env::new().await;
    connect_oauth(&env).await;
    let client = env.client();
    let app = env.developer();
    let other = format!("{PUBLIC_BASE_URL}/webhooks/hubspot/other-tenant");
    client
        .put_webhook_settings(
            &app,
            &WebhookSettings {
                target_url: other.clone(),
                throttling: Throttling::default(),
                created_at: None,
                updated_at: None,
            },
        )
        .await
        .expect("saved");

    // Act
    let refused = setup::run(&env.settings, "acme", SetupOptions::default()).await;
    let kept = client.get_webhook_settings(&app).await.expect("read");
    let app_wide = setup::run(&env.settings, "acme", SetupOptions { app_wide_url: true })
        .await
        .expect("setup runs");

    // Assert
    let message = refused.expect_err("another integration's URL").to_string();
    assert!(message.contains("--app-wide-url"), "{message}");
    assert_eq!(kept.expect("saved").target_url, other);
    let target = app_wide
        .steps
        .iter()
        .find(|s| s.item.starts_with("webhook target URL"))
        .expect("handled");
    assert_eq!(target.change, Change::Updated(format!("was {other}")));
    let saved = client
        .get_webhook_settings(&app)
        .await
        .expect("read")
        .expect("saved");
    assert_eq!(
        saved.target_url,
        format!("{PUBLIC_BASE_URL}/webhooks/hubspot")
    );
    env.finish().await;
}

#[tokio::test]
async fn a_private_app_account_gets_the_property_and_a_list_of_webhooks_to_set_by_hand() {
    // Arrange
    let env = Env::new().await;
    connect::private_app(
        &env.settings,
        "acme",
        Some(PortalId::new(PORTAL)),
        SecretString::from(PRIVATE_TOKEN),
    )
    .await
    .expect("connected");

    // Act
    let first = setup::run(&env.settings, "acme", SetupOptions::default())
        .await
        .expect("setup runs");
    let second = setup::run(&env.settings, "acme", SetupOptions::default())
        .await
        .expect("setup runs again");

    // Assert
    assert_eq!(first.created(), 1, "the property: {first}");
    assert_eq!(first.manual(), 1 + 5 + MAPPED.len(), "{first}");
    assert_eq!(second.changed(), 0, "{second}");
    assert_eq!(env.calls("PUT /webhooks/v3/{appId}/settings"), 0);
    assert_eq!(env.calls("GET /webhooks/v3/{appId}/subscriptions"), 0);
    assert_eq!(source_property_options(&env).await, ["jazzaam"]);
    env.finish().await;
}
