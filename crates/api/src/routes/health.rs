//! Liveness, readiness, metrics and the OpenAPI document.

use std::time::Duration;

use actix_web::{HttpResponse, get, web};
use serde::Serialize;
use sqlx::Connection as _;
use utoipa::ToSchema;

use crate::openapi::Document;
use crate::startup::AppState;

/// A health answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthView {
    /// `ok`, `ready` or `unavailable`.
    pub status: String,
    /// `reachable` or `unreachable` (readiness only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
}

/// The process is up.
#[utoipa::path(
    tag = "operations",
    responses((status = 200, description = "Up", body = HealthView))
)]
#[get("/healthz")]
pub async fn healthz() -> web::Json<HealthView> {
    web::Json(HealthView {
        status: "ok".to_owned(),
        database: None,
    })
}

/// Postgres answers, so requests can be served.
#[utoipa::path(
    tag = "operations",
    responses(
        (status = 200, description = "Ready", body = HealthView),
        (status = 503, description = "Postgres is unreachable", body = HealthView),
    )
)]
#[get("/readyz")]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let ping = async {
        let mut conn = state.store.pool().acquire().await?;
        conn.ping().await
    };
    let reachable = tokio::time::timeout(Duration::from_secs(1), ping)
        .await
        .is_ok_and(|r| r.is_ok());
    if reachable {
        HttpResponse::Ok().json(HealthView {
            status: "ready".to_owned(),
            database: Some("reachable".to_owned()),
        })
    } else {
        tracing::warn!("Readiness check failed: Postgres unreachable");
        HttpResponse::ServiceUnavailable().json(HealthView {
            status: "unavailable".to_owned(),
            database: Some("unreachable".to_owned()),
        })
    }
}

/// Prometheus metrics (text format).
#[utoipa::path(
    tag = "operations",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"))
)]
#[get("/metrics")]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(leadsync_runtime::metrics::encode(&state.registry))
}

/// This API's OpenAPI document.
#[utoipa::path(
    tag = "operations",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json"))
)]
#[get("/v1/openapi.json")]
pub async fn openapi_json(document: web::Data<Document>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(document.json().to_owned())
}
