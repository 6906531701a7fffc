//! The outbox relay against real Postgres and Redis: each outbox row becomes
//! one job of the outbound queue, once, however often it is relayed.

use std::time::{Duration, Instant};

use leadsync_runtime::Settings;
use leadsync_worker::{Relay, RelayConfig, RelayReport, WorkerMetrics};
use redis::AsyncCommands as _;
use tokio_util::sync::CancellationToken;

use crate::helpers::TestEnv;

fn relay(env: &TestEnv, settings: &Settings, config: RelayConfig) -> Relay {
    Relay::new(
        env.db.store.clone(),
        &settings.redis,
        config,
        WorkerMetrics::new().expect("metrics"),
    )
    .expect("relay")
}

async fn insert_leads(env: &TestEnv, n: i32) {
    sqlx::query(
        "INSERT INTO leads (integration_id, email) \
         SELECT $1, 'relay' || n || '@example.com' FROM generate_series(1, $2) AS n",
    )
    .bind(env.integration.id)
    .bind(n)
    .execute(env.db.store.pool())
    .await
    .expect("insert");
}

/// The task ids waiting in the outbound queue's active list.
async fn queued(settings: &Settings) -> Vec<String> {
    let mut conn = leadsync_queue::redis_client(&settings.redis)
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("Redis runs at 127.0.0.1:6379");
    let config = leadsync_queue::outbound_config(&settings.redis);
    conn.lrange(config.active_jobs_list(), 0, -1)
        .await
        .expect("Redis")
}

async fn change_ids(env: &TestEnv) -> Vec<i64> {
    sqlx::query_scalar("SELECT id FROM lead_changes ORDER BY id")
        .fetch_all(env.db.store.pool())
        .await
        .expect("outbox")
}

async fn pending(env: &TestEnv) -> i64 {
    leadsync_store::outbox::backlog(env.db.store.pool())
        .await
        .expect("backlog")
        .0
}

#[tokio::test]
async fn each_outbox_row_is_queued_once_under_its_row_id() {
    // Arrange
    let env = TestEnv::new().await;
    let settings = env.settings("");
    let relay = relay(
        &env,
        &settings,
        RelayConfig {
            batch_size: 2,
            poll_interval: Duration::from_secs(1),
        },
    );
    insert_leads(&env, 3).await;

    // Act
    let first = relay.drain().await.expect("relayed");
    // A relay that died after its push but before its commit: the rows
    // come back and are pushed again.
    sqlx::query("UPDATE lead_changes SET relayed_at = NULL")
        .execute(env.db.store.pool())
        .await
        .expect("reset");
    let again = relay.drain().await.expect("relayed again");

    // Assert
    assert_eq!(
        first,
        RelayReport {
            claimed: 3,
            queued: 3,
            duplicates: 0
        }
    );
    assert_eq!(
        again,
        RelayReport {
            claimed: 3,
            queued: 0,
            duplicates: 3
        }
    );
    let expected: Vec<String> = change_ids(&env)
        .await
        .into_iter()
        .map(|id| format!("lead-change:{id}"))
        .collect();
    assert_eq!(queued(&settings).await, expected);
    assert_eq!(pending(&env).await, 0);
    env.finish().await;
}

#[tokio::test]
async fn two_relays_share_a_backlog_without_queueing_a_row_twice() {
    // Arrange
    let env = TestEnv::new().await;
    let settings = env.settings("");
    let config = RelayConfig {
        batch_size: 50,
        poll_interval: Duration::from_secs(1),
    };
    let (a, b) = (
        relay(&env, &settings, config),
        relay(&env, &settings, config),
    );
    insert_leads(&env, 500).await;

    // Act
    let (ra, rb) = tokio::join!(a.drain(), b.drain());

    // Assert
    let (ra, rb) = (ra.expect("relay a"), rb.expect("relay b"));
    assert_eq!(ra.claimed + rb.claimed, 500);
    assert_eq!(ra.queued + rb.queued, 500);
    assert_eq!(ra.duplicates + rb.duplicates, 0);
    let mut ids = queued(&settings).await;
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 500);
    assert_eq!(pending(&env).await, 0);
    env.finish().await;
}

#[tokio::test]
async fn the_relay_wakes_on_the_triggers_notification() {
    // Arrange: polling alone would take a minute.
    let env = TestEnv::new().await;
    let settings = env.settings("");
    let relay = relay(
        &env,
        &settings,
        RelayConfig {
            batch_size: 100,
            poll_interval: Duration::from_secs(60),
        },
    );
    let stop = CancellationToken::new();
    let running = tokio::spawn(relay.run(stop.clone()));
    // Its first round (listener open, nothing pending) has run.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Act
    let started = Instant::now();
    insert_leads(&env, 1).await;
    while queued(&settings).await.is_empty() && started.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Assert
    let waited = started.elapsed();
    assert_eq!(queued(&settings).await.len(), 1);
    assert!(waited < Duration::from_secs(5), "woken after {waited:?}");
    stop.cancel();
    running.await.expect("the relay stops");
    env.finish().await;
}
