//! Pure types and rules of leadsync: identifiers, HubSpot webhook events and
//! their identity. This crate performs no I/O and depends on no other crate of
//! the workspace.

pub mod event;
pub mod ids;

pub use event::{BatchError, EventKey, SubscriptionType, WebhookBatch, WebhookEvent};
pub use ids::{AppId, ContactId, EventId, ObjectId, PortalId, SubscriptionId};
