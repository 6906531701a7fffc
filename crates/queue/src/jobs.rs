//! Job payloads and queue names.

use std::collections::HashMap;

use leadsync_domain::{ContactId, EventKey, PortalId, WebhookEvent};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

/// Queue of webhook events from HubSpot, one job per event.
pub const INBOUND_QUEUE: &str = "hubspot:events";

/// Queue of platform lead changes bound for HubSpot, one job per outbox row
/// (`lead_changes`).
pub const OUTBOUND_QUEUE: &str = "platform:lead-changes";

/// A job with an identity of its own: its task id, which is also its
/// idempotency key in the queue (a second push of the same id is refused).
pub trait QueueJob: Serialize {
    /// The task id.
    fn task_id(&self) -> String;
}

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

impl QueueJob for InboundEvent {
    fn task_id(&self) -> String {
        self.key.as_str().to_owned()
    }
}

/// Prefix of [`PushLeadChange`] task ids: `lead-change:{outbox row id}`.
pub const LEAD_CHANGE_TASK_PREFIX: &str = "lead-change:";

/// One platform lead change (an outbox row) waiting to be pushed to HubSpot.
///
/// It says *which* lead changed, not how: the worker pushes the lead's
/// current state, so changes of one lead coalesce and their order does not
/// matter. The task id is derived from the outbox row id, so a relay that
/// pushes a row twice (it died before marking the row relayed) queues it once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushLeadChange {
    /// The outbox row (`lead_changes.id`).
    pub change_id: i64,
    /// The integration the lead belongs to.
    pub integration_id: Uuid,
    /// The lead that changed.
    pub lead_id: Uuid,
    /// What happened: `insert`, `update` or `delete`.
    pub operation: String,
    /// When the change was committed, in epoch milliseconds (for lag metrics).
    pub changed_at_ms: i64,
    /// The lead's contact when the change was made (`lead_changes.crm_id`):
    /// how the contact of a lead deleted with SQL is still found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crm_id: Option<ContactId>,
    /// W3C trace context of the relay that queued it.
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub trace: HashMap<String, String>,
}

impl PushLeadChange {
    /// The task id of the outbox row `change_id`.
    pub fn task_id_of(change_id: i64) -> String {
        format!("{LEAD_CHANGE_TASK_PREFIX}{change_id}")
    }
}

/// The payload of an outbound dead letter: the lead and the changes of it
/// that could not be pushed. Replaying it queues those changes again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboundLetter {
    /// The integration the lead belongs to.
    pub integration_id: Uuid,
    /// The lead.
    pub lead_id: Uuid,
    /// The outbox rows, oldest first as given.
    #[serde(default)]
    pub change_ids: Vec<i64>,
    /// Their operations, in the same order.
    #[serde(default)]
    pub operations: Vec<String>,
    /// When each was committed (epoch milliseconds), in the same order;
    /// empty in letters recorded before it was kept.
    #[serde(default)]
    pub changed_at_ms: Vec<i64>,
    /// The lead's contact when the changes were made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crm_id: Option<ContactId>,
}

impl OutboundLetter {
    /// The letter of `jobs`, all changes of one lead.
    pub fn of(integration_id: Uuid, lead_id: Uuid, jobs: &[PushLeadChange]) -> Self {
        Self {
            integration_id,
            lead_id,
            change_ids: jobs.iter().map(|j| j.change_id).collect(),
            operations: jobs.iter().map(|j| j.operation.clone()).collect(),
            changed_at_ms: jobs.iter().map(|j| j.changed_at_ms).collect(),
            crm_id: jobs.iter().find_map(|j| j.crm_id),
        }
    }

    /// The letter as the JSON stored in `dead_letters.payload`.
    pub fn to_json(&self) -> serde_json::Value {
        // Ids, strings and integers: serialising cannot fail.
        serde_json::to_value(self).unwrap_or_default()
    }

    /// The jobs a replay queues: one per change, each keeping when it was
    /// committed (`now_ms` where the letter does not say), so the push
    /// compares HubSpot's history with the change's time, not the replay's.
    pub fn jobs(&self, now_ms: i64, trace: &HashMap<String, String>) -> Vec<PushLeadChange> {
        self.change_ids
            .iter()
            .enumerate()
            .map(|(i, change_id)| PushLeadChange {
                change_id: *change_id,
                integration_id: self.integration_id,
                lead_id: self.lead_id,
                operation: self
                    .operations
                    .get(i)
                    .cloned()
                    .unwrap_or_else(|| "update".to_owned()),
                changed_at_ms: self
                    .changed_at_ms
                    .get(i)
                    .copied()
                    .filter(|ms| *ms > 0)
                    .unwrap_or(now_ms),
                crm_id: self.crm_id,
                trace: trace.clone(),
            })
            .collect()
    }
}

impl QueueJob for PushLeadChange {
    fn task_id(&self) -> String {
        Self::task_id_of(self.change_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(change_id: i64, changed_at_ms: i64) -> PushLeadChange {
        PushLeadChange {
            change_id,
            integration_id: Uuid::nil(),
            lead_id: Uuid::max(),
            operation: "update".to_owned(),
            changed_at_ms,
            crm_id: Some(ContactId::new(42)),
            trace: HashMap::new(),
        }
    }

    #[test]
    fn an_outbound_letter_replays_its_changes_with_their_commit_times() {
        // Arrange
        let letter = OutboundLetter::of(
            Uuid::nil(),
            Uuid::max(),
            &[change(7, 1_000), change(9, 2_000)],
        );
        let stored: OutboundLetter = serde_json::from_value(letter.to_json()).expect("round trip");

        // Act
        let jobs = stored.jobs(99_000, &HashMap::new());

        // Assert
        assert_eq!(jobs, [change(7, 1_000), change(9, 2_000)]);
    }

    #[test]
    fn a_letter_that_kept_no_commit_times_replays_with_the_replays_time() {
        let older = serde_json::json!({
            "integration_id": Uuid::nil(),
            "lead_id": Uuid::max(),
            "change_ids": [7],
            "operations": ["update"],
        });
        let letter: OutboundLetter = serde_json::from_value(older).expect("older letter");

        assert_eq!(
            letter.jobs(99_000, &HashMap::new()),
            [PushLeadChange {
                crm_id: None,
                ..change(7, 99_000)
            }]
        );
    }

    #[test]
    fn a_lead_change_task_id_is_derived_from_its_outbox_row() {
        // Arrange
        let job = PushLeadChange {
            change_id: 42,
            integration_id: Uuid::nil(),
            lead_id: Uuid::nil(),
            operation: "update".to_owned(),
            changed_at_ms: 0,
            crm_id: None,
            trace: HashMap::new(),
        };

        // Act
        let id = job.task_id();

        // Assert
        assert_eq!(id, "lead-change:42");
        assert_eq!(PushLeadChange::task_id_of(42), id);
    }
}
