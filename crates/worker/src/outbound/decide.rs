//! The per-field decision for a linked lead before a push: the mirror of
//! [`leadsync_domain::decide_inbound`]. Pure; no I/O.

use leadsync_domain::{ConflictPolicy, LeadField, SyncPolicy, ValueHash};

/// The platform's side of one field.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PlatformSide {
    /// The lead's value (`""` = unset).
    pub value: String,
    /// Hash of the value both sides last agreed on; `None` if never synced.
    pub base: Option<ValueHash>,
    /// When the platform last changed the field (epoch ms).
    pub changed_at_ms: Option<i64>,
}

/// HubSpot's side of one field, in the platform's form (case mapped).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HubSpotSide {
    /// The property's value (`""` = unset).
    pub value: String,
    /// When the property last changed (epoch ms), from its history.
    pub changed_at_ms: Option<i64>,
    /// Hash of the value leadsync last wrote to it (echo ledger).
    pub last_written: Option<ValueHash>,
}

/// What to do with one field of a linked lead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushDecision {
    /// Write the lead's value. `overriding` holds HubSpot's value when both
    /// sides had changed and the platform won.
    Push {
        /// HubSpot's losing value, for the audit log.
        overriding: Option<String>,
        /// Why the platform won a conflict (`conflict_platform_wins`, ...).
        reason: Option<&'static str>,
    },
    /// Both sides hold the value: nothing to write, it is the merge base.
    NoChange,
    /// Only HubSpot changed it: the inbound side brings HubSpot's value.
    Leave,
    /// Both changed it and HubSpot's value stays (or the platform's empty
    /// value must not clear HubSpot's).
    Keep {
        /// A stable snake_case reason for counters and the audit log.
        reason: &'static str,
    },
}

/// A value as HubSpot holds it, for comparisons and hashes: trimmed, and an
/// address lowercased (HubSpot stores addresses in lower case, so its echo
/// of `Ann@Example.com` is `ann@example.com`).
pub fn canonical(field: LeadField, value: &str) -> String {
    let v = value.trim();
    if field == LeadField::Email {
        v.to_lowercase()
    } else {
        v.to_owned()
    }
}

/// The fingerprint of a field value in the merge base and the echo ledger.
pub(crate) fn hash_of(field: LeadField, value: &str) -> ValueHash {
    ValueHash::of(&canonical(field, value))
}

