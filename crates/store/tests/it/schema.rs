use leadsync_domain::LeadField;
use leadsync_store::testing::TestDb;

#[tokio::test]
async fn migrations_apply_twice_and_synced_columns_match() {
    // Arrange
    let db = TestDb::create().await.unwrap();

    // Act: a second run finds nothing to do
    db.store.migrate().await.unwrap();
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(db.store.pool())
        .await
        .unwrap();
    let synced: Vec<String> = sqlx::query_scalar("SELECT unnest(leadsync_synced_lead_columns())")
        .fetch_all(db.store.pool())
        .await
        .unwrap();

    // Assert
    assert_eq!(applied, leadsync_store::MIGRATOR.iter().count() as i64);
    let expected: Vec<String> = LeadField::ALL.iter().map(|f| f.name().to_owned()).collect();
    assert_eq!(
        synced, expected,
        "LeadField::ALL must mirror the SQL function"
    );
    db.cleanup().await.unwrap();
}
