//! The inbound flow through the whole chain: a CRM user acts in the HubSpot
//! simulator, which delivers signed webhook batches (with its retries,
//! duplicates and reordering) to the real ingester; the real worker drains
//! the Redis queue, reads HubSpot and writes Postgres.

use std::sync::atomic::Ordering::SeqCst;

use leadsync_hubspot_sim::{ApiFault, FaultConfig, MergeRequest};
use leadsync_store::IntegrationSettings;
use leadsync_store::audit::AuditAction;
use leadsync_store::integrations::{self, DeletionMode};
use leadsync_store::leads::{CrmSyncStatus, Lead, SourceSystem};
use secrecy::ExposeSecret as _;

use crate::chain::{
    Auth, BATCH_READ, DEADLINE, Options, PORTAL, TOKEN_ENDPOINT, World, eventually,
};

fn text(value: Option<&String>) -> Option<&str> {
    value.map(String::as_str)
}

/// Every personal field of the lead is empty.
fn erased(lead: &Lead) -> bool {
    let f = &lead.fields;
    [
        &f.first_name,
        &f.last_name,
        &f.email,
        &f.phone,
        &f.company,
        &f.job_title,
        &f.location,
        &f.country,
    ]
    .iter()
    .all(|v| v.is_none())
}

#[tokio::test]
async fn a_contact_created_in_hubspot_becomes_a_lead_and_an_edit_updates_it() {
    // Arrange
    let world = World::start().await;

    // Act: a sales rep creates a contact in HubSpot, then edits it.
    let contact = world.create_contact(&[
        ("email", "ada@example.com"),
        ("firstname", "Ada"),
        ("lastname", "Lovelace"),
        ("company", "Analytical Engines"),
    ]);
    let created = world
        .lead_when(contact, "a lead for the new contact", |_| true)
        .await;
    world.edit_contact(
        contact,
        &[("firstname", "Augusta Ada"), ("jobtitle", "Mathematician")],
    );
    let edited = world
        .lead_when(contact, "the edit to reach the lead", |l| {
            text(l.fields.job_title.as_ref()) == Some("Mathematician")
        })
        .await;
    world.settle().await;

    // Assert: one lead, created with the contact's values...
    assert_eq!(text(created.fields.email.as_ref()), Some("ada@example.com"));
    assert_eq!(text(created.fields.first_name.as_ref()), Some("Ada"));
    assert_eq!(text(created.fields.last_name.as_ref()), Some("Lovelace"));
    assert_eq!(
        text(created.fields.company.as_ref()),
        Some("Analytical Engines")
    );
    assert_eq!(created.source_system, SourceSystem::Hubspot);
    assert_eq!(created.crm_sync_status, CrmSyncStatus::Synced);
    // ...then updated in place by the edit, the rest untouched.
    assert_eq!(edited.id, created.id, "the edit updates the same lead");
    assert_eq!(text(edited.fields.first_name.as_ref()), Some("Augusta Ada"));
    assert_eq!(text(edited.fields.last_name.as_ref()), Some("Lovelace"));
    assert_eq!(world.leads().await.len(), 1, "exactly one lead");
    // The audit trail tells what happened, with before and after.
    let trail = world.audit(created.id).await;
    let creations: Vec<_> = trail
        .iter()
        .filter(|r| r.entry.action == AuditAction::Created)
        .collect();
    assert_eq!(creations.len(), 1, "{trail:#?}");
    assert_eq!(
        creations[0].entry.contact_id.map(|c| c.get()),
        Some(contact)
    );
    let update = trail
        .iter()
        .find(|r| {
            r.entry.action == AuditAction::Updated && r.entry.changes.contains_key("job_title")
        })
        .unwrap_or_else(|| panic!("no audited update of job_title in {trail:#?}"));
    let first_name = &update.entry.changes["first_name"];
    assert_eq!(text(first_name.before.as_ref()), Some("Ada"));
    assert_eq!(text(first_name.after.as_ref()), Some("Augusta Ada"));
    // HubSpot was only read, in batches, and nothing went back.
    let stats = world.stats();
    assert!(stats.calls(BATCH_READ) >= 2, "{stats:#?}");
    assert_eq!(
        stats.calls("GET /crm/v3/objects/contacts/{contactId}"),
        0,
        "no per-contact reads"
    );
    world.assert_nothing_written_back().await;
    assert!(world.dead_letters().await.is_empty());
    world.finish().await;
}

