use std::collections::BTreeMap;

use leadsync_domain::{ContactId, LeadField, ValueHash};
use leadsync_store::LeadColumn;
use leadsync_store::leads::{self, InboundLead, LeadFields, SyncDirection, SyncUpdate};
use leadsync_store::outbox::{self, ChangeOperation, LeadChange};
use sqlx::PgPool;

use crate::helpers::setup;

async fn changes(pool: &PgPool) -> Vec<LeadChange> {
    let mut tx = pool.begin().await.unwrap();
    let batch = outbox::claim_batch(&mut tx, 100).await.unwrap();
    tx.rollback().await.unwrap();
    batch
}

#[tokio::test]
async fn plain_sql_writes_enter_the_outbox_with_exact_fields() {
    // Arrange
    let (db, acme) = setup().await;
    let pool = db.store.pool();

    // Act: what platform code does, without this crate
    sqlx::query(
        "INSERT INTO leads (integration_id, first_name, email) VALUES ($1, 'Ann', 'a@x.io')",
    )
    .bind(acme.id)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query("UPDATE leads SET phone = '123', company = 'Acme', first_name = 'Ann'")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE leads SET first_name = first_name, crm_id = 42, crm_sync_status = 'synced'",
    )
    .execute(pool)
    .await
    .unwrap();
    sqlx::query("UPDATE leads SET deleted_at = now()")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM leads")
        .execute(pool)
        .await
        .unwrap();
    let rows = changes(pool).await;

    // Assert
    use LeadField::*;
    let got: Vec<(ChangeOperation, Vec<LeadField>)> = rows
        .iter()
        .map(|c| (c.operation, c.changed_fields.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (ChangeOperation::Insert, vec![FirstName, Email, Status]),
            (ChangeOperation::Update, vec![Phone, Company]),
            (ChangeOperation::Delete, vec![]),
            (ChangeOperation::Delete, vec![]),
        ],
        "a bookkeeping-only update writes no row"
    );
    assert!(rows.iter().all(|c| c.integration_id == acme.id));
    assert_eq!(
        rows[3].crm_id,
        Some(ContactId::new(42)),
        "a delete carries the contact id"
    );
    db.cleanup().await.unwrap();
}

#[tokio::test]
async fn inbound_writes_stay_out_of_the_outbox() {
    // Arrange
    let (db, acme) = setup().await;
    let contact = InboundLead {
        crm_id: ContactId::new(1),
        fields: LeadFields {
            email: Some("h@x.io".into()),
            ..LeadFields::default()
        },
        synced_values: BTreeMap::new(),
        last_modified_in_crm: None,
    };

    // Act
    let mut tx = db.store.begin_inbound().await.unwrap();
    let outcome = leads::insert_or_link(&mut tx, acme.id, &contact)
        .await
        .unwrap();
    let leads::LinkOutcome::Created(lead) = outcome else {
        panic!("{outcome:?}")
    };
    sqlx::query("UPDATE leads SET company = 'FromHubSpot'")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // The marker is transaction-local: the next transaction on a pooled
    // connection is a platform write again.
    let mut conns = Vec::new();
    for _ in 0..8 {
        let mut c = db.store.pool().acquire().await.unwrap();
        sqlx::query("UPDATE leads SET job_title = 'x' || random()")
            .execute(&mut *c)
            .await
            .unwrap();
        conns.push(c);
    }
    drop(conns);
    let rows = changes(db.store.pool()).await;

    // Assert
    assert_eq!(rows.len(), 8, "only the 8 platform updates");
    assert!(
        rows.iter()
            .all(|c| c.changed_fields == vec![LeadField::JobTitle])
    );
    let row = leads::by_id(db.store.pool(), acme.id, lead.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.fields.company.as_deref(), Some("FromHubSpot"));
    db.cleanup().await.unwrap();
}

