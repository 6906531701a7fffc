//! How database errors are classified: refused data versus transient trouble.

use leadsync_store::StoreError;
use leadsync_store::testing::TestDb;

async fn error_of(db: &TestDb, sql: &'static str, text: Option<&str>) -> StoreError {
    let mut query = sqlx::query(sql);
    if let Some(text) = text {
        query = query.bind(text.to_owned());
    }
    let err = query
        .execute(db.store.pool())
        .await
        .expect_err("the database refuses the statement");
    StoreError::from(err)
}

#[tokio::test]
async fn refused_data_is_permanent_and_transient_failures_are_not() {
    // Arrange
    let db = TestDb::create().await.expect("test database");

    // Act
    let nul_byte = error_of(&db, "SELECT $1::text", Some("a\u{0}b")).await;
    let not_a_number = error_of(&db, "SELECT $1::int", Some("abc")).await;
    let check = error_of(
        &db,
        "DO $$ BEGIN RAISE EXCEPTION 'check' USING ERRCODE = 'check_violation'; END $$",
        None,
    )
    .await;
    let serialization = error_of(
        &db,
        "DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = 'serialization_failure'; END $$",
        None,
    )
    .await;
    let deadlock = error_of(
        &db,
        "DO $$ BEGIN RAISE EXCEPTION 'deadlock' USING ERRCODE = 'deadlock_detected'; END $$",
        None,
    )
    .await;

    // Assert
    assert_eq!(nul_byte.rejected_sqlstate().as_deref(), Some("22021"));
    assert!(!nul_byte.is_retryable());
    assert_eq!(not_a_number.rejected_sqlstate().as_deref(), Some("22P02"));
    assert_eq!(check.rejected_sqlstate().as_deref(), Some("23000"));
    for transient in [&serialization, &deadlock] {
        assert_eq!(transient.rejected_sqlstate(), None, "{transient:?}");
        assert!(transient.is_retryable(), "{transient:?}");
    }
    db.cleanup().await.expect("cleanup");
}
