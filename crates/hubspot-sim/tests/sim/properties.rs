//! Properties API v3.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::start;

#[tokio::test]
async fn an_enumeration_property_can_be_created_read_listed_and_written() {
    // Arrange
    let t = start().await;
    let definition = json!({
        "name": "lead_source_system", "label": "Lead source system", "type": "enumeration", "fieldType": "select",
        "groupName": "contactinformation",
        "options": [
            { "label": "Platform", "value": "platform", "hidden": false, "displayOrder": 1 },
            { "label": "HubSpot", "value": "hubspot", "hidden": false, "displayOrder": 2 },
        ],
    });

    // Act
    let (created, headers, created_body) = t
        .post("/crm/v3/properties/contacts", definition.clone())
        .await;
    let (again, _, again_body) = t.post("/crm/v3/properties/contacts", definition).await;
    let (got, _, got_body) = t
        .get("/crm/v3/properties/contacts/lead_source_system")
        .await;
    let (listed, _, list_body) = t.get("/crm/v3/properties/contacts").await;
    let ok_write = t
        .post(
            "/crm/v3/objects/contacts",
            json!({ "properties": { "email": "x@example.com", "lead_source_system": "platform" }}),
        )
        .await;
    let bad_write = t
        .post(
            "/crm/v3/objects/contacts",
            json!({ "properties": { "email": "y@example.com", "lead_source_system": "Platform" }}),
        )
        .await;

    // Assert
    assert_eq!(created, StatusCode::CREATED, "{created_body}");
    assert_eq!(
        headers.get("location").and_then(|v| v.to_str().ok()),
        Some("/crm/v3/properties/contacts/lead_source_system")
    );
    assert_eq!(created_body["options"][1]["value"], "hubspot");
    assert_eq!(created_body["archived"], false);
    assert_eq!(again, StatusCode::CONFLICT);
    assert_eq!(again_body["category"], "OBJECT_ALREADY_EXISTS");
    assert_eq!(got, StatusCode::OK);
    assert_eq!(got_body["type"], "enumeration");
    assert_eq!(listed, StatusCode::OK);
    let names: Vec<&str> = list_body["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    for standard in [
        "email",
        "firstname",
        "lastname",
        "phone",
        "company",
        "lifecyclestage",
        "hs_lead_status",
        "lead_source_system",
    ] {
        assert!(names.contains(&standard), "{standard} missing");
    }
    assert_eq!(ok_write.0, StatusCode::CREATED);
    assert_eq!(bad_write.0, StatusCode::BAD_REQUEST);
    assert!(
        bad_write.2["message"]
            .as_str()
            .is_some_and(|m| m.contains("INVALID_OPTION"))
    );
}

#[tokio::test]
async fn invalid_definitions_and_unknown_properties() {
    // Arrange
    let t = start().await;

    // Act
    let (missing_fields, _, _) = t
        .post(
            "/crm/v3/properties/contacts",
            json!({ "name": "x", "label": "X" }),
        )
        .await;
    let (bad_pair, _, _) = t
        .post(
            "/crm/v3/properties/contacts",
            json!({ "name": "flag", "label": "Flag", "type": "bool", "fieldType": "text", "groupName": "contactinformation" }),
        )
        .await;
    let (unknown, _, unknown_body) = t.get("/crm/v3/properties/contacts/no_such_property").await;
    let (builtin, _, _) = t.delete("/crm/v3/properties/contacts/email").await;

    // Assert
    assert_eq!(missing_fields, StatusCode::BAD_REQUEST);
    assert_eq!(bad_pair, StatusCode::BAD_REQUEST);
    assert_eq!(unknown, StatusCode::NOT_FOUND);
    assert_eq!(unknown_body["category"], "OBJECT_NOT_FOUND");
    assert_eq!(
        builtin,
        StatusCode::BAD_REQUEST,
        "HubSpot's own properties cannot be archived"
    );
}
