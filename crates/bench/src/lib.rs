//! Benchmarks of leadsync. Numbers come from running the real components on
//! loopback against the local Redis; nothing here asserts a time.

pub mod backlog;
pub mod fleet;
pub mod import;
pub mod ingest;
pub mod latency;
pub mod loadgen;
pub mod platform;
pub mod stats;
