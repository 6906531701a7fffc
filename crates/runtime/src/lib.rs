//! What every leadsync binary shares: the typed configuration, telemetry
//! (logs, traces, metrics encoding) and shutdown signals.

pub mod config;
pub mod metrics;
pub mod shutdown;
pub mod telemetry;

pub use config::{ConfigError, Settings};
