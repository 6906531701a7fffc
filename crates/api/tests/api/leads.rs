use leadsync_store::outbox::{self, ChangeOperation};
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApi, json_of};

#[tokio::test]
async fn leads_round_trip_and_every_write_enters_the_outbox() {
    // Arrange
    let api = TestApi::spawn().await;
    let acme = api.tenant("acme", 1001).await;

    // Act
    let created = api
        .send_json(
            Method::POST,
            "/v1/leads",
            &acme,
            &json!({
                "first_name": " Ada ",
                "last_name": "Lovelace",
                "email": "Ada@Example.COM",
                "company": "Analytical Engines",
                "source_system": "import",
            }),
        )
        .await;
    let location = created.headers()["location"].to_str().unwrap().to_owned();
    let created = json_of(created, 201).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let read = json_of(api.get(&location, &acme).await, 200).await;
    let patched = api
        .send_json(
            Method::PATCH,
            &format!("/v1/leads/{id}"),
            &acme,
            &json!({"job_title": "Programmer", "company": null}),
        )
        .await;
    let patched = json_of(patched, 200).await;
    let listed = json_of(api.get("/v1/leads", &acme).await, 200).await;
    let deleted = api
        .request(
            Method::DELETE,
            &format!("/v1/leads/{id}"),
            Some(&acme.token),
        )
        .send()
        .await
        .unwrap();
    let after = api.get(&format!("/v1/leads/{id}"), &acme).await;
    let again = api
        .request(
            Method::DELETE,
            &format!("/v1/leads/{id}"),
            Some(&acme.token),
        )
        .send()
        .await
        .unwrap();
    let with_deleted = json_of(api.get("/v1/leads?include_deleted=true", &acme).await, 200).await;

    // Assert
    assert_eq!(location, format!("/v1/leads/{id}"));
    assert_eq!(created["first_name"], "Ada", "values are trimmed");
    assert_eq!(
        created["email"], "ada@example.com",
        "addresses are normalised"
    );
    assert_eq!(created["full_name"], "Ada Lovelace");
    assert_eq!(created["status"], "new");
    assert_eq!(created["source_system"], "import");
    assert_eq!(created["crm_sync_status"], "not_synced");
    assert_eq!(read, created);
    assert_eq!(patched["job_title"], "Programmer");
    assert_eq!(patched["company"], Value::Null, "null clears a field");
    assert_eq!(patched["last_name"], "Lovelace", "absent fields stay");
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    assert_eq!(deleted.status(), 204);
    assert_eq!(json_of(after, 404).await["code"], "not_found");
    assert_eq!(again.status(), 404, "a deleted lead is gone");
    assert!(with_deleted["data"][0]["deleted_at"].is_string());
    // The outbox trigger saw every write: they will be pushed to HubSpot.
    let mut tx = api.db.store.begin().await.unwrap();
    let changes = outbox::claim_batch(&mut tx, 100).await.unwrap();
    tx.rollback().await.unwrap();
    let ops: Vec<(String, ChangeOperation)> = changes
        .iter()
        .map(|c| (c.lead_id.to_string(), c.operation))
        .collect();
    assert_eq!(
        ops,
        [
            (id.clone(), ChangeOperation::Insert),
            (id.clone(), ChangeOperation::Update),
            (id.clone(), ChangeOperation::Delete),
        ]
    );
    assert!(
        changes
            .iter()
            .all(|c| c.integration_id == acme.integration.id)
    );
    let update_fields: Vec<&str> = changes[1].changed_fields.iter().map(|f| f.name()).collect();
    assert_eq!(update_fields, ["company", "job_title"]);
    api.finish().await;
}

#[tokio::test]
async fn the_list_pages_with_a_cursor() {
    // Arrange
    let api = TestApi::spawn().await;
    let acme = api.tenant("acme", 1001).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let lead = api
            .create_lead(&acme, &json!({"email": format!("p{i}@acme.io")}))
            .await;
        ids.push(lead["id"].as_str().unwrap().to_owned());
    }

    // Act
    let mut seen = Vec::new();
    let mut pages = 0;
    let mut path = "/v1/leads?limit=2".to_owned();
    loop {
        let page = json_of(api.get(&path, &acme).await, 200).await;
        pages += 1;
        for lead in page["data"].as_array().unwrap() {
            seen.push(lead["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/leads?limit=2&cursor={cursor}"),
            None => break,
        }
    }

    // Assert
    assert_eq!(seen, ids, "every lead once, oldest first");
    assert_eq!(pages, 3);
    api.finish().await;
}

/// Method, path, body, expected status, code and field.
type Case = (
    Method,
    String,
    Value,
    u16,
    &'static str,
    Option<&'static str>,
);

