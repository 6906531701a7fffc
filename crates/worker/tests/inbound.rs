//! The inbound batch processor against real Postgres and the simulator.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use leadsync_domain::{ConflictPolicy, ContactId, PortalId, ValueHash, WebhookEvent};
use leadsync_hubspot::{Client, ClientConfig, TokenSource};
use leadsync_hubspot_sim::{PortalConfig, RateLimitConfig, SimConfig, SimHandle, UserEdit, spawn};
use leadsync_queue::InboundEvent;
use leadsync_store::audit::{self, AuditAction};
use leadsync_store::dead_letters::{self, DeadLetterFilter};
use leadsync_store::integrations::{self, AuthMode, NewIntegration};
use leadsync_store::leads::{self, CrmSyncStatus, LeadFields, ListLeads, NewLead, SourceSystem};
use leadsync_store::testing::TestDb;
use leadsync_store::{Integration, IntegrationSettings, Lead, LeadColumn, ledger};
use leadsync_worker::{BatchReport, InboundDeps, process_batch};
use serde_json::value::RawValue;
use serde_json::{Value, json};

const PORTAL: u64 = 62515;
const TOKEN: &str = "pat-na1-worker-tests";
const BATCH_READ: &str = "POST /crm/v3/objects/contacts/batch/read";

struct Env {
    db: TestDb,
    sim: SimHandle,
    deps: InboundDeps,
    integration: Integration,
    next_event: AtomicU64,
}

impl Env {
    async fn new(settings: IntegrationSettings) -> Self {
        let db = TestDb::create().await.expect("test database");
        let sim = spawn(SimConfig {
            seed: 3,
            workers: 1,
            portals: vec![PortalConfig::new(PORTAL).with_private_app_token(TOKEN)],
            rate_limit: RateLimitConfig::disabled(),
            ..SimConfig::default()
        })
        .await
        .expect("simulator starts");
        let hubspot = Client::builder(ClientConfig::new(
            sim.base_url().parse().expect("valid URL"),
        ))
        .build()
        .expect("client builds");
        hubspot.set_token_source(PortalId::new(PORTAL), TokenSource::PrivateApp(TOKEN.into()));
        let integration = integrations::create(
            db.store.pool(),
            &NewIntegration {
                name: "acme".into(),
                portal_id: PortalId::new(PORTAL),
                app_id: None,
                auth_mode: AuthMode::PrivateApp,
                settings,
            },
        )
        .await
        .expect("integration created");
        let deps = InboundDeps {
            store: db.store.clone(),
            hubspot,
        };
        Self {
            db,
            sim,
            deps,
            integration,
            next_event: AtomicU64::new(1),
        }
    }

    async fn finish(self) {
        self.sim.stop().await;
        self.db.cleanup().await.expect("cleanup");
    }

    /// A contact created by a user in HubSpot; returns its id.
    fn create_contact(&self, props: &[(&str, &str)]) -> u64 {
        self.sim
            .control()
            .create_contact(PORTAL, &UserEdit::new(props.iter().copied()))
            .expect("contact created")
            .id
    }

    fn update_contact(&self, id: u64, props: &[(&str, &str)]) {
        self.sim
            .control()
            .update_contact(PORTAL, id, &UserEdit::new(props.iter().copied()))
            .expect("contact updated");
    }

