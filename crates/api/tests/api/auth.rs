use leadsync_store::api_tokens;
use reqwest::Method;
use reqwest::header::WWW_AUTHENTICATE;

use crate::helpers::{TestApi, json_of};

#[tokio::test]
async fn requests_without_a_valid_token_get_401_with_a_bearer_challenge() {
    // Arrange
    let api = TestApi::spawn().await;
    let acme = api.tenant("acme", 1001).await;
    let revoked = api_tokens::issue(api.db.store.pool(), acme.integration.id, "old")
        .await
        .unwrap();
    api_tokens::revoke(api.db.store.pool(), acme.integration.id, revoked.record.id)
        .await
        .unwrap();
    let revoked = secrecy::ExposeSecret::expose_secret(&revoked.token).to_owned();
    let forged = format!("lsk_{}", "A".repeat(43));
    let cases: [(&str, Option<&str>, Option<&str>); 5] = [
        ("no header", None, None),
        (
            "another scheme",
            None,
            Some("Basic YWxhZGRpbjpvcGVuc2VzYW1l"),
        ),
        ("garbage", Some("not-a-token"), None),
        ("unknown token", Some(&forged), None),
        ("revoked token", Some(&revoked), None),
    ];

    for (case, token, raw_header) in cases {
        // Act
        let mut request = api.request(Method::GET, "/v1/leads", token);
        if let Some(raw) = raw_header {
            request = request.header("Authorization", raw);
        }
        let response = request.send().await.unwrap();

        // Assert
        let challenge = response
            .headers()
            .get(WWW_AUTHENTICATE)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = json_of(response, 401).await;
        assert!(challenge.starts_with("Bearer"), "{case}: {challenge}");
        let expected = if token.is_some() {
            "invalid_token"
        } else {
            "missing_token"
        };
        assert_eq!(body["code"], expected, "{case}");
        if token.is_some() {
            assert!(challenge.contains("error=\"invalid_token\""), "{case}");
        }
    }
    // Every /v1 route is behind the token, writes included.
    let write = api
        .request(Method::POST, "/v1/leads", Some("lsk_nope"))
        .json(&serde_json::json!({"email": "a@b.io"}))
        .send()
        .await
        .unwrap();
    assert_eq!(write.status(), 401);
    let leads = leadsync_store::leads::list(
        api.db.store.pool(),
        acme.integration.id,
        &leadsync_store::leads::ListLeads::default(),
    )
    .await
    .unwrap();
    assert!(leads.is_empty(), "a refused write wrote nothing");
    api.finish().await;
}

#[tokio::test]
async fn health_needs_no_token_and_a_valid_token_is_accepted() {
    // Arrange
    let api = TestApi::spawn().await;
    let acme = api.tenant("acme", 1001).await;

    // Act
    let health = api
        .request(Method::GET, "/healthz", None)
        .send()
        .await
        .unwrap();
    let ready = api
        .request(Method::GET, "/readyz", None)
        .send()
        .await
        .unwrap();
    let leads = api.get("/v1/leads", &acme).await;
    let unknown = api.get("/v1/nothing-here", &acme).await;

    // Assert
    assert_eq!(json_of(health, 200).await["status"], "ok");
    assert_eq!(json_of(ready, 200).await["database"], "reachable");
    assert_eq!(json_of(leads, 200).await["data"], serde_json::json!([]));
    assert_eq!(json_of(unknown, 404).await["code"], "not_found");
    api.finish().await;
}
