//! The fleet-wide limiter: the Redis script alone, then four "replicas" against
//! the simulator's own rolling-window limit.

use std::time::Duration;

use futures::future::join_all;
use leadsync_hubspot::{Client, PermitKind, PortalQuota, Priority, RateLimiter, TokenSource};
use leadsync_hubspot_sim::{RateLimitConfig, SimHandle};

use crate::helpers::{PORTAL, TOKEN, config, limiter, portal, prefix, sim_config, sim_with};

fn exact(max: u32, window: Duration) -> PortalQuota {
    PortalQuota {
        safety_margin: Duration::ZERO,
        ..PortalQuota::new(max, window)
    }
}

async fn grants(limiter: &RateLimiter, tries: usize, priority: Priority) -> usize {
    let mut granted = 0;
    for _ in 0..tries {
        let wait = limiter
            .try_acquire(portal(), PermitKind::Api, priority)
            .await
            .expect("Redis answers");
        granted += usize::from(wait.is_none());
    }
    granted
}

#[tokio::test]
async fn the_script_admits_exactly_the_quota_per_window_across_instances() {
    // Arrange
    let prefix = prefix();
    let quota = exact(20, Duration::from_secs(1));
    let a = limiter(&prefix, quota).await;
    let b = limiter(&prefix, quota).await;

    // Act
    let (from_a, from_b) = tokio::join!(
        grants(&a, 15, Priority::Live),
        grants(&b, 15, Priority::Live)
    );
    let wait = a
        .try_acquire(portal(), PermitKind::Api, Priority::Live)
        .await
        .expect("Redis answers")
        .expect("the window is full");
    tokio::time::sleep(wait + Duration::from_millis(5)).await;
    let after_wait = grants(&b, 1, Priority::Live).await;

    // Assert
    assert_eq!(from_a + from_b, 20);
    assert!(wait <= Duration::from_secs(1), "{wait:?}");
    assert_eq!(after_wait, 1, "the oldest permit left the window");
}

#[tokio::test]
async fn background_traffic_leaves_headroom_for_live_traffic() {
    // Arrange
    let prefix = prefix();
    let limiter = limiter(&prefix, exact(10, Duration::from_secs(5))).await;

    // Act
    let background = grants(&limiter, 10, Priority::Background).await;
    let live = grants(&limiter, 10, Priority::Live).await;

    // Assert
    assert_eq!(background, 8, "80 % of the quota");
    assert_eq!(live, 2, "the rest is live traffic's");
}

#[tokio::test]
async fn search_has_its_own_budget() {
    // Arrange
    let prefix = prefix();
    let limiter = limiter(&prefix, exact(1, Duration::from_secs(5))).await;
    let api = grants(&limiter, 3, Priority::Live).await;

    // Act
    let mut searches = 0;
    for _ in 0..8 {
        let wait = limiter
            .try_acquire(portal(), PermitKind::Search, Priority::Live)
            .await
            .expect("Redis answers");
        searches += usize::from(wait.is_none());
    }

    // Assert
    assert_eq!(api, 1);
    assert_eq!(searches, 5, "5 per second, whatever the burst window says");
}

/// `replicas` independent clients, each with its own limiter, all calling at once.
async fn run_replicas(
    sim: &SimHandle,
    quota: PortalQuota,
    replicas: usize,
    tasks_per_replica: usize,
    calls_per_task: usize,
) -> usize {
    let prefix = prefix();
    let mut clients = Vec::new();
    for _ in 0..replicas {
        let client = Client::builder(config(&sim.base_url()))
            .limiter(limiter(&prefix, quota).await)
            .build()
            .expect("client builds");
        client.set_token_source(portal(), TokenSource::PrivateApp(TOKEN.into()));
        clients.push(client);
    }
    let tasks = clients.iter().flat_map(|client| {
        (0..tasks_per_replica).map(move |_| {
            let client = client.clone();
            tokio::spawn(async move {
                let mut ok = 0;
                for _ in 0..calls_per_task {
                    client
                        .list_contacts(portal(), None, 1, &[])
                        .await
                        .expect("call succeeds");
                    ok += 1;
                }
                ok
            })
        })
    });
    join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.expect("task runs"))
        .sum()
}

