//! The worker application against real Redis, Postgres and the simulator:
//! queue → batches → leads, acknowledgement after commit, retries, graceful
//! stop, the last attempt.

use std::time::{Duration, Instant};

use leadsync_store::dead_letters::{self, DeadLetterFilter};
use leadsync_store::leads::CrmSyncStatus;

use crate::helpers::{BATCH_READ, FailingProxy, RunningWorker, TestEnv, metric};

#[tokio::test]
async fn queued_events_become_leads_and_their_tasks_end_done() {
    // Arrange: 12 contacts, a creation and a change each, queued as the ingester does.
    let env = TestEnv::new().await;
    let contacts = env.create_contacts(12);
    let mut events: Vec<_> = contacts.iter().map(|c| env.creation(*c)).collect();
    events.extend(contacts.iter().map(|c| env.change(*c, "firstname", "Test")));
    env.push(&events).await;
    let mut queue = env.queue().await;
    assert_eq!(queue.waiting().await, 24);

    // Act
    let worker = RunningWorker::start(&env.settings("")).await;
    let leads = env.wait_for_leads(12, Duration::from_secs(20)).await;
    let all_done = queue
        .wait_until(Duration::from_secs(10), async |q| q.done().await == 24)
        .await;
    let (health, _) = worker.get("/healthz").await;
    let (ready, _) = worker.get("/readyz").await;
    let (_, metrics) = worker.get("/metrics").await;

    // Assert: every contact is a linked lead...
    assert_eq!(leads.len(), 12);
    for contact in &contacts {
        let lead = env.lead(*contact).await.expect("lead for every contact");
        assert_eq!(lead.crm_sync_status, CrmSyncStatus::Synced);
    }
    // ...every task was acknowledged as done, none waits, is held or died...
    assert!(all_done, "done: {}", queue.done().await);
    assert_eq!(queue.waiting().await, 0);
    assert_eq!(queue.held().await, 0);
    assert_eq!(queue.dead().await, 0);
    for event in &events {
        assert!(queue.is_done(event).await, "{} is not done", event.key);
    }
    // ...and the metrics server tells so.
    assert_eq!((health, ready), (200, 200));
    assert_eq!(
        metric(&metrics, "leadsync_worker_events_processed_total"),
        Some(24.0)
    );
    assert_eq!(
        metric(&metrics, "leadsync_worker_leads_total{action=\"created\"}"),
        Some(12.0)
    );
    assert!(metric(&metrics, "leadsync_worker_event_lag_seconds_count").is_some_and(|n| n >= 24.0));
    worker.stop(Duration::from_secs(15)).await;
    env.finish().await;
}

#[tokio::test]
async fn a_transient_hubspot_failure_fails_the_batch_and_the_retry_succeeds() {
    // Arrange: HubSpot answers 503 to the first five batch reads, every try
    // the client makes for one call.
    let env = TestEnv::new().await;
    let proxy = FailingProxy::start(&env.sim.base_url(), 5).await;
    let contact = env.create_contact("retry@example.com");
    let event = env.creation(contact);
    env.push(std::slice::from_ref(&event)).await;
    let mut queue = env.queue().await;

    // Act
    let worker = RunningWorker::start(&env.settings_with_api(&proxy.url, "")).await;
    let leads = env.wait_for_leads(1, Duration::from_secs(30)).await;
    let done = queue
        .wait_until(Duration::from_secs(10), async |q| q.done().await == 1)
        .await;

    // Assert: the first run failed as a whole, the second committed.
    assert_eq!(leads.len(), 1, "the retry created the lead");
    assert!(done, "the task ends acknowledged");
    assert!(queue.is_done(&event).await, "the task ends done");
    assert_eq!(worker.metrics.failed.get(), 1, "one job failed once");
    assert_eq!(
        worker.metrics.batches.with_label_values(&["failed"]).get(),
        1
    );
    assert_eq!(
        proxy.batch_reads.load(std::sync::atomic::Ordering::SeqCst),
        6
    );
    assert_eq!(env.sim.control().stats().calls(BATCH_READ), 1);
    let letters = dead_letters::list(env.db.store.pool(), &DeadLetterFilter::default())
        .await
        .expect("dead letters");
    assert!(letters.is_empty(), "nothing was dead-lettered");
    worker.stop(Duration::from_secs(15)).await;
    proxy.stop().await;
    env.finish().await;
}

#[tokio::test]
async fn a_graceful_stop_commits_and_acknowledges_the_batch_it_holds() {
    // Arrange: a batch window far longer than the test, so the worker holds
    // the jobs until it is told to stop.
    let env = TestEnv::new().await;
    let contacts = env.create_contacts(5);
    let events: Vec<_> = contacts.iter().map(|c| env.creation(*c)).collect();
    let mut queue = env.queue().await;
    let worker = RunningWorker::start(&env.settings("[worker]\nbatch_window_ms = 60000")).await;
    env.push(&events).await;
    let holding = queue
        .wait_until(Duration::from_secs(10), async |q| q.held().await == 5)
        .await;
    assert!(holding, "the worker holds the jobs");
    assert!(env.leads().await.is_empty(), "nothing committed yet");

    // Act
    let stopping = Instant::now();
    worker.stop(Duration::from_secs(15)).await;

    // Assert: the held batch committed at once, every job was acknowledged.
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "{:?}",
        stopping.elapsed()
    );
    assert_eq!(env.leads().await.len(), 5);
    assert_eq!(queue.done().await, 5);
    assert_eq!(queue.held().await, 0);
    assert_eq!(queue.waiting().await, 0);
    env.finish().await;
}

