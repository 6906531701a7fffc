//! The HubSpot API client: one `reqwest` client, an injectable base URL, per-portal
//! credentials, the fleet-wide limiter before every call, and retries with backoff.

mod account;
mod contacts;
mod properties;
mod webhooks;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;
use leadsync_domain::PortalId;
use reqwest::Method;
use reqwest::header::{CONTENT_TYPE, HeaderMap};
use secrecy::{ExposeSecret, SecretString};
use tracing::field::Empty;
use tracing::{Instrument, Span};
use url::Url;

pub use account::AccountDetails;
pub use contacts::{
    BatchError, BatchRead, Contact, ContactInput, ContactUpdate, ListPage, PropertyVersion,
    SearchPage, UpsertResult,
};
pub use properties::{
    Property, PropertyCreated, PropertyEnsured, PropertyOption, SOURCE_SYSTEM_PROPERTY,
};
pub use webhooks::{DeveloperApp, NewSubscription, Subscription, Throttling, WebhookSettings};

use crate::error::{ErrorBody, HubSpotError, RateLimitPolicy};
use crate::limiter::{PermitKind, Priority, RateLimiter};
use crate::metrics::HubSpotMetrics;
use crate::oauth::{OAuthApp, OAuthTokens, TokenSource};

/// HubSpot's API base URL.
pub const PRODUCTION_BASE_URL: &str = "https://api.hubapi.com";

/// The most inputs one batch call may carry (HubSpot: "limited to 100 records").
pub const MAX_BATCH: usize = 100;

/// HubSpot's burst window when a response does not announce one.
const DEFAULT_WINDOW: Duration = Duration::from_secs(10);
/// Search's window (5 per second), which sends no rate headers.
const SEARCH_WINDOW: Duration = Duration::from_secs(1);

const FORM: &str = "application/x-www-form-urlencoded";
const JSON: &str = "application/json";

/// Exponential backoff with jitter for transient failures (design.md §2.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The first delay.
    pub min_delay: Duration,
    /// The longest delay.
    pub max_delay: Duration,
    /// Attempts in all, the first included.
    pub max_tries: usize,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            min_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
            max_tries: 5,
        }
    }
}

/// Settings of a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `https://api.hubapi.com` in production, the simulator's URL in tests.
    pub base_url: Url,
    /// Time allowed to open a connection.
    pub connect_timeout: Duration,
    /// Time allowed for a whole request, body included.
    pub timeout: Duration,
    /// Retries of transient failures.
    pub retry: RetryPolicy,
    /// The public app's credentials, needed for OAuth code exchange and refresh.
    pub oauth_app: Option<OAuthApp>,
    /// The `User-Agent` header.
    pub user_agent: String,
}

