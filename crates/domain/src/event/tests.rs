use proptest::prelude::*;

use super::*;

const CREATION: &str = r#"{"eventId":3944863254,"subscriptionId":3327050,"portalId":49532047,"appId":9318066,"occurredAt":1742175136625,"subscriptionType":"contact.creation","attemptNumber":7,"objectId":106500991877,"changeFlag":"CREATED","changeSource":"INTEGRATION","sourceId":"9318066"}"#;
const PROPERTY: &str = r#"{"eventId":4101286121,"subscriptionId":7562680,"portalId":247187887,"appId":50780459,"occurredAt":1787843156000,"subscriptionType":"contact.propertyChange","attemptNumber":1,"objectId":541935488729,"propertyName":"email","propertyValue":"a@b.c","changeSource":"INTEGRATION","sourceId":"50780459"}"#;

#[test]
fn a_real_creation_event_gets_its_composite_key() {
    let batch = WebhookBatch::parse(format!("[{CREATION}]").as_bytes()).unwrap();
    let ev = &batch.events()[0];
    assert_eq!(
        ev.key().as_str(),
        "hs:49532047:3327050:3944863254:106500991877:1742175136625"
    );
    assert!(ev.key().is_identified());
    assert_eq!(ev.portal_id(), Some(PortalId::new(49_532_047)));
    assert_eq!(ev.object_id(), Some(ObjectId::new(106_500_991_877)));
    assert_eq!(ev.subscription_type(), &SubscriptionType::ContactCreation);
    assert_eq!(ev.attempt_number(), 7);
    assert_eq!(
        ev.raw().get(),
        CREATION,
        "the raw JSON is kept byte for byte"
    );
}

#[test]
fn property_changes_include_the_property_name_in_the_key() {
    let batch = WebhookBatch::parse(format!("[{PROPERTY}]").as_bytes()).unwrap();
    assert_eq!(
        batch.events()[0].key().as_str(),
        "hs:247187887:7562680:4101286121:541935488729:1787843156000:email"
    );
}

#[test]
fn the_attempt_number_does_not_change_the_key() {
    let retry = CREATION.replace("\"attemptNumber\":7", "\"attemptNumber\":8");
    let a = WebhookBatch::parse(format!("[{CREATION}]").as_bytes()).unwrap();
    let b = WebhookBatch::parse(format!("[{retry}]").as_bytes()).unwrap();
    assert_eq!(a.events()[0].key(), b.events()[0].key());
    assert_eq!(b.events()[0].attempt_number(), 8);
}

#[test]
fn the_documentation_spelling_event_type_is_understood() {
    let doc = r#"[{"objectId":1246978,"changeSource":"IMPORT","eventId":3816279480,"subscriptionId":22,"portalId":33,"appId":1160452,"occurredAt":1462216307945,"eventType":"contact.creation","attemptNumber":0}]"#;
    let batch = WebhookBatch::parse(doc.as_bytes()).unwrap();
    assert_eq!(
        batch.events()[0].subscription_type(),
        &SubscriptionType::ContactCreation
    );
}

#[test]
fn unknown_types_and_unidentifiable_elements_are_kept_not_rejected() {
    let body = br#"[{"eventId":1,"subscriptionId":2,"portalId":3,"objectId":4,"occurredAt":5,"subscriptionType":"deal.creation"},{"hello":"world"},7,{"portalId":"oops"}]"#;
    let batch = WebhookBatch::parse(body).unwrap();
    assert_eq!(batch.len(), 4);
    let ev = batch.events();
    assert_eq!(
        ev[0].subscription_type(),
        &SubscriptionType::Other("deal.creation".into())
    );
    assert!(ev[0].key().is_identified());
    for odd in &ev[1..] {
        assert!(odd.key().as_str().starts_with("raw:"), "{}", odd.key());
    }
    assert_eq!(ev[3].portal_id(), None);
    assert_eq!(ev[2].raw().get(), "7");
    // The same odd element gets the same key on redelivery, different ones differ.
    let again = WebhookBatch::parse(body).unwrap();
    assert_eq!(again.events()[1].key(), ev[1].key());
    assert_ne!(ev[1].key(), ev[2].key());
}

#[test]
fn numeric_strings_are_accepted_for_ids() {
    let body = br#"[{"eventId":"1","subscriptionId":"2","portalId":"3","objectId":"4","occurredAt":"5","subscriptionType":"contact.deletion"}]"#;
    let batch = WebhookBatch::parse(body).unwrap();
    assert_eq!(batch.events()[0].key().as_str(), "hs:3:2:1:4:5");
}

#[test]
fn envelope_errors() {
    assert!(matches!(
        WebhookBatch::parse(b"[{"),
        Err(BatchError::NotJson(_))
    ));
    assert!(matches!(
        WebhookBatch::parse(b""),
        Err(BatchError::NotJson(_))
    ));
    assert_eq!(
        WebhookBatch::parse(br#"{"eventId":1}"#).unwrap_err(),
        BatchError::NotAnArray
    );
    assert_eq!(
        WebhookBatch::parse(b"\"x\"").unwrap_err(),
        BatchError::NotAnArray
    );
    assert!(WebhookBatch::parse(b"[]").unwrap().is_empty());
}

proptest! {
    /// Distinct identities give distinct keys, and a key never depends on
    /// attemptNumber or on fields outside the identity.
    #[test]
    fn keys_are_injective_on_identity(
        a in (1u64..u64::MAX, 1u64..1000, 1u64..u64::MAX, 1u64..u64::MAX, 0i64..i64::MAX, prop::option::of("[a-z_]{1,12}")),
        b in (1u64..u64::MAX, 1u64..1000, 1u64..u64::MAX, 1u64..u64::MAX, 0i64..i64::MAX, prop::option::of("[a-z_]{1,12}")),
        attempt in 0u32..10,
    ) {
        let render = |(p, s, e, o, t, name): &(u64, u64, u64, u64, i64, Option<String>), attempt: u32| {
            let name = name.as_ref().map(|n| format!(",\"propertyName\":\"{n}\"")).unwrap_or_default();
            format!("[{{\"portalId\":{p},\"subscriptionId\":{s},\"eventId\":{e},\"objectId\":{o},\"occurredAt\":{t},\"attemptNumber\":{attempt},\"changeSource\":\"CRM_UI\"{name}}}]")
        };
        let ka = WebhookBatch::parse(render(&a, 0).as_bytes()).unwrap().events()[0].key().clone();
        let ka2 = WebhookBatch::parse(render(&a, attempt).as_bytes()).unwrap().events()[0].key().clone();
        let kb = WebhookBatch::parse(render(&b, 0).as_bytes()).unwrap().events()[0].key().clone();
        prop_assert_eq!(&ka, &ka2);
        prop_assert_eq!(a == b, ka == kb);
    }
}
