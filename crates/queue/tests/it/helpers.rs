//! Events, storage and an apalis worker shared by the queue's tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use apalis::prelude::{BoxDynError, Data, WorkerBuilder};
use apalis_redis::RedisStorage;
use leadsync_domain::WebhookBatch;
use leadsync_queue::{InboundEvent, inbound_config};
use leadsync_runtime::Settings;

/// Settings with a key prefix of their own (`test-{name}-{pid}`).
pub fn settings(name: &str) -> Settings {
    let prefix = format!("test-{name}-{}", std::process::id());
    Settings::from_toml(&format!("[redis]\nkey_prefix = \"{prefix}\"")).unwrap()
}

/// `n` contact creations with ids `first..first + n`.
pub fn events(first: u64, n: usize) -> Vec<InboundEvent> {
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

/// apalis-redis's storage of the inbound queue.
pub async fn storage(settings: &Settings) -> RedisStorage<InboundEvent> {
    let conn = leadsync_queue::redis_client(&settings.redis)
        .unwrap()
        .get_connection_manager()
        .await
        .unwrap();
    RedisStorage::new(conn).with_config(inbound_config(&settings.redis))
}

/// A job handler that counts the jobs it ran.
pub async fn count(
    _event: InboundEvent,
    processed: Data<Arc<AtomicUsize>>,
) -> Result<(), BoxDynError> {
    processed.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Runs an apalis worker on the queue until `done` says so (or two minutes
/// pass), then stops it.
pub async fn drain_until<F, Fut>(
    settings: &Settings,
    name: &str,
    processed: &Arc<AtomicUsize>,
    done: F,
) where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let worker = WorkerBuilder::new(format!("{name}-{}", std::process::id()))
        .backend(storage(settings).await)
        .data(Arc::clone(processed))
        .build(count);
    let running = tokio::spawn(worker.run());
    let started = Instant::now();
    while !done().await && started.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    running.abort();
}

/// Runs an apalis worker on the queue until `processed` reaches `expected`
/// (or two minutes pass), then stops it.
pub async fn drain(settings: &Settings, name: &str, processed: &Arc<AtomicUsize>, expected: usize) {
    drain_until(settings, name, processed, || async {
        processed.load(Ordering::Relaxed) >= expected
    })
    .await;
}