    /// The webhook event HubSpot would send, as the ingester queues it.
    fn event(&self, portal: u64, ty: &str, contact: u64, extra: Value) -> InboundEvent {
        let n = self.next_event.fetch_add(1, Ordering::Relaxed);
        let mut body = json!({
            "eventId": n,
            "subscriptionId": 1,
            "portalId": portal,
            "appId": 1_160_452,
            "occurredAt": 1_700_000_000_000_i64 + i64::try_from(n).expect("small"),
            "subscriptionType": ty,
            "attemptNumber": 0,
            "objectId": contact,
            "changeSource": "CRM_UI",
        });
        if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
            body.extend(extra);
        }
        let raw = RawValue::from_string(body.to_string()).expect("JSON");
        InboundEvent::new(WebhookEvent::from_raw(&raw), 0, HashMap::new(), None)
    }

    fn creation(&self, contact: u64) -> InboundEvent {
        self.event(PORTAL, "contact.creation", contact, json!({}))
    }

    fn change(&self, contact: u64, property: &str, value: &str) -> InboundEvent {
        self.event(
            PORTAL,
            "contact.propertyChange",
            contact,
            json!({ "propertyName": property, "propertyValue": value }),
        )
    }

    async fn process(&self, jobs: Vec<InboundEvent>) -> BatchReport {
        process_batch(&self.deps, jobs)
            .await
            .expect("batch processed")
    }

    async fn lead(&self, contact: u64) -> Option<Lead> {
        leads::by_crm_id(
            self.db.store.pool(),
            self.integration.id,
            ContactId::new(contact),
        )
        .await
        .expect("lead query")
    }

    async fn all_leads(&self) -> Vec<Lead> {
        leads::list(
            self.db.store.pool(),
            self.integration.id,
            &ListLeads {
                after: None,
                limit: 1000,
                include_deleted: true,
            },
        )
        .await
        .expect("list leads")
    }

    /// A contact created in HubSpot and synced to a lead.
    async fn synced_contact(&self, props: &[(&str, &str)]) -> (u64, Lead) {
        let id = self.create_contact(props);
        let report = self.process(vec![self.creation(id)]).await;
        assert_eq!(report.created, 1);
        (id, self.lead(id).await.expect("lead created"))
    }
}

fn field(lead: &Lead, column: LeadColumn) -> Option<&str> {
    lead.fields.get(column)
}

#[tokio::test]
async fn a_contact_created_in_hubspot_becomes_a_lead_with_mapped_fields() {
    // Arrange
    let env = Env::new(IntegrationSettings::default()).await;
    let id = env.create_contact(&[
        ("email", "ada@example.com"),
        ("firstname", "Ada"),
        ("lastname", "Lovelace"),
        ("city", "London"),
        ("hs_lead_status", "IN_PROGRESS"),
    ]);

    // Act
    let report = env.process(vec![env.creation(id)]).await;

    // Assert
    assert_eq!(report.created, 1);
    assert_eq!(report.processed, 1);
    let lead = env.lead(id).await.expect("lead created");
    assert_eq!(lead.crm_id, Some(ContactId::new(id)));
    assert_eq!(field(&lead, LeadColumn::Email), Some("ada@example.com"));
    assert_eq!(field(&lead, LeadColumn::FirstName), Some("Ada"));
    assert_eq!(field(&lead, LeadColumn::Location), Some("London"));
    assert_eq!(field(&lead, LeadColumn::Status), Some("in_progress"));
    assert_eq!(lead.source_system, SourceSystem::Hubspot);
    assert_eq!(lead.crm_sync_status, CrmSyncStatus::Synced);
    let trail = audit::for_lead(env.db.store.pool(), lead.id, 10)
        .await
        .expect("audit");
    assert!(trail.iter().any(|r| r.entry.action == AuditAction::Created));
    env.finish().await;
}

#[tokio::test]
async fn an_edit_updates_the_lead_once_even_when_the_batch_is_redelivered() {
    // Arrange
    let env = Env::new(IntegrationSettings::default()).await;
    let (id, before) = env
        .synced_contact(&[("email", "bob@example.com"), ("firstname", "Bob")])
        .await;
    env.update_contact(id, &[("firstname", "Robert")]);
    let batch = vec![env.change(id, "firstname", "Robert")];

    // Act
    let first = env.process(batch.clone()).await;
    let after_first = env.lead(id).await.expect("lead");
    let second = env.process(batch).await;
    let after_second = env.lead(id).await.expect("lead");

    // Assert
    assert_eq!(first.updated, 1);
    assert_eq!(field(&after_first, LeadColumn::FirstName), Some("Robert"));
    assert!(after_first.sync_version > before.sync_version);
    assert_eq!(second.duplicates, 1);
    assert_eq!(second.processed, 0);
    assert_eq!(second.batch_reads, 0, "a processed batch reads nothing");
    assert_eq!(after_second.sync_version, after_first.sync_version);
    assert_eq!(after_second.updated_at, after_first.updated_at);
    env.finish().await;
}

