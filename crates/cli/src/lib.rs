//! The `leadsync` command's logic, as a library so tests can run it.

pub mod api_token;
pub mod backfill;
pub mod connect;
pub mod demo;
pub mod migrate;
pub mod oauth_state;
pub mod reconcile;
pub mod setup;
