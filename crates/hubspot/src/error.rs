//! [`HubSpotError`]: every way a HubSpot call can fail, classified so callers can
//! tell "retry later" from "dead-letter it" without looking at status codes.

use std::time::Duration;

use leadsync_domain::{ContactId, PortalId};
use serde::Deserialize;

/// Which HubSpot limit refused a call (`policyName` of a 429 body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateLimitPolicy {
    /// `TEN_SECONDLY_ROLLING`: the per-account burst window (100 or more per 10 s).
    TenSecondlyRolling,
    /// `SECONDLY`: search's own limit (5 per second per token), or the legacy
    /// secondly policy.
    Secondly,
    /// `DAILY`: the account's daily quota.
    Daily,
    /// Any other or missing `policyName`, kept verbatim.
    Other(Option<String>),
}

impl RateLimitPolicy {
    pub(crate) fn parse(name: Option<&str>) -> Self {
        match name {
            Some("TEN_SECONDLY_ROLLING") => Self::TenSecondlyRolling,
            Some("SECONDLY") => Self::Secondly,
            Some("DAILY") => Self::Daily,
            other => Self::Other(other.map(str::to_owned)),
        }
    }

    /// A stable label for metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::TenSecondlyRolling => "ten_secondly_rolling",
            Self::Secondly => "secondly",
            Self::Daily => "daily",
            Self::Other(_) => "other",
        }
    }
}

/// HubSpot's error body. The error-handling docs say every field "should all be
/// treated as optional", and OAuth errors add `error`/`error_description`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// `"error"` for API errors, `BAD_REFRESH_TOKEN` & co. for OAuth errors.
    pub status: Option<String>,
    /// A human-readable message. It can quote property values, so it is never logged.
    pub message: Option<String>,
    /// `VALIDATION_ERROR`, `OBJECT_NOT_FOUND`, `CONFLICT`, `EXPIRED_AUTHENTICATION`, …
    pub category: Option<String>,
    /// HubSpot's id of the failed request, for support tickets.
    pub correlation_id: Option<String>,
    /// `RATE_LIMIT` on a 429.
    pub error_type: Option<String>,
    /// `TEN_SECONDLY_ROLLING`, `SECONDLY` or `DAILY` on a 429.
    pub policy_name: Option<String>,
    /// OAuth: `invalid_grant`, `invalid_client`, …
    pub error: Option<String>,
}

impl ErrorBody {
    /// Parses a body leniently: anything that is not a JSON object gives the empty body.
    pub fn parse(bytes: &[u8]) -> Self {
        serde_json::from_slice(bytes).unwrap_or_default()
    }
}

