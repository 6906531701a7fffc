//! The REST API against a real Postgres and Redis, served on port 0 and
//! called over HTTP.

mod auth;
mod dead_letters;
mod helpers;
mod isolation;
mod leads;
mod openapi;
mod scopes;
mod settings;
mod sync_status;