#[tokio::test]
async fn four_replicas_never_trigger_the_simulators_limit() {
    // Arrange: a small, fast quota on both sides.
    let mut cfg = sim_config();
    cfg.rate_limit = RateLimitConfig {
        enabled: true,
        window_max: 20,
        window_ms: 1_000,
        daily_max: 1_000_000,
        search_per_second: 5,
    };
    let sim = sim_with(cfg).await;
    let quota = PortalQuota {
        safety_margin: Duration::from_millis(100),
        ..PortalQuota::new(20, Duration::from_secs(1))
    };

    // Act
    let done = run_replicas(&sim, quota, 4, 4, 4).await;

    // Assert
    let stats = sim.control().stats();
    assert_eq!(done, 64);
    assert_eq!(stats.rate_limited, 0, "no 429 across four replicas");
    assert_eq!(stats.portals[&PORTAL].api_calls, 64);
}

#[tokio::test]
async fn four_replicas_stay_within_100_calls_in_any_10_seconds() {
    // Arrange: HubSpot's real budget; 130 calls need a second window.
    let mut cfg = sim_config();
    cfg.rate_limit = RateLimitConfig::default();
    let sim = sim_with(cfg).await;

    // Act
    let done = run_replicas(&sim, PortalQuota::default(), 4, 5, 7).await;

    // Assert
    let stats = sim.control().stats();
    assert_eq!(done, 140);
    assert_eq!(stats.rate_limited, 0);
    let max = stats.portals[&PORTAL].max_calls_in_10s;
    assert!(max <= 100, "max calls in a rolling 10 s: {max}");
    assert_eq!(max, 100, "the budget is used, not wasted");
}

#[tokio::test]
async fn a_stricter_limit_announced_by_hubspot_is_adopted() {
    // Arrange: configured for 50 per second, HubSpot says 3.
    let mut cfg = sim_config();
    cfg.rate_limit = RateLimitConfig {
        enabled: true,
        window_max: 3,
        window_ms: 1_000,
        daily_max: 1_000_000,
        search_per_second: 5,
    };
    let sim = sim_with(cfg).await;
    let limiter = limiter(&prefix(), PortalQuota::new(50, Duration::from_secs(1))).await;
    let client = Client::builder(config(&sim.base_url()))
        .limiter(limiter.clone())
        .build()
        .expect("client builds");
    client.set_token_source(portal(), TokenSource::PrivateApp(TOKEN.into()));

    // Act
    for _ in 0..5 {
        client
            .list_contacts(portal(), None, 1, &[])
            .await
            .expect("call succeeds");
    }

    // Assert
    assert_eq!(limiter.quota(portal()).max, 3);
    assert_eq!(sim.control().stats().rate_limited, 0);
}

#[tokio::test]
async fn permits_calls_and_waits_are_counted_in_the_given_registry() {
    // Arrange
    let sim = sim_with(sim_config()).await;
    let registry = prometheus::Registry::new();
    let metrics = leadsync_hubspot::HubSpotMetrics::register(&registry).expect("registers");
    let limiter = limiter(&prefix(), PortalQuota::default())
        .await
        .with_metrics(metrics.clone());
    let client = Client::builder(config(&sim.base_url()))
        .limiter(limiter)
        .metrics(metrics)
        .build()
        .expect("client builds");
    client.set_token_source(portal(), TokenSource::PrivateApp(TOKEN.into()));

    // Act
    for _ in 0..3 {
        client
            .list_contacts(portal(), None, 1, &[])
            .await
            .expect("call succeeds");
    }
    let background = client.with_priority(Priority::Background);
    let missing = background
        .get_contact(portal(), leadsync_domain::ContactId::new(1), &[], &[])
        .await;

    // Assert
    assert!(missing.is_err());
    let families = registry.gather();
    let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
        families
            .iter()
            .filter(|f| f.name() == name)
            .flat_map(|f| f.get_metric())
            .filter(|m| {
                labels.iter().all(|(k, v)| {
                    m.get_label()
                        .iter()
                        .any(|l| l.name() == *k && l.value() == *v)
                })
            })
            .map(|m| {
                if name.ends_with("_seconds") {
                    m.get_histogram().get_sample_count() as f64
                } else {
                    m.get_counter().get_value()
                }
            })
            .sum()
    };
    let permits = "leadsync_hubspot_limiter_permits_total";
    assert_eq!(value(permits, &[("priority", "live")]), 3.0);
    assert_eq!(value(permits, &[("priority", "background")]), 1.0);
    assert_eq!(
        value("leadsync_hubspot_calls_total", &[("outcome", "ok")]),
        3.0
    );
    assert_eq!(
        value("leadsync_hubspot_calls_total", &[("outcome", "not_found")]),
        1.0
    );
    assert_eq!(value("leadsync_hubspot_limiter_wait_seconds", &[]), 4.0);
}
