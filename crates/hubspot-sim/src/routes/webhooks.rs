//! Webhooks API v3 management (docs/hubspot-sim.md, "Webhook management"), authenticated with the
//! developer key (`?hapikey=`) or a bearer token of the same app.

use actix_web::http::StatusCode;
use actix_web::http::header::AUTHORIZATION;
use actix_web::{HttpRequest, HttpResponse, web};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{error, parse_json};
use crate::auth::{read, write};
use crate::crm::{iso, now_ms};
use crate::error::{ApiError, JSON_UTF8};
use crate::query::Query;
use crate::state::Sim;
use crate::stats::Endpoint;
use crate::webhooks::management::{SettingsInput, SubscriptionError, SubscriptionInput};

pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/webhooks/v3/{appId}")
            .route("/settings", web::get().to(get_settings))
            .route("/settings", web::put().to(put_settings))
            .route("/settings", web::delete().to(delete_settings))
            .route("/subscriptions", web::get().to(list_subscriptions))
            .route("/subscriptions", web::post().to(create_subscription))
            .route("/subscriptions/batch/update", web::post().to(batch_update))
            .route(
                "/subscriptions/{subscriptionId}",
                web::get().to(get_subscription),
            )
            .route(
                "/subscriptions/{subscriptionId}",
                web::patch().to(update_subscription),
            )
            .route(
                "/subscriptions/{subscriptionId}",
                web::delete().to(delete_subscription),
            ),
    );
}

fn json_response(status: StatusCode, value: &impl serde::Serialize) -> HttpResponse {
    match serde_json::to_vec(value) {
        Ok(body) => HttpResponse::build(status)
            .content_type(JSON_UTF8)
            .body(body),
        Err(_) => HttpResponse::InternalServerError().finish(),
    }
}

/// Counts the call and checks the developer key (or an app bearer token) and
/// that `{appId}` is our app.
fn admit(sim: &Sim, req: &HttpRequest, endpoint: Endpoint) -> Result<(), ApiError> {
    sim.counters.count(endpoint);
    let app_id = sim.config.app.app_id;
    let q = Query::parse(req.query_string());
    let by_key = q.get("hapikey") == Some(sim.config.app.developer_api_key.expose_secret());
    let by_token = || {
        req.headers()
            .get(AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| sim.auth.authenticate(Some(h), now_ms()).ok())
            .is_some_and(|c| c.app_id == app_id && !c.private_app)
    };
    if !by_key && !by_token() {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "INVALID_AUTHENTICATION",
            "The API key provided is invalid. View or manage your API key here: https://app.hubspot.com/l/api-key/",
        ));
    }
    let path_app = req.match_info().get("appId").unwrap_or_default();
    if path_app.parse::<u64>().ok() != Some(app_id) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "OBJECT_NOT_FOUND",
            format!("No app with id {path_app} belongs to this developer account."),
        ));
    }
    Ok(())
}

macro_rules! admit_or_return {
    ($sim:expr, $req:expr, $endpoint:expr) => {
        if let Err(e) = admit(&$sim, &$req, $endpoint) {
            return error(&$sim, e);
        }
    };
}

fn subscription_id(req: &HttpRequest) -> Result<u64, ApiError> {
    let raw = req.match_info().get("subscriptionId").unwrap_or_default();
    raw.parse().map_err(|_| subscription_missing(raw))
}

fn subscription_missing(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "SUBSCRIPTION_ID_NOT_FOUND",
        format!("Failed to find subscriptions by id `{id}`."),
    )
}

fn subscription_not_found(sim: &Sim, id: &str) -> HttpResponse {
    error(sim, subscription_missing(id))
}

async fn get_settings(sim: web::Data<Sim>, req: HttpRequest) -> HttpResponse {
    admit_or_return!(sim, req, Endpoint::WebhookSettingsGet);
    match &read(&sim.webhooks).settings {
        Some(settings) => json_response(StatusCode::OK, settings),
        None => error(
            &sim,
            ApiError::new(
                StatusCode::NOT_FOUND,
                "OBJECT_NOT_FOUND",
                format!(
                    "No webhook settings exist for app {}.",
                    sim.config.app.app_id
                ),
            ),
        ),
    }
}

async fn put_settings(sim: web::Data<Sim>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    admit_or_return!(sim, req, Endpoint::WebhookSettingsPut);
    let input: SettingsInput = match parse_json(&body) {
        Ok(input) => input,
        Err(e) => return error(&sim, e),
    };
    let result = write(&sim.webhooks)
        .put_settings(input, now_ms())
        .map(|s| json_response(StatusCode::OK, s));
    match result {
        Ok(resp) => {
            // Applied at once (HubSpot may take up to five minutes).
            sim.sync_target();
            resp
        }
        Err(message) => error(&sim, ApiError::validation(message)),
    }
}

async fn delete_settings(sim: web::Data<Sim>, req: HttpRequest) -> HttpResponse {
    admit_or_return!(sim, req, Endpoint::WebhookSettingsDelete);
    write(&sim.webhooks).delete_settings();
    sim.sync_target();
    HttpResponse::NoContent().finish()
}

