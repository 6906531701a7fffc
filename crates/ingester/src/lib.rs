//! The HubSpot webhook ingester: a thin actix-web server that verifies each
//! delivery's signature on the raw body, queues one job per event, and answers
//! 200 once Redis holds them. It never calls HubSpot or Postgres.

pub mod error;
pub mod metrics;
pub mod root_span;
pub mod routes;
pub mod startup;

pub use error::IngestError;
pub use startup::{AppState, Application};
