//! HubSpot webhook events and their identity.
//!
//! HubSpot posts a JSON array of up to 100 events. `eventId` is documented as
//! *not* unique and a notification may be delivered more than once (retries
//! carry a higher `attemptNumber`), so an event's identity is the composite
//! [`EventKey`]. Events are kept as the raw JSON HubSpot sent: the ingester
//! forwards them untouched and the worker interprets them, so an event type
//! nobody understands yet is still carried (and dead-lettered) rather than lost.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use crate::ids::{ObjectId, PortalId};

/// The identity of one webhook event, stable across HubSpot's redeliveries.
///
/// `hs:{portalId}:{subscriptionId}:{eventId}:{objectId}:{occurredAt}` with
/// `:{propertyName}` appended for property changes; never `attemptNumber`.
/// An event without those fields gets `raw:{hash of its bytes}`, so that a
/// redelivery of the same odd event still dedupes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventKey(String);

impl EventKey {
    /// The key as text (the queue's task id and idempotency key).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the event carried a full HubSpot identity.
    pub fn is_identified(&self) -> bool {
        self.0.starts_with("hs:")
    }

    fn fallback(raw: &str) -> Self {
        // Two independent 64-bit FNV-1a hashes: no I/O, no dependency, and
        // 128 bits make an accidental collision between odd events negligible.
        let a = fnv1a(raw.as_bytes(), 0xcbf2_9ce4_8422_2325);
        let b = fnv1a(raw.as_bytes(), 0x8422_2325_cbf2_9ce4);
        Self(format!("raw:{a:016x}{b:016x}"))
    }
}

impl fmt::Display for EventKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn fnv1a(bytes: &[u8], seed: u64) -> u64 {
    bytes.iter().fold(seed, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The kind of change an event reports. Unknown kinds are kept, not rejected.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SubscriptionType {
    /// `contact.creation`
    ContactCreation,
    /// `contact.propertyChange`
    ContactPropertyChange,
    /// `contact.deletion`
    ContactDeletion,
    /// `contact.privacyDeletion` (GDPR)
    ContactPrivacyDeletion,
    /// `contact.merge`
    ContactMerge,
    /// `contact.restore`
    ContactRestore,
    /// `contact.associationChange`
    ContactAssociationChange,
    /// Anything else, as HubSpot spelled it (empty when the field was absent).
    Other(String),
}

impl SubscriptionType {
    /// Parses HubSpot's `subscriptionType` string.
    pub fn parse(s: &str) -> Self {
        match s {
            "contact.creation" => Self::ContactCreation,
            "contact.propertyChange" => Self::ContactPropertyChange,
            "contact.deletion" => Self::ContactDeletion,
            "contact.privacyDeletion" => Self::ContactPrivacyDeletion,
            "contact.merge" => Self::ContactMerge,
            "contact.restore" => Self::ContactRestore,
            "contact.associationChange" => Self::ContactAssociationChange,
            other => Self::Other(other.to_owned()),
        }
    }

    /// HubSpot's spelling.
    pub fn as_str(&self) -> &str {
        match self {
            Self::ContactCreation => "contact.creation",
            Self::ContactPropertyChange => "contact.propertyChange",
            Self::ContactDeletion => "contact.deletion",
            Self::ContactPrivacyDeletion => "contact.privacyDeletion",
            Self::ContactMerge => "contact.merge",
            Self::ContactRestore => "contact.restore",
            Self::ContactAssociationChange => "contact.associationChange",
            Self::Other(s) => s,
        }
    }
}

impl fmt::Display for SubscriptionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One event of a webhook batch: its identity, the fields needed to route it,
/// and the JSON exactly as HubSpot sent it.
#[derive(Debug, Clone)]
pub struct WebhookEvent {
    key: EventKey,
    portal_id: Option<PortalId>,
    object_id: Option<ObjectId>,
    subscription_type: SubscriptionType,
    occurred_at_ms: Option<i64>,
    attempt_number: u32,
    raw: Box<RawValue>,
}

impl WebhookEvent {
    /// Interprets one element of a batch. Never fails: an element that is not
    /// an event we can identify gets a fallback key and is kept for the
    /// dead-letter queue.
    pub fn from_raw(raw: &RawValue) -> Self {
        let owned = raw.to_owned();
        match serde_json::from_str::<Fields<'_>>(raw.get()) {
            Ok(f) => {
                let subscription_type = SubscriptionType::parse(
                    f.subscription_type
                        .or(f.event_type)
                        .as_deref()
                        .unwrap_or(""),
                );
                let key = match (
                    f.portal_id,
                    f.subscription_id,
                    f.event_id,
                    f.object_id,
                    f.occurred_at,
                ) {
                    (Some(p), Some(s), Some(e), Some(o), Some(t)) => {
                        let mut key = format!("hs:{p}:{s}:{e}:{o}:{t}");
                        if let Some(name) = f.property_name.as_deref() {
                            key.push(':');
                            key.push_str(name);
                        }
                        EventKey(key)
                    }
                    _ => EventKey::fallback(raw.get()),
                };
                Self {
                    key,
                    portal_id: f.portal_id.map(PortalId::new),
                    object_id: f.object_id.map(ObjectId::new),
                    subscription_type,
                    occurred_at_ms: f.occurred_at,
                    attempt_number: Self::attempt_from(f.attempt_number),
                    raw: owned,
                }
            }
            Err(_) => Self {
                key: EventKey::fallback(raw.get()),
                portal_id: None,
                object_id: None,
                subscription_type: SubscriptionType::Other(String::new()),
                occurred_at_ms: None,
                attempt_number: 0,
                raw: owned,
            },
        }
    }

    /// The event's identity.
    pub fn key(&self) -> &EventKey {
        &self.key
    }

    /// The HubSpot account the event belongs to, when present.
    pub fn portal_id(&self) -> Option<PortalId> {
        self.portal_id
    }

    /// The changed object (contact id), when present.
    pub fn object_id(&self) -> Option<ObjectId> {
        self.object_id
    }

    /// What happened.
    pub fn subscription_type(&self) -> &SubscriptionType {
        &self.subscription_type
    }

    /// When it happened, in epoch milliseconds.
    pub fn occurred_at_ms(&self) -> Option<i64> {
        self.occurred_at_ms
    }

    /// HubSpot's delivery attempt (0 for the first).
    pub fn attempt_number(&self) -> u32 {
        self.attempt_number
    }

    /// The event exactly as HubSpot sent it.
    pub fn raw(&self) -> &RawValue {
        &self.raw
    }

    /// Takes the raw JSON out.
    pub fn into_raw(self) -> Box<RawValue> {
        self.raw
    }
}

/// The fields of an event we read; everything else stays in the raw JSON.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Fields<'a> {
    #[serde(default, deserialize_with = "lenient_u64")]
    event_id: Option<u64>,
    #[serde(default, deserialize_with = "lenient_u64")]
    subscription_id: Option<u64>,
    #[serde(default, deserialize_with = "lenient_u64")]
    portal_id: Option<u64>,
    #[serde(default, deserialize_with = "lenient_u64")]
    object_id: Option<u64>,
    #[serde(default, deserialize_with = "lenient_i64")]
    occurred_at: Option<i64>,
    #[serde(default, deserialize_with = "lenient_u64")]
    attempt_number: Option<u64>,
    #[serde(default, borrow)]
    subscription_type: Option<Cow<'a, str>>,
    // The documentation's example payloads call it `eventType`.
    #[serde(default, borrow)]
    event_type: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    property_name: Option<Cow<'a, str>>,
}

