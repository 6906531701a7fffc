use reqwest::Method;
use reqwest::header::{ETAG, IF_MATCH};
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

/// A settings `PUT` with these headers.
async fn put_settings(
    api: &TestApi,
    tenant: &crate::helpers::Tenant,
    if_match: Option<&str>,
    body: &serde_json::Value,
) -> reqwest::Response {
    let mut request = api
        .request(Method::PUT, "/v1/integration/settings", Some(&tenant.token))
        .json(body);
    if let Some(tag) = if_match {
        request = request.header(IF_MATCH, tag);
    }
    request.send().await.unwrap()
}

fn etag_of(response: &reqwest::Response) -> String {
    response
        .headers()
        .get(ETAG)
        .expect("an ETag")
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_put_with_the_current_etag_applies_and_a_stale_one_gets_412_and_changes_nothing() {
    // Arrange
    let api = TestApi::spawn().await;
    let acme = api.tenant("acme", 1001).await;
    let read = api.get("/v1/integration/settings", &acme).await;
    let first = etag_of(&read);
    let outbound_off = json!({"directions": {"outbound": false}});
    let soft_delete = json!({"deletion_mode": "soft_delete"});

    // Act: one admin applies a change made on `first`...
    let applied = put_settings(&api, &acme, Some(&first), &outbound_off).await;
    let second = etag_of(&applied);
    let applied = json_of(applied, 200).await;
    // ... and another one, who read `first` too, tries to apply theirs.
    let stale = put_settings(&api, &acme, Some(&first), &soft_delete).await;
    let stale_etag = stale.headers().get(ETAG).cloned();
    let stale = json_of(stale, 412).await;
    let after_stale = api.get("/v1/integration/settings", &acme).await;
    let still_second = etag_of(&after_stale);
    let after_stale = json_of(after_stale, 200).await;

    // Assert
    assert_eq!(
        json_of(read, 200).await["settings"]["directions"]["outbound"],
        true
    );
    assert!(
        first.starts_with('"') && first.ends_with('"'),
        "a strong tag: {first}"
    );
    assert_ne!(first, second, "a replacement moves the ETag");
    assert_eq!(applied["settings"]["directions"]["outbound"], false);
    assert_eq!(stale["code"], "precondition_failed");
    assert!(stale["message"].as_str().unwrap().contains("If-Match"));
    assert!(stale_etag.is_none(), "a 412 carries no new ETag");
    assert_eq!(still_second, second, "the refused PUT changed nothing");
    assert_eq!(after_stale["settings"], applied["settings"]);
    assert_eq!(after_stale["settings"]["deletion_mode"], "unlink");
    let stored = leadsync_store::integrations::get(api.db.store.pool(), acme.integration.id)
        .await
        .unwrap()
        .unwrap();
    assert!(!stored.settings.directions.outbound);
    assert_eq!(
        stored.settings.deletion_mode,
        leadsync_store::integrations::DeletionMode::Unlink
    );
    api.finish().await;
}

#[tokio::test]
async fn without_if_match_or_with_a_star_a_put_replaces_the_settings_unconditionally() {
    // Arrange
    let api = TestApi::spawn().await;
    let acme = api.tenant("acme", 1001).await;
    let first = etag_of(&api.get("/v1/integration/settings", &acme).await);

    // Act
    let blind = put_settings(&api, &acme, None, &json!({"webhooks_enabled": true})).await;
    let second = etag_of(&blind);
    let star = put_settings(
        &api,
        &acme,
        Some("*"),
        &json!({"empty_never_overwrites": true}),
    )
    .await;
    let third = etag_of(&star);
    let star = json_of(star, 200).await;

    // Assert
    assert_eq!(
        json_of(blind, 200).await["settings"]["webhooks_enabled"],
        true
    );
    assert_eq!(star["settings"]["empty_never_overwrites"], true);
    assert_eq!(
        star["settings"]["webhooks_enabled"], false,
        "a full replace"
    );
    let tags = [first, second, third];
    assert!(
        tags[0] != tags[1] && tags[1] != tags[2] && tags[0] != tags[2],
        "{tags:?}"
    );
    api.finish().await;
}

#[tokio::test]
async fn if_match_values_that_cannot_match_are_refused_and_change_nothing() {
    // Arrange
    let api = TestApi::spawn().await;
    let acme = api.tenant("acme", 1001).await;
    let current = etag_of(&api.get("/v1/integration/settings", &acme).await);
    let weak = format!("W/{current}");
    let body = json!({"deletion_mode": "soft_delete"});
    let cases = [
        (weak.as_str(), 412, "precondition_failed"),
        ("\"not-a-version\"", 412, "precondition_failed"),
        ("\"0\"", 412, "precondition_failed"),
        ("7", 400, "invalid_if_match"),
        ("\"1\", \"2\"", 400, "invalid_if_match"),
    ];

    for (if_match, status, code) in cases {
        // Act
        let response = put_settings(&api, &acme, Some(if_match), &body).await;

        // Assert
        assert_eq!(json_of(response, status).await["code"], code, "{if_match}");
    }
    let after = api.get("/v1/integration/settings", &acme).await;
    assert_eq!(etag_of(&after), current, "nothing was replaced");
    assert_eq!(
        json_of(after, 200).await["settings"]["deletion_mode"],
        "unlink"
    );
    api.finish().await;
}

#[tokio::test]
async fn of_two_concurrent_puts_from_the_same_etag_exactly_one_applies() {
    // Arrange
    let api = TestApi::spawn().await;
    let acme = api.tenant("acme", 1001).await;
    let first = etag_of(&api.get("/v1/integration/settings", &acme).await);
    let a = json!({"conflict_policy": "platform_wins"});
    let b = json!({"conflict_policy": "last_write_wins"});

    // Act
    let (ra, rb) = tokio::join!(
        put_settings(&api, &acme, Some(&first), &a),
        put_settings(&api, &acme, Some(&first), &b),
    );

    // Assert
    let mut statuses = [ra.status().as_u16(), rb.status().as_u16()];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 412]);
    let winner = if ra.status() == 200 { &a } else { &b };
    let after = json_of(api.get("/v1/integration/settings", &acme).await, 200).await;
    assert_eq!(
        after["settings"]["conflict_policy"],
        winner["conflict_policy"]
    );
    api.finish().await;
}
