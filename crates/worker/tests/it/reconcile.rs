//! Reconciliation against the simulator and Postgres: edits whose webhooks
//! were lost are found by a search on `lastmodifieddate` and repaired
//! through the inbound decision path; the cursor, the window splitting, the
//! echo ledger, the per-integration lock, the worker's schedule and the
//! CLI's entry point.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use leadsync_hubspot_sim::{FaultConfig, Receiver, SimConfig, SubscriptionSpec, UserEdit};
use leadsync_store::cursors::{self, CursorKind, RunLock};
use leadsync_store::leads;
use leadsync_store::{Lead, LeadColumn, stats};
use leadsync_worker::reconcile::{self, ReconcileConfig, ReconcileDeps, ReconcileError};
use leadsync_worker::{
    InboundDeps, OutboundDeps, WorkerMetrics, process_batch, process_push_batch,
};

use crate::helpers::{
    BATCH_READ, PORTAL, RunningWorker, TestEnv, create_lead, metric, outbound, pending_jobs,
    sim_client, sim_config,
};

const SEARCH: &str = "POST /crm/v3/objects/contacts/search";

/// Reconciliation for tests: no safety lag, a ten-minute first lookback,
/// HubSpot's result cap.
fn config() -> ReconcileConfig {
    ReconcileConfig {
        interval: Duration::from_secs(1),
        first_lookback: Duration::from_secs(600),
        safety_lag: Duration::ZERO,
        ..ReconcileConfig::default()
    }
}

fn deps(env: &TestEnv, config: ReconcileConfig) -> ReconcileDeps {
    ReconcileDeps {
        store: env.db.store.clone(),
        hubspot: sim_client(&env.sim),
        config,
        metrics: Some(WorkerMetrics::new().expect("metrics")),
    }
}

/// A simulator that delivers webhooks to a receiver, subscribed to
/// creations and first-name changes, and loses every one of them.
async fn losing_webhooks() -> (Receiver, SimConfig) {
    let receiver = Receiver::spawn(true).await.expect("receiver");
    let mut config = sim_config();
    config.app.target_url = Some(receiver.url());
    config.subscriptions = SubscriptionSpec::all_contact_events(&["firstname"]);
    config.faults = FaultConfig {
        drop_rate: 1.0,
        ..FaultConfig::default()
    };
    (receiver, config)
}

/// The run's clock, a little after the last write: `lastmodifieddate` is
/// compared at millisecond resolution and the window's end is exclusive.
async fn now_after_writes() -> DateTime<Utc> {
    tokio::time::sleep(Duration::from_millis(5)).await;
    Utc::now()
}

/// `n` contacts created in HubSpot, spread over time (at most 10 per
/// millisecond), and their leads created from delivered creation events.
async fn synced_contacts(env: &TestEnv, n: usize) -> Vec<u64> {
    let ids = spread_contacts(env, n).await;
    let events = ids.iter().map(|id| env.creation(*id)).collect();
    let report = process_batch(
        &InboundDeps {
            store: env.db.store.clone(),
            hubspot: sim_client(&env.sim),
        },
        events,
    )
    .await
    .expect("creation events applied");
    assert_eq!(report.created, n, "{report:?}");
    ids
}

async fn spread_contacts(env: &TestEnv, n: usize) -> Vec<u64> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        ids.push(env.create_contact(&format!("person{i}@example.com")));
        if i % 10 == 9 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    ids
}

fn edit(env: &TestEnv, contact: u64, first_name: &str) {
    env.sim
        .control()
        .update_contact(PORTAL, contact, &UserEdit::new([("firstname", first_name)]))
        .expect("contact edited");
}

fn non_empty(v: Option<&str>) -> Option<&str> {
    v.map(str::trim).filter(|v| !v.is_empty())
}

