//! apalis-redis 1.0.0 stops consuming once ~8,000 tasks are due at once; the
//! queue's bounded promotion (and its push straight to the active list) keeps
//! a backlog draining. Real Redis at 127.0.0.1:6379, own key prefix.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use apalis::prelude::{BoxDynError, Data, WorkerBuilder};
use apalis_redis::RedisStorage;
use leadsync_domain::WebhookBatch;
use leadsync_queue::{BulkPusher, InboundEvent, Promoter, QueueInspector, inbound_config};
use leadsync_runtime::Settings;

const BACKLOG: usize = 9_000;

fn settings() -> Settings {
    let prefix = format!("test-stall-{}", std::process::id());
    Settings::from_toml(&format!("[redis]\nkey_prefix = \"{prefix}\"")).unwrap()
}

fn events(first: u64, n: usize) -> Vec<InboundEvent> {
    let body: Vec<String> = (0..n as u64)
        .map(|i| {
            let id = first + i;
            format!(r#"{{"eventId":{id},"subscriptionId":1,"portalId":7,"objectId":{id},"occurredAt":1,"subscriptionType":"contact.creation"}}"#)
        })
        .collect();
    WebhookBatch::parse(format!("[{}]", body.join(",")).as_bytes())
        .unwrap()
        .into_events()
        .into_iter()
        .map(|e| InboundEvent::new(e, 0, Default::default(), None))
        .collect()
}

async fn storage(settings: &Settings) -> RedisStorage<InboundEvent> {
    let conn = leadsync_queue::redis_client(&settings.redis)
        .unwrap()
        .get_connection_manager()
        .await
        .unwrap();
    RedisStorage::new(conn).with_config(inbound_config(&settings.redis))
}

async fn count(_event: InboundEvent, processed: Data<Arc<AtomicUsize>>) -> Result<(), BoxDynError> {
    processed.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Runs an apalis worker on the queue until `processed` reaches `expected`
/// (or two minutes pass), then stops it.
async fn drain(settings: &Settings, name: &str, processed: &Arc<AtomicUsize>, expected: usize) {
    let worker = WorkerBuilder::new(format!("{name}-{}", std::process::id()))
        .backend(storage(settings).await)
        .data(Arc::clone(processed))
        .build(count);
    let running = tokio::spawn(worker.run());
    let started = Instant::now();
    while processed.load(Ordering::Relaxed) < expected
        && started.elapsed() < Duration::from_secs(120)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    running.abort();
}

#[tokio::test]
async fn a_backlog_of_due_tasks_stalls_apalis_alone_and_drains_after_bounded_promotion() {
    // Arrange: 9,000 tasks pushed the apalis-redis way, all due in the scheduled set.
    let settings = settings();
    let pusher = BulkPusher::new(&settings.redis).unwrap();
    for chunk in events(1, BACKLOG).chunks(500) {
        pusher.push_with_apalis_script(chunk).await.unwrap();
    }
    let mut queue = QueueInspector::connect(&settings.redis).await.unwrap();
    assert_eq!(queue.waiting().await.unwrap(), BACKLOG as u64);

    // Act 1: an apalis worker on its own.
    let processed = Arc::new(AtomicUsize::new(0));
    let stalled = WorkerBuilder::new(format!("stall-{}", std::process::id()))
        .backend(storage(&settings).await)
        .data(Arc::clone(&processed))
        .build(count);
    let outcome = tokio::time::timeout(Duration::from_secs(10), stalled.run()).await;

    // Assert 1: the worker stream fails on the first fetch and nothing is consumed.
    let error = match outcome {
        Ok(Err(e)) => e.to_string(),
        Ok(Ok(())) => panic!("the worker stopped without an error"),
        Err(_) => panic!("the worker kept running: the stall did not reproduce"),
    };
    assert!(error.contains("unpack"), "unexpected error: {error}");
    assert_eq!(processed.load(Ordering::Relaxed), 0);

    // Act 2: bounded promotion, then a fresh worker.
    let promoted = Promoter::connect(&settings.redis)
        .await
        .unwrap()
        .promote_due()
        .await
        .unwrap();
    drain(&settings, "drain", &processed, BACKLOG).await;

    // Assert 2: every task ran exactly once.
    assert_eq!(promoted, BACKLOG as u64);
    assert_eq!(
        processed.load(Ordering::Relaxed),
        BACKLOG,
        "not all tasks were consumed"
    );
    queue.purge().await.unwrap();
}

#[tokio::test]
async fn events_pushed_by_the_queue_never_wait_in_the_scheduled_set() {
    // Arrange
    let settings = Settings::from_toml(&format!(
        "[redis]\nkey_prefix = \"test-active-{}\"",
        std::process::id()
    ))
    .unwrap();
    let pusher = BulkPusher::new(&settings.redis).unwrap();

    // Act: the ingester's push, well past apalis-redis's unpack limit.
    for chunk in events(1, BACKLOG).chunks(500) {
        pusher.push(chunk).await.unwrap();
    }
    let processed = Arc::new(AtomicUsize::new(0));
    drain(&settings, "active", &processed, BACKLOG).await;

    // Assert: apalis consumed all of them without any promotion of ours.
    assert_eq!(processed.load(Ordering::Relaxed), BACKLOG);
    QueueInspector::connect(&settings.redis)
        .await
        .unwrap()
        .purge()
        .await
        .unwrap();
}
