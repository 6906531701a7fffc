//! Bearer-token authentication and authorisation: the [`Auth`] extractor.
//!
//! The token is hashed and looked up by its hash (no byte-by-byte comparison
//! of secrets), and it is never logged: only the token's id and its
//! integration's id reach the request span.
//!
//! A handler states the scope it needs in its signature (`Auth<Read>`,
//! `Auth<Write>`, `Auth<Admin>`); the extractor is the one place that
//! checks it: a missing or invalid token is a 401, a token of a smaller
//! scope a 403 `insufficient_scope`, before the handler runs.

use std::future::Future;
use std::marker::PhantomData;
use std::ops::Deref;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpMessage as _, HttpRequest, web};
use leadsync_store::api_tokens::Scope;
use leadsync_store::{Integration, api_tokens, integrations};
use secrecy::SecretString;
use uuid::Uuid;

use crate::error::ApiError;
use crate::startup::AppState;

/// The authenticated caller: the one integration its token is scoped to.
/// Every handler under `/v1` takes one, through [`Auth`], and every query it
/// makes is restricted to [`Caller::integration`].
#[derive(Debug, Clone)]
pub struct Caller {
    /// The integration the token belongs to.
    pub integration: Integration,
    /// The token's id (not the token).
    pub token_id: Uuid,
    /// What the token may do.
    pub scope: Scope,
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

/// The scope a route needs, as a type: [`Read`], [`Write`] or [`Admin`].
pub trait RequiredScope: 'static {
    /// The scope.
    const SCOPE: Scope;
}

/// Marker of the routes a `read` token may call (the `GET` routes).
#[derive(Debug, Clone, Copy)]
pub struct Read;

/// Marker of the routes that need a `write` token (leads CRUD).
#[derive(Debug, Clone, Copy)]
pub struct Write;

/// Marker of the routes that need an `admin` token (settings, replay).
#[derive(Debug, Clone, Copy)]
pub struct Admin;

impl RequiredScope for Read {
    const SCOPE: Scope = Scope::Read;
}

impl RequiredScope for Write {
    const SCOPE: Scope = Scope::Write;
}

impl RequiredScope for Admin {
    const SCOPE: Scope = Scope::Admin;
}

/// A [`Caller`] whose token's scope covers `S`: the extractor of every
/// `/v1` handler. It dereferences to the [`Caller`].
#[derive(Debug, Clone)]
pub struct Auth<S: RequiredScope> {
    caller: Caller,
    scope: PhantomData<S>,
}

impl<S: RequiredScope> Auth<S> {
    /// The caller.
    pub fn into_inner(self) -> Caller {
        self.caller
    }
}

impl<S: RequiredScope> Deref for Auth<S> {
    type Target = Caller;

    fn deref(&self) -> &Caller {
        &self.caller
    }
}

impl<S: RequiredScope> FromRequest for Auth<S> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let caller = authenticate(req);
        Box::pin(async move {
            let caller = caller.await?;
            if !caller.scope.allows(S::SCOPE) {
                return Err(ApiError::InsufficientScope {
                    needed: S::SCOPE,
                    held: caller.scope,
                });
            }
            Ok(Self {
                caller,
                scope: PhantomData,
            })
        })
    }
}

/// The caller of a request: its token verified, its integration loaded.
fn authenticate(req: &HttpRequest) -> impl Future<Output = Result<Caller, ApiError>> + 'static {
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let token = bearer_token(req);
    let req = req.clone();
    async move {
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
        Ok(Caller {
            integration,
            token_id: verified.token_id,
            scope: verified.scope,
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