/// Every contact of the simulator whose lead differs from it, with the
/// difference.
async fn mismatches(env: &TestEnv) -> Vec<String> {
    let mut out = Vec::new();
    for contact in env.sim.control().contacts(PORTAL).expect("contacts") {
        let Some(lead) = env.lead(contact.id).await else {
            out.push(format!("contact {} has no lead", contact.id));
            continue;
        };
        for (property, column) in [
            ("firstname", LeadColumn::FirstName),
            ("lastname", LeadColumn::LastName),
            ("email", LeadColumn::Email),
        ] {
            let hubspot = non_empty(contact.get(property));
            let platform = non_empty(lead.fields.get(column));
            if hubspot.map(str::to_lowercase) != platform.map(str::to_lowercase) {
                out.push(format!(
                    "contact {}: {property} {hubspot:?} in HubSpot, {platform:?} on the platform",
                    contact.id
                ));
            }
        }
    }
    out
}

async fn audit_count(env: &TestEnv, action: &str, reason: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE integration_id = $1 AND direction = 'inbound' \
         AND action = $2 AND reason = $3 AND event_key LIKE 'reconciliation:%'",
    )
    .bind(env.integration.id)
    .bind(action)
    .bind(reason)
    .fetch_one(env.db.store.pool())
    .await
    .expect("audit query")
}

#[tokio::test]
async fn two_hundred_edits_whose_webhooks_were_lost_are_found_and_repaired() {
    // Arrange: 220 contacts with their leads, then 200 edits in HubSpot
    // whose webhooks the simulator loses.
    let (receiver, sim) = losing_webhooks().await;
    let env = TestEnv::connected_with(sim).await;
    let ids = synced_contacts(&env, 220).await;
    let lost_before = env.sim.control().stats().delivery.events_lost;
    for (i, id) in ids.iter().take(200).enumerate() {
        edit(&env, *id, &format!("Edited {i}"));
    }
    assert!(
        env.sim
            .control()
            .wait_for_delivery_idle(Duration::from_secs(10))
            .await
    );
    let stats = env.sim.control().stats();
    assert_eq!(stats.delivery.events_lost - lost_before, 200, "{stats:?}");
    assert_eq!(receiver.accepted_event_count(), 0, "no webhook arrived");
    assert_eq!(mismatches(&env).await.len(), 200, "the leads are behind");
    let deps = deps(&env, config());
    let now = now_after_writes().await;
    env.sim.control().reset_stats();

    // Act
    let report = reconcile::run_once(&deps, &env.integration, now)
        .await
        .expect("reconciliation runs");

    // Assert: 200 drifted and repaired, the 20 others unchanged, every lead
    // as in HubSpot, audited, counted, in two searches and three batch reads.
    assert_eq!(report.drifted, 200, "{report:#?}");
    assert_eq!(report.repaired, 200, "{report:#?}");
    assert_eq!(report.found.updated, 200, "{report:#?}");
    assert_eq!(report.scanned, 220, "{report:#?}");
    assert_eq!(report.unchanged, 20, "{report:#?}");
    assert!(report.found.unrepaired.is_empty(), "{report:#?}");
    assert_eq!((report.windows, report.splits), (1, 0), "{report:#?}");
    let calls = env.sim.control().stats();
    assert_eq!((report.searches, report.batch_reads), (2, 3), "{report:#?}");
    assert_eq!(
        (calls.calls(SEARCH), calls.calls(BATCH_READ)),
        (2, 3),
        "{calls:?}"
    );
    assert_eq!(report.calls, 5);
    assert_eq!(mismatches(&env).await, Vec::<String>::new());
    assert_eq!(audit_count(&env, "updated", "reconciliation").await, 200);
    let counters = stats::read(env.db.store.pool(), env.integration.id)
        .await
        .expect("stats")
        .counters;
    assert_eq!(counters.get(reconcile::STAT_DRIFTED), Some(&200));
    assert_eq!(counters.get(reconcile::STAT_REPAIRED), Some(&200));
    assert_eq!(counters.get(reconcile::STAT_SCANNED), Some(&220));
    let metrics = deps.metrics.as_ref().expect("metrics");
    assert_eq!(metrics.reconcile_drift_found.get(), 200);
    assert_eq!(metrics.reconcile_drift_repaired.get(), 200);
    let cursor = cursors::get(
        env.db.store.pool(),
        env.integration.id,
        CursorKind::Reconciliation,
    )
    .await
    .expect("cursor")
    .expect("saved");
    assert_eq!(
        cursor.cursor.as_deref(),
        Some(
            now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                .as_str()
        )
    );
    assert!(cursor.completed_at.is_some());

    // Act: a second run finds nothing left to do, from where the first ended.
    let second = reconcile::run_once(&deps, &env.integration, now_after_writes().await)
        .await
        .expect("second run");

    // Assert
    assert_eq!(second.from, report.until, "{second:#?}");
    assert_eq!(
        (second.scanned, second.drifted, second.repaired),
        (0, 0, 0),
        "{second:#?}"
    );

    // Act: one more lost edit; the third run sees only it.
    edit(&env, ids[210], "Late edit");
    let third = reconcile::run_once(&deps, &env.integration, now_after_writes().await)
        .await
        .expect("third run");

    // Assert
    assert_eq!(
        (third.scanned, third.drifted, third.repaired),
        (1, 1, 1),
        "{third:#?}"
    );
    assert_eq!(mismatches(&env).await, Vec::<String>::new());
    receiver.stop().await;
    env.finish().await;
}

