//! The one span every request runs in, and the request counter.
//!
//! tracing-actix-web's `TracingLogger` builds a fifteen-field span, a random
//! UUID (a `getrandom` call) and two wrappers per request; measured on the
//! single-event benchmark that cost more than verifying and queueing the
//! webhook. This middleware keeps what an operator searches by — method,
//! route, request id, status — plus the webhook's own fields, which the
//! handler records on the same span, so a request is exactly one span.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::web;
use tracing::Instrument as _;
use tracing::field::Empty;

use crate::AppState;

/// Runs each request inside span `http.request` (exported with `otel.name`
/// `webhook.receive`, `health` or `metrics`) and counts it by route and status.
pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let route = req.match_pattern();
    let name = match route.as_deref() {
        Some(r) if r.starts_with("/webhooks/") => "webhook.receive",
        Some("/healthz" | "/readyz") => "health",
        Some("/metrics") => "metrics",
        _ => "http.request",
    };
    let route = route.unwrap_or_else(|| "unmatched".to_owned());
    let span = tracing::info_span!(
        "http.request",
        otel.name = name,
        otel.kind = "server",
        http.method = %req.method(),
        http.route = route.as_str(),
        request_id = %leadsync_runtime::telemetry::next_request_id(),
        http.status_code = Empty,
        otel.status_code = Empty,
        exception.message = Empty,
        integration = Empty,
        events = Empty,
        attempt = Empty,
        signature = Empty,
    );
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let result = next.call(req).instrument(span.clone()).await;
    let status = match &result {
        Ok(res) => res.status(),
        Err(e) => e.as_response_error().status_code(),
    };
    span.record("http.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
        if let Some(error) = result.as_ref().ok().and_then(|r| r.response().error()) {
            span.record("exception.message", tracing::field::display(error));
        }
    } else {
        span.record("otel.status_code", "OK");
    }
    if let Some(state) = state {
        state
            .metrics
            .requests
            .with_label_values(&[route.as_str(), status.as_str()])
            .inc();
    }
    result
}
