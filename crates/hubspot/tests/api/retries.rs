//! Retries: transient failures (a narrow raw-TCP stub, since the simulator
//! serves no 5xx) and a 429 that pauses the portal for the whole fleet.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use leadsync_domain::ContactId;
use leadsync_hubspot::{Client, HubSpotError, PermitKind, PortalQuota, TokenSource};
use leadsync_hubspot_sim::RateLimitConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::helpers::{config, limiter, portal, prefix, sim_config, sim_with};

const BATCH_OK: &str = r#"{"status":"COMPLETE","results":[{"id":"101","properties":{"email":"a@example.com"},"createdAt":"2025-01-01T00:00:00.000Z","updatedAt":"2025-01-01T00:00:00.000Z","archived":false}],"startedAt":"2025-01-01T00:00:00.000Z","completedAt":"2025-01-01T00:00:00.000Z"}"#;

/// Answers the n-th request with `answers[n]` (the last one repeats) and counts requests.
async fn stub(answers: Vec<(u16, &'static str)>) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let (status, body) = answers[n.min(answers.len() - 1)];
            tokio::spawn(async move {
                read_request(&mut socket).await;
                let response = format!(
                    "HTTP/1.1 {status} Stub\r\ncontent-type: application/json;charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    (url, seen)
}

async fn read_request(socket: &mut tokio::net::TcpStream) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let Ok(n) = socket.read(&mut chunk).await else {
            return;
        };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if buf.len() >= end + 4 + length {
            return;
        }
    }
}

fn stub_client(url: &str) -> Client {
    let client = Client::builder(config(url)).build().expect("client builds");
    client.set_token_source(portal(), TokenSource::PrivateApp("pat-stub".into()));
    client
}

#[tokio::test]
async fn a_transient_503_is_retried_until_it_succeeds() {
    // Arrange
    let (url, seen) = stub(vec![(503, ""), (503, ""), (200, BATCH_OK)]).await;
    let client = stub_client(&url);

    // Act
    let read = client
        .batch_read(portal(), &[ContactId::new(101)], &["email"], &[])
        .await;

    // Assert
    let read = read.expect("third attempt succeeds");
    assert_eq!(read.contacts[0].id, ContactId::new(101));
    assert_eq!(seen.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn retries_stop_after_five_tries_and_permanent_errors_are_not_retried() {
    // Arrange
    let (down_url, down_seen) = stub(vec![(502, "")]).await;
    let (bad_url, bad_seen) = stub(vec![(
        400,
        r#"{"status":"error","message":"Property values were not valid","category":"VALIDATION_ERROR"}"#,
    )])
    .await;

    // Act
    let down = stub_client(&down_url)
        .batch_read(portal(), &[ContactId::new(1)], &[], &[])
        .await;
    let bad = stub_client(&bad_url)
        .batch_read(portal(), &[ContactId::new(1)], &[], &[])
        .await;

    // Assert
    assert!(
        matches!(
            down,
            Err(HubSpotError::Transient {
                status: Some(502),
                ..
            })
        ),
        "{down:?}"
    );
    assert_eq!(down_seen.load(Ordering::SeqCst), 5);
    assert!(
        matches!(bad, Err(HubSpotError::Validation { .. })),
        "{bad:?}"
    );
    assert_eq!(bad_seen.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_429_pauses_the_portal_for_every_replica_for_one_window() {
    // Arrange: HubSpot allows 3 per second, and another app on the same account
    // has just spent them, unseen by our limiters.
    let mut sim_cfg = sim_config();
    sim_cfg.rate_limit = RateLimitConfig {
        enabled: true,
        window_max: 3,
        window_ms: 1_000,
        daily_max: 1_000_000,
        search_per_second: 5,
    };
    let sim = sim_with(sim_cfg).await;
    let outsider = crate::helpers::client(&sim);
    for _ in 0..3 {
        outsider
            .list_contacts(portal(), None, 1, &[])
            .await
            .expect("within HubSpot's limit");
    }
    let prefix = prefix();
    let quota = PortalQuota::new(3, Duration::from_secs(1));
    let replica_a = limiter(&prefix, quota).await;
    let replica_b = limiter(&prefix, quota).await;
    let client = Client::builder(config(&sim.base_url()))
        .limiter(replica_a)
        .build()
        .expect("client builds");
    client.set_token_source(
        portal(),
        TokenSource::PrivateApp(crate::helpers::TOKEN.into()),
    );

    // Act
    let started = Instant::now();
    let call = tokio::spawn(async move { client.list_contacts(portal(), None, 1, &[]).await });
    let mut paused_for = None;
    while paused_for.is_none() && started.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(5)).await;
        paused_for = replica_b
            .paused_for(portal(), PermitKind::Api)
            .await
            .expect("Redis answers");
    }
    let result = call.await.expect("task runs");

    // Assert
    let paused_for = paused_for.expect("the other replica sees the pause");
    assert!(paused_for > Duration::from_millis(500), "{paused_for:?}");
    result.expect("the call succeeds after one window");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited a whole window"
    );
    assert_eq!(sim.control().stats().rate_limited, 1);
}
