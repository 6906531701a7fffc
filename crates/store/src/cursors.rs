//! Resumable positions of long runs: backfill (HubSpot → platform, all
//! contacts) and reconciliation (repairing what webhooks missed).

use chrono::{DateTime, Utc};
use sqlx::{Connection as _, PgConnection, PgExecutor, PgPool};
use uuid::Uuid;

use crate::StoreError;
use crate::text_enum::text_enum;

text_enum! {
    /// Which run a cursor belongs to.
    pub enum CursorKind {
        /// The initial import of every contact.
        Backfill => "backfill",
        /// The periodic repair pass.
        Reconciliation => "reconciliation",
    }
}

/// A saved position.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SyncCursor {
    /// The integration.
    pub integration_id: Uuid,
    /// The run.
    pub kind: CursorKind,
    /// Opaque position (e.g. HubSpot's paging `after`); `None` = the start.
    pub cursor: Option<String>,
    /// When the run started.
    pub started_at: DateTime<Utc>,
    /// Last save.
    pub updated_at: DateTime<Utc>,
    /// When the run finished; `None` while it is under way.
    pub completed_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "integration_id, kind, cursor, started_at, updated_at, completed_at";

/// The saved position of a run.
pub async fn get(
    exec: impl PgExecutor<'_>,
    integration_id: Uuid,
    kind: CursorKind,
) -> Result<Option<SyncCursor>, StoreError> {
    let row = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM sync_cursors WHERE integration_id = $1 AND kind = $2"
    )))
    .bind(integration_id)
    .bind(kind)
    .fetch_optional(exec)
    .await?;
    Ok(row)
}

/// Starts a run from the beginning, forgetting any previous position.
pub async fn start(
    exec: impl PgExecutor<'_>,
    integration_id: Uuid,
    kind: CursorKind,
) -> Result<SyncCursor, StoreError> {
    let row = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO sync_cursors (integration_id, kind) VALUES ($1, $2) \
         ON CONFLICT (integration_id, kind) DO UPDATE SET cursor = NULL, started_at = now(), \
         updated_at = now(), completed_at = NULL RETURNING {COLUMNS}"
    )))
    .bind(integration_id)
    .bind(kind)
    .fetch_one(exec)
    .await?;
    Ok(row)
}

/// Saves the position reached (after the page it follows was committed).
pub async fn save(
    exec: impl PgExecutor<'_>,
    integration_id: Uuid,
    kind: CursorKind,
    cursor: Option<&str>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO sync_cursors (integration_id, kind, cursor) VALUES ($1, $2, $3) \
         ON CONFLICT (integration_id, kind) DO UPDATE SET cursor = EXCLUDED.cursor, \
         updated_at = now(), completed_at = NULL",
    )
    .bind(integration_id)
    .bind(kind)
    .bind(cursor)
    .execute(exec)
    .await?;
    Ok(())
}

/// Marks the run finished.
pub async fn complete(
    exec: impl PgExecutor<'_>,
    integration_id: Uuid,
    kind: CursorKind,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE sync_cursors SET completed_at = now(), updated_at = now() \
         WHERE integration_id = $1 AND kind = $2",
    )
    .bind(integration_id)
    .bind(kind)
    .execute(exec)
    .await?;
    Ok(())
}

/// The right to run one kind of run for one integration, held by at most
/// one process of the fleet at a time: a Postgres session-level advisory
/// lock, on a connection of its own taken out of the pool.
///
/// [`RunLock::release`] unlocks and closes that connection. A lock dropped
/// without it (a cancelled run, a panic) closes its connection all the same,
/// and Postgres releases the lock with the session; a process that dies
/// loses it when its connection does.
#[derive(Debug)]
pub struct RunLock {
    conn: PgConnection,
    name: String,
}

impl RunLock {
    /// Takes the lock of `kind` runs of `integration_id` if no other session
    /// holds it; `None` if one does.
    pub async fn try_acquire(
        pool: &PgPool,
        integration_id: Uuid,
        kind: CursorKind,
    ) -> Result<Option<Self>, StoreError> {
        // Detached: a session lock must never go back to the pool with the
        // connection, where the next borrower would inherit it.
        let mut conn = pool.acquire().await?.detach();
        let name = format!("leadsync:{}:{integration_id}", kind.as_str());
        let locked: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
                .bind(&name)
                .fetch_one(&mut conn)
                .await?;
        if locked {
            Ok(Some(Self { conn, name }))
        } else {
            conn.close().await?;
            Ok(None)
        }
    }

    /// Releases the lock and closes its connection.
    pub async fn release(mut self) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_advisory_unlock(hashtextextended($1, 0))")
            .bind(&self.name)
            .execute(&mut self.conn)
            .await?;
        self.conn.close().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::testing::TestDb;

    #[tokio::test]
    async fn a_run_lock_is_held_by_one_session_and_freed_by_release_or_drop() {
        // Arrange
        let db = TestDb::create()
            .await
            .expect("Postgres runs at 127.0.0.1:5432");
        let pool = db.store.pool();
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let kind = CursorKind::Reconciliation;

        // Act
        let first = RunLock::try_acquire(pool, a, kind).await.unwrap();
        let second = RunLock::try_acquire(pool, a, kind).await.unwrap();
        let other_integration = RunLock::try_acquire(pool, b, kind).await.unwrap();
        let other_kind = RunLock::try_acquire(pool, a, CursorKind::Backfill)
            .await
            .unwrap();

        // Assert: one holder per (integration, kind).
        assert!(first.is_some());
        assert!(second.is_none());
        assert!(other_integration.is_some() && other_kind.is_some());
        first.expect("held").release().await.unwrap();
        let again = RunLock::try_acquire(pool, a, kind).await.unwrap();
        assert!(again.is_some(), "released");
        // A lock dropped without release (a cancelled run) is freed too,
        // once Postgres sees its connection close.
        drop(again);
        let started = Instant::now();
        let mut freed = None;
        while freed.is_none() && started.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(50)).await;
            freed = RunLock::try_acquire(pool, a, kind).await.unwrap();
        }
        assert!(freed.is_some(), "dropped lock freed");
        for lock in [freed, other_integration, other_kind].into_iter().flatten() {
            lock.release().await.unwrap();
        }
        db.cleanup().await.unwrap();
    }
}
