//! Resumable positions of long runs: backfill (HubSpot → platform, all
//! contacts) and reconciliation (repairing what webhooks missed).

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
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
