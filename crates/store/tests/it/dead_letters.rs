use leadsync_domain::PortalId;
use leadsync_store::dead_letters::{self, DeadLetterFilter, DeadLetterKind};
use serde_json::json;

use crate::helpers::{new_integration, setup};

#[tokio::test]
async fn an_inbound_letter_belongs_to_the_integration_of_its_events_portal() {
    // Arrange
    let (db, acme) = setup().await;
    let pool = db.store.pool();
    let globex = new_integration(&db.store, "globex", 1002).await;
    let letter = crate::helpers::dead_letter;
    let inbound = DeadLetterKind::InboundEvent;
    let outbound = DeadLetterKind::OutboundChange;
    let mut ids = Vec::new();
    for new in [
        // Posted to acme's webhook URL by globex's portal (`portal_mismatch`).
        letter(
            Some(acme.id),
            Some(1002),
            "g-event-via-acme-url",
            inbound,
            json!({}),
        ),
        // And the other way round.
        letter(
            Some(globex.id),
            Some(1001),
            "a-event-via-globex-url",
            inbound,
            json!({}),
        ),
        // An event without a portal: its recorded integration's.
        letter(Some(acme.id), None, "a-no-portal", inbound, json!({})),
        // A lead change carries the integration of its lead.
        letter(
            Some(acme.id),
            Some(1001),
            "a-change",
            outbound,
            json!({ "integration_id": acme.id }),
        ),
        // An event of a portal no integration has: nobody's.
        letter(None, Some(1003), "unknown-portal", inbound, json!({})),
    ] {
        ids.push(dead_letters::record(pool, &new).await.unwrap().id);
    }
    let keys_of = |letters: Vec<dead_letters::DeadLetter>| -> Vec<String> {
        letters.into_iter().map(|l| l.event_key).collect()
    };

    // Act
    let acme_letters = dead_letters::list_owned(
        pool,
        acme.id,
        PortalId::new(1001),
        &DeadLetterFilter::default(),
    )
    .await
    .unwrap();
    let globex_letters = dead_letters::list_owned(
        pool,
        globex.id,
        PortalId::new(1002),
        &DeadLetterFilter::default(),
    )
    .await
    .unwrap();
    let acme_gets_foreign = dead_letters::get_owned(pool, acme.id, PortalId::new(1001), ids[0])
        .await
        .unwrap();
    let globex_gets_own = dead_letters::get_owned(pool, globex.id, PortalId::new(1002), ids[0])
        .await
        .unwrap();

    // Assert
    assert_eq!(
        keys_of(acme_letters),
        ["a-event-via-globex-url", "a-no-portal", "a-change"]
    );
    assert_eq!(keys_of(globex_letters), ["g-event-via-acme-url"]);
    assert_eq!(
        acme_gets_foreign, None,
        "the URL's integration does not own it"
    );
    assert_eq!(
        globex_gets_own.map(|l| l.event_key),
        Some("g-event-via-acme-url".to_owned())
    );
    db.cleanup().await.unwrap();
}
