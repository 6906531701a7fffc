//! Repository tests against a real Postgres: one fresh database per test.

mod api_tokens;
mod dead_letters;
mod errors;
mod helpers;
mod leads;
mod outbox;
mod records;
mod schema;
