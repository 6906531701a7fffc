//! Everything the simulator can be told at start-up. [`SimConfig::default`] is a
//! complete, working configuration: one portal, one public app, rate limits on.

use std::net::SocketAddr;
use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// The simulator's start-up configuration.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Address to bind; port 0 picks a free port (what tests should use).
    pub bind: SocketAddr,
    /// Seeds every random choice: ids, tokens, correlation ids, fault injection
    /// and retry jitter. Wall-clock timestamps are the only non-seeded values.
    pub seed: u64,
    /// HTTP worker threads serving the API.
    pub workers: usize,
    /// The public app whose webhooks are delivered and whose tokens are issued.
    pub app: AppConfig,
    /// Portals (HubSpot accounts) that exist at start; each has the app installed.
    pub portals: Vec<PortalConfig>,
    /// The default rate-limit policy of every portal that does not set its own.
    pub rate_limit: RateLimitConfig,
    /// Lifetime of OAuth access tokens (`expires_in`); HubSpot's is 1800 s.
    pub access_token_ttl: Duration,
    /// Webhook delivery tunables.
    pub delivery: DeliveryConfig,
    /// Fault injection on webhook delivery (all rates 0 by default).
    pub faults: FaultConfig,
    /// Webhook subscriptions that exist at start (HubSpot starts with none).
    pub subscriptions: Vec<SubscriptionSpec>,
    /// Whether creating a contact also fires `contact.propertyChange` for each
    /// subscribed property it sets. HubSpot does not document it either way
    /// (docs/hubspot-sim.md, "Choices where HubSpot is silent"); on by default, the stricter case for a receiver.
    pub property_changes_on_create: bool,
    /// How long a new contact stays invisible to search (HubSpot's indexing lag).
    pub search_index_lag: Duration,
    /// The HubSpot user id the control API acts as when none is given.
    pub default_user_id: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            seed: 0,
            workers: 2,
            app: AppConfig::default(),
            portals: vec![PortalConfig::new(DEFAULT_PORTAL_ID)],
            rate_limit: RateLimitConfig::default(),
            access_token_ttl: Duration::from_secs(1800),
            delivery: DeliveryConfig::default(),
            faults: FaultConfig::default(),
            subscriptions: Vec::new(),
            property_changes_on_create: true,
            search_index_lag: Duration::ZERO,
            default_user_id: DEFAULT_USER_ID,
        }
    }
}

/// The portal id of [`SimConfig::default`].
pub const DEFAULT_PORTAL_ID: u64 = 62515;
/// The user id the control API acts as by default.
pub const DEFAULT_USER_ID: u64 = 9_000_001;

impl SimConfig {
    /// The default configuration with rate limits switched off, for benchmarks.
    pub fn without_rate_limits() -> Self {
        Self {
            rate_limit: RateLimitConfig::disabled(),
            ..Self::default()
        }
    }

    /// The id of the first configured portal, if any.
    pub fn first_portal(&self) -> Option<u64> {
        self.portals.first().map(|p| p.id)
    }
}

/// The public (OAuth) app the simulator plays HubSpot for.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// `appId`, in payloads, in `/webhooks/v3/{appId}` and as `sourceId` of its writes.
    pub app_id: u64,
    /// OAuth `client_id`.
    pub client_id: String,
    /// OAuth `client_secret`; also the key of webhook signatures.
    pub client_secret: SecretString,
    /// The developer account's API key (`?hapikey=`) for webhook management.
    pub developer_api_key: SecretString,
    /// Webhook target URL at start (HubSpot: set in the app settings).
    pub target_url: Option<String>,
    /// `throttling.maxConcurrentRequests` at start.
    pub max_concurrent_requests: u32,
}

impl Default for AppConfig {
    fn default() -> Self {
        Self {
            app_id: 1_160_452,
            client_id: "sim-client-id".to_owned(),
            client_secret: SecretString::from("sim-client-secret"),
            developer_api_key: SecretString::from("sim-developer-key"),
            target_url: None,
            max_concurrent_requests: 10,
        }
    }
}

/// One HubSpot account.
#[derive(Debug, Clone)]
pub struct PortalConfig {
    /// The account id (`portalId`, `hub_id`).
    pub id: u64,
    /// Private-app tokens valid for this portal.
    pub private_app_tokens: Vec<PrivateAppConfig>,
    /// This portal's own rate-limit policy (otherwise [`SimConfig::rate_limit`]).
    pub rate_limit: Option<RateLimitConfig>,
}

impl PortalConfig {
    /// A portal without private apps, on the default rate-limit policy.
    pub fn new(id: u64) -> Self {
        Self {
            id,
            private_app_tokens: Vec::new(),
            rate_limit: None,
        }
    }

    /// Adds a private-app token (its app id is derived from the portal id).
    pub fn with_private_app_token(mut self, token: impl Into<String>) -> Self {
        let app_id = private_app_id(self.id, self.private_app_tokens.len());
        self.private_app_tokens.push(PrivateAppConfig {
            token: SecretString::from(token.into()),
            app_id,
        });
        self
    }
}

/// A private app installed in one portal.
#[derive(Debug, Clone)]
pub struct PrivateAppConfig {
    /// Its access token (`pat-…`).
    pub token: SecretString,
    /// Its app id: the `sourceId` of changes it makes.
    pub app_id: u64,
}

