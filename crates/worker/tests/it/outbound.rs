//! Platform → HubSpot: lead changes in Postgres become contacts in the
//! simulator, through the relay, the outbound queue and the push batcher
//! (the whole worker), or through `process_push_batch` directly where a test
//! needs exact batches.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use leadsync_domain::{ConflictPolicy, ContactId, LeadField, ValueHash, WebhookEvent};
use leadsync_hubspot_sim::{ApiFault, MergeRequest, Receiver, SubscriptionSpec, UserEdit};
use leadsync_queue::InboundEvent;
use leadsync_store::audit::{self, AuditAction, AuditRecord, Direction};
use leadsync_store::dead_letters::{self, DeadLetterFilter};
use leadsync_store::integrations::{self, DeletionMode, PlatformDeletion};
use leadsync_store::leads::{self, CrmSyncStatus, SyncDirection};
use leadsync_store::{Lead, LeadColumn};
use leadsync_worker::{InboundDeps, OutboundDeps, PushReport, process_batch, process_push_batch};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::helpers::{
    BATCH_READ, PORTAL, RunningWorker, SOURCE, StubProxy, TestEnv, create_lead,
    create_source_property, now_ms, outbound, pending_jobs, sim_client, sim_config,
};

const UPSERT: &str = "POST /crm/v3/objects/contacts/batch/upsert";
const UPDATE: &str = "POST /crm/v3/objects/contacts/batch/update";

/// The worker settings of these tests: short push windows and relay polls.
const FAST_PUSH: &str = "[worker]\npush_batch_window_ms = 50\nrelay_poll_interval_ms = 200";

async fn push(deps: &OutboundDeps, env: &TestEnv) -> PushReport {
    let jobs = pending_jobs(env).await;
    assert!(!jobs.is_empty(), "a lead change is pending");
    process_push_batch(deps, jobs).await.expect("batch pushed")
}

async fn edit_lead(env: &TestEnv, lead: Uuid, column: LeadColumn, value: &str) {
    leads::update(
        env.db.store.pool(),
        env.integration.id,
        lead,
        &BTreeMap::from([(column, Some(value.to_owned()))]),
    )
    .await
    .expect("lead updated")
    .expect("lead exists");
}

async fn lead(env: &TestEnv, id: Uuid) -> Lead {
    leads::by_id(env.db.store.pool(), env.integration.id, id)
        .await
        .expect("lead query")
        .expect("lead exists")
}

