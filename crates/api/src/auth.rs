//! Bearer-token authentication: the [`Caller`] extractor.
//!
//! The token is hashed and looked up by its hash (no byte-by-byte comparison
//! of secrets), and it is never logged: only the token's id and its
//! integration's id reach the request span.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpMessage as _, HttpRequest, web};
use leadsync_store::{Integration, api_tokens, integrations};
use secrecy::SecretString;
use uuid::Uuid;

use crate::error::ApiError;
use crate::startup::AppState;

/// The authenticated caller: the one integration its token is scoped to.
/// Every handler under `/v1` takes one, and every query it makes is
/// restricted to [`Caller::integration`].
#[derive(Debug, Clone)]
pub struct Caller {
    /// The integration the token belongs to.
    pub integration: Integration,
    /// The token's id (not the token).
    pub token_id: Uuid,
}

impl Caller {
    /// The integration's id.
    pub fn integration_id(&self) -> Uuid {
        self.integration.id
    }
}

/// The caller's integration id, kept in the request's extensions for the
/// failure log of `root_span::observe`.
#[derive(Debug, Clone, Copy)]
pub struct CallerId(pub Uuid);

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let token = bearer_token(req);
        let req = req.clone();
        Box::pin(async move {
            let token = token?;
            let state = state.ok_or_else(|| {
                ApiError::Internal(anyhow::anyhow!("the application state is not configured"))
            })?;
            let pool = state.store.pool();
            let verified = api_tokens::verify(pool, &token)
                .await?
                .ok_or(ApiError::InvalidToken)?;
            // The token row cascades with its integration, so this only
            // misses in a race with the integration's removal.
            let integration = integrations::get(pool, verified.integration_id)
                .await?
                .ok_or(ApiError::InvalidToken)?;
            let span = tracing::Span::current();
            span.record("integration.id", tracing::field::display(integration.id));
            span.record("token.id", tracing::field::display(verified.token_id));
            req.extensions_mut().insert(CallerId(integration.id));
            Ok(Self {
                integration,
                token_id: verified.token_id,
            })
        })
    }
}

/// The token of an `Authorization: Bearer <token>` header. Another scheme
/// counts as no token (RFC 6750 §3).
fn bearer_token(req: &HttpRequest) -> Result<SecretString, ApiError> {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return Err(ApiError::MissingToken);
    };
    let value = value.to_str().map_err(|_| ApiError::InvalidToken)?;
    let Some((scheme, token)) = value.trim().split_once(' ') else {
        return Err(if value.trim().eq_ignore_ascii_case("bearer") {
            ApiError::InvalidToken
        } else {
            ApiError::MissingToken
        });
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ApiError::MissingToken);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(ApiError::InvalidToken);
    }
    Ok(SecretString::from(token.to_owned()))
}
