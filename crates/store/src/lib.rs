#![doc = include_str!("../README.md")]

pub mod api_tokens;
pub mod audit;
pub mod crypto;
pub mod cursors;
pub mod dead_letters;
mod error;
pub mod events;
pub mod integrations;
pub mod leads;
pub mod ledger;
pub mod outbox;
pub mod stats;
pub mod testing;
mod text_enum;

use std::str::FromStr;
use std::time::Duration;

use leadsync_runtime::config::DatabaseSettings;
use secrecy::ExposeSecret;
use sqlx::ConnectOptions as _;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

pub use crypto::{CryptoError, TokenCipher};
pub use error::StoreError;
pub use integrations::{Integration, IntegrationSettings};
pub use leads::{Lead, LeadColumn};

/// The schema migrations of `crates/store/migrations`, embedded at compile time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// How long a caller waits for a pooled connection before giving up.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The transaction-local setting the outbox trigger reads; see
/// [`Store::begin_inbound`] and `docs/adr/0005-outbox-and-inbound-marking.md`.
pub const ORIGIN_SETTING: &str = "leadsync.origin";

/// The platform's Postgres: a connection pool and the entry point of every
/// repository module ([`leads`], [`events`], [`ledger`], ...).
///
/// The repositories are free functions taking an executor (`&PgPool`,
/// `&mut PgConnection` or `&mut *tx`), so that one transaction can span
/// several of them.
#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    /// Connects a pool of `settings.max_connections`, failing fast when the
    /// database cannot be reached.
    ///
    /// sqlx's per-statement log is off (slow statements are still logged):
    /// sqlx asks `log_enabled!` after every statement, which through
    /// tracing-log leaves stale per-layer filter state behind, and the next
    /// event logged on that thread is dropped (tokio-rs/tracing#2519) — an
    /// error's cause among them.
    pub async fn connect(settings: &DatabaseSettings) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(settings.url.expose_secret())
            .map_err(|_| StoreError::InvalidUrl)?
            .application_name("leadsync")
            .log_statements(tracing::log::LevelFilter::Off);
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections.max(1))
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await?;
        tracing::debug!(
            db.max_connections = settings.max_connections,
            "Connected to Postgres"
        );
        Ok(Self { pool })
    }

    /// Wraps an existing pool.
    pub fn from_pool(pool: PgPool) -> Self {
        Self { pool }
    }

    /// The underlying pool, for repository calls outside a transaction.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies pending migrations; already applied ones are skipped, so this
    /// is safe to run repeatedly.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    /// Starts a transaction for platform-side writes: lead changes made in it
    /// enter the outbox.
    pub async fn begin(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        Ok(self.pool.begin().await?)
    }

    /// Starts a transaction for the inbound worker: `leadsync.origin` is set
    /// to `inbound` for this transaction only, so its lead writes do not
    /// re-enter the outbox and do not count as platform edits in
    /// `field_updated_at`.
    pub async fn begin_inbound(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        let mut tx = self.pool.begin().await?;
        mark_inbound(&mut tx).await?;
        Ok(tx)
    }

    /// Closes every connection of the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Marks the current transaction of `conn` as the inbound worker's (see
/// [`Store::begin_inbound`]). Outside a transaction it has no lasting effect.
pub async fn mark_inbound(conn: &mut PgConnection) -> Result<(), StoreError> {
    // SET LOCAL cannot take a bind parameter; set_config(.., true) is the same.
    sqlx::query("SELECT set_config('leadsync.origin', 'inbound', true)")
        .execute(conn)
        .await?;
    Ok(())
}

/// Converts a HubSpot id (u64) to the `bigint` it is stored as.
pub(crate) fn db_id(raw: u64) -> Result<i64, StoreError> {
    i64::try_from(raw).map_err(|_| StoreError::Invalid(format!("id {raw} exceeds bigint")))
}

/// Converts a stored `bigint` id back; check constraints keep them positive.
pub(crate) fn from_db_id(raw: i64) -> u64 {
    u64::try_from(raw).unwrap_or_default()
}
