use std::collections::BTreeMap;
use std::time::Duration;

use leadsync_domain::{ContactId, LeadField, PortalId, ValueHash};
use leadsync_store::audit::{self, AuditAction, AuditEntry, Direction, FieldChange};
use leadsync_store::dead_letters::{self, DeadLetterFilter, DeadLetterKind, NewDeadLetter};
use leadsync_store::integrations::{self, ConflictPolicy, Tokens};
use leadsync_store::stats::{self, StatsDelta};
use leadsync_store::{CryptoError, StoreError, TokenCipher, events, leads, ledger};
use secrecy::{ExposeSecret, SecretString};

use crate::helpers::{new_integration, setup};

#[tokio::test]
async fn processed_events_dedupe() {
    // Arrange
    let (db, acme) = setup().await;
    let pool = db.store.pool();

    // Act
    let first = events::mark_processed(pool, Some(acme.id), "1:2:3:4:5")
        .await
        .unwrap();
    let second = events::mark_processed(pool, Some(acme.id), "1:2:3:4:5")
        .await
        .unwrap();
    let batch = events::mark_processed_many(pool, None, &["1:2:3:4:5", "k2", "k3", "k3"])
        .await
        .unwrap();

    // Assert
    assert!(first && !second);
    assert_eq!(batch.len(), 2);
    assert!(batch.contains("k2") && batch.contains("k3"));
    assert!(events::is_processed(pool, "k2").await.unwrap());
    assert!(!events::is_processed(pool, "nope").await.unwrap());
    let known = events::processed_among(pool, &["k2", "nope", "1:2:3:4:5"])
        .await
        .unwrap();
    assert_eq!(known.len(), 2);
    assert!(known.contains("k2") && known.contains("1:2:3:4:5"));
    db.cleanup().await.unwrap();
}

#[tokio::test]
async fn ledger_upserts_and_reads_in_batches() {
    // Arrange
    let (db, _) = setup().await;
    let pool = db.store.pool();
    let portal = PortalId::new(1001);
    let (c1, c2) = (ContactId::new(1), ContactId::new(2));

    // Act
    ledger::record_writes(
        pool,
        portal,
        c1,
        &[
            ("email", ValueHash::of("a@x.io")),
            ("firstname", ValueHash::of("A")),
        ],
    )
    .await
    .unwrap();
    ledger::record_writes(pool, portal, c1, &[("email", ValueHash::of("b@x.io"))])
        .await
        .unwrap();
    ledger::record_writes(pool, portal, c2, &[("email", ValueHash::of("c@x.io"))])
        .await
        .unwrap();
    let emails = ledger::get(pool, portal, &[c1, c2], &["email"])
        .await
        .unwrap();
    let all = ledger::get(pool, portal, &[c1], &[]).await.unwrap();
    let stored_lengths: Vec<i32> =
        sqlx::query_scalar("SELECT DISTINCT octet_length(value_hash) FROM echo_ledger")
            .fetch_all(pool)
            .await
            .unwrap();
    let other_portal = ledger::get(pool, PortalId::new(7), &[c1], &[])
        .await
        .unwrap();

    // Assert
    assert_eq!(emails.len(), 2);
    assert_eq!(
        emails[&(c1, "email".to_owned())].value_hash,
        ValueHash::of("b@x.io")
    );
    assert_eq!(
        emails[&(c2, "email".to_owned())].value_hash,
        ValueHash::of("c@x.io")
    );
    assert_eq!(all.len(), 2);
    assert!(other_portal.is_empty());
    assert_eq!(stored_lengths, vec![16]);
    db.cleanup().await.unwrap();
}

