//! The sync worker: turns queued HubSpot webhook events into lead rows
//! (design.md §1–§2).
//!
//! An apalis worker ([`runner`]) consumes the inbound queue in Redis; each job
//! hands its event to the [`batcher`], which gathers events into batches of
//! up to 100 contacts and runs [`process_batch`] on them: one HubSpot batch
//! read per portal, one Postgres transaction. A job is acknowledged only
//! after its batch committed. [`Application`] wires it all together with
//! the integrations' credentials ([`tokens`]) and a `/metrics` server.
//!
//! The other direction runs in the same process: the [`relay`] moves
//! platform lead changes from the Postgres outbox to a second queue, whose
//! consumer hands them to the [`push_batcher`]; [`process_push_batch`]
//! writes them to HubSpot with batch upserts and updates.
//!
//! Periodically (and through `leadsync reconcile`), [`reconcile`] searches
//! the contacts modified since its cursor and applies what the webhooks
//! missed through the same decisions ([`apply_contacts`]). A [`backfill`]
//! (through `leadsync backfill`) imports every contact through them too and
//! pushes every lead not yet in HubSpot through [`process_push_batch`].

pub mod backfill;
pub mod batcher;
mod coalesce;
pub mod contact_event;
pub mod error;
pub mod http;
pub mod inbound;
pub mod metrics;
pub mod outbound;
pub mod push_batcher;
pub mod reconcile;
pub mod relay;
pub mod runner;
pub mod startup;
pub mod tokens;

pub use backfill::{
    BackfillConfig, BackfillDeps, BackfillError, BackfillOptions, BackfillOutcome,
    BackfillProgress, BackfillReport,
};
pub use batcher::{BatchError, Batcher, BatcherConfig, JobOutcome};
pub use contact_event::{ContactEvent, ContactEventKind, ParseError};
pub use error::StartupError;
pub use inbound::{
    AppliedContacts, BatchReport, ContactOutcome, InboundDeps, InboundError, ScanOrigin,
    apply_contacts, process_batch,
};
pub use metrics::WorkerMetrics;
pub use outbound::{OutboundDeps, OutboundError, PushReport, process_push_batch};
pub use push_batcher::{PushBatchError, PushBatcher, PushBatcherConfig};
pub use reconcile::{ReconcileConfig, ReconcileDeps, ReconcileError, ReconcileReport};
pub use relay::{Relay, RelayConfig, RelayError, RelayReport};
pub use startup::{Application, StopHandle};
pub use tokens::{Credentials, PgTokenStore};
