use proptest::prelude::*;

use super::*;

fn incoming(v: &str, at: Option<i64>) -> Incoming {
    Incoming {
        value: v.into(),
        changed_at_ms: at,
    }
}

fn current(v: &str, base: Option<&str>, at: Option<i64>) -> Current {
    Current {
        value: v.into(),
        base: base.map(ValueHash::of),
        changed_at_ms: at,
    }
}

const F: LeadField = LeadField::FirstName;

#[test]
fn a_change_made_only_in_hubspot_is_applied() {
    let d = decide_inbound(
        F,
        &incoming("Ann", None),
        &current("Anne", Some("Anne"), None),
        None,
        &SyncPolicy::default(),
    );
    assert_eq!(
        d,
        FieldDecision::Apply {
            value: "Ann".into(),
            overridden: None
        }
    );
}

#[test]
fn our_own_write_coming_back_is_an_echo_even_if_the_platform_moved_on() {
    // We wrote "B" to HubSpot; the platform has since changed the lead to "C".
    let d = decide_inbound(
        F,
        &incoming("B", None),
        &current("C", Some("B"), None),
        Some(ValueHash::of("B")),
        &SyncPolicy::default(),
    );
    assert_eq!(d, FieldDecision::Echo);
}

#[test]
fn a_later_rep_edit_to_a_platform_created_contact_is_not_lost() {
    // The seed's rule would skip this contact entirely (lead_source_system = platform).
    // We wrote "Ada"; a rep changed it to "Ada L." in HubSpot.
    let d = decide_inbound(
        F,
        &incoming("Ada L.", None),
        &current("Ada", Some("Ada"), None),
        Some(ValueHash::of("Ada")),
        &SyncPolicy::default(),
    );
    assert_eq!(
        d,
        FieldDecision::Apply {
            value: "Ada L.".into(),
            overridden: None
        }
    );
}

#[test]
fn a_platform_change_not_yet_pushed_is_not_undone_by_hubspots_old_value() {
    // The lead moved from "Kate" to "Kat"; HubSpot still holds "Kate", the
    // value both sides agreed on, because the push has not happened yet.
    for policy in [
        ConflictPolicy::HubspotWins,
        ConflictPolicy::PlatformWins,
        ConflictPolicy::LastWriteWins,
    ] {
        let d = decide_inbound(
            F,
            &incoming("Kate", Some(5)),
            &current("Kat", Some("Kate"), Some(1)),
            None,
            &SyncPolicy {
                conflict: policy,
                ..SyncPolicy::default()
            },
        );
        assert_eq!(d, FieldDecision::PlatformAhead, "{policy:?}");
    }
}

#[test]
fn equal_values_change_nothing() {
    let d = decide_inbound(
        F,
        &incoming(" Ann ", None),
        &current("Ann", None, None),
        None,
        &SyncPolicy::default(),
    );
    assert_eq!(d, FieldDecision::NoChange);
}

#[test]
fn conflicts_follow_the_policy() {
    let both_changed = current("Platform", Some("Base"), Some(2_000));
    let hub = incoming("HubSpot", Some(1_000));
    let mut policy = SyncPolicy::default();
    assert_eq!(
        decide_inbound(F, &hub, &both_changed, None, &policy),
        FieldDecision::Apply {
            value: "HubSpot".into(),
            overridden: Some("Platform".into())
        }
    );
    policy.conflict = ConflictPolicy::PlatformWins;
    assert_eq!(
        decide_inbound(F, &hub, &both_changed, None, &policy),
        FieldDecision::Keep {
            reason: KeepReason::ConflictPlatformWins,
            losing: "HubSpot".into()
        }
    );
    policy.conflict = ConflictPolicy::LastWriteWins;
    assert_eq!(
        decide_inbound(F, &hub, &both_changed, None, &policy),
        FieldDecision::Keep {
            reason: KeepReason::ConflictPlatformNewer,
            losing: "HubSpot".into()
        }
    );
    assert!(
        decide_inbound(
            F,
            &incoming("HubSpot", Some(3_000)),
            &both_changed,
            None,
            &policy
        )
        .writes()
    );
    policy.per_field.insert(F, ConflictPolicy::HubspotWins);
    assert!(decide_inbound(F, &hub, &both_changed, None, &policy).writes());
}

