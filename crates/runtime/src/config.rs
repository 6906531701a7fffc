//! The one typed configuration of leadsync.
//!
//! Layers, later ones winning: the commented defaults in
//! `config.default.toml`, an optional TOML file named by `LEADSYNC_CONFIG`,
//! then `LEADSYNC__SECTION__KEY` environment variables. [`Settings::load`]
//! validates once and names the offending key in its error.

use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// The commented defaults, compiled in.
pub const DEFAULTS: &str = include_str!("../config.default.toml");
/// Environment prefix of overrides (`LEADSYNC__APPLICATION__PORT=9000`).
pub const ENV_PREFIX: &str = "LEADSYNC__";
/// Environment variable naming an optional TOML file.
pub const FILE_ENV: &str = "LEADSYNC_CONFIG";

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A key is missing, of the wrong type, or has an invalid value.
    #[error("configuration key `{key}`: {message}")]
    Invalid {
        /// Dotted key, e.g. `redis.idempotency_ttl_secs`.
        key: String,
        /// What is wrong with it.
        message: String,
    },
}

impl ConfigError {
    /// An error about `key` (dotted), for checks made where a setting is
    /// used rather than at load time.
    pub fn invalid(key: &str, message: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.to_owned(),
            message: message.into(),
        }
    }

    /// The dotted key the error is about.
    pub fn key(&self) -> &str {
        match self {
            Self::Invalid { key, .. } => key,
        }
    }
}

/// All settings. Sections match the TOML tables.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The ingester's HTTP server.
    pub application: ApplicationSettings,
    /// The HubSpot app.
    pub hubspot: HubSpotSettings,
    /// The Redis holding the queues.
    pub redis: RedisSettings,
    /// The platform's Postgres.
    pub database: DatabaseSettings,
    /// Logs and traces.
    pub telemetry: TelemetrySettings,
    /// The sync worker.
    pub worker: WorkerSettings,
    /// Reconciliation: repairing what webhooks missed.
    pub reconcile: ReconcileSettings,
    /// The platform's REST API server.
    pub api: ApiSettings,
    /// Backfill: importing every contact and pushing every unsynced lead.
    pub backfill: BackfillSettings,
}

/// `[application]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplicationSettings {
    /// Interface to bind.
    pub host: String,
    /// Port to bind; 0 picks a free one (tests).
    pub port: u16,
    /// Public URL prefix HubSpot calls, without a trailing slash.
    pub public_base_url: String,
    /// Largest accepted body, in bytes.
    pub body_limit_bytes: usize,
    /// Deadline for Redis to acknowledge a request's events, in milliseconds.
    pub enqueue_deadline_ms: u64,
    /// HTTP worker threads (0 = one per core).
    pub http_workers: usize,
    /// Grace period after SIGTERM, in seconds.
    pub shutdown_timeout_secs: u64,
}

impl ApplicationSettings {
    /// The enqueue deadline as a duration.
    pub fn enqueue_deadline(&self) -> Duration {
        Duration::from_millis(self.enqueue_deadline_ms)
    }
}

/// `[hubspot]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubSpotSettings {
    /// Client secrets valid for webhook signatures (rotation: several).
    pub client_secrets: Vec<SecretString>,
    /// Refuse requests without a v3 signature.
    pub require_signature_v3: bool,
    /// v3 replay window, in seconds.
    pub signature_max_age_secs: u64,
    /// The HubSpot app id.
    pub app_id: u64,
    /// HubSpot's API base URL (the simulator's in tests).
    pub api_base_url: String,
    /// The public app's OAuth client id (its secret is the first of
    /// `client_secrets`). Needed by the worker for OAuth-connected accounts.
    pub client_id: String,
    /// API calls allowed per portal in any rolling window, fleet-wide.
    pub rate_limit_max: u32,
    /// That window, in milliseconds.
    pub rate_limit_window_ms: u64,
    /// Base64 of the 32-byte AES-256 key that encrypts tokens at rest.
    /// Required by the worker.
    pub token_encryption_key: SecretString,
    /// The value the worker writes to the custom contact property
    /// `lead_source_system` of contacts it creates (an option of that
    /// enumeration property).
    pub source_system_value: String,
    /// The developer account's API key (`hapikey`), which manages the app's
    /// webhook settings and subscriptions. Needed by `leadsync setup`.
    pub developer_api_key: SecretString,
    /// The OAuth `redirect_uri`: where HubSpot sends the user back after an
    /// install. Needed by `leadsync connect oauth-url` and `connect oauth`.
    pub redirect_uri: String,
    /// The OAuth scopes asked for on install.
    pub scopes: Vec<String>,
}