/// Decides one field of a linked lead before a push. The mirror of
/// [`leadsync_domain::decide_inbound`]: a field changed on one side flows
/// to the other; a field changed on both sides since they last agreed is a
/// conflict for the policy.
pub fn decide_outbound(
    field: LeadField,
    platform: &PlatformSide,
    hubspot: &HubSpotSide,
    policy: &SyncPolicy,
) -> PushDecision {
    let p = canonical(field, &platform.value);
    let h = canonical(field, &hubspot.value);
    let (p, h) = (p.as_str(), h.as_str());
    if p == h {
        return PushDecision::NoChange;
    }
    // A field never synced counts as changed when it holds a value.
    let platform_moved = platform
        .base
        .map_or(!p.is_empty(), |base| base != ValueHash::of(p));
    if !platform_moved {
        return PushDecision::Leave;
    }
    if p.is_empty() && policy.empty_never_overwrites {
        return PushDecision::Keep {
            reason: "empty_never_overwrites",
        };
    }
    // HubSpot holding what leadsync wrote last has not moved, whatever the base says.
    let hubspot_moved = hubspot.last_written != Some(ValueHash::of(h))
        && platform
            .base
            .map_or(!h.is_empty(), |base| base != ValueHash::of(h));
    if !hubspot_moved {
        return PushDecision::Push {
            overriding: None,
            reason: None,
        };
    }
    let platform_wins = match policy.for_field(field) {
        ConflictPolicy::PlatformWins => Some("conflict_platform_wins"),
        ConflictPolicy::HubspotWins => None,
        // A tie goes to HubSpot, as on the inbound side.
        ConflictPolicy::LastWriteWins => match (platform.changed_at_ms, hubspot.changed_at_ms) {
            (Some(ours), Some(theirs)) if ours > theirs => Some("conflict_platform_newer"),
            (Some(_), None) => Some("conflict_platform_newer"),
            _ => None,
        },
    };
    match platform_wins {
        Some(reason) => PushDecision::Push {
            overriding: Some(h.to_owned()),
            reason: Some(reason),
        },
        None => PushDecision::Keep {
            reason: match policy.for_field(field) {
                ConflictPolicy::LastWriteWins => "conflict_hubspot_newer",
                _ => "conflict_hubspot_wins",
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn platform(value: &str, base: Option<&str>) -> PlatformSide {
        PlatformSide {
            value: value.to_owned(),
            base: base.map(ValueHash::of),
            changed_at_ms: Some(2_000),
        }
    }

    fn hubspot(value: &str) -> HubSpotSide {
        HubSpotSide {
            value: value.to_owned(),
            changed_at_ms: Some(1_000),
            last_written: None,
        }
    }

    fn policy(conflict: ConflictPolicy) -> SyncPolicy {
        SyncPolicy {
            conflict,
            ..SyncPolicy::default()
        }
    }

    const PUSH: PushDecision = PushDecision::Push {
        overriding: None,
        reason: None,
    };

    #[test]
    fn a_field_only_the_platform_changed_is_pushed() {
        // Arrange
        let ours = platform("Ann", Some("Anne"));

        // Act
        let decision = decide_outbound(
            LeadField::FirstName,
            &ours,
            &hubspot("Anne"),
            &SyncPolicy::default(),
        );

        // Assert
        assert_eq!(decision, PUSH);
    }

    #[test]
    fn a_field_only_hubspot_changed_is_left_to_the_inbound_side() {
        let decision = decide_outbound(
            LeadField::FirstName,
            &platform("Anne", Some("Anne")),
            &hubspot("Annie"),
            &policy(ConflictPolicy::PlatformWins),
        );
        assert_eq!(decision, PushDecision::Leave);
    }

    #[test]
    fn equal_values_are_no_change() {
        let decision = decide_outbound(
            LeadField::FirstName,
            &platform(" Ann ", None),
            &hubspot("Ann"),
            &SyncPolicy::default(),
        );
        assert_eq!(decision, PushDecision::NoChange);
    }

    #[test]
    fn hubspot_holding_our_last_write_has_not_moved() {
        // Arrange: the base was never recorded, but the ledger knows the value.
        let mut theirs = hubspot("Anne");
        theirs.last_written = Some(ValueHash::of("Anne"));

        // Act
        let decision = decide_outbound(
            LeadField::FirstName,
            &platform("Ann", None),
            &theirs,
            &SyncPolicy::default(),
        );

        // Assert
        assert_eq!(decision, PUSH);
    }

    #[test]
    fn a_conflict_follows_the_policy() {
        let ours = platform("Ann", Some("Anne"));
        let theirs = hubspot("Annie");
        assert_eq!(
            decide_outbound(
                LeadField::FirstName,
                &ours,
                &theirs,
                &policy(ConflictPolicy::HubspotWins)
            ),
            PushDecision::Keep {
                reason: "conflict_hubspot_wins"
            }
        );
        assert_eq!(
            decide_outbound(
                LeadField::FirstName,
                &ours,
                &theirs,
                &policy(ConflictPolicy::PlatformWins)
            ),
            PushDecision::Push {
                overriding: Some("Annie".to_owned()),
                reason: Some("conflict_platform_wins"),
            }
        );
        // The platform changed it at 2,000 ms, HubSpot at 1,000 ms.
        assert_eq!(
            decide_outbound(
                LeadField::FirstName,
                &ours,
                &theirs,
                &policy(ConflictPolicy::LastWriteWins)
            ),
            PushDecision::Push {
                overriding: Some("Annie".to_owned()),
                reason: Some("conflict_platform_newer"),
            }
        );
        let mut newer = theirs;
        newer.changed_at_ms = Some(3_000);
        assert_eq!(
            decide_outbound(
                LeadField::FirstName,
                &ours,
                &newer,
                &policy(ConflictPolicy::LastWriteWins)
            ),
            PushDecision::Keep {
                reason: "conflict_hubspot_newer"
            }
        );
    }

    #[test]
    fn a_per_field_policy_overrides_the_integration_policy() {
        let mut per_field = policy(ConflictPolicy::HubspotWins);
        per_field
            .per_field
            .insert(LeadField::Phone, ConflictPolicy::PlatformWins);
        let decision = decide_outbound(
            LeadField::Phone,
            &platform("1", Some("0")),
            &hubspot("2"),
            &per_field,
        );
        assert!(
            matches!(decision, PushDecision::Push { .. }),
            "{decision:?}"
        );
    }

    #[test]
    fn an_empty_value_never_clears_a_filled_one_when_asked() {
        let keep = SyncPolicy {
            empty_never_overwrites: true,
            ..SyncPolicy::default()
        };
        assert_eq!(
            decide_outbound(
                LeadField::Phone,
                &platform("", Some("1")),
                &hubspot("1"),
                &keep
            ),
            PushDecision::Keep {
                reason: "empty_never_overwrites"
            }
        );
        assert_eq!(
            decide_outbound(
                LeadField::Phone,
                &platform("", Some("1")),
                &hubspot("1"),
                &SyncPolicy::default()
            ),
            PUSH,
            "clearing a field is a change like any other"
        );
    }

    #[test]
    fn addresses_compare_as_hubspot_stores_them() {
        // Arrange: HubSpot lowercased the address leadsync wrote.
        let ours = platform("Ann@Example.com", Some("ann@example.com"));

        // Act
        let same = decide_outbound(
            LeadField::Email,
            &ours,
            &hubspot("ann@example.com"),
            &SyncPolicy::default(),
        );
        let moved = decide_outbound(
            LeadField::Email,
            &platform("bob@example.com", Some("ann@example.com")),
            &hubspot("ann@example.com"),
            &SyncPolicy::default(),
        );

        // Assert
        assert_eq!(same, PushDecision::NoChange);
        assert_eq!(moved, PUSH);
        assert_eq!(
            hash_of(LeadField::Email, " Ann@Example.com"),
            ValueHash::of("ann@example.com")
        );
    }

    #[test]
    fn a_never_synced_field_conflicts_only_when_both_hold_values() {
        // Linked by address without a base: HubSpot empty → push.
        assert_eq!(
            decide_outbound(
                LeadField::Company,
                &platform("Acme", None),
                &hubspot(""),
                &SyncPolicy::default()
            ),
            PUSH
        );
        assert_eq!(
            decide_outbound(
                LeadField::Company,
                &platform("Acme", None),
                &hubspot("Initech"),
                &SyncPolicy::default()
            ),
            PushDecision::Keep {
                reason: "conflict_hubspot_wins"
            }
        );
        assert_eq!(
            decide_outbound(
                LeadField::Company,
                &platform("", None),
                &hubspot("Initech"),
                &SyncPolicy::default()
            ),
            PushDecision::Leave
        );
    }
}
