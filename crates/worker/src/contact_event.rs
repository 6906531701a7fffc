//! Typed contact events, parsed from the raw webhook JSON the ingester queued.
//!
//! Pure: no I/O. Anything that is not a contact event we act on (another
//! object type, an association change, a missing identity) is a
//! [`ParseError`] with a stable reason, so the caller dead-letters it instead
//! of retrying it forever.

use leadsync_domain::{ContactId, EventKey, PortalId, SubscriptionType, WebhookEvent};
use serde::Deserialize;
use serde_json::value::RawValue;

/// The event types [`parse`] turns into contact events, in the order
/// `leadsync setup` subscribes to them. `contact.propertyChange` gets one
/// subscription per mapped property; every other type here gets one of its
/// own, so a type handled by [`parse`] must be listed here to be delivered.
pub const HANDLED_TYPES: [SubscriptionType; 6] = [
    SubscriptionType::ContactCreation,
    SubscriptionType::ContactPropertyChange,
    SubscriptionType::ContactDeletion,
    SubscriptionType::ContactRestore,
    SubscriptionType::ContactPrivacyDeletion,
    SubscriptionType::ContactMerge,
];

/// What happened to a contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContactEventKind {
    /// `contact.creation`
    Creation,
    /// `contact.propertyChange`
    PropertyChange {
        /// The changed property.
        property: String,
        /// Its new value as the event carried it (a hint only: the worker
        /// reads the current state).
        value: Option<String>,
    },
    /// `contact.deletion`
    Deletion,
    /// `contact.restore`
    Restore,
    /// `contact.privacyDeletion`
    PrivacyDeletion,
    /// `contact.merge`
    Merge {
        /// The contact that survives.
        primary: ContactId,
        /// The contacts merged into it (never the primary).
        merged: Vec<ContactId>,
    },
}

impl ContactEventKind {
    /// A stable snake_case name, for logs and audit reasons.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Creation => "creation",
            Self::PropertyChange { .. } => "property_change",
            Self::Deletion => "deletion",
            Self::Restore => "restore",
            Self::PrivacyDeletion => "privacy_deletion",
            Self::Merge { .. } => "merge",
        }
    }
}

/// One contact event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactEvent {
    /// The event's identity.
    pub key: EventKey,
    /// The HubSpot account.
    pub portal: PortalId,
    /// The contact concerned (for a merge: the event's object).
    pub contact: ContactId,
    /// What happened.
    pub kind: ContactEventKind,
    /// When, in epoch milliseconds.
    pub occurred_at_ms: Option<i64>,
    /// HubSpot's `changeSource` (e.g. `CRM_UI`, `INTEGRATION`).
    pub change_source: Option<String>,
    /// HubSpot's `sourceId` (our app id for our own writes).
    pub source_id: Option<String>,
}

/// Why a raw event is not a contact event we process. Each reason is a
/// stable snake_case dead-letter reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not a JSON object with the fields of a HubSpot event.
    #[error("malformed_event")]
    Malformed,
    /// The event has no full HubSpot identity (portal, subscription, event,
    /// object, time).
    #[error("missing_identity")]
    MissingIdentity,
    /// An event type the worker does not handle.
    #[error("unknown_event_type")]
    UnknownType(String),
    /// A merge event without its primary or merged ids.
    #[error("merge_without_ids")]
    MergeWithoutIds,
    /// A property change without a property name.
    #[error("property_change_without_property")]
    PropertyChangeWithoutProperty,
}

impl ParseError {
    /// The dead-letter reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Malformed => "malformed_event",
            Self::MissingIdentity => "missing_identity",
            Self::UnknownType(_) => "unknown_event_type",
            Self::MergeWithoutIds => "merge_without_ids",
            Self::PropertyChangeWithoutProperty => "property_change_without_property",
        }
    }
}

/// The fields beyond the identity that [`WebhookEvent`] does not read.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Extra {
    #[serde(default)]
    property_name: Option<String>,
    #[serde(default)]
    property_value: Option<serde_json::Value>,
    #[serde(default)]
    change_source: Option<String>,
    #[serde(default)]
    source_id: Option<serde_json::Value>,
    #[serde(default)]
    primary_object_id: Option<serde_json::Value>,
    #[serde(default)]
    merged_object_ids: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    new_object_id: Option<serde_json::Value>,
}

/// Parses one raw event.
pub fn parse(raw: &RawValue) -> Result<ContactEvent, ParseError> {
    let event = WebhookEvent::from_raw(raw);
    let extra: Extra = serde_json::from_str(raw.get()).map_err(|_| ParseError::Malformed)?;
    if !event.key().is_identified() {
        return Err(ParseError::MissingIdentity);
    }
    let (Some(portal), Some(object)) = (event.portal_id(), event.object_id()) else {
        return Err(ParseError::MissingIdentity);
    };
    let contact = ContactId::from(object);
    let kind = match event.subscription_type() {
        SubscriptionType::ContactCreation => ContactEventKind::Creation,
        SubscriptionType::ContactPropertyChange => ContactEventKind::PropertyChange {
            property: extra
                .property_name
                .filter(|p| !p.is_empty())
                .ok_or(ParseError::PropertyChangeWithoutProperty)?,
            value: extra.property_value.as_ref().and_then(as_text),
        },
        SubscriptionType::ContactDeletion => ContactEventKind::Deletion,
        SubscriptionType::ContactRestore => ContactEventKind::Restore,
        SubscriptionType::ContactPrivacyDeletion => ContactEventKind::PrivacyDeletion,
        SubscriptionType::ContactMerge => {
            // The contact resulting from a merge is `newObjectId` when
            // HubSpot names one, else the primary.
            let primary = extra
                .new_object_id
                .as_ref()
                .and_then(as_id)
                .or_else(|| extra.primary_object_id.as_ref().and_then(as_id))
                .ok_or(ParseError::MergeWithoutIds)?;
            let mut merged: Vec<ContactId> = extra
                .merged_object_ids
                .iter()
                .flatten()
                .filter_map(as_id)
                .chain(extra.primary_object_id.as_ref().and_then(as_id))
                .filter(|id| *id != primary)
                .collect();
            merged.sort_unstable();
            merged.dedup();
            if merged.is_empty() {
                return Err(ParseError::MergeWithoutIds);
            }
            ContactEventKind::Merge { primary, merged }
        }
        other => return Err(ParseError::UnknownType(other.as_str().to_owned())),
    };
    Ok(ContactEvent {
        key: event.key().clone(),
        portal,
        contact,
        kind,
        occurred_at_ms: event.occurred_at_ms(),
        change_source: extra.change_source,
        source_id: extra.source_id.as_ref().and_then(as_text),
    })
}

