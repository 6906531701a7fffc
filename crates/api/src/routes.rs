//! HTTP routes. [`configure`] mounts every handler and, through
//! utoipa-actix-web, documents it in the same call.

pub mod dead_letters;
pub mod health;
pub mod leads;
pub mod settings;
pub mod stats;
pub mod sync_status;

use actix_web::HttpResponse;
use actix_web::ResponseError as _;
use utoipa_actix_web::service_config::ServiceConfig;

use crate::error::ApiError;

/// Mounts (and documents) every route.
pub fn configure(cfg: &mut ServiceConfig<'_>) {
    cfg.service(health::healthz)
        .service(health::readyz)
        .service(health::metrics)
        .service(health::openapi_json)
        .service(leads::list_leads)
        .service(leads::create_lead)
        .service(leads::get_lead)
        .service(leads::update_lead)
        .service(leads::delete_lead)
        .service(sync_status::get_sync_status)
        .service(settings::get_settings)
        .service(settings::put_settings)
        .service(stats::get_stats)
        .service(dead_letters::list_dead_letters)
        .service(dead_letters::replay_dead_letter);
}

/// Any other path or method: a JSON 404.
pub async fn not_found() -> HttpResponse {
    ApiError::NotFound("route").error_response()
}