#[tokio::test]
async fn duplicated_reordered_and_retried_deliveries_have_no_second_effect() {
    // Arrange: HubSpot duplicates and reorders events, and the answer to its
    // first POST is lost on the way back, so it retries every event in it.
    let world = World::start_with(Options {
        faults: FaultConfig {
            duplicate_rate: 0.5,
            reorder_rate: 0.5,
            ..FaultConfig::default()
        },
        lost_answers: 1,
        ..Options::default()
    })
    .await;

    // Act: five contacts, each created then edited twice in quick succession
    // (1 creation + 3 property changes + 2 edits = 6 events each).
    let contacts: Vec<u64> = (0..5)
        .map(|i| {
            let email = format!("dup{i}@example.com");
            world.create_contact(&[
                ("email", email.as_str()),
                ("firstname", "Original"),
                ("lastname", "Person"),
            ])
        })
        .collect();
    for contact in &contacts {
        world.edit_contact(*contact, &[("firstname", "First edit")]);
        world.edit_contact(*contact, &[("firstname", "Second edit")]);
    }
    world.settle().await;

    // Assert: HubSpot did misbehave as asked...
    let delivery = world.stats().delivery;
    let distinct = 6 * contacts.len() as u64;
    assert_eq!(delivery.events_enqueued, distinct, "{delivery:#?}");
    assert!(delivery.events_duplicated > 0, "{delivery:#?}");
    assert!(delivery.events_reordered > 0, "{delivery:#?}");
    assert!(delivery.events_retried > 0, "{delivery:#?}");
    let front = world.front.as_ref().expect("the lossy front");
    assert_eq!(front.lost.load(SeqCst), 1);
    let lost_events = front.lost_events.load(SeqCst) as u64;
    assert!(lost_events > 0);
    // ...the queue took each event once and refused every redelivery...
    assert_eq!(
        world
            .ingester_metric("leadsync_events_enqueued_total")
            .await,
        distinct as f64,
        "each distinct event is queued exactly once"
    );
    let duplicates = world
        .ingester_metric("leadsync_events_duplicate_total")
        .await;
    assert!(
        duplicates >= (delivery.events_duplicated + lost_events) as f64,
        "every redelivery is recognised as a duplicate: {duplicates} duplicates, {lost_events} events retried after a lost answer, {delivery:#?}"
    );
    assert_eq!(world.queue_state().await.stored, distinct);
    // ...so the worker applied each event exactly once...
    assert_eq!(world.worker.processed.get(), distinct);
    assert_eq!(world.worker.duplicates.get(), 0);
    // ...and each contact is one lead, created once, with HubSpot's latest
    // values whatever order the events came in.
    assert_eq!(world.leads().await.len(), contacts.len());
    for contact in &contacts {
        let lead = world
            .lead(*contact)
            .await
            .unwrap_or_else(|| panic!("no lead for contact {contact}"));
        assert_eq!(
            text(lead.fields.first_name.as_ref()),
            Some("Second edit"),
            "{lead:#?}"
        );
        assert_eq!(
            world.audited(lead.id, AuditAction::Created).await,
            1,
            "{:#?}",
            world.audit(lead.id).await
        );
    }
    world.assert_nothing_written_back().await;
    assert!(world.dead_letters().await.is_empty());
    world.finish().await;
}