#[tokio::test]
async fn bad_input_gets_a_clear_error_naming_the_field_and_writes_nothing() {
    // Arrange
    let api = TestApi::spawn().await;
    let acme = api.tenant("acme", 1001).await;
    let existing = api
        .create_lead(&acme, &json!({"email": "taken@acme.io"}))
        .await;
    let id = existing["id"].as_str().unwrap();
    let json_cases: [Case; 9] = [
        (
            Method::POST,
            "/v1/leads".into(),
            json!({"email": "not-an-address"}),
            422,
            "invalid_field",
            Some("email"),
        ),
        (
            Method::POST,
            "/v1/leads".into(),
            json!({"first_name": 42}),
            422,
            "invalid_field",
            Some("first_name"),
        ),
        (
            Method::POST,
            "/v1/leads".into(),
            json!({"favourite_colour": "blue"}),
            400,
            "unknown_field",
            Some("favourite_colour"),
        ),
        (
            Method::POST,
            "/v1/leads".into(),
            json!({"source_system": "hubspot"}),
            422,
            "invalid_field",
            Some("source_system"),
        ),
        (
            Method::POST,
            "/v1/leads".into(),
            json!(["not", "an", "object"]),
            400,
            "invalid_json",
            None,
        ),
        (
            Method::POST,
            "/v1/leads".into(),
            json!({"email": "TAKEN@acme.io"}),
            409,
            "duplicate_email",
            Some("email"),
        ),
        (
            Method::POST,
            "/v1/leads".into(),
            json!({"company": "x".repeat(5000)}),
            413,
            "body_too_large",
            None,
        ),
        (
            Method::PATCH,
            format!("/v1/leads/{id}"),
            json!({"source_system": "manual"}),
            422,
            "invalid_field",
            Some("source_system"),
        ),
        (
            Method::PATCH,
            format!("/v1/leads/{id}"),
            json!({"phone": "1".repeat(2049)}),
            422,
            "invalid_field",
            Some("phone"),
        ),
    ];

    for (method, path, body, status, code, field) in json_cases {
        // Act
        let response = api.send_json(method.clone(), &path, &acme, &body).await;

        // Assert
        let error = json_of(response, status).await;
        assert_eq!(error["code"], code, "{method} {path}");
        assert_eq!(error["field"].as_str(), field, "{method} {path}");
        assert!(!error["message"].as_str().unwrap().is_empty());
    }
    let not_json = api
        .request(Method::POST, "/v1/leads", Some(&acme.token))
        .header("Content-Type", "application/json")
        .body("{\"email\": ")
        .send()
        .await
        .unwrap();
    let not_json = json_of(not_json, 400).await;
    assert_eq!(not_json["code"], "invalid_json");
    assert!(
        not_json["message"]
            .as_str()
            .unwrap()
            .contains("not valid JSON")
    );
    let query_cases = [
        ("/v1/leads?limit=0", "limit"),
        ("/v1/leads?limit=ten", "limit"),
        ("/v1/leads?cursor=garbage", "cursor"),
        ("/v1/leads?include_deleted=maybe", "include_deleted"),
    ];
    for (path, field) in query_cases {
        let error = json_of(api.get(path, &acme).await, 422).await;
        assert_eq!(error["field"], field, "{path}");
    }
    let unknown_param = json_of(api.get("/v1/leads?colour=blue", &acme).await, 400).await;
    assert!(
        unknown_param["message"]
            .as_str()
            .unwrap()
            .contains("colour")
    );
    let bad_id = json_of(api.get("/v1/leads/not-a-uuid", &acme).await, 400).await;
    assert_eq!(bad_id["code"], "invalid_path");
    let all = json_of(api.get("/v1/leads", &acme).await, 200).await;
    assert_eq!(
        all["data"].as_array().unwrap().len(),
        1,
        "nothing else was written"
    );
    api.finish().await;
}

