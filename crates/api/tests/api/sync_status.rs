use leadsync_domain::ContactId;
use leadsync_store::audit::{self, AuditAction, AuditEntry, Direction};

use crate::helpers::{Tenant, acme_with_a_lead, json_of};

/// An audit entry of `tenant`'s integration about `lead`.
fn entry(
    tenant: &Tenant,
    lead: uuid::Uuid,
    direction: Direction,
    action: AuditAction,
) -> AuditEntry {
    let mut entry = AuditEntry::new(direction, action);
    entry.integration_id = Some(tenant.integration.id);
    entry.lead_id = Some(lead);
    entry
}

#[tokio::test]
async fn sync_status_answers_why_a_lead_was_skipped() {
    // Arrange
    let (api, acme, id) = acme_with_a_lead().await;
    let pool = api.db.store.pool();
    let mut created = entry(&acme, id, Direction::Outbound, AuditAction::Created);
    created.contact_id = Some(ContactId::new(77));
    audit::record(pool, &created).await.unwrap();
    let mut skipped = entry(&acme, id, Direction::Inbound, AuditAction::Skipped);
    skipped.contact_id = Some(ContactId::new(77));
    skipped.event_key = Some("hs:1001:1:2:77:1780000000000:email".to_owned());
    skipped.reason = Some("echo".to_owned());
    audit::record(pool, &skipped).await.unwrap();

    // Act
    let status = json_of(
        api.get(&format!("/v1/leads/{id}/sync-status"), &acme).await,
        200,
    )
    .await;
    let short = json_of(
        api.get(&format!("/v1/leads/{id}/sync-status?history=1"), &acme)
            .await,
        200,
    )
    .await;
    let bad = api
        .get(&format!("/v1/leads/{id}/sync-status?history=0"), &acme)
        .await;

    // Assert
    assert_eq!(status["lead_id"], id.to_string());
    assert_eq!(status["crm_sync_status"], "not_synced");
    let skip = &status["last_skip"];
    assert_eq!(skip["action"], "skipped");
    assert_eq!(skip["reason"], "echo");
    assert_eq!(skip["direction"], "inbound");
    assert_eq!(skip["contact_id"], 77);
    assert_eq!(skip["event_key"], "hs:1001:1:2:77:1780000000000:email");
    assert!(skip["explanation"].as_str().unwrap().contains("echo"));
    let actions: Vec<&str> = status["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["skipped", "created"], "newest first");
    assert_eq!(short["history"].as_array().unwrap().len(), 1);
    assert_eq!(json_of(bad, 422).await["field"], "history");
    api.finish().await;
}

#[tokio::test]
async fn the_last_skip_is_found_behind_a_full_page_of_newer_decisions() {
    // Arrange: a skip, then more newer decisions than `history` returns.
    let (api, acme, id) = acme_with_a_lead().await;
    let pool = api.db.store.pool();
    let mut conflict = entry(&acme, id, Direction::Inbound, AuditAction::Conflict);
    conflict.reason = Some("conflict_platform_wins".to_owned());
    let conflict_id = audit::record(pool, &conflict).await.unwrap();
    let newer: Vec<AuditEntry> = (0..25)
        .map(|_| entry(&acme, id, Direction::Outbound, AuditAction::Updated))
        .collect();
    audit::record_many(pool, &newer).await.unwrap();

    // Act
    let status = json_of(
        api.get(&format!("/v1/leads/{id}/sync-status"), &acme).await,
        200,
    )
    .await;

    // Assert
    let history = status["history"].as_array().unwrap();
    assert_eq!(history.len(), 20);
    assert!(history.iter().all(|e| e["action"] == "updated"));
    assert_eq!(status["last_skip"]["id"], conflict_id);
    assert_eq!(status["last_skip"]["action"], "conflict");
    assert_eq!(status["last_skip"]["reason"], "conflict_platform_wins");
    api.finish().await;
}