#[tokio::test]
async fn dead_letters_bump_and_replay() {
    // Arrange
    let (db, acme) = setup().await;
    let pool = db.store.pool();
    let letter = NewDeadLetter {
        integration_id: Some(acme.id),
        portal_id: Some(PortalId::new(1001)),
        event_key: "ev-1".into(),
        kind: DeadLetterKind::InboundEvent,
        reason: "contact_not_found".into(),
        payload: serde_json::json!({"objectId": 1}),
    };

    // Act
    let first = dead_letters::record(pool, &letter).await.unwrap();
    let bumped = dead_letters::record(
        pool,
        &NewDeadLetter {
            reason: "again".into(),
            ..letter.clone()
        },
    )
    .await
    .unwrap();
    let open = dead_letters::list(pool, &DeadLetterFilter::default())
        .await
        .unwrap();
    let replayed = dead_letters::mark_replayed(pool, first.id).await.unwrap();
    let twice = dead_letters::mark_replayed(pool, first.id).await.unwrap();
    let refailed = dead_letters::record(pool, &letter).await.unwrap();
    let everything = dead_letters::list(
        pool,
        &DeadLetterFilter {
            include_replayed: true,
            ..DeadLetterFilter::default()
        },
    )
    .await
    .unwrap();

    // Assert
    assert_eq!(first.attempts, 1);
    assert_eq!(
        (bumped.id, bumped.attempts, bumped.reason.as_str()),
        (first.id, 2, "again")
    );
    assert_eq!(open.len(), 1);
    assert_eq!(
        replayed.unwrap().payload,
        serde_json::json!({"objectId": 1})
    );
    assert!(twice.is_none(), "a letter is replayed once");
    assert_ne!(
        refailed.id, first.id,
        "a failure after a replay opens a new letter"
    );
    assert_eq!(everything.len(), 2);
    assert_eq!(
        dead_letters::count_open(pool, Some(acme.id)).await.unwrap(),
        1
    );
    assert_eq!(first.portal_id(), Some(PortalId::new(1001)));
    db.cleanup().await.unwrap();
}

#[tokio::test]
async fn tokens_are_encrypted_at_rest() {
    // Arrange
    let (db, acme) = setup().await;
    let pool = db.store.pool();
    let cipher = TokenCipher::from_base64_key(&TokenCipher::generate_key()).unwrap();
    let wrong = TokenCipher::from_base64_key(&TokenCipher::generate_key()).unwrap();
    let tokens = Tokens {
        access: SecretString::from("access-token-plain".to_owned()),
        refresh: Some(SecretString::from("refresh-token-plain".to_owned())),
        expires_at: Some(chrono::Utc::now()),
    };

    // Act
    integrations::store_tokens(pool, acme.id, &cipher, &tokens)
        .await
        .unwrap();
    let raw: Vec<u8> =
        sqlx::query_scalar("SELECT access_token_enc FROM integrations WHERE id = $1")
            .bind(acme.id)
            .fetch_one(pool)
            .await
            .unwrap();
    let read = integrations::tokens(pool, acme.id, &cipher)
        .await
        .unwrap()
        .unwrap();
    let with_wrong_key = integrations::tokens(pool, acme.id, &wrong).await;

    // Assert
    assert!(
        !raw.windows(6).any(|w| w == b"access"),
        "ciphertext must not contain the token"
    );
    assert_eq!(read.access.expose_secret(), "access-token-plain");
    assert_eq!(read.refresh.unwrap().expose_secret(), "refresh-token-plain");
    assert!(matches!(
        with_wrong_key,
        Err(StoreError::Crypto(CryptoError::Decrypt))
    ));
    db.cleanup().await.unwrap();
}

#[tokio::test]
async fn integrations_are_unique_and_keep_settings() {
    // Arrange
    let (db, acme) = setup().await;
    let pool = db.store.pool();
    let mut settings = acme.settings.clone();
    settings
        .field_policies
        .insert(LeadField::Phone, ConflictPolicy::PlatformWins);
    settings.empty_never_overwrites = true;

    // Act
    let dup_name = integrations::create(
        pool,
        &integrations::NewIntegration {
            name: "acme".into(),
            portal_id: PortalId::new(5),
            app_id: None,
            auth_mode: integrations::AuthMode::PrivateApp,
            settings: Default::default(),
        },
    )
    .await;
    let dup_portal = integrations::create(
        pool,
        &integrations::NewIntegration {
            name: "acme-2".into(),
            portal_id: PortalId::new(1001),
            app_id: None,
            auth_mode: integrations::AuthMode::PrivateApp,
            settings: Default::default(),
        },
    )
    .await;
    let updated = integrations::update_settings(pool, acme.id, &settings)
        .await
        .unwrap();
    let by_portal = integrations::by_portal(pool, PortalId::new(1001))
        .await
        .unwrap()
        .unwrap();
    let by_name = integrations::by_name(pool, "acme").await.unwrap().unwrap();

    // Assert
    assert!(matches!(
        dup_name,
        Err(StoreError::DuplicateIntegrationName)
    ));
    assert!(matches!(
        dup_portal,
        Err(StoreError::DuplicateIntegrationPortal)
    ));
    assert_eq!(updated.settings, settings);
    assert_eq!(
        by_portal.settings.policy_for(LeadField::Phone),
        ConflictPolicy::PlatformWins
    );
    assert_eq!(
        by_portal.settings.policy_for(LeadField::Email),
        ConflictPolicy::HubspotWins
    );
    assert_eq!(by_name.id, acme.id);
    db.cleanup().await.unwrap();
}

