//! The batcher on its own: how jobs are cut into batches.

use std::time::{Duration, Instant};

use futures::future::join_all;
use leadsync_hubspot_sim::UserEdit;
use leadsync_store::dead_letters::{self, DeadLetterFilter};
use leadsync_worker::{BatchError, Batcher, BatcherConfig, InboundDeps, JobOutcome, WorkerMetrics};
use tokio_util::sync::CancellationToken;

use crate::helpers::{BATCH_READ, FailingProxy, PORTAL, TestEnv, sim_client};

fn start(deps: InboundDeps, window: Duration) -> (Batcher, WorkerMetrics) {
    let metrics = WorkerMetrics::new().expect("metrics");
    let (batcher, _task) = Batcher::start(
        deps,
        None,
        metrics.clone(),
        BatcherConfig {
            max_contacts: 100,
            window,
            max_in_flight: 2,
        },
        CancellationToken::new(),
    );
    (batcher, metrics)
}

#[tokio::test]
async fn events_of_150_contacts_submitted_together_take_two_batch_reads() {
    // Arrange: 250 events (150 creations, then a change for 100 of the
    // contacts), handed in by 250 concurrent jobs.
    let env = TestEnv::new().await;
    let contacts = env.create_contacts(150);
    let mut jobs: Vec<_> = contacts.iter().map(|c| env.creation(*c)).collect();
    jobs.extend(
        contacts[..100]
            .iter()
            .map(|c| env.change(*c, "firstname", "Test")),
    );
    env.sim.control().reset_stats();
    let deps = InboundDeps {
        store: env.db.store.clone(),
        hubspot: sim_client(&env.sim),
    };
    let (batcher, metrics) = start(deps, Duration::from_millis(500));

    // Act
    let outcomes = join_all(jobs.into_iter().map(|job| {
        let batcher = batcher.clone();
        async move { batcher.submit(job, 1).await }
    }))
    .await;

    // Assert: two batches of at most 100 contacts, each read once.
    assert!(outcomes.iter().all(|o| *o == Ok(JobOutcome::Committed)));
    assert_eq!(env.sim.control().stats().calls(BATCH_READ), 2);
    assert_eq!(metrics.batch_jobs.get_sample_count(), 2);
    assert_eq!(metrics.batch_contacts.get_sample_sum(), 150.0);
    assert_eq!(metrics.processed.get(), 250);
    assert_eq!(env.leads().await.len(), 150);
    env.finish().await;
}

#[tokio::test]
async fn a_lone_event_waits_for_the_window_and_no_longer() {
    // Arrange
    let env = TestEnv::new().await;
    let contact = env.create_contact("alone@example.com");
    let deps = InboundDeps {
        store: env.db.store.clone(),
        hubspot: sim_client(&env.sim),
    };
    let (batcher, _) = start(deps, Duration::from_millis(300));

    // Act
    let started = Instant::now();
    let outcome = batcher.submit(env.creation(contact), 1).await;
    let took = started.elapsed();

    // Assert
    assert_eq!(outcome, Ok(JobOutcome::Committed));
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert!(env.lead(contact).await.is_some());
    env.finish().await;
}

#[tokio::test]
async fn a_failed_batch_fails_every_job_in_it_and_commits_nothing() {
    // Arrange: HubSpot answers 503 to every batch read.
    let env = TestEnv::new().await;
    let proxy = FailingProxy::start(&env.sim.base_url(), usize::MAX).await;
    let contacts = env.create_contacts(3);
    let mut config = leadsync_hubspot::ClientConfig::new(proxy.url.parse().expect("URL"));
    config.retry.min_delay = Duration::from_millis(5);
    config.retry.max_delay = Duration::from_millis(20);
    let hubspot = leadsync_hubspot::Client::builder(config)
        .build()
        .expect("client");
    hubspot.set_token_source(
        leadsync_domain::PortalId::new(crate::helpers::PORTAL),
        leadsync_hubspot::TokenSource::PrivateApp(crate::helpers::TOKEN.into()),
    );
    let deps = InboundDeps {
        store: env.db.store.clone(),
        hubspot,
    };
    let (batcher, metrics) = start(deps, Duration::from_millis(100));

    // Act
    let outcomes = join_all(contacts.iter().map(|c| {
        let batcher = batcher.clone();
        let job = env.creation(*c);
        async move { batcher.submit(job, 1).await }
    }))
    .await;

    // Assert
    assert!(
        outcomes
            .iter()
            .all(|o| *o == Err(BatchError::Failed { code: "transient" })),
        "{outcomes:?}"
    );
    assert_eq!(metrics.failed.get(), 3);
    assert!(env.leads().await.is_empty());
    proxy.stop().await;
    env.finish().await;
}