fn as_text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn as_id(value: &serde_json::Value) -> Option<ContactId> {
    match value {
        serde_json::Value::Number(n) => n.as_u64().map(ContactId::new),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(json: &str) -> Box<RawValue> {
        RawValue::from_string(json.to_owned()).expect("valid JSON")
    }

    const BASE: &str = r#""eventId":1,"subscriptionId":2,"portalId":62515,"objectId":100000000001,"occurredAt":1700000000000,"attemptNumber":0"#;

    #[test]
    fn a_property_change_carries_its_property_value_and_source() {
        // Arrange
        let json = format!(
            r#"{{{BASE},"subscriptionType":"contact.propertyChange","propertyName":"firstname","propertyValue":"Ann","changeSource":"INTEGRATION","sourceId":"1160452"}}"#
        );

        // Act
        let event = parse(&raw(&json)).expect("parses");

        // Assert
        assert_eq!(event.portal, PortalId::new(62515));
        assert_eq!(event.contact, ContactId::new(100_000_000_001));
        assert_eq!(
            event.kind,
            ContactEventKind::PropertyChange {
                property: "firstname".into(),
                value: Some("Ann".into())
            }
        );
        assert_eq!(event.occurred_at_ms, Some(1_700_000_000_000));
        assert_eq!(event.change_source.as_deref(), Some("INTEGRATION"));
        assert_eq!(event.source_id.as_deref(), Some("1160452"));
        assert!(event.key.as_str().ends_with(":firstname"));
    }

    #[test]
    fn simple_kinds_parse() {
        for (ty, kind) in [
            ("contact.creation", ContactEventKind::Creation),
            ("contact.deletion", ContactEventKind::Deletion),
            ("contact.restore", ContactEventKind::Restore),
            ("contact.privacyDeletion", ContactEventKind::PrivacyDeletion),
        ] {
            let json = format!(r#"{{{BASE},"subscriptionType":"{ty}"}}"#);
            assert_eq!(parse(&raw(&json)).expect("parses").kind, kind, "{ty}");
        }
    }

    #[test]
    fn a_merge_names_the_surviving_and_the_merged_contacts() {
        // Arrange
        let json = format!(
            r#"{{{BASE},"subscriptionType":"contact.merge","primaryObjectId":7,"mergedObjectIds":[7,9],"newObjectId":7}}"#
        );

        // Act
        let event = parse(&raw(&json)).expect("parses");

        // Assert
        assert_eq!(
            event.kind,
            ContactEventKind::Merge {
                primary: ContactId::new(7),
                merged: vec![ContactId::new(9)]
            }
        );
    }

    #[test]
    fn the_handled_types_are_the_ones_parse_knows() {
        let known = [
            SubscriptionType::ContactCreation,
            SubscriptionType::ContactPropertyChange,
            SubscriptionType::ContactDeletion,
            SubscriptionType::ContactPrivacyDeletion,
            SubscriptionType::ContactMerge,
            SubscriptionType::ContactRestore,
            SubscriptionType::ContactAssociationChange,
        ];
        for ty in known {
            let json = format!(
                r#"{{{BASE},"subscriptionType":"{ty}","propertyName":"email","primaryObjectId":7,"mergedObjectIds":[9]}}"#
            );
            let parsed = parse(&raw(&json));
            assert_eq!(
                !matches!(parsed, Err(ParseError::UnknownType(_))),
                HANDLED_TYPES.contains(&ty),
                "{ty}: {parsed:?}"
            );
        }
    }

    #[test]
    fn odd_events_are_refused_with_a_reason() {
        let unknown = format!(r#"{{{BASE},"subscriptionType":"deal.creation"}}"#);
        assert_eq!(
            parse(&raw(&unknown)).map_err(|e| e.reason()),
            Err("unknown_event_type")
        );
        let association = format!(r#"{{{BASE},"subscriptionType":"contact.associationChange"}}"#);
        assert!(matches!(
            parse(&raw(&association)),
            Err(ParseError::UnknownType(_))
        ));
        let anonymous = r#"{"subscriptionType":"contact.creation","objectId":5}"#;
        assert_eq!(
            parse(&raw(anonymous)).map_err(|e| e.reason()),
            Err("missing_identity")
        );
        assert_eq!(
            parse(&raw("[1,2]")).map_err(|e| e.reason()),
            Err("malformed_event")
        );
        let no_property = format!(r#"{{{BASE},"subscriptionType":"contact.propertyChange"}}"#);
        assert_eq!(
            parse(&raw(&no_property)).map_err(|e| e.reason()),
            Err("property_change_without_property")
        );
        let merge = format!(r#"{{{BASE},"subscriptionType":"contact.merge"}}"#);
        assert_eq!(
            parse(&raw(&merge)).map_err(|e| e.reason()),
            Err("merge_without_ids")
        );
    }
}
