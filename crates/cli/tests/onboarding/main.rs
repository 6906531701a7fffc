//! Connecting HubSpot accounts and `leadsync setup`, against the simulator
//! over HTTP, a throw-away Postgres database and the local Redis.

mod connect;
mod helpers;
mod setup;