impl HubSpotSettings {
    /// The rate-limit window as a duration.
    pub fn rate_limit_window(&self) -> Duration {
        Duration::from_millis(self.rate_limit_window_ms)
    }

    /// The client secret used for OAuth calls: the current (first) one.
    pub fn oauth_client_secret(&self) -> Option<&SecretString> {
        self.client_secrets.first()
    }

    /// The token encryption key, for the binaries that read or write tokens.
    ///
    /// # Errors
    /// Names `hubspot.token_encryption_key` when it is empty.
    pub fn require_token_encryption_key(&self) -> Result<&SecretString, ConfigError> {
        if self.token_encryption_key.expose_secret().trim().is_empty() {
            return Err(ConfigError::invalid(
                "hubspot.token_encryption_key",
                "is required: base64 of a 32-byte key (generate one with `openssl rand -base64 32`)",
            ));
        }
        Ok(&self.token_encryption_key)
    }

    /// The developer API key, for webhook management.
    ///
    /// # Errors
    /// Names `hubspot.developer_api_key` when it is empty.
    pub fn require_developer_api_key(&self) -> Result<&SecretString, ConfigError> {
        if self.developer_api_key.expose_secret().trim().is_empty() {
            return Err(ConfigError::invalid(
                "hubspot.developer_api_key",
                "is required to manage the app's webhooks: the developer account's API key",
            ));
        }
        Ok(&self.developer_api_key)
    }

    /// The OAuth redirect URI, for connecting an account through OAuth.
    ///
    /// # Errors
    /// Names `hubspot.redirect_uri` when it is empty.
    pub fn require_redirect_uri(&self) -> Result<&str, ConfigError> {
        if self.redirect_uri.is_empty() {
            return Err(ConfigError::invalid(
                "hubspot.redirect_uri",
                "is required for OAuth: the redirect URL registered in the app's auth settings",
            ));
        }
        Ok(&self.redirect_uri)
    }

    fn validate_oauth(&self) -> Result<(), ConfigError> {
        if !self.redirect_uri.is_empty() {
            let url = url::Url::parse(&self.redirect_uri).map_err(|e| {
                ConfigError::invalid("hubspot.redirect_uri", format!("not a URL: {e}"))
            })?;
            if !matches!(url.scheme(), "http" | "https") || url.fragment().is_some() {
                return Err(ConfigError::invalid(
                    "hubspot.redirect_uri",
                    "must be an http(s) URL without a fragment",
                ));
            }
        }
        if self.scopes.is_empty()
            || self
                .scopes
                .iter()
                .any(|s| s.is_empty() || s.contains(char::is_whitespace))
        {
            return Err(ConfigError::invalid(
                "hubspot.scopes",
                "must list at least one scope, each without spaces",
            ));
        }
        Ok(())
    }
}

/// `[redis]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    /// Connection URL (may hold a password, hence secret).
    pub url: SecretString,
    /// Prefix of every queue key.
    pub key_prefix: String,
    /// Dedupe memory for event identities, in seconds (at least 7 days).
    pub idempotency_ttl_secs: u64,
    /// Connect timeout, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Response timeout, in milliseconds.
    pub response_timeout_ms: u64,
    /// Most events in one push.
    pub max_push_batch: usize,
    /// Pushes in flight at once.
    pub push_concurrency: usize,
}

/// `[database]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// Connection URL (may hold a password, hence secret).
    pub url: SecretString,
    /// Pool size.
    pub max_connections: u32,
}

/// `[telemetry]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySettings {
    /// `service.name` of traces.
    pub service_name: String,
    /// `json` or `pretty`.
    pub log_format: LogFormat,
    /// EnvFilter directives.
    pub log_filter: String,
    /// OTLP/HTTP traces endpoint; empty = off.
    pub otlp_endpoint: String,
    /// Sampled fraction of traces.
    pub sample_ratio: f64,
}

