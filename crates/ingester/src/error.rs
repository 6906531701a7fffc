//! The one place where ingester errors become HTTP responses.
//!
//! HubSpot retries a delivery that gets any 4xx or 5xx up to 10 times over
//! about a day, so a 4xx is kept for requests that will never succeed as sent
//! (bad signature, malformed or oversized body); trouble on our side is 503,
//! which HubSpot retries.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use leadsync_domain::BatchError;
use leadsync_hubspot::SignatureError;
use leadsync_queue::QueueError;
use serde::Serialize;

/// Why a request was not accepted.
#[derive(thiserror::Error)]
pub enum IngestError {
    /// The signature is missing, stale or wrong.
    #[error("signature rejected: {0}")]
    Signature(#[from] SignatureError),
    /// The body is not a JSON array of events.
    #[error("malformed body: {0}")]
    Malformed(#[from] BatchError),
    /// The body is larger than `application.body_limit_bytes`.
    #[error("body larger than {limit} bytes")]
    TooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// The body could not be read from the connection.
    #[error("body could not be read: {0}")]
    BodyRead(String),
    /// Redis is unreachable or too slow: the events were not queued.
    #[error("queue unavailable")]
    Unavailable(#[source] QueueError),
    /// Anything else; details are logged, never returned.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl std::fmt::Debug for IngestError {
    // Debug prints the whole source chain, so a log line names the root cause.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{self}")?;
        let mut current = std::error::Error::source(self);
        while let Some(cause) = current {
            writeln!(f, "Caused by:\n\t{cause}")?;
            current = cause.source();
        }
        Ok(())
    }
}

impl IngestError {
    /// Stable, snake_case code returned in the body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Signature(_) => "invalid_signature",
            Self::Malformed(_) => "malformed_body",
            Self::TooLarge { .. } => "body_too_large",
            Self::BodyRead(_) => "body_unreadable",
            Self::Unavailable(_) => "queue_unavailable",
            Self::Internal(_) => "internal_error",
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    message: String,
}

impl ResponseError for IngestError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Signature(_) => StatusCode::UNAUTHORIZED,
            Self::Malformed(_) | Self::BodyRead(_) => StatusCode::BAD_REQUEST,
            Self::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let message = match self {
            // Which check failed is useful to whoever configures the app; the
            // secret and the expected value are never part of it.
            Self::Signature(e) => e.to_string(),
            Self::Malformed(e) => e.to_string(),
            Self::TooLarge { limit } => format!("the body exceeds {limit} bytes"),
            Self::BodyRead(_) => "the request body could not be read".to_owned(),
            Self::Unavailable(_) => "the queue is unavailable; retry later".to_owned(),
            Self::Internal(_) => "internal error".to_owned(),
        };
        HttpResponse::build(self.status_code()).json(ErrorBody {
            code: self.code(),
            message,
        })
    }
}