/// A number, or a string holding one (HubSpot sends numbers; a proxy or a
/// replay tool may not). Anything else reads as absent.
#[derive(Deserialize)]
#[serde(untagged)]
enum NumOrStr<'a> {
    U(u64),
    I(i64),
    #[serde(borrow)]
    S(Cow<'a, str>),
    Other(serde::de::IgnoredAny),
}

fn lenient_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(match Option::<NumOrStr<'_>>::deserialize(d)? {
        Some(NumOrStr::U(n)) => Some(n),
        Some(NumOrStr::I(n)) => u64::try_from(n).ok(),
        Some(NumOrStr::S(s)) => s.trim().parse().ok(),
        _ => None,
    })
}

fn lenient_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Ok(match Option::<NumOrStr<'_>>::deserialize(d)? {
        Some(NumOrStr::U(n)) => i64::try_from(n).ok(),
        Some(NumOrStr::I(n)) => Some(n),
        Some(NumOrStr::S(s)) => s.trim().parse().ok(),
        _ => None,
    })
}

impl WebhookEvent {
    fn attempt_from(n: Option<u64>) -> u32 {
        n.and_then(|n| u32::try_from(n).ok()).unwrap_or(0)
    }
}

/// Why a request body is not a webhook batch (a 400 for HubSpot).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// The body is not JSON.
    #[error("the body is not valid JSON: {0}")]
    NotJson(String),
    /// The body is JSON but not an array of events.
    #[error("the body must be a JSON array of events")]
    NotAnArray,
}

/// A parsed webhook delivery: the events in the order HubSpot sent them.
#[derive(Debug, Clone)]
pub struct WebhookBatch {
    events: Vec<WebhookEvent>,
}

impl WebhookBatch {
    /// Parses a delivery body. Only the envelope can fail; odd elements
    /// inside a valid array become events with a fallback key.
    pub fn parse(body: &[u8]) -> Result<Self, BatchError> {
        let elements: Vec<&RawValue> = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) if e.is_data() => return Err(BatchError::NotAnArray),
            Err(e) => return Err(BatchError::NotJson(e.to_string())),
        };
        Ok(Self {
            events: elements.into_iter().map(WebhookEvent::from_raw).collect(),
        })
    }

    /// The events.
    pub fn events(&self) -> &[WebhookEvent] {
        &self.events
    }

    /// Takes the events out.
    pub fn into_events(self) -> Vec<WebhookEvent> {
        self.events
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether the batch holds no event.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

#[cfg(test)]
mod tests;