#[tokio::test]
async fn control_characters_are_refused_naming_the_field() {
    // Arrange
    let api = TestApi::spawn().await;
    let acme = api.tenant("acme", 1001).await;
    let existing = api
        .create_lead(&acme, &json!({"email": "ada@acme.io"}))
        .await;
    let id = existing["id"].as_str().unwrap();
    let cases = [
        (
            Method::POST,
            "/v1/leads".to_owned(),
            "first_name",
            "Ada\u{0}",
        ),
        (
            Method::POST,
            "/v1/leads".to_owned(),
            "last_name",
            "Love\tlace",
        ),
        (
            Method::POST,
            "/v1/leads".to_owned(),
            "source",
            "web\u{1b}[31m",
        ),
        (
            Method::POST,
            "/v1/leads".to_owned(),
            "email",
            "bob\u{0}@acme.io",
        ),
        (
            Method::PATCH,
            format!("/v1/leads/{id}"),
            "company",
            "Acme\nLtd",
        ),
        (
            Method::PATCH,
            format!("/v1/leads/{id}"),
            "job_title",
            "CTO\u{7f}",
        ),
        (
            Method::PATCH,
            format!("/v1/leads/{id}"),
            "country",
            "U\u{85}K",
        ),
    ];

    for (method, path, field, value) in cases {
        // Act
        let response = api
            .send_json(method.clone(), &path, &acme, &json!({ field: value }))
            .await;

        // Assert
        let error = json_of(response, 422).await;
        assert_eq!(error["code"], "invalid_field", "{method} {field}");
        assert_eq!(error["field"], field, "{method} {field}");
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .contains("control character"),
            "{error}"
        );
    }
    let trimmed = api
        .create_lead(&acme, &json!({"first_name": "\tGrace\r\n"}))
        .await;
    assert_eq!(
        trimmed["first_name"], "Grace",
        "surrounding whitespace is trimmed"
    );
    let all = json_of(api.get("/v1/leads", &acme).await, 200).await;
    assert_eq!(all["data"].as_array().unwrap().len(), 2);
    let unchanged = json_of(api.get(&format!("/v1/leads/{id}"), &acme).await, 200).await;
    assert_eq!(unchanged["company"], Value::Null, "nothing was written");
    api.finish().await;
}

#[tokio::test]
async fn status_takes_the_values_hubspot_accepts_for_its_lead_status() {
    // Arrange
    let api = TestApi::spawn().await;
    let acme = api.tenant("acme", 1001).await;

    // Act
    let refused = api
        .send_json(
            Method::POST,
            "/v1/leads",
            &acme,
            &json!({"email": "ada@acme.io", "status": "won"}),
        )
        .await;
    let upper = api
        .create_lead(
            &acme,
            &json!({"email": "bob@acme.io", "status": "IN_PROGRESS"}),
        )
        .await;
    let id = upper["id"].as_str().unwrap();
    let patched = api
        .send_json(
            Method::PATCH,
            &format!("/v1/leads/{id}"),
            &acme,
            &json!({"status": "open_deal"}),
        )
        .await;
    let bad_patch = api
        .send_json(
            Method::PATCH,
            &format!("/v1/leads/{id}"),
            &acme,
            &json!({"status": "in progress"}),
        )
        .await;
    // Mapped to a property of the account's own, status is free text.
    let remapped = api
        .send_json(
            Method::PUT,
            "/v1/integration/settings",
            &acme,
            &json!({"field_mapping": {"status": "lead_stage"}}),
        )
        .await;
    let free = api
        .send_json(
            Method::POST,
            "/v1/leads",
            &acme,
            &json!({"email": "cyd@acme.io", "status": "won"}),
        )
        .await;

    // Assert
    let error = json_of(refused, 422).await;
    assert_eq!(error["field"], "status");
    let message = error["message"].as_str().unwrap();
    for accepted in ["new", "open", "in_progress", "open_deal", "bad_timing"] {
        assert!(message.contains(accepted), "{message}");
    }
    assert_eq!(upper["status"], "in_progress", "stored lower-cased");
    assert_eq!(json_of(patched, 200).await["status"], "open_deal");
    assert_eq!(json_of(bad_patch, 422).await["field"], "status");
    json_of(remapped, 200).await;
    assert_eq!(json_of(free, 201).await["status"], "won");
    api.finish().await;
}

#[tokio::test]
async fn the_accepted_statuses_are_the_options_of_hubspots_lead_status() {
    // Arrange
    let sim = leadsync_hubspot_sim::spawn(leadsync_hubspot_sim::SimConfig {
        portals: vec![
            leadsync_hubspot_sim::PortalConfig::new(1001).with_private_app_token("pat-na1-api"),
        ],
        rate_limit: leadsync_hubspot_sim::RateLimitConfig::disabled(),
        ..leadsync_hubspot_sim::SimConfig::default()
    })
    .await
    .expect("simulator starts");

    // Act
    let property: Value = reqwest::Client::new()
        .get(format!(
            "{}/crm/v3/properties/contacts/{}",
            sim.base_url(),
            leadsync_api::routes::leads::LEAD_STATUS_PROPERTY
        ))
        .bearer_auth("pat-na1-api")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    // Assert: what the API accepts, as the field mapping sends it.
    let mut options: Vec<String> = property["options"]
        .as_array()
        .expect("an enumeration")
        .iter()
        .map(|o| o["value"].as_str().unwrap().to_owned())
        .collect();
    options.sort();
    let mut accepted: Vec<String> = leadsync_api::routes::leads::HUBSPOT_LEAD_STATUSES
        .iter()
        .map(|s| s.to_uppercase())
        .collect();
    accepted.sort();
    assert_eq!(accepted, options);
}
