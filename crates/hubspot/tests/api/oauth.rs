//! OAuth: code exchange, refusal, refresh on expiry, and single-flight refresh
//! across two "processes" sharing Redis.

use std::sync::Arc;

use chrono::Utc;
use futures::future::join_all;
use leadsync_hubspot::{
    Client, HubSpotError, InMemoryTokenStore, OAuthTokens, OAuthTokensConfig, TokenSet,
};
use leadsync_hubspot_sim::{AuthorizeRequest, SimHandle};
use secrecy::{ExposeSecret, SecretString};

use crate::helpers::{PORTAL, config, portal, prefix, redis, sim};

const TOKEN_ENDPOINT: &str = "POST /oauth/v1/token";
const REDIRECT: &str = "https://app.example.com/oauth/callback";

async fn install(sim: &SimHandle) -> TokenSet {
    let code = sim.control().authorize(AuthorizeRequest {
        portal_id: PORTAL,
        user_id: None,
        redirect_uri: Some(REDIRECT.to_owned()),
    });
    let client = Client::builder(config(&sim.base_url()))
        .build()
        .expect("client builds");
    client
        .exchange_code(&code.code, REDIRECT)
        .await
        .expect("code exchange succeeds")
}

/// One "process": its own client, token cache and Redis connection.
async fn process(sim: &SimHandle, store: &InMemoryTokenStore, prefix: &str) -> Client {
    let tokens = OAuthTokens::new(
        redis().await,
        Arc::new(store.clone()),
        OAuthTokensConfig {
            key_prefix: prefix.to_owned(),
            ..OAuthTokensConfig::default()
        },
    );
    Client::builder(config(&sim.base_url()))
        .oauth_tokens(tokens)
        .build()
        .expect("client builds")
}

fn refreshes(sim: &SimHandle) -> u64 {
    // The first token call of every test is the install's code exchange.
    sim.control().stats().calls(TOKEN_ENDPOINT) - 1
}

#[tokio::test]
async fn exchange_code_returns_tokens_and_refused_grants_need_reauthorization() {
    // Arrange
    let sim = sim().await;
    let client = Client::builder(config(&sim.base_url()))
        .build()
        .expect("client builds");
    let code = sim.control().authorize(AuthorizeRequest {
        portal_id: PORTAL,
        user_id: None,
        redirect_uri: Some(REDIRECT.to_owned()),
    });

    // Act
    let tokens = client.exchange_code(&code.code, REDIRECT).await;
    let reused_code = client.exchange_code(&code.code, REDIRECT).await;
    let bad_refresh = client
        .refresh(&SecretString::from("no-such-refresh-token"))
        .await;

    // Assert
    let tokens = tokens.expect("code exchange succeeds");
    assert_eq!(tokens.portal, Some(portal()));
    assert!(tokens.expires_at > Utc::now() + chrono::Duration::seconds(1700));
    assert!(
        matches!(
            reused_code,
            Err(HubSpotError::ReauthorizationRequired { .. })
        ),
        "{reused_code:?}"
    );
    assert!(
        matches!(
            bad_refresh,
            Err(HubSpotError::ReauthorizationRequired { .. })
        ),
        "{bad_refresh:?}"
    );
    let secret = tokens.access_token.expose_secret().to_owned();
    assert!(
        !format!("{tokens:?}").contains(&secret),
        "Debug never shows a token"
    );
}

#[tokio::test]
async fn an_expired_access_token_is_refreshed_once_and_the_call_succeeds() {
    // Arrange
    let sim = sim().await;
    let store = InMemoryTokenStore::new();
    store.insert(portal(), install(&sim).await);
    let client = process(&sim, &store, &prefix()).await;
    client
        .list_contacts(portal(), None, 1, &[])
        .await
        .expect("the stored access token works");
    assert_eq!(refreshes(&sim), 0);

    // Act
    assert_eq!(sim.control().expire_access_tokens(None), 1);
    let after_expiry = client.list_contacts(portal(), None, 1, &[]).await;

    // Assert
    after_expiry.expect("refreshed and retried");
    assert_eq!(refreshes(&sim), 1);
    assert_eq!(store.saves(), 1, "the refreshed tokens are persisted");
}

#[tokio::test]
async fn two_processes_refreshing_concurrently_spend_the_refresh_token_once() {
    // Arrange: the stored access token is already past its expiry.
    let sim = sim().await;
    let store = InMemoryTokenStore::new();
    let mut installed = install(&sim).await;
    installed.expires_at = Utc::now() - chrono::Duration::seconds(1);
    store.insert(portal(), installed);
    let prefix = prefix();
    let a = process(&sim, &store, &prefix).await;
    let b = process(&sim, &store, &prefix).await;
    let burst = |a: Client, b: Client| async move {
        let calls = (0..10).flat_map(|_| {
            let (a, b) = (a.clone(), b.clone());
            [
                tokio::spawn(async move { a.list_contacts(portal(), None, 1, &[]).await }),
                tokio::spawn(async move { b.list_contacts(portal(), None, 1, &[]).await }),
            ]
        });
        join_all(calls).await
    };

    // Act: a cold start, then every token expiring under both processes.
    let cold = burst(a.clone(), b.clone()).await;
    let refreshes_at_start = refreshes(&sim);
    sim.control().expire_access_tokens(None);
    let expired = burst(a, b).await;

    // Assert
    for result in cold.into_iter().chain(expired) {
        result.expect("task runs").expect("call succeeds");
    }
    assert_eq!(refreshes_at_start, 1, "one refresh for the cold start");
    assert_eq!(refreshes(&sim), 2, "one more after the expiry");
    assert_eq!(store.saves(), 2);
}