#[tokio::test]
async fn a_deleted_contact_unlinks_its_lead_and_a_restore_relinks_it() {
    // Arrange: the default deletion mode (unlink).
    let world = World::start().await;
    let contact = world.create_contact(&[("email", "fay@example.com"), ("firstname", "Fay")]);
    let lead = world
        .lead_when(contact, "the contact's lead", |_| true)
        .await;

    // Act 1: a user deletes the contact in HubSpot.
    world
        .sim
        .control()
        .archive_contact(PORTAL, contact, None)
        .expect("deleted in HubSpot");
    let unlinked = world
        .lead_by_id_when(lead.id, "the lead to be unlinked", |l| l.crm_id.is_none())
        .await;

    // Assert 1: the lead stays, with its data, unlinked.
    assert_eq!(unlinked.crm_sync_status, CrmSyncStatus::Unlinked);
    assert_eq!(unlinked.deleted_at, None, "unlink mode keeps the lead");
    assert_eq!(
        text(unlinked.fields.email.as_ref()),
        Some("fay@example.com")
    );
    assert_eq!(text(unlinked.fields.first_name.as_ref()), Some("Fay"));
    assert!(world.lead(contact).await.is_none());
    let trail = world.audit(lead.id).await;
    assert!(
        trail.iter().any(|r| r.entry.action == AuditAction::Unlinked
            && r.entry.reason.as_deref() == Some("contact_deleted")),
        "{trail:#?}"
    );

    // Act 2: the user restores it from the recycle bin.
    world
        .sim
        .control()
        .restore_contact(PORTAL, contact, None)
        .expect("restored in HubSpot");
    let relinked = world
        .lead_when(contact, "the lead to be linked again", |_| true)
        .await;
    world.settle().await;

    // Assert 2: the same lead is linked again; no second lead.
    assert_eq!(relinked.id, lead.id);
    assert_eq!(relinked.deleted_at, None);
    assert_eq!(world.leads().await.len(), 1);
    assert_eq!(world.audited(lead.id, AuditAction::Created).await, 1);
    world.assert_nothing_written_back().await;
    assert!(world.dead_letters().await.is_empty());
    world.finish().await;
}

#[tokio::test]
async fn in_soft_delete_mode_a_deletion_soft_deletes_the_lead_and_a_restore_brings_it_back() {
    // Arrange
    let world = World::start_with(Options {
        settings: IntegrationSettings {
            deletion_mode: DeletionMode::SoftDelete,
            ..IntegrationSettings::default()
        },
        ..Options::default()
    })
    .await;
    let contact = world.create_contact(&[("email", "gil@example.com"), ("firstname", "Gil")]);
    let lead = world
        .lead_when(contact, "the contact's lead", |_| true)
        .await;

    // Act
    world
        .sim
        .control()
        .archive_contact(PORTAL, contact, None)
        .expect("deleted in HubSpot");
    let deleted = world
        .lead_when(contact, "the lead to be soft-deleted", |l| {
            l.deleted_at.is_some()
        })
        .await;
    world
        .sim
        .control()
        .restore_contact(PORTAL, contact, None)
        .expect("restored in HubSpot");
    let restored = world
        .lead_when(contact, "the lead to be restored", |l| {
            l.deleted_at.is_none()
        })
        .await;
    world.settle().await;

    // Assert: soft-deleted keeping its link, then back, the same lead.
    assert_eq!(deleted.id, lead.id);
    assert_eq!(deleted.crm_id.map(|c| c.get()), Some(contact));
    assert_eq!(restored.id, lead.id);
    assert_eq!(
        text(restored.fields.email.as_ref()),
        Some("gil@example.com")
    );
    assert_eq!(world.leads().await.len(), 1);
    assert_eq!(world.audited(lead.id, AuditAction::Restored).await, 1);
    world.assert_nothing_written_back().await;
    assert!(world.dead_letters().await.is_empty());
    world.finish().await;
}

#[tokio::test]
async fn a_privacy_deletion_erases_the_lead_and_its_tombstone_blocks_re_creation() {
    // Arrange
    let world = World::start().await;
    let contact = world.create_contact(&[
        ("email", "hal@example.com"),
        ("firstname", "Hal"),
        ("lastname", "Nine"),
        ("phone", "+15550100"),
    ]);
    let lead = world
        .lead_when(contact, "the contact's lead", |_| true)
        .await;

    // Act 1: a user GDPR-deletes the contact in HubSpot.
    world
        .sim
        .control()
        .gdpr_delete_contact(PORTAL, contact, None)
        .expect("GDPR-deleted in HubSpot");
    let erased_lead = world
        .lead_by_id_when(lead.id, "the lead's personal data to be erased", erased)
        .await;

    // Assert 1: the personal data is gone, from the lead and its audit trail.
    assert_eq!(erased_lead.crm_id, None);
    assert!(erased_lead.deleted_at.is_some(), "{erased_lead:#?}");
    let trail = world.audit(lead.id).await;
    assert!(
        trail.iter().any(|r| r.entry.action == AuditAction::Erased),
        "{trail:#?}"
    );
    let created = trail
        .iter()
        .find(|r| r.entry.action == AuditAction::Created)
        .expect("the creation stays audited");
    assert!(
        created.changes_redacted,
        "the audited values are redacted: {created:#?}"
    );

    // Act 2: the same person is added to HubSpot again.
    let again = world.create_contact(&[("email", "hal@example.com"), ("firstname", "Hal")]);
    world.settle().await;

    // Assert 2: the tombstone blocks a new lead.
    let decisions = world.audit_of_contact(again).await;
    assert!(
        decisions.contains(&("skipped".to_owned(), Some("tombstoned".to_owned()))),
        "{decisions:?}"
    );
    assert!(world.lead(again).await.is_none());
    let all = world.leads().await;
    assert_eq!(all.len(), 1, "only the erased lead: {all:#?}");
    assert!(erased(&all[0]));
    world.assert_nothing_written_back().await;
    assert!(world.dead_letters().await.is_empty());
    world.finish().await;
}

