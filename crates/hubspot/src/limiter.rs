//! The fleet-wide rate limiter per HubSpot portal (design.md §2.4, docs/adr/0004).
//!
//! Redis is the authority: a sliding-window log per portal (a sorted set of
//! grant times, updated by one Lua script) admits at most the quota in *any*
//! rolling window, whatever the number of replicas. In front of it, a
//! per-process `governor` limiter smooths each process's bursts so replicas do
//! not all hit Redis at once. Every HTTP call takes one permit, retries included.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota};
use leadsync_domain::PortalId;
use redis::Script;
use redis::aio::ConnectionManager;

use crate::error::HubSpotError;
use crate::metrics::HubSpotMetrics;

const SLIDING_WINDOW: &str = include_str!("limiter/sliding_window.lua");

// Never shortens a pause another replica set for longer.
const PAUSE: &str = r"
local current = redis.call('PTTL', KEYS[1])
if current < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
end
return 0
";

/// Who is asking: live sync traffic goes ahead of backfill and reconciliation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Priority {
    /// Webhook-driven reads and platform-driven writes: may use the whole quota.
    Live,
    /// Backfill and reconciliation: only [`PortalQuota::background_share`] of it,
    /// so live traffic always finds headroom.
    Background,
}

impl Priority {
    fn as_str(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Background => "background",
        }
    }
}

/// Which HubSpot budget a call spends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PermitKind {
    /// Every CRM call except search: the per-account burst window.
    Api,
    /// CRM search: its own limit (5 per second per token), outside the burst window.
    Search,
}

impl PermitKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Search => "search",
        }
    }
}

/// The limits of one portal.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PortalQuota {
    /// Calls allowed in any rolling `window` (`X-HubSpot-RateLimit-Max`): 100 for
    /// free/starter private apps, 110 for public OAuth apps, 190 or 250 for
    /// higher tiers.
    pub max: u32,
    /// HubSpot's window (`X-HubSpot-RateLimit-Interval-Milliseconds`, 10 s).
    pub window: Duration,
    /// Added to the window in Redis: a permit is granted before the request
    /// reaches HubSpot, and a slow connect can delay one request past a later
    /// one, so two grants exactly one window apart could land in one HubSpot window.
    pub safety_margin: Duration,
    /// The share of `max` background callers may use; the rest is headroom for
    /// live traffic.
    pub background_share: f64,
    /// Search calls allowed per second.
    pub search_per_second: u32,
    /// Added to search's one-second window, for the same reason as `safety_margin`.
    pub search_safety_margin: Duration,
}

impl Default for PortalQuota {
    fn default() -> Self {
        Self {
            max: 100,
            window: Duration::from_secs(10),
            safety_margin: Duration::from_millis(500),
            background_share: 0.8,
            search_per_second: 5,
            search_safety_margin: Duration::from_millis(100),
        }
    }
}

impl PortalQuota {
    /// `max` calls per `window`, other settings at their defaults.
    pub fn new(max: u32, window: Duration) -> Self {
        Self {
            max,
            window,
            ..Self::default()
        }
    }

    fn limit(&self, kind: PermitKind, priority: Priority) -> u32 {
        let max = match kind {
            PermitKind::Api => self.max,
            PermitKind::Search => self.search_per_second,
        };
        match priority {
            Priority::Live => max.max(1),
            // Truncation is intended: the share is a ceiling, never exceeded.
            Priority::Background => ((f64::from(max) * self.background_share) as u32).max(1),
        }
    }

    fn redis_window(&self, kind: PermitKind) -> Duration {
        match kind {
            PermitKind::Api => self.window + self.safety_margin,
            PermitKind::Search => Duration::from_secs(1) + self.search_safety_margin,
        }
    }

    /// The per-process shaper: burst `max / 2`, then one permit every
    /// `2 * window / max`, so one process alone never exceeds `max` per window
    /// (GCRA admits burst + window / period in any window; crates.md).
    fn local_quota(&self) -> Option<Quota> {
        let burst = NonZeroU32::new((self.max / 2).max(1))?;
        let period = (self.window * 2) / self.max.max(1);
        Quota::with_period(period).map(|q| q.allow_burst(burst))
    }
}

