//! Contact search: filters, sorts, paging, the 10,000-result cap, its own limit.

use std::time::Duration;

use leadsync_hubspot_sim::{ImportRequest, RateLimitConfig};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{PORTAL, config, id_of, start, start_with};

fn ids(body: &Value) -> Vec<u64> {
    body["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(id_of)
        .collect()
}

#[tokio::test]
async fn filters_on_email_and_dates_sort_and_page() {
    // Arrange
    let t = start().await;
    // Distinct creation times, so the date filters below are unambiguous.
    let a = t
        .create_contact(json!({ "email": "a@example.com", "firstname": "Zed" }))
        .await;
    tokio::time::sleep(Duration::from_millis(3)).await;
    let b = t
        .create_contact(json!({ "email": "b@example.com", "firstname": "Amy" }))
        .await;
    tokio::time::sleep(Duration::from_millis(3)).await;
    let c = t
        .create_contact(json!({ "email": "c@other.org", "firstname": "Bob" }))
        .await;
    let created_b = t.sim.control().contact(PORTAL, b).expect("b").created_at;

    // Act
    let (status, headers, by_email) = t
        .post(
            "/crm/v3/objects/contacts/search",
            json!({ "filterGroups": [{ "filters": [{ "propertyName": "email", "operator": "EQ", "value": "B@EXAMPLE.COM" }]}] }),
        )
        .await;
    let (_, _, or_groups) = t
        .post(
            "/crm/v3/objects/contacts/search",
            json!({
                "filterGroups": [
                    { "filters": [{ "propertyName": "email", "operator": "EQ", "value": "a@example.com" }]},
                    { "filters": [{ "propertyName": "email", "operator": "CONTAINS_TOKEN", "value": "*other.org" }]},
                ],
                "sorts": [{ "propertyName": "firstname", "direction": "ASCENDING" }],
            }),
        )
        .await;
    let (_, _, since) = t
        .post(
            "/crm/v3/objects/contacts/search",
            json!({
                "filterGroups": [{ "filters": [{ "propertyName": "createdate", "operator": "GTE", "value": created_b }]}],
                "sorts": [{ "propertyName": "createdate", "direction": "DESCENDING" }],
                "properties": ["email"],
            }),
        )
        .await;
    let (_, _, modified) = t
        .post(
            "/crm/v3/objects/contacts/search",
            json!({ "filterGroups": [{ "filters": [{ "propertyName": "lastmodifieddate", "operator": "GT", "value": "0" }]}], "limit": 2 }),
        )
        .await;
    let (_, _, page2) = t
        .post(
            "/crm/v3/objects/contacts/search",
            json!({ "limit": 2, "after": modified["paging"]["next"]["after"] }),
        )
        .await;

    // Assert
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers.get("x-hubspot-ratelimit-max").is_none(),
        "search sends no rate headers"
    );
    assert_eq!(
        (ids(&by_email), by_email["total"].clone()),
        (vec![b], json!(1))
    );
    assert_eq!(
        by_email["results"][0]["properties"]["firstname"], "Amy",
        "search defaults include firstname"
    );
    assert_eq!(
        ids(&or_groups),
        vec![c, a],
        "groups are ORed, sorted by firstname"
    );
    assert_eq!(ids(&since), vec![c, b]);
    assert!(since["results"][0]["properties"].get("firstname").is_none());
    assert_eq!(modified["total"], 3);
    assert_eq!(ids(&modified), vec![a, b]);
    assert_eq!(ids(&page2), vec![c]);
    assert!(page2.get("paging").is_none());
}

#[tokio::test]
async fn new_contacts_reach_search_only_after_the_index_lag() {
    // Arrange
    let mut cfg = config();
    cfg.search_index_lag = Duration::from_millis(300);
    let t = start_with(cfg).await;
    let id = t
        .create_contact(json!({ "email": "late@example.com" }))
        .await;
    let query = json!({ "filterGroups": [{ "filters": [{ "propertyName": "email", "operator": "EQ", "value": "late@example.com" }]}] });

    // Act
    let (_, _, at_once) = t
        .post("/crm/v3/objects/contacts/search", query.clone())
        .await;
    tokio::time::sleep(Duration::from_millis(350)).await;
    let (_, _, later) = t.post("/crm/v3/objects/contacts/search", query).await;

    // Assert
    assert_eq!(
        at_once["total"], 0,
        "not indexed yet: the classic search-then-create race"
    );
    assert_eq!(ids(&later), vec![id]);
}

#[tokio::test]
async fn paging_beyond_10000_results_is_a_400() {
    // Arrange
    let t = start().await;
    t.sim
        .control()
        .import_contacts(
            PORTAL,
            &ImportRequest {
                count: 10_050,
                ..ImportRequest::default()
            },
        )
        .expect("import");

    // Act
    let (last_page, _, last_body) = t
        .post(
            "/crm/v3/objects/contacts/search",
            json!({ "limit": 200, "after": "9800" }),
        )
        .await;
    let (beyond, _, beyond_body) = t
        .post(
            "/crm/v3/objects/contacts/search",
            json!({ "limit": 200, "after": "10000" }),
        )
        .await;
    let (too_many, _, _) = t
        .post("/crm/v3/objects/contacts/search", json!({ "limit": 201 }))
        .await;

    // Assert
    assert_eq!(last_page, StatusCode::OK);
    assert_eq!(last_body["total"], 10_050, "total reports every match");
    assert_eq!(last_body["paging"]["next"]["after"], "10000");
    assert_eq!(beyond, StatusCode::BAD_REQUEST);
    assert_eq!(beyond_body["category"], "VALIDATION_ERROR");
    assert_eq!(too_many, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn search_is_limited_to_five_per_second_per_token() {
    // Arrange
    let mut cfg = config();
    cfg.rate_limit = RateLimitConfig::default();
    let t = start_with(cfg).await;

    // Act
    let mut statuses = Vec::new();
    let mut last = Value::Null;
    for _ in 0..6 {
        let (status, _, body) = t.post("/crm/v3/objects/contacts/search", json!({})).await;
        statuses.push(status);
        last = body;
    }

    // Assert
    assert_eq!(statuses[..5], [StatusCode::OK; 5]);
    assert_eq!(statuses[5], StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(last["errorType"], "RATE_LIMIT");
    assert_eq!(last["policyName"], "SECONDLY");
    let stats = t.sim.control().stats();
    assert_eq!(stats.portals[&PORTAL].search_calls, 6);
    assert_eq!(
        stats.portals[&PORTAL].max_calls_in_10s, 0,
        "search is exempt from the burst window"
    );
}