#[tokio::test]
async fn a_privacy_deletion_after_the_contact_was_deleted_still_erases_the_lead() {
    // Arrange: the contact was deleted first (the lead kept its data,
    // unlinked), as happens when a user deletes it and GDPR-deletes it from
    // the recycle bin later, or when HubSpot delivers the `contact.deletion`
    // of a GDPR delete before its `contact.privacyDeletion`.
    let world = World::start().await;
    let contact = world.create_contact(&[("email", "pia@example.com"), ("firstname", "Pia")]);
    let lead = world
        .lead_when(contact, "the contact's lead", |_| true)
        .await;
    world
        .sim
        .control()
        .archive_contact(PORTAL, contact, None)
        .expect("deleted in HubSpot");
    world
        .lead_by_id_when(lead.id, "the lead to be unlinked", |l| l.crm_id.is_none())
        .await;

    // Act: the contact is GDPR-deleted, then the person is added again.
    world
        .sim
        .control()
        .gdpr_delete_contact(PORTAL, contact, None)
        .expect("GDPR-deleted in HubSpot");
    world.settle().await;
    let after_erasure = world.lead_by_id(lead.id).await.expect("the lead row");
    let again = world.create_contact(&[("email", "pia@example.com"), ("firstname", "Pia")]);
    world.settle().await;

    // Assert: the person's data is erased, and the tombstone keeps it so.
    // Observed instead: `leads::erase` looks the lead up by contact id only,
    // the unlinked lead keeps every personal field (while an `erased` audit
    // entry without a lead is written), the tombstone holds the old contact
    // id but no address hash, and the new contact is linked to the old lead
    // by email.
    assert!(
        erased(&after_erasure),
        "personal data survived the privacy deletion: {after_erasure:#?}"
    );
    assert!(
        world.lead(again).await.is_none(),
        "the re-created contact got a lead: {:?}",
        world.audit_of_contact(again).await
    );
    world.finish().await;
}

#[tokio::test]
async fn a_merge_repoints_the_lead_to_the_primary_contact() {
    // Arrange: a lead for the contact that will be merged away; the primary
    // contact has none yet (HubSpot lost its webhooks, as it may).
    let world = World::start().await;
    let merged = world.create_contact(&[
        ("email", "ivy.old@example.com"),
        ("firstname", "Ivy"),
        ("company", "Old Co"),
    ]);
    let lead = world
        .lead_when(merged, "the merged contact's lead", |_| true)
        .await;
    world.sim.control().set_faults(FaultConfig {
        drop_rate: 1.0,
        ..FaultConfig::default()
    });
    let primary = world.create_contact(&[
        ("email", "ivy@example.com"),
        ("firstname", "Ivy"),
        ("lastname", "Primary"),
    ]);
    assert!(world.sim.control().wait_for_delivery_idle(DEADLINE).await);
    world.sim.control().set_faults(FaultConfig::default());
    assert!(world.stats().delivery.events_lost > 0);
    assert!(world.lead(primary).await.is_none());

    // Act: a user merges the two contacts, the primary surviving.
    world
        .sim
        .control()
        .merge_contacts(
            PORTAL,
            &MergeRequest {
                primary_object_id: primary,
                object_id_to_merge: merged,
                user_id: None,
            },
        )
        .expect("merged in HubSpot");
    let repointed = world
        .lead_when(primary, "the lead to follow the merge", |_| true)
        .await;
    world.settle().await;

    // Assert: the same lead now belongs to the primary contact and carries
    // its values (HubSpot wins by default); nothing is linked to the old id.
    let repointed = world.lead_by_id(repointed.id).await.expect("the lead");
    assert_eq!(
        repointed.id,
        lead.id,
        "the primary contact's lead must be the merged contact's lead, not a new one: {:#?}",
        world.leads().await
    );
    assert_eq!(repointed.crm_id.map(|c| c.get()), Some(primary));
    assert!(world.lead(merged).await.is_none());
    assert_eq!(world.leads().await.len(), 1);
    assert_eq!(
        text(repointed.fields.email.as_ref()),
        Some("ivy@example.com")
    );
    assert_eq!(text(repointed.fields.last_name.as_ref()), Some("Primary"));
    assert_eq!(
        text(repointed.fields.company.as_ref()),
        Some("Old Co"),
        "the merge moved the company to the primary"
    );
    assert_eq!(world.audited(lead.id, AuditAction::Merged).await, 1);
    world.assert_nothing_written_back().await;
    assert!(world.dead_letters().await.is_empty());
    world.finish().await;
}

