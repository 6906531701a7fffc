//! Liveness, readiness and metrics.

use std::time::Duration;

use actix_web::{HttpResponse, web};

use crate::AppState;

/// `GET /healthz`: the process is up.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

/// `GET /readyz`: Redis answers, so deliveries can be queued.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    match state.enqueuer.ping(Duration::from_secs(1)).await {
        Ok(()) => HttpResponse::Ok().json(serde_json::json!({ "status": "ready" })),
        Err(e) => {
            tracing::warn!(error = %e, "Readiness check failed: Redis unavailable");
            HttpResponse::ServiceUnavailable()
                .json(serde_json::json!({ "status": "unavailable", "redis": "unreachable" }))
        }
    }
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(leadsync_runtime::metrics::encode(&state.metrics.registry))
}