#[tokio::test]
async fn an_event_the_database_refuses_is_dead_lettered_alone_and_its_batch_mates_commit() {
    // Arrange: 20 contacts in one batch; one more has a first name holding
    // a NUL character, which HubSpot keeps but Postgres text cannot (22021).
    // Its two events (the second quotes the value) go together.
    let env = TestEnv::new().await;
    let contacts = env.create_contacts(20);
    let poison = env
        .sim
        .control()
        .create_contact(
            PORTAL,
            &UserEdit::new([("email", "nul@example.com"), ("firstname", "Nul\u{0}Byte")]),
        )
        .expect("HubSpot takes the value")
        .id;
    let mut jobs: Vec<_> = contacts.iter().map(|c| env.creation(*c)).collect();
    let poison_jobs = [
        env.creation(poison),
        env.change(poison, "firstname", "Nul\u{0}Byte"),
    ];
    let mut poison_keys: Vec<String> = poison_jobs
        .iter()
        .map(|j| j.key.as_str().to_owned())
        .collect();
    let [creation, change] = poison_jobs;
    jobs.insert(7, creation);
    jobs.insert(15, change);
    let deps = InboundDeps {
        store: env.db.store.clone(),
        hubspot: sim_client(&env.sim),
    };
    let (batcher, metrics) = start(deps, Duration::from_millis(500));

    // Act: every job on its first attempt.
    let outcomes = join_all(jobs.into_iter().map(|job| {
        let batcher = batcher.clone();
        async move { batcher.submit(job, 1).await }
    }))
    .await;

    // Assert: no job is left to retry; the healthy contacts are leads and
    // the poison events are the only dead letters, with the SQLSTATE only.
    assert!(
        outcomes.iter().all(|o| *o == Ok(JobOutcome::Committed)),
        "{outcomes:?}"
    );
    assert_eq!(metrics.failed.get(), 0);
    assert_eq!(metrics.batch_jobs.get_sample_count(), 1);
    assert_eq!(metrics.dead_lettered.get(), 2);
    assert_eq!(metrics.processed.get(), 20);
    let leads = env.leads().await;
    assert_eq!(leads.len(), 20);
    for contact in &contacts {
        assert!(env.lead(*contact).await.is_some(), "contact {contact}");
    }
    assert!(env.lead(poison).await.is_none());
    let letters = dead_letters::list(env.db.store.pool(), &DeadLetterFilter::default())
        .await
        .expect("dead letters");
    let mut keys: Vec<String> = letters.iter().map(|l| l.event_key.clone()).collect();
    keys.sort();
    poison_keys.sort();
    assert_eq!(keys, poison_keys);
    for letter in &letters {
        assert_eq!(letter.reason, "database_rejected: 22021");
        assert_eq!(letter.attempts, 1);
        assert_eq!(letter.integration_id, Some(env.integration.id));
    }
    // jsonb cannot hold the NUL character of the second event's payload.
    let quoted = letters
        .iter()
        .find_map(|l| l.payload.get("propertyValue"))
        .expect("the change event's payload");
    assert_eq!(quoted, "Nul\u{fffd}Byte");
    let counters = leadsync_store::stats::read(env.db.store.pool(), env.integration.id)
        .await
        .expect("stats");
    assert_eq!(counters.failed, 2);
    assert_eq!(counters.processed, 20);
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE event_key = ANY($1) \
         AND action = 'dead_lettered' AND reason = 'database_rejected: 22021'",
    )
    .bind(&poison_keys)
    .fetch_one(env.db.store.pool())
    .await
    .expect("audit");
    assert_eq!(audited, 2);
    env.finish().await;
}
