use std::collections::BTreeMap;
use std::time::Duration;

use leadsync_domain::{ContactId, LeadField, ValueHash};
use leadsync_store::leads::{
    self, CrmSyncStatus, InboundLead, LeadFields, LinkOutcome, ListLeads, SyncDirection, SyncUpdate,
};
use leadsync_store::{LeadColumn, StoreError};

use crate::helpers::{lead, new_integration, setup};

fn contact(id: u64, email: &str) -> InboundLead {
    InboundLead {
        crm_id: ContactId::new(id),
        fields: LeadFields {
            first_name: Some("Hub".into()),
            email: Some(email.to_owned()),
            ..LeadFields::default()
        },
        synced_values: BTreeMap::from([(LeadField::Email, ValueHash::of(email))]),
        last_modified_in_crm: None,
    }
}

#[tokio::test]
async fn email_is_unique_per_integration_case_insensitively() {
    // Arrange
    let (db, acme) = setup().await;
    let other = new_integration(&db.store, "other", 2002).await;
    let pool = db.store.pool();
    let first = leads::create(pool, acme.id, &lead("Ann", "Ann@Example.com"))
        .await
        .unwrap();

    // Act
    let dup = leads::create(pool, acme.id, &lead("Ann2", "ann@example.COM")).await;
    let elsewhere = leads::create(pool, other.id, &lead("Ann3", "ann@example.com")).await;
    let found = leads::by_email(pool, acme.id, "ANN@example.com")
        .await
        .unwrap();
    leads::delete(pool, acme.id, first.id).await.unwrap();
    let after_delete = leads::create(pool, acme.id, &lead("Ann4", "ann@example.com")).await;
    let empty_a = leads::create(pool, acme.id, &lead("E1", "")).await;
    let empty_b = leads::create(pool, acme.id, &lead("E2", "")).await;

    // Assert
    assert!(matches!(dup, Err(StoreError::DuplicateEmail)), "{dup:?}");
    assert!(elsewhere.is_ok());
    assert_eq!(found.unwrap().id, first.id);
    assert!(
        after_delete.is_ok(),
        "a soft-deleted lead gives its address up"
    );
    assert!(
        empty_a.is_ok() && empty_b.is_ok(),
        "empty addresses are not unique"
    );
    db.cleanup().await.unwrap();
}

#[tokio::test]
async fn crm_id_is_unique_per_integration() {
    // Arrange
    let (db, acme) = setup().await;
    let pool = db.store.pool();
    let a = leads::create(pool, acme.id, &lead("A", "a@x.io"))
        .await
        .unwrap();
    let b = leads::create(pool, acme.id, &lead("B", "b@x.io"))
        .await
        .unwrap();
    let link = |id| SyncUpdate {
        direction: SyncDirection::ToCrm,
        values: BTreeMap::new(),
        synced_values: BTreeMap::new(),
        last_modified_in_crm: None,
        link_crm_id: Some(ContactId::new(id)),
    };

    // Act
    let linked = leads::apply_sync(pool, acme.id, a.id, &link(77))
        .await
        .unwrap()
        .unwrap();
    let dup = leads::apply_sync(pool, acme.id, b.id, &link(77)).await;

    // Assert
    assert_eq!(linked.crm_id, Some(ContactId::new(77)));
    assert_eq!(linked.crm_sync_status, CrmSyncStatus::Synced);
    assert_eq!(linked.sync_version, a.sync_version + 1);
    assert_eq!(linked.last_sync_direction, Some(SyncDirection::ToCrm));
    assert!(matches!(dup, Err(StoreError::DuplicateCrmId)), "{dup:?}");
    db.cleanup().await.unwrap();
}