async fn list_subscriptions(sim: web::Data<Sim>, req: HttpRequest) -> HttpResponse {
    admit_or_return!(sim, req, Endpoint::SubscriptionsList);
    let app = read(&sim.webhooks);
    let results: Vec<_> = app.subscriptions().map(|s| s.json()).collect();
    json_response(StatusCode::OK, &json!({ "results": results }))
}

async fn create_subscription(
    sim: web::Data<Sim>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    admit_or_return!(sim, req, Endpoint::SubscriptionsCreate);
    let input: SubscriptionInput = match parse_json(&body) {
        Ok(input) => input,
        Err(e) => return error(&sim, e),
    };
    let mut app = write(&sim.webhooks);
    match app.create(input, now_ms()) {
        Ok(sub) => json_response(StatusCode::CREATED, &sub.json()),
        Err(SubscriptionError::Invalid(message)) => error(&sim, ApiError::validation(message)),
        Err(SubscriptionError::Exists(id)) => error(
            &sim,
            ApiError::new(
                StatusCode::CONFLICT,
                "CONFLICT",
                format!("A subscription for this event type and property already exists: {id}."),
            ),
        ),
        // The documented body has no category.
        Err(SubscriptionError::Cap) => error(
            &sim,
            ApiError::raw(
                StatusCode::BAD_REQUEST,
                json!({
                    "status": "error",
                    "message": "Couldn't create another subscription. You've reached the maximum number allowed per application (1000).",
                    "requestId": sim.ids.uuid(crate::ids::Stream::Correlation),
                }),
            ),
        ),
    }
}

async fn get_subscription(sim: web::Data<Sim>, req: HttpRequest) -> HttpResponse {
    admit_or_return!(sim, req, Endpoint::SubscriptionsGet);
    let id = match subscription_id(&req) {
        Ok(id) => id,
        Err(e) => return error(&sim, e),
    };
    match read(&sim.webhooks).subscription(id) {
        Some(sub) => json_response(StatusCode::OK, &sub.json()),
        None => subscription_not_found(&sim, &id.to_string()),
    }
}

#[derive(Debug, Deserialize)]
struct ActiveBody {
    active: Option<bool>,
}

async fn update_subscription(
    sim: web::Data<Sim>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    admit_or_return!(sim, req, Endpoint::SubscriptionsUpdate);
    let id = match subscription_id(&req) {
        Ok(id) => id,
        Err(e) => return error(&sim, e),
    };
    let input: ActiveBody = match parse_json(&body) {
        Ok(input) => input,
        Err(e) => return error(&sim, e),
    };
    let Some(active) = input.active else {
        return error(&sim, ApiError::validation("active is required."));
    };
    match write(&sim.webhooks).set_active(id, active, now_ms()) {
        Some(sub) => json_response(StatusCode::OK, &sub.json()),
        None => subscription_not_found(&sim, &id.to_string()),
    }
}

async fn delete_subscription(sim: web::Data<Sim>, req: HttpRequest) -> HttpResponse {
    admit_or_return!(sim, req, Endpoint::SubscriptionsDelete);
    let id = match subscription_id(&req) {
        Ok(id) => id,
        Err(e) => return error(&sim, e),
    };
    if write(&sim.webhooks).delete(id) {
        HttpResponse::NoContent().finish()
    } else {
        subscription_not_found(&sim, &id.to_string())
    }
}

#[derive(Debug, Deserialize)]
struct BatchItem {
    id: Value,
    active: bool,
}

#[derive(Debug, Deserialize)]
struct BatchBody {
    #[serde(default)]
    inputs: Vec<BatchItem>,
}

async fn batch_update(sim: web::Data<Sim>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    admit_or_return!(sim, req, Endpoint::SubscriptionsBatchUpdate);
    let started = iso(now_ms());
    let input: BatchBody = match parse_json(&body) {
        Ok(input) => input,
        Err(e) => return error(&sim, e),
    };
    let mut results = Vec::new();
    let mut errors = Vec::new();
    {
        let mut app = write(&sim.webhooks);
        for item in input.inputs {
            let raw = match &item.id {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            match raw
                .parse::<u64>()
                .ok()
                .and_then(|id| app.set_active(id, item.active, now_ms()))
            {
                Some(sub) => results.push(serde_json::to_value(sub.json()).unwrap_or_default()),
                None => errors.push(json!({
                    "status": "error",
                    "category": "SUBSCRIPTION_ID_NOT_FOUND",
                    "message": format!("Failed to find subscriptions by id `{raw}`."),
                })),
            }
        }
    }
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::MULTI_STATUS
    };
    let mut body = json!({
        "status": "COMPLETE",
        "results": results,
        "startedAt": started,
        "completedAt": iso(now_ms()),
    });
    if !errors.is_empty() {
        body["numErrors"] = json!(errors.len());
        body["errors"] = Value::Array(errors);
    }
    json_response(status, &body)
}