/// Waits until the lead satisfies `done` (or `timeout` passes); returns it.
async fn wait_for_lead(
    env: &TestEnv,
    id: Uuid,
    timeout: Duration,
    done: impl Fn(&Lead) -> bool,
) -> Lead {
    let started = Instant::now();
    loop {
        let lead = lead(env, id).await;
        if done(&lead) || started.elapsed() > timeout {
            return lead;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Outbox rows: (all, still pending).
async fn outbox_rows(env: &TestEnv) -> (i64, i64) {
    sqlx::query_as("SELECT count(*), count(*) FILTER (WHERE relayed_at IS NULL) FROM lead_changes")
        .fetch_one(env.db.store.pool())
        .await
        .expect("outbox query")
}

async fn outbound_trail(env: &TestEnv, lead: Uuid) -> Vec<AuditRecord> {
    audit::for_lead(env.db.store.pool(), lead, 100)
        .await
        .expect("audit query")
        .into_iter()
        .filter(|r| r.entry.direction == Direction::Outbound)
        .collect()
}

/// The `(losing, after)` values of `field` in the lead's outbound conflict
/// decided for `reason`.
async fn conflict_of(
    env: &TestEnv,
    lead: Uuid,
    reason: &str,
    field: &str,
) -> (Option<String>, Option<String>) {
    let trail = outbound_trail(env, lead).await;
    let conflict = trail
        .iter()
        .find(|r| {
            r.entry.action == AuditAction::Conflict && r.entry.reason.as_deref() == Some(reason)
        })
        .unwrap_or_else(|| panic!("a {reason} conflict is audited: {trail:#?}"));
    let change = &conflict.entry.changes[field];
    (change.losing_value.clone(), change.after.clone())
}

fn has_entry(trail: &[AuditRecord], action: AuditAction, reason: Option<&str>) -> bool {
    trail
        .iter()
        .any(|r| r.entry.action == action && r.entry.reason.as_deref() == reason)
}

fn contact(env: &TestEnv, id: ContactId) -> leadsync_hubspot_sim::ContactRecord {
    env.sim
        .control()
        .contact(PORTAL, id.get())
        .expect("contact exists")
}

#[tokio::test]
async fn a_lead_inserted_with_plain_sql_becomes_a_contact_with_its_source_system() {
    // Arrange
    let env = TestEnv::new().await;
    create_source_property(&sim_client(&env.sim)).await;
    let worker = RunningWorker::start(&env.settings(FAST_PUSH)).await;

    // Act: a platform write that knows nothing about leadsync.
    let id: Uuid = sqlx::query_scalar(
        "INSERT INTO leads (integration_id, email, first_name, last_name, company) \
         VALUES ($1, 'ada@example.com', 'Ada', 'Lovelace', 'Analytical Engines') RETURNING id",
    )
    .bind(env.integration.id)
    .fetch_one(env.db.store.pool())
    .await
    .expect("insert");
    let lead = wait_for_lead(&env, id, Duration::from_secs(15), |l| l.crm_id.is_some()).await;

    // Assert
    let contact_id = lead.crm_id.expect("the lead got its contact id");
    let created = contact(&env, contact_id);
    assert_eq!(created.get("email"), Some("ada@example.com"));
    assert_eq!(created.get("firstname"), Some("Ada"));
    assert_eq!(created.get("company"), Some("Analytical Engines"));
    assert_eq!(created.get("hs_lead_status"), Some("NEW"));
    assert_eq!(created.get("lead_source_system"), Some(SOURCE));
    assert_eq!(lead.crm_sync_status, CrmSyncStatus::Synced);
    assert_eq!(lead.last_sync_direction, Some(SyncDirection::ToCrm));
    assert_eq!(
        lead.synced_values.get(&LeadField::FirstName),
        Some(&ValueHash::of("Ada")),
        "the pushed values are the merge base"
    );
    assert_eq!(env.sim.control().stats().calls(UPSERT), 1);
    assert_eq!(
        env.sim.control().contacts(PORTAL).expect("contacts").len(),
        1
    );
    // The insert is the only outbox row: the bookkeeping (crm_id, status,
    // merge base) did not re-enter the outbox.
    assert_eq!(outbox_rows(&env).await, (1, 0));
    assert!(has_entry(
        &outbound_trail(&env, id).await,
        AuditAction::Created,
        None
    ));
    worker.stop(Duration::from_secs(20)).await;
    env.finish().await;
}

/// A running worker, and a lead it pushed and linked to a new contact.
async fn linked_by_a_worker(
    env: &TestEnv,
    email: &str,
    first_name: &str,
) -> (RunningWorker, Lead, ContactId) {
    create_source_property(&sim_client(&env.sim)).await;
    let worker = RunningWorker::start(&env.settings(FAST_PUSH)).await;
    let created = create_lead(
        env,
        &[
            (LeadColumn::Email, email),
            (LeadColumn::FirstName, first_name),
        ],
    )
    .await;
    let linked = wait_for_lead(env, created.id, Duration::from_secs(15), |l| {
        l.crm_id.is_some()
    })
    .await;
    let contact_id = linked.crm_id.expect("linked");
    (worker, linked, contact_id)
}

#[tokio::test]
async fn editing_a_linked_lead_updates_its_contact_with_one_batch_update() {
    // Arrange
    let env = TestEnv::new().await;
    let (worker, linked, contact_id) = linked_by_a_worker(&env, "grace@example.com", "Grace").await;
    env.sim.control().reset_stats();

    // Act
    edit_lead(&env, linked.id, LeadColumn::JobTitle, "Rear Admiral").await;
    let edited = wait_for_lead(&env, linked.id, Duration::from_secs(15), |l| {
        l.synced_values.get(&LeadField::JobTitle) == Some(&ValueHash::of("Rear Admiral"))
    })
    .await;

    // Assert
    assert_eq!(
        contact(&env, contact_id).get("jobtitle"),
        Some("Rear Admiral")
    );
    let stats = env.sim.control().stats();
    assert_eq!(stats.calls(UPDATE), 1, "{:?}", stats.calls_by_endpoint);
    assert_eq!(stats.calls(UPSERT), 0);
    assert_eq!(
        stats.calls(BATCH_READ),
        1,
        "linked leads are read before an update"
    );
    assert_eq!(edited.crm_id, Some(contact_id));
    assert_eq!(edited.sync_version, linked.sync_version + 1);
    assert_eq!(
        outbox_rows(&env).await,
        (2, 0),
        "one row per platform write"
    );
    let trail = outbound_trail(&env, linked.id).await;
    let update = trail
        .iter()
        .find(|r| r.entry.action == AuditAction::Updated)
        .expect("the update is audited");
    assert_eq!(
        update.entry.changes.keys().collect::<Vec<_>>(),
        ["job_title"]
    );
    worker.stop(Duration::from_secs(20)).await;
    env.finish().await;
}

#[tokio::test]
async fn the_inbound_echo_of_a_pushed_edit_is_skipped() {
    // Arrange: the simulator delivers webhooks to a receiver.
    let receiver = Receiver::spawn(true).await.expect("receiver");
    let mut config = sim_config();
    config.app.target_url = Some(receiver.url());
    config.subscriptions =
        SubscriptionSpec::all_contact_events(&["email", "firstname", "lastname", "jobtitle"]);
    let env = TestEnv::connected_with(config).await;
    let (client, deps) = outbound(&env).await;
    let created = create_lead(
        &env,
        &[
            (LeadColumn::Email, "Katherine@Example.com"),
            (LeadColumn::FirstName, "Katherine"),
        ],
    )
    .await;
    assert_eq!(push(&deps, &env).await.created, 1);
    edit_lead(&env, created.id, LeadColumn::FirstName, "Kate").await;
    assert_eq!(push(&deps, &env).await.updated, 1);
    assert!(
        env.sim
            .control()
            .wait_for_delivery_idle(Duration::from_secs(10))
            .await
    );
    let echoes: Vec<InboundEvent> = receiver
        .accepted_events()
        .into_iter()
        .map(|e| {
            let raw = RawValue::from_string(e.to_string()).expect("JSON");
            InboundEvent::new(WebhookEvent::from_raw(&raw), now_ms(), HashMap::new(), None)
        })
        .collect();
    assert!(
        receiver.accepted_events().iter().any(|e| {
            e["propertyName"] == "firstname"
                && e["propertyValue"] == "Kate"
                && e["changeSource"] == "INTEGRATION"
        }),
        "HubSpot sends our own write back"
    );
    let before = lead(&env, created.id).await;

    // Act
    let report = process_batch(
        &InboundDeps {
            store: env.db.store.clone(),
            hubspot: client,
        },
        echoes,
    )
    .await
    .expect("inbound batch");

    // Assert
    let after = lead(&env, created.id).await;
    assert_eq!((report.created, report.linked, report.updated), (0, 0, 0));
    assert!(
        report.skipped.get("echo").copied().unwrap_or(0) >= 1,
        "{report:?}"
    );
    assert_eq!(after.fields, before.fields);
    assert_eq!(after.sync_version, before.sync_version);
    assert_eq!(after.updated_at, before.updated_at);
    let echoed_first_name = audit::for_lead(env.db.store.pool(), created.id, 100)
        .await
        .expect("audit")
        .into_iter()
        .any(|r| {
            r.entry.direction == Direction::Inbound
                && r.entry.action == AuditAction::Skipped
                && r.entry.reason.as_deref() == Some("echo")
                && r.entry.changes.contains_key("first_name")
        });
    assert!(
        echoed_first_name,
        "the edited field is recognised as our echo"
    );
    assert_eq!(outbox_rows(&env).await.1, 0, "nothing went back out");
    receiver.stop().await;
    env.finish().await;
}

#[tokio::test]
async fn a_lead_whose_address_hubspot_already_has_is_linked_not_duplicated() {
    // Arrange
    let env = TestEnv::new().await;
    let (_, deps) = outbound(&env).await;
    let existing = env.create_contact("ann@example.com");
    let created = create_lead(
        &env,
        &[
            (LeadColumn::Email, "Ann@Example.com"),
            (LeadColumn::FirstName, "Ann"),
            (LeadColumn::Phone, "+1 555 0100"),
        ],
    )
    .await;

    // Act
    let report = push(&deps, &env).await;

    // Assert
    assert_eq!((report.created, report.linked), (0, 1), "{report:?}");
    let linked = lead(&env, created.id).await;
    assert_eq!(linked.crm_id, Some(ContactId::new(existing)));
    assert_eq!(
        env.sim.control().contacts(PORTAL).expect("contacts").len(),
        1
    );
    let contact = contact(&env, ContactId::new(existing));
    assert_eq!(contact.get("phone"), Some("+1 555 0100"));
    assert_eq!(contact.get("email"), Some("ann@example.com"));
    assert_eq!(
        linked.synced_values.get(&LeadField::Email),
        Some(&ValueHash::of("ann@example.com")),
        "addresses agree whatever their case"
    );
    assert!(has_entry(
        &outbound_trail(&env, created.id).await,
        AuditAction::Linked,
        Some("email_match")
    ));
    assert_eq!(outbox_rows(&env).await, (1, 0));
    env.finish().await;
}

#[tokio::test]
async fn two_hundred_fifty_new_leads_take_three_batch_upserts() {
    // Arrange: one bulk import in plain SQL.
    let env = TestEnv::new().await;
    let (_, deps) = outbound(&env).await;
    sqlx::query(
        "INSERT INTO leads (integration_id, email, first_name) \
         SELECT $1, 'bulk' || n || '@example.com', 'Person ' || n FROM generate_series(1, 250) AS n",
    )
    .bind(env.integration.id)
    .execute(env.db.store.pool())
    .await
    .expect("bulk insert");
    let jobs = pending_jobs(&env).await;
    assert_eq!(jobs.len(), 250);

    // Act
    let report = process_push_batch(&deps, jobs).await.expect("batch pushed");

    // Assert
    assert_eq!(report.upsert_calls, 3, "{report:?}");
    assert_eq!(report.created, 250);
    assert_eq!(env.sim.control().stats().calls(UPSERT), 3);
    assert_eq!(
        env.sim.control().contacts(PORTAL).expect("contacts").len(),
        250
    );
    let unlinked: i64 = sqlx::query_scalar("SELECT count(*) FROM leads WHERE crm_id IS NULL")
        .fetch_one(env.db.store.pool())
        .await
        .expect("count");
    assert_eq!(unlinked, 0, "every lead got its contact id");
    assert_eq!(outbox_rows(&env).await, (250, 0));
    let counters = leadsync_store::stats::read(env.db.store.pool(), env.integration.id)
        .await
        .expect("stats");
    assert_eq!(counters.to_hubspot_success, 250);
    env.finish().await;
}

#[tokio::test]
async fn with_the_outbound_direction_off_nothing_is_sent() {
    // Arrange
    let env = TestEnv::new().await;
    let (_, deps) = outbound(&env).await;
    let mut settings = env.integration.settings.clone();
    settings.directions.outbound = false;
    integrations::update_settings(env.db.store.pool(), env.integration.id, &settings)
        .await
        .expect("settings");
    let created = create_lead(&env, &[(LeadColumn::Email, "off@example.com")]).await;
    env.sim.control().reset_stats();

    // Act
    let report = push(&deps, &env).await;

    // Assert
    assert_eq!(report.skipped.get("outbound_disabled"), Some(&1));
    assert_eq!(env.sim.control().stats().api_calls, 0);
    assert_eq!(lead(&env, created.id).await.crm_id, None);
    assert!(has_entry(
        &outbound_trail(&env, created.id).await,
        AuditAction::Skipped,
        Some("outbound_disabled")
    ));
    let counters = leadsync_store::stats::read(env.db.store.pool(), env.integration.id)
        .await
        .expect("stats");
    assert_eq!(
        counters
            .counters
            .get("skipped.to_hubspot.outbound_disabled"),
        Some(&1),
        "{counters:?}"
    );
    env.finish().await;
}

#[tokio::test]
async fn a_field_changed_on_both_sides_keeps_hubspots_value_under_hubspot_wins() {
    // Arrange: a linked lead, then a sales rep and the platform both edit
    // the first name before either side synced.
    let env = TestEnv::new().await;
    let (_, deps) = outbound(&env).await;
    let created = create_lead(
        &env,
        &[
            (LeadColumn::Email, "mary@example.com"),
            (LeadColumn::FirstName, "Mary"),
        ],
    )
    .await;
    push(&deps, &env).await;
    let contact_id = lead(&env, created.id).await.crm_id.expect("linked");
    env.sim
        .control()
        .update_contact(
            PORTAL,
            contact_id.get(),
            &UserEdit::new([("firstname", "Maria")]),
        )
        .expect("user edit");
    edit_lead(&env, created.id, LeadColumn::FirstName, "Marie").await;
    edit_lead(&env, created.id, LeadColumn::Company, "Jackson Labs").await;
    env.sim.control().reset_stats();

    // Act
    let report = push(&deps, &env).await;

    // Assert: the company (changed on the platform only) is written, the
    // first name (changed on both sides) keeps HubSpot's value.
    assert_eq!(
        report.skipped.get("conflict_hubspot_wins"),
        Some(&1),
        "{report:?}"
    );
    let after = contact(&env, contact_id);
    assert_eq!(after.get("firstname"), Some("Maria"));
    assert_eq!(after.get("company"), Some("Jackson Labs"));
    assert_eq!(env.sim.control().stats().calls(UPDATE), 1);
    assert_eq!(
        conflict_of(&env, created.id, "conflict_hubspot_wins", "first_name").await,
        (Some("Marie".to_owned()), Some("Maria".to_owned()))
    );
    env.finish().await;
}

#[tokio::test]
async fn under_platform_wins_the_platform_value_overwrites_hubspots() {
    // Arrange
    let env = TestEnv::new().await;
    let (_, deps) = outbound(&env).await;
    let mut settings = env.integration.settings.clone();
    settings.conflict_policy = ConflictPolicy::PlatformWins;
    integrations::update_settings(env.db.store.pool(), env.integration.id, &settings)
        .await
        .expect("settings");
    let created = create_lead(
        &env,
        &[
            (LeadColumn::Email, "alan@example.com"),
            (LeadColumn::FirstName, "Alan"),
        ],
    )
    .await;
    push(&deps, &env).await;
    let contact_id = lead(&env, created.id).await.crm_id.expect("linked");
    env.sim
        .control()
        .update_contact(
            PORTAL,
            contact_id.get(),
            &UserEdit::new([("firstname", "Al")]),
        )
        .expect("user edit");
    edit_lead(&env, created.id, LeadColumn::FirstName, "Alan M.").await;

    // Act
    let report = push(&deps, &env).await;

    // Assert
    assert_eq!(report.updated, 1, "{report:?}");
    assert_eq!(contact(&env, contact_id).get("firstname"), Some("Alan M."));
    let (losing, _) = conflict_of(&env, created.id, "conflict_platform_wins", "first_name").await;
    assert_eq!(losing.as_deref(), Some("Al"));
    env.finish().await;
}

#[tokio::test]
async fn a_409_on_upsert_links_the_lead_to_the_existing_contact() {
    // Arrange: HubSpot answers the first upsert "Contact already exists"
    // (as it does when the address is a secondary one of another contact).
    let env = TestEnv::new().await;
    create_source_property(&sim_client(&env.sim)).await;
    let existing = env.create_contact("joan@example.com");
    let body = format!(
        r#"{{"status":"error","message":"Contact already exists. Existing ID: {existing}","correlationId":"c0ffee","category":"CONFLICT"}}"#
    );
    let proxy = StubProxy::start(
        &env.sim.base_url(),
        "POST",
        "/crm/v3/objects/contacts/batch/upsert",
        (409, &body),
        1,
    )
    .await;
    let client = crate::helpers::sim_client_at(&proxy.url);
    let deps = OutboundDeps {
        store: env.db.store.clone(),
        hubspot: client,
        source_system: SOURCE.to_owned(),
        credentials: None,
    };
    let joan = create_lead(
        &env,
        &[
            (LeadColumn::Email, "joan@example.com"),
            (LeadColumn::JobTitle, "Cryptanalyst"),
        ],
    )
    .await;
    let other = create_lead(&env, &[(LeadColumn::Email, "other@example.com")]).await;

    // Act
    let report = push(&deps, &env).await;

    // Assert
    assert_eq!(proxy.stubbed.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(
        (report.created, report.linked, report.updated),
        (1, 1, 1),
        "{report:?}"
    );
    assert_eq!(
        lead(&env, joan.id).await.crm_id,
        Some(ContactId::new(existing))
    );
    assert!(lead(&env, other.id).await.crm_id.is_some());
    assert_eq!(
        env.sim.control().contacts(PORTAL).expect("contacts").len(),
        2
    );
    assert_eq!(
        contact(&env, ContactId::new(existing)).get("jobtitle"),
        Some("Cryptanalyst"),
        "the linked lead is then pushed as a linked lead"
    );
    assert!(has_entry(
        &outbound_trail(&env, joan.id).await,
        AuditAction::Linked,
        Some("contact_exists")
    ));
    proxy.stop().await;
    env.finish().await;
}

#[tokio::test]
async fn a_lead_hubspot_refuses_is_dead_lettered_and_the_rest_are_pushed() {
    // Arrange: a status HubSpot's enumeration does not have.
    let env = TestEnv::new().await;
    let (_, deps) = outbound(&env).await;
    let good = create_lead(&env, &[(LeadColumn::Email, "good1@example.com")]).await;
    let bad = create_lead(
        &env,
        &[
            (LeadColumn::Email, "bad@example.com"),
            (LeadColumn::Status, "no such status"),
        ],
    )
    .await;
    let also_good = create_lead(&env, &[(LeadColumn::Email, "good2@example.com")]).await;

    // Act
    let report = push(&deps, &env).await;

    // Assert
    assert_eq!((report.created, report.dead_lettered), (2, 1), "{report:?}");
    assert!(lead(&env, good.id).await.crm_id.is_some());
    assert!(lead(&env, also_good.id).await.crm_id.is_some());
    let refused = lead(&env, bad.id).await;
    assert_eq!(refused.crm_id, None);
    assert_eq!(refused.crm_sync_status, CrmSyncStatus::Failed);
    let letters = dead_letters::list(env.db.store.pool(), &DeadLetterFilter::default())
        .await
        .expect("dead letters");
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].reason, "hubspot_validation");
    assert_eq!(letters[0].payload["lead_id"], bad.id.to_string());
    assert!(has_entry(
        &outbound_trail(&env, bad.id).await,
        AuditAction::DeadLettered,
        Some("hubspot_validation")
    ));
    env.finish().await;
}

#[tokio::test]
async fn an_address_a_privacy_deletion_tombstoned_is_never_sent_again() {
    // Arrange: HubSpot erased a person; later the platform enters the
    // same address again.
    let env = TestEnv::new().await;
    let (_, deps) = outbound(&env).await;
    let mut conn = env.db.store.pool().acquire().await.expect("connection");
    leads::erase(
        &mut conn,
        env.integration.id,
        Some(ContactId::new(4242)),
        Some("gone@example.com"),
    )
    .await
    .expect("erased");
    drop(conn);
    let again = create_lead(&env, &[(LeadColumn::Email, " Gone@Example.com ")]).await;
    env.sim.control().reset_stats();

    // Act
    let report = push(&deps, &env).await;

    // Assert
    assert_eq!(report.skipped.get("tombstoned"), Some(&1), "{report:?}");
    assert_eq!(env.sim.control().stats().api_calls, 0);
    assert_eq!(lead(&env, again.id).await.crm_id, None);
    env.finish().await;
}

const ARCHIVE: &str = "POST /crm/v3/objects/contacts/batch/archive";

/// A lead pushed and linked to its new contact, then soft-deleted on the
/// platform under `platform_deletion`.
async fn deleted_linked_lead(
    env: &TestEnv,
    deps: &OutboundDeps,
    platform_deletion: PlatformDeletion,
) -> (Uuid, ContactId) {
    let mut settings = env.integration.settings.clone();
    settings.platform_deletion = platform_deletion;
    integrations::update_settings(env.db.store.pool(), env.integration.id, &settings)
        .await
        .expect("settings");
    let created = create_lead(env, &[(LeadColumn::Email, "leaving@example.com")]).await;
    let first = push(deps, env).await;
    assert_eq!(first.created, 1, "{first:?}");
    let contact = lead(env, created.id).await.crm_id.expect("linked");
    let deleted = leads::delete(env.db.store.pool(), env.integration.id, created.id)
        .await
        .expect("delete");
    assert!(deleted);
    env.sim.control().reset_stats();
    (created.id, contact)
}

/// The contact is in HubSpot's recycle bin and the lead's trail says so.
async fn assert_archived(env: &TestEnv, lead_id: Uuid, contact_id: ContactId) {
    assert!(
        contact(env, contact_id).archived,
        "in HubSpot's recycle bin"
    );
    assert!(has_entry(
        &outbound_trail(env, lead_id).await,
        AuditAction::Archived,
        None
    ));
}

#[tokio::test]
async fn a_lead_deleted_on_the_platform_leaves_its_contact_by_default() {
    // Arrange
    let env = TestEnv::new().await;
    let (_, deps) = outbound(&env).await;
    let (lead_id, contact_id) = deleted_linked_lead(&env, &deps, PlatformDeletion::Keep).await;

    // Act
    let report = push(&deps, &env).await;

    // Assert
    assert_eq!(report.skipped.get("lead_deleted"), Some(&1), "{report:?}");
    assert_eq!(report.archived, 0);
    assert_eq!(env.sim.control().stats().api_calls, 0);
    assert!(!contact(&env, contact_id).archived);
    assert!(has_entry(
        &outbound_trail(&env, lead_id).await,
        AuditAction::Skipped,
        Some("lead_deleted")
    ));
    env.finish().await;
}

#[tokio::test]
async fn a_lead_deleted_on_the_platform_archives_its_contact_when_so_configured() {
    // Arrange
    let env = TestEnv::new().await;
    let (_, deps) = outbound(&env).await;
    let (lead_id, contact_id) = deleted_linked_lead(&env, &deps, PlatformDeletion::Archive).await;

    // Act
    let report = push(&deps, &env).await;

    // Assert
    assert_eq!(
        (report.archived, report.archive_calls),
        (1, 1),
        "{report:?}"
    );
    assert_archived(&env, lead_id, contact_id).await;
    let stats = env.sim.control().stats();
    assert_eq!(
        (stats.api_calls, stats.calls(ARCHIVE)),
        (1, 1),
        "{:?}",
        stats.calls_by_endpoint
    );
    env.finish().await;
}

#[tokio::test]
async fn a_lead_deleted_with_sql_archives_the_contact_its_outbox_row_names() {
    // Arrange: the row is gone, its outbox row keeps the contact id.
    let env = TestEnv::new().await;
    let (_, deps) = outbound(&env).await;
    let (lead_id, contact_id) = deleted_linked_lead(&env, &deps, PlatformDeletion::Archive).await;
    // The soft delete's change is pushed (archived) in another test; here
    // the row itself goes, as a plain SQL `DELETE` does.
    let _ = pending_jobs(&env).await;
    sqlx::query("DELETE FROM leads WHERE id = $1")
        .bind(lead_id)
        .execute(env.db.store.pool())
        .await
        .expect("hard delete");

    // Act
    let report = push(&deps, &env).await;

    // Assert
    assert_eq!(
        (report.archived, report.archive_calls),
        (1, 1),
        "{report:?}"
    );
    assert_archived(&env, lead_id, contact_id).await;
    env.finish().await;
}

#[tokio::test]
async fn a_deleted_lead_unlinked_before_its_push_still_has_its_archive_recorded() {
    // Arrange: as when an archive's commit failed and HubSpot's deletion
    // webhook unlinked the lead before the retry.
    let env = TestEnv::new().await;
    let (_, deps) = outbound(&env).await;
    let (lead_id, contact_id) = deleted_linked_lead(&env, &deps, PlatformDeletion::Archive).await;
    leads::unlink(env.db.store.pool(), env.integration.id, contact_id)
        .await
        .expect("unlink")
        .expect("the lead was linked");

    // Act
    let report = push(&deps, &env).await;

    // Assert
    assert_eq!(report.archived, 1, "{report:?}");
    assert_archived(&env, lead_id, contact_id).await;
    env.finish().await;
}

#[tokio::test]
async fn an_archive_hubspot_refuses_is_dead_lettered_with_its_reason() {
    // Arrange
    let env = TestEnv::new().await;
    let (_, deps) = outbound(&env).await;
    let (lead_id, contact_id) = deleted_linked_lead(&env, &deps, PlatformDeletion::Archive).await;
    env.sim
        .control()
        .inject_api_fault(ApiFault::new(403).on(ARCHIVE))
        .expect("fault injected");

    // Act
    let report = push(&deps, &env).await;

    // Assert
    assert_eq!(
        (report.archived, report.dead_lettered),
        (0, 1),
        "{report:?}"
    );
    assert!(!contact(&env, contact_id).archived);
    let letters = dead_letters::list(env.db.store.pool(), &DeadLetterFilter::default())
        .await
        .expect("dead letters");
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].payload["lead_id"], lead_id.to_string());
    assert_eq!(letters[0].reason, "hubspot_permanent");
    env.finish().await;
}