#[tokio::test]
async fn an_event_for_an_unknown_portal_is_dead_lettered() {
    // Arrange: another account has the app installed but is not connected.
    const STRANGER: u64 = 777_000;
    let world = World::start_with(Options {
        unconnected_portals: vec![STRANGER],
        ..Options::default()
    })
    .await;

    // Act: a user there creates a contact (1 creation + 2 property changes).
    let contact = world.create_contact_in(
        STRANGER,
        &[("email", "who@example.com"), ("firstname", "Who")],
    );
    world.settle().await;

    // Assert: accepted by the ingester, dead-lettered by the worker with the
    // raw event, and HubSpot never called for it.
    let delivery = world.stats().delivery;
    assert_eq!(delivery.events_enqueued, 3, "{delivery:#?}");
    let metrics = world.ingester_metrics().await;
    let answered: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("leadsync_http_requests_total{"))
        .collect();
    assert!(
        answered.iter().any(|l| l.contains("status=\"200\"")),
        "{answered:#?}"
    );
    assert!(
        !answered.iter().any(|l| l.contains("status=\"4")),
        "never a 4xx to HubSpot: {answered:#?}"
    );
    let letters = world.dead_letters().await;
    assert_eq!(letters.len(), 3, "{letters:#?}");
    for letter in &letters {
        assert_eq!(letter.reason, "unknown_portal");
        assert_eq!(letter.integration_id, None);
        assert_eq!(letter.portal_id().map(|p| p.get()), Some(STRANGER));
        assert_eq!(letter.payload["objectId"], contact);
        assert_eq!(letter.payload["portalId"], STRANGER);
        assert!(letter.payload.get("eventId").is_some(), "{letter:#?}");
    }
    assert_eq!(world.worker.dead_lettered.get(), 3);
    assert!(world.leads().await.is_empty());
    assert_eq!(world.stats().api_calls, 0, "no HubSpot call at all");
    world.finish().await;
}

#[tokio::test]
async fn a_transient_hubspot_5xx_is_retried_and_the_sync_succeeds() {
    // Arrange: HubSpot answers 503 to the next five batch reads: every try
    // the client makes for one call, so the queue has to retry the job too.
    let world = World::start().await;
    world
        .sim
        .control()
        .inject_api_fault(ApiFault::new(503).on(BATCH_READ).times(5))
        .expect("fault injected");

    // Act
    let contact = world.create_contact(&[("email", "retry@example.com"), ("firstname", "Rita")]);
    let lead = world
        .lead_when(contact, "a lead despite HubSpot's 503s", |_| true)
        .await;
    world.settle().await;

    // Assert: all five 503s were met, then a read succeeded; one lead.
    let stats = world.stats();
    assert_eq!(stats.api_faults_served, 5, "{stats:#?}");
    assert!(world.sim.control().api_faults().is_empty());
    assert_eq!(world.hubspot_calls("batch_read", "transient"), 5);
    assert!(world.hubspot_calls("batch_read", "ok") >= 1);
    assert!(
        world.worker.batches.with_label_values(&["failed"]).get() >= 1,
        "the batch failed and its jobs were retried by the queue"
    );
    assert_eq!(text(lead.fields.first_name.as_ref()), Some("Rita"));
    assert_eq!(world.leads().await.len(), 1);
    assert_eq!(world.audited(lead.id, AuditAction::Created).await, 1);
    assert!(world.dead_letters().await.is_empty());
    world.assert_nothing_written_back().await;
    world.finish().await;
}

