//! A finished event stays deduplicated for the idempotency TTL without its
//! payload, then is forgotten.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use leadsync_queue::{BulkPusher, Janitor, QueueInspector, Sweep};
use redis::AsyncCommands as _;

use crate::helpers::{drain_until, events, settings};

const N: usize = 50;

#[tokio::test]
async fn a_finished_event_is_refused_for_the_ttl_without_its_payload_then_forgotten() {
    // Arrange: N events queued, a redelivery refused while they wait.
    let settings = settings("retire");
    let batch = events(1, N);
    let pusher = BulkPusher::new(&settings.redis).unwrap();
    assert_eq!(pusher.push(&batch).await.unwrap().new, N as u64);
    assert_eq!(pusher.push(&batch).await.unwrap().new, 0);
    let mut queue = QueueInspector::connect(&settings.redis).await.unwrap();

    // Act 1: an apalis worker runs and acknowledges every job, then the janitor sweeps.
    let processed = Arc::new(AtomicUsize::new(0));
    let done = || {
        let settings = settings.clone();
        async move {
            let mut queue = QueueInspector::connect(&settings.redis).await.unwrap();
            queue.done().await.unwrap() == N as u64
        }
    };
    drain_until(&settings, "retire", &processed, done).await;
    assert_eq!(processed.load(Ordering::Relaxed), N);
    let janitor = Janitor::connect(&settings.redis).await.unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let first = janitor.sweep_at(now).await.unwrap();

    // Assert 1: payloads and metadata are gone, the ids are remembered and a
    // redelivery is still refused.
    assert_eq!(
        first,
        Sweep {
            retired: N as u64,
            forgotten: 0
        }
    );
    assert_eq!(queue.done().await.unwrap(), 0);
    assert_eq!(queue.stored().await.unwrap(), N as u64);
    assert!(queue.get(&batch[0].key).await.unwrap().is_none());
    let mut redis = leadsync_queue::redis_client(&settings.redis)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let meta = format!(
        "{}:hubspot:events:meta:{}",
        settings.redis.key_prefix,
        batch[0].key.as_str()
    );
    assert!(
        !redis.exists::<_, bool>(&meta).await.unwrap(),
        "metadata left behind"
    );
    assert_eq!(pusher.push(&batch).await.unwrap().new, 0);
    assert_eq!(queue.waiting().await.unwrap(), 0);

    // Act 2: a sweep one second before the TTL ends, then one at its end.
    let ttl = settings.redis.idempotency_ttl_secs;
    let early = janitor.sweep_at(now + ttl - 1).await.unwrap();
    let late = janitor.sweep_at(now + ttl).await.unwrap();

    // Assert 2: only the second forgets them, and the events can be queued again.
    assert_eq!(early, Sweep::default());
    assert_eq!(
        late,
        Sweep {
            retired: 0,
            forgotten: N as u64
        }
    );
    assert_eq!(queue.stored().await.unwrap(), 0);
    assert_eq!(pusher.push(&batch).await.unwrap().new, N as u64);
    queue.purge().await.unwrap();
}
