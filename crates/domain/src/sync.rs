//! What an inbound change does to a lead, field by field.
//!
//! Loop prevention is an echo ledger, not the seed plan's rule of skipping
//! every contact whose `lead_source_system` is the platform (that rule drops a
//! sales rep's later edits to such contacts — a silent lost update). Each
//! decision compares three values:
//!
//! - the value HubSpot now holds (the contact, read in batch);
//! - the lead's current value;
//! - the **base**: the value both sides last agreed on (its hash), so that a
//!   field changed on *both* sides since is a conflict, and a field changed on
//!   one side only simply flows to the other.
//!
//! And one fingerprint: the hash of the value leadsync last wrote to this
//! contact property (the echo ledger). HubSpot sends our own writes back as
//! webhooks; a value equal to what we wrote is our echo, never a change.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::lead::{LeadField, ValueHash};

/// Who wins when both sides changed a field since they last agreed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConflictPolicy {
    /// HubSpot's value is applied (the default).
    #[default]
    HubspotWins,
    /// The lead keeps its value; the outbound push overwrites HubSpot.
    PlatformWins,
    /// The later change wins: HubSpot's property timestamp against the lead
    /// field's own updated-at. A tie goes to HubSpot.
    LastWriteWins,
}

/// An integration's sync policy.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SyncPolicy {
    /// Policy for fields without an override.
    #[serde(default)]
    pub conflict: ConflictPolicy,
    /// Per-field overrides.
    #[serde(default)]
    pub per_field: BTreeMap<LeadField, ConflictPolicy>,
    /// An empty value never overwrites a filled one (in either direction).
    #[serde(default)]
    pub empty_never_overwrites: bool,
}

impl SyncPolicy {
    /// The policy for `field`.
    pub fn for_field(&self, field: LeadField) -> ConflictPolicy {
        self.per_field.get(&field).copied().unwrap_or(self.conflict)
    }
}

/// HubSpot's side of one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    /// The value, already mapped to the platform's form (`""` = unset).
    pub value: String,
    /// When HubSpot's property last changed (epoch ms), from its history.
    pub changed_at_ms: Option<i64>,
}

/// The lead's side of one field.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Current {
    /// The lead's value (`""` = unset).
    pub value: String,
    /// Hash of the value both sides last agreed on; `None` for a field never synced.
    pub base: Option<ValueHash>,
    /// When the platform last changed the field (epoch ms).
    pub changed_at_ms: Option<i64>,
}

/// Why a field keeps the lead's value although HubSpot's differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeepReason {
    /// Both sides changed it; the policy let the platform win.
    ConflictPlatformWins,
    /// Both sides changed it; the platform's change is later.
    ConflictPlatformNewer,
    /// HubSpot's value is empty and the policy keeps filled values.
    EmptyNeverOverwrites,
}

/// What to do with one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldDecision {
    /// Write HubSpot's value to the lead. `overridden` holds the lead's value
    /// when it was a conflict that HubSpot won (for the audit log).
    Apply {
        /// The new value.
        value: String,
        /// The losing platform value, when both sides had changed.
        overridden: Option<String>,
    },
    /// HubSpot's value is the one leadsync wrote: our own echo, skipped.
    Echo,
    /// Both sides already hold this value.
    NoChange,
    /// Only the platform changed the field since both sides last agreed
    /// (HubSpot still holds the agreed value, or nothing for a field never
    /// synced): the lead keeps its value and its push brings it to HubSpot.
    /// Not a merge base: the sides do not agree yet.
    PlatformAhead,
    /// The lead keeps its value.
    Keep {
        /// Why.
        reason: KeepReason,
        /// HubSpot's losing value (for the audit log).
        losing: String,
    },
}

impl FieldDecision {
    /// Whether the lead row changes.
    pub fn writes(&self) -> bool {
        matches!(self, Self::Apply { .. })
    }
}

/// Decides one field of an inbound change.
pub fn decide_inbound(
    field: LeadField,
    incoming: &Incoming,
    current: &Current,
    last_written: Option<ValueHash>,
    policy: &SyncPolicy,
) -> FieldDecision {
    let incoming_value = incoming.value.trim();
    let current_value = current.value.trim();
    let incoming_hash = ValueHash::of(incoming_value);
    // Our own write coming back is never a change, even when the platform
    // has moved on since: applying it would undo the platform's newer value.
    if last_written == Some(incoming_hash) {
        return FieldDecision::Echo;
    }
    if incoming_value == current_value {
        return FieldDecision::NoChange;
    }
    if incoming_value.is_empty() && policy.empty_never_overwrites {
        return FieldDecision::Keep {
            reason: KeepReason::EmptyNeverOverwrites,
            losing: String::new(),
        };
    }
    // Did the platform change the field since both sides last agreed? A field
    // never synced counts as changed when it holds a value.
    let platform_changed = current.base.map_or(!current_value.is_empty(), |base| {
        base != ValueHash::of(current_value)
    });
    if !platform_changed {
        return FieldDecision::Apply {
            value: incoming_value.to_owned(),
            overridden: None,
        };
    }
    // HubSpot still holds the value both sides last agreed on (or, for a
    // field never synced, holds nothing): only the platform changed the
    // field, and its push is on the way. Applying HubSpot's older or empty
    // value here would lose the platform's update.
    let hubspot_changed = current
        .base
        .map_or(!incoming_value.is_empty(), |base| base != incoming_hash);
    if !hubspot_changed {
        return FieldDecision::PlatformAhead;
    }
    let hubspot_wins = match policy.for_field(field) {
        ConflictPolicy::HubspotWins => Ok(()),
        ConflictPolicy::PlatformWins => Err(KeepReason::ConflictPlatformWins),
        ConflictPolicy::LastWriteWins => match (incoming.changed_at_ms, current.changed_at_ms) {
            (Some(hubspot), Some(platform)) if platform > hubspot => {
                Err(KeepReason::ConflictPlatformNewer)
            }
            (None, Some(_)) => Err(KeepReason::ConflictPlatformNewer),
            _ => Ok(()),
        },
    };
    match hubspot_wins {
        Ok(()) => FieldDecision::Apply {
            value: incoming_value.to_owned(),
            overridden: Some(current_value.to_owned()),
        },
        Err(reason) => FieldDecision::Keep {
            reason,
            losing: incoming_value.to_owned(),
        },
    }
}

#[cfg(test)]
mod tests;
