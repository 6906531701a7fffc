//! The sync worker's library: the inbound batch processor that turns queued
//! HubSpot webhook events into lead rows (design.md §1–§2). The queue wiring
//! and the binary build on it.

pub mod contact_event;
pub mod inbound;

pub use contact_event::{ContactEvent, ContactEventKind, ParseError};
pub use inbound::{BatchReport, InboundDeps, InboundError, process_batch};
