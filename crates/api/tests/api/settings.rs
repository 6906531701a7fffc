use reqwest::Method;
use serde_json::json;

use crate::helpers::{TestApi, json_of};

#[tokio::test]
async fn settings_round_trip_and_take_effect_in_the_store() {
    // Arrange
    let api = TestApi::spawn().await;
    let acme = api.tenant("acme", 1001).await;
    let before = json_of(api.get("/v1/integration/settings", &acme).await, 200).await;
    let mut body = before["settings"].clone();
    body["directions"]["outbound"] = json!(false);
    body["conflict_policy"] = json!("last_write_wins");
    body["field_policies"] = json!({"status": "platform_wins"});
    body["field_mapping"] = json!({"phone": "mobilephone"});
    body["empty_never_overwrites"] = json!(true);

    // Act
    let put = api
        .send_json(Method::PUT, "/v1/integration/settings", &acme, &body)
        .await;
    let put = json_of(put, 200).await;
    let after = json_of(api.get("/v1/integration/settings", &acme).await, 200).await;

    // Assert
    assert_eq!(before["settings"]["conflict_policy"], "hubspot_wins");
    assert_eq!(
        before["settings"]["directions"],
        json!({"inbound": true, "outbound": true})
    );
    assert_eq!(before["effective_field_mapping"]["location"], "city");
    assert_eq!(after["settings"], body, "what was put is what is read");
    assert_eq!(put["settings"], body);
    assert_eq!(after["effective_field_mapping"]["phone"], "mobilephone");
    assert_eq!(after["integration_name"], "acme");
    assert_eq!(after["portal_id"], 1001);
    let stored = leadsync_store::integrations::get(api.db.store.pool(), acme.integration.id)
        .await
        .unwrap()
        .unwrap();
    assert!(!stored.settings.directions.outbound);
    assert!(stored.settings.empty_never_overwrites);
    assert_eq!(
        stored
            .settings
            .policy_for(leadsync_domain::LeadField::Status),
        leadsync_domain::ConflictPolicy::PlatformWins
    );
    api.finish().await;
}

#[tokio::test]
async fn invalid_settings_are_refused_naming_the_field_and_change_nothing() {
    // Arrange
    let api = TestApi::spawn().await;
    let acme = api.tenant("acme", 1001).await;
    let cases = [
        (
            json!({"conflict_policy": "loudest_wins"}),
            422,
            "conflict_policy",
        ),
        (
            json!({"directions": {"inbound": "yes"}}),
            422,
            "directions.inbound",
        ),
        (
            json!({"field_policies": {"fist_name": "platform_wins"}}),
            422,
            "field_policies.fist_name",
        ),
        (
            json!({"field_mapping": {"phone": "Mobile Phone"}}),
            422,
            "field_mapping.phone",
        ),
        (
            json!({"field_mapping": {"company": "email"}}),
            422,
            "field_mapping.company",
        ),
        (json!({"deletion_mode": "shred"}), 422, "deletion_mode"),
        (json!({"theme": "dark"}), 400, "theme"),
    ];

    for (body, status, field) in cases {
        // Act
        let response = api
            .send_json(Method::PUT, "/v1/integration/settings", &acme, &body)
            .await;

        // Assert
        let error = json_of(response, status).await;
        assert_eq!(error["field"], field, "{body}");
        assert!(
            error["message"].as_str().unwrap().contains(field),
            "{body}: {error}"
        );
    }
    let stored = leadsync_store::integrations::get(api.db.store.pool(), acme.integration.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.settings,
        leadsync_store::IntegrationSettings::default()
    );
    api.finish().await;
}