#[tokio::test]
async fn a_window_over_the_result_cap_is_split_and_contacts_without_leads_are_created() {
    // Arrange: 200 contacts HubSpot never told us about, a cap of 50.
    let env = TestEnv::new().await;
    let ids = spread_contacts(&env, 200).await;
    let deps = deps(
        &env,
        ReconcileConfig {
            search_result_cap: 50,
            ..config()
        },
    );
    let now = now_after_writes().await;

    // Act
    let report = reconcile::run_once(&deps, &env.integration, now)
        .await
        .expect("reconciliation runs");

    // Assert: split into windows of at most 50, each contact seen once.
    assert!(report.splits >= 1, "{report:#?}");
    assert!(report.windows >= 4, "{report:#?}");
    assert_eq!(report.truncated, 0, "{report:#?}");
    assert_eq!(report.scanned, 200, "{report:#?}");
    assert_eq!(report.found.created, 200, "{report:#?}");
    assert_eq!((report.drifted, report.repaired), (200, 200), "{report:#?}");
    assert_eq!(
        report.calls,
        report.searches + report.batch_reads,
        "{report:#?}"
    );
    assert_eq!(
        env.sim.control().stats().calls(SEARCH) as usize,
        report.searches
    );
    assert_eq!(env.leads().await.len(), 200);
    for id in &ids {
        assert!(env.lead(*id).await.is_some(), "contact {id} has a lead");
    }
    assert_eq!(mismatches(&env).await, Vec::<String>::new());
    assert_eq!(audit_count(&env, "created", "reconciliation").await, 200);
    env.finish().await;
}

/// Pushes every pending outbox row, as the relay and the push batcher do.
async fn push_pending(env: &TestEnv, deps: &OutboundDeps) {
    let jobs = pending_jobs(env).await;
    process_push_batch(deps, jobs).await.expect("pushed");
}

async fn set_first_name(env: &TestEnv, lead: &Lead, value: &str) {
    leads::update(
        env.db.store.pool(),
        env.integration.id,
        lead.id,
        &BTreeMap::from([(LeadColumn::FirstName, Some(value.to_owned()))]),
    )
    .await
    .expect("lead updated")
    .expect("lead exists");
}

#[tokio::test]
async fn an_echo_of_our_own_write_is_not_drift() {
    // Arrange: a platform lead pushed to HubSpot, its first name changed and
    // pushed ("Kate"), then changed again on the platform ("Kat") and not
    // pushed yet. HubSpot's contact was last modified by our own write.
    let env = TestEnv::new().await;
    let (_, outbound) = outbound(&env).await;
    let lead = create_lead(
        &env,
        &[
            (LeadColumn::Email, "katherine@example.com"),
            (LeadColumn::FirstName, "Katherine"),
        ],
    )
    .await;
    push_pending(&env, &outbound).await;
    set_first_name(&env, &lead, "Kate").await;
    push_pending(&env, &outbound).await;
    set_first_name(&env, &lead, "Kat").await;
    let contact = leads::by_id(env.db.store.pool(), env.integration.id, lead.id)
        .await
        .expect("lead query")
        .and_then(|l| l.crm_id)
        .expect("the lead is linked to its contact");
    assert_eq!(
        env.sim
            .control()
            .contact(PORTAL, contact.get())
            .expect("contact")
            .get("firstname"),
        Some("Kate")
    );
    let deps = deps(&env, config());

    // Act
    let report = reconcile::run_once(&deps, &env.integration, now_after_writes().await)
        .await
        .expect("reconciliation runs");

    // Assert: seen, not drift; the platform's newer value stands.
    assert_eq!(report.scanned, 1, "{report:#?}");
    assert_eq!((report.drifted, report.repaired), (0, 0), "{report:#?}");
    assert_eq!(report.unchanged, 1, "{report:#?}");
    let after = leads::by_id(env.db.store.pool(), env.integration.id, lead.id)
        .await
        .expect("lead query")
        .expect("lead exists");
    assert_eq!(after.fields.get(LeadColumn::FirstName), Some("Kat"));
    assert_eq!(audit_count(&env, "updated", "reconciliation").await, 0);
    assert_eq!(
        deps.metrics
            .as_ref()
            .expect("metrics")
            .reconcile_drift_found
            .get(),
        0
    );
    env.finish().await;
}

