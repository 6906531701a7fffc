//! The control API, in-process and over HTTP, and its counters.

use leadsync_hubspot_sim::{
    ApiFault, ControlClient, ControlError, CreatePortal, FaultConfig, ImportRequest, MergeRequest,
    RateLimitConfig, Tier, UserEdit,
};
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{PORTAL, start};

#[tokio::test]
async fn the_http_client_drives_the_same_operations() {
    // Arrange
    let t = start().await;
    let client = ControlClient::new(t.sim.base_url());

    // Act
    let info = client.info().await.expect("info");
    client
        .create_portal(&CreatePortal {
            portal_id: 777,
            private_app_token: Some("pat-777".to_owned()),
            rate_limit: Some(RateLimitConfig::tier(Tier::Professional)),
        })
        .await
        .expect("portal");
    let duplicate = client
        .create_portal(&CreatePortal {
            portal_id: 777,
            private_app_token: None,
            rate_limit: None,
        })
        .await;
    let created = client
        .create_contact(
            777,
            &UserEdit::new([("email", "c@example.com"), ("firstname", "Cy")]).by(12),
        )
        .await
        .expect("created");
    let edited = client
        .update_contact(777, created.id, &UserEdit::new([("firstname", "Cyd")]))
        .await
        .expect("edited");
    let import = client
        .import_contacts(
            777,
            &ImportRequest {
                count: 3,
                extra_edits: 2,
                ..ImportRequest::default()
            },
        )
        .await
        .expect("imported");
    let merged = client
        .merge_contacts(
            777,
            &MergeRequest {
                primary_object_id: created.id,
                object_id_to_merge: import.ids[0],
                user_id: None,
            },
        )
        .await
        .expect("merged");
    client
        .archive_contact(777, import.ids[1], Some(5))
        .await
        .expect("archived");
    let restored = client
        .restore_contact(777, import.ids[1], None)
        .await
        .expect("restored");
    client
        .gdpr_delete_contact(777, import.ids[2], None)
        .await
        .expect("deleted");
    let dump = client.contacts(777).await.expect("dump");
    let rate = client.rate_limit(777).await.expect("limits");
    client
        .set_faults(&FaultConfig {
            duplicate_rate: 0.25,
            ..FaultConfig::default()
        })
        .await
        .expect("faults");
    let faults = client.faults().await.expect("faults");
    let missing = client.contact(777, 1).await;
    let code = client
        .authorize(&leadsync_hubspot_sim::AuthorizeRequest {
            portal_id: 778,
            user_id: None,
            redirect_uri: None,
        })
        .await
        .expect("code");
    let expired = client.expire_access_tokens(None).await.expect("expired");
    let portals = client.portals().await.expect("portals");
    let private = t
        .with_token("pat-777")
        .get("/crm/v3/objects/contacts?limit=100")
        .await;

    // Assert
    assert_eq!(info.portals, vec![PORTAL]);
    assert_eq!(info.app_id, t.sim.config().app.app_id);
    assert!(duplicate.is_err());
    assert_eq!(created.history["firstname"][0].source_type, "CRM_UI");
    assert_eq!(
        created.history["firstname"][0].source_id.as_deref(),
        Some("userId:12")
    );
    assert_eq!(created.history["firstname"][0].updated_by_user_id, Some(12));
    assert_eq!(edited.get("firstname"), Some("Cyd"));
    assert_eq!(import.created, 3);
    let row = dump.iter().find(|c| c.id == import.ids[1]).expect("row");
    assert_eq!(row.history["firstname"][0].source_type, "IMPORT");
    assert!(row.get("firstname").is_some_and(|f| f.ends_with("edit0")));
    assert!(merged.get("hs_merged_object_ids").is_some());
    assert!(!restored.archived);
    assert_eq!(dump.len(), 2, "merged and GDPR-deleted contacts are gone");
    assert_eq!(rate.window_max, 190);
    assert_eq!(faults.duplicate_rate, 0.25);
    assert!(matches!(
        missing,
        Err(leadsync_hubspot_sim::ControlError::Status { status: 404, .. })
    ));
    assert_eq!(code.portal_id, 778);
    assert_eq!(code.code.len(), 36);
    assert_eq!(expired, 0, "no OAuth token was issued yet");
    assert_eq!(
        portals,
        vec![777, 778, PORTAL],
        "authorizing created the account"
    );
    assert_eq!(private.0, StatusCode::OK);
    assert_eq!(private.2["results"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn counters_report_calls_per_endpoint_and_portal_and_reset_clears_state() {
    // Arrange
    let t = start().await;
    let client = ControlClient::new(t.sim.base_url());
    let id = t.create_contact(json!({ "email": "s@example.com" })).await;

    // Act
    t.get(&format!("/crm/v3/objects/contacts/{id}")).await;
    t.post(
        "/crm/v3/objects/contacts/batch/read",
        json!({ "inputs": [{ "id": id }] }),
    )
    .await;
    t.post(
        "/crm/v3/objects/contacts/batch/read",
        json!({ "inputs": [] }),
    )
    .await;
    let stats = client.stats().await.expect("stats");
    client.reset_stats().await.expect("reset stats");
    let zeroed = client.stats().await.expect("stats");
    client.reset().await.expect("reset");
    let after_reset = t.sim.control().contacts(PORTAL).expect("dump");
    let token_still_valid = t.get("/crm/v3/objects/contacts").await.0;

    // Assert
    assert_eq!(stats.api_calls, 4);
    assert_eq!(stats.calls("POST /crm/v3/objects/contacts/batch/read"), 2);
    assert_eq!(stats.calls("GET /crm/v3/objects/contacts/{contactId}"), 1);
    assert_eq!(stats.calls("POST /crm/v3/objects/contacts"), 1);
    assert_eq!(stats.portals[&PORTAL].api_calls, 4);
    assert_eq!(stats.portals[&PORTAL].max_calls_in_10s, 4);
    assert_eq!(stats.portals[&PORTAL].contacts, 1);
    assert_eq!(zeroed.api_calls, 0);
    assert_eq!(zeroed.portals[&PORTAL].max_calls_in_10s, 0);
    assert!(after_reset.is_empty());
    assert_eq!(
        token_still_valid,
        StatusCode::OK,
        "configured private-app tokens survive a reset"
    );
}

#[tokio::test]
async fn unknown_portals_and_contacts_are_reported() {
    // Arrange
    let t = start().await;
    let control = t.sim.control();

    // Act
    let no_portal = control.create_contact(1, &UserEdit::new([("email", "x@example.com")]));
    let no_contact = control.update_contact(PORTAL, 5, &UserEdit::new([("firstname", "X")]));
    let bad_property = control.create_contact(PORTAL, &UserEdit::new([("nope", "x")]));
    let first = control.create_contact(PORTAL, &UserEdit::new([("email", "x@example.com")]));
    let conflict = control.create_contact(PORTAL, &UserEdit::new([("email", "X@example.com")]));

    // Assert
    assert!(matches!(
        no_portal,
        Err(leadsync_hubspot_sim::ControlError::UnknownPortal(1))
    ));
    assert!(matches!(
        no_contact,
        Err(leadsync_hubspot_sim::ControlError::UnknownContact(5))
    ));
    assert!(
        matches!(bad_property, Err(leadsync_hubspot_sim::ControlError::Invalid(m)) if m.contains("PROPERTY_DOESNT_EXIST"))
    );
    assert!(first.is_ok());
    assert!(matches!(
        conflict,
        Err(leadsync_hubspot_sim::ControlError::Conflict(_))
    ));
}

#[tokio::test]
async fn an_injected_api_fault_fails_the_matching_calls_with_hubspots_error_shape() {
    // Arrange: the next two batch reads fail with 503, set over HTTP.
    let t = start().await;
    let client = ControlClient::new(t.sim.base_url());
    let id = t.create_contact(json!({ "email": "f@example.com" })).await;
    client
        .inject_api_fault(
            &ApiFault::new(503)
                .on("POST /crm/v3/objects/contacts/batch/read")
                .times(2),
        )
        .await
        .expect("fault accepted");
    let refused = client
        .inject_api_fault(&ApiFault::new(429).on("POST /crm/v3/objects/contacts/batch/read"))
        .await;
    let read = json!({ "inputs": [{ "id": id.to_string() }], "properties": ["email"] });

    // Act
    let (first, first_headers, first_body) = t
        .post("/crm/v3/objects/contacts/batch/read", read.clone())
        .await;
    let (get, _, _) = t.get(&format!("/crm/v3/objects/contacts/{id}")).await;
    let left = client.api_faults().await.expect("faults");
    let (second, _, _) = t
        .post("/crm/v3/objects/contacts/batch/read", read.clone())
        .await;
    let (third, _, third_body) = t
        .post("/crm/v3/objects/contacts/batch/read", read.clone())
        .await;
    client
        .inject_api_fault(&ApiFault::new(400).for_portal(PORTAL))
        .await
        .expect("fault accepted");
    let (invalid, _, invalid_body) = t.get(&format!("/crm/v3/objects/contacts/{id}")).await;
    client.clear_api_faults().await.expect("cleared");
    let (after_clear, _, _) = t.get(&format!("/crm/v3/objects/contacts/{id}")).await;
    let stats = client.stats().await.expect("stats");

    // Assert
    assert!(
        matches!(refused, Err(ControlError::Status { status: 400, .. })),
        "{refused:?}"
    );
    assert_eq!(first, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(first_body["status"], "error");
    assert_eq!(first_body["category"], "SERVICE_UNAVAILABLE");
    assert!(first_body["correlationId"].is_string(), "{first_body}");
    assert!(first_headers.contains_key("x-hubspot-correlation-id"));
    assert_eq!(get, StatusCode::OK, "other endpoints are served");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].times, Some(1));
    assert_eq!(second, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(third, StatusCode::OK, "{third_body}");
    assert_eq!(third_body["results"][0]["id"], id.to_string());
    assert_eq!(invalid, StatusCode::BAD_REQUEST);
    assert_eq!(invalid_body["category"], "VALIDATION_ERROR");
    assert_eq!(after_clear, StatusCode::OK);
    assert_eq!(stats.api_faults_served, 3);
    assert_eq!(
        stats.calls("POST /crm/v3/objects/contacts/batch/read"),
        3,
        "failed calls are counted like any other"
    );
}
