//! The one place where API errors become HTTP responses.
//!
//! Every error body is `{ "code", "message" }` with a stable snake_case code,
//! plus `field` when one input field is to blame. A 500 says nothing about
//! its cause to the caller; the cause is logged with its source chain.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use leadsync_queue::QueueError;
use leadsync_store::StoreError;
use leadsync_store::api_tokens::Scope;
use serde::Serialize;
use utoipa::ToSchema;

/// Why a request failed.
#[derive(thiserror::Error)]
pub enum ApiError {
    /// No bearer token was presented.
    #[error("missing bearer token")]
    MissingToken,
    /// The token is malformed, unknown or revoked.
    #[error("invalid bearer token")]
    InvalidToken,
    /// The token is valid but its scope does not cover the route.
    #[error("the route needs a token of scope `{needed}`")]
    InsufficientScope {
        /// The scope the route needs.
        needed: Scope,
        /// The token's scope.
        held: Scope,
    },
    /// `If-Match` names no current version of the resource.
    #[error("precondition failed")]
    PreconditionFailed,
    /// The request is malformed: not JSON, an unknown field, a bad path.
    #[error("{message}")]
    BadRequest {
        /// Stable code (`invalid_json`, `unknown_field`, ...).
        code: &'static str,
        /// What is wrong.
        message: String,
        /// The field concerned, when there is one.
        field: Option<String>,
    },
    /// A field is well-formed but its value is not acceptable.
    #[error("invalid `{field}`: {message}")]
    Invalid {
        /// The field, as a dotted path (`field_mapping.email`).
        field: String,
        /// Why.
        message: String,
    },
    /// No such resource for this integration.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// Another lead of the integration has the address.
    #[error("duplicate e-mail")]
    DuplicateEmail,
    /// The request conflicts with the current state.
    #[error("{message}")]
    Conflict {
        /// Stable code.
        code: &'static str,
        /// What conflicts.
        message: String,
    },
    /// The body is larger than `api.body_limit_bytes`.
    #[error("body larger than {limit} bytes")]
    TooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// A dependency (Postgres, Redis) is unreachable or overloaded; retrying
    /// later may succeed.
    #[error("service unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// Anything else; details are logged, never returned.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl std::fmt::Debug for ApiError {
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

impl ApiError {
    /// A 422 about `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    /// A 400 with `code`.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            message: message.into(),
            field: None,
        }
    }

    /// A 400 for a field the endpoint does not know.
    pub fn unknown_field(field: impl Into<String>) -> Self {
        let field = field.into();
        Self::BadRequest {
            code: "unknown_field",
            message: format!("unknown field `{field}`"),
            field: Some(field),
        }
    }

    /// Stable, snake_case code returned in the body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingToken => "missing_token",
            Self::InvalidToken => "invalid_token",
            Self::InsufficientScope { .. } => "insufficient_scope",
            Self::PreconditionFailed => "precondition_failed",
            Self::BadRequest { code, .. } | Self::Conflict { code, .. } => code,
            Self::Invalid { .. } => "invalid_field",
            Self::NotFound(_) => "not_found",
            Self::DuplicateEmail => "duplicate_email",
            Self::TooLarge { .. } => "body_too_large",
            Self::Unavailable(_) => "service_unavailable",
            Self::Internal(_) => "internal_error",
        }
    }

    fn message(&self) -> String {
        match self {
            Self::MissingToken => {
                "send a bearer token: `Authorization: Bearer lsk_...` (see `leadsync api-token create`)"
                    .to_owned()
            }
            Self::InvalidToken => "the bearer token is invalid or revoked".to_owned(),
            Self::InsufficientScope { needed, held } => format!(
                "this route needs a token of scope `{needed}`; this token's scope is `{held}` \
                 (see `leadsync api-token create --scope`)"
            ),
            Self::PreconditionFailed => {
                "the resource changed since the `ETag` sent in `If-Match`; read it again and \
                 reapply the change"
                    .to_owned()
            }
            Self::BadRequest { message, .. } | Self::Conflict { message, .. } => message.clone(),
            Self::Invalid { field, message } => format!("`{field}`: {message}"),
            Self::NotFound(what) => format!("{what} not found"),
            Self::DuplicateEmail => {
                "another lead of this integration already has this e-mail address".to_owned()
            }
            Self::TooLarge { limit } => format!("the body exceeds {limit} bytes"),
            Self::Unavailable(_) => "a dependency is unavailable; retry later".to_owned(),
            Self::Internal(_) => "internal error".to_owned(),
        }
    }

    fn field(&self) -> Option<&str> {
        match self {
            Self::BadRequest { field, .. } => field.as_deref(),
            Self::Invalid { field, .. } => Some(field),
            Self::DuplicateEmail => Some("email"),
            _ => None,
        }
    }
}

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable snake_case code, e.g. `invalid_field`, `not_found`,
    /// `duplicate_email`, `invalid_token`.
    pub code: String,
    /// A readable explanation.
    pub message: String,
    /// The input field concerned, as a dotted path, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::MissingToken | Self::InvalidToken => StatusCode::UNAUTHORIZED,
            Self::InsufficientScope { .. } => StatusCode::FORBIDDEN,
            Self::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::DuplicateEmail | Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        // The cause of a 5xx is logged once, with the request's ids, by
        // `root_span::observe`.
        let mut response = HttpResponse::build(self.status_code());
        // RFC 6750 §3: a 401 names the scheme, and why a presented token
        // failed; a 403 names the scope the route needs.
        match self {
            Self::MissingToken => {
                response.insert_header((
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"leadsync\""),
                ));
            }
            Self::InvalidToken => {
                response.insert_header((
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"leadsync\", error=\"invalid_token\""),
                ));
            }
            Self::InsufficientScope { needed, .. } => {
                let challenge = format!(
                    "Bearer realm=\"leadsync\", error=\"insufficient_scope\", scope=\"{needed}\""
                );
                if let Ok(value) = HeaderValue::from_str(&challenge) {
                    response.insert_header((header::WWW_AUTHENTICATE, value));
                }
            }
            _ => {}
        }
        response.json(ErrorBody {
            code: self.code().to_owned(),
            message: self.message(),
            field: self.field().map(str::to_owned),
        })
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::DuplicateEmail => Self::DuplicateEmail,
            StoreError::DuplicateCrmId => Self::Conflict {
                code: "duplicate_crm_id",
                message: "another lead of this integration is linked to this HubSpot contact"
                    .to_owned(),
            },
            StoreError::NotFound(what) => Self::NotFound(what),
            // The store keeps only the constraint's name, never row values.
            StoreError::Invalid(message) => Self::Conflict {
                code: "constraint_violated",
                message,
            },
            err if err.is_retryable() => Self::Unavailable(err.into()),
            err => Self::Internal(err.into()),
        }
    }
}

impl From<QueueError> for ApiError {
    fn from(err: QueueError) -> Self {
        match err {
            QueueError::Encode(_) => Self::Internal(err.into()),
            _ => Self::Unavailable(err.into()),
        }
    }
}
