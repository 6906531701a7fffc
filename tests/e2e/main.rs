//! End-to-end tests: real Redis, real HTTP, the binaries' own libraries.
//!
//! Redis must be running at 127.0.0.1:6379 (or `LEADSYNC__REDIS__URL` in the
//! test's environment is ignored on purpose: tests build their settings in code).

mod helpers;
mod ingester;