#[tokio::test]
async fn a_job_failing_on_its_last_attempt_is_dead_lettered_not_dropped() {
    // Arrange: HubSpot is down for good, and the job already used 24 of the
    // 25 attempts apalis-redis allows.
    let env = TestEnv::new().await;
    let proxy = FailingProxy::start(&env.sim.base_url(), usize::MAX).await;
    let contact = env.create_contact("doomed@example.com");
    let event = env.creation(contact);
    env.push(std::slice::from_ref(&event)).await;
    let mut queue = env.queue().await;
    queue.set_meta(&event, "attempts", "24").await;

    // Act
    let worker = RunningWorker::start(&env.settings_with_api(&proxy.url, "")).await;
    let done = queue
        .wait_until(Duration::from_secs(30), async |q| q.done().await == 1)
        .await;

    // Assert: the event is in the dead letters the CLI replays, not lost in
    // the queue's dead set.
    assert!(done, "the task is acknowledged");
    assert_eq!(queue.dead().await, 0);
    let letters = dead_letters::list(env.db.store.pool(), &DeadLetterFilter::default())
        .await
        .expect("dead letters");
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].event_key, event.key.as_str());
    assert_eq!(letters[0].reason, "retries_exhausted_transient");
    assert!(letters[0].payload.get("eventId").is_some());
    assert!(env.leads().await.is_empty());
    assert_eq!(worker.metrics.dead_lettered.get(), 1);
    worker.stop(Duration::from_secs(15)).await;
    proxy.stop().await;
    env.finish().await;
}

#[tokio::test]
async fn an_account_connected_while_the_worker_runs_needs_no_restart() {
    // Arrange: the worker starts before the account is connected.
    let mut env = TestEnv::without_integration().await;
    let worker = RunningWorker::start(&env.settings("")).await;
    env.integration = env
        .connect_private_app(crate::helpers::PORTAL, crate::helpers::TOKEN)
        .await;
    let contact = env.create_contact("newcomer@example.com");

    // Act
    env.push(&[env.creation(contact)]).await;
    let leads = env.wait_for_leads(1, Duration::from_secs(20)).await;

    // Assert
    assert_eq!(leads.len(), 1);
    let letters = dead_letters::list(env.db.store.pool(), &DeadLetterFilter::default())
        .await
        .expect("dead letters");
    assert!(letters.is_empty(), "{letters:?}");
    worker.stop(Duration::from_secs(15)).await;
    env.finish().await;
}

#[tokio::test]
async fn a_failed_consumer_is_restarted_under_a_new_name_and_keeps_consuming() {
    // Arrange: a running consumer whose registration Redis forgets (what a
    // Redis restart without persistence does): its next heartbeat fails.
    let env = TestEnv::new().await;
    let worker = RunningWorker::start(&env.settings("")).await;
    let mut queue = env.queue().await;
    let started = queue
        .wait_until(Duration::from_secs(10), async |_| worker.status.is_ready())
        .await;
    assert!(started, "the consumer registers");
    let first = worker.status.worker_name().expect("a consumer runs");

    // Act
    queue.unregister(&first).await;
    let restarted = queue
        .wait_until(Duration::from_secs(20), async |_| {
            worker.status.is_ready() && worker.status.worker_name().is_some_and(|n| n != first)
        })
        .await;
    let contact = env.create_contact("after-restart@example.com");
    env.push(&[env.creation(contact)]).await;
    let leads = env.wait_for_leads(1, Duration::from_secs(20)).await;

    // Assert
    assert!(restarted, "a new consumer took over");
    let second = worker.status.worker_name().expect("a consumer runs");
    assert_ne!(second, first);
    assert!(
        second.contains(&format!("-{}-", std::process::id())),
        "{second}"
    );
    assert_eq!(worker.metrics.restarts.get(), 1);
    assert_eq!(leads.len(), 1, "the new consumer consumes");
    worker.stop(Duration::from_secs(15)).await;
    env.finish().await;
}

#[tokio::test]
async fn an_idle_worker_turns_a_new_event_into_a_lead_well_within_its_heartbeat() {
    // Arrange: production heartbeats (10 s); the worker has found the queue
    // empty, which leaves apalis waiting for its next heartbeat.
    let env = TestEnv::new().await;
    let worker = RunningWorker::start(&env.settings(
        "[worker]\nheartbeat_interval_secs = 10\nmissed_heartbeats = 3\npoll_interval_ms = 100",
    ))
    .await;
    let mut queue = env.queue().await;
    let idle = queue
        .wait_until(Duration::from_secs(10), async |_| worker.status.is_ready())
        .await;
    assert!(idle, "the consumer runs");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let contact = env.create_contact("prompt@example.com");

    // Act
    let pushed = Instant::now();
    env.push(&[env.creation(contact)]).await;
    let leads = env.wait_for_leads(1, Duration::from_secs(15)).await;
    let took = pushed.elapsed();

    // Assert: design.md's idle target is 1.5 s from edit to lead.
    assert_eq!(leads.len(), 1);
    assert!(took < Duration::from_millis(1500), "{took:?}");
    worker.stop(Duration::from_secs(15)).await;
    env.finish().await;
}