/// A contact a sales rep created in HubSpot, and a lead with the same
/// address pushed before the contact's creation webhook was processed.
async fn rep_contact_and_platform_lead(env: &TestEnv) -> (ContactId, Uuid) {
    let existing = env.create_contact_with(&[
        ("email", "kim@example.com"),
        ("firstname", "Hub"),
        ("jobtitle", "CRM title"),
    ]);
    let created = create_lead(
        env,
        &[
            (LeadColumn::Email, "kim@example.com"),
            (LeadColumn::FirstName, "Plat"),
            (LeadColumn::Phone, "+1 555"),
        ],
    )
    .await;
    (ContactId::new(existing), created.id)
}

#[tokio::test]
async fn an_upsert_matching_an_unlinked_contact_gives_back_hubspots_values_under_hubspot_wins() {
    // Arrange
    let env = TestEnv::new().await;
    let (_, deps) = outbound(&env).await;
    let (contact_id, lead_id) = rep_contact_and_platform_lead(&env).await;
    env.sim.control().reset_stats();

    // Act
    let report = push(&deps, &env).await;

    // Assert: HubSpot's first name is restored, the platform's new phone stays.
    assert_eq!(report.linked, 1, "{report:?}");
    assert_eq!(
        report.skipped.get("conflict_hubspot_wins"),
        Some(&1),
        "{report:?}"
    );
    let after = contact(&env, contact_id);
    assert_eq!(after.get("firstname"), Some("Hub"));
    assert_eq!(after.get("jobtitle"), Some("CRM title"));
    assert_eq!(after.get("phone"), Some("+1 555"));
    let stats = env.sim.control().stats();
    assert_eq!(
        (
            stats.calls(UPSERT),
            stats.calls(BATCH_READ),
            stats.calls(UPDATE)
        ),
        (1, 1, 1),
        "{:?}",
        stats.calls_by_endpoint
    );
    let linked = lead(&env, lead_id).await;
    assert_eq!(linked.crm_id, Some(contact_id));
    assert_eq!(linked.fields.get(LeadColumn::FirstName), Some("Hub"));
    assert_eq!(linked.fields.get(LeadColumn::Phone), Some("+1 555"));
    assert_eq!(
        linked.synced_values.get(&LeadField::FirstName),
        Some(&ValueHash::of("Hub")),
        "the restored value is the merge base"
    );
    assert_eq!(
        outbox_rows(&env).await,
        (1, 0),
        "the restored value reaches the lead as a change from HubSpot"
    );
    assert_eq!(
        conflict_of(&env, lead_id, "conflict_hubspot_wins", "first_name").await,
        (Some("Plat".to_owned()), Some("Hub".to_owned()))
    );
    env.finish().await;
}

