//! HTTP routes.

mod health;
mod webhooks;

use actix_web::web;

/// Mounts every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/webhooks/hubspot", web::post().to(webhooks::receive))
        .route(
            "/webhooks/hubspot/{integration}",
            web::post().to(webhooks::receive_for_integration),
        )
        .route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .route("/metrics", web::get().to(health::metrics));
}
