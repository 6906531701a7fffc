//! The worker's small HTTP server: `/metrics`, `/healthz`, `/readyz`.

use std::net::TcpListener;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{App, HttpResponse, HttpServer, web};
use leadsync_store::Store;
use prometheus::Registry;

use crate::runner::ConsumerStatus;

/// What the routes read.
#[derive(Clone)]
pub struct HttpState {
    /// The metrics served at `/metrics`.
    pub registry: Registry,
    /// Whether a queue consumer runs.
    pub consumer: ConsumerStatus,
    /// The platform's database, checked by `/readyz`.
    pub store: Store,
}

/// `GET /healthz`: the process is up.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

/// `GET /readyz`: a queue consumer is registered and Postgres answers.
pub async fn readyz(state: web::Data<HttpState>) -> HttpResponse {
    let consumer = state.consumer.is_ready();
    let database = tokio::time::timeout(
        Duration::from_secs(1),
        sqlx::query("SELECT 1").execute(state.store.pool()),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    let body = serde_json::json!({
        "status": if consumer && database { "ready" } else { "unavailable" },
        "consumer": if consumer { "running" } else { "stopped" },
        "database": if database { "reachable" } else { "unreachable" },
    });
    if consumer && database {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(state: web::Data<HttpState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(leadsync_runtime::metrics::encode(&state.registry))
}

/// Serves the routes on `listener`, one worker thread, no signal handling of
/// its own (the application stops it).
pub fn serve(listener: TcpListener, state: HttpState) -> std::io::Result<Server> {
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(state.clone()))
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
            .route("/metrics", web::get().to(metrics))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(1)
    .listen(listener)?
    .run();
    Ok(server)
}
