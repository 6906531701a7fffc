//! Webhooks API v3 management: settings and subscriptions.

use reqwest::StatusCode;
use secrecy::ExposeSecret;
use serde_json::json;

use crate::helpers::{PORTAL, TestSim, start};

fn hooks(t: &TestSim, path: &str) -> String {
    let app = &t.sim.config().app;
    format!(
        "{}/webhooks/v3/{}{path}?hapikey={}",
        t.sim.base_url(),
        app.app_id,
        app.developer_api_key.expose_secret()
    )
}

#[tokio::test]
async fn settings_are_managed_with_the_developer_key() {
    // Arrange
    let t = start().await;
    let body = json!({ "targetUrl": "https://example.com/hubspot", "throttling": { "maxConcurrentRequests": 10, "period": "SECONDLY" } });

    // Act
    let (missing, _, _) = t.send(t.http.get(hooks(&t, "/settings"))).await;
    let (put, _, put_body) = t.send(t.http.put(hooks(&t, "/settings")).json(&body)).await;
    let (get, _, get_body) = t.send(t.http.get(hooks(&t, "/settings"))).await;
    let (too_few, _, _) = t
        .send(
            t.http
                .put(hooks(&t, "/settings"))
                .json(&json!({ "targetUrl": "https://example.com/h", "throttling": { "maxConcurrentRequests": 5 } })),
        )
        .await;
    let wrong_key = format!(
        "{}/webhooks/v3/{}/settings?hapikey=wrong",
        t.sim.base_url(),
        t.sim.config().app.app_id
    );
    let (unauthorized, _, unauthorized_body) = t.send(t.http.get(wrong_key)).await;
    let wrong_app = format!(
        "{}/webhooks/v3/1/settings?hapikey=sim-developer-key",
        t.sim.base_url()
    );
    let (not_ours, _, _) = t.send(t.http.get(wrong_app)).await;
    let (deleted, _, _) = t.send(t.http.delete(hooks(&t, "/settings"))).await;
    let (after, _, _) = t.send(t.http.get(hooks(&t, "/settings"))).await;

    // Assert
    assert_eq!(missing, StatusCode::NOT_FOUND);
    assert_eq!(put, StatusCode::OK, "{put_body}");
    assert_eq!(put_body["targetUrl"], "https://example.com/hubspot");
    assert_eq!(get, StatusCode::OK);
    assert_eq!(get_body["throttling"]["maxConcurrentRequests"], 10);
    assert!(get_body["createdAt"].is_string() && get_body["updatedAt"].is_string());
    assert_eq!(too_few, StatusCode::BAD_REQUEST);
    assert_eq!(unauthorized, StatusCode::UNAUTHORIZED);
    assert_eq!(unauthorized_body["category"], "INVALID_AUTHENTICATION");
    assert_eq!(not_ours, StatusCode::NOT_FOUND);
    assert_eq!(deleted, StatusCode::NO_CONTENT);
    assert_eq!(after, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn subscriptions_can_be_created_listed_patched_and_deleted() {
    // Arrange
    let t = start().await;

    // Act
    let (created, _, sub) = t
        .send(
            t.http
                .post(hooks(&t, "/subscriptions"))
                .json(&json!({ "eventType": "contact.propertyChange", "propertyName": "email" })),
        )
        .await;
    let id = sub["id"].as_str().expect("string id").to_owned();
    let (duplicate, _, _) = t
        .send(
            t.http
                .post(hooks(&t, "/subscriptions"))
                .json(&json!({ "eventType": "contact.propertyChange", "propertyName": "email" })),
        )
        .await;
    let (no_property, _, _) = t
        .send(
            t.http
                .post(hooks(&t, "/subscriptions"))
                .json(&json!({ "eventType": "contact.propertyChange" })),
        )
        .await;
    let (_, _, list) = t.send(t.http.get(hooks(&t, "/subscriptions"))).await;
    let (patched, _, patched_body) = t
        .send(
            t.http
                .patch(hooks(&t, &format!("/subscriptions/{id}")))
                .json(&json!({ "active": true })),
        )
        .await;
    let (batch, _, batch_body) = t
        .send(
            t.http
                .post(hooks(&t, "/subscriptions/batch/update"))
                .json(&json!({ "inputs": [{ "id": id.parse::<u64>().expect("numeric"), "active": false }, { "id": 4567, "active": true }] })),
        )
        .await;
    let (deleted, _, _) = t
        .send(t.http.delete(hooks(&t, &format!("/subscriptions/{id}"))))
        .await;
    let (gone, _, _) = t
        .send(t.http.get(hooks(&t, &format!("/subscriptions/{id}"))))
        .await;

    // Assert
    assert_eq!(created, StatusCode::CREATED);
    assert_eq!(sub["eventType"], "contact.propertyChange");
    assert_eq!(sub["propertyName"], "email");
    assert_eq!(sub["active"], false, "the API's default");
    assert_eq!(duplicate, StatusCode::CONFLICT);
    assert_eq!(no_property, StatusCode::BAD_REQUEST);
    assert_eq!(list["results"].as_array().map(Vec::len), Some(1));
    assert_eq!(patched, StatusCode::OK);
    assert_eq!(patched_body["active"], true);
    assert_eq!(batch, StatusCode::MULTI_STATUS);
    assert_eq!(batch_body["results"][0]["active"], false);
    assert_eq!(
        batch_body["errors"][0]["category"],
        "SUBSCRIPTION_ID_NOT_FOUND"
    );
    assert_eq!(deleted, StatusCode::NO_CONTENT);
    assert_eq!(gone, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_apps_own_oauth_token_may_manage_webhooks_but_a_private_app_may_not() {
    // Arrange
    let t = start().await;
    let tokens = t.oauth_token(PORTAL).await;
    let access = tokens["access_token"].as_str().expect("token");
    let url = format!(
        "{}/webhooks/v3/{}/subscriptions",
        t.sim.base_url(),
        t.sim.config().app.app_id
    );

    // Act
    let (oauth, _, _) = t.send(t.http.get(&url).bearer_auth(access)).await;
    let (private, _, _) = t.send(t.http.get(&url).bearer_auth(&t.token)).await;

    // Assert
    assert_eq!(oauth, StatusCode::OK);
    assert_eq!(private, StatusCode::UNAUTHORIZED);
}
