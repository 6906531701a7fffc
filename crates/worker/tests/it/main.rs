//! The worker's runtime against real Redis, Postgres and the simulator over
//! HTTP: the batcher, the queue consumer, credentials, a crash, and the
//! platform → HubSpot direction (outbox relay, push batches),
//! reconciliation and backfill.

mod backfill;
mod batcher;
mod consumer;
mod crash;
mod helpers;
mod oauth;
mod outbound;
mod reconcile;
mod relay;