#[tokio::test]
async fn a_platform_lead_with_the_same_email_is_linked_not_duplicated() {
    // Arrange
    let env = Env::new(IntegrationSettings::default()).await;
    let mut fields = LeadFields::default();
    fields.set(LeadColumn::Email, Some("Cleo@Example.com".into()));
    fields.set(LeadColumn::FirstName, Some("Cleo".into()));
    let existing = leads::create(
        env.db.store.pool(),
        env.integration.id,
        &NewLead {
            fields,
            source_system: Some(SourceSystem::Platform),
        },
    )
    .await
    .expect("platform lead");
    let id = env.create_contact(&[("email", "cleo@example.com"), ("firstname", "Cleo")]);

    // Act
    let report = env.process(vec![env.creation(id)]).await;

    // Assert
    assert_eq!(report.linked, 1);
    assert_eq!(report.created, 0);
    let all = env.all_leads().await;
    assert_eq!(all.len(), 1, "never a second lead");
    assert_eq!(all[0].id, existing.id);
    assert_eq!(all[0].crm_id, Some(ContactId::new(id)));
    env.finish().await;
}

#[tokio::test]
async fn our_own_echo_writes_nothing_and_is_audited() {
    // Arrange
    let env = Env::new(IntegrationSettings::default()).await;
    let (id, before) = env
        .synced_contact(&[("email", "dan@example.com"), ("firstname", "Dan")])
        .await;
    ledger::record_writes(
        env.db.store.pool(),
        PortalId::new(PORTAL),
        ContactId::new(id),
        &[("firstname", ValueHash::of("Daniel"))],
    )
    .await
    .expect("ledger");
    env.update_contact(id, &[("firstname", "Daniel")]);

    // Act
    let report = env
        .process(vec![env.change(id, "firstname", "Daniel")])
        .await;

    // Assert
    assert_eq!(report.skipped.get("echo"), Some(&1));
    assert_eq!(report.updated, 0);
    let after = env.lead(id).await.expect("lead");
    assert_eq!(field(&after, LeadColumn::FirstName), Some("Dan"));
    assert_eq!(after.sync_version, before.sync_version);
    let trail = audit::for_lead(env.db.store.pool(), after.id, 10)
        .await
        .expect("audit");
    assert!(trail.iter().any(
        |r| r.entry.action == AuditAction::Skipped && r.entry.reason.as_deref() == Some("echo")
    ));
    env.finish().await;
}

async fn conflict(policy: ConflictPolicy) -> (Lead, Vec<audit::AuditRecord>) {
    let env = Env::new(IntegrationSettings {
        conflict_policy: policy,
        ..IntegrationSettings::default()
    })
    .await;
    let (id, lead) = env
        .synced_contact(&[("email", "eve@example.com"), ("company", "Old Co")])
        .await;
    // Both sides change the field after they last agreed.
    leads::update(
        env.db.store.pool(),
        env.integration.id,
        lead.id,
        &[(LeadColumn::Company, Some("Platform Co".to_owned()))]
            .into_iter()
            .collect(),
    )
    .await
    .expect("platform edit");
    env.update_contact(id, &[("company", "HubSpot Co")]);
    env.process(vec![env.change(id, "company", "HubSpot Co")])
        .await;
    let after = env.lead(id).await.expect("lead");
    let trail = audit::for_lead(env.db.store.pool(), after.id, 20)
        .await
        .expect("audit");
    env.finish().await;
    (after, trail)
}

/// Runs the conflict scenario under `policy` and checks the lead's company and
/// the audited decision.
async fn assert_conflict(policy: ConflictPolicy, kept: &str, reason: &str, losing: &str) {
    // Act
    let (lead, trail) = conflict(policy).await;

    // Assert
    assert_eq!(field(&lead, LeadColumn::Company), Some(kept));
    let decided = trail
        .iter()
        .find(|r| r.entry.action == AuditAction::Conflict)
        .expect("conflict audited");
    assert_eq!(decided.entry.reason.as_deref(), Some(reason));
    assert_eq!(
        decided.entry.changes["company"].losing_value.as_deref(),
        Some(losing)
    );
}