#[tokio::test]
async fn a_permanent_hubspot_400_is_dead_lettered_with_its_reason_and_not_retried() {
    // Arrange: HubSpot refuses every batch read of the account as invalid.
    let world = World::start().await;
    world
        .sim
        .control()
        .inject_api_fault(
            ApiFault::new(400)
                .on(BATCH_READ)
                .for_portal(PORTAL)
                .with_message("Property values were not valid"),
        )
        .expect("fault injected");

    // Act: 1 creation + 2 property changes.
    let contact = world.create_contact(&[("email", "jo@example.com"), ("firstname", "Jo")]);
    world.settle().await;

    // Assert: every event of the contact is dead-lettered with the reason...
    let letters = world.dead_letters().await;
    assert_eq!(letters.len(), 3, "{letters:#?}");
    for letter in &letters {
        assert_eq!(letter.reason, "hubspot_validation", "{letter:#?}");
        assert_eq!(letter.integration_id, Some(world.integration.id));
        assert_eq!(letter.payload["objectId"], contact);
        assert!(letter.payload.get("eventId").is_some(), "{letter:#?}");
    }
    assert_eq!(world.worker.dead_lettered.get(), 3);
    // ...each refused read was tried once, and no job was retried.
    let served = world.stats().api_faults_served;
    assert!(served >= 1);
    assert_eq!(world.stats().calls(BATCH_READ), served);
    assert_eq!(world.hubspot_calls("batch_read", "validation"), served);
    assert_eq!(world.worker.failed.get(), 0, "a 400 is not retried");
    assert!(world.leads().await.is_empty());
    world.sim.control().clear_api_faults();
    world.finish().await;
}

#[tokio::test]
async fn an_expired_oauth_token_is_refreshed_once_and_the_call_succeeds() {
    // Arrange: the account is connected through OAuth, and HubSpot has
    // expired its access token (leadsync still thinks it valid).
    let world = World::start_with(Options {
        auth: Auth::OAuth,
        ..Options::default()
    })
    .await;
    let before = integrations::tokens(world.db.store.pool(), world.integration.id, &world.cipher())
        .await
        .expect("tokens decrypt")
        .expect("tokens stored");
    assert_eq!(world.sim.control().expire_access_tokens(None), 1);

    // Act: a contact is created, then edited.
    let contact = world.create_contact(&[("email", "olga@example.com"), ("firstname", "Olga")]);
    world
        .lead_when(contact, "a lead through the refreshed token", |_| true)
        .await;
    world.edit_contact(contact, &[("firstname", "Olga Maria")]);
    let lead = world
        .lead_when(contact, "the edit through the same token", |l| {
            text(l.fields.first_name.as_ref()) == Some("Olga Maria")
        })
        .await;
    world.settle().await;

    // Assert: one refusal, one refresh, then every call succeeded.
    let stats = world.stats();
    assert_eq!(
        stats.calls(TOKEN_ENDPOINT),
        2,
        "the install's code exchange and exactly one refresh: {stats:#?}"
    );
    assert_eq!(world.hubspot_calls("batch_read", "token_expired"), 1);
    assert!(world.hubspot_calls("batch_read", "ok") >= 2);
    assert_eq!(
        world
            .worker
            .hubspot
            .token_refreshes
            .with_label_values(&["ok"])
            .get(),
        1
    );
    // The new token is kept, encrypted, with its new expiry.
    let after = eventually("the refreshed token at rest", async || {
        let stored =
            integrations::tokens(world.db.store.pool(), world.integration.id, &world.cipher())
                .await
                .map_err(|e| e.to_string())?
                .ok_or("no tokens")?;
        if stored.access.expose_secret() == before.access.expose_secret() {
            return Err("the expired access token is still stored".to_owned());
        }
        Ok(stored)
    })
    .await;
    assert!(after.expires_at.is_some_and(|at| at > chrono::Utc::now()));
    assert_eq!(
        after.refresh.as_ref().map(|r| r.expose_secret().to_owned()),
        before
            .refresh
            .as_ref()
            .map(|r| r.expose_secret().to_owned()),
        "HubSpot's refresh token does not rotate"
    );
    assert_eq!(world.leads().await.len(), 1);
    assert_eq!(lead.crm_id.map(|c| c.get()), Some(contact));
    assert!(world.dead_letters().await.is_empty());
    world.assert_nothing_written_back().await;
    world.finish().await;
}