/// The app id given to the `n`th private app of a portal when none is chosen.
pub(crate) fn private_app_id(portal: u64, n: usize) -> u64 {
    // Stable and distinct from the public app's id, so tests can tell them apart.
    5_000_000 + portal % 1_000_000 * 10 + n as u64
}

/// A portal's API budget, as HubSpot enforces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitConfig {
    /// When false nothing is limited and no `X-HubSpot-RateLimit-*` header is sent.
    pub enabled: bool,
    /// Requests allowed in any rolling window (`X-HubSpot-RateLimit-Max`).
    pub window_max: u32,
    /// The rolling window, in milliseconds (`…-Interval-Milliseconds`; HubSpot: 10000).
    pub window_ms: u64,
    /// Requests allowed per UTC day (`X-HubSpot-RateLimit-Daily`).
    pub daily_max: u64,
    /// Search requests allowed per second per token.
    pub search_per_second: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self::tier(Tier::Free)
    }
}

/// HubSpot's published private-app tiers (usage-details page).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "camelCase")]
pub enum Tier {
    /// Free and Starter: 100 per 10 s, 250,000 per day.
    Free,
    /// Professional: 190 per 10 s, 625,000 per day.
    Professional,
    /// Enterprise: 190 per 10 s, 1,000,000 per day.
    Enterprise,
    /// With the API limit increase: 250 per 10 s, 2,000,000 per day.
    ApiLimitIncrease,
    /// A public OAuth app: 110 per 10 s per installing account.
    PublicApp,
}

impl RateLimitConfig {
    /// The limits of a HubSpot tier.
    pub fn tier(tier: Tier) -> Self {
        let (window_max, daily_max) = match tier {
            Tier::Free => (100, 250_000),
            Tier::Professional => (190, 625_000),
            Tier::Enterprise => (190, 1_000_000),
            Tier::ApiLimitIncrease => (250, 2_000_000),
            Tier::PublicApp => (110, 250_000),
        };
        Self {
            enabled: true,
            window_max,
            window_ms: 10_000,
            daily_max,
            search_per_second: 5,
        }
    }

    /// No limits at all.
    pub fn disabled() -> Self {
        Self {
            enabled: false,
            ..Self::default()
        }
    }

    /// The rolling window as a duration.
    pub fn window(&self) -> Duration {
        Duration::from_millis(self.window_ms)
    }
}

/// How webhooks are delivered.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryConfig {
    /// A POST not answered within this is a failure (HubSpot: five seconds).
    pub timeout_ms: u64,
    /// Retries after the first attempt before an event is dropped (HubSpot: 10).
    pub max_retries: u32,
    /// Divides every retry delay; HubSpot spreads retries over 24 h, so 86400
    /// turns that into about a second.
    pub time_scale: f64,
    /// Events per POST (HubSpot: up to 100).
    pub max_batch: usize,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            timeout_ms: 5_000,
            max_retries: 10,
            time_scale: 1.0,
            max_batch: 100,
        }
    }
}

impl DeliveryConfig {
    /// The POST timeout as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

/// Delivery faults, each a probability per event, drawn from the seeded RNG.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct FaultConfig {
    /// The event is delivered a second time in a later POST.
    pub duplicate_rate: f64,
    /// The event is moved behind events that happened after it.
    pub reorder_rate: f64,
    /// The event is held back for up to `max_delay_ms` before its first POST.
    pub delay_rate: f64,
    /// Upper bound of an injected delay.
    pub max_delay_ms: u64,
    /// The event is lost, as if HubSpot dropped it; it is counted, never sent.
    pub drop_rate: f64,
}

/// A webhook subscription to create at start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionSpec {
    /// e.g. `contact.creation` or `contact.propertyChange`.
    pub event_type: String,
    /// For `contact.propertyChange`: the property.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub property_name: Option<String>,
    /// Whether it fires (HubSpot's API default is false; here true).
    #[serde(default = "yes")]
    pub active: bool,
}

fn yes() -> bool {
    true
}

impl SubscriptionSpec {
    /// An active subscription to `event_type`.
    pub fn new(event_type: impl Into<String>) -> Self {
        Self {
            event_type: event_type.into(),
            property_name: None,
            active: true,
        }
    }

    /// An active `contact.propertyChange` subscription to `property`.
    pub fn property_change(property: impl Into<String>) -> Self {
        Self {
            event_type: "contact.propertyChange".to_owned(),
            property_name: Some(property.into()),
            active: true,
        }
    }

    /// Parses `contact.creation` or `contact.propertyChange:email`.
    pub fn parse(spec: &str) -> Self {
        match spec.split_once(':') {
            Some((event_type, property)) => Self {
                event_type: event_type.trim().to_owned(),
                property_name: Some(property.trim().to_owned()),
                active: true,
            },
            None => Self::new(spec.trim()),
        }
    }

    /// Every contact event type, plus property changes of the given properties.
    pub fn all_contact_events(properties: &[&str]) -> Vec<Self> {
        let mut subs: Vec<Self> = [
            "contact.creation",
            "contact.deletion",
            "contact.merge",
            "contact.restore",
            "contact.privacyDeletion",
        ]
        .into_iter()
        .map(Self::new)
        .collect();
        subs.extend(properties.iter().map(|p| Self::property_change(*p)));
        subs
    }
}