/// Settings of a [`RateLimiter`].
#[derive(Debug, Clone)]
pub struct LimiterConfig {
    /// Prefix of every Redis key, e.g. `leadsync` → `leadsync:rl:{62515}:api`.
    pub key_prefix: String,
    /// The quota of portals without an override.
    pub default_quota: PortalQuota,
    /// Per-portal quotas (tiers, purchased limit increases).
    pub overrides: HashMap<PortalId, PortalQuota>,
    /// The longest single sleep before asking Redis again; bounds how late a
    /// waiter notices that a pause was lifted early.
    pub max_poll_interval: Duration,
}

impl Default for LimiterConfig {
    fn default() -> Self {
        Self {
            key_prefix: "leadsync".to_owned(),
            default_quota: PortalQuota::default(),
            overrides: HashMap::new(),
            max_poll_interval: Duration::from_secs(1),
        }
    }
}

/// A granted permit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permit {
    /// How long the caller waited for it.
    pub waited: Duration,
}

/// The fleet-wide, per-portal rate limiter. Cloning shares it; build one per process.
#[derive(Clone)]
pub struct RateLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    redis: ConnectionManager,
    prefix: String,
    default_quota: PortalQuota,
    quotas: Mutex<HashMap<PortalId, PortalQuota>>,
    local: Mutex<HashMap<PortalId, Arc<DefaultDirectRateLimiter>>>,
    max_poll: Duration,
    script: Script,
    pause_script: Script,
    member_prefix: String,
    seq: AtomicU64,
    metrics: Option<HubSpotMetrics>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("prefix", &self.inner.prefix)
            .field("default_quota", &self.inner.default_quota)
            .finish_non_exhaustive()
    }
}

/// A random number without a dependency: `RandomState` is randomly seeded per instance.
pub(crate) fn random_u64() -> u64 {
    RandomState::new().hash_one(Instant::now())
}

