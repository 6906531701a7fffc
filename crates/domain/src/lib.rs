//! Pure types and rules of leadsync: identifiers, HubSpot webhook events and
//! their identity, leads, the field mapping and the sync decisions. This crate performs no I/O and depends on no other crate of
//! the workspace.

pub mod email;
pub mod event;
pub mod ids;
pub mod lead;
pub mod mapping;
pub mod sync;

pub use email::{Email, EmailError};
pub use event::{BatchError, EventKey, SubscriptionType, WebhookBatch, WebhookEvent};
pub use ids::{AppId, ContactId, EventId, ObjectId, PortalId, SubscriptionId};
pub use lead::{LeadField, LeadValues, ValueHash};
pub use mapping::{FieldMapping, MappingEntry, MappingError, ValueCase};
pub use sync::{
    ConflictPolicy, Current, FieldDecision, Incoming, KeepReason, SyncPolicy, decide_inbound,
};