#[tokio::test]
async fn field_updated_at_tracks_platform_changes_only() {
    // Arrange
    let (db, acme) = setup().await;
    let pool = db.store.pool();
    let lead = leads::create(pool, acme.id, &crate::helpers::lead("Ann", "a@x.io"))
        .await
        .unwrap();
    let created_stamp = lead.field_updated_at[&LeadField::FirstName];

    // Act
    let patched = leads::update(
        pool,
        acme.id,
        lead.id,
        &BTreeMap::from([(LeadColumn::Phone, Some("1".to_owned()))]),
    )
    .await
    .unwrap()
    .unwrap();
    let mut tx = db.store.begin_inbound().await.unwrap();
    let inbound = SyncUpdate {
        direction: SyncDirection::FromCrm,
        values: BTreeMap::from([(LeadColumn::Company, Some("C".to_owned()))]),
        synced_values: BTreeMap::from([(LeadField::Company, ValueHash::of("C"))]),
        last_modified_in_crm: None,
        link_crm_id: None,
    };
    let synced = leads::apply_sync(&mut *tx, acme.id, lead.id, &inbound)
        .await
        .unwrap()
        .unwrap();
    tx.commit().await.unwrap();
    let noop = leads::update(pool, acme.id, lead.id, &BTreeMap::new())
        .await
        .unwrap()
        .unwrap();

    // Assert
    assert_eq!(
        lead.field_updated_at.keys().copied().collect::<Vec<_>>(),
        vec![LeadField::FirstName, LeadField::Email, LeadField::Status]
    );
    assert!(patched.field_updated_at[&LeadField::Phone] >= created_stamp);
    assert_eq!(
        patched.field_updated_at[&LeadField::FirstName],
        created_stamp
    );
    assert!(patched.updated_at > lead.updated_at);
    assert!(
        !synced.field_updated_at.contains_key(&LeadField::Company),
        "inbound is not a platform edit"
    );
    assert_eq!(
        noop.updated_at, synced.updated_at,
        "a no-op keeps updated_at"
    );
    db.cleanup().await.unwrap();
}

#[tokio::test]
async fn relays_claim_disjoint_batches_and_mark_them_relayed() {
    // Arrange
    let (db, acme) = setup().await;
    let pool = db.store.pool();
    for i in 0..5 {
        leads::create(
            pool,
            acme.id,
            &crate::helpers::lead("L", &format!("l{i}@x.io")),
        )
        .await
        .unwrap();
    }

    // Act
    let mut first = pool.begin().await.unwrap();
    let a = outbox::claim_batch(&mut first, 3).await.unwrap();
    let mut second = pool.begin().await.unwrap();
    let b = outbox::claim_batch(&mut second, 3).await.unwrap();
    let ids: Vec<i64> = a.iter().map(|c| c.id).collect();
    let marked = outbox::mark_relayed(&mut *first, &ids).await.unwrap();
    first.commit().await.unwrap();
    second.rollback().await.unwrap();
    let (pending, oldest) = outbox::backlog(pool).await.unwrap();

    // Assert
    assert_eq!((a.len(), b.len()), (3, 2));
    assert!(a.iter().all(|x| b.iter().all(|y| x.id != y.id)));
    assert_eq!(marked, 3);
    assert_eq!(pending, 2);
    assert!(oldest.is_some());
    db.cleanup().await.unwrap();
}

#[tokio::test]
async fn a_push_is_requested_once_while_none_is_pending() {
    // Arrange: a lead whose own change was already relayed
    let (db, acme) = setup().await;
    let pool = db.store.pool();
    let lead = leads::create(pool, acme.id, &crate::helpers::lead("Ann", "a@x.io"))
        .await
        .unwrap();
    let created = changes(pool).await;
    outbox::mark_relayed(pool, &created.iter().map(|c| c.id).collect::<Vec<_>>())
        .await
        .unwrap();

    // Act
    let mut conn = pool.acquire().await.unwrap();
    let first = outbox::request_push(
        &mut conn,
        acme.id,
        lead.id,
        Some(ContactId::new(7)),
        &[LeadField::Phone],
    )
    .await
    .unwrap();
    let second = outbox::request_push(&mut conn, acme.id, lead.id, None, &[LeadField::Email])
        .await
        .unwrap();

    // Assert
    assert!(first && !second, "one pending row per lead is enough");
    let pending = changes(pool).await;
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].lead_id, lead.id);
    assert_eq!(pending[0].operation, ChangeOperation::Update);
    assert_eq!(pending[0].crm_id, Some(ContactId::new(7)));
    assert_eq!(pending[0].changed_fields, vec![LeadField::Phone]);
}