/// `[worker]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    /// Most distinct (portal, contact) pairs in one batch.
    pub batch_max_contacts: usize,
    /// How long a batch waits for more events after its first, in milliseconds.
    pub batch_window_ms: u64,
    /// Batches processed at once by one process.
    pub max_batches_in_flight: usize,
    /// Jobs in flight per process (each waits for its batch to commit).
    pub concurrency: usize,
    /// Tasks one fetch takes from Redis.
    pub fetch_batch_size: usize,
    /// How often an idle worker looks for tasks, in milliseconds.
    pub poll_interval_ms: u64,
    /// How often due retries are promoted to the ready list, in milliseconds.
    pub promote_interval_ms: u64,
    /// Worker heartbeat period, in seconds.
    pub heartbeat_interval_secs: u64,
    /// Heartbeats a worker may miss before its jobs go to another worker.
    pub missed_heartbeats: usize,
    /// How often integrations' credentials are reloaded, in seconds.
    pub credentials_refresh_secs: u64,
    /// Interface of the `/metrics`, `/healthz`, `/readyz` server.
    pub metrics_host: String,
    /// Its port; 0 picks a free one (tests).
    pub metrics_port: u16,
    /// Grace period after SIGTERM for in-flight batches, in seconds.
    pub shutdown_timeout_secs: u64,
    /// Most distinct leads in one outbound (push) batch.
    pub push_batch_max_leads: usize,
    /// How long a push batch waits for more lead changes after its first,
    /// in milliseconds.
    pub push_batch_window_ms: u64,
    /// Outbox rows the relay moves to the queue per transaction.
    pub relay_batch_size: usize,
    /// How often the relay looks for outbox rows when no notification woke
    /// it, in milliseconds.
    pub relay_poll_interval_ms: u64,
}

impl WorkerSettings {
    /// The batch window as a duration.
    pub fn batch_window(&self) -> Duration {
        Duration::from_millis(self.batch_window_ms)
    }

    /// The idle poll interval as a duration.
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }

    /// The promotion interval as a duration.
    pub fn promote_interval(&self) -> Duration {
        Duration::from_millis(self.promote_interval_ms)
    }

    /// The heartbeat period as a duration.
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_secs(self.heartbeat_interval_secs)
    }

    /// The credentials reload period as a duration.
    pub fn credentials_refresh(&self) -> Duration {
        Duration::from_secs(self.credentials_refresh_secs)
    }

    /// The shutdown grace period as a duration.
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_secs)
    }

    /// The push batch window as a duration.
    pub fn push_batch_window(&self) -> Duration {
        Duration::from_millis(self.push_batch_window_ms)
    }

    /// The relay's polling fallback as a duration.
    pub fn relay_poll_interval(&self) -> Duration {
        Duration::from_millis(self.relay_poll_interval_ms)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=100).contains(&self.batch_max_contacts) {
            return Err(ConfigError::invalid(
                "worker.batch_max_contacts",
                "must be between 1 and 100 (one HubSpot batch read takes at most 100 ids)",
            ));
        }
        if self.batch_window_ms > 60_000 {
            return Err(ConfigError::invalid(
                "worker.batch_window_ms",
                "must be at most 60000",
            ));
        }
        if !(1..=16).contains(&self.max_batches_in_flight) {
            return Err(ConfigError::invalid(
                "worker.max_batches_in_flight",
                "must be between 1 and 16",
            ));
        }
        if !(1..=1_000).contains(&self.fetch_batch_size) {
            return Err(ConfigError::invalid(
                "worker.fetch_batch_size",
                "must be between 1 and 1000",
            ));
        }
        if self.concurrency < self.batch_max_contacts {
            return Err(ConfigError::invalid(
                "worker.concurrency",
                format!(
                    "must be at least worker.batch_max_contacts ({}): each job waits for its batch, \
                     so fewer jobs in flight could never fill one",
                    self.batch_max_contacts
                ),
            ));
        }
        // apalis buffers lock and ack events of a worker in a channel of
        // 4 × fetch size and reads it again only once every job has finished
        // when stopping: more than that many events would deadlock a
        // graceful shutdown. Each job sends two.
        if self.concurrency > 2 * self.fetch_batch_size {
            return Err(ConfigError::invalid(
                "worker.concurrency",
                format!(
                    "must be at most twice worker.fetch_batch_size ({}), or a graceful shutdown can stall",
                    self.fetch_batch_size
                ),
            ));
        }
        if !(10..=10_000).contains(&self.poll_interval_ms) {
            return Err(ConfigError::invalid(
                "worker.poll_interval_ms",
                "must be between 10 and 10000",
            ));
        }
        if !(100..=60_000).contains(&self.promote_interval_ms) {
            return Err(ConfigError::invalid(
                "worker.promote_interval_ms",
                "must be between 100 and 60000",
            ));
        }
        if self.heartbeat_interval_secs == 0 {
            return Err(ConfigError::invalid(
                "worker.heartbeat_interval_secs",
                "must be positive",
            ));
        }
        if self.missed_heartbeats == 0 {
            return Err(ConfigError::invalid(
                "worker.missed_heartbeats",
                "must be positive",
            ));
        }
        if self.credentials_refresh_secs == 0 {
            return Err(ConfigError::invalid(
                "worker.credentials_refresh_secs",
                "must be positive",
            ));
        }
        if self.metrics_host.is_empty() {
            return Err(ConfigError::invalid(
                "worker.metrics_host",
                "must not be empty",
            ));
        }
        if self.shutdown_timeout_secs == 0 {
            return Err(ConfigError::invalid(
                "worker.shutdown_timeout_secs",
                "must be positive",
            ));
        }
        self.validate_outbound()
    }

    fn validate_outbound(&self) -> Result<(), ConfigError> {
        if !(1..=1_000).contains(&self.push_batch_max_leads) {
            return Err(ConfigError::invalid(
                "worker.push_batch_max_leads",
                "must be between 1 and 1000",
            ));
        }
        if self.push_batch_window_ms > 60_000 {
            return Err(ConfigError::invalid(
                "worker.push_batch_window_ms",
                "must be at most 60000",
            ));
        }
        if !(1..=10_000).contains(&self.relay_batch_size) {
            return Err(ConfigError::invalid(
                "worker.relay_batch_size",
                "must be between 1 and 10000",
            ));
        }
        if !(10..=60_000).contains(&self.relay_poll_interval_ms) {
            return Err(ConfigError::invalid(
                "worker.relay_poll_interval_ms",
                "must be between 10 and 60000",
            ));
        }
        Ok(())
    }
}

