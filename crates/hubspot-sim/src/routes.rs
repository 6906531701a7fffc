//! HTTP routes. Every HubSpot API handler goes through [`gate`] (count,
//! authenticate, rate-limit) and [`finish`] (rate-limit headers, error bodies).

pub(crate) mod account;
pub(crate) mod contacts;
pub(crate) mod control;
pub(crate) mod oauth;
pub(crate) mod properties;
pub(crate) mod webhooks;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use actix_web::http::StatusCode;
use actix_web::http::header::AUTHORIZATION;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::auth::{Caller, lock};
use crate::crm::{Source, now_ms};
use crate::error::{ApiError, JSON_UTF8};
use crate::ids::Stream;
use crate::limiter::{Policy, RateHeaders, Verdict};
use crate::state::{Portal, Sim};
use crate::stats::Endpoint;

/// Largest request body accepted (100 inputs with many properties fit easily).
const MAX_BODY: usize = 8 * 1024 * 1024;

/// Registers every route.
pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::PayloadConfig::new(MAX_BODY));
    control::configure(cfg);
    oauth::configure(cfg);
    webhooks::configure(cfg);
    properties::configure(cfg);
    contacts::configure(cfg);
    account::configure(cfg);
}

/// The default service: an unknown path.
pub(crate) async fn not_found(sim: web::Data<Sim>) -> HttpResponse {
    error(&sim, ApiError::not_found_path())
}

/// An authenticated, admitted API call.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub(crate) portal: Arc<Portal>,
    pub(crate) caller: Caller,
    headers: Option<RateHeaders>,
}

impl Ctx {
    /// Changes made through this call: `INTEGRATION` with the app's id.
    pub(crate) fn source(&self) -> Arc<Source> {
        Source::integration(self.caller.app_id)
    }
}

/// A successful answer.
#[derive(Debug)]
pub(crate) struct Reply {
    status: StatusCode,
    body: Option<Vec<u8>>,
    location: Option<String>,
}

impl Reply {
    pub(crate) fn json<T: Serialize>(status: StatusCode, value: &T) -> Result<Self, ApiError> {
        let body = serde_json::to_vec(value).map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL_ERROR",
                e.to_string(),
            )
        })?;
        Ok(Self {
            status,
            body: Some(body),
            location: None,
        })
    }

    pub(crate) fn empty() -> Self {
        Self {
            status: StatusCode::NO_CONTENT,
            body: None,
            location: None,
        }
    }

    pub(crate) fn with_location(mut self, location: String) -> Self {
        self.location = Some(location);
        self
    }

    fn into_response(self) -> HttpResponse {
        let mut builder = HttpResponse::build(self.status);
        if let Some(location) = self.location {
            builder.insert_header(("Location", location));
        }
        match self.body {
            Some(body) => builder.content_type(JSON_UTF8).body(body),
            None => builder.finish(),
        }
    }
}

/// Renders an error with a fresh correlation id.
pub(crate) fn error(sim: &Sim, err: ApiError) -> HttpResponse {
    err.into_response(sim.ids.uuid(Stream::Correlation))
}

/// Counts the call, authenticates its bearer token, applies the portal's
/// limits and any injected fault. `Err` is the finished 401/429/injected response.
pub(crate) fn gate(
    sim: &Sim,
    req: &HttpRequest,
    endpoint: Endpoint,
) -> Result<Ctx, Box<HttpResponse>> {
    sim.counters.count(endpoint);
    let header = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|h| h.to_str().ok());
    let caller = sim
        .auth
        .authenticate(header, now_ms())
        .map_err(|e| Box::new(error(sim, e.into_api())))?;
    // A token always names an existing portal, unless a reset removed it.
    let portal = sim
        .portal(caller.portal_id)
        .ok_or_else(|| Box::new(error(sim, crate::auth::AuthError::Unknown.into_api())))?;
    portal.api_calls.fetch_add(1, Ordering::Relaxed);
    let now = Instant::now();
    let day = Sim::day(now_ms());
    let verdict = if endpoint == Endpoint::ContactsSearch {
        portal.search_calls.fetch_add(1, Ordering::Relaxed);
        let token = header.unwrap_or_default();
        lock(&portal.limiter).check_search(token, now, day)
    } else {
        lock(&portal.limiter).check(now, day, caller.private_app)
    };
    match verdict {
        Verdict::Allow(headers) => match sim.api_faults.take(endpoint, portal.id) {
            // An admitted call HubSpot fails anyway (injected: docs/hubspot-sim.md).
            Some(err) => {
                let mut resp = error(sim, err);
                add_rate_headers(&mut resp, headers);
                Err(Box::new(resp))
            }
            None => Ok(Ctx {
                portal,
                caller,
                headers,
            }),
        },
        Verdict::Deny(policy, headers) => {
            portal.rate_limited.fetch_add(1, Ordering::Relaxed);
            sim.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
            Err(Box::new(rate_limited(sim, policy, headers)))
        }
    }
}

/// HubSpot's 429 (docs/hubspot-sim.md, "Rate limits").
fn rate_limited(sim: &Sim, policy: Policy, headers: Option<RateHeaders>) -> HttpResponse {
    let (message, name) = match policy {
        Policy::TenSecondly => (
            "You have reached your ten_secondly_rolling limit.",
            "TEN_SECONDLY_ROLLING",
        ),
        Policy::Daily => ("You have reached your daily limit.", "DAILY"),
        Policy::SearchSecondly => ("You have reached your secondly limit.", "SECONDLY"),
    };
    let correlation_id = sim.ids.uuid(Stream::Correlation);
    let body = json!({
        "status": "error",
        "message": message,
        "errorType": "RATE_LIMIT",
        "correlationId": correlation_id,
        "policyName": name,
        "requestId": sim.ids.uuid(Stream::Correlation),
    });
    let mut resp = ApiError::raw(StatusCode::TOO_MANY_REQUESTS, body).into_response(correlation_id);
    add_rate_headers(&mut resp, headers);
    resp
}

fn add_rate_headers(resp: &mut HttpResponse, headers: Option<RateHeaders>) {
    let Some(h) = headers else { return };
    let map = resp.headers_mut();
    let mut put = |name: &'static str, value: String| {
        if let Ok(v) = actix_web::http::header::HeaderValue::from_str(&value) {
            map.insert(actix_web::http::header::HeaderName::from_static(name), v);
        }
    };
    put("x-hubspot-ratelimit-max", h.max.to_string());
    put("x-hubspot-ratelimit-remaining", h.remaining.to_string());
    put(
        "x-hubspot-ratelimit-interval-milliseconds",
        h.interval_ms.to_string(),
    );
    if let Some((daily, left)) = h.daily {
        put("x-hubspot-ratelimit-daily", daily.to_string());
        put("x-hubspot-ratelimit-daily-remaining", left.to_string());
    }
}

/// Renders a handler's outcome with the call's rate-limit headers.
pub(crate) fn finish(sim: &Sim, ctx: &Ctx, result: Result<Reply, ApiError>) -> HttpResponse {
    let mut resp = match result {
        Ok(reply) => reply.into_response(),
        Err(err) => error(sim, err),
    };
    add_rate_headers(&mut resp, ctx.headers);
    resp
}

/// Parses a JSON body with HubSpot's error for malformed input.
pub(crate) fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::invalid_json(&e))
}
