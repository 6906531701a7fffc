//! Job payloads and queue names.

use std::collections::HashMap;

use leadsync_domain::{EventKey, PortalId, WebhookEvent};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Queue of webhook events from HubSpot, one job per event.
pub const INBOUND_QUEUE: &str = "hubspot:events";

/// One webhook event waiting for a worker. The task id and the idempotency key
/// are both [`EventKey`], so a redelivered event is not queued twice.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InboundEvent {
    /// The event's identity.
    pub key: EventKey,
    /// The tenant, when the event named one.
    pub portal_id: Option<PortalId>,
    /// When the ingester accepted it, in epoch milliseconds (for lag metrics).
    pub received_at_ms: i64,
    /// W3C trace context of the request that carried it.
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub trace: HashMap<String, String>,
    /// The integration named in the webhook URL (`/webhooks/hubspot/{integration}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integration: Option<String>,
    /// The event exactly as HubSpot sent it.
    pub event: Box<RawValue>,
}

impl InboundEvent {
    /// Wraps a parsed event for the queue.
    pub fn new(
        event: WebhookEvent,
        received_at_ms: i64,
        trace: HashMap<String, String>,
        integration: Option<String>,
    ) -> Self {
        Self {
            key: event.key().clone(),
            portal_id: event.portal_id(),
            received_at_ms,
            trace,
            integration,
            event: event.into_raw(),
        }
    }
}
