//! The control API over HTTP, under `/_sim/`. No authentication: it is a test
//! fixture bound to loopback. Errors are `{"error": "…"}`.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::api_faults::ApiFault;
use crate::config::{DeliveryConfig, FaultConfig, RateLimitConfig};
use crate::control::Control;
use crate::error::ControlError;
use crate::model::{AuthorizeRequest, CreatePortal, ImportRequest, MergeRequest, UserEdit};
use crate::query::Query;
use crate::state::Sim;

/// The prefix of every control route.
pub const PREFIX: &str = "/_sim";

pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope(PREFIX)
            .route("/health", web::get().to(health))
            .route("/info", web::get().to(info))
            .route("/stats", web::get().to(stats))
            .route("/stats/reset", web::post().to(reset_stats))
            .route("/reset", web::post().to(reset))
            .route("/portals", web::get().to(portals))
            .route("/portals", web::post().to(create_portal))
            .route(
                "/portals/{portalId}/private-app-tokens",
                web::post().to(add_private_app_token),
            )
            .route(
                "/portals/{portalId}/rate-limit",
                web::get().to(get_rate_limit),
            )
            .route(
                "/portals/{portalId}/rate-limit",
                web::put().to(put_rate_limit),
            )
            .route("/rate-limit", web::put().to(put_default_rate_limit))
            .route("/oauth/authorize", web::post().to(authorize))
            .route("/oauth/expire", web::post().to(expire))
            .route("/portals/{portalId}/contacts", web::get().to(contacts))
            .route(
                "/portals/{portalId}/contacts",
                web::post().to(create_contact),
            )
            .route(
                "/portals/{portalId}/contacts/{contactId}",
                web::get().to(contact),
            )
            .route(
                "/portals/{portalId}/contacts/{contactId}",
                web::patch().to(update_contact),
            )
            .route(
                "/portals/{portalId}/contacts/{contactId}",
                web::delete().to(archive_contact),
            )
            .route(
                "/portals/{portalId}/contacts/{contactId}/restore",
                web::post().to(restore_contact),
            )
            .route(
                "/portals/{portalId}/contacts/{contactId}/gdpr-delete",
                web::post().to(gdpr_delete),
            )
            .route("/portals/{portalId}/merge", web::post().to(merge))
            .route("/portals/{portalId}/imports", web::post().to(import))
            .route("/faults", web::get().to(get_faults))
            .route("/faults", web::put().to(put_faults))
            .route("/api-faults", web::get().to(get_api_faults))
            .route("/api-faults", web::post().to(add_api_fault))
            .route("/api-faults", web::delete().to(clear_api_faults))
            .route("/delivery", web::get().to(get_delivery))
            .route("/delivery", web::put().to(put_delivery))
            .route("/delivery/pause", web::post().to(pause))
            .route("/delivery/resume", web::post().to(resume))
            .route("/delivery/retry-now", web::post().to(retry_now))
            .route("/delivery/idle", web::get().to(idle)),
    );
}

fn control(sim: web::Data<Sim>) -> Control {
    Control::new(sim.into_inner())
}

fn ok<T: Serialize>(status: StatusCode, value: &T) -> HttpResponse {
    HttpResponse::build(status).json(value)
}

fn fail(err: &ControlError) -> HttpResponse {
    HttpResponse::build(err.status()).json(json!({ "error": err.to_string() }))
}

fn respond<T: Serialize>(status: StatusCode, result: Result<T, ControlError>) -> HttpResponse {
    match result {
        Ok(v) => ok(status, &v),
        Err(e) => fail(&e),
    }
}

fn done(result: Result<(), ControlError>) -> HttpResponse {
    match result {
        Ok(()) => HttpResponse::NoContent().finish(),
        Err(e) => fail(&e),
    }
}

fn body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ControlError> {
    let bytes = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        bytes
    };
    serde_json::from_slice(bytes)
        .map_err(|e| ControlError::Invalid(format!("invalid JSON body: {e}")))
}

fn path_u64(req: &HttpRequest, name: &str) -> Result<u64, ControlError> {
    let raw = req.match_info().get(name).unwrap_or_default();
    raw.parse()
        .map_err(|_| ControlError::Invalid(format!("{name} must be a number, got {raw}")))
}

fn portal_and_contact(req: &HttpRequest) -> Result<(u64, u64), ControlError> {
    Ok((path_u64(req, "portalId")?, path_u64(req, "contactId")?))
}