#[test]
fn empty_never_overwrites_a_filled_value_when_asked() {
    let mut policy = SyncPolicy::default();
    let filled = current("Ann", Some("Ann"), None);
    assert!(decide_inbound(F, &incoming("", None), &filled, None, &policy).writes());
    policy.empty_never_overwrites = true;
    assert_eq!(
        decide_inbound(F, &incoming("", None), &filled, None, &policy),
        FieldDecision::Keep {
            reason: KeepReason::EmptyNeverOverwrites,
            losing: String::new()
        }
    );
}

#[test]
fn a_field_never_synced_but_filled_on_the_platform_is_a_conflict() {
    let mut policy = SyncPolicy {
        conflict: ConflictPolicy::PlatformWins,
        ..SyncPolicy::default()
    };
    let d = decide_inbound(
        F,
        &incoming("Hub", None),
        &current("Plat", None, None),
        None,
        &policy,
    );
    assert!(matches!(d, FieldDecision::Keep { .. }));
    // ...but an empty platform field simply takes HubSpot's value.
    let d = decide_inbound(
        F,
        &incoming("Hub", None),
        &current("", None, None),
        None,
        &policy,
    );
    assert_eq!(
        d,
        FieldDecision::Apply {
            value: "Hub".into(),
            overridden: None
        }
    );
    policy.conflict = ConflictPolicy::HubspotWins;
    assert!(
        decide_inbound(
            F,
            &incoming("Hub", None),
            &current("Plat", None, None),
            None,
            &policy
        )
        .writes()
    );
}

#[test]
fn a_platform_value_is_not_erased_by_hubspot_holding_nothing_when_first_linked() {
    // The platform's lead and a rep's contact were created with the same
    // address at once: the contact has no phone, the lead has one. Nothing
    // was ever synced, so HubSpot's empty value is not a change: the lead
    // keeps its phone, which the push then writes to the contact.
    for conflict in [
        ConflictPolicy::HubspotWins,
        ConflictPolicy::PlatformWins,
        ConflictPolicy::LastWriteWins,
    ] {
        let d = decide_inbound(
            F,
            &incoming("", Some(5)),
            &current("+1 555 0100", None, Some(1)),
            None,
            &SyncPolicy {
                conflict,
                ..SyncPolicy::default()
            },
        );
        assert_eq!(d, FieldDecision::PlatformAhead, "{conflict:?}");
    }
}

fn any_policy() -> impl Strategy<Value = SyncPolicy> {
    (
        prop::sample::select(vec![
            ConflictPolicy::HubspotWins,
            ConflictPolicy::PlatformWins,
            ConflictPolicy::LastWriteWins,
        ]),
        any::<bool>(),
    )
        .prop_map(|(conflict, empty_never_overwrites)| SyncPolicy {
            conflict,
            empty_never_overwrites,
            ..SyncPolicy::default()
        })
}

proptest! {
    /// Whatever the policy: our own echo never writes; an equal value never
    /// writes; a change made only in HubSpot (the lead still at the base)
    /// always writes unless it is an empty value the policy refuses; a change
    /// made only on the platform (HubSpot still at the base) never writes.
    #[test]
    fn invariants(
        base in "[a-c]{0,2}", lead in "[a-c]{0,2}", hub in "[a-c]{0,2}",
        written in prop::option::of("[a-c]{0,2}"),
        hub_at in prop::option::of(0i64..10), lead_at in prop::option::of(0i64..10),
        policy in any_policy(), never_synced in any::<bool>(),
    ) {
        // `None`: the field was never synced, as if both sides had agreed on
        // an empty value.
        let base_hash = (!never_synced).then(|| ValueHash::of(&base));
        let base = if never_synced { String::new() } else { base };
        let cur = Current { value: lead.clone(), base: base_hash, changed_at_ms: lead_at };
        let inc = Incoming { value: hub.clone(), changed_at_ms: hub_at };
        let last = written.as_deref().map(ValueHash::of);
        let d = decide_inbound(F, &inc, &cur, last, &policy);
        if written.as_deref() == Some(hub.as_str()) {
            prop_assert_eq!(&d, &FieldDecision::Echo);
        }
        if hub == lead {
            prop_assert!(!d.writes());
        }
        if lead == base && hub != lead && written.as_deref() != Some(hub.as_str())
            && !(hub.is_empty() && policy.empty_never_overwrites)
        {
            prop_assert_eq!(&d, &FieldDecision::Apply { value: hub.clone(), overridden: None });
        }
        if hub == base && lead != base {
            prop_assert!(!d.writes(), "the platform's pending change was overwritten: {:?}", d);
        }
        if let FieldDecision::Apply { value, .. } = &d {
            prop_assert_eq!(value, &hub);
        }
    }
}