/// `[reconcile]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcileSettings {
    /// Whether the worker reconciles periodically (`leadsync reconcile`
    /// works either way).
    pub enabled: bool,
    /// Time between two periodic runs, in seconds.
    pub interval_secs: u64,
    /// How far back the first run of an integration looks, in seconds.
    pub first_lookback_secs: u64,
    /// Changes younger than this are left to the webhooks, in seconds.
    pub safety_lag_secs: u64,
    /// Most results one search may page through (HubSpot: 10,000); a time
    /// window with more is split.
    pub search_result_cap: u64,
}

impl ReconcileSettings {
    /// The interval as a duration.
    pub fn interval(&self) -> Duration {
        Duration::from_secs(self.interval_secs)
    }

    /// The first run's lookback as a duration.
    pub fn first_lookback(&self) -> Duration {
        Duration::from_secs(self.first_lookback_secs)
    }

    /// The safety lag as a duration.
    pub fn safety_lag(&self) -> Duration {
        Duration::from_secs(self.safety_lag_secs)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=7 * 24 * 3600).contains(&self.interval_secs) {
            return Err(ConfigError::invalid(
                "reconcile.interval_secs",
                "must be between 1 and 604800 (7 days)",
            ));
        }
        if !(1..=365 * 24 * 3600).contains(&self.first_lookback_secs) {
            return Err(ConfigError::invalid(
                "reconcile.first_lookback_secs",
                "must be between 1 and 31536000 (365 days)",
            ));
        }
        if self.safety_lag_secs > 24 * 3600 {
            return Err(ConfigError::invalid(
                "reconcile.safety_lag_secs",
                "must be at most 86400 (1 day)",
            ));
        }
        if !(1..=10_000).contains(&self.search_result_cap) {
            return Err(ConfigError::invalid(
                "reconcile.search_result_cap",
                "must be between 1 and 10000 (HubSpot pages through at most 10,000 results)",
            ));
        }
        Ok(())
    }
}

/// `[backfill]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackfillSettings {
    /// Contacts per list page (HubSpot: at most 100).
    pub page_size: u32,
    /// The share of a portal's quota backfill calls may take: a call waits
    /// while the fleet's calls in the rolling window (live ones included)
    /// reach this share, so live sync keeps the rest.
    pub max_quota_share: f64,
}

