//! OAuth v1: code exchange, refresh, expiry, and the token errors.

use std::time::Duration;

use leadsync_hubspot_sim::AuthorizeRequest;
use reqwest::StatusCode;
use secrecy::ExposeSecret;

use crate::helpers::{PORTAL, Reply, TestSim, config, start, start_with};

async fn token_request(t: &TestSim, form: &str) -> Reply {
    t.send(
        t.http
            .post(t.url("/oauth/v1/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form.to_owned()),
    )
    .await
}

fn secret(t: &TestSim) -> String {
    t.sim.config().app.client_secret.expose_secret().to_owned()
}

#[tokio::test]
async fn authorization_code_exchange_gives_a_token_for_the_portal() {
    // Arrange
    let t = start().await;

    // Act
    let tokens = t.oauth_token(4242).await;
    let access = tokens["access_token"].as_str().expect("access token");
    let (status, _, _) = t.with_token(access).get("/crm/v3/objects/contacts").await;
    let (info_status, _, info) = t.get(&format!("/oauth/v1/access-tokens/{access}")).await;

    // Assert
    assert_eq!(tokens["token_type"], "bearer");
    assert_eq!(tokens["expires_in"], 1800);
    assert_eq!(tokens["hub_id"], 4242);
    assert!(tokens["refresh_token"].is_string());
    assert!(access.len() > 100 && access.len() <= 512);
    assert_eq!(status, StatusCode::OK);
    assert_eq!(info_status, StatusCode::OK);
    assert_eq!(info["hub_id"], 4242);
    assert_eq!(info["app_id"], t.sim.config().app.app_id);
    assert!(
        t.sim.control().portals().contains(&4242),
        "installing created the account"
    );
}

#[tokio::test]
async fn expired_tokens_get_401_expired_authentication_and_refresh_recovers() {
    // Arrange
    let t = start().await;
    let tokens = t.oauth_token(PORTAL).await;
    let access = tokens["access_token"]
        .as_str()
        .expect("access token")
        .to_owned();
    let refresh = tokens["refresh_token"]
        .as_str()
        .expect("refresh token")
        .to_owned();

    // Act
    assert_eq!(t.sim.control().expire_access_tokens(Some(&access)), 1);
    let (expired, _, expired_body) = t.with_token(&access).get("/crm/v3/objects/contacts").await;
    let app = t.sim.config().app.clone();
    let (refreshed, _, refreshed_body) = token_request(
        &t,
        &format!(
            "grant_type=refresh_token&refresh_token={refresh}&client_id={}&client_secret={}",
            app.client_id,
            secret(&t)
        ),
    )
    .await;
    let new_access = refreshed_body["access_token"].as_str().expect("new token");
    let (ok, _, _) = t
        .with_token(new_access)
        .get("/crm/v3/objects/contacts")
        .await;

    // Assert
    assert_eq!(expired, StatusCode::UNAUTHORIZED);
    assert_eq!(expired_body["category"], "EXPIRED_AUTHENTICATION");
    assert!(
        expired_body["message"].as_str().is_some_and(|m| m
            .starts_with("The OAuth token used to make this call expired")
            && m.ends_with("second(s) ago.")),
        "{expired_body}"
    );
    assert_eq!(refreshed, StatusCode::OK);
    assert_eq!(refreshed_body["refresh_token"], refresh.as_str());
    assert_ne!(new_access, access);
    assert_eq!(ok, StatusCode::OK);
}

#[tokio::test]
async fn access_tokens_expire_after_expires_in() {
    // Arrange
    let mut cfg = config();
    cfg.access_token_ttl = Duration::from_secs(1);
    let t = start_with(cfg).await;
    let tokens = t.oauth_token(PORTAL).await;
    let access = tokens["access_token"].as_str().expect("token");

    // Act
    let (before, _, _) = t.with_token(access).get("/crm/v3/objects/contacts").await;
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let (after, _, body) = t.with_token(access).get("/crm/v3/objects/contacts").await;

    // Assert
    assert_eq!(tokens["expires_in"], 1);
    assert_eq!(before, StatusCode::OK);
    assert_eq!(after, StatusCode::UNAUTHORIZED);
    assert_eq!(body["category"], "EXPIRED_AUTHENTICATION");
}

#[tokio::test]
async fn unknown_and_missing_tokens_get_401() {
    // Arrange
    let t = start().await;

    // Act
    let (unknown, _, unknown_body) = t
        .with_token("thisisatesttoken")
        .get("/crm/v3/objects/contacts")
        .await;
    let (missing, _, missing_body) = t.send(t.http.get(t.url("/crm/v3/objects/contacts"))).await;

    // Assert
    assert_eq!(unknown, StatusCode::UNAUTHORIZED);
    assert_eq!(unknown_body["category"], "INVALID_AUTHENTICATION");
    assert!(
        unknown_body["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Authentication credentials not found."))
    );
    assert_eq!(missing, StatusCode::UNAUTHORIZED);
    assert_eq!(missing_body["category"], "INVALID_AUTHENTICATION");
}

#[tokio::test]
async fn bad_refresh_tokens_codes_and_credentials_get_400() {
    // Arrange
    let t = start().await;
    let app = t.sim.config().app.clone();
    let code = t.sim.control().authorize(AuthorizeRequest {
        portal_id: PORTAL,
        user_id: Some(7),
        redirect_uri: Some("https://app.example.com/cb".to_owned()),
    });

    // Act
    let (bad_refresh, _, bad_refresh_body) = token_request(
        &t,
        &format!(
            "grant_type=refresh_token&refresh_token=nope&client_id={}&client_secret={}",
            app.client_id,
            secret(&t)
        ),
    )
    .await;
    let (bad_secret, _, bad_secret_body) = token_request(
        &t,
        &format!(
            "grant_type=authorization_code&code={}&client_id={}&client_secret=wrong",
            code.code, app.client_id
        ),
    )
    .await;
    let (bad_redirect, _, bad_redirect_body) = token_request(
        &t,
        &format!(
            "grant_type=authorization_code&code={}&client_id={}&client_secret={}&redirect_uri=https%3A%2F%2Fevil.example.com",
            code.code,
            app.client_id,
            secret(&t)
        ),
    )
    .await;
    let (reused, _, reused_body) = token_request(
        &t,
        &format!(
            "grant_type=authorization_code&code={}&client_id={}&client_secret={}&redirect_uri=https%3A%2F%2Fapp.example.com%2Fcb",
            code.code,
            app.client_id,
            secret(&t)
        ),
    )
    .await;

    // Assert
    assert_eq!(bad_refresh, StatusCode::BAD_REQUEST);
    assert_eq!(bad_refresh_body["status"], "BAD_REFRESH_TOKEN");
    assert_eq!(bad_refresh_body["error"], "invalid_grant");
    assert_eq!(bad_secret, StatusCode::BAD_REQUEST);
    assert_eq!(bad_secret_body["status"], "BAD_CLIENT_SECRET");
    assert_eq!(bad_redirect, StatusCode::BAD_REQUEST);
    assert_eq!(bad_redirect_body["status"], "BAD_REDIRECT_URI");
    assert_eq!(
        reused,
        StatusCode::BAD_REQUEST,
        "a code is single-use, even after a failed exchange"
    );
    assert_eq!(reused_body["status"], "BAD_AUTH_CODE");
    assert_eq!(
        code.redirect_url.as_deref(),
        Some(format!("https://app.example.com/cb?code={}", code.code).as_str())
    );
}