impl RateLimiter {
    /// A limiter sharing its budget, through `redis`, with every process that
    /// uses the same key prefix.
    pub fn new(redis: ConnectionManager, config: LimiterConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                redis,
                prefix: config.key_prefix,
                default_quota: config.default_quota,
                quotas: Mutex::new(config.overrides),
                local: Mutex::new(HashMap::new()),
                max_poll: config.max_poll_interval,
                script: Script::new(SLIDING_WINDOW),
                pause_script: Script::new(PAUSE),
                member_prefix: format!("{}-{:x}", std::process::id(), random_u64()),
                seq: AtomicU64::new(0),
                metrics: None,
            }),
        }
    }

    /// The same limiter, recording into `metrics`. Call before cloning.
    pub fn with_metrics(mut self, metrics: HubSpotMetrics) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.metrics = Some(metrics);
        }
        self
    }

    /// The quota of `portal`.
    pub fn quota(&self, portal: PortalId) -> PortalQuota {
        self.inner
            .quotas
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&portal)
            .copied()
            .unwrap_or(self.inner.default_quota)
    }

    /// Sets the quota of `portal` (e.g. when its tier becomes known).
    pub fn set_quota(&self, portal: PortalId, quota: PortalQuota) {
        self.inner
            .quotas
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(portal, quota);
        self.inner
            .local
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&portal);
    }

    /// Adopts HubSpot's announced limit (`X-HubSpot-RateLimit-Max` and
    /// `-Interval-Milliseconds`) when it is stricter than the configured one.
    pub fn observe_limit(&self, portal: PortalId, max: u32, window: Duration) {
        let quota = self.quota(portal);
        if max == 0 || window.is_zero() {
            return;
        }
        // Compare rates: max / window < quota.max / quota.window.
        if u128::from(max) * quota.window.as_millis() < u128::from(quota.max) * window.as_millis() {
            tracing::warn!(
                portal.id = %portal,
                hubspot.max = max,
                hubspot.window_ms = window.as_millis() as u64,
                configured.max = quota.max,
                "HubSpot announces a lower rate limit than configured for portal {portal}; adopting it"
            );
            self.set_quota(
                portal,
                PortalQuota {
                    max,
                    window,
                    ..quota
                },
            );
        }
    }

    fn key(&self, portal: PortalId, kind: PermitKind) -> String {
        // The hash tag keeps a portal's keys in one slot on a Redis Cluster.
        format!("{}:rl:{{{portal}}}:{}", self.inner.prefix, kind.as_str())
    }

    fn pause_key(&self, portal: PortalId, kind: PermitKind) -> String {
        format!(
            "{}:rl:{{{portal}}}:{}:pause",
            self.inner.prefix,
            kind.as_str()
        )
    }

    fn local(&self, portal: PortalId) -> Option<Arc<DefaultDirectRateLimiter>> {
        let mut map = self
            .inner
            .local
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(l) = map.get(&portal) {
            return Some(l.clone());
        }
        let quota = self.quota(portal).local_quota()?;
        let limiter = Arc::new(DefaultDirectRateLimiter::direct(quota));
        map.insert(portal, limiter.clone());
        Some(limiter)
    }

    /// One attempt at a permit, without waiting: `None` when granted, otherwise
    /// how long to wait before asking again.
    pub async fn try_acquire(
        &self,
        portal: PortalId,
        kind: PermitKind,
        priority: Priority,
    ) -> Result<Option<Duration>, HubSpotError> {
        let quota = self.quota(portal);
        let member = format!(
            "{}-{}",
            self.inner.member_prefix,
            self.inner.seq.fetch_add(1, Ordering::Relaxed)
        );
        let window_us = u64::try_from(quota.redis_window(kind).as_micros()).unwrap_or(u64::MAX);
        let mut conn = self.inner.redis.clone();
        let wait_us: u64 = self
            .inner
            .script
            .key(self.key(portal, kind))
            .key(self.pause_key(portal, kind))
            .arg(window_us)
            .arg(quota.limit(kind, priority))
            .arg(member)
            .invoke_async(&mut conn)
            .await
            .map_err(HubSpotError::Redis)?;
        Ok((wait_us > 0).then(|| Duration::from_micros(wait_us)))
    }

    /// Waits for a permit for one HTTP call to `portal`.
    pub async fn acquire(
        &self,
        portal: PortalId,
        kind: PermitKind,
        priority: Priority,
    ) -> Result<Permit, HubSpotError> {
        let started = Instant::now();
        if kind == PermitKind::Api
            && let Some(local) = self.local(portal)
        {
            local.until_ready().await;
        }
        while let Some(wait) = self.try_acquire(portal, kind, priority).await? {
            // A little jitter keeps replicas that were told the same instant
            // from asking Redis in lockstep.
            let jitter = Duration::from_micros(random_u64() % 5_000);
            tokio::time::sleep(wait.min(self.inner.max_poll) + jitter).await;
        }
        let waited = started.elapsed();
        if let Some(m) = &self.inner.metrics {
            let labels = [kind.as_str(), priority.as_str()];
            m.limiter_wait
                .with_label_values(&labels)
                .observe(waited.as_secs_f64());
            m.permits.with_label_values(&labels).inc();
        }
        Ok(Permit { waited })
    }

    /// How much longer `portal` stays paused after a 429, if it is.
    pub async fn paused_for(
        &self,
        portal: PortalId,
        kind: PermitKind,
    ) -> Result<Option<Duration>, HubSpotError> {
        let mut conn = self.inner.redis.clone();
        let pttl: i64 = redis::cmd("PTTL")
            .arg(self.pause_key(portal, kind))
            .query_async(&mut conn)
            .await
            .map_err(HubSpotError::Redis)?;
        Ok(u64::try_from(pttl)
            .ok()
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis))
    }

    /// Stops every replica from calling `portal` for `duration`: called when a
    /// 429 arrives anyway (another app sharing the account, a lower tier, …).
    pub async fn pause(
        &self,
        portal: PortalId,
        kind: PermitKind,
        duration: Duration,
    ) -> Result<(), HubSpotError> {
        let ms = u64::try_from(duration.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let mut conn = self.inner.redis.clone();
        let _: i64 = self
            .inner
            .pause_script
            .key(self.pause_key(portal, kind))
            .arg(ms)
            .invoke_async(&mut conn)
            .await
            .map_err(HubSpotError::Redis)?;
        Ok(())
    }
}
