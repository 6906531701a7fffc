//! Token scopes: what each scope may call, what it is refused, and the
//! OpenAPI document naming the scope of every route.

use std::collections::BTreeMap;

use leadsync_store::api_tokens::Scope;
use leadsync_store::{integrations, leads};
use reqwest::Method;
use reqwest::header::WWW_AUTHENTICATE;
use serde_json::json;

use crate::helpers::{Tenant, TestApi, json_of};

/// Every `/v1` data route and the scope it needs.
const ROUTE_SCOPES: [(&str, Scope); 11] = [
    ("get /v1/leads", Scope::Read),
    ("get /v1/leads/{id}", Scope::Read),
    ("get /v1/leads/{id}/sync-status", Scope::Read),
    ("get /v1/integration/settings", Scope::Read),
    ("get /v1/stats", Scope::Read),
    ("get /v1/dead-letters", Scope::Read),
    ("post /v1/leads", Scope::Write),
    ("patch /v1/leads/{id}", Scope::Write),
    ("delete /v1/leads/{id}", Scope::Write),
    ("put /v1/integration/settings", Scope::Admin),
    ("post /v1/dead-letters/{id}/replay", Scope::Admin),
];

/// Calls `route` (`method path`) with an empty JSON object as the body.
async fn call(api: &TestApi, tenant: &Tenant, route: &str, lead: &str) -> reqwest::Response {
    let (method, path) = route.split_once(' ').unwrap();
    let id = if path.contains("dead-letters") {
        "999"
    } else {
        lead
    };
    let method: Method = method.to_uppercase().parse().unwrap();
    api.request(method, &path.replace("{id}", id), Some(&tenant.token))
        .json(&json!({}))
        .send()
        .await
        .unwrap()
}

/// The settings' version and the integration's live lead count.
async fn state_of(api: &TestApi, tenant: &Tenant) -> (i64, usize) {
    let pool = api.db.store.pool();
    let (_, version) = integrations::get_versioned(pool, tenant.integration.id)
        .await
        .unwrap()
        .unwrap();
    let leads = leads::list(pool, tenant.integration.id, &leads::ListLeads::default())
        .await
        .unwrap();
    (version.get(), leads.len())
}

#[tokio::test]
async fn each_scope_reaches_its_routes_and_gets_403_naming_the_scope_on_the_others() {
    // Arrange
    let api = TestApi::spawn().await;
    let acme = api.tenant("acme", 1001).await;
    let lead = api
        .create_lead(&acme, &json!({"email": "ada@acme.io"}))
        .await;
    let lead = lead["id"].as_str().unwrap().to_owned();

    for held in [Scope::Read, Scope::Write, Scope::Admin] {
        let tenant = api.with_scope(&acme, held).await;
        let before = state_of(&api, &tenant).await;
        let mut refused = 0;
        for (route, needed) in ROUTE_SCOPES {
            // Act
            let response = call(&api, &tenant, route, &lead).await;

            // Assert
            let status = response.status().as_u16();
            if held.allows(needed) {
                assert!(
                    status != 401 && status != 403,
                    "{held} token on {route}: {status}"
                );
                continue;
            }
            refused += 1;
            let challenge = response
                .headers()
                .get(WWW_AUTHENTICATE)
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            let body = json_of(response, 403).await;
            assert_eq!(body["code"], "insufficient_scope", "{held} on {route}");
            let message = body["message"].as_str().unwrap();
            assert!(
                message.contains(&format!("`{needed}`")),
                "{held} on {route}: {message}"
            );
            assert!(
                challenge.contains("error=\"insufficient_scope\"")
                    && challenge.contains(&format!("scope=\"{needed}\"")),
                "{held} on {route}: {challenge}"
            );
        }
        let expected_refusals = match held {
            Scope::Read => 5,
            Scope::Write => 2,
            Scope::Admin => 0,
        };
        assert_eq!(refused, expected_refusals, "{held}");
        if held != Scope::Admin {
            // The settings (and, for `read`, the leads) are untouched by
            // the refused calls.
            let after = state_of(&api, &tenant).await;
            assert_eq!(after.0, before.0, "{held}: the settings did not change");
            if held == Scope::Read {
                assert_eq!(after.1, before.1, "read: no lead was written");
            }
        }
    }
    api.finish().await;
}

#[tokio::test]
async fn a_missing_or_invalid_token_is_still_a_401_on_an_admin_route() {
    // Arrange
    let api = TestApi::spawn().await;
    let acme = api.tenant("acme", 1001).await;

    // Act
    let missing = api
        .request(Method::PUT, "/v1/integration/settings", None)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let invalid = api
        .request(
            Method::PUT,
            "/v1/integration/settings",
            Some(&format!("lsk_{}", "A".repeat(43))),
        )
        .json(&json!({}))
        .send()
        .await
        .unwrap();

    // Assert
    assert_eq!(json_of(missing, 401).await["code"], "missing_token");
    assert_eq!(json_of(invalid, 401).await["code"], "invalid_token");
    assert_eq!(state_of(&api, &acme).await.0, 1, "nothing was replaced");
    api.finish().await;
}

#[tokio::test]
async fn the_openapi_document_names_the_scope_of_every_route() {
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
    let mut documented = BTreeMap::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let Some(security) = operation.get("security") else {
                continue;
            };
            assert_eq!(
                security.as_array().map(Vec::len),
                Some(1),
                "{method} {path}: one requirement"
            );
            let scopes = security[0]["bearer"]
                .as_array()
                .expect("a bearer requirement");
            assert_eq!(scopes.len(), 1, "{method} {path}: one scope");
            documented.insert(
                format!("{method} {path}"),
                scopes[0].as_str().unwrap().to_owned(),
            );
        }
    }
    let expected: BTreeMap<String, String> = ROUTE_SCOPES
        .iter()
        .map(|(route, scope)| ((*route).to_owned(), scope.as_str().to_owned()))
        .collect();
    assert_eq!(documented, expected);
    let scheme = doc["components"]["securitySchemes"]["bearer"]["description"]
        .as_str()
        .unwrap();
    for scope in Scope::ALL {
        assert!(scheme.contains(&format!("`{scope}`")), "{scheme}");
    }
    api.finish().await;
}