impl BackfillSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=100).contains(&self.page_size) {
            return Err(ConfigError::invalid(
                "backfill.page_size",
                "must be between 1 and 100 (HubSpot lists at most 100 contacts per page)",
            ));
        }
        if !(0.05..=1.0).contains(&self.max_quota_share) {
            return Err(ConfigError::invalid(
                "backfill.max_quota_share",
                "must be between 0.05 and 1.0",
            ));
        }
        Ok(())
    }
}

/// `[api]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSettings {
    /// Interface to bind.
    pub host: String,
    /// Port to bind; 0 picks a free one (tests).
    pub port: u16,
    /// HTTP worker threads (0 = one per core).
    pub http_workers: usize,
    /// Largest accepted JSON body, in bytes.
    pub body_limit_bytes: usize,
    /// Grace period after SIGTERM, in seconds.
    pub shutdown_timeout_secs: u64,
}

impl ApiSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.host.is_empty() {
            return Err(ConfigError::invalid("api.host", "must not be empty"));
        }
        if !(1024..=16 * 1024 * 1024).contains(&self.body_limit_bytes) {
            return Err(ConfigError::invalid(
                "api.body_limit_bytes",
                "must be between 1024 and 16777216 (16 MiB)",
            ));
        }
        if self.http_workers > 256 {
            return Err(ConfigError::invalid(
                "api.http_workers",
                "must be at most 256 (0 = one per CPU core)",
            ));
        }
        Ok(())
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable.
    Pretty,
}

/// Seven days: HubSpot retries a delivery for about one.
pub const MIN_IDEMPOTENCY_TTL_SECS: u64 = 7 * 24 * 3600;