/// A body with nothing but the acting user.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UserBody {
    user_id: Option<u64>,
}

async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

async fn info(sim: web::Data<Sim>) -> HttpResponse {
    ok(StatusCode::OK, &control(sim).info())
}

async fn stats(sim: web::Data<Sim>) -> HttpResponse {
    ok(StatusCode::OK, &control(sim).stats())
}

async fn reset_stats(sim: web::Data<Sim>) -> HttpResponse {
    control(sim).reset_stats();
    HttpResponse::NoContent().finish()
}

async fn reset(sim: web::Data<Sim>) -> HttpResponse {
    done(control(sim).reset())
}

async fn portals(sim: web::Data<Sim>) -> HttpResponse {
    ok(StatusCode::OK, &control(sim).portals())
}

async fn create_portal(sim: web::Data<Sim>, bytes: web::Bytes) -> HttpResponse {
    let result = body::<CreatePortal>(&bytes).and_then(|req| control(sim).create_portal(req));
    match result {
        Ok(()) => HttpResponse::Created().finish(),
        Err(e) => fail(&e),
    }
}

#[derive(Debug, Default, Deserialize)]
struct TokenBody {
    token: Option<String>,
}

async fn add_private_app_token(
    sim: web::Data<Sim>,
    req: HttpRequest,
    bytes: web::Bytes,
) -> HttpResponse {
    let result = path_u64(&req, "portalId")
        .and_then(|portal| Ok((portal, body::<TokenBody>(&bytes)?)))
        .and_then(|(portal, b)| control(sim).add_private_app_token(portal, b.token));
    respond(StatusCode::CREATED, result)
}

async fn get_rate_limit(sim: web::Data<Sim>, req: HttpRequest) -> HttpResponse {
    respond(
        StatusCode::OK,
        path_u64(&req, "portalId").and_then(|p| control(sim).rate_limit(p)),
    )
}

async fn put_rate_limit(sim: web::Data<Sim>, req: HttpRequest, bytes: web::Bytes) -> HttpResponse {
    done(
        path_u64(&req, "portalId")
            .and_then(|p| Ok((p, body::<RateLimitConfig>(&bytes)?)))
            .and_then(|(p, cfg)| control(sim).set_rate_limit(Some(p), cfg)),
    )
}

async fn put_default_rate_limit(sim: web::Data<Sim>, bytes: web::Bytes) -> HttpResponse {
    done(body::<RateLimitConfig>(&bytes).and_then(|cfg| control(sim).set_rate_limit(None, cfg)))
}