impl ClientConfig {
    /// Defaults for the given base URL: 5 s to connect, 30 s per request,
    /// 5 tries from 200 ms to 10 s.
    pub fn new(base_url: Url) -> Self {
        Self {
            base_url,
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            oauth_app: None,
            user_agent: concat!("leadsync/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

/// Builds a [`Client`].
#[derive(Debug)]
pub struct ClientBuilder {
    config: ClientConfig,
    limiter: Option<RateLimiter>,
    tokens: Option<OAuthTokens>,
    metrics: Option<HubSpotMetrics>,
}

impl ClientBuilder {
    /// Takes one permit from `limiter` before every CRM call. Without a limiter
    /// calls are not throttled (tools, tests).
    pub fn limiter(mut self, limiter: RateLimiter) -> Self {
        self.limiter = Some(limiter);
        self
    }

    /// Serves portals connected through OAuth from `tokens`.
    pub fn oauth_tokens(mut self, tokens: OAuthTokens) -> Self {
        self.tokens = Some(tokens);
        self
    }

    /// Records calls and 429s in `metrics`.
    pub fn metrics(mut self, metrics: HubSpotMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Builds the client.
    pub fn build(self) -> Result<Client, HubSpotError> {
        let base = &self.config.base_url;
        if base.cannot_be_a_base() || !matches!(base.scheme(), "http" | "https") {
            return Err(HubSpotError::Config(format!(
                "base URL {base} is not an http(s) URL"
            )));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(self.config.connect_timeout)
            .timeout(self.config.timeout)
            .user_agent(self.config.user_agent.clone())
            .build()
            .map_err(|e| HubSpotError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Client {
            inner: Arc::new(ClientInner {
                http,
                config: self.config,
                limiter: self.limiter,
                tokens: self.tokens,
                metrics: self.metrics,
                credentials: RwLock::new(HashMap::new()),
            }),
            priority: Priority::Live,
        })
    }
}

/// The HubSpot API client. Cloning is cheap and shares connections, credentials
/// and the limiter.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
    priority: Priority,
}

#[derive(Debug)]
struct ClientInner {
    http: reqwest::Client,
    config: ClientConfig,
    limiter: Option<RateLimiter>,
    tokens: Option<OAuthTokens>,
    metrics: Option<HubSpotMetrics>,
    credentials: RwLock<HashMap<PortalId, TokenSource>>,
}

/// Every HubSpot operation, named as its span: `hubspot.<operation>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operation {
    BatchRead,
    GetContact,
    BatchUpsert,
    BatchUpdate,
    BatchArchive,
    CreateContact,
    SearchContacts,
    ListContacts,
    CreateProperty,
    GetProperty,
    UpdateProperty,
    ExchangeCode,
    RefreshToken,
    AccessTokenInfo,
    AccountDetails,
    GetWebhookSettings,
    PutWebhookSettings,
    ListSubscriptions,
    CreateSubscription,
    UpdateSubscription,
}

impl Operation {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::BatchRead => "batch_read",
            Self::GetContact => "get_contact",
            Self::BatchUpsert => "batch_upsert",
            Self::BatchUpdate => "batch_update",
            Self::BatchArchive => "batch_archive",
            Self::CreateContact => "create_contact",
            Self::SearchContacts => "search_contacts",
            Self::ListContacts => "list_contacts",
            Self::CreateProperty => "create_property",
            Self::GetProperty => "get_property",
            Self::UpdateProperty => "update_property",
            Self::ExchangeCode => "exchange_code",
            Self::RefreshToken => "refresh_token",
            Self::AccessTokenInfo => "access_token_info",
            Self::AccountDetails => "account_details",
            Self::GetWebhookSettings => "get_webhook_settings",
            Self::PutWebhookSettings => "put_webhook_settings",
            Self::ListSubscriptions => "list_subscriptions",
            Self::CreateSubscription => "create_subscription",
            Self::UpdateSubscription => "update_subscription",
        }
    }

    fn span(self) -> Span {
        // Span names must be literals, hence one arm per operation.
        macro_rules! span {
            ($name:literal) => {
                tracing::info_span!(
                    $name,
                    otel.kind = "client",
                    portal.id = Empty,
                    http.status_code = Empty,
                    attempt = Empty,
                    error.code = Empty,
                )
            };
        }
        match self {
            Self::BatchRead => span!("hubspot.batch_read"),
            Self::GetContact => span!("hubspot.get_contact"),
            Self::BatchUpsert => span!("hubspot.batch_upsert"),
            Self::BatchUpdate => span!("hubspot.batch_update"),
            Self::BatchArchive => span!("hubspot.batch_archive"),
            Self::CreateContact => span!("hubspot.create_contact"),
            Self::SearchContacts => span!("hubspot.search_contacts"),
            Self::ListContacts => span!("hubspot.list_contacts"),
            Self::CreateProperty => span!("hubspot.create_property"),
            Self::GetProperty => span!("hubspot.get_property"),
            Self::UpdateProperty => span!("hubspot.update_property"),
            Self::ExchangeCode => span!("hubspot.exchange_code"),
            Self::RefreshToken => span!("hubspot.refresh_token"),
            Self::AccessTokenInfo => span!("hubspot.access_token_info"),
            Self::AccountDetails => span!("hubspot.account_details"),
            Self::GetWebhookSettings => span!("hubspot.get_webhook_settings"),
            Self::PutWebhookSettings => span!("hubspot.put_webhook_settings"),
            Self::ListSubscriptions => span!("hubspot.list_subscriptions"),
            Self::CreateSubscription => span!("hubspot.create_subscription"),
            Self::UpdateSubscription => span!("hubspot.update_subscription"),
        }
    }
}

/// Parses the JSON answer of `op`.
pub(crate) fn decode<'a, T: serde::Deserialize<'a>>(
    op: Operation,
    bytes: &'a [u8],
) -> Result<T, HubSpotError> {
    serde_json::from_slice(bytes).map_err(|source| HubSpotError::Decode {
        what: op.as_str(),
        source,
    })
}

/// The JSON body of a request of `op`.
fn encode(op: Operation, body: &impl serde::Serialize) -> Result<Bytes, HubSpotError> {
    serde_json::to_vec(body)
        .map(Bytes::from)
        .map_err(|source| HubSpotError::Decode {
            what: op.as_str(),
            source,
        })
}

/// One HTTP request, replayable across retries.
#[derive(Debug)]
pub(crate) struct Call {
    op: Operation,
    method: Method,
    segments: Vec<String>,
    query: Vec<(&'static str, String)>,
    body: Option<(&'static str, Bytes)>,
    /// The budget it spends; `None` for the OAuth token endpoint, which is not
    /// rate-limited per account.
    kind: Option<PermitKind>,
    /// The developer API key, sent as `?hapikey=` (webhook management). Kept
    /// out of `query` so it is added only to the URL on the wire.
    developer_key: Option<SecretString>,
    /// A bearer token given with the call, for a call made before the
    /// token's account is known (no portal, so no stored token).
    bearer: Option<SecretString>,
}

impl Call {
    fn new(op: Operation, method: Method, segments: &[&str], kind: Option<PermitKind>) -> Self {
        Self {
            op,
            method,
            segments: segments.iter().map(|s| (*s).to_owned()).collect(),
            query: Vec::new(),
            body: None,
            kind,
            developer_key: None,
            bearer: None,
        }
    }

    pub(crate) fn get(op: Operation, segments: &[&str]) -> Self {
        Self::new(op, Method::GET, segments, Some(PermitKind::Api))
    }

    pub(crate) fn post_json(
        op: Operation,
        segments: &[&str],
        body: &impl serde::Serialize,
    ) -> Result<Self, HubSpotError> {
        let kind = if op == Operation::SearchContacts {
            PermitKind::Search
        } else {
            PermitKind::Api
        };
        let mut call = Self::new(op, Method::POST, segments, Some(kind));
        call.body = Some((JSON, encode(op, body)?));
        Ok(call)
    }

    /// A JSON request with any method, spending the account's API budget when
    /// it is made for a portal.
    pub(crate) fn json(
        op: Operation,
        method: Method,
        segments: &[&str],
        body: &impl serde::Serialize,
    ) -> Result<Self, HubSpotError> {
        let mut call = Self::new(op, method, segments, Some(PermitKind::Api));
        call.body = Some((JSON, encode(op, body)?));
        Ok(call)
    }

    /// Authenticates the call with the app's developer API key instead of a
    /// portal's token.
    pub(crate) fn developer_key(mut self, key: &SecretString) -> Self {
        self.developer_key = Some(key.clone());
        self
    }

    /// Authenticates the call with `token` rather than a portal's stored one.
    pub(crate) fn bearer(mut self, token: &SecretString) -> Self {
        self.bearer = Some(token.clone());
        self
    }

    pub(crate) fn form(op: Operation, segments: &[&str], form: String) -> Self {
        let mut call = Self::new(op, Method::POST, segments, None);
        call.body = Some((FORM, Bytes::from(form)));
        call
    }

    pub(crate) fn query(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.query.push((key, value.into()));
        self
    }
}

/// The `X-HubSpot-RateLimit-*` and `Retry-After` headers of a response.
#[derive(Debug, Default, Clone, Copy)]
struct RateHeaders {
    max: Option<u32>,
    interval: Option<Duration>,
    retry_after: Option<Duration>,
}

impl RateHeaders {
    fn parse(headers: &HeaderMap) -> Self {
        let num = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        Self {
            max: num("x-hubspot-ratelimit-max").and_then(|m| u32::try_from(m).ok()),
            interval: num("x-hubspot-ratelimit-interval-milliseconds")
                .filter(|ms| *ms > 0)
                .map(Duration::from_millis),
            // Seconds (477's documented form); an HTTP date is ignored.
            retry_after: num("retry-after").map(Duration::from_secs),
        }
    }
}

impl Client {
    /// A builder from `config`.
    pub fn builder(config: ClientConfig) -> ClientBuilder {
        ClientBuilder {
            config,
            limiter: None,
            tokens: None,
            metrics: None,
        }
    }

    /// A client against `https://api.hubapi.com` with default settings.
    pub fn production() -> Result<Self, HubSpotError> {
        let url = Url::parse(PRODUCTION_BASE_URL)
            .map_err(|e| HubSpotError::Config(format!("invalid production URL: {e}")))?;
        Self::builder(ClientConfig::new(url)).build()
    }

    /// The same client, taking permits at `priority` (clones share everything else).
    pub fn with_priority(&self, priority: Priority) -> Self {
        Self {
            inner: self.inner.clone(),
            priority,
        }
    }

    /// The priority this handle's calls take permits at.
    pub fn priority(&self) -> Priority {
        self.priority
    }

    /// The base URL calls go to.
    pub fn base_url(&self) -> &Url {
        &self.inner.config.base_url
    }

    /// The fleet-wide limiter, if any.
    pub fn limiter(&self) -> Option<&RateLimiter> {
        self.inner.limiter.as_ref()
    }

    /// Sets how calls to `portal` authenticate. Portals without a source use
    /// OAuth when the client has [`OAuthTokens`].
    pub fn set_token_source(&self, portal: PortalId, source: TokenSource) {
        self.inner
            .credentials
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(portal, source);
    }

    /// Forgets the credentials of `portal` (the account was disconnected).
    pub fn remove_token_source(&self, portal: PortalId) {
        self.inner
            .credentials
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&portal);
    }

    pub(crate) fn oauth_app(&self) -> Result<&OAuthApp, HubSpotError> {
        self.inner
            .config
            .oauth_app
            .as_ref()
            .ok_or_else(|| HubSpotError::Config("no OAuth app credentials configured".to_owned()))
    }

    fn source(&self, portal: PortalId) -> Option<TokenSource> {
        self.inner
            .credentials
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&portal)
            .cloned()
    }

    async fn access_token(
        &self,
        portal: PortalId,
        rejected: Option<&SecretString>,
    ) -> Result<(SecretString, bool), HubSpotError> {
        match (self.source(portal), &self.inner.tokens) {
            (Some(TokenSource::PrivateApp(token)), _) => Ok((token, false)),
            // Boxed: a refresh calls the token endpoint through `execute` again.
            (_, Some(tokens)) => Ok((
                Box::pin(tokens.access_token(self, portal, rejected)).await?,
                true,
            )),
            (_, None) => Err(HubSpotError::MissingCredentials(portal)),
        }
    }

    fn url(&self, call: &Call) -> Result<Url, HubSpotError> {
        let mut url = self.inner.config.base_url.clone();
        url.path_segments_mut()
            .map_err(|()| HubSpotError::Config("base URL cannot take a path".to_owned()))?
            .pop_if_empty()
            .extend(&call.segments);
        if !call.query.is_empty() {
            url.query_pairs_mut().extend_pairs(&call.query);
        }
        if let Some(key) = &call.developer_key {
            url.query_pairs_mut()
                .append_pair("hapikey", key.expose_secret());
        }
        Ok(url)
    }

    fn count(&self, op: Operation, outcome: &str) {
        if let Some(m) = &self.inner.metrics {
            m.calls.with_label_values(&[op.as_str(), outcome]).inc();
        }
    }

    /// Runs `call` for `portal` (`None`: unauthenticated OAuth endpoint) with
    /// retries, in a `hubspot.<operation>` span; returns the success body.
    pub(crate) async fn execute(
        &self,
        portal: Option<PortalId>,
        call: &Call,
    ) -> Result<Bytes, HubSpotError> {
        let span = call.op.span();
        if let Some(p) = portal {
            span.record("portal.id", p.get());
        }
        let retry = self.inner.config.retry;
        let backoff = ExponentialBuilder::default()
            .with_min_delay(retry.min_delay)
            .with_max_delay(retry.max_delay)
            .with_max_times(retry.max_tries.saturating_sub(1))
            .with_jitter();
        let attempt = AtomicUsize::new(0);
        let result = (|| async {
            let n = attempt.fetch_add(1, Ordering::Relaxed) + 1;
            Span::current().record("attempt", n);
            self.attempt(portal, call).await
        })
        .retry(backoff)
        .when(HubSpotError::is_retryable)
        .adjust(|err, delay| match err {
            // Waiting seconds will not lift a daily quota: give the job back.
            HubSpotError::RateLimited {
                policy: RateLimitPolicy::Daily,
                ..
            } => None,
            // At least one whole window (or Retry-After) after a 429.
            HubSpotError::RateLimited { retry_after, .. } => delay.map(|_| *retry_after),
            HubSpotError::Transient {
                retry_after: Some(after),
                ..
            } => delay.map(|d| d.max(*after)),
            _ => delay,
        })
        .notify(|err, delay| {
            tracing::debug!(
                error.code = err.code(),
                "HubSpot call failed transiently; retrying in {delay:?}"
            );
        })
        .instrument(span.clone())
        .await;
        if let Err(e) = &result {
            span.record("error.code", e.code());
        }
        result
    }

    /// One attempt: credentials, a permit, the request, classification; an
    /// expired OAuth token is refreshed and the request sent once more.
    async fn attempt(&self, portal: Option<PortalId>, call: &Call) -> Result<Bytes, HubSpotError> {
        let mut token = match portal {
            Some(p) => Some(self.access_token(p, None).await?),
            None => None,
        };
        let mut refreshed = false;
        loop {
            if let (Some(p), Some(kind), Some(limiter)) = (portal, call.kind, &self.inner.limiter) {
                limiter.acquire(p, kind, self.priority).await?;
            }
            let mut request = self
                .inner
                .http
                .request(call.method.clone(), self.url(call)?);
            if let Some((secret, _)) = &token {
                request = request.bearer_auth(secret.expose_secret());
            } else if let Some(secret) = &call.bearer {
                request = request.bearer_auth(secret.expose_secret());
            }
            if let Some((content_type, body)) = &call.body {
                request = request
                    .header(CONTENT_TYPE, *content_type)
                    .body(body.clone());
            }
            let response = match request.send().await {
                Ok(r) => r,
                Err(e) => {
                    self.count(call.op, "transient");
                    return Err(HubSpotError::network(e));
                }
            };
            let status = response.status().as_u16();
            Span::current().record("http.status_code", status);
            let headers = RateHeaders::parse(response.headers());
            let bytes = response.bytes().await.map_err(HubSpotError::network)?;
            if (200..300).contains(&status) {
                self.count(call.op, "ok");
                if let (Some(p), Some(limiter), Some(max), Some(interval)) =
                    (portal, &self.inner.limiter, headers.max, headers.interval)
                {
                    limiter.observe_limit(p, max, interval);
                }
                return Ok(bytes);
            }
            let body = ErrorBody::parse(&bytes);
            let error = match call.kind {
                None => HubSpotError::from_token_response(status, body),
                Some(kind) => {
                    let window = headers.interval.unwrap_or(match kind {
                        PermitKind::Api => DEFAULT_WINDOW,
                        PermitKind::Search => SEARCH_WINDOW,
                    });
                    HubSpotError::from_response(status, body, headers.retry_after, window)
                }
            };
            self.count(call.op, error.code());
            match (&error, portal, &token) {
                (HubSpotError::TokenExpired, Some(p), Some((rejected, true))) if !refreshed => {
                    refreshed = true;
                    tracing::debug!(portal.id = %p, "Access token of portal {p} expired; refreshing");
                    token = Some(self.access_token(p, Some(rejected)).await?);
                    continue;
                }
                (
                    HubSpotError::RateLimited {
                        retry_after,
                        policy,
                    },
                    Some(p),
                    _,
                ) => {
                    if let Some(m) = &self.inner.metrics {
                        m.rate_limited.with_label_values(&[policy.as_str()]).inc();
                    }
                    tracing::warn!(portal.id = %p, policy = policy.as_str(), "HubSpot answered 429 for portal {p}; pausing it for {retry_after:?}");
                    if let (Some(limiter), Some(kind)) = (&self.inner.limiter, call.kind) {
                        limiter.pause(p, kind, *retry_after).await?;
                    }
                }
                _ => {}
            }
            return Err(error);
        }
    }
}