#[tokio::test]
async fn one_process_at_a_time_reconciles_an_integration() {
    // Arrange: another process holds the integration's lock.
    let env = TestEnv::new().await;
    spread_contacts(&env, 3).await;
    let deps = deps(&env, config());
    let held = RunLock::try_acquire(
        env.db.store.pool(),
        env.integration.id,
        CursorKind::Reconciliation,
    )
    .await
    .expect("lock query")
    .expect("free");

    // Act
    let refused = reconcile::run_once(&deps, &env.integration, now_after_writes().await).await;

    // Assert: refused without a call; runs once the lock is released.
    assert!(
        matches!(refused, Err(ReconcileError::AlreadyRunning(id)) if id == env.integration.id),
        "{refused:?}"
    );
    assert_eq!(env.sim.control().stats().api_calls, 0);
    assert!(env.leads().await.is_empty());
    held.release().await.expect("released");
    let report = reconcile::run_once(&deps, &env.integration, now_after_writes().await)
        .await
        .expect("runs once free");
    assert_eq!(report.found.created, 3, "{report:#?}");
    env.finish().await;
}

#[tokio::test]
async fn the_worker_reconciles_each_integration_once_per_interval() {
    // Arrange: contacts HubSpot never sent webhooks for; a worker that
    // reconciles every second without a safety lag.
    let env = TestEnv::new().await;
    let ids = spread_contacts(&env, 5).await;
    let settings = env
        .settings("[reconcile]\ninterval_secs = 1\nsafety_lag_secs = 0\nfirst_lookback_secs = 600");

    // Act
    let worker = RunningWorker::start(&settings).await;
    let started = Instant::now();
    while env.leads().await.len() < ids.len() && started.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Assert: the leads exist and the drift is on /metrics.
    assert_eq!(env.leads().await.len(), ids.len());
    let (_, text) = worker.get("/metrics").await;
    assert_eq!(
        metric(&text, "leadsync_worker_reconcile_drift_found_total"),
        Some(5.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "leadsync_worker_reconcile_drift_repaired_total"),
        Some(5.0)
    );
    worker.stop(Duration::from_secs(20)).await;
    env.finish().await;
}

#[tokio::test]
async fn the_cli_entry_point_reconciles_the_named_integration() {
    // Arrange
    let env = TestEnv::new().await;
    spread_contacts(&env, 2).await;
    let settings = env.settings("[reconcile]\nsafety_lag_secs = 0");
    tokio::time::sleep(Duration::from_millis(5)).await;

    // Act
    let runs = reconcile::run_from_settings(&settings, Some(&env.integration.name))
        .await
        .expect("runs");
    let unknown = reconcile::run_from_settings(&settings, Some("nobody")).await;

    // Assert
    assert_eq!(runs.len(), 1);
    let report = runs[0].result.as_ref().expect("reconciled");
    assert_eq!((report.drifted, report.repaired), (2, 2), "{report:#?}");
    assert!(
        report.to_string().contains("2 drifted, 2 repaired"),
        "{report}"
    );
    assert!(
        matches!(unknown, Err(ReconcileError::UnknownIntegration(ref n)) if n == "nobody"),
        "{unknown:?}"
    );
    env.finish().await;
}
