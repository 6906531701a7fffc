use leadsync_domain::PortalId;
use leadsync_store::dead_letters::{self, DeadLetterKind, NewDeadLetter};
use reqwest::Method;
use serde_json::json;

use crate::helpers::{TestApi, json_of};

#[tokio::test]
async fn a_token_never_sees_or_changes_another_integrations_data() {
    // Arrange
    let api = TestApi::spawn().await;
    let acme = api.tenant("acme", 1001).await;
    let globex = api.tenant("globex", 1002).await;
    let lead = api
        .create_lead(&acme, &json!({"email": "ada@acme.io", "first_name": "Ada"}))
        .await;
    let id = lead["id"].as_str().unwrap();
    let letter = dead_letters::record(
        api.db.store.pool(),
        &NewDeadLetter {
            integration_id: Some(acme.integration.id),
            portal_id: Some(PortalId::new(1001)),
            event_key: "hs:1001:1:1:1:1".to_owned(),
            kind: DeadLetterKind::InboundEvent,
            reason: "hubspot_validation".to_owned(),
            payload: json!({"portalId": 1001}),
        },
    )
    .await
    .unwrap();

    // Act
    let read = api.get(&format!("/v1/leads/{id}"), &globex).await;
    let status = api
        .get(&format!("/v1/leads/{id}/sync-status"), &globex)
        .await;
    let patch = api
        .send_json(
            Method::PATCH,
            &format!("/v1/leads/{id}"),
            &globex,
            &json!({"first_name": "Mallory"}),
        )
        .await;
    let delete = api
        .request(
            Method::DELETE,
            &format!("/v1/leads/{id}"),
            Some(&globex.token),
        )
        .send()
        .await
        .unwrap();
    let list = api.get("/v1/leads?include_deleted=true", &globex).await;
    let letters = api
        .get("/v1/dead-letters?include_replayed=true", &globex)
        .await;
    let replay = api
        .request(
            Method::POST,
            &format!("/v1/dead-letters/{}/replay", letter.id),
            Some(&globex.token),
        )
        .send()
        .await
        .unwrap();
    let same_email = api
        .send_json(
            Method::POST,
            "/v1/leads",
            &globex,
            &json!({"email": "ada@acme.io"}),
        )
        .await;

    // Assert: 404, never 403, so existence does not leak.
    for (what, response) in [
        ("read", read),
        ("status", status),
        ("patch", patch),
        ("delete", delete),
    ] {
        assert_eq!(json_of(response, 404).await["code"], "not_found", "{what}");
    }
    assert_eq!(json_of(list, 200).await["data"], json!([]));
    assert_eq!(json_of(letters, 200).await["data"], json!([]));
    assert_eq!(json_of(replay, 404).await["code"], "not_found");
    assert_eq!(
        json_of(same_email, 201).await["email"],
        "ada@acme.io",
        "addresses are unique per integration"
    );
    let untouched = json_of(api.get(&format!("/v1/leads/{id}"), &acme).await, 200).await;
    assert_eq!(untouched["first_name"], "Ada");
    assert_eq!(untouched["deleted_at"], serde_json::Value::Null);
    let open = dead_letters::get(api.db.store.pool(), letter.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        open.replayed_at, None,
        "the other tenant's replay did nothing"
    );
    api.finish().await;
}
