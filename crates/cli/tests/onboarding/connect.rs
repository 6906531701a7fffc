//! `leadsync connect`: the authorization URL, the OAuth code exchange and
//! private-app tokens, stored encrypted at rest.

use std::collections::HashMap;

use leadsync_cli::connect::{self, ConnectOutcome};
use leadsync_domain::{AppId, PortalId};
use leadsync_hubspot_sim::ApiFault;
use leadsync_runtime::Settings;
use leadsync_store::integrations::{self, AuthMode};
use secrecy::{ExposeSecret as _, SecretString};

use crate::helpers::{
    Env, OTHER_PORTAL, OTHER_PRIVATE_TOKEN, PORTAL, PRIVATE_TOKEN, REDIRECT_URI, plain_forms,
};

#[test]
fn the_oauth_url_names_the_client_the_redirect_the_scopes_and_a_fresh_state() {
    // Arrange
    let settings = Settings::from_toml(&format!(
        "[hubspot]\nclient_id = \"my-client\"\nclient_secrets = [\"s\"]\nredirect_uri = \"{REDIRECT_URI}\"\ntoken_encryption_key = \"{}\"",
        leadsync_store::TokenCipher::generate_key().expose_secret()
    ))
    .expect("valid settings");

    // Act
    let first = connect::oauth_url(&settings, "acme").expect("a URL");
    let second = connect::oauth_url(&settings, "acme").expect("a URL");
    let unnamed = connect::oauth_url(&settings, "Not A Name");
    let no_redirect = connect::oauth_url(
        &Settings::from_toml("[hubspot]\nclient_id = \"my-client\"\nclient_secrets = [\"s\"]")
            .expect("valid settings"),
        "acme",
    );

    // Assert
    let url = url::Url::parse(&first.url).expect("a valid URL");
    assert_eq!(
        url.as_str().split('?').next(),
        Some("https://app.hubspot.com/oauth/authorize")
    );
    let query: HashMap<_, _> = url.query_pairs().into_owned().collect();
    assert_eq!(query["client_id"], "my-client");
    assert_eq!(query["redirect_uri"], REDIRECT_URI);
    assert_eq!(
        query["scope"],
        "oauth crm.objects.contacts.read crm.objects.contacts.write crm.schemas.contacts.read crm.schemas.contacts.write"
    );
    assert_eq!(query["state"], first.state);
    assert_ne!(first.state, second.state, "a fresh state each time");
    assert!(unnamed.is_err());
    let message = no_redirect.expect_err("no redirect URI").to_string();
    assert!(message.contains("hubspot.redirect_uri"), "{message}");
}

#[tokio::test]
async fn a_code_exchange_stores_encrypted_tokens_and_reconnecting_renews_them() {
    // Arrange
    let env = Env::new().await;
    let pool = env.db.store.pool();
    let first_code = env.authorize();

    // Act
    let link = connect::oauth_url(&env.settings, "acme").expect("a URL");
    let first = connect::oauth(&env.settings, "acme", &first_code, Some(&link.state))
        .await
        .expect("connected");
    let first_tokens = integrations::tokens(pool, first.integration.id, &env.cipher)
        .await
        .expect("read")
        .expect("stored");
    let first_row = env.raw_row(first.integration.id).await;
    let reused = connect::oauth(&env.settings, "acme", &first_code, None).await;
    let again = connect::oauth(&env.settings, "acme", &env.authorize(), None)
        .await
        .expect("connected again");
    let other_name = connect::oauth(&env.settings, "acme-2", &env.authorize(), None).await;

    // Assert
    assert_eq!(first.outcome, ConnectOutcome::Created);
    let integration = &first.integration;
    assert_eq!(integration.name, "acme");
    assert_eq!(integration.portal_id, PortalId::new(PORTAL));
    assert_eq!(integration.app_id, Some(AppId::new(1_160_452)));
    assert_eq!(integration.auth_mode, AuthMode::OAuth);
    assert!(integration.token_expires_at.is_some());
    // The stored token is the one HubSpot issued for this account…
    let info = env
        .client()
        .access_token_info(&first_tokens.access)
        .await
        .expect("a live token");
    assert_eq!(info.portal, PortalId::new(PORTAL));
    let refresh = first_tokens.refresh.as_ref().expect("a refresh token");
    // …and the row holds neither token in clear.
    for secret in [first_tokens.access.expose_secret(), refresh.expose_secret()] {
        for form in plain_forms(secret) {
            assert!(!first_row.contains(&form), "a token is stored in clear");
        }
    }
    let message = reused.expect_err("a code works once").to_string();
    assert!(
        message.contains("refused the authorization code"),
        "{message}"
    );
    assert_eq!(again.outcome, ConnectOutcome::Renewed);
    assert_eq!(again.integration.id, integration.id);
    let renewed = integrations::tokens(pool, integration.id, &env.cipher)
        .await
        .expect("read")
        .expect("stored");
    assert_ne!(
        renewed.access.expose_secret(),
        first_tokens.access.expose_secret()
    );
    let message = other_name
        .expect_err("one account, one integration")
        .to_string();
    assert!(
        message.contains("already connected as integration `acme`"),
        "{message}"
    );
    let all = integrations::list(pool).await.expect("listed");
    assert_eq!(all.len(), 1, "{all:?}");
    env.finish().await;
}

