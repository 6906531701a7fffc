//! OAuth access tokens shared by the fleet, refreshed by one process at a time.
//!
//! Lookup order: this process's cache → the Redis cache → the [`TokenStore`] →
//! a refresh. A refresh runs under two locks: a `tokio` mutex per portal (one
//! call per process) and a Redis lock per portal (`SET NX PX` + compare-and-delete),
//! so two replicas never spend the same refresh token concurrently. The new access
//! token goes into Redis with a TTL a little shorter than its lifetime, where the
//! waiting replicas pick it up.
//!
//! The Redis cache holds access tokens in clear: Redis must be private to the
//! deployment (no public endpoint, AUTH/TLS as the platform provides). Refresh
//! tokens never go to Redis; the store keeps them, encrypted at rest.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use leadsync_domain::PortalId;
use redis::Script;
use redis::aio::ConnectionManager;
use secrecy::{ExposeSecret, SecretString};

use super::{TokenSet, TokenStore};
use crate::client::Client;
use crate::error::HubSpotError;
use crate::limiter::random_u64;
use crate::metrics::HubSpotMetrics;

const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Settings of [`OAuthTokens`].
#[derive(Debug, Clone)]
pub struct OAuthTokensConfig {
    /// Prefix of every Redis key, e.g. `leadsync` → `leadsync:oauth:{62515}:access`.
    pub key_prefix: String,
    /// How long the fleet-wide refresh lock lives if its holder dies. Longer
    /// than a refresh call with its retries can take.
    pub lock_ttl: Duration,
    /// The most a token is retired before its expiry (a tenth of its remaining
    /// lifetime, capped by this), so no call starts with a token about to expire.
    pub expiry_margin: Duration,
    /// How often a process waiting for another's refresh looks for the result.
    pub poll_interval: Duration,
}

impl Default for OAuthTokensConfig {
    fn default() -> Self {
        Self {
            key_prefix: "leadsync".to_owned(),
            lock_ttl: Duration::from_secs(60),
            expiry_margin: Duration::from_secs(300),
            poll_interval: Duration::from_millis(50),
        }
    }
}

/// The fleet's OAuth access tokens. Cloning shares them; build one per process.
#[derive(Clone)]
pub struct OAuthTokens {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for OAuthTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthTokens")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

struct Inner {
    redis: ConnectionManager,
    store: Arc<dyn TokenStore>,
    config: OAuthTokensConfig,
    slots: Mutex<HashMap<PortalId, Arc<Slot>>>,
    release: Script,
    metrics: Option<HubSpotMetrics>,
}

#[derive(Default)]
struct Slot {
    cached: Mutex<Option<Cached>>,
    refresh: tokio::sync::Mutex<()>,
}

#[derive(Clone)]
struct Cached {
    token: SecretString,
    valid_until: Instant,
}

impl Slot {
    fn get(&self) -> Option<SecretString> {
        let cached = self.cached.lock().unwrap_or_else(PoisonError::into_inner);
        cached
            .as_ref()
            .filter(|c| c.valid_until > Instant::now())
            .map(|c| c.token.clone())
    }

    fn set(&self, token: SecretString, usable_for: Duration) {
        *self.cached.lock().unwrap_or_else(PoisonError::into_inner) = Some(Cached {
            token,
            valid_until: Instant::now() + usable_for,
        });
    }

    fn clear(&self) {
        *self.cached.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

fn differs(token: &SecretString, rejected: Option<&SecretString>) -> bool {
    rejected.is_none_or(|r| r.expose_secret() != token.expose_secret())
}

impl OAuthTokens {
    /// Tokens backed by `store`, shared through `redis` with every process that
    /// uses the same key prefix.
    pub fn new(
        redis: ConnectionManager,
        store: Arc<dyn TokenStore>,
        config: OAuthTokensConfig,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                redis,
                store,
                config,
                slots: Mutex::new(HashMap::new()),
                release: Script::new(RELEASE),
                metrics: None,
            }),
        }
    }