impl Settings {
    /// Loads defaults, the optional file and the environment, then validates.
    pub fn load() -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULTS));
        // The one place the process environment is read directly.
        #[allow(clippy::disallowed_methods)]
        let file = std::env::var_os(FILE_ENV);
        if let Some(path) = file {
            figment = figment.merge(Toml::file_exact(path));
        }
        Self::from_figment(&figment.merge(Env::prefixed(ENV_PREFIX).split("__")))
    }

    /// Defaults with `overrides` (TOML text) on top: for tests and tools
    /// that must not depend on the process environment.
    pub fn from_toml(overrides: &str) -> Result<Self, ConfigError> {
        Self::from_toml_layers(&[overrides])
    }

    /// Defaults with each TOML layer merged on top, later layers winning.
    pub fn from_toml_layers(layers: &[&str]) -> Result<Self, ConfigError> {
        let figment = layers
            .iter()
            .fold(Figment::from(Toml::string(DEFAULTS)), |f, layer| {
                f.merge(Toml::string(layer))
            });
        Self::from_figment(&figment)
    }

    fn from_figment(figment: &Figment) -> Result<Self, ConfigError> {
        let settings: Self = figment.extract().map_err(|e| {
            let key = if e.path.is_empty() {
                // Unknown-field errors name the field in the message only.
                match &e.kind {
                    figment::error::Kind::UnknownField(field, _) => field.clone(),
                    _ => "<root>".to_owned(),
                }
            } else {
                e.path.join(".")
            };
            ConfigError::invalid(&key, e.kind.to_string())
        })?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks values that types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let app = &self.application;
        let url = url::Url::parse(&app.public_base_url).map_err(|e| {
            ConfigError::invalid("application.public_base_url", format!("not a URL: {e}"))
        })?;
        if !matches!(url.scheme(), "http" | "https")
            || url.query().is_some()
            || app.public_base_url.ends_with('/')
        {
            return Err(ConfigError::invalid(
                "application.public_base_url",
                "must be an http(s) URL without query and without a trailing slash",
            ));
        }
        if app.body_limit_bytes < 1024 {
            return Err(ConfigError::invalid(
                "application.body_limit_bytes",
                "must be at least 1024",
            ));
        }
        if !(1..=4_500).contains(&app.enqueue_deadline_ms) {
            return Err(ConfigError::invalid(
                "application.enqueue_deadline_ms",
                "must be between 1 and 4500 (HubSpot abandons a delivery after 5 s)",
            ));
        }
        if self.hubspot.signature_max_age_secs == 0 {
            return Err(ConfigError::invalid(
                "hubspot.signature_max_age_secs",
                "must be positive",
            ));
        }
        if self
            .hubspot
            .client_secrets
            .iter()
            .any(|s| s.expose_secret().is_empty())
        {
            return Err(ConfigError::invalid(
                "hubspot.client_secrets",
                "contains an empty secret",
            ));
        }
        let api = url::Url::parse(&self.hubspot.api_base_url)
            .map_err(|e| ConfigError::invalid("hubspot.api_base_url", format!("not a URL: {e}")))?;
        if !matches!(api.scheme(), "http" | "https") || api.cannot_be_a_base() {
            return Err(ConfigError::invalid(
                "hubspot.api_base_url",
                "must be an http(s) URL",
            ));
        }
        if self.hubspot.rate_limit_max == 0 {
            return Err(ConfigError::invalid(
                "hubspot.rate_limit_max",
                "must be positive",
            ));
        }
        if self.hubspot.source_system_value.trim().is_empty() {
            return Err(ConfigError::invalid(
                "hubspot.source_system_value",
                "must not be empty",
            ));
        }
        self.hubspot.validate_oauth()?;
        if self.hubspot.rate_limit_window_ms < 100 {
            return Err(ConfigError::invalid(
                "hubspot.rate_limit_window_ms",
                "must be at least 100",
            ));
        }
        let redis = &self.redis;
        if url::Url::parse(redis.url.expose_secret())
            .map(|u| !matches!(u.scheme(), "redis" | "rediss" | "redis+unix" | "unix"))
            .unwrap_or(true)
        {
            return Err(ConfigError::invalid(
                "redis.url",
                "must be a redis:// or rediss:// URL",
            ));
        }
        if redis.key_prefix.is_empty() || redis.key_prefix.contains(char::is_whitespace) {
            return Err(ConfigError::invalid(
                "redis.key_prefix",
                "must be non-empty, without spaces",
            ));
        }
        if redis.idempotency_ttl_secs < MIN_IDEMPOTENCY_TTL_SECS {
            return Err(ConfigError::invalid(
                "redis.idempotency_ttl_secs",
                format!(
                    "must be at least {MIN_IDEMPOTENCY_TTL_SECS} (7 days): HubSpot redelivers for about a day"
                ),
            ));
        }
        if redis.max_push_batch == 0 || redis.max_push_batch > 5_000 {
            return Err(ConfigError::invalid(
                "redis.max_push_batch",
                "must be between 1 and 5000",
            ));
        }
        if redis.push_concurrency == 0 {
            return Err(ConfigError::invalid(
                "redis.push_concurrency",
                "must be positive",
            ));
        }
        if !(0.0..=1.0).contains(&self.telemetry.sample_ratio) {
            return Err(ConfigError::invalid(
                "telemetry.sample_ratio",
                "must be between 0.0 and 1.0",
            ));
        }
        self.worker.validate()?;
        self.api.validate()?;
        self.reconcile.validate()?;
        self.backfill.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_load_and_validate() {
        let s = Settings::from_toml("").unwrap();
        assert_eq!(s.application.port, 8080);
        assert_eq!(s.redis.idempotency_ttl_secs, MIN_IDEMPOTENCY_TTL_SECS);
        assert_eq!(s.telemetry.log_format, LogFormat::Json);
    }

    #[test]
    fn errors_name_the_key() {
        let e = Settings::from_toml("[redis]\nidempotency_ttl_secs = 60").unwrap_err();
        assert_eq!(e.key(), "redis.idempotency_ttl_secs");
        let e = Settings::from_toml("[application]\nport = \"eighty\"").unwrap_err();
        assert_eq!(e.key(), "application.port", "{e}");
        let e =
            Settings::from_toml("[application]\npublic_base_url = \"https://x.io/\"").unwrap_err();
        assert_eq!(e.key(), "application.public_base_url");
        let e = Settings::from_toml("[redis]\nnope = 1").unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
    }

    #[test]
    // The closure's error type is figment's, not ours.
    #[allow(clippy::result_large_err)]
    fn environment_overrides_use_double_underscores() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("LEADSYNC__APPLICATION__PORT", "9001");
            jail.set_env("LEADSYNC__HUBSPOT__CLIENT_SECRETS", "[\"a\",\"b\"]");
            let s = Settings::from_figment(
                &Figment::from(Toml::string(DEFAULTS)).merge(Env::prefixed(ENV_PREFIX).split("__")),
            )
            .expect("loads");
            assert_eq!(s.application.port, 9001);
            assert_eq!(s.hubspot.client_secrets.len(), 2);
            Ok(())
        });
    }

    #[test]
    fn debug_output_never_shows_secrets() {
        let s = Settings::from_toml(
            "[hubspot]\nclient_secrets = [\"hunter2\"]\ntoken_encryption_key = \"sesame\"",
        )
        .unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!format!("{s:?}").contains("sesame"));
    }

    #[test]
    fn oauth_and_setup_keys_have_defaults_and_errors_name_the_key() {
        let s = Settings::from_toml("").unwrap();
        assert!(
            s.hubspot
                .scopes
                .iter()
                .any(|x| x == "crm.objects.contacts.write")
        );
        let e = s.hubspot.require_developer_api_key().unwrap_err();
        assert_eq!(e.key(), "hubspot.developer_api_key");
        let e = s.hubspot.require_redirect_uri().unwrap_err();
        assert_eq!(e.key(), "hubspot.redirect_uri");
        let e = Settings::from_toml("[hubspot]\nredirect_uri = \"not a url\"").unwrap_err();
        assert_eq!(e.key(), "hubspot.redirect_uri");
        let e = Settings::from_toml("[hubspot]\nscopes = []").unwrap_err();
        assert_eq!(e.key(), "hubspot.scopes");
        let e = Settings::from_toml("[hubspot]\nscopes = [\"a b\"]").unwrap_err();
        assert_eq!(e.key(), "hubspot.scopes");
        let s = Settings::from_toml(
            "[hubspot]\ndeveloper_api_key = \"dev-key\"\nredirect_uri = \"https://x.io/cb\"",
        )
        .unwrap();
        assert_eq!(s.hubspot.require_redirect_uri().unwrap(), "https://x.io/cb");
        assert!(!format!("{s:?}").contains("dev-key"));
    }

    #[test]
    fn worker_defaults_are_valid_and_consistent() {
        let s = Settings::from_toml("").unwrap();
        let w = &s.worker;
        assert_eq!(w.batch_max_contacts, 100);
        assert_eq!(w.batch_window(), Duration::from_millis(250));
        assert!(w.concurrency >= w.batch_max_contacts);
        assert!(w.concurrency <= 2 * w.fetch_batch_size);
        assert_eq!((w.heartbeat_interval_secs, w.missed_heartbeats), (10, 3));
        assert_eq!(s.hubspot.api_base_url, "https://api.hubapi.com");
        assert_eq!(s.hubspot.rate_limit_max, 100);
        assert_eq!(s.hubspot.rate_limit_window(), Duration::from_secs(10));
    }

    #[test]
    fn worker_errors_name_the_key() {
        let e = Settings::from_toml("[worker]\nconcurrency = 50").unwrap_err();
        assert_eq!(e.key(), "worker.concurrency", "{e}");
        let e = Settings::from_toml("[worker]\nconcurrency = 5000").unwrap_err();
        assert_eq!(e.key(), "worker.concurrency", "{e}");
        let e = Settings::from_toml("[worker]\nbatch_max_contacts = 101").unwrap_err();
        assert_eq!(e.key(), "worker.batch_max_contacts");
        let e = Settings::from_toml("[worker]\nmissed_heartbeats = 0").unwrap_err();
        assert_eq!(e.key(), "worker.missed_heartbeats");
        let e = Settings::from_toml("[hubspot]\napi_base_url = \"ftp://x\"").unwrap_err();
        assert_eq!(e.key(), "hubspot.api_base_url");
        let e = Settings::from_toml("[hubspot]\nrate_limit_max = 0").unwrap_err();
        assert_eq!(e.key(), "hubspot.rate_limit_max");
    }

    #[test]
    fn outbound_defaults_are_valid_and_errors_name_the_key() {
        let s = Settings::from_toml("").unwrap();
        let w = &s.worker;
        assert_eq!(w.push_batch_max_leads, 100);
        assert!(w.concurrency >= w.push_batch_max_leads, "batches can fill");
        assert_eq!(w.relay_poll_interval(), Duration::from_secs(1));
        assert_eq!(s.hubspot.source_system_value, "jazzaam");
        let e = Settings::from_toml("[worker]\npush_batch_max_leads = 0").unwrap_err();
        assert_eq!(e.key(), "worker.push_batch_max_leads");
        let e = Settings::from_toml("[worker]\nrelay_batch_size = 20000").unwrap_err();
        assert_eq!(e.key(), "worker.relay_batch_size");
        let e = Settings::from_toml("[worker]\nrelay_poll_interval_ms = 1").unwrap_err();
        assert_eq!(e.key(), "worker.relay_poll_interval_ms");
        let e = Settings::from_toml("[hubspot]\nsource_system_value = \" \"").unwrap_err();
        assert_eq!(e.key(), "hubspot.source_system_value");
    }

    #[test]
    fn reconcile_defaults_are_valid_and_errors_name_the_key() {
        let s = Settings::from_toml("").unwrap();
        let r = &s.reconcile;
        assert!(r.enabled);
        assert_eq!(r.interval(), Duration::from_secs(900));
        assert_eq!(r.first_lookback(), Duration::from_secs(86_400));
        assert_eq!(r.safety_lag(), Duration::from_secs(300));
        assert_eq!(r.search_result_cap, 10_000);
        let e = Settings::from_toml("[reconcile]\ninterval_secs = 0").unwrap_err();
        assert_eq!(e.key(), "reconcile.interval_secs");
        let e = Settings::from_toml("[reconcile]\nsearch_result_cap = 10001").unwrap_err();
        assert_eq!(e.key(), "reconcile.search_result_cap");
        let e = Settings::from_toml("[reconcile]\nfirst_lookback_secs = 0").unwrap_err();
        assert_eq!(e.key(), "reconcile.first_lookback_secs");
        let e = Settings::from_toml("[reconcile]\nsafety_lag_secs = 90000").unwrap_err();
        assert_eq!(e.key(), "reconcile.safety_lag_secs");
    }

    #[test]
    fn backfill_defaults_are_valid_and_errors_name_the_key() {
        let s = Settings::from_toml("").unwrap();
        assert_eq!(s.backfill.page_size, 100);
        assert!((s.backfill.max_quota_share - 0.5).abs() < f64::EPSILON);
        let e = Settings::from_toml("[backfill]\npage_size = 101").unwrap_err();
        assert_eq!(e.key(), "backfill.page_size");
        let e = Settings::from_toml("[backfill]\nmax_quota_share = 0.0").unwrap_err();
        assert_eq!(e.key(), "backfill.max_quota_share");
    }

    #[test]
    fn api_defaults_are_valid_and_errors_name_the_key() {
        let s = Settings::from_toml("").unwrap();
        assert_eq!((s.api.host.as_str(), s.api.port), ("0.0.0.0", 8081));
        assert_eq!(s.api.body_limit_bytes, 262_144);
        let e = Settings::from_toml("[api]\nbody_limit_bytes = 10").unwrap_err();
        assert_eq!(e.key(), "api.body_limit_bytes");
        let e = Settings::from_toml("[api]\nhost = \"\"").unwrap_err();
        assert_eq!(e.key(), "api.host");
        let e = Settings::from_toml("[api]\nport = -1").unwrap_err();
        assert_eq!(e.key(), "api.port", "{e}");
    }

    #[test]
    fn the_token_key_is_checked_only_where_it_is_needed() {
        let s = Settings::from_toml("").expect("other binaries start without a key");
        let e = s.hubspot.require_token_encryption_key().unwrap_err();
        assert_eq!(e.key(), "hubspot.token_encryption_key");
        let s = Settings::from_toml("[hubspot]\ntoken_encryption_key = \"a2V5\"").unwrap();
        assert_eq!(
            s.hubspot
                .require_token_encryption_key()
                .unwrap()
                .expose_secret(),
            "a2V5"
        );
    }

    #[test]
    // The closure's error type is figment's, not ours.
    #[allow(clippy::result_large_err)]
    fn worker_settings_come_from_the_environment_too() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("LEADSYNC__WORKER__BATCH_WINDOW_MS", "60000");
            jail.set_env("LEADSYNC__WORKER__HEARTBEAT_INTERVAL_SECS", "1");
            let s = Settings::from_figment(
                &Figment::from(Toml::string(DEFAULTS)).merge(Env::prefixed(ENV_PREFIX).split("__")),
            )
            .expect("loads");
            assert_eq!(s.worker.batch_window_ms, 60_000);
            assert_eq!(s.worker.heartbeat_interval_secs, 1);
            Ok(())
        });
    }
}
