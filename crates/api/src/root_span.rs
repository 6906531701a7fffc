//! The one span every request runs in, and the request counter.
//!
//! The span carries what an operator searches by — method, route, request
//! id, status — and, once known, `integration.id` (from the token) and
//! `lead.id` (from the path). Never the token, a body or personal data.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{HttpMessage as _, web};
use tracing::Instrument as _;
use tracing::field::Empty;

use crate::auth::CallerId;
use crate::startup::AppState;

/// Runs each request inside span `api.request` (exported as
/// `{METHOD} {route}`) and counts it by route and status.
pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let route = req
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().clone();
    let request_id = leadsync_runtime::telemetry::next_request_id();
    let span = tracing::info_span!(
        "api.request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        http.method = %method,
        http.route = route.as_str(),
        request_id = %request_id,
        http.status_code = Empty,
        otel.status_code = Empty,
        exception.message = Empty,
        integration.id = Empty,
        token.id = Empty,
        lead.id = Empty,
        dead_letter.id = Empty,
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
        if let Ok(res) = &result
            && let Some(error) = res.response().error()
        {
            span.record("exception.message", tracing::field::display(error));
            let integration = res.request().extensions().get::<CallerId>().map(|c| c.0);
            // Debug carries the source chain: the cause the caller never sees.
            tracing::error!(
                http.method = %method,
                http.route = route.as_str(),
                http.status_code = status.as_u16(),
                request_id = %request_id,
                integration.id = integration.map(tracing::field::display),
                error = ?error,
                "{method} {route} failed with {status}"
            );
        }
    } else {
        span.record("otel.status_code", "OK");
    }
    if let Some(state) = state {
        state
            .requests
            .with_label_values(&[route.as_str(), status.as_str()])
            .inc();
    }
    result
}