/// Pushes the pending changes once while HubSpot answers every batch read
/// with `read_fault`: the upsert lands, the read after it fails, and the
/// batch fails for a retry. Returns the jobs, for that retry.
async fn upsert_then_fail(
    env: &TestEnv,
    deps: &OutboundDeps,
    read_fault: ApiFault,
) -> Vec<leadsync_queue::PushLeadChange> {
    let jobs = pending_jobs(env).await;
    env.sim
        .control()
        .inject_api_fault(read_fault)
        .expect("fault injected");
    process_push_batch(deps, jobs.clone())
        .await
        .expect_err("the read fails transiently: the batch is retried");
    jobs
}

#[tokio::test]
async fn a_push_retried_after_its_upsert_still_gives_back_hubspots_values() {
    // Arrange: the upsert lands, then every read of the contact fails until
    // the push gives up, so nothing of the first try is committed.
    let env = TestEnv::new().await;
    let (_, deps) = outbound(&env).await;
    let (contact_id, lead_id) = rep_contact_and_platform_lead(&env).await;
    let jobs = upsert_then_fail(&env, &deps, ApiFault::new(503).on(BATCH_READ)).await;
    assert_eq!(
        contact(&env, contact_id).get("firstname"),
        Some("Plat"),
        "the first try's upsert overwrote HubSpot's value"
    );
    env.sim.control().clear_api_faults();

    // Act: the retry sends the same upsert again.
    let report = process_push_batch(&deps, jobs.clone())
        .await
        .expect("the retry succeeds");

    // Assert: the version before the first try's write is still HubSpot's.
    assert_eq!(report.linked, 1, "{report:?}");
    let after = contact(&env, contact_id);
    assert_eq!(after.get("firstname"), Some("Hub"));
    assert_eq!(after.get("phone"), Some("+1 555"));
    let linked = lead(&env, lead_id).await;
    assert_eq!(linked.crm_id, Some(contact_id));
    assert_eq!(linked.fields.get(LeadColumn::FirstName), Some("Hub"));

    // Act: the same jobs once more, as after a commit that failed once the
    // restore was written (the lead is linked now: nothing changes).
    let again = process_push_batch(&deps, jobs).await.expect("pushed");

    // Assert
    assert_eq!(
        contact(&env, contact_id).get("firstname"),
        Some("Hub"),
        "{again:?}"
    );
    env.finish().await;
}

