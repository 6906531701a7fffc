//! Credentials: private-app tokens, and OAuth tokens with a refresh that is
//! single-flight across the whole fleet (see [`OAuthTokens`]).

mod tokens;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use leadsync_domain::{AppId, PortalId};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

pub use tokens::{OAuthTokens, OAuthTokensConfig};

use crate::client::{Call, Client, Operation, decode};
use crate::error::HubSpotError;

/// Where a HubSpot user grants the app access (hubspot-api.md §7.1, the
/// SPEC's `securitySchemes`).
pub const AUTHORIZE_URL: &str = "https://app.hubspot.com/oauth/authorize";

/// The URL that asks a HubSpot user to install the app: `client_id`,
/// `redirect_uri`, the space-separated `scope` and an opaque `state` that
/// HubSpot hands back on the redirect.
pub fn authorize_url(client_id: &str, redirect_uri: &str, scopes: &[String], state: &str) -> Url {
    let mut url = Url::parse(AUTHORIZE_URL).unwrap_or_else(|_| unreachable!("a valid constant"));
    url.query_pairs_mut()
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("scope", &scopes.join(" "))
        .append_pair("state", state);
    url
}

/// What HubSpot says about an access token (`GET /oauth/v1/access-tokens/{token}`,
/// hubspot-api.md §7.2). The user's e-mail address in the answer is not kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessTokenInfo {
    /// `hub_id`: the account (portal) the token is for.
    pub portal: PortalId,
    /// `app_id`: the app it was issued to.
    pub app_id: Option<AppId>,
    /// The scopes granted.
    pub scopes: Vec<String>,
    /// Seconds the token remains valid.
    pub expires_in: i64,
}

#[derive(Deserialize)]
struct AccessTokenInfoWire {
    hub_id: u64,
    app_id: Option<u64>,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    expires_in: i64,
}

/// The public app's OAuth credentials.
#[derive(Debug, Clone)]
pub struct OAuthApp {
    /// `client_id`.
    pub client_id: String,
    /// `client_secret`.
    pub client_secret: SecretString,
}

/// What `POST /oauth/v1/token` returns.
#[derive(Debug, Clone)]
pub struct TokenSet {
    /// The bearer token for API calls.
    pub access_token: SecretString,
    /// The token that buys the next access token. HubSpot may or may not rotate
    /// it; whatever comes back is what must be stored.
    pub refresh_token: SecretString,
    /// When `access_token` stops working (`now + expires_in`).
    pub expires_at: DateTime<Utc>,
    /// `hub_id`: the portal the tokens are for, when HubSpot says so.
    pub portal: Option<PortalId>,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    refresh_token: String,
    expires_in: i64,
    hub_id: Option<u64>,
}

/// Errors of a [`TokenStore`] implementation.
pub type TokenStoreError = Box<dyn std::error::Error + Send + Sync>;

/// Where OAuth tokens live between processes and restarts (the Postgres store
/// implements it, encrypting them at rest).
pub trait TokenStore: Send + Sync {
    /// The current tokens of `portal`, if it is connected through OAuth.
    fn load(&self, portal: PortalId) -> BoxFuture<'_, Result<Option<TokenSet>, TokenStoreError>>;
    /// Replaces the tokens of `portal` after a refresh.
    fn save(
        &self,
        portal: PortalId,
        tokens: TokenSet,
    ) -> BoxFuture<'_, Result<(), TokenStoreError>>;
}

/// A [`TokenStore`] in memory, for tests and tools.
#[derive(Debug, Default, Clone)]
pub struct InMemoryTokenStore {
    tokens: Arc<Mutex<HashMap<PortalId, TokenSet>>>,
    saves: Arc<Mutex<u64>>,
}

impl InMemoryTokenStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the tokens of `portal` (what connecting an account does).
    pub fn insert(&self, portal: PortalId, tokens: TokenSet) {
        self.tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(portal, tokens);
    }

    /// How many times [`TokenStore::save`] was called.
    pub fn saves(&self) -> u64 {
        *self.saves.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl TokenStore for InMemoryTokenStore {
    fn load(&self, portal: PortalId) -> BoxFuture<'_, Result<Option<TokenSet>, TokenStoreError>> {
        let found = self
            .tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&portal)
            .cloned();
        Box::pin(async move { Ok(found) })
    }

    fn save(
        &self,
        portal: PortalId,
        tokens: TokenSet,
    ) -> BoxFuture<'_, Result<(), TokenStoreError>> {
        self.insert(portal, tokens);
        *self.saves.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        Box::pin(async { Ok(()) })
    }
}