#[tokio::test]
async fn a_private_app_token_is_checked_then_stored_encrypted_and_a_bad_one_stores_nothing() {
    // Arrange
    let env = Env::new().await;
    let pool = env.db.store.pool();
    let portal = PortalId::new(PORTAL);
    let piped = connect::read_token(format!("{PRIVATE_TOKEN}\n").as_bytes()).expect("a token");

    // Act: without --portal, HubSpot names the token's account.
    let bad = connect::private_app(
        &env.settings,
        "acme",
        Some(portal),
        SecretString::from("pat-na1-not-a-real-token"),
    )
    .await;
    let after_bad = integrations::list(pool).await.expect("listed");
    let good = connect::private_app(&env.settings, "acme", None, piped)
        .await
        .expect("connected");
    let again = connect::private_app(
        &env.settings,
        "acme",
        Some(portal),
        SecretString::from(PRIVATE_TOKEN),
    )
    .await
    .expect("connected again");

    // Assert
    let message = bad.expect_err("a refused token").to_string();
    assert!(
        message.contains("refused the private-app token") && message.contains("nothing was stored"),
        "{message}"
    );
    assert!(after_bad.is_empty(), "{after_bad:?}");
    assert_eq!(good.outcome, ConnectOutcome::Created);
    assert_eq!(good.integration.auth_mode, AuthMode::PrivateApp);
    assert_eq!(good.integration.portal_id, portal);
    let stored = integrations::tokens(pool, good.integration.id, &env.cipher)
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(stored.access.expose_secret(), PRIVATE_TOKEN);
    assert!(stored.refresh.is_none());
    let row = env.raw_row(good.integration.id).await;
    for form in plain_forms(PRIVATE_TOKEN) {
        assert!(!row.contains(&form), "the token is stored in clear");
    }
    assert_eq!(again.outcome, ConnectOutcome::Renewed);
    assert_eq!(integrations::list(pool).await.expect("listed").len(), 1);
    env.finish().await;
}

#[tokio::test]
async fn a_private_app_token_of_another_account_than_portal_stores_nothing() {
    // Arrange: the operator names one account and pastes another's token.
    let env = Env::new().await;
    let pool = env.db.store.pool();

    // Act
    let wrong = connect::private_app(
        &env.settings,
        "acme",
        Some(PortalId::new(PORTAL)),
        SecretString::from(OTHER_PRIVATE_TOKEN),
    )
    .await;
    let after_wrong = integrations::list(pool).await.expect("listed");
    let named = connect::private_app(
        &env.settings,
        "other",
        None,
        SecretString::from(OTHER_PRIVATE_TOKEN),
    )
    .await
    .expect("connected");

    // Assert
    let message = wrong.expect_err("a token of another account").to_string();
    assert!(
        message.contains(&format!("belongs to HubSpot account {OTHER_PORTAL}"))
            && message.contains(&format!("not to --portal {PORTAL}"))
            && message.contains("nothing was stored"),
        "{message}"
    );
    assert!(after_wrong.is_empty(), "{after_wrong:?}");
    assert_eq!(named.integration.portal_id, PortalId::new(OTHER_PORTAL));
    env.finish().await;
}

