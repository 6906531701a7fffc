//! Properties API v3 for contacts (docs/hubspot-sim.md, "Properties").

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::json;

use super::{Ctx, Reply, finish, gate, parse_json};
use crate::auth::lock;
use crate::crm::properties::{CreateError, PropertyCreate, PropertyUpdate};
use crate::crm::{iso, now_ms};
use crate::error::ApiError;
use crate::query::Query;
use crate::state::Sim;
use crate::stats::Endpoint;

pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/crm/v3/properties/{objectType}")
            .route("", web::get().to(list))
            .route("", web::post().to(create))
            .route("/{propertyName}", web::get().to(get))
            .route("/{propertyName}", web::patch().to(update))
            .route("/{propertyName}", web::delete().to(archive)),
    );
}

fn handle(
    sim: &Sim,
    req: &HttpRequest,
    endpoint: Endpoint,
    f: impl FnOnce(&Ctx) -> Result<Reply, ApiError>,
) -> HttpResponse {
    let ctx = match gate(sim, req, endpoint) {
        Ok(ctx) => ctx,
        Err(resp) => return *resp,
    };
    let result = match req.match_info().get("objectType") {
        Some("contacts" | "0-1") => f(&ctx),
        other => Err(ApiError::validation(format!(
            "Unable to infer object type from: {}",
            other.unwrap_or_default()
        ))),
    };
    finish(sim, &ctx, result)
}

fn not_found(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "OBJECT_NOT_FOUND",
        format!("Unable to find property {name} on object type contacts"),
    )
}

async fn list(sim: web::Data<Sim>, req: HttpRequest) -> HttpResponse {
    handle(&sim, &req, Endpoint::PropertiesList, |ctx| {
        let q = Query::parse(req.query_string());
        let archived = q.bool("archived", false)?;
        let wanted = q.list("properties");
        let store = lock(&ctx.portal.crm);
        let results: Vec<_> = store
            .properties
            .list(archived)
            .filter(|d| wanted.is_empty() || wanted.contains(&d.name))
            .collect();
        Reply::json(StatusCode::OK, &json!({ "results": results }))
    })
}

async fn get(sim: web::Data<Sim>, req: HttpRequest) -> HttpResponse {
    handle(&sim, &req, Endpoint::PropertiesGet, |ctx| {
        let name = req.match_info().get("propertyName").unwrap_or_default();
        let q = Query::parse(req.query_string());
        let archived = q.bool("archived", false)?;
        let store = lock(&ctx.portal.crm);
        let def = store
            .properties
            .get_any(name)
            .filter(|d| d.archived == archived)
            .ok_or_else(|| not_found(name))?;
        Reply::json(StatusCode::OK, def)
    })
}

async fn create(sim: web::Data<Sim>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    handle(&sim, &req, Endpoint::PropertiesCreate, |ctx| {
        let input: PropertyCreate = parse_json(&body)?;
        let mut store = lock(&ctx.portal.crm);
        match store.properties.create(input, &iso(now_ms())) {
            Ok(def) => {
                let location = format!("/crm/v3/properties/contacts/{}", def.name);
                Ok(Reply::json(StatusCode::CREATED, def)?.with_location(location))
            }
            Err(CreateError::Invalid(message)) => Err(ApiError::validation(message)),
            Err(CreateError::Exists(message)) => Err(ApiError::new(
                StatusCode::CONFLICT,
                "OBJECT_ALREADY_EXISTS",
                message,
            )),
        }
    })
}

async fn update(sim: web::Data<Sim>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    handle(&sim, &req, Endpoint::PropertiesUpdate, |ctx| {
        let name = req.match_info().get("propertyName").unwrap_or_default();
        let input: PropertyUpdate = parse_json(&body)?;
        let mut store = lock(&ctx.portal.crm);
        match store.properties.update(name, input, &iso(now_ms())) {
            Ok(Some(def)) => Reply::json(StatusCode::OK, def),
            Ok(None) => Err(not_found(name)),
            Err(message) => Err(ApiError::validation(message)),
        }
    })
}

async fn archive(sim: web::Data<Sim>, req: HttpRequest) -> HttpResponse {
    handle(&sim, &req, Endpoint::PropertiesArchive, |ctx| {
        let name = req.match_info().get("propertyName").unwrap_or_default();
        let mut store = lock(&ctx.portal.crm);
        match store.properties.archive(name) {
            Ok(true) => Ok(Reply::empty()),
            Ok(false) => Err(not_found(name)),
            Err(message) => Err(ApiError::validation(message)),
        }
    })
}
