//! End-to-end tests: real Redis, real Postgres, real HTTP, the binaries' own
//! libraries, and the HubSpot simulator.
//!
//! Redis must be running at 127.0.0.1:6379 and Postgres at 127.0.0.1:5432
//! (user `postgres`, trust). `LEADSYNC__…` variables in the test's
//! environment are ignored on purpose: tests build their settings in code.

mod chain;
mod helpers;
mod inbound;
mod ingester;
mod two_way;
