//! OAuth v1 (docs/hubspot-sim.md, "OAuth"). Not rate-limited: HubSpot's limits are per
//! account, and these calls happen before there is one.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use secrecy::ExposeSecret;

use super::error;
use crate::auth::{AppCredentials, TokenForm};
use crate::crm::now_ms;
use crate::error::{ApiError, JSON_UTF8};
use crate::query::decode_path_segment;
use crate::state::Sim;
use crate::stats::Endpoint;

pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/oauth/v1/token", web::post().to(token))
        .route(
            "/oauth/v1/access-tokens/{token}",
            web::get().to(access_token_info),
        )
        .route(
            "/oauth/v1/refresh-tokens/{token}",
            web::get().to(refresh_token_info),
        )
        .route(
            "/oauth/v1/refresh-tokens/{token}",
            web::delete().to(revoke_refresh_token),
        );
}

fn json(status: StatusCode, value: &impl serde::Serialize) -> HttpResponse {
    match serde_json::to_vec(value) {
        Ok(body) => HttpResponse::build(status)
            .content_type(JSON_UTF8)
            .body(body),
        Err(_) => HttpResponse::InternalServerError().finish(),
    }
}

fn token_not_found(sim: &Sim) -> HttpResponse {
    error(
        sim,
        ApiError::new(StatusCode::NOT_FOUND, "OBJECT_NOT_FOUND", "Token not found"),
    )
}

async fn token(sim: web::Data<Sim>, body: web::Bytes) -> HttpResponse {
    sim.counters.count(Endpoint::OAuthToken);
    let form = TokenForm::parse(&body);
    let app = AppCredentials {
        app_id: sim.config.app.app_id,
        client_id: &sim.config.app.client_id,
        client_secret: sim.config.app.client_secret.expose_secret(),
        ttl_secs: sim.config.access_token_ttl.as_secs().max(1),
    };
    match sim.auth.exchange(&form, &app, &sim.ids, now_ms()) {
        Ok(tokens) => {
            // An install creates the account in the simulator if it is new.
            sim.portal_or_create(tokens.hub_id);
            json(StatusCode::OK, &tokens)
        }
        Err(e) => error(&sim, e),
    }
}

async fn access_token_info(sim: web::Data<Sim>, req: HttpRequest) -> HttpResponse {
    sim.counters.count(Endpoint::OAuthAccessTokenInfo);
    let token = decode_path_segment(req.match_info().get("token").unwrap_or_default());
    match sim.auth.access_token_info(&token, now_ms()) {
        Some(info) => json(StatusCode::OK, &info),
        None => token_not_found(&sim),
    }
}

async fn refresh_token_info(sim: web::Data<Sim>, req: HttpRequest) -> HttpResponse {
    sim.counters.count(Endpoint::OAuthRefreshTokenInfo);
    let token = decode_path_segment(req.match_info().get("token").unwrap_or_default());
    match sim
        .auth
        .refresh_token_info(&token, &sim.config.app.client_id)
    {
        Some(info) => json(StatusCode::OK, &info),
        None => token_not_found(&sim),
    }
}

async fn revoke_refresh_token(sim: web::Data<Sim>, req: HttpRequest) -> HttpResponse {
    sim.counters.count(Endpoint::OAuthRefreshTokenDelete);
    let token = decode_path_segment(req.match_info().get("token").unwrap_or_default());
    if sim.auth.revoke_refresh(&token) {
        HttpResponse::NoContent().finish()
    } else {
        token_not_found(&sim)
    }
}
