//! Fixtures: a simulator on port 0, Redis connections, clients with fast retries.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use leadsync_domain::PortalId;
use leadsync_hubspot::{
    Client, ClientConfig, LimiterConfig, OAuthApp, PortalQuota, RateLimiter, RetryPolicy,
    TokenSource,
};
use leadsync_hubspot_sim::{PortalConfig, RateLimitConfig, SimConfig, SimHandle, spawn};
use redis::aio::ConnectionManager;

pub const PORTAL: u64 = 62515;
pub const TOKEN: &str = "pat-na1-client-tests";

pub fn portal() -> PortalId {
    PortalId::new(PORTAL)
}

/// One portal with a private-app token; rate limits off unless a test turns them on.
pub fn sim_config() -> SimConfig {
    SimConfig {
        seed: 11,
        workers: 2,
        portals: vec![PortalConfig::new(PORTAL).with_private_app_token(TOKEN)],
        rate_limit: RateLimitConfig::disabled(),
        ..SimConfig::default()
    }
}

pub async fn sim() -> SimHandle {
    sim_with(sim_config()).await
}

pub async fn sim_with(config: SimConfig) -> SimHandle {
    spawn(config).await.expect("simulator starts")
}

/// A key prefix no other test (or run) shares; every key it gets has a TTL.
pub fn prefix() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!(
        "leadsync-test:{}:{nanos}:{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub async fn redis() -> ConnectionManager {
    redis::Client::open("redis://127.0.0.1:6379/")
        .expect("valid Redis URL")
        .get_connection_manager()
        .await
        .expect("Redis runs at 127.0.0.1:6379")
}

/// Client settings for tests: the simulator's URL, short timeouts, fast retries.
pub fn config(base_url: &str) -> ClientConfig {
    let mut config = ClientConfig::new(base_url.parse().expect("valid URL"));
    config.timeout = Duration::from_secs(10);
    config.retry = RetryPolicy {
        min_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(100),
        max_tries: 5,
    };
    config.oauth_app = Some(OAuthApp {
        client_id: "sim-client-id".to_owned(),
        client_secret: "sim-client-secret".into(),
    });
    config
}

/// A client with the private-app token of [`PORTAL`] and no limiter.
pub fn client(sim: &SimHandle) -> Client {
    let client = Client::builder(config(&sim.base_url()))
        .build()
        .expect("client builds");
    client.set_token_source(portal(), TokenSource::PrivateApp(TOKEN.into()));
    client
}

/// A limiter ("one replica") on its own Redis connection.
pub async fn limiter(prefix: &str, quota: PortalQuota) -> RateLimiter {
    RateLimiter::new(
        redis().await,
        LimiterConfig {
            key_prefix: prefix.to_owned(),
            default_quota: quota,
            ..LimiterConfig::default()
        },
    )
}