async fn authorize(sim: web::Data<Sim>, bytes: web::Bytes) -> HttpResponse {
    respond(
        StatusCode::OK,
        body::<AuthorizeRequest>(&bytes).map(|req| control(sim).authorize(req)),
    )
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExpireBody {
    access_token: Option<String>,
}

async fn expire(sim: web::Data<Sim>, bytes: web::Bytes) -> HttpResponse {
    respond(
        StatusCode::OK,
        body::<ExpireBody>(&bytes).map(
            |b| json!({ "expired": control(sim).expire_access_tokens(b.access_token.as_deref()) }),
        ),
    )
}

async fn contacts(sim: web::Data<Sim>, req: HttpRequest) -> HttpResponse {
    respond(
        StatusCode::OK,
        path_u64(&req, "portalId").and_then(|p| control(sim).contacts(p)),
    )
}

async fn contact(sim: web::Data<Sim>, req: HttpRequest) -> HttpResponse {
    respond(
        StatusCode::OK,
        portal_and_contact(&req).and_then(|(p, c)| control(sim).contact(p, c)),
    )
}

async fn create_contact(sim: web::Data<Sim>, req: HttpRequest, bytes: web::Bytes) -> HttpResponse {
    respond(
        StatusCode::CREATED,
        path_u64(&req, "portalId")
            .and_then(|p| Ok((p, body::<UserEdit>(&bytes)?)))
            .and_then(|(p, edit)| control(sim).create_contact(p, &edit)),
    )
}

async fn update_contact(sim: web::Data<Sim>, req: HttpRequest, bytes: web::Bytes) -> HttpResponse {
    respond(
        StatusCode::OK,
        portal_and_contact(&req)
            .and_then(|pc| Ok((pc, body::<UserEdit>(&bytes)?)))
            .and_then(|((p, c), edit)| control(sim).update_contact(p, c, &edit)),
    )
}

async fn archive_contact(sim: web::Data<Sim>, req: HttpRequest) -> HttpResponse {
    let q = Query::parse(req.query_string());
    done(portal_and_contact(&req).and_then(|(p, c)| {
        let user = q
            .u64("userId")
            .map_err(|_| ControlError::Invalid("userId must be a number".to_owned()))?;
        control(sim).archive_contact(p, c, user)
    }))
}

async fn restore_contact(sim: web::Data<Sim>, req: HttpRequest, bytes: web::Bytes) -> HttpResponse {
    respond(
        StatusCode::OK,
        portal_and_contact(&req)
            .and_then(|pc| Ok((pc, body::<UserBody>(&bytes)?)))
            .and_then(|((p, c), b)| control(sim).restore_contact(p, c, b.user_id)),
    )
}

async fn gdpr_delete(sim: web::Data<Sim>, req: HttpRequest, bytes: web::Bytes) -> HttpResponse {
    done(
        portal_and_contact(&req)
            .and_then(|pc| Ok((pc, body::<UserBody>(&bytes)?)))
            .and_then(|((p, c), b)| control(sim).gdpr_delete_contact(p, c, b.user_id)),
    )
}

async fn merge(sim: web::Data<Sim>, req: HttpRequest, bytes: web::Bytes) -> HttpResponse {
    respond(
        StatusCode::OK,
        path_u64(&req, "portalId")
            .and_then(|p| Ok((p, body::<MergeRequest>(&bytes)?)))
            .and_then(|(p, m)| control(sim).merge_contacts(p, &m)),
    )
}

async fn import(sim: web::Data<Sim>, req: HttpRequest, bytes: web::Bytes) -> HttpResponse {
    respond(
        StatusCode::OK,
        path_u64(&req, "portalId")
            .and_then(|p| Ok((p, body::<ImportRequest>(&bytes)?)))
            .and_then(|(p, r)| control(sim).import_contacts(p, &r)),
    )
}

async fn get_faults(sim: web::Data<Sim>) -> HttpResponse {
    ok(StatusCode::OK, &control(sim).faults())
}

async fn put_faults(sim: web::Data<Sim>, bytes: web::Bytes) -> HttpResponse {
    done(body::<FaultConfig>(&bytes).map(|f| control(sim).set_faults(f)))
}

async fn get_api_faults(sim: web::Data<Sim>) -> HttpResponse {
    ok(StatusCode::OK, &control(sim).api_faults())
}

async fn add_api_fault(sim: web::Data<Sim>, bytes: web::Bytes) -> HttpResponse {
    done(body::<ApiFault>(&bytes).and_then(|f| control(sim).inject_api_fault(f)))
}

async fn clear_api_faults(sim: web::Data<Sim>) -> HttpResponse {
    control(sim).clear_api_faults();
    HttpResponse::NoContent().finish()
}

async fn get_delivery(sim: web::Data<Sim>) -> HttpResponse {
    ok(StatusCode::OK, &control(sim).delivery_config())
}

async fn put_delivery(sim: web::Data<Sim>, bytes: web::Bytes) -> HttpResponse {
    done(body::<DeliveryConfig>(&bytes).map(|c| control(sim).set_delivery_config(c)))
}

async fn pause(sim: web::Data<Sim>) -> HttpResponse {
    control(sim).pause_delivery();
    HttpResponse::NoContent().finish()
}

async fn resume(sim: web::Data<Sim>) -> HttpResponse {
    control(sim).resume_delivery();
    HttpResponse::NoContent().finish()
}

async fn retry_now(sim: web::Data<Sim>) -> HttpResponse {
    control(sim).retry_now();
    HttpResponse::NoContent().finish()
}

/// `?timeoutMs=N` waits server-side up to N ms (default 0: just look).
async fn idle(sim: web::Data<Sim>, req: HttpRequest) -> HttpResponse {
    let q = Query::parse(req.query_string());
    let timeout = q.u64("timeoutMs").ok().flatten().unwrap_or(0);
    let idle = control(sim)
        .wait_for_delivery_idle(Duration::from_millis(timeout.min(600_000)))
        .await;
    HttpResponse::Ok().json(json!({ "idle": idle }))
}
