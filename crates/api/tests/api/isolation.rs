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

/// A webhook event of portal 1002 as HubSpot sends it, with personal data.
fn foreign_event() -> serde_json::Value {
    json!({
        "eventId": 777,
        "subscriptionId": 7,
        "portalId": 1002,
        "appId": 99,
        "occurredAt": 1_780_000_000_000_i64,
        "subscriptionType": "contact.propertyChange",
        "attemptNumber": 0,
        "objectId": 91,
        "propertyName": "email",
        "propertyValue": "grace@globex.io",
        "changeSource": "CRM_UI",
    })
}

#[tokio::test]
async fn an_event_of_another_portal_belongs_to_that_portals_integration() {
    // Arrange: an event of globex's portal, posted to acme's webhook URL;
    // the worker records it under acme (`portal_mismatch`).
    let api = TestApi::spawn().await;
    let acme = api.tenant("acme", 1001).await;
    let globex = api.tenant("globex", 1002).await;
    let event = foreign_event();
    let raw = serde_json::value::to_raw_value(&event).unwrap();
    let key = leadsync_domain::WebhookEvent::from_raw(&raw).key().clone();
    let letter = dead_letters::record(
        api.db.store.pool(),
        &NewDeadLetter {
            integration_id: Some(acme.integration.id),
            portal_id: Some(PortalId::new(1002)),
            event_key: key.as_str().to_owned(),
            kind: DeadLetterKind::InboundEvent,
            reason: "portal_mismatch".to_owned(),
            payload: event.clone(),
        },
    )
    .await
    .unwrap();
    let replay_as = |token: String| {
        api.request(
            Method::POST,
            &format!("/v1/dead-letters/{}/replay", letter.id),
            Some(&token),
        )
        .send()
    };

    // Act
    let acme_list = api
        .get("/v1/dead-letters?include_replayed=true", &acme)
        .await;
    let acme_replay = replay_as(acme.token.clone()).await.unwrap();
    let globex_list = api.get("/v1/dead-letters", &globex).await;
    let globex_replay = replay_as(globex.token.clone()).await.unwrap();

    // Assert
    assert_eq!(
        json_of(acme_list, 200).await["data"],
        json!([]),
        "the URL's integration does not see another portal's event"
    );
    assert_eq!(json_of(acme_replay, 404).await["code"], "not_found");
    let listed = json_of(globex_list, 200).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    assert_eq!(listed["data"][0]["id"], letter.id);
    assert_eq!(listed["data"][0]["payload"], event);
    let replayed = json_of(globex_replay, 200).await;
    assert_eq!(replayed["outcome"], "replayed");
    assert_eq!(replayed["jobs_queued"], 1);
    // The job is routed by the event's portal, as the app-wide webhook URL
    // routes it, not by the integration the URL named.
    let mut inspector = api.inspector().await;
    let ids = inspector.ids().await.unwrap();
    assert_eq!(ids.len(), 1);
    let stored: leadsync_domain::EventKey = serde_json::from_value(json!(ids[0])).unwrap();
    let job = inspector.get(&stored).await.unwrap().expect("the job");
    assert_eq!(job.key, key);
    assert_eq!(job.portal_id, Some(PortalId::new(1002)));
    assert_eq!(job.integration, None);
    api.finish().await;
}
