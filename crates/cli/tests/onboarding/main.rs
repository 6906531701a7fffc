//! Connecting HubSpot accounts and `leadsync setup`, against the simulator
//! over HTTP, a throw-away Postgres database and the local Redis; and the
//! `leadsync` binary's output streams.

mod command;
mod connect;
mod helpers;
mod lossy_proxy;
mod setup;
