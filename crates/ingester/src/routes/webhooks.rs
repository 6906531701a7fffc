//! `POST /webhooks/hubspot[/{integration}]`: HubSpot's deliveries.

use std::time::Instant;

use actix_web::http::header::{CONTENT_LENGTH, HeaderMap};
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::BytesMut;
use futures::StreamExt as _;
use leadsync_domain::WebhookBatch;
use leadsync_hubspot::signature::{
    HEADER_REQUEST_TIMESTAMP, HEADER_SIGNATURE, HEADER_SIGNATURE_V3, HEADER_SIGNATURE_VERSION,
};
use leadsync_hubspot::{SignatureHeaders, UnverifiedRequest};
use leadsync_queue::InboundEvent;

use crate::{AppState, IngestError};

/// Receives a delivery on the app's single webhook URL; each event's
/// `portalId` names its tenant.
pub async fn receive(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, IngestError> {
    ingest(&req, payload, &state, None).await
}

/// Receives a delivery on a per-integration URL.
pub async fn receive_for_integration(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    integration: web::Path<String>,
) -> Result<HttpResponse, IngestError> {
    ingest(&req, payload, &state, Some(integration.into_inner())).await
}

/// Runs inside the request's span (see [`crate::root_span`]), on which it
/// records the webhook's fields.
async fn ingest(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    integration: Option<String>,
) -> Result<HttpResponse, IngestError> {
    let body = read_body(req.headers(), payload, state.body_limit).await?;
    let uri = public_uri(&state.public_base_url, req);
    let headers = req.headers();
    let now_ms = now_ms();
    let verified = UnverifiedRequest {
        method: req.method().as_str(),
        uri: &uri,
        body,
        headers: SignatureHeaders {
            signature: header(headers, HEADER_SIGNATURE),
            version: header(headers, HEADER_SIGNATURE_VERSION),
            signature_v3: header(headers, HEADER_SIGNATURE_V3),
            timestamp: header(headers, HEADER_REQUEST_TIMESTAMP),
        },
    }
    .verify(&state.secrets, state.policy, now_ms)
    .inspect_err(|e| {
        state
            .metrics
            .signature_failures
            .with_label_values(&[e.reason()])
            .inc();
        tracing::warn!(reason = e.reason(), "Rejected a webhook delivery: {e}");
    })?;
    let span = tracing::Span::current();
    span.record("signature", tracing::field::debug(verified.version()));
    if let Some(integration) = integration.as_deref() {
        span.record("integration", integration);
    }

    let batch = WebhookBatch::parse(verified.as_bytes())?;
    span.record("events", batch.len());
    if let Some(first) = batch.events().first() {
        span.record("attempt", first.attempt_number());
    }
    state.metrics.events_received.inc_by(batch.len() as u64);

    let trace = leadsync_runtime::telemetry::trace_context_of(&span);
    let events: Vec<InboundEvent> = batch
        .into_events()
        .into_iter()
        .map(|e| InboundEvent::new(e, now_ms, trace.clone(), integration.clone()))
        .collect();
    let count = events.len();
    let started = Instant::now();
    state
        .enqueuer
        .enqueue(events, state.enqueue_deadline)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, events = count, "Could not queue a webhook delivery; HubSpot will retry it");
            IngestError::Unavailable(e)
        })?;
    state
        .metrics
        .enqueue_seconds
        .observe(started.elapsed().as_secs_f64());
    tracing::debug!(events = count, "Queued webhook events");
    Ok(HttpResponse::Ok().finish())
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The URL HubSpot called: the configured public prefix plus the path and
/// query exactly as received (escapes intact; the verifier decodes them by
/// HubSpot's table). The Host header is not trusted behind proxies.
fn public_uri(base: &str, req: &HttpRequest) -> String {
    let pq = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let mut uri = String::with_capacity(base.len() + pq.len());
    uri.push_str(base);
    uri.push_str(pq);
    uri
}

/// Reads the body, refusing more than `limit` bytes before buffering them.
async fn read_body(
    headers: &HeaderMap,
    mut payload: web::Payload,
    limit: usize,
) -> Result<bytes::Bytes, IngestError> {
    let declared = header(headers, CONTENT_LENGTH.as_str()).and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(IngestError::TooLarge { limit });
    }
    let mut body = BytesMut::with_capacity(declared.unwrap_or(8 * 1024));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| IngestError::BodyRead(e.to_string()))?;
        if body.len() + chunk.len() > limit {
            return Err(IngestError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}