#[tokio::test]
async fn a_conflict_goes_to_hubspot_by_default_and_audits_the_losing_value() {
    assert_conflict(
        ConflictPolicy::HubspotWins,
        "HubSpot Co",
        "conflict_hubspot_wins",
        "Platform Co",
    )
    .await;
}

#[tokio::test]
async fn with_platform_wins_the_lead_keeps_its_value() {
    assert_conflict(
        ConflictPolicy::PlatformWins,
        "Platform Co",
        "conflict_platform_wins",
        "HubSpot Co",
    )
    .await;
}

#[tokio::test]
async fn a_deleted_contact_unlinks_its_lead() {
    // Arrange
    let env = Env::new(IntegrationSettings::default()).await;
    let (id, lead) = env
        .synced_contact(&[("email", "fay@example.com"), ("firstname", "Fay")])
        .await;
    env.sim
        .control()
        .archive_contact(PORTAL, id, None)
        .expect("archived");

    // Act
    let report = env
        .process(vec![env.event(PORTAL, "contact.deletion", id, json!({}))])
        .await;

    // Assert
    assert_eq!(report.unlinked, 1);
    assert!(env.lead(id).await.is_none());
    let after = leads::by_id(env.db.store.pool(), env.integration.id, lead.id)
        .await
        .expect("query")
        .expect("the lead stays");
    assert_eq!(after.crm_id, None);
    assert_eq!(after.crm_sync_status, CrmSyncStatus::Unlinked);
    assert_eq!(after.deleted_at, None);
    env.finish().await;
}

#[tokio::test]
async fn unknown_portals_and_event_types_are_dead_lettered() {
    // Arrange
    let env = Env::new(IntegrationSettings::default()).await;
    let stranger = env.event(999, "contact.creation", 5, json!({}));
    let deal = env.event(PORTAL, "deal.creation", 6, json!({}));

    // Act
    let report = env.process(vec![stranger, deal]).await;

    // Assert
    assert_eq!(report.dead_lettered, 2);
    assert_eq!(report.batch_reads, 0);
    let letters = dead_letters::list(env.db.store.pool(), &DeadLetterFilter::default())
        .await
        .expect("dead letters");
    let mut reasons: Vec<&str> = letters.iter().map(|l| l.reason.as_str()).collect();
    reasons.sort_unstable();
    assert_eq!(reasons, ["unknown_event_type", "unknown_portal"]);
    assert!(letters.iter().all(|l| l.payload.get("eventId").is_some()));
    env.finish().await;
}

#[tokio::test]
async fn a_batch_of_150_contacts_takes_two_batch_reads() {
    // Arrange
    let env = Env::new(IntegrationSettings::default()).await;
    let ids: Vec<u64> = (0..150)
        .map(|i| {
            let email = format!("bulk{i}@example.com");
            env.create_contact(&[("email", email.as_str()), ("firstname", "Bulk")])
        })
        .collect();
    // Several events per contact still coalesce to one read of each.
    let mut jobs: Vec<InboundEvent> = ids.iter().map(|id| env.creation(*id)).collect();
    jobs.extend(ids.iter().map(|id| env.change(*id, "firstname", "Bulk")));
    env.sim.control().reset_stats();

    // Act
    let report = env.process(jobs).await;

    // Assert
    assert_eq!(env.sim.control().stats().calls(BATCH_READ), 2);
    assert_eq!(report.created, 150);
    assert_eq!(report.processed, 300);
    assert_eq!(env.all_leads().await.len(), 150);
    env.finish().await;
}

#[tokio::test]
async fn soft_delete_mode_deletes_the_lead_and_a_restore_brings_it_back() {
    // Arrange
    let env = Env::new(IntegrationSettings {
        deletion_mode: integrations::DeletionMode::SoftDelete,
        ..IntegrationSettings::default()
    })
    .await;
    let (id, lead) = env
        .synced_contact(&[("email", "gil@example.com"), ("firstname", "Gil")])
        .await;
    env.sim
        .control()
        .archive_contact(PORTAL, id, None)
        .expect("archived");

    // Act
    let deleted = env
        .process(vec![env.event(PORTAL, "contact.deletion", id, json!({}))])
        .await;
    let after_delete = env.lead(id).await.expect("the lead keeps its contact id");
    env.sim
        .control()
        .restore_contact(PORTAL, id, None)
        .expect("restored");
    let restored = env
        .process(vec![env.event(PORTAL, "contact.restore", id, json!({}))])
        .await;

    // Assert
    assert_eq!(deleted.deleted, 1);
    assert!(after_delete.deleted_at.is_some());
    assert_eq!(restored.restored, 1);
    let after_restore = env.lead(id).await.expect("lead");
    assert_eq!(after_restore.id, lead.id);
    assert_eq!(after_restore.deleted_at, None);
    env.finish().await;
}

