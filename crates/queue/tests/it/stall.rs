//! apalis-redis 1.0.0 stops consuming once ~8,000 tasks are due at once; the
//! queue's bounded promotion (and its push straight to the active list) keeps
//! a backlog draining. Real Redis at 127.0.0.1:6379, own key prefix.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use apalis::prelude::WorkerBuilder;
use leadsync_queue::{BulkPusher, Promoter, QueueInspector};

use crate::helpers::{count, drain, events, settings, storage};

const BACKLOG: usize = 9_000;

#[tokio::test]
async fn a_backlog_of_due_tasks_stalls_apalis_alone_and_drains_after_bounded_promotion() {
    // Arrange: 9,000 tasks pushed the apalis-redis way, all due in the scheduled set.
    let settings = settings("stall");
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
    let settings = settings("active");
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
