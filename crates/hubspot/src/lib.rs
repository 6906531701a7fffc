//! HubSpot protocol knowledge: how webhook deliveries are signed and verified,
//! the API client the worker and the outbound pusher call, OAuth tokens shared by
//! the fleet, the fleet-wide rate limiter per portal, and what connecting and
//! setting up an account needs (token info, the `lead_source_system` property,
//! the app's webhook settings and subscriptions).
//!
//! ```no_run
//! # async fn demo(redis: redis::aio::ConnectionManager) -> Result<(), leadsync_hubspot::HubSpotError> {
//! use leadsync_domain::{ContactId, PortalId};
//! use leadsync_hubspot::{Client, ClientConfig, LimiterConfig, RateLimiter, TokenSource};
//!
//! let limiter = RateLimiter::new(redis, LimiterConfig::default());
//! let url = "https://api.hubapi.com".parse().expect("valid URL");
//! let client = Client::builder(ClientConfig::new(url)).limiter(limiter).build()?;
//! let portal = PortalId::new(62515);
//! client.set_token_source(portal, TokenSource::PrivateApp("pat-na1-…".into()));
//! let read = client.batch_read(portal, &[ContactId::new(101)], &["email"], &[]).await?;
//! # let _ = read; Ok(()) }
//! ```

pub mod client;
pub mod error;
pub mod limiter;
pub mod metrics;
pub mod oauth;
pub mod signature;

pub use client::{
    AccountDetails, BatchError, BatchRead, Client, ClientBuilder, ClientConfig, Contact,
    ContactInput, ContactUpdate, DeveloperApp, ListPage, MAX_BATCH, NewSubscription,
    PRODUCTION_BASE_URL, Property, PropertyCreated, PropertyEnsured, PropertyOption,
    PropertyVersion, RetryPolicy, SOURCE_SYSTEM_PROPERTY, SearchPage, Subscription, Throttling,
    UpsertResult, WebhookSettings,
};
pub use error::{ErrorBody, HubSpotError, RateLimitPolicy};
pub use limiter::{LimiterConfig, Permit, PermitKind, PortalQuota, Priority, RateLimiter};
pub use metrics::HubSpotMetrics;
pub use oauth::{
    AUTHORIZE_URL, AccessTokenInfo, InMemoryTokenStore, OAuthApp, OAuthTokens, OAuthTokensConfig,
    TokenSet, TokenSource, TokenStore, TokenStoreError, authorize_url,
};
pub use signature::{
    SignatureError, SignatureHeaders, SignaturePolicy, SignatureVersion, UnverifiedRequest,
    VerifiedBody, WebhookSecrets,
};