#[tokio::test]
async fn a_privacy_deletion_erases_the_lead_and_blocks_its_recreation() {
    // Arrange
    let env = Env::new(IntegrationSettings::default()).await;
    let (id, lead) = env
        .synced_contact(&[("email", "hal@example.com"), ("firstname", "Hal")])
        .await;
    env.sim
        .control()
        .gdpr_delete_contact(PORTAL, id, None)
        .expect("gdpr delete");

    // Act
    let report = env
        .process(vec![env.event(
            PORTAL,
            "contact.privacyDeletion",
            id,
            json!({}),
        )])
        .await;
    let again = env.create_contact(&[("email", "hal@example.com"), ("firstname", "Hal")]);
    let recreate = env.process(vec![env.creation(again)]).await;

    // Assert
    assert_eq!(report.erased, 1);
    assert_eq!(report.batch_reads, 0, "an erased contact is not read");
    let erased = leads::by_id(env.db.store.pool(), env.integration.id, lead.id)
        .await
        .expect("query")
        .expect("tombstoned row");
    assert_eq!(field(&erased, LeadColumn::Email), None);
    assert_eq!(field(&erased, LeadColumn::FirstName), None);
    assert_eq!(recreate.created, 0);
    assert_eq!(recreate.skipped.get("tombstoned"), Some(&1));
    env.finish().await;
}

#[tokio::test]
async fn a_merge_repoints_the_lead_to_the_surviving_contact() {
    // Arrange
    let env = Env::new(IntegrationSettings::default()).await;
    let primary = env.create_contact(&[("email", "ivy@example.com"), ("firstname", "Ivy")]);
    let (merged, lead) = env
        .synced_contact(&[("email", "ivy.old@example.com"), ("firstname", "Ivy")])
        .await;
    env.sim
        .control()
        .merge_contacts(
            PORTAL,
            &leadsync_hubspot_sim::MergeRequest {
                primary_object_id: primary,
                object_id_to_merge: merged,
                user_id: None,
            },
        )
        .expect("merged");

    // Act
    let report = env
        .process(vec![env.event(
            PORTAL,
            "contact.merge",
            primary,
            json!({
                "primaryObjectId": primary,
                "mergedObjectIds": [merged],
                "newObjectId": primary,
            }),
        )])
        .await;

    // Assert
    assert_eq!(report.merged, 1);
    let after = env.lead(primary).await.expect("lead follows the merge");
    assert_eq!(after.id, lead.id);
    assert!(env.lead(merged).await.is_none());
    assert_eq!(env.all_leads().await.len(), 1);
    env.finish().await;
}

#[tokio::test]
async fn a_permanent_hubspot_error_dead_letters_the_batch() {
    // Arrange
    let env = Env::new(IntegrationSettings::default()).await;
    let id = env.create_contact(&[("email", "jo@example.com")]);
    env.deps.hubspot.set_token_source(
        PortalId::new(PORTAL),
        TokenSource::PrivateApp("pat-na1-revoked".into()),
    );

    // Act
    let report = env.process(vec![env.creation(id)]).await;

    // Assert
    assert_eq!(report.dead_lettered, 1);
    assert!(env.lead(id).await.is_none());
    let letters = dead_letters::list(env.db.store.pool(), &DeadLetterFilter::default())
        .await
        .expect("dead letters");
    assert_eq!(letters.len(), 1);
    assert!(
        letters[0].reason.starts_with("hubspot_"),
        "{}",
        letters[0].reason
    );
    assert_eq!(letters[0].integration_id, Some(env.integration.id));
    env.finish().await;
}
