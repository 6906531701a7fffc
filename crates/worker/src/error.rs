//! Why the worker could not start.

use leadsync_hubspot::HubSpotError;
use leadsync_queue::QueueError;
use leadsync_runtime::ConfigError;
use leadsync_store::{CryptoError, StoreError};

use crate::tokens::CredentialsError;

/// Why [`crate::Application::build`] failed. Each message names the setting
/// to look at.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// A setting the worker needs is missing or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `hubspot.token_encryption_key` is not base64 of 32 bytes.
    #[error("configuration key `hubspot.token_encryption_key`: {0}")]
    Cipher(#[source] CryptoError),
    /// Postgres could not be reached.
    #[error("connecting to Postgres (`database.url`) failed")]
    Database(#[source] StoreError),
    /// Redis could not be reached.
    #[error("connecting to Redis (`redis.url`) failed")]
    Redis(#[source] QueueError),
    /// The HubSpot client could not be built.
    #[error("configuration key `hubspot.api_base_url`: {0}")]
    HubSpot(#[source] HubSpotError),
    /// The integrations' credentials could not be loaded.
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    /// The metrics could not be registered.
    #[error("registering metrics failed")]
    Metrics(#[from] prometheus::Error),
    /// The metrics server could not bind its address.
    #[error(
        "configuration keys `worker.metrics_host`/`worker.metrics_port`: cannot bind {address}"
    )]
    Bind {
        /// `host:port`.
        address: String,
        /// The bind error.
        #[source]
        source: std::io::Error,
    },
}