#[tokio::test]
async fn insert_or_link_creates_links_and_never_duplicates() {
    // Arrange
    let (db, acme) = setup().await;
    let platform = leads::create(db.store.pool(), acme.id, &lead("P", "p@x.io"))
        .await
        .unwrap();
    let mut tx = db.store.begin_inbound().await.unwrap();

    // Act
    let created = leads::insert_or_link(&mut tx, acme.id, &contact(1, "new@x.io"))
        .await
        .unwrap();
    let again = leads::insert_or_link(&mut tx, acme.id, &contact(1, "new@x.io"))
        .await
        .unwrap();
    let linked = leads::insert_or_link(&mut tx, acme.id, &contact(2, "P@X.io"))
        .await
        .unwrap();
    let elsewhere = leads::insert_or_link(&mut tx, acme.id, &contact(3, "p@x.io"))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let stored_hash: String =
        sqlx::query_scalar("SELECT synced_values ->> 'email' FROM leads WHERE crm_id = 1")
            .fetch_one(db.store.pool())
            .await
            .unwrap();

    // Assert
    let LinkOutcome::Created(c) = created else {
        panic!("{created:?}")
    };
    assert_eq!(stored_hash, ValueHash::of("new@x.io").to_hex());
    assert_eq!(c.crm_id, Some(ContactId::new(1)));
    assert_eq!(c.source_system, leads::SourceSystem::Hubspot);
    assert_eq!(c.last_sync_direction, Some(SyncDirection::FromCrm));
    assert_eq!(
        c.synced_values[&LeadField::Email],
        ValueHash::of("new@x.io")
    );
    assert!(matches!(again, LinkOutcome::AlreadyLinked(ref l) if l.id == c.id));
    assert!(
        matches!(linked, LinkOutcome::Linked(ref l) if l.id == platform.id
        && l.crm_id == Some(ContactId::new(2)))
    );
    assert!(matches!(elsewhere, LinkOutcome::EmailLinkedElsewhere(ref l) if l.id == platform.id));
    let all = leads::list(db.store.pool(), acme.id, &ListLeads::default())
        .await
        .unwrap();
    assert_eq!(all.len(), 2);
    db.cleanup().await.unwrap();
}