#[tokio::test]
async fn stats_add_up_per_integration() {
    // Arrange
    let (db, acme) = setup().await;
    let other = new_integration(&db.store, "other", 2002).await;
    let pool = db.store.pool();
    let mut delta = StatsDelta::new();
    delta
        .received(10)
        .processed(7)
        .failed(1)
        .skipped("echo", 2)
        .processing_time(Duration::from_millis(30))
        .from_hubspot(true, 7)
        .to_hubspot(false, 1);

    // Act
    stats::increment(pool, acme.id, &delta).await.unwrap();
    stats::increment(
        pool,
        acme.id,
        StatsDelta::new()
            .received(5)
            .skipped("echo", 1)
            .skipped("no_change", 3)
            .processing_time(Duration::from_millis(10)),
    )
    .await
    .unwrap();
    let read = stats::read(pool, acme.id).await.unwrap();
    let empty = stats::read(pool, other.id).await.unwrap();

    // Assert
    assert_eq!((read.received, read.processed, read.failed), (15, 7, 1));
    assert_eq!(
        read.skipped,
        BTreeMap::from([("echo".to_owned(), 3), ("no_change".to_owned(), 3)])
    );
    assert_eq!(read.skipped_total(), 6);
    assert_eq!(read.avg_processing_ms, Some(20.0));
    assert_eq!((read.from_hubspot_success, read.to_hubspot_failed), (7, 1));
    assert!(read.last_event_at.is_some());
    assert_eq!(empty, stats::SyncStats::default());
    db.cleanup().await.unwrap();
}

#[tokio::test]
async fn audit_records_and_privacy_redaction() {
    // Arrange
    let (db, acme) = setup().await;
    let pool = db.store.pool();
    let lead = leads::create(pool, acme.id, &crate::helpers::lead("Ann", "ann@x.io"))
        .await
        .unwrap();
    let mut entry = AuditEntry::new(Direction::Inbound, AuditAction::Conflict);
    entry.integration_id = Some(acme.id);
    entry.lead_id = Some(lead.id);
    entry.contact_id = Some(ContactId::new(3));
    entry.reason = Some("conflict_platform_wins".into());
    entry.changes.insert(
        "email".into(),
        FieldChange {
            before: Some("ann@x.io".into()),
            after: Some("ann@x.io".into()),
            losing_value: Some("ann@y.io".into()),
        },
    );
    let skipped = AuditEntry {
        action: AuditAction::Skipped,
        reason: Some("echo".into()),
        changes: BTreeMap::new(),
        ..entry.clone()
    };

    // Act
    audit::record(pool, &entry).await.unwrap();
    audit::record_many(pool, &[skipped]).await.unwrap();
    let trail = audit::for_lead(pool, lead.id, 10).await.unwrap();
    let mut tx = db.store.begin_inbound().await.unwrap();
    leads::erase(&mut tx, acme.id, None, Some("ann@x.io"))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let redacted = audit::for_lead(pool, lead.id, 10).await.unwrap();

    // Assert
    assert_eq!(trail.len(), 2);
    assert_eq!(trail[1].entry, entry, "oldest last");
    assert_eq!(trail[0].entry.reason.as_deref(), Some("echo"));
    let conflict = redacted
        .iter()
        .find(|r| r.entry.action == AuditAction::Conflict)
        .unwrap();
    assert!(conflict.changes_redacted && conflict.entry.changes.is_empty());
    let raw: String =
        sqlx::query_scalar("SELECT changes::text FROM audit_log WHERE action = 'conflict'")
            .fetch_one(pool)
            .await
            .unwrap();
    assert!(!raw.contains("ann@"), "no personal data left: {raw}");
    assert!(
        leads::is_tombstoned(pool, acme.id, None, Some(" ANN@x.io "))
            .await
            .unwrap()
    );
    db.cleanup().await.unwrap();
}
