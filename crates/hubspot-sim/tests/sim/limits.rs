//! Per-portal rate limits: the rolling window, the daily quota, the headers,
//! HubSpot's 429 body, and the observed-load statistic.

use std::time::Duration;

use leadsync_hubspot_sim::RateLimitConfig;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;

use crate::helpers::{PORTAL, config, start_with};

fn limits(window_max: u32, window_ms: u64, daily_max: u64) -> RateLimitConfig {
    RateLimitConfig {
        enabled: true,
        window_max,
        window_ms,
        daily_max,
        search_per_second: 5,
    }
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

#[tokio::test]
async fn the_window_serves_exactly_its_quota_then_429s_with_hubspots_body_and_headers() {
    // Arrange
    let mut cfg = config();
    cfg.rate_limit = limits(10, 1_500, 1_000);
    let t = start_with(cfg).await;

    // Act
    let mut remaining = Vec::new();
    for _ in 0..10 {
        let (status, headers, _) = t.get("/crm/v3/objects/contacts").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            header(&headers, "x-hubspot-ratelimit-max").as_deref(),
            Some("10")
        );
        assert_eq!(
            header(&headers, "x-hubspot-ratelimit-interval-milliseconds").as_deref(),
            Some("1500")
        );
        assert_eq!(
            header(&headers, "x-hubspot-ratelimit-daily").as_deref(),
            Some("1000"),
            "private-app tokens see the daily quota"
        );
        remaining.push(header(&headers, "x-hubspot-ratelimit-remaining").expect("remaining"));
    }
    let (limited, limited_headers, body) = t.get("/crm/v3/objects/contacts").await;
    let (still, _, _) = t.get("/crm/v3/objects/contacts/1").await;
    tokio::time::sleep(Duration::from_millis(1_550)).await;
    let (recovered, _, _) = t.get("/crm/v3/objects/contacts").await;

    // Assert
    assert_eq!(
        remaining,
        ["9", "8", "7", "6", "5", "4", "3", "2", "1", "0"]
    );
    assert_eq!(limited, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["status"], "error");
    assert_eq!(
        body["message"],
        "You have reached your ten_secondly_rolling limit."
    );
    assert_eq!(body["errorType"], "RATE_LIMIT");
    assert_eq!(body["policyName"], "TEN_SECONDLY_ROLLING");
    assert!(body["correlationId"].is_string() && body["requestId"].is_string());
    assert_eq!(
        header(&limited_headers, "x-hubspot-ratelimit-remaining").as_deref(),
        Some("0")
    );
    assert_eq!(still, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(recovered, StatusCode::OK, "refused calls consume nothing");
    let stats = t.sim.control().stats();
    assert_eq!(stats.rate_limited, 2);
    let portal = &stats.portals[&PORTAL];
    assert_eq!(
        (portal.api_calls, portal.rate_limited, portal.daily_used),
        (13, 2, 11)
    );
    assert_eq!(
        portal.max_calls_in_10s, 13,
        "what the client sent, refused calls included"
    );
}

#[tokio::test]
async fn the_daily_quota_and_oauth_tokens_without_daily_headers() {
    // Arrange
    let mut cfg = config();
    cfg.rate_limit = limits(100, 10_000, 3);
    let t = start_with(cfg).await;
    let oauth = t.oauth_token(PORTAL).await;
    let oauth_token = oauth["access_token"].as_str().expect("token");

    // Act
    let (_, oauth_headers, _) = t
        .with_token(oauth_token)
        .get("/crm/v3/objects/contacts")
        .await;
    let (_, _, _) = t.get("/crm/v3/objects/contacts").await;
    let (_, private_headers, _) = t.get("/crm/v3/objects/contacts").await;
    let (status, _, body) = t.get("/crm/v3/objects/contacts").await;

    // Assert
    assert!(header(&oauth_headers, "x-hubspot-ratelimit-max").is_some());
    assert!(
        header(&oauth_headers, "x-hubspot-ratelimit-daily").is_none(),
        "not sent for OAuth"
    );
    assert_eq!(
        header(&private_headers, "x-hubspot-ratelimit-daily-remaining").as_deref(),
        Some("0")
    );
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["policyName"], "DAILY");
    assert_eq!(body["message"], "You have reached your daily limit.");
}

#[tokio::test]
async fn limits_can_be_switched_off_and_changed_per_portal_at_run_time() {
    // Arrange
    let mut cfg = config();
    cfg.rate_limit = limits(2, 60_000, 1_000);
    let t = start_with(cfg).await;

    // Act
    t.sim
        .control()
        .set_rate_limit(Some(PORTAL), RateLimitConfig::disabled())
        .expect("portal exists");
    let mut statuses = Vec::new();
    let mut last_headers = HeaderMap::new();
    for _ in 0..5 {
        let (status, headers, _) = t.get("/crm/v3/objects/contacts").await;
        statuses.push(status);
        last_headers = headers;
    }
    t.sim
        .control()
        .set_rate_limit(Some(PORTAL), limits(1, 60_000, 1_000))
        .expect("portal exists");
    let (first, _, _) = t.get("/crm/v3/objects/contacts").await;
    let (second, _, _) = t.get("/crm/v3/objects/contacts").await;

    // Assert
    assert!(statuses.iter().all(|s| *s == StatusCode::OK));
    assert!(
        header(&last_headers, "x-hubspot-ratelimit-max").is_none(),
        "no headers when off"
    );
    assert_eq!(
        (first, second),
        (StatusCode::OK, StatusCode::TOO_MANY_REQUESTS)
    );
    assert!(
        t.sim
            .control()
            .set_rate_limit(Some(1), RateLimitConfig::disabled())
            .is_err()
    );
}
