//! The CRM data of one portal: contacts with property history, the property
//! definitions, and search. Pure state transitions: no I/O, no clocks (callers
//! pass `now`), no locks (the portal's mutex guards a [`CrmStore`]).

pub(crate) mod contacts;
pub(crate) mod properties;
pub(crate) mod search;

use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};

pub(crate) use contacts::{CrmStore, Selection, WriteError};

/// Who made a change: `changeSource`/`sourceId` in webhooks, `sourceType`/
/// `sourceId`/`updatedByUserId` in property history (docs/hubspot-sim.md, "Webhook payloads").
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Source {
    pub(crate) kind: SourceType,
    pub(crate) source_id: Option<String>,
    pub(crate) user_id: Option<u64>,
}

impl Source {
    /// An app's API call: `INTEGRATION` with the app id as a string.
    pub(crate) fn integration(app_id: u64) -> Arc<Self> {
        Arc::new(Self {
            kind: SourceType::Integration,
            source_id: Some(app_id.to_string()),
            user_id: None,
        })
    }

    /// A HubSpot user in the CRM UI: `CRM_UI` with `userId:N`.
    pub(crate) fn user(user_id: u64) -> Arc<Self> {
        Arc::new(Self {
            kind: SourceType::CrmUi,
            source_id: Some(format!("userId:{user_id}")),
            user_id: Some(user_id),
        })
    }

    /// A CRM import. The documented `IMPORT` payload carries no `sourceId`;
    /// the import id is kept for property history only.
    pub(crate) fn import(import_id: u64, user_id: u64) -> Arc<Self> {
        Arc::new(Self {
            kind: SourceType::Import,
            source_id: Some(import_id.to_string()),
            user_id: Some(user_id),
        })
    }

    /// The `sourceId` a webhook event carries.
    pub(crate) fn event_source_id(&self) -> Option<&str> {
        match self.kind {
            SourceType::Import => None,
            _ => self.source_id.as_deref(),
        }
    }
}

/// The change sources the simulator produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SourceType {
    Integration,
    CrmUi,
    Import,
}

impl SourceType {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Integration => "INTEGRATION",
            Self::CrmUi => "CRM_UI",
            Self::Import => "IMPORT",
        }
    }
}

/// Something that happened to a contact; webhook events are made from these.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    pub(crate) object_id: u64,
    pub(crate) occurred_at: i64,
    pub(crate) source: Arc<Source>,
    pub(crate) kind: ChangeKind,
}

/// The kinds of [`Change`], one per contact subscription type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ChangeKind {
    Creation,
    PropertyChange {
        name: String,
        value: String,
    },
    Deletion,
    PrivacyDeletion,
    Restore,
    Merge {
        primary: u64,
        merged: Vec<u64>,
        new_object_id: u64,
        moved: u32,
    },
}

impl ChangeKind {
    /// The `subscriptionType` this change is delivered as.
    pub(crate) fn subscription_type(&self) -> &'static str {
        match self {
            Self::Creation => "contact.creation",
            Self::PropertyChange { .. } => "contact.propertyChange",
            Self::Deletion => "contact.deletion",
            Self::PrivacyDeletion => "contact.privacyDeletion",
            Self::Restore => "contact.restore",
            Self::Merge { .. } => "contact.merge",
        }
    }
}

/// Milliseconds since the epoch, now.
pub(crate) fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// HubSpot's timestamp format: ISO-8601, milliseconds, `Z`.
pub(crate) fn iso(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parses an ISO-8601 timestamp, a date, or epoch milliseconds into ms.
pub(crate) fn parse_time_ms(value: &str) -> Option<i64> {
    let v = value.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        return v.parse().ok();
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(v) {
        return Some(t.timestamp_millis());
    }
    chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_in_hubspot_format() {
        let ms = 1_726_078_910_012;
        assert_eq!(iso(ms), "2024-09-11T18:21:50.012Z");
        assert_eq!(parse_time_ms("2024-09-11T18:21:50.012Z"), Some(ms));
        assert_eq!(parse_time_ms("1726078910012"), Some(ms));
        assert_eq!(parse_time_ms("2024-09-11"), Some(1_726_012_800_000));
        assert_eq!(parse_time_ms("yesterday"), None);
    }
}
