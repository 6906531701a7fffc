//! For tests: a fresh, migrated database per test.
//!
//! [`TestDb::create`] connects to the local Postgres as `postgres` (trust
//! authentication on development machines and CI), creates a database named
//! `leadsync_test_<uuid>`, applies [`MIGRATOR`](crate::MIGRATOR) and returns
//! a [`Store`] on it. Call [`TestDb::cleanup`] at the end of the test. A
//! test that panics before that leaves its database behind; the next
//! `create` drops such leftovers once they are an hour old (the name holds
//! a time-ordered UUIDv7).

use std::str::FromStr;
use std::time::Duration;

use secrecy::SecretString;
use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, PgConnection};
use uuid::Uuid;

use crate::{Store, StoreError};

/// The server tests use, through its maintenance database.
pub const ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// Prefix of every test database name.
pub const DB_PREFIX: &str = "leadsync_test_";
/// Leftover test databases older than this are dropped.
const STALE_AFTER: Duration = Duration::from_secs(3600);

/// A throw-away database with the schema applied.
#[derive(Debug)]
pub struct TestDb {
    /// A store connected to it.
    pub store: Store,
    /// Its name.
    pub name: String,
}

impl TestDb {
    /// Creates and migrates a fresh database.
    pub async fn create() -> Result<Self, StoreError> {
        let mut admin = admin().await?;
        drop_stale(&mut admin).await?;
        let name = format!("{DB_PREFIX}{}", Uuid::now_v7().simple());
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut admin)
            .await?;
        admin.close().await?;

        let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
        let settings = leadsync_runtime::config::DatabaseSettings {
            url: SecretString::from(url),
            max_connections: 8,
        };
        let store = Store::connect(&settings).await?;
        store.migrate().await?;
        Ok(Self { store, name })
    }

    /// Closes the pool and drops the database.
    pub async fn cleanup(self) -> Result<(), StoreError> {
        self.store.close().await;
        let mut admin = admin().await?;
        drop_database(&mut admin, &self.name).await?;
        admin.close().await?;
        Ok(())
    }
}

async fn admin() -> Result<PgConnection, StoreError> {
    let options = PgConnectOptions::from_str(ADMIN_URL)
        .map_err(|_| StoreError::InvalidUrl)?
        .log_statements(tracing::log::LevelFilter::Debug);
    Ok(options.connect().await?)
}

async fn drop_database(admin: &mut PgConnection, name: &str) -> Result<(), StoreError> {
    sqlx::query(AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
    )))
    .execute(admin)
    .await?;
    Ok(())
}

async fn drop_stale(admin: &mut PgConnection) -> Result<(), StoreError> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT datname FROM pg_database WHERE datname LIKE 'leadsync\\_test\\_%'",
    )
    .fetch_all(&mut *admin)
    .await?;
    let now = std::time::SystemTime::now();
    for name in names {
        let Some(created) = name
            .strip_prefix(DB_PREFIX)
            .and_then(|id| Uuid::from_str(id).ok())
            .and_then(|id| id.get_timestamp())
        else {
            continue;
        };
        let (secs, nanos) = created.to_unix();
        let created = std::time::UNIX_EPOCH + Duration::new(secs, nanos);
        if now
            .duration_since(created)
            .is_ok_and(|age| age > STALE_AFTER)
        {
            drop_database(admin, &name).await?;
        }
    }
    Ok(())
}