#[tokio::test]
async fn the_echo_of_an_upsert_whose_push_failed_leaves_the_link_to_the_retried_push() {
    // Arrange: the upsert lands, every read after it fails until the push
    // gives up (the client tries 5 times), and HubSpot's webhook about the
    // upsert's write is processed before the push is retried.
    let env = TestEnv::new().await;
    let (client, deps) = outbound(&env).await;
    let (contact_id, lead_id) = rep_contact_and_platform_lead(&env).await;
    let jobs = upsert_then_fail(&env, &deps, ApiFault::new(503).on(BATCH_READ).times(5)).await;
    let echo = serde_json::json!({
        "eventId": 1, "subscriptionId": 1, "portalId": PORTAL, "appId": 1,
        "occurredAt": now_ms(), "subscriptionType": "contact.propertyChange",
        "attemptNumber": 0, "objectId": contact_id.get(),
        "propertyName": "firstname", "propertyValue": "Plat",
        "changeSource": "INTEGRATION",
    });
    let raw = RawValue::from_string(echo.to_string()).expect("JSON");
    let event = InboundEvent::new(WebhookEvent::from_raw(&raw), now_ms(), HashMap::new(), None);
    let inbound = process_batch(
        &InboundDeps {
            store: env.db.store.clone(),
            hubspot: client,
        },
        vec![event],
    )
    .await
    .expect("inbound batch");
    assert_eq!(
        inbound.skipped.get("awaiting_push"),
        Some(&1),
        "{inbound:?}"
    );
    assert_eq!(
        lead(&env, lead_id).await.crm_id,
        None,
        "not linked by the echo"
    );

    // Act
    let report = process_push_batch(&deps, jobs)
        .await
        .expect("the retry succeeds");

    // Assert: the retried push linked the lead and gave HubSpot its value back.
    assert_eq!(report.linked, 1, "{report:?}");
    assert_eq!(contact(&env, contact_id).get("firstname"), Some("Hub"));
    let linked = lead(&env, lead_id).await;
    assert_eq!(linked.crm_id, Some(contact_id));
    assert_eq!(linked.fields.get(LeadColumn::FirstName), Some("Hub"));
    env.finish().await;
}

#[tokio::test]
async fn another_apps_write_before_the_upsert_is_the_value_given_back() {
    // Arrange: after the rep, another app (its own private-app token) set
    // the first name; the integration's own app id is unknown.
    let env = TestEnv::new().await;
    let (_, deps) = outbound(&env).await;
    let (contact_id, lead_id) = rep_contact_and_platform_lead(&env).await;
    let other = env
        .sim
        .control()
        .add_private_app_token(PORTAL, None)
        .expect("another app");
    let other_app = leadsync_hubspot::Client::builder(leadsync_hubspot::ClientConfig::new(
        env.sim.base_url().parse().expect("valid URL"),
    ))
    .build()
    .expect("client builds");
    other_app.set_token_source(
        leadsync_domain::PortalId::new(PORTAL),
        leadsync_hubspot::TokenSource::PrivateApp(other.token.clone().into()),
    );
    other_app
        .batch_update(
            leadsync_domain::PortalId::new(PORTAL),
            &[leadsync_hubspot::ContactUpdate {
                id: contact_id,
                properties: BTreeMap::from([("firstname".to_owned(), "Zap".to_owned())]),
            }],
        )
        .await
        .expect("the other app's write");
    assert_eq!(env.integration.app_id, None);

    // Act
    let report = push(&deps, &env).await;

    // Assert: the other app's value, not the rep's older one.
    assert_eq!(report.linked, 1, "{report:?}");
    assert_eq!(contact(&env, contact_id).get("firstname"), Some("Zap"));
    let linked = lead(&env, lead_id).await;
    assert_eq!(linked.fields.get(LeadColumn::FirstName), Some("Zap"));
    env.finish().await;
}

#[tokio::test]
async fn a_push_retried_after_its_restore_was_written_restores_hubspots_value_again() {
    // Arrange: the first try upserts and restores, then its bookkeeping is
    // lost (the lead is unlinked again, as if the commit had failed).
    let env = TestEnv::new().await;
    let (_, deps) = outbound(&env).await;
    let (contact_id, lead_id) = rep_contact_and_platform_lead(&env).await;
    let jobs = pending_jobs(&env).await;
    let mut conn = env.db.store.pool().acquire().await.expect("connection");
    let first = process_push_batch(&deps, jobs.clone())
        .await
        .expect("pushed");
    assert_eq!(first.linked, 1, "{first:?}");
    assert_eq!(contact(&env, contact_id).get("firstname"), Some("Hub"));
    sqlx::query("UPDATE leads SET crm_id = NULL, first_name = 'Plat' WHERE id = $1")
        .bind(lead_id)
        .execute(&mut *conn)
        .await
        .expect("first try's bookkeeping undone");
    drop(conn);

    // Act: the retry upserts the platform's value over the restored one.
    let report = process_push_batch(&deps, jobs).await.expect("pushed");

    // Assert: the value before every write of this push wins again.
    assert_eq!(report.linked, 1, "{report:?}");
    assert_eq!(contact(&env, contact_id).get("firstname"), Some("Hub"));
    let linked = lead(&env, lead_id).await;
    assert_eq!(linked.fields.get(LeadColumn::FirstName), Some("Hub"));
    env.finish().await;
}

