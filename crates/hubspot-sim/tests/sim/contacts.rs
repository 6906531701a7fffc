//! CRM v3 contacts: happy paths and HubSpot's documented errors.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{PORTAL, id_of, start};

#[tokio::test]
async fn create_returns_hubspots_object_shape_and_get_finds_it_by_id_and_email() {
    // Arrange
    let t = start().await;

    // Act
    let (status, headers, created) = t
        .post(
            "/crm/v3/objects/contacts",
            json!({ "properties": { "email": "Ann.Lee+crm@Example.com", "firstname": "Ann", "annualrevenue_typo": null }}),
        )
        .await;

    // Assert: an unknown property with a null value is refused before anything else.
    assert_eq!(status, StatusCode::BAD_REQUEST, "{created}");
    let (status, headers_ok, created) = t
        .post(
            "/crm/v3/objects/contacts",
            json!({ "properties": { "email": "Ann.Lee+crm@Example.com", "firstname": "Ann", "phone": 5551234 }}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert!(headers.get("x-hubspot-correlation-id").is_some());
    assert_eq!(headers_ok["content-type"], "application/json;charset=utf-8");
    let id = id_of(&created);
    assert!(
        id > u64::from(u32::MAX),
        "ids exceed 32 bits like HubSpot's"
    );
    let props = &created["properties"];
    assert_eq!(props["hs_object_id"], id.to_string());
    assert_eq!(
        props["email"], "ann.lee+crm@example.com",
        "emails are stored lower-cased"
    );
    assert_eq!(props["phone"], "5551234", "values are strings");
    assert_eq!(props["createdate"], created["createdAt"]);
    assert_eq!(props["lastmodifieddate"], created["updatedAt"]);
    assert_eq!(created["archived"], false);

    let (status, _, by_id) = t.get(&format!("/crm/v3/objects/contacts/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(by_id["properties"]["email"], "ann.lee+crm@example.com");
    assert!(
        by_id["properties"].get("phone").is_none(),
        "only the default properties"
    );

    let (status, _, by_email) = t
        .get("/crm/v3/objects/contacts/ANN.lee+crm%40example.com?idProperty=email&properties=phone,jobtitle&properties=firstname")
        .await;
    assert_eq!(status, StatusCode::OK, "{by_email}");
    assert_eq!(id_of(&by_email), id);
    assert_eq!(by_email["properties"]["phone"], "5551234");
    assert_eq!(by_email["properties"]["firstname"], "Ann");
    assert_eq!(
        by_email["properties"]["jobtitle"],
        Value::Null,
        "requested but unset: null"
    );
}

#[tokio::test]
async fn duplicate_email_is_409_with_the_existing_id_in_the_message() {
    // Arrange
    let t = start().await;
    let id = t
        .create_contact(json!({ "email": "dup@example.com" }))
        .await;

    // Act
    let (status, _, body) = t
        .post(
            "/crm/v3/objects/contacts",
            json!({ "properties": { "email": "DUP@example.COM" }}),
        )
        .await;

    // Assert
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["status"], "error");
    assert_eq!(body["category"], "CONFLICT");
    assert_eq!(
        body["message"],
        format!("Contact already exists. Existing ID: {id}")
    );
    assert_eq!(body["correlationId"].as_str().map(str::len), Some(36));
}

#[tokio::test]
async fn missing_contacts_are_404_object_not_found() {
    // Arrange
    let t = start().await;

    // Act
    let (numeric, _, numeric_body) = t.get("/crm/v3/objects/contacts/123456789").await;
    let (by_email, _, email_body) = t
        .get("/crm/v3/objects/contacts/nobody%40example.org?properties=phone&idProperty=email")
        .await;

    // Assert
    assert_eq!(numeric, StatusCode::NOT_FOUND);
    assert_eq!(numeric_body["category"], "OBJECT_NOT_FOUND");
    assert_eq!(by_email, StatusCode::NOT_FOUND);
    assert_eq!(
        email_body["message"],
        "Object not found.  objectId are usually numeric."
    );
    assert_eq!(
        email_body["context"]["id"][0],
        "nobody%40example.org?properties=phone&idProperty=email"
    );
}

#[tokio::test]
async fn writing_a_property_that_does_not_exist_is_400_property_doesnt_exist() {
    // Arrange
    let t = start().await;
    let id = t.create_contact(json!({ "email": "p@example.com" })).await;

    // Act
    let (create, _, create_body) = t
        .post(
            "/crm/v3/objects/contacts",
            json!({ "properties": { "favourite_colour": "blue" }}),
        )
        .await;
    let (patch, _, patch_body) = t
        .patch(
            &format!("/crm/v3/objects/contacts/{id}"),
            json!({ "properties": { "missing": "x", "lifecyclestage": "not-a-stage" }}),
        )
        .await;

    // Assert
    assert_eq!(create, StatusCode::BAD_REQUEST);
    assert_eq!(create_body["category"], "VALIDATION_ERROR");
    let message = create_body["message"].as_str().expect("message");
    assert!(
        message.starts_with("Property values were not valid: "),
        "{message}"
    );
    assert!(message.contains("PROPERTY_DOESNT_EXIST"), "{message}");
    assert!(
        message.contains(r#"Property \"favourite_colour\" does not exist"#),
        "{message}"
    );
    assert_eq!(patch, StatusCode::BAD_REQUEST);
    let message = patch_body["message"].as_str().expect("message");
    assert!(
        message.contains("PROPERTY_DOESNT_EXIST") && message.contains("INVALID_OPTION"),
        "{message}"
    );
}

#[tokio::test]
async fn patch_records_history_only_for_changed_values_and_delete_archives() {
    // Arrange
    let t = start().await;
    let id = t
        .create_contact(json!({ "email": "h@example.com", "firstname": "Ann" }))
        .await;

    // Act
    let (status, _, _) = t
        .patch(
            &format!("/crm/v3/objects/contacts/{id}"),
            json!({ "properties": { "firstname": "Ann", "lastname": "Lee" }}),
        )
        .await;
    let (_, _, history) = t
        .get(&format!(
            "/crm/v3/objects/contacts/{id}?propertiesWithHistory=firstname,lastname"
        ))
        .await;
    let (deleted, _, _) = t.delete(&format!("/crm/v3/objects/contacts/{id}")).await;
    let (gone, _, _) = t.get(&format!("/crm/v3/objects/contacts/{id}")).await;
    let (archived, _, archived_body) = t
        .get(&format!("/crm/v3/objects/contacts/{id}?archived=TRUE"))
        .await;
    let (again, _, _) = t.delete(&format!("/crm/v3/objects/contacts/{id}")).await;

    // Assert
    assert_eq!(status, StatusCode::OK);
    let first = history["propertiesWithHistory"]["firstname"]
        .as_array()
        .expect("history");
    assert_eq!(first.len(), 1, "an unchanged value adds no version");
    let last = &history["propertiesWithHistory"]["lastname"][0];
    assert_eq!(last["value"], "Lee");
    assert_eq!(last["sourceType"], "INTEGRATION");
    assert!(
        last["sourceId"]
            .as_str()
            .is_some_and(|s| s.parse::<u64>().is_ok())
    );
    assert!(last["timestamp"].as_str().is_some_and(|s| s.ends_with('Z')));
    assert_eq!(deleted, StatusCode::NO_CONTENT);
    assert_eq!(gone, StatusCode::NOT_FOUND);
    assert_eq!(archived, StatusCode::OK);
    assert_eq!(archived_body["archived"], true);
    assert!(archived_body["archivedAt"].is_string());
    assert_eq!(
        again,
        StatusCode::NO_CONTENT,
        "deleting an archived contact succeeds"
    );
}

#[tokio::test]
async fn list_pages_through_every_contact_with_after() {
    // Arrange
    let t = start().await;
    let mut created = Vec::new();
    for i in 0..25 {
        created.push(
            t.create_contact(json!({ "email": format!("l{i}@example.com") }))
                .await,
        );
    }

    // Act
    let mut seen = Vec::new();
    let mut after = String::new();
    let mut pages = 0;
    loop {
        let (status, _, body) = t
            .get(&format!(
                "/crm/v3/objects/contacts?limit=10&after={after}&properties=email"
            ))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        pages += 1;
        seen.extend(
            body["results"]
                .as_array()
                .expect("results")
                .iter()
                .map(id_of),
        );
        match body["paging"]["next"]["after"].as_str() {
            Some(next) => after = next.to_owned(),
            None => break,
        }
    }
    let (too_big, _, _) = t.get("/crm/v3/objects/contacts?limit=101").await;

    // Assert
    assert_eq!(pages, 3);
    assert_eq!(seen, created);
    assert_eq!(too_big, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn batch_read_reports_missing_ids_with_207_and_refuses_more_than_100_inputs() {
    // Arrange
    let t = start().await;
    let a = t
        .create_contact(json!({ "email": "a@example.com", "firstname": "A" }))
        .await;
    let b = t.create_contact(json!({ "email": "b@example.com" })).await;

    // Act
    let (ok, _, ok_body) = t
        .post(
            "/crm/v3/objects/contacts/batch/read",
            json!({ "inputs": [{ "id": a.to_string() }, { "id": b }], "properties": ["firstname"], "propertiesWithHistory": ["email"] }),
        )
        .await;
    let (partial, _, partial_body) = t
        .post(
            "/crm/v3/objects/contacts/batch/read",
            json!({ "inputs": [{ "id": a.to_string() }, { "id": "999" }] }),
        )
        .await;
    let (by_email, _, by_email_body) = t
        .post(
            "/crm/v3/objects/contacts/batch/read",
            json!({ "idProperty": "email", "inputs": [{ "id": "B@example.com" }] }),
        )
        .await;
    let inputs: Vec<Value> = (0..101).map(|i| json!({ "id": i.to_string() })).collect();
    let (too_many, _, too_many_body) = t
        .post(
            "/crm/v3/objects/contacts/batch/read",
            json!({ "inputs": inputs }),
        )
        .await;

    // Assert
    assert_eq!(ok, StatusCode::OK);
    assert_eq!(ok_body["status"], "COMPLETE");
    assert_eq!(ok_body["results"].as_array().map(Vec::len), Some(2));
    assert_eq!(ok_body["results"][0]["properties"]["firstname"], "A");
    assert!(ok_body["results"][0]["propertiesWithHistory"]["email"].is_array());
    assert_eq!(partial, StatusCode::MULTI_STATUS);
    assert_eq!(partial_body["numErrors"], 1);
    assert_eq!(partial_body["errors"][0]["category"], "OBJECT_NOT_FOUND");
    assert_eq!(partial_body["errors"][0]["context"]["ids"][0], "999");
    assert_eq!(by_email, StatusCode::OK);
    assert_eq!(id_of(&by_email_body["results"][0]), b);
    assert_eq!(too_many, StatusCode::BAD_REQUEST);
    assert_eq!(too_many_body["category"], "VALIDATION_ERROR");
}

#[tokio::test]
async fn batch_create_is_all_or_nothing_unless_every_input_has_a_trace_id() {
    // Arrange
    let t = start().await;
    let existing = t
        .create_contact(json!({ "email": "taken@example.com" }))
        .await;

    // Act
    let (conflict, _, conflict_body) = t
        .post(
            "/crm/v3/objects/contacts/batch/create",
            json!({ "inputs": [
                { "properties": { "email": "new1@example.com" }},
                { "properties": { "email": "taken@example.com" }},
            ]}),
        )
        .await;
    let after_conflict = t.sim.control().contacts(PORTAL).expect("dump").len();
    let (partial, _, partial_body) = t
        .post(
            "/crm/v3/objects/contacts/batch/create",
            json!({ "inputs": [
                { "properties": { "email": "new1@example.com" }, "objectWriteTraceId": "t1" },
                { "properties": { "email": "taken@example.com" }, "objectWriteTraceId": "t2" },
                { "properties": { "nope": "x" }, "objectWriteTraceId": "t3" },
            ]}),
        )
        .await;
    let (created, _, created_body) = t
        .post(
            "/crm/v3/objects/contacts/batch/create",
            json!({ "inputs": [{ "properties": { "email": "new2@example.com", "firstname": "N" }}]}),
        )
        .await;

    // Assert
    assert_eq!(conflict, StatusCode::CONFLICT);
    assert_eq!(
        conflict_body["message"],
        format!("Contact already exists. Existing ID: {existing}")
    );
    assert_eq!(after_conflict, 1, "nothing was created");
    assert_eq!(partial, StatusCode::MULTI_STATUS);
    assert_eq!(partial_body["results"].as_array().map(Vec::len), Some(1));
    assert_eq!(partial_body["numErrors"], 2);
    assert_eq!(
        partial_body["errors"][0]["context"]["objectWriteTraceId"][0],
        "t2"
    );
    assert_eq!(partial_body["errors"][1]["category"], "VALIDATION_ERROR");
    assert_eq!(created, StatusCode::CREATED);
    assert_eq!(created_body["results"][0]["properties"]["firstname"], "N");
}

#[tokio::test]
async fn batch_update_and_upsert_by_email() {
    // Arrange
    let t = start().await;
    let a = t.create_contact(json!({ "email": "a@example.com" })).await;

    // Act
    let (updated, _, updated_body) = t
        .post(
            "/crm/v3/objects/contacts/batch/update",
            json!({ "inputs": [{ "id": a.to_string(), "properties": { "firstname": "Ann" }}]}),
        )
        .await;
    let (missing, _, _) = t
        .post(
            "/crm/v3/objects/contacts/batch/update",
            json!({ "inputs": [{ "id": "42", "properties": { "firstname": "X" }}]}),
        )
        .await;
    let (upserted, _, upserted_body) = t
        .post(
            "/crm/v3/objects/contacts/batch/upsert",
            json!({ "inputs": [
                { "id": "A@example.com", "idProperty": "email", "properties": { "lastname": "Lee" }},
                { "id": "b@example.com", "idProperty": "email", "properties": { "lastname": "Bo" }},
            ]}),
        )
        .await;
    let (dups, _, dups_body) = t
        .post(
            "/crm/v3/objects/contacts/batch/upsert",
            json!({ "inputs": [
                { "id": "c@example.com", "idProperty": "email", "properties": {}},
                { "id": "C@example.com", "idProperty": "email", "properties": {}},
            ]}),
        )
        .await;
    let (archived, _, _) = t
        .post(
            "/crm/v3/objects/contacts/batch/archive",
            json!({ "inputs": [{ "id": a.to_string() }, { "id": "1" }]}),
        )
        .await;

    // Assert
    assert_eq!(updated, StatusCode::OK);
    assert_eq!(updated_body["results"][0]["properties"]["firstname"], "Ann");
    assert_eq!(missing, StatusCode::NOT_FOUND);
    assert_eq!(upserted, StatusCode::OK, "{upserted_body}");
    let results = upserted_body["results"].as_array().expect("results");
    assert_eq!(
        (id_of(&results[0]), results[0]["new"].clone()),
        (a, json!(false))
    );
    assert_eq!(results[1]["new"], true);
    assert_eq!(results[1]["properties"]["email"], "b@example.com");
    assert_eq!(dups, StatusCode::BAD_REQUEST);
    assert!(
        dups_body["message"]
            .as_str()
            .is_some_and(|m| m.contains("Duplicate IDs"))
    );
    assert_eq!(archived, StatusCode::NO_CONTENT);
    assert!(t.sim.control().contact(PORTAL, a).expect("kept").archived);
}

#[tokio::test]
async fn merge_and_gdpr_delete_through_the_api() {
    // Arrange
    let t = start().await;
    let a = t.create_contact(json!({ "email": "a@example.com" })).await;
    let b = t
        .create_contact(json!({ "email": "b@example.com", "phone": "1" }))
        .await;

    // Act
    let (merged, _, merged_body) = t
        .post(
            "/crm/v3/objects/contacts/merge",
            json!({ "primaryObjectId": a.to_string(), "objectIdToMerge": b.to_string() }),
        )
        .await;
    let (alias, _, alias_body) = t
        .get(&format!("/crm/v3/objects/contacts/{b}?properties=phone"))
        .await;
    let (gdpr, _, _) = t
        .post(
            "/crm/v3/objects/contacts/gdpr-delete",
            json!({ "objectId": a.to_string() }),
        )
        .await;
    let (after, _, _) = t
        .get(&format!("/crm/v3/objects/contacts/{a}?archived=true"))
        .await;

    // Assert
    assert_eq!(merged, StatusCode::OK, "{merged_body}");
    assert_eq!(
        merged_body["properties"]["hs_merged_object_ids"],
        b.to_string()
    );
    assert_eq!(alias, StatusCode::OK);
    assert_eq!(
        id_of(&alias_body),
        a,
        "a merged-away id leads to the winner"
    );
    assert_eq!(alias_body["properties"]["phone"], "1");
    assert_eq!(gdpr, StatusCode::NO_CONTENT);
    assert_eq!(
        after,
        StatusCode::NOT_FOUND,
        "a GDPR delete cannot be restored"
    );
}

#[tokio::test]
async fn batch_read_answers_a_merged_away_id_with_the_surviving_contact() {
    // Arrange
    let t = start().await;
    let a = t.create_contact(json!({ "email": "a@example.com" })).await;
    let b = t
        .create_contact(json!({ "email": "b@example.com", "phone": "1" }))
        .await;
    let (merged, _, _) = t
        .post(
            "/crm/v3/objects/contacts/merge",
            json!({ "primaryObjectId": a.to_string(), "objectIdToMerge": b.to_string() }),
        )
        .await;
    assert_eq!(merged, StatusCode::OK);

    // Act
    let (alone, _, alone_body) = t
        .post(
            "/crm/v3/objects/contacts/batch/read",
            json!({ "inputs": [{ "id": b.to_string() }], "properties": ["phone", "hs_merged_object_ids"] }),
        )
        .await;
    let (both, _, both_body) = t
        .post(
            "/crm/v3/objects/contacts/batch/read",
            json!({ "inputs": [{ "id": a.to_string() }, { "id": b.to_string() }] }),
        )
        .await;

    // Assert: the winner under its own id, naming the id asked for; no error.
    assert_eq!(alone, StatusCode::OK, "{alone_body}");
    assert!(alone_body.get("errors").is_none(), "{alone_body}");
    let results = alone_body["results"].as_array().expect("results");
    assert_eq!(results.len(), 1, "{alone_body}");
    assert_eq!(id_of(&results[0]), a);
    assert_eq!(
        results[0]["properties"]["hs_merged_object_ids"],
        b.to_string()
    );
    assert_eq!(results[0]["properties"]["phone"], "1");
    assert_eq!(both, StatusCode::OK);
    assert_eq!(
        both_body["results"].as_array().map(Vec::len),
        Some(1),
        "one result for the winner asked for twice: {both_body}"
    );
}

#[tokio::test]
async fn other_object_types_are_not_simulated() {
    // Arrange
    let t = start().await;

    // Act
    let (status, _, body) = t.get("/crm/v3/objects/deals").await;

    // Assert
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["message"], "Unable to infer object type from: deals");
}
