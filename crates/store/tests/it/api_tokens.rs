use leadsync_domain::PortalId;
use leadsync_store::StoreError;
use leadsync_store::api_tokens::{self, TOKEN_PREFIX};
use leadsync_store::dead_letters::{self, DeadLetterFilter, DeadLetterKind};
use secrecy::{ExposeSecret as _, SecretString};

use crate::helpers::{new_integration, setup};

#[tokio::test]
async fn an_issued_token_verifies_to_its_integration_until_revoked() {
    // Arrange
    let (db, acme) = setup().await;
    let pool = db.store.pool();

    // Act
    let issued = api_tokens::issue(pool, acme.id, " dashboard ")
        .await
        .unwrap();
    let verified = api_tokens::verify(pool, &issued.token).await.unwrap();
    let revoked = api_tokens::revoke(pool, acme.id, issued.record.id)
        .await
        .unwrap();
    let again = api_tokens::revoke(pool, acme.id, issued.record.id)
        .await
        .unwrap();
    let after = api_tokens::verify(pool, &issued.token).await.unwrap();

    // Assert
    let token = issued.token.expose_secret();
    assert!(token.starts_with(TOKEN_PREFIX));
    assert_eq!(issued.record.label, "dashboard");
    assert!(token.starts_with(&issued.record.token_prefix));
    let verified = verified.expect("a fresh token verifies");
    assert_eq!(verified.integration_id, acme.id);
    assert_eq!(verified.token_id, issued.record.id);
    assert!(revoked && !again, "a token is revoked once");
    assert_eq!(after, None, "a revoked token is refused");
    let stored: Vec<u8> = sqlx::query_scalar("SELECT token_hash FROM api_tokens WHERE id = $1")
        .bind(issued.record.id)
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(
        stored,
        api_tokens::hash(token).to_vec(),
        "only the hash is stored"
    );
    let listed = api_tokens::list(pool, acme.id).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].revoked_at.is_some());
    assert!(listed[0].last_used_at.is_some(), "the use was recorded");
    db.cleanup().await.unwrap();
}

#[tokio::test]
async fn unknown_malformed_and_foreign_tokens_are_refused() {
    // Arrange
    let (db, acme) = setup().await;
    let pool = db.store.pool();
    let other = new_integration(&db.store, "globex", 1002).await;
    let issued = api_tokens::issue(pool, acme.id, "").await.unwrap();
    let mut altered = issued.token.expose_secret().to_owned();
    let last = if altered.ends_with('A') { "B" } else { "A" };
    altered.replace_range(altered.len() - 1.., last);

    // Act
    let unknown = api_tokens::verify(pool, &SecretString::from(altered))
        .await
        .unwrap();
    let malformed = api_tokens::verify(pool, &SecretString::from("Bearer nonsense"))
        .await
        .unwrap();
    let foreign_revoke = api_tokens::revoke(pool, other.id, issued.record.id)
        .await
        .unwrap();
    let long_label = api_tokens::issue(pool, acme.id, &"x".repeat(101)).await;
    let no_integration = api_tokens::issue(pool, uuid::Uuid::now_v7(), "x").await;

    // Assert
    assert_eq!(unknown, None);
    assert_eq!(malformed, None);
    assert!(!foreign_revoke, "another integration cannot revoke it");
    assert!(
        api_tokens::verify(pool, &issued.token)
            .await
            .unwrap()
            .is_some()
    );
    assert!(matches!(long_label, Err(StoreError::Invalid(_))));
    assert!(matches!(no_integration, Err(StoreError::Invalid(_))));
    assert!(api_tokens::list(pool, other.id).await.unwrap().is_empty());
    db.cleanup().await.unwrap();
}

