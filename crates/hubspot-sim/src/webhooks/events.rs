//! The JSON objects HubSpot POSTs (docs/hubspot-sim.md, "Webhook payloads"): one per change and
//! matching subscription.

use serde::Serialize;

use crate::crm::{Change, ChangeKind};

/// One webhook notification. Field order follows real captures.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WebhookEvent {
    pub(crate) event_id: u64,
    pub(crate) subscription_id: u64,
    pub(crate) portal_id: u64,
    pub(crate) app_id: u64,
    pub(crate) occurred_at: i64,
    pub(crate) subscription_type: &'static str,
    pub(crate) attempt_number: u32,
    pub(crate) object_id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) property_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) property_value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) change_flag: Option<&'static str>,
    pub(crate) change_source: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) source_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) primary_object_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) merged_object_ids: Option<Vec<u64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) new_object_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) number_of_properties_moved: Option<u32>,
}

impl WebhookEvent {
    /// The event `change` produces for subscription `subscription_id`.
    pub(crate) fn from_change(
        change: &Change,
        subscription_id: u64,
        portal_id: u64,
        app_id: u64,
        event_id: u64,
    ) -> Self {
        let mut event = Self {
            event_id,
            subscription_id,
            portal_id,
            app_id,
            occurred_at: change.occurred_at,
            subscription_type: change.kind.subscription_type(),
            attempt_number: 0,
            object_id: change.object_id,
            property_name: None,
            property_value: None,
            change_flag: None,
            change_source: change.source.kind.as_str(),
            source_id: change.source.event_source_id().map(str::to_owned),
            primary_object_id: None,
            merged_object_ids: None,
            new_object_id: None,
            number_of_properties_moved: None,
        };
        match &change.kind {
            ChangeKind::Creation => event.change_flag = Some("CREATED"),
            ChangeKind::Deletion => event.change_flag = Some("DELETED"),
            ChangeKind::PropertyChange { name, value } => {
                event.property_name = Some(name.clone());
                event.property_value = Some(value.clone());
            }
            ChangeKind::Merge {
                primary,
                merged,
                new_object_id,
                moved,
            } => {
                event.primary_object_id = Some(*primary);
                event.merged_object_ids = Some(merged.clone());
                event.new_object_id = Some(*new_object_id);
                event.number_of_properties_moved = Some(*moved);
            }
            ChangeKind::PrivacyDeletion | ChangeKind::Restore => {}
        }
        event
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crm::Source;

    #[test]
    fn integration_creation_matches_a_real_capture() {
        let change = Change {
            object_id: 106_500_991_877,
            occurred_at: 1_742_175_136_625,
            source: Source::integration(9_318_066),
            kind: ChangeKind::Creation,
        };
        let e = WebhookEvent::from_change(&change, 3_327_050, 49_532_047, 9_318_066, 3_944_863_254);
        let json = serde_json::to_string(&e).expect("json");
        assert_eq!(
            json,
            r#"{"eventId":3944863254,"subscriptionId":3327050,"portalId":49532047,"appId":9318066,"occurredAt":1742175136625,"subscriptionType":"contact.creation","attemptNumber":0,"objectId":106500991877,"changeFlag":"CREATED","changeSource":"INTEGRATION","sourceId":"9318066"}"#
        );
    }
}