#[tokio::test]
async fn insert_or_link_races_settle_on_one_lead() {
    // Arrange
    let (db, acme) = setup().await;

    // Act: two workers handle the same new contact at once
    let tasks: Vec<_> = (0..2)
        .map(|_| {
            let store = db.store.clone();
            tokio::spawn(async move {
                let mut tx = store.begin_inbound().await.unwrap();
                let outcome = leads::insert_or_link(&mut tx, acme.id, &contact(9, "race@x.io"))
                    .await
                    .unwrap();
                // Hold the transaction open so the other one has to wait on it.
                tokio::time::sleep(Duration::from_millis(150)).await;
                tx.commit().await.unwrap();
                outcome
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap());
    }

    // Assert
    let created = outcomes
        .iter()
        .filter(|o| matches!(o, LinkOutcome::Created(_)))
        .count();
    let already = outcomes
        .iter()
        .filter(|o| matches!(o, LinkOutcome::AlreadyLinked(_)))
        .count();
    assert_eq!((created, already), (1, 1), "{outcomes:?}");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM leads")
        .fetch_one(db.store.pool())
        .await
        .unwrap();
    assert_eq!(n, 1);
    db.cleanup().await.unwrap();
}

#[tokio::test]
async fn erase_leaves_tombstones_that_block_recreation() {
    // Arrange
    let (db, acme) = setup().await;
    let mut tx = db.store.begin_inbound().await.unwrap();
    let LinkOutcome::Created(lead) =
        leads::insert_or_link(&mut tx, acme.id, &contact(5, "gone@x.io"))
            .await
            .unwrap()
    else {
        panic!("expected a new lead")
    };

    // Act
    let erased = leads::erase(&mut tx, acme.id, Some(ContactId::new(5)), None)
        .await
        .unwrap();
    let again = leads::erase(&mut tx, acme.id, Some(ContactId::new(5)), None)
        .await
        .unwrap();
    let same_contact = leads::insert_or_link(&mut tx, acme.id, &contact(5, "other@x.io"))
        .await
        .unwrap();
    let same_email = leads::insert_or_link(&mut tx, acme.id, &contact(6, "GONE@x.io"))
        .await
        .unwrap();
    let fresh = leads::insert_or_link(&mut tx, acme.id, &contact(7, "new@x.io"))
        .await
        .unwrap();
    tx.commit().await.unwrap();

    // Assert
    assert_eq!(erased.lead_id, Some(lead.id));
    assert_eq!(again.lead_id, None, "idempotent");
    assert_eq!(same_contact, LinkOutcome::Tombstoned);
    assert_eq!(same_email, LinkOutcome::Tombstoned);
    assert!(matches!(fresh, LinkOutcome::Created(_)));
    let row = leads::by_id(db.store.pool(), acme.id, lead.id)
        .await
        .unwrap()
        .unwrap();
    assert!(row.fields.email.is_none() && row.fields.first_name.is_none());
    assert!(row.crm_id.is_none() && row.deleted_at.is_some());
    assert_eq!(row.crm_sync_status, CrmSyncStatus::Unlinked);
    assert!(row.synced_values.is_empty());
    db.cleanup().await.unwrap();
}

#[tokio::test]
async fn unlink_soft_delete_restore_and_merge() {
    // Arrange
    let (db, acme) = setup().await;
    let mut tx = db.store.begin_inbound().await.unwrap();
    for (id, email) in [(1, "a@x.io"), (2, "b@x.io"), (3, "c@x.io")] {
        leads::insert_or_link(&mut tx, acme.id, &contact(id, email))
            .await
            .unwrap();
    }

    // Act
    let unlinked = leads::unlink(&mut *tx, acme.id, ContactId::new(3))
        .await
        .unwrap()
        .unwrap();
    let deleted = leads::soft_delete_by_crm_id(&mut *tx, acme.id, ContactId::new(2))
        .await
        .unwrap()
        .unwrap();
    let restored = leads::restore_by_crm_id(&mut *tx, acme.id, ContactId::new(2))
        .await
        .unwrap()
        .unwrap();
    let merge = leads::repoint_merged(
        &mut tx,
        acme.id,
        &[ContactId::new(1), ContactId::new(2)],
        ContactId::new(10),
    )
    .await
    .unwrap();
    // The same merge again (its webhook after a push applied it): nothing moves.
    let again = leads::repoint_merged(&mut tx, acme.id, &[ContactId::new(1)], ContactId::new(10))
        .await
        .unwrap();
    tx.commit().await.unwrap();

    // Assert
    assert!(merge.repointed);
    assert_eq!((again.kept, again.repointed), (merge.kept, false));
    assert!(again.unlinked.is_empty());
    assert!(unlinked.crm_id.is_none());
    assert_eq!(unlinked.crm_sync_status, CrmSyncStatus::Unlinked);
    assert!(deleted.deleted_at.is_some() && deleted.crm_id.is_some());
    assert!(restored.deleted_at.is_none());
    let pool = db.store.pool();
    let kept = leads::by_crm_id(pool, acme.id, ContactId::new(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(merge.kept, Some(kept.id));
    assert_eq!(merge.unlinked.len(), 1);
    assert!(
        leads::by_crm_id(pool, acme.id, ContactId::new(1))
            .await
            .unwrap()
            .is_none()
    );
    db.cleanup().await.unwrap();
}

#[tokio::test]
async fn batch_fetch_update_and_list() {
    // Arrange
    let (db, acme) = setup().await;
    let mut tx = db.store.begin_inbound().await.unwrap();
    for id in 1..=5u64 {
        leads::insert_or_link(&mut tx, acme.id, &contact(id, &format!("c{id}@x.io")))
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    let pool = db.store.pool();
    let ids: Vec<ContactId> = [2u64, 4, 99].into_iter().map(ContactId::new).collect();

    // Act
    let batch = leads::by_crm_ids(pool, acme.id, &ids).await.unwrap();
    let target = &batch[0];
    let update = SyncUpdate {
        direction: SyncDirection::FromCrm,
        values: BTreeMap::from([(LeadColumn::Company, Some("Acme".to_owned()))]),
        synced_values: BTreeMap::from([(LeadField::Company, ValueHash::of("Acme"))]),
        last_modified_in_crm: Some(chrono::Utc::now()),
        link_crm_id: None,
    };
    let applied = leads::apply_sync(pool, acme.id, target.id, &update)
        .await
        .unwrap()
        .unwrap();
    let patched = leads::update(
        pool,
        acme.id,
        target.id,
        &BTreeMap::from([(LeadColumn::JobTitle, Some("CTO".to_owned()))]),
    )
    .await
    .unwrap()
    .unwrap();
    let page1 = leads::list(
        pool,
        acme.id,
        &ListLeads {
            limit: 3,
            ..ListLeads::default()
        },
    )
    .await
    .unwrap();
    let page2 = leads::list(
        pool,
        acme.id,
        &ListLeads {
            after: page1.last().map(Into::into),
            limit: 3,
            ..ListLeads::default()
        },
    )
    .await
    .unwrap();

    // Assert
    assert_eq!(batch.len(), 2);
    assert_eq!(applied.fields.company.as_deref(), Some("Acme"));
    assert_eq!(applied.sync_version, target.sync_version + 1);
    assert!(applied.last_modified_in_crm.is_some());
    assert_eq!(
        applied.synced_values.len(),
        2,
        "hashes are merged, not replaced"
    );
    assert_eq!(patched.fields.job_title.as_deref(), Some("CTO"));
    assert_eq!((page1.len(), page2.len()), (3, 2));
    assert!(page1.iter().all(|a| page2.iter().all(|b| a.id != b.id)));
    db.cleanup().await.unwrap();
}

#[tokio::test]
async fn mapping_a_field_to_another_property_forgets_its_merge_base_only() {
    use leadsync_store::IntegrationSettings;
    use leadsync_store::integrations;

    // Arrange: a lead whose phone and email both sides agreed on
    let (db, acme) = crate::helpers::setup().await;
    let pool = db.store.pool();
    let lead = leads::create(pool, acme.id, &crate::helpers::lead("Ann", "a@x.io"))
        .await
        .unwrap();
    sqlx::query(
        "UPDATE leads SET synced_values = '{\"phone\": \"aa\", \"email\": \"bb\"}' WHERE id = $1",
    )
    .bind(lead.id)
    .execute(pool)
    .await
    .unwrap();
    let bases = async || -> Vec<String> {
        let (keys,): (Vec<String>,) = sqlx::query_as(
            "SELECT coalesce(array_agg(k ORDER BY k), '{}') FROM leads, \
             jsonb_object_keys(synced_values) AS k WHERE id = $1",
        )
        .bind(lead.id)
        .fetch_one(pool)
        .await
        .unwrap();
        keys
    };

    // Act: an unrelated change, then a remapped phone
    let mut settings = IntegrationSettings {
        empty_never_overwrites: true,
        ..IntegrationSettings::default()
    };
    integrations::update_settings(pool, acme.id, &settings)
        .await
        .unwrap();
    let unrelated = bases().await;
    settings
        .field_mapping
        .insert(leadsync_domain::LeadField::Phone, "mobilephone".to_owned());
    integrations::update_settings(pool, acme.id, &settings)
        .await
        .unwrap();
    let remapped = bases().await;

    // Assert
    assert_eq!(unrelated, ["email", "phone"]);
    assert_eq!(remapped, ["email"]);
}

#[tokio::test]
async fn a_settings_replacement_at_a_stale_version_changes_nothing() {
    use leadsync_store::IntegrationSettings;
    use leadsync_store::integrations::{self, SettingsVersion};

    // Arrange: a lead with a merge base for its phone
    let (db, acme) = setup().await;
    let pool = db.store.pool();
    let lead = leads::create(pool, acme.id, &crate::helpers::lead("Ann", "a@x.io"))
        .await
        .unwrap();
    sqlx::query("UPDATE leads SET synced_values = '{\"phone\": \"aa\"}' WHERE id = $1")
        .bind(lead.id)
        .execute(pool)
        .await
        .unwrap();
    let (_, created) = integrations::get_versioned(pool, acme.id)
        .await
        .unwrap()
        .unwrap();
    let mut remap_phone = IntegrationSettings::default();
    remap_phone
        .field_mapping
        .insert(LeadField::Phone, "mobilephone".to_owned());
    let outbound_off = IntegrationSettings {
        directions: integrations::Directions {
            inbound: true,
            outbound: false,
        },
        ..IntegrationSettings::default()
    };

    // Act
    let applied = integrations::replace_settings(pool, acme.id, &outbound_off, Some(created))
        .await
        .unwrap();
    let stale = integrations::replace_settings(pool, acme.id, &remap_phone, Some(created))
        .await
        .unwrap();
    let (after, version) = integrations::get_versioned(pool, acme.id)
        .await
        .unwrap()
        .unwrap();
    let bases: serde_json::Value =
        sqlx::query_scalar("SELECT synced_values FROM leads WHERE id = $1")
            .bind(lead.id)
            .fetch_one(pool)
            .await
            .unwrap();
    let blind = integrations::update_settings(pool, acme.id, &remap_phone)
        .await
        .unwrap();
    let (_, blind_version) = integrations::get_versioned(pool, acme.id)
        .await
        .unwrap()
        .unwrap();
    let missing = integrations::replace_settings(pool, uuid::Uuid::now_v7(), &remap_phone, None)
        .await
        .unwrap();

    // Assert
    assert_eq!(
        Some(created),
        SettingsVersion::new(1),
        "a new integration is at 1"
    );
    let (applied, applied_version) = applied.expect("the current version applies");
    assert_eq!(applied_version, version);
    assert_eq!(version.get(), created.get() + 1);
    assert!(!applied.settings.directions.outbound);
    assert!(stale.is_none(), "a stale version is refused");
    assert_eq!(
        after.settings, outbound_off,
        "the refused replacement wrote nothing"
    );
    assert_eq!(
        bases,
        serde_json::json!({"phone": "aa"}),
        "nor forgot a merge base"
    );
    assert_eq!(blind.settings, remap_phone, "no version: unconditional");
    assert_eq!(blind_version.get(), version.get() + 1);
    assert!(missing.is_none());
    db.cleanup().await.unwrap();
}