#[tokio::test]
async fn when_hubspot_will_not_name_the_account_portal_is_required_and_taken_as_given() {
    // Arrange: the account details call is refused (a token without access to it).
    let env = Env::new().await;
    env.sim
        .control()
        .inject_api_fault(ApiFault::new(403).on("GET /account-info/v3/details"))
        .expect("fault injected");

    // Act
    let unnamed = connect::private_app(
        &env.settings,
        "acme",
        None,
        SecretString::from(PRIVATE_TOKEN),
    )
    .await;
    let given = connect::private_app(
        &env.settings,
        "acme",
        Some(PortalId::new(PORTAL)),
        SecretString::from(PRIVATE_TOKEN),
    )
    .await
    .expect("connected with the given account");

    // Assert
    let message = unnamed.expect_err("no account to connect").to_string();
    assert!(
        message.contains("pass --portal") && message.contains("nothing was stored"),
        "{message}"
    );
    assert_eq!(given.outcome, ConnectOutcome::Created);
    assert_eq!(given.integration.portal_id, PortalId::new(PORTAL));
    env.finish().await;
}

#[tokio::test]
async fn a_redirect_whose_state_was_not_issued_for_the_integration_spends_nothing() {
    // Arrange: an install started for `acme`, its redirect pasted for `acme-2`.
    let env = Env::new().await;
    let link = connect::oauth_url(&env.settings, "acme").expect("a URL");
    let code = env.authorize();
    let pasted = format!(
        "{REDIRECT_URI}?code={}&state={}\n",
        code.expose_secret(),
        link.state
    );
    let redirect = connect::read_redirect(pasted.as_bytes()).expect("a redirect URL");

    // Act
    let wrong = connect::oauth(
        &env.settings,
        "acme-2",
        &redirect.code,
        redirect.state.as_deref(),
    )
    .await;
    // A well-formed state, signed by another installation's key.
    let foreign = leadsync_cli::oauth_state::issue(
        &leadsync_cli::oauth_state::StateKey::derive(&leadsync_store::TokenCipher::generate_key())
            .expect("a key"),
        "acme",
        redirect_issued_at(&link.state),
    );
    let forged = connect::oauth(&env.settings, "acme", &redirect.code, Some(&foreign)).await;
    let right = connect::oauth(
        &env.settings,
        "acme",
        &redirect.code,
        redirect.state.as_deref(),
    )
    .await
    .expect("the code was not spent by the refused attempts");

    // Assert
    let message = wrong.expect_err("another integration's state").to_string();
    assert!(
        message.contains("not issued for this integration")
            && message.contains("nothing was stored"),
        "{message}"
    );
    let message = forged
        .expect_err("another installation's state")
        .to_string();
    assert!(message.contains("not issued"), "{message}");
    assert_eq!(right.integration.name, "acme");
    assert_eq!(
        integrations::list(env.db.store.pool())
            .await
            .expect("listed")
            .len(),
        1
    );
    env.finish().await;
}

#[test]
fn a_pasted_redirect_url_gives_its_code_and_state_and_a_refusal_says_why() {
    // Act
    let full = connect::read_redirect(
        format!("\n  {REDIRECT_URI}?code=abc-123&state=5f.aa.bb  \n").as_bytes(),
    )
    .expect("parsed");
    let bare = connect::read_redirect("abc-123\n".as_bytes()).expect("a bare code");
    let denied = connect::read_redirect(
        format!("{REDIRECT_URI}?error=access_denied&error_description=User%20denied\n").as_bytes(),
    );
    let stateless = connect::read_redirect(format!("{REDIRECT_URI}?code=abc\n").as_bytes());

    // Assert
    assert_eq!(full.code.expose_secret(), "abc-123");
    assert_eq!(full.state.as_deref(), Some("5f.aa.bb"));
    assert_eq!(bare.code.expose_secret(), "abc-123");
    assert!(bare.state.is_none());
    let message = denied.expect_err("a refused install").to_string();
    assert!(
        message.contains("access_denied") && message.contains("User denied"),
        "{message}"
    );
    let message = stateless.expect_err("no state").to_string();
    assert!(message.contains("no `state`"), "{message}");
    let message = connect::require_state(&bare, false)
        .expect_err("a bare code needs --skip-state-check")
        .to_string();
    assert!(message.contains("--skip-state-check"), "{message}");
    assert!(connect::require_state(&bare, true).expect("let through"));
    assert!(!connect::require_state(&full, false).expect("a state to check"));
}

/// The issue time (Unix seconds) a state carries.
fn redirect_issued_at(state: &str) -> u64 {
    let issued = state.split('.').next().expect("a state");
    u64::from_str_radix(issued, 16).expect("hex seconds")
}
