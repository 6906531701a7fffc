//! An account connected through OAuth: the worker refreshes its expired
//! access token through the Postgres token store and keeps the new one there,
//! encrypted.

use std::time::Duration;

use leadsync_domain::PortalId;
use leadsync_hubspot::{Client, ClientConfig, OAuthApp};
use leadsync_hubspot_sim::AuthorizeRequest;
use leadsync_store::IntegrationSettings;
use leadsync_store::integrations::{self, AuthMode, NewIntegration, Tokens};
use secrecy::ExposeSecret as _;

use crate::helpers::{PORTAL, RunningWorker, TestEnv};

const TOKEN_ENDPOINT: &str = "POST /oauth/v1/token";
const OAUTH_SETTINGS: &str = r#"
[hubspot]
client_id = "sim-client-id"
client_secrets = ["sim-client-secret"]
"#;

#[tokio::test]
async fn an_expired_oauth_token_is_refreshed_and_stored_encrypted() {
    // Arrange: the account is installed through OAuth, then its access
    // token expires.
    let mut env = TestEnv::without_integration().await;
    let code = env.sim.control().authorize(AuthorizeRequest {
        portal_id: PORTAL,
        user_id: None,
        redirect_uri: None,
    });
    let mut config = ClientConfig::new(env.sim.base_url().parse().expect("URL"));
    config.oauth_app = Some(OAuthApp {
        client_id: "sim-client-id".to_owned(),
        client_secret: "sim-client-secret".into(),
    });
    let installed = Client::builder(config)
        .build()
        .expect("client")
        .exchange_code(&code.code, "")
        .await
        .expect("code exchange");
    let integration = integrations::create(
        env.db.store.pool(),
        &NewIntegration {
            name: "oauth-acme".into(),
            portal_id: PortalId::new(PORTAL),
            app_id: None,
            auth_mode: AuthMode::OAuth,
            settings: IntegrationSettings::default(),
        },
    )
    .await
    .expect("integration");
    integrations::store_tokens(
        env.db.store.pool(),
        integration.id,
        &env.cipher(),
        &Tokens {
            access: installed.access_token.clone(),
            refresh: Some(installed.refresh_token.clone()),
            expires_at: Some(installed.expires_at),
        },
    )
    .await
    .expect("tokens stored");
    env.integration = integration;
    assert_eq!(env.sim.control().expire_access_tokens(None), 1);
    let contact = env.create_contact("oauth@example.com");

    // Act
    let worker = RunningWorker::start(&env.settings(OAUTH_SETTINGS)).await;
    env.push(&[env.creation(contact)]).await;
    let leads = env.wait_for_leads(1, Duration::from_secs(20)).await;

    // Assert: one refresh, the lead, and a new access token at rest.
    assert_eq!(leads.len(), 1);
    assert_eq!(
        env.sim.control().stats().calls(TOKEN_ENDPOINT),
        2,
        "exchange + one refresh"
    );
    let stored = integrations::tokens(env.db.store.pool(), env.integration.id, &env.cipher())
        .await
        .expect("tokens decrypt")
        .expect("tokens stored");
    assert_ne!(
        stored.access.expose_secret(),
        installed.access_token.expose_secret(),
        "the refreshed token replaced the expired one"
    );
    assert_eq!(
        stored
            .refresh
            .as_ref()
            .map(|r| r.expose_secret().to_owned()),
        Some(installed.refresh_token.expose_secret().to_owned())
    );
    assert!(stored.expires_at.is_some_and(|at| at > chrono::Utc::now()));
    worker.stop(Duration::from_secs(15)).await;
    env.finish().await;
}