/// Why a HubSpot call failed.
#[derive(thiserror::Error)]
pub enum HubSpotError {
    /// 429: a HubSpot limit was hit. Wait `retry_after` (at least one window) first.
    #[error("HubSpot rate limit hit ({}), retry after {retry_after:?}", policy.as_str())]
    RateLimited {
        /// How long to wait before the next call to this portal.
        retry_after: Duration,
        /// Which limit was hit.
        policy: RateLimitPolicy,
    },
    /// 401 `EXPIRED_AUTHENTICATION`: the OAuth access token expired. The client
    /// refreshes once and retries by itself, so callers see this only if the
    /// fresh token is refused as expired too.
    #[error("the HubSpot access token has expired")]
    TokenExpired,
    /// 401 for any other reason: the token is unknown, revoked or missing.
    #[error("HubSpot refused the credentials (category {category:?})")]
    Unauthorized {
        /// HubSpot's `category`, e.g. `INVALID_AUTHENTICATION`.
        category: Option<String>,
    },
    /// The refresh token or authorization code was refused (`BAD_REFRESH_TOKEN`,
    /// `invalid_grant`): a user must connect the account again.
    #[error("HubSpot refused the OAuth grant ({status:?}); the account must be connected again")]
    ReauthorizationRequired {
        /// HubSpot's `status`, e.g. `BAD_REFRESH_TOKEN`.
        status: Option<String>,
    },
    /// No credentials are registered for the portal.
    #[error("no HubSpot credentials are registered for portal {0}")]
    MissingCredentials(PortalId),
    /// 404: the object does not exist (or is archived).
    #[error("HubSpot object not found")]
    NotFound,
    /// 409 on contact creation: a contact with this email already exists.
    #[error("HubSpot contact already exists with id {existing_id}")]
    Conflict {
        /// The id of the contact that holds the email.
        existing_id: ContactId,
    },
    /// 400: HubSpot refused the input (invalid property value, unknown property,
    /// batch too large, …). Retrying the same input fails again.
    #[error("HubSpot refused the request as invalid (category {category:?})")]
    Validation {
        /// HubSpot's message; it can quote property values, so do not log it.
        message: String,
        /// HubSpot's `category`, usually `VALIDATION_ERROR`.
        category: Option<String>,
    },
    /// A failure that may pass: network errors, timeouts, 5xx, 423, 477, Cloudflare 52x.
    #[error("transient HubSpot failure (status {status:?})")]
    Transient {
        /// The HTTP status, or `None` for a network error or timeout.
        status: Option<u16>,
        /// HubSpot's `Retry-After` (477 sends one), when present.
        retry_after: Option<Duration>,
        /// The network error, when there is one.
        #[source]
        source: Option<reqwest::Error>,
    },
    /// Any other refusal that will not pass by retrying (403, 405, other 409s, …).
    #[error("HubSpot refused the request with status {status} (category {category:?})")]
    Permanent {
        /// The HTTP status.
        status: u16,
        /// HubSpot's `category`.
        category: Option<String>,
        /// HubSpot's message; it can quote property values, so do not log it.
        message: String,
    },
    /// A success response whose body is not what the API documents.
    #[error("failed to decode HubSpot's {what} response")]
    Decode {
        /// Which response.
        what: &'static str,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// The fleet-wide rate limiter or the shared token cache (Redis) failed.
    #[error("the shared rate-limit / token state in Redis is unavailable")]
    Redis(#[source] redis::RedisError),
    /// Persisting or loading OAuth tokens failed.
    #[error("the OAuth token store failed")]
    TokenStore(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The client was built with an invalid setting (base URL, missing OAuth app, …).
    #[error("invalid HubSpot client configuration: {0}")]
    Config(String),
}

impl std::fmt::Debug for HubSpotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        error_chain_fmt(self, f)
    }
}

/// Writes an error and its `source()` chain, so logs carry the root cause.
pub(crate) fn error_chain_fmt(
    e: &impl std::error::Error,
    f: &mut std::fmt::Formatter<'_>,
) -> std::fmt::Result {
    writeln!(f, "{e}")?;
    let mut current = e.source();
    while let Some(cause) = current {
        writeln!(f, "Caused by:\n\t{cause}")?;
        current = cause.source();
    }
    Ok(())
}

impl HubSpotError {
    /// Whether the same call may succeed later: rate limits, transient failures,
    /// an unavailable Redis, and a failing token store (the platform's database:
    /// a lost connection or a busy pool must not dead-letter the events that
    /// needed a token). Everything else is permanent for this input.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::RateLimited { .. }
                | Self::Transient { .. }
                | Self::Redis(_)
                | Self::TokenStore(_)
        )
    }

    /// A stable snake_case code for metrics and dead-letter reasons.
    pub fn code(&self) -> &'static str {
        match self {
            Self::RateLimited { .. } => "rate_limited",
            Self::TokenExpired => "token_expired",
            Self::Unauthorized { .. } => "unauthorized",
            Self::ReauthorizationRequired { .. } => "reauthorization_required",
            Self::MissingCredentials(_) => "missing_credentials",
            Self::NotFound => "not_found",
            Self::Conflict { .. } => "conflict",
            Self::Validation { .. } => "validation",
            Self::Transient { .. } => "transient",
            Self::Permanent { .. } => "permanent",
            Self::Decode { .. } => "decode",
            Self::Redis(_) => "redis",
            Self::TokenStore(_) => "token_store",
            Self::Config(_) => "config",
        }
    }

    pub(crate) fn network(source: reqwest::Error) -> Self {
        Self::Transient {
            status: None,
            retry_after: None,
            // The URL can carry an e-mail address (`idProperty=email`), an
            // access token (token info) or the developer key (`hapikey`).
            source: Some(source.without_url()),
        }
    }

    /// Classifies a non-success API response (not the OAuth token endpoint:
    /// see [`HubSpotError::from_token_response`]).
    pub(crate) fn from_response(
        status: u16,
        body: ErrorBody,
        retry_after: Option<Duration>,
        window: Duration,
    ) -> Self {
        match status {
            400 => Self::Validation {
                message: body.message.unwrap_or_default(),
                category: body.category,
            },
            401 if body.category.as_deref() == Some("EXPIRED_AUTHENTICATION") => Self::TokenExpired,
            401 => Self::Unauthorized {
                category: body.category,
            },
            404 => Self::NotFound,
            409 => match body.message.as_deref().and_then(parse_existing_id) {
                Some(existing_id) => Self::Conflict { existing_id },
                None => Self::Permanent {
                    status,
                    category: body.category,
                    message: body.message.unwrap_or_default(),
                },
            },
            429 => Self::RateLimited {
                // HubSpot documents no Retry-After on 429; when absent, wait the
                // whole window the headers announce (docs/adr/0004).
                retry_after: retry_after.unwrap_or(window).max(window),
                policy: RateLimitPolicy::parse(body.policy_name.as_deref()),
            },
            // 423: "locks will last for 2 seconds"; 477: migration in progress,
            // with Retry-After; 5xx and Cloudflare's 52x: pause and retry.
            423 | 477 | 500..=599 => Self::Transient {
                status: Some(status),
                retry_after: retry_after.or((status == 423).then_some(Duration::from_secs(2))),
                source: None,
            },
            _ => Self::Permanent {
                status,
                category: body.category,
                message: body.message.unwrap_or_default(),
            },
        }
    }

    /// Classifies a non-success answer of `POST /oauth/v1/token`: any `BAD_*`
    /// status or `invalid_grant` needs a new authorization (hubspot-api.md §7.3).
    pub(crate) fn from_token_response(status: u16, body: ErrorBody) -> Self {
        let bad_status = body
            .status
            .as_deref()
            .is_some_and(|s| s.starts_with("BAD_"));
        if status == 400 && (bad_status || body.error.as_deref() == Some("invalid_grant")) {
            return Self::ReauthorizationRequired {
                status: body.status,
            };
        }
        Self::from_response(status, body, None, Duration::ZERO)
    }
}