#[tokio::test]
async fn an_upsert_matching_an_unlinked_contact_keeps_the_platforms_values_under_platform_wins() {
    // Arrange
    let env = TestEnv::new().await;
    let (_, deps) = outbound(&env).await;
    let mut settings = env.integration.settings.clone();
    settings.conflict_policy = ConflictPolicy::PlatformWins;
    integrations::update_settings(env.db.store.pool(), env.integration.id, &settings)
        .await
        .expect("settings");
    let (contact_id, lead_id) = rep_contact_and_platform_lead(&env).await;

    // Act
    let report = push(&deps, &env).await;

    // Assert
    assert_eq!(report.linked, 1, "{report:?}");
    let after = contact(&env, contact_id);
    assert_eq!(after.get("firstname"), Some("Plat"));
    assert_eq!(after.get("jobtitle"), Some("CRM title"));
    assert_eq!(after.get("phone"), Some("+1 555"));
    let linked = lead(&env, lead_id).await;
    assert_eq!(linked.crm_id, Some(contact_id));
    assert_eq!(linked.fields.get(LeadColumn::FirstName), Some("Plat"));
    env.finish().await;
}

#[tokio::test]
async fn a_batch_of_new_contacts_takes_one_call() {
    // Arrange
    let env = TestEnv::new().await;
    let (_, deps) = outbound(&env).await;
    for n in 0..3 {
        create_lead(
            &env,
            &[
                (LeadColumn::Email, &format!("new{n}@example.com")),
                (LeadColumn::FirstName, "New"),
            ],
        )
        .await;
    }
    env.sim.control().reset_stats();

    // Act
    let report = push(&deps, &env).await;

    // Assert
    assert_eq!(report.created, 3, "{report:?}");
    assert_eq!(env.sim.control().stats().api_calls, 1);
    assert_eq!(
        (report.upsert_calls, report.read_calls, report.update_calls),
        (1, 0, 0)
    );
    env.finish().await;
}

// ---------------------------------------------------------------------------
// Linked contacts deleted or merged away in HubSpot, their webhook lost
// ---------------------------------------------------------------------------

/// Every audit entry of the lead, both directions.
async fn trail(env: &TestEnv, lead: Uuid) -> Vec<AuditRecord> {
    audit::for_lead(env.db.store.pool(), lead, 100)
        .await
        .expect("audit query")
}

fn has(
    trail: &[AuditRecord],
    direction: Direction,
    action: AuditAction,
    reason: Option<&str>,
) -> bool {
    trail.iter().any(|r| {
        r.entry.direction == direction
            && r.entry.action == action
            && r.entry.reason.as_deref() == reason
    })
}

