//! The `leadsync` command's logic, as a library so tests can run it.

pub mod demo;
pub mod reconcile;