/// Finds `N` in `"Contact already exists. Existing ID: N"` without a regex.
pub(crate) fn parse_existing_id(message: &str) -> Option<ContactId> {
    const MARKER: &str = "Existing ID:";
    let start = message.find(MARKER)? + MARKER.len();
    let digits: String = message[start..]
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok().map(ContactId::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn existing_id_is_parsed_from_hubspots_conflict_message() {
        // Arrange
        let message = "Contact already exists. Existing ID: 37765128953";
        // Act
        let id = parse_existing_id(message);
        // Assert
        assert_eq!(id, Some(ContactId::new(37_765_128_953)));
        assert_eq!(
            parse_existing_id("Existing ID:   12 and more"),
            Some(ContactId::new(12))
        );
        assert_eq!(parse_existing_id("Contact already exists."), None);
        assert_eq!(parse_existing_id("Existing ID: none"), None);
    }

    #[test]
    fn a_failing_token_store_is_retried_a_refused_token_is_not() {
        let store_down: Box<dyn std::error::Error + Send + Sync> = "pool timed out".into();
        assert!(HubSpotError::TokenStore(store_down).is_retryable());
        assert!(!HubSpotError::TokenExpired.is_retryable());
        assert!(!HubSpotError::Config("no OAuth app".into()).is_retryable());
    }

    #[test]
    fn a_429_without_retry_after_waits_a_whole_window() {
        // Arrange
        let body = ErrorBody::parse(
            br#"{"status":"error","message":"You have reached your ten_secondly_rolling limit.","errorType":"RATE_LIMIT","policyName":"TEN_SECONDLY_ROLLING"}"#,
        );
        // Act
        let err = HubSpotError::from_response(429, body, None, Duration::from_secs(10));
        // Assert
        match err {
            HubSpotError::RateLimited {
                retry_after,
                policy,
            } => {
                assert_eq!(retry_after, Duration::from_secs(10));
                assert_eq!(policy, RateLimitPolicy::TenSecondlyRolling);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn status_codes_are_classified() {
        let w = Duration::from_secs(10);
        let e = |s| HubSpotError::from_response(s, ErrorBody::default(), None, w);
        assert!(e(503).is_retryable());
        assert!(e(502).is_retryable());
        assert!(e(423).is_retryable());
        assert!(e(477).is_retryable());
        assert!(e(524).is_retryable());
        assert!(!e(400).is_retryable());
        assert!(!e(403).is_retryable());
        assert!(matches!(e(404), HubSpotError::NotFound));
        assert!(matches!(e(401), HubSpotError::Unauthorized { .. }));
        let expired = ErrorBody::parse(br#"{"category":"EXPIRED_AUTHENTICATION"}"#);
        assert!(matches!(
            HubSpotError::from_response(401, expired, None, w),
            HubSpotError::TokenExpired
        ));
    }

    #[test]
    fn bad_refresh_token_needs_reauthorization() {
        let old = ErrorBody::parse(
            br#"{"status":"BAD_REFRESH_TOKEN","message":"missing or unknown refresh token"}"#,
        );
        let new = ErrorBody::parse(br#"{"error":"invalid_grant","error_description":"x"}"#);
        assert!(matches!(
            HubSpotError::from_token_response(400, old),
            HubSpotError::ReauthorizationRequired { .. }
        ));
        assert!(matches!(
            HubSpotError::from_token_response(400, new),
            HubSpotError::ReauthorizationRequired { .. }
        ));
        assert!(HubSpotError::from_token_response(503, ErrorBody::default()).is_retryable());
    }
}