/// Waits until a push skipped the lead's change for `reason`.
async fn wait_for_skip(env: &TestEnv, lead: Uuid, reason: &str) {
    let started = Instant::now();
    loop {
        let audited = trail(env, lead).await;
        if has(
            &audited,
            Direction::Outbound,
            AuditAction::Skipped,
            Some(reason),
        ) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no {reason} skip: {audited:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn dead_letter_reasons(env: &TestEnv) -> Vec<String> {
    dead_letters::list(env.db.store.pool(), &DeadLetterFilter::default())
        .await
        .expect("dead letters")
        .into_iter()
        .map(|l| l.reason)
        .collect()
}

/// A lead pushed by the platform and linked to the contact the push created.
async fn pushed_lead(
    env: &TestEnv,
    deps: &OutboundDeps,
    values: &[(LeadColumn, &str)],
) -> (Uuid, ContactId) {
    let created = create_lead(env, values).await;
    let report = push(deps, env).await;
    assert_eq!(report.created, 1, "{report:?}");
    let contact = lead(env, created.id).await.crm_id.expect("linked");
    (created.id, contact)
}

async fn update_settings(
    env: &TestEnv,
    change: impl FnOnce(&mut integrations::IntegrationSettings),
) {
    let mut settings = env.integration.settings.clone();
    change(&mut settings);
    integrations::update_settings(env.db.store.pool(), env.integration.id, &settings)
        .await
        .expect("settings");
}

/// A user merges `merged` into `primary` in HubSpot; nobody receives the
/// webhook (the simulator of these tests has no target).
fn merge_in_hubspot(env: &TestEnv, primary: ContactId, merged: ContactId) {
    env.sim
        .control()
        .merge_contacts(
            PORTAL,
            &MergeRequest {
                primary_object_id: primary.get(),
                object_id_to_merge: merged.get(),
                user_id: None,
            },
        )
        .expect("merged in HubSpot");
}

#[tokio::test]
async fn a_contact_deleted_while_its_webhook_was_lost_unlinks_the_lead_on_its_next_edit_like_the_webhook()
 {
    // Arrange: the whole worker; the simulator sends no webhooks at all.
    let env = TestEnv::new().await;
    let (worker, linked, contact_id) = linked_by_a_worker(&env, "hedy@example.com", "Hedy").await;
    env.sim
        .control()
        .archive_contact(PORTAL, contact_id.get(), None)
        .expect("a user deletes the contact");
    env.sim.control().reset_stats();

    // Act: the push's skip is committed last.
    edit_lead(&env, linked.id, LeadColumn::JobTitle, "Inventor").await;
    wait_for_skip(&env, linked.id, "contact_deleted").await;
    let unlinked = lead(&env, linked.id).await;

    // Assert: what the lost `contact.deletion` would have done (unlink mode).
    assert_eq!(unlinked.crm_id, None, "{unlinked:?}");
    assert_eq!(unlinked.crm_sync_status, CrmSyncStatus::Unlinked);
    assert_eq!(unlinked.deleted_at, None, "unlink mode keeps the lead");
    assert_eq!(unlinked.fields.get(LeadColumn::JobTitle), Some("Inventor"));
    let audited = trail(&env, linked.id).await;
    assert!(
        has(
            &audited,
            Direction::Inbound,
            AuditAction::Unlinked,
            Some("contact_deleted")
        ),
        "{audited:#?}"
    );
    assert!(
        has(
            &audited,
            Direction::Outbound,
            AuditAction::Skipped,
            Some("contact_deleted")
        ),
        "{audited:#?}"
    );
    assert_eq!(dead_letter_reasons(&env).await, Vec::<String>::new());
    assert_eq!(outbox_rows(&env).await, (2, 0), "the outbox drained");
    // The change that found the deletion creates no contact.
    let contacts = env.sim.control().contacts(PORTAL).expect("contacts");
    assert_eq!(contacts.len(), 1);
    assert!(contacts[0].archived);
    let stats = env.sim.control().stats();
    assert_eq!(
        (stats.calls(UPSERT), stats.calls(UPDATE)),
        (0, 0),
        "{:?}",
        stats.calls_by_endpoint
    );

    // Act: a later edit of the unlinked lead.
    edit_lead(&env, linked.id, LeadColumn::FirstName, "Hedwig").await;
    let relinked = wait_for_lead(&env, linked.id, Duration::from_secs(15), |l| {
        l.crm_id.is_some()
    })
    .await;

    // Assert: pushed like any lead without a contact, as after a
    // `contact.deletion` webhook: upserted by its address, a new contact.
    assert_ne!(relinked.crm_id, Some(contact_id));
    assert_eq!(env.sim.control().stats().calls(UPSERT), 1);
    assert_eq!(
        env.sim.control().contacts(PORTAL).expect("contacts").len(),
        2
    );
    assert_eq!(dead_letter_reasons(&env).await, Vec::<String>::new());
    worker.stop(Duration::from_secs(20)).await;
    env.finish().await;
}

#[tokio::test]
async fn a_retried_batch_that_found_a_deletion_does_not_create_the_contact_again() {
    // Arrange: a linked lead edited after a HubSpot user deleted its contact
    // (webhook lost).
    let env = TestEnv::new().await;
    let (_, deps) = outbound(&env).await;
    let (lead_id, contact_id) =
        pushed_lead(&env, &deps, &[(LeadColumn::Email, "emmy@example.com")]).await;
    env.sim
        .control()
        .archive_contact(PORTAL, contact_id.get(), None)
        .expect("a user deletes the contact");
    edit_lead(&env, lead_id, LeadColumn::JobTitle, "Algebraist").await;
    let jobs = pending_jobs(&env).await;

    // Act: the batch, then the same batch again, as after a failure later in
    // its first run (the unlink was committed, the rest was not).
    let first = process_push_batch(&deps, jobs.clone())
        .await
        .expect("batch pushed");
    let retried = process_push_batch(&deps, jobs)
        .await
        .expect("batch pushed again");

    // Assert: the change was meant for the deleted contact, both times.
    assert_eq!(first.unlinked, 1, "{first:?}");
    assert_eq!(
        retried.skipped.get("contact_deleted"),
        Some(&1),
        "{retried:?}"
    );
    assert_eq!((retried.created, retried.upsert_calls), (0, 0));
    let after = lead(&env, lead_id).await;
    assert_eq!(
        (after.crm_id, after.unlinked_crm_id),
        (None, Some(contact_id))
    );
    assert!(
        env.sim
            .control()
            .contacts(PORTAL)
            .expect("contacts")
            .iter()
            .all(|c| c.archived),
        "no contact created again"
    );
    env.finish().await;
}

#[tokio::test]
async fn in_soft_delete_mode_a_push_finding_its_contact_deleted_soft_deletes_the_lead() {
    // Arrange
    let env = TestEnv::new().await;
    let (_, deps) = outbound(&env).await;
    update_settings(&env, |s| {
        s.deletion_mode = DeletionMode::SoftDelete;
        // Archiving applies to deletions on the platform, not to this one.
        s.platform_deletion = PlatformDeletion::Archive;
    })
    .await;
    let (lead_id, contact_id) =
        pushed_lead(&env, &deps, &[(LeadColumn::Email, "lise@example.com")]).await;
    env.sim
        .control()
        .archive_contact(PORTAL, contact_id.get(), None)
        .expect("a user deletes the contact");
    edit_lead(
        &env,
        lead_id,
        LeadColumn::Company,
        "Kaiser Wilhelm Institute",
    )
    .await;
    env.sim.control().reset_stats();
    let jobs = pending_jobs(&env).await;

    // Act: the batch, then the same batch again (a retry after a failure
    // that came later in its run).
    let report = process_push_batch(&deps, jobs.clone())
        .await
        .expect("batch pushed");
    let retried = process_push_batch(&deps, jobs)
        .await
        .expect("batch pushed again");

    // Assert
    assert_eq!(
        (report.deleted, report.unlinked, report.dead_lettered),
        (1, 0, 0),
        "{report:?}"
    );
    assert_eq!(
        (retried.archived, retried.archive_calls, retried.deleted),
        (0, 0, 0),
        "HubSpot's deletion is not archived as if the platform had deleted the lead: {retried:?}"
    );
    assert_eq!(retried.skipped.get("lead_deleted"), Some(&1));
    assert_eq!(report.skipped.get("contact_deleted"), Some(&1));
    let after = lead(&env, lead_id).await;
    assert!(after.deleted_at.is_some(), "soft-deleted");
    assert_eq!(
        after.crm_id,
        Some(contact_id),
        "it keeps its contact for a restore"
    );
    let audited = trail(&env, lead_id).await;
    assert!(
        has(
            &audited,
            Direction::Inbound,
            AuditAction::Updated,
            Some("soft_deleted")
        ),
        "{audited:#?}"
    );
    assert!(dead_letter_reasons(&env).await.is_empty());
    assert!(
        !has(&audited, Direction::Outbound, AuditAction::Archived, None),
        "{audited:#?}"
    );
    let stats = env.sim.control().stats();
    assert_eq!(
        (stats.api_calls, stats.calls(BATCH_READ)),
        (1, 1),
        "{:?}",
        stats.calls_by_endpoint
    );
    // The soft delete is HubSpot's doing: no outbox row for it.
    assert_eq!(outbox_rows(&env).await, (2, 0), "the outbox drained");
    env.finish().await;
}

#[tokio::test]
async fn a_transient_failure_of_the_read_is_retried_never_taken_for_a_deletion() {
    // Arrange
    let env = TestEnv::new().await;
    let (_, deps) = outbound(&env).await;
    let (lead_id, contact_id) =
        pushed_lead(&env, &deps, &[(LeadColumn::Email, "rosalind@example.com")]).await;
    edit_lead(&env, lead_id, LeadColumn::JobTitle, "Chemist").await;
    let jobs = pending_jobs(&env).await;
    env.sim
        .control()
        .inject_api_fault(ApiFault::new(503).on(BATCH_READ))
        .expect("fault injected");

    // Act
    let failed = process_push_batch(&deps, jobs.clone()).await;

    // Assert
    failed.expect_err("a 503 fails the batch, which the queue retries");
    let after = lead(&env, lead_id).await;
    assert_eq!(after.crm_id, Some(contact_id));
    assert_ne!(after.crm_sync_status, CrmSyncStatus::Unlinked);
    assert!(dead_letter_reasons(&env).await.is_empty());

    // Act: the retry, HubSpot answering again.
    env.sim.control().clear_api_faults();
    let report = process_push_batch(&deps, jobs).await.expect("pushed");

    // Assert
    assert_eq!((report.updated, report.unlinked), (1, 0), "{report:?}");
    assert_eq!(contact(&env, contact_id).get("jobtitle"), Some("Chemist"));
    env.finish().await;
}

#[tokio::test]
async fn without_the_inbound_direction_a_deleted_contact_is_still_dead_lettered() {
    // Arrange: HubSpot's changes, deletions included, never reach the leads.
    let env = TestEnv::new().await;
    let (_, deps) = outbound(&env).await;
    update_settings(&env, |s| s.directions.inbound = false).await;
    let (lead_id, contact_id) =
        pushed_lead(&env, &deps, &[(LeadColumn::Email, "emmy@example.com")]).await;
    env.sim
        .control()
        .archive_contact(PORTAL, contact_id.get(), None)
        .expect("a user deletes the contact");
    edit_lead(&env, lead_id, LeadColumn::JobTitle, "Mathematician").await;

    // Act
    let report = push(&deps, &env).await;

    // Assert
    assert_eq!(
        (report.dead_lettered, report.unlinked),
        (1, 0),
        "{report:?}"
    );
    assert_eq!(dead_letter_reasons(&env).await, ["contact_not_found"]);
    assert_eq!(lead(&env, lead_id).await.crm_id, Some(contact_id));
    env.finish().await;
}

#[tokio::test]
async fn a_contact_hubspot_does_not_account_for_is_dead_lettered() {
    // Arrange: a batch read answering without the contact and without an
    // error about it.
    let env = TestEnv::new().await;
    let (_, deps) = outbound(&env).await;
    let (lead_id, contact_id) =
        pushed_lead(&env, &deps, &[(LeadColumn::Email, "chien@example.com")]).await;
    edit_lead(&env, lead_id, LeadColumn::JobTitle, "Physicist").await;
    let proxy = StubProxy::start(
        &env.sim.base_url(),
        "POST",
        "/crm/v3/objects/contacts/batch/read",
        (
            200,
            r#"{"status":"COMPLETE","results":[],"startedAt":"2026-01-01T00:00:00Z","completedAt":"2026-01-01T00:00:00Z"}"#,
        ),
        1,
    )
    .await;
    let deps = OutboundDeps {
        hubspot: crate::helpers::sim_client_at(&proxy.url),
        ..deps
    };

    // Act
    let report = push(&deps, &env).await;

    // Assert: nothing is unlinked on a guess.
    assert_eq!(
        (report.dead_lettered, report.unlinked),
        (1, 0),
        "{report:?}"
    );
    assert_eq!(dead_letter_reasons(&env).await, ["contact_not_found"]);
    assert_eq!(lead(&env, lead_id).await.crm_id, Some(contact_id));
    proxy.stop().await;
    env.finish().await;
}

/// A lead pushed by the platform (`fields`), whose contact a HubSpot user
/// then merged into a contact they created (`primary`, whose own values win
/// the merge), the webhook lost. Returns the lead and the surviving contact.
async fn pushed_then_merged(
    env: &TestEnv,
    deps: &OutboundDeps,
    fields: &[(LeadColumn, &str)],
    primary: &[(&str, &str)],
) -> (Uuid, ContactId) {
    let (lead_id, merged) = pushed_lead(env, deps, fields).await;
    let primary = ContactId::new(env.create_contact_with(primary));
    merge_in_hubspot(env, primary, merged);
    (lead_id, primary)
}

#[tokio::test]
async fn a_contact_merged_away_while_its_webhook_was_lost_is_followed_to_the_surviving_contact() {
    // Arrange: a lead pushed by the platform, then merged in HubSpot into a
    // contact a user created (whose own values win the merge).
    let env = TestEnv::new().await;
    let (_, deps) = outbound(&env).await;
    let (lead_id, primary) = pushed_then_merged(
        &env,
        &deps,
        &[
            (LeadColumn::Email, "ivy.old@example.com"),
            (LeadColumn::FirstName, "Ivy"),
            (LeadColumn::Company, "Old Co"),
        ],
        &[("email", "ivy@example.com"), ("firstname", "Ivy")],
    )
    .await;
    // The merge carried the company over to the primary.
    assert_eq!(contact(&env, primary).get("company"), Some("Old Co"));
    edit_lead(&env, lead_id, LeadColumn::Company, "New Co").await;
    edit_lead(&env, lead_id, LeadColumn::JobTitle, "Botanist").await;
    env.sim.control().reset_stats();

    // Act
    let report = push(&deps, &env).await;

    // Assert: re-pointed as `contact.merge` does, then pushed to the primary.
    assert_eq!(
        (
            report.merged,
            report.updated,
            report.dead_lettered,
            report.created
        ),
        (1, 1, 0, 0),
        "{report:?}"
    );
    let after = lead(&env, lead_id).await;
    assert_eq!(after.crm_id, Some(primary));
    assert_eq!(
        after.fields.get(LeadColumn::Email),
        Some("ivy@example.com"),
        "as after `contact.merge`, the survivor's values reach the lead by the conflict policy"
    );
    let survivor = contact(&env, primary);
    assert_eq!(survivor.get("jobtitle"), Some("Botanist"));
    assert_eq!(
        survivor.get("company"),
        Some("New Co"),
        "the value the merge carried over is the lead's to change"
    );
    assert_eq!(
        survivor.get("email"),
        Some("ivy@example.com"),
        "the primary keeps its own address"
    );
    assert_eq!(
        env.sim.control().contacts(PORTAL).expect("contacts").len(),
        1
    );
    let audited = trail(&env, lead_id).await;
    let merge = audited
        .iter()
        .find(|r| r.entry.direction == Direction::Inbound && r.entry.action == AuditAction::Merged)
        .unwrap_or_else(|| panic!("the merge is audited: {audited:#?}"));
    assert_eq!(merge.entry.contact_id, Some(primary));
    assert!(has(
        &audited,
        Direction::Outbound,
        AuditAction::Updated,
        None
    ));
    assert!(dead_letter_reasons(&env).await.is_empty());
    // Applying the survivor's values asked for a push of the lead's newer
    // ones, which this push already wrote: one row more, pushed next.
    assert_eq!(outbox_rows(&env).await, (4, 1));
    let stats = env.sim.control().stats();
    assert_eq!(
        (
            stats.calls(BATCH_READ),
            stats.calls(UPDATE),
            stats.calls(UPSERT)
        ),
        (1, 1, 0),
        "{:?}",
        stats.calls_by_endpoint
    );

    // Act: the next edit goes to the primary directly.
    edit_lead(&env, lead_id, LeadColumn::FirstName, "Ivy-May").await;
    let next = push(&deps, &env).await;

    // Assert
    assert_eq!((next.merged, next.updated), (0, 1), "{next:?}");
    assert_eq!(contact(&env, primary).get("firstname"), Some("Ivy-May"));
    env.finish().await;
}

#[tokio::test]
async fn a_contact_merged_into_another_leads_contact_dead_letters_the_change_and_writes_nothing() {
    // Arrange: two leads of the platform, their contacts then merged.
    let env = TestEnv::new().await;
    let (_, deps) = outbound(&env).await;
    let (keeper, primary) =
        pushed_lead(&env, &deps, &[(LeadColumn::Email, "ada@example.com")]).await;
    let (other, merged) = pushed_lead(
        &env,
        &deps,
        &[
            (LeadColumn::Email, "ada.byron@example.com"),
            (LeadColumn::JobTitle, "Countess"),
        ],
    )
    .await;
    merge_in_hubspot(&env, primary, merged);
    edit_lead(&env, other, LeadColumn::JobTitle, "Analyst").await;
    let jobs = pending_jobs(&env).await;

    // Act: the batch, and the same batch again (a retry after a failure
    // later in its run).
    let report = process_push_batch(&deps, jobs.clone())
        .await
        .expect("batch pushed");
    let retried = process_push_batch(&deps, jobs)
        .await
        .expect("batch pushed again");

    // Assert: which lead is the person is for someone to decide: the change
    // waits in the dead letters, no lead is re-pointed or unlinked, and
    // nothing is written to HubSpot, the second time either (an unlinked
    // lead would have been pushed as a new contact: the merged person again).
    for r in [&report, &retried] {
        assert_eq!(
            (r.merged, r.updated, r.created, r.dead_lettered),
            (0, 0, 0, 1),
            "{r:?}"
        );
    }
    assert_eq!(
        dead_letter_reasons(&env).await,
        ["merged_into_linked_contact"]
    );
    assert_eq!(lead(&env, keeper).await.crm_id, Some(primary));
    assert_eq!(lead(&env, other).await.crm_id, Some(merged));
    assert_eq!(contact(&env, primary).get("jobtitle"), Some("Countess"));
    assert_eq!(
        env.sim
            .control()
            .contacts(PORTAL)
            .expect("contacts")
            .iter()
            .filter(|c| !c.archived)
            .count(),
        1,
        "no contact created again"
    );
    env.finish().await;
}

#[tokio::test]
async fn a_push_failing_after_it_followed_a_merge_delivers_the_edit_on_its_retry() {
    // Arrange: as above, but every update fails transiently on the first try.
    let env = TestEnv::new().await;
    let (_, deps) = outbound(&env).await;
    let (lead_id, primary) = pushed_then_merged(
        &env,
        &deps,
        &[
            (LeadColumn::Email, "rue.old@example.com"),
            (LeadColumn::Company, "Old Co"),
        ],
        &[("email", "rue@example.com")],
    )
    .await;
    edit_lead(&env, lead_id, LeadColumn::Company, "New Co").await;
    let jobs = pending_jobs(&env).await;
    env.sim
        .control()
        .inject_api_fault(ApiFault::new(503).on(UPDATE))
        .expect("fault injected");
    process_push_batch(&deps, jobs.clone())
        .await
        .expect_err("the update fails transiently: the batch is retried");
    assert_eq!(
        lead(&env, lead_id).await.crm_id,
        Some(primary),
        "the merge was applied"
    );
    env.sim.control().clear_api_faults();

    // Act
    let report = process_push_batch(&deps, jobs).await.expect("pushed");

    // Assert: the carried-over value is still the lead's to change.
    assert_eq!(
        (report.merged, report.updated, report.dead_lettered),
        (0, 1, 0),
        "{report:?}"
    );
    assert_eq!(contact(&env, primary).get("company"), Some("New Co"));
    assert!(dead_letter_reasons(&env).await.is_empty());
    env.finish().await;
}