    /// The same tokens, counting refreshes in `metrics`. Call before cloning.
    pub fn with_metrics(mut self, metrics: HubSpotMetrics) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.metrics = Some(metrics);
        }
        self
    }

    fn slot(&self, portal: PortalId) -> Arc<Slot> {
        self.inner
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(portal)
            .or_default()
            .clone()
    }

    fn key(&self, portal: PortalId, what: &str) -> String {
        format!("{}:oauth:{{{portal}}}:{what}", self.inner.config.key_prefix)
    }

    fn usable_for(&self, remaining: Duration) -> Duration {
        remaining.saturating_sub((remaining / 10).min(self.inner.config.expiry_margin))
    }

    /// Forgets the cached access token of `portal` here and in Redis, e.g. after
    /// the account was connected again and the store holds new tokens.
    pub async fn invalidate(&self, portal: PortalId) -> Result<(), HubSpotError> {
        self.slot(portal).clear();
        let mut conn = self.inner.redis.clone();
        redis::cmd("DEL")
            .arg(self.key(portal, "access"))
            .query_async::<()>(&mut conn)
            .await
            .map_err(HubSpotError::Redis)
    }

    /// A usable access token for `portal`. `rejected` is the token HubSpot just
    /// refused as expired: it is never returned again, and a refresh happens
    /// unless another task or replica already made one.
    pub(crate) async fn access_token(
        &self,
        client: &Client,
        portal: PortalId,
        rejected: Option<&SecretString>,
    ) -> Result<SecretString, HubSpotError> {
        let slot = self.slot(portal);
        if let Some(token) = slot.get().filter(|t| differs(t, rejected)) {
            return Ok(token);
        }
        if let Some((token, ttl)) = self.cached_in_redis(portal).await?
            && differs(&token, rejected)
        {
            slot.set(token.clone(), ttl);
            return Ok(token);
        }
        if rejected.is_none()
            && let Some(stored) = self.load(portal).await?
        {
            let remaining = (stored.expires_at - chrono::Utc::now())
                .to_std()
                .unwrap_or_default();
            let usable = self.usable_for(remaining);
            if !usable.is_zero() {
                slot.set(stored.access_token.clone(), usable);
                return Ok(stored.access_token);
            }
        }
        // One refresh per process: later callers wait here and then find the
        // token the first one fetched.
        let _one_per_process = slot.refresh.lock().await;
        if let Some(token) = slot.get().filter(|t| differs(t, rejected)) {
            return Ok(token);
        }
        let (token, usable) = self.refresh_fleet_wide(client, portal, rejected).await?;
        slot.set(token.clone(), usable);
        Ok(token)
    }

    async fn load(&self, portal: PortalId) -> Result<Option<TokenSet>, HubSpotError> {
        self.inner
            .store
            .load(portal)
            .await
            .map_err(HubSpotError::TokenStore)
    }

    async fn cached_in_redis(
        &self,
        portal: PortalId,
    ) -> Result<Option<(SecretString, Duration)>, HubSpotError> {
        let key = self.key(portal, "access");
        let mut conn = self.inner.redis.clone();
        let (token, pttl): (Option<String>, i64) = redis::pipe()
            .cmd("GET")
            .arg(&key)
            .cmd("PTTL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .map_err(HubSpotError::Redis)?;
        Ok(token.and_then(|t| {
            let ttl = u64::try_from(pttl).ok().filter(|ms| *ms > 0)?;
            Some((SecretString::from(t), Duration::from_millis(ttl)))
        }))
    }

    async fn refresh_fleet_wide(
        &self,
        client: &Client,
        portal: PortalId,
        rejected: Option<&SecretString>,
    ) -> Result<(SecretString, Duration), HubSpotError> {
        let lock_key = self.key(portal, "refresh-lock");
        let owner = format!("{}-{:x}", std::process::id(), random_u64());
        let lock_ttl_ms = u64::try_from(self.inner.config.lock_ttl.as_millis()).unwrap_or(60_000);
        let deadline = Instant::now() + self.inner.config.lock_ttl + Duration::from_secs(5);
        let mut conn = self.inner.redis.clone();
        loop {
            let acquired: Option<String> = redis::cmd("SET")
                .arg(&lock_key)
                .arg(&owner)
                .arg("NX")
                .arg("PX")
                .arg(lock_ttl_ms)
                .query_async(&mut conn)
                .await
                .map_err(HubSpotError::Redis)?;
            if acquired.is_some() {
                let result = self.refresh_locked(client, portal, rejected).await;
                let released: Result<i64, _> = self
                    .inner
                    .release
                    .key(&lock_key)
                    .arg(&owner)
                    .invoke_async(&mut conn)
                    .await;
                if let Err(e) = released {
                    // The lock expires by itself; only a delay for other replicas.
                    tracing::warn!(portal.id = %portal, error = %e, "Failed to release the token refresh lock of portal {portal}");
                }
                return result;
            }
            // Another replica is refreshing: wait for its token to appear.
            tokio::time::sleep(self.inner.config.poll_interval).await;
            if let Some((token, ttl)) = self.cached_in_redis(portal).await?
                && differs(&token, rejected)
            {
                return Ok((token, ttl));
            }
            if Instant::now() > deadline {
                return Err(HubSpotError::Transient {
                    status: None,
                    retry_after: None,
                    source: None,
                });
            }
        }
    }

    async fn refresh_locked(
        &self,
        client: &Client,
        portal: PortalId,
        rejected: Option<&SecretString>,
    ) -> Result<(SecretString, Duration), HubSpotError> {
        // Someone may have refreshed between our cache miss and taking the lock.
        if let Some((token, ttl)) = self.cached_in_redis(portal).await?
            && differs(&token, rejected)
        {
            return Ok((token, ttl));
        }
        let stored = self
            .load(portal)
            .await?
            .ok_or(HubSpotError::MissingCredentials(portal))?;
        let refreshed = client.refresh(&stored.refresh_token).await;
        if let Some(m) = &self.inner.metrics {
            let outcome = match &refreshed {
                Ok(_) => "ok",
                Err(e) => e.code(),
            };
            m.token_refreshes.with_label_values(&[outcome]).inc();
        }
        let fresh = refreshed?;
        let token = fresh.access_token.clone();
        let remaining = (fresh.expires_at - chrono::Utc::now())
            .to_std()
            .unwrap_or_default();
        let usable = self.usable_for(remaining);
        let portal_of_tokens = fresh.portal;
        if let Err(e) = self.inner.store.save(portal, fresh).await {
            // The access token still works for its lifetime; losing a rotated
            // refresh token would not, so this must be seen.
            tracing::error!(portal.id = %portal, error = %e, "Failed to persist the refreshed OAuth tokens of portal {portal}");
        }
        if portal_of_tokens.is_some_and(|p| p != portal) {
            tracing::warn!(portal.id = %portal, "HubSpot returned tokens of another portal for portal {portal}");
        }
        if !usable.is_zero() {
            let mut conn = self.inner.redis.clone();
            redis::cmd("SET")
                .arg(self.key(portal, "access"))
                .arg(token.expose_secret())
                .arg("PX")
                .arg(u64::try_from(usable.as_millis()).unwrap_or(u64::MAX).max(1))
                .query_async::<()>(&mut conn)
                .await
                .map_err(HubSpotError::Redis)?;
        }
        Ok((token, usable))
    }
}
