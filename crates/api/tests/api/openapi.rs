use std::collections::BTreeSet;

use reqwest::Method;

use crate::helpers::{TestApi, json_of};

/// Every route the API serves, as `METHOD path`.
const ROUTES: [&str; 15] = [
    "get /healthz",
    "get /readyz",
    "get /metrics",
    "get /v1/openapi.json",
    "get /v1/leads",
    "post /v1/leads",
    "get /v1/leads/{id}",
    "patch /v1/leads/{id}",
    "delete /v1/leads/{id}",
    "get /v1/leads/{id}/sync-status",
    "get /v1/integration/settings",
    "put /v1/integration/settings",
    "get /v1/stats",
    "get /v1/dead-letters",
    "post /v1/dead-letters/{id}/replay",
];

#[tokio::test]
async fn the_openapi_document_lists_every_route_and_its_security() {
    // Arrange
    let api = TestApi::spawn().await;

    // Act
    let response = api
        .request(Method::GET, "/v1/openapi.json", None)
        .send()
        .await
        .unwrap();
    let doc = json_of(response, 200).await;

    // Assert
    let paths = doc["paths"].as_object().expect("paths");
    let mut documented = BTreeSet::new();
    for (path, item) in paths {
        for (method, operation) in item.as_object().unwrap() {
            documented.insert(format!("{method} {path}"));
            let secured = operation.get("security").is_some();
            assert_eq!(
                secured,
                path.starts_with("/v1/") && path != "/v1/openapi.json",
                "{method} {path}: only the /v1 data routes need the bearer token"
            );
        }
    }
    let expected: BTreeSet<String> = ROUTES.iter().map(|r| (*r).to_owned()).collect();
    assert_eq!(documented, expected);
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    for schema in [
        "LeadView",
        "LeadInput",
        "SettingsDoc",
        "ErrorBody",
        "ReplayView",
    ] {
        assert!(
            doc["components"]["schemas"].get(schema).is_some(),
            "schema {schema}"
        );
    }
    api.finish().await;
}

#[tokio::test]
async fn every_documented_route_is_served() {
    // Arrange
    let api = TestApi::spawn().await;
    let acme = api.tenant("acme", 1001).await;
    let lead = api
        .create_lead(&acme, &serde_json::json!({"email": "ada@acme.io"}))
        .await;
    let id = lead["id"].as_str().unwrap();

    for route in ROUTES {
        // Act
        let (method, path) = route.split_once(' ').unwrap();
        let path = path.replace(
            "{id}",
            if path.contains("dead-letters") {
                "999"
            } else {
                id
            },
        );
        let method: Method = method.to_uppercase().parse().unwrap();
        let response = api
            .request(method, &path, Some(&acme.token))
            .json(&serde_json::json!({}))
            .send()
            .await
            .unwrap();

        // Assert: anything but the JSON 404 of an unknown route.
        let status = response.status();
        let body = response.text().await.unwrap();
        assert!(
            !(status == 404 && body.contains("route not found")),
            "{route} is documented but not served"
        );
    }
    api.finish().await;
}