#[tokio::test]
async fn an_integration_sees_its_own_dead_letters_only() {
    // Arrange
    let (db, acme) = setup().await;
    let pool = db.store.pool();
    let globex = new_integration(&db.store, "globex", 1002).await;
    let letter = crate::helpers::dead_letter;
    let inbound = DeadLetterKind::InboundEvent;
    let outbound = DeadLetterKind::OutboundChange;
    let mut ids = Vec::new();
    for new in [
        letter(
            Some(acme.id),
            Some(1001),
            "a-recorded",
            inbound,
            serde_json::json!({}),
        ),
        letter(None, Some(1001), "a-portal", inbound, serde_json::json!({})),
        letter(
            None,
            None,
            "a-payload",
            outbound,
            serde_json::json!({ "integration_id": acme.id }),
        ),
        letter(
            Some(globex.id),
            Some(1002),
            "g-recorded",
            inbound,
            serde_json::json!({}),
        ),
        letter(None, Some(1002), "g-portal", inbound, serde_json::json!({})),
        letter(
            None,
            None,
            "g-payload",
            outbound,
            serde_json::json!({ "integration_id": globex.id }),
        ),
    ] {
        ids.push(dead_letters::record(pool, &new).await.unwrap().id);
    }

    // Act
    let acme_letters = dead_letters::list_owned(
        pool,
        acme.id,
        PortalId::new(1001),
        &DeadLetterFilter::default(),
    )
    .await
    .unwrap();
    let acme_outbound = dead_letters::list_owned(
        pool,
        acme.id,
        PortalId::new(1001),
        &DeadLetterFilter {
            kind: Some(outbound),
            ..DeadLetterFilter::default()
        },
    )
    .await
    .unwrap();
    let own = dead_letters::get_owned(pool, acme.id, PortalId::new(1001), ids[1])
        .await
        .unwrap();
    let foreign = dead_letters::get_owned(pool, acme.id, PortalId::new(1001), ids[3])
        .await
        .unwrap();

    // Assert
    let keys: Vec<&str> = acme_letters.iter().map(|l| l.event_key.as_str()).collect();
    assert_eq!(keys, ["a-recorded", "a-portal", "a-payload"]);
    assert_eq!(acme_outbound.len(), 1);
    assert_eq!(acme_outbound[0].event_key, "a-payload");
    assert_eq!(own.map(|l| l.event_key), Some("a-portal".to_owned()));
    assert_eq!(foreign, None, "another integration's letter is not found");
    db.cleanup().await.unwrap();
}

#[tokio::test]
async fn tokens_from_before_scopes_keep_full_access_and_new_ones_carry_their_scope() {
    use leadsync_store::MIGRATOR;
    use leadsync_store::api_tokens::Scope;

    // Arrange: a token stored before the scope column existed (the column is
    // dropped and the migration that adds it run again over the row).
    let (db, acme) = setup().await;
    let pool = db.store.pool();
    let old = api_tokens::issue(pool, acme.id, "old").await.unwrap();
    sqlx::query("ALTER TABLE api_tokens DROP COLUMN scope")
        .execute(pool)
        .await
        .unwrap();
    let migration = MIGRATOR
        .iter()
        .find(|m| m.description == "api tokens scope")
        .expect("the scope migration");

    // Act
    sqlx::raw_sql(migration.sql.clone())
        .execute(pool)
        .await
        .unwrap();
    let old = api_tokens::verify(pool, &old.token).await.unwrap();
    let mut issued = Vec::new();
    for scope in Scope::ALL {
        let token = api_tokens::issue_scoped(pool, acme.id, "new", *scope)
            .await
            .unwrap();
        issued.push((
            token.record.scope,
            api_tokens::verify(pool, &token.token).await.unwrap(),
        ));
    }
    let default = api_tokens::issue(pool, acme.id, "default").await.unwrap();
    let unscoped_insert: String = sqlx::query_scalar(
        "INSERT INTO api_tokens (integration_id, token_prefix, token_hash) \
         VALUES ($1, 'lsk_x', sha256('x')) RETURNING scope",
    )
    .bind(acme.id)
    .fetch_one(pool)
    .await
    .unwrap();
    let unknown_scope = sqlx::query(
        "INSERT INTO api_tokens (integration_id, token_prefix, token_hash, scope) \
         VALUES ($1, 'lsk_y', sha256('y'), 'root')",
    )
    .bind(acme.id)
    .execute(pool)
    .await;

    // Assert
    assert_eq!(
        old.map(|v| v.scope),
        Some(Scope::Admin),
        "full access, as before"
    );
    for (scope, (stored, verified)) in Scope::ALL.iter().zip(issued) {
        assert_eq!(stored, *scope);
        assert_eq!(verified.map(|v| v.scope), Some(*scope));
    }
    assert_eq!(default.record.scope, Scope::Write);
    assert_eq!(unscoped_insert, "write");
    assert!(
        unknown_scope.is_err(),
        "the check constraint refuses `root`"
    );
    assert!(Scope::Admin.allows(Scope::Write) && Scope::Write.allows(Scope::Read));
    assert!(!Scope::Read.allows(Scope::Write) && !Scope::Write.allows(Scope::Admin));
    db.cleanup().await.unwrap();
}