/// How a portal's calls are authenticated.
#[derive(Debug, Clone)]
pub enum TokenSource {
    /// A private app's access token; it never expires.
    PrivateApp(SecretString),
    /// OAuth: the access token comes from the client's [`OAuthTokens`], which
    /// refreshes it through the [`TokenStore`].
    OAuth,
}

impl Client {
    /// Exchanges the authorization code of an install for tokens
    /// (`grant_type=authorization_code`).
    pub async fn exchange_code(
        &self,
        code: &str,
        redirect_uri: &str,
    ) -> Result<TokenSet, HubSpotError> {
        let app = self.oauth_app()?;
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "authorization_code")
            .append_pair("client_id", &app.client_id)
            .append_pair("client_secret", app.client_secret.expose_secret())
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("code", code)
            .finish();
        self.token_call(Operation::ExchangeCode, form).await
    }

    /// Buys a new access token with `refresh_token` (`grant_type=refresh_token`).
    /// A refused refresh token is [`HubSpotError::ReauthorizationRequired`].
    ///
    /// This is the raw call: workers should let [`OAuthTokens`] call it, so
    /// the fleet spends a refresh token once.
    pub async fn refresh(&self, refresh_token: &SecretString) -> Result<TokenSet, HubSpotError> {
        let app = self.oauth_app()?;
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "refresh_token")
            .append_pair("client_id", &app.client_id)
            .append_pair("client_secret", app.client_secret.expose_secret())
            .append_pair("refresh_token", refresh_token.expose_secret())
            .finish();
        self.token_call(Operation::RefreshToken, form).await
    }

    /// Asks HubSpot which account and app an access token belongs to. An
    /// unknown or expired token is [`HubSpotError::NotFound`].
    pub async fn access_token_info(
        &self,
        access_token: &SecretString,
    ) -> Result<AccessTokenInfo, HubSpotError> {
        let call = Call::get(
            Operation::AccessTokenInfo,
            &["oauth", "v1", "access-tokens", access_token.expose_secret()],
        );
        let bytes = self.execute(None, &call).await?;
        let wire: AccessTokenInfoWire = decode(Operation::AccessTokenInfo, &bytes)?;
        Ok(AccessTokenInfo {
            portal: PortalId::new(wire.hub_id),
            app_id: wire.app_id.map(AppId::new),
            scopes: wire.scopes,
            expires_in: wire.expires_in,
        })
    }

    async fn token_call(&self, op: Operation, form: String) -> Result<TokenSet, HubSpotError> {
        let call = Call::form(op, &["oauth", "v1", "token"], form);
        let bytes = self.execute(None, &call).await?;
        let wire: TokenResponse = decode(op, &bytes)?;
        Ok(TokenSet {
            access_token: SecretString::from(wire.access_token),
            refresh_token: SecretString::from(wire.refresh_token),
            expires_at: Utc::now() + chrono::Duration::seconds(wire.expires_in.max(0)),
            portal: wire.hub_id.map(PortalId::new),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_authorize_url_carries_client_redirect_scopes_and_state() {
        // Arrange
        let scopes = ["oauth".to_owned(), "crm.objects.contacts.read".to_owned()];

        // Act
        let url = authorize_url("my-client", "https://x.io/cb?a=1", &scopes, "st4te");

        // Assert
        assert_eq!(url.host_str(), Some("app.hubspot.com"));
        assert_eq!(url.path(), "/oauth/authorize");
        let pairs: HashMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(pairs["client_id"], "my-client");
        assert_eq!(pairs["redirect_uri"], "https://x.io/cb?a=1");
        assert_eq!(pairs["scope"], "oauth crm.objects.contacts.read");
        assert_eq!(pairs["state"], "st4te");
    }
}
