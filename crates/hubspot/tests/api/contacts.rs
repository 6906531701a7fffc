//! Contact operations against the simulator.

use std::collections::BTreeMap;

use chrono::{Duration as ChronoDuration, Utc};
use leadsync_domain::ContactId;
use leadsync_hubspot::{ContactInput, ContactUpdate, HubSpotError};
use leadsync_hubspot_sim::{ImportRequest, UserEdit};

use crate::helpers::{PORTAL, client, portal, sim};

const BATCH_READ: &str = "POST /crm/v3/objects/contacts/batch/read";
const BATCH_UPSERT: &str = "POST /crm/v3/objects/contacts/batch/upsert";

fn props(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[tokio::test]
async fn batch_read_returns_contacts_history_and_missing_ids() {
    // Arrange
    let sim = sim().await;
    let client = client(&sim);
    let ann = sim
        .control()
        .create_contact(
            PORTAL,
            &UserEdit::new([("email", "ann@example.com"), ("firstname", "Ann")]),
        )
        .expect("contact created");
    let missing = ContactId::new(999_999_999_999);

    // Act
    let read = client
        .batch_read(
            portal(),
            &[ContactId::new(ann.id), missing, ContactId::new(ann.id)],
            &["email", "firstname", "phone"],
            &["firstname"],
        )
        .await
        .expect("batch read succeeds");

    // Assert
    assert_eq!(read.contacts.len(), 1);
    let contact = &read.contacts[0];
    assert_eq!(contact.id, ContactId::new(ann.id));
    assert_eq!(contact.property("email"), Some("ann@example.com"));
    assert_eq!(
        contact.properties.get("phone"),
        Some(&None),
        "asked for, unset → null"
    );
    let history = &contact.properties_with_history["firstname"];
    assert_eq!(history[0].value, "Ann");
    assert_eq!(history[0].source_type, "CRM_UI");
    assert_eq!(read.not_found, vec![missing]);
    assert!(read.errors.is_empty());
    assert_eq!(
        sim.control().stats().calls(BATCH_READ),
        1,
        "duplicate ids are sent once"
    );
}

#[tokio::test]
async fn batch_read_splits_more_than_100_ids_into_several_calls() {
    // Arrange
    let sim = sim().await;
    let client = client(&sim);
    let import = sim
        .control()
        .import_contacts(
            PORTAL,
            &ImportRequest {
                count: 150,
                ..ImportRequest::default()
            },
        )
        .expect("import runs");
    let ids: Vec<ContactId> = import.ids.iter().copied().map(ContactId::new).collect();

    // Act
    let read = client
        .batch_read(portal(), &ids, &["email"], &[])
        .await
        .expect("batch read succeeds");

    // Assert
    assert_eq!(read.contacts.len(), 150);
    assert!(read.not_found.is_empty());
    assert_eq!(sim.control().stats().calls(BATCH_READ), 2);
}

#[tokio::test]
async fn get_contact_reads_one_and_maps_404_to_not_found() {
    // Arrange
    let sim = sim().await;
    let client = client(&sim);
    let bob = sim
        .control()
        .create_contact(PORTAL, &UserEdit::new([("email", "bob@example.com")]))
        .expect("contact created");

    // Act
    let found = client
        .get_contact(portal(), ContactId::new(bob.id), &["email"], &["email"])
        .await;
    let missing = client
        .get_contact(portal(), ContactId::new(424_242_424_242), &[], &[])
        .await;

    // Assert
    let found = found.expect("contact found");
    assert_eq!(found.property("email"), Some("bob@example.com"));
    assert_eq!(found.properties_with_history["email"].len(), 1);
    assert!(
        matches!(missing, Err(HubSpotError::NotFound)),
        "{missing:?}"
    );
}

#[tokio::test]
async fn create_contact_reports_the_existing_id_on_409() {
    // Arrange
    let sim = sim().await;
    let client = client(&sim);
    let first = client
        .create_contact(
            portal(),
            &props(&[("email", "cara@example.com"), ("firstname", "Cara")]),
        )
        .await
        .expect("contact created");

    // Act
    let again = client
        .create_contact(portal(), &props(&[("email", "CARA@example.com")]))
        .await;

    // Assert
    assert_eq!(first.property("firstname"), Some("Cara"));
    match again {
        Err(HubSpotError::Conflict { existing_id }) => assert_eq!(existing_id, first.id),
        other => panic!("expected a conflict, got {other:?}"),
    }
}

#[tokio::test]
async fn invalid_property_values_are_validation_errors() {
    // Arrange
    let sim = sim().await;
    let client = client(&sim);

    // Act
    let unknown = client
        .create_contact(
            portal(),
            &props(&[("email", "d@example.com"), ("no_such_property", "x")]),
        )
        .await;
    let bad_email = client
        .batch_upsert_by_email(
            portal(),
            &[ContactInput {
                email: "not-an-email".to_owned(),
                properties: BTreeMap::new(),
            }],
        )
        .await;

    // Assert
    for result in [unknown.map(|_| ()), bad_email.map(|_| ())] {
        match result {
            Err(e @ HubSpotError::Validation { .. }) => {
                assert!(!e.is_retryable());
                let HubSpotError::Validation { category, .. } = e else {
                    unreachable!()
                };
                assert_eq!(category.as_deref(), Some("VALIDATION_ERROR"));
            }
            other => panic!("expected a validation error, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn batch_upsert_by_email_creates_then_updates_in_chunks_of_100() {
    // Arrange
    let sim = sim().await;
    let client = client(&sim);
    let existing = sim
        .control()
        .create_contact(PORTAL, &UserEdit::new([("email", "lead-0@example.com")]))
        .expect("contact created");
    let inputs: Vec<ContactInput> = (0..150)
        .map(|i| ContactInput {
            email: format!("lead-{i}@example.com"),
            properties: props(&[("firstname", &format!("Lead {i}"))]),
        })
        .collect();

    // Act
    let first = client
        .batch_upsert_by_email(portal(), &inputs)
        .await
        .expect("upsert succeeds");
    let second = client
        .batch_upsert_by_email(portal(), &inputs[..3])
        .await
        .expect("upsert succeeds");

    // Assert
    assert_eq!(first.len(), 150);
    assert_eq!(first.iter().filter(|r| r.new).count(), 149);
    let lead0 = first
        .iter()
        .find(|r| r.contact.property("email") == Some("lead-0@example.com"))
        .expect("lead 0 in results");
    assert_eq!(lead0.id, ContactId::new(existing.id));
    assert!(!lead0.new);
    assert!(second.iter().all(|r| !r.new));
    assert_eq!(sim.control().stats().calls(BATCH_UPSERT), 3);
}

#[tokio::test]
async fn batch_archive_archives_by_id_and_succeeds_again_for_archived_or_unknown_ids() {
    // Arrange
    let sim = sim().await;
    let client = client(&sim);
    let ids: Vec<ContactId> = ["ann@example.com", "bob@example.com"]
        .into_iter()
        .map(|email| {
            let contact = sim
                .control()
                .create_contact(PORTAL, &UserEdit::new([("email", email)]))
                .expect("contact created");
            ContactId::new(contact.id)
        })
        .collect();
    sim.control().reset_stats();

    // Act
    let first = client.batch_archive(portal(), &ids).await;
    let again = client
        .batch_archive(portal(), &[ids[0], ContactId::new(777_777_777_777)])
        .await;

    // Assert
    first.expect("archive succeeds");
    again.expect("archiving an archived or unknown contact succeeds");
    for id in &ids {
        let record = sim.control().contact(PORTAL, id.get()).expect("kept");
        assert!(record.archived, "{id} is in the recycle bin");
    }
    assert_eq!(
        sim.control()
            .stats()
            .calls("POST /crm/v3/objects/contacts/batch/archive"),
        2
    );
}

#[tokio::test]
async fn batch_update_writes_by_id_and_reports_unknown_ids() {
    // Arrange
    let sim = sim().await;
    let client = client(&sim);
    let eve = sim
        .control()
        .create_contact(PORTAL, &UserEdit::new([("email", "eve@example.com")]))
        .expect("contact created");
    let eve_id = ContactId::new(eve.id);

    // Act
    let updated = client
        .batch_update(
            portal(),
            &[ContactUpdate {
                id: eve_id,
                properties: props(&[("jobtitle", "CTO")]),
            }],
        )
        .await;
    let unknown = client
        .batch_update(
            portal(),
            &[ContactUpdate {
                id: ContactId::new(777_777_777_777),
                properties: props(&[("jobtitle", "CEO")]),
            }],
        )
        .await;

    // Assert
    let updated = updated.expect("update succeeds");
    assert_eq!(updated[0].id, eve_id);
    assert_eq!(updated[0].property("jobtitle"), Some("CTO"));
    assert_eq!(
        sim.control()
            .contact(PORTAL, eve.id)
            .expect("exists")
            .properties["jobtitle"],
        "CTO"
    );
    assert!(
        matches!(unknown, Err(HubSpotError::NotFound)),
        "{unknown:?}"
    );
}

#[tokio::test]
async fn search_modified_since_pages_in_modification_order() {
    // Arrange
    let sim = sim().await;
    let client = client(&sim);
    let since = Utc::now() - ChronoDuration::seconds(5);
    sim.control()
        .import_contacts(
            PORTAL,
            &ImportRequest {
                count: 250,
                ..ImportRequest::default()
            },
        )
        .expect("import runs");
    let until = Utc::now() + ChronoDuration::seconds(5);

    // Act
    let first = client
        .search_modified_since(portal(), since, until, None)
        .await
        .expect("search succeeds");
    let second = client
        .search_modified_since(portal(), since, until, first.next_after.as_deref())
        .await
        .expect("search succeeds");
    let none = client
        .search_modified_since(portal(), until, until + ChronoDuration::seconds(1), None)
        .await
        .expect("search succeeds");

    // Assert
    assert_eq!(first.total, 250);
    assert_eq!(first.contacts.len(), 200);
    assert_eq!(second.contacts.len(), 50);
    assert!(second.next_after.is_none());
    assert!(!first.capped);
    let modified: Vec<&str> = first
        .contacts
        .iter()
        .chain(&second.contacts)
        .filter_map(|c| c.property("lastmodifieddate"))
        .collect();
    assert_eq!(modified.len(), 250);
    assert!(modified.windows(2).all(|w| w[0] <= w[1]), "ascending order");
    assert_eq!(none.total, 0);
}

#[tokio::test]
async fn list_contacts_pages_through_everything() {
    // Arrange
    let sim = sim().await;
    let client = client(&sim);
    sim.control()
        .import_contacts(
            PORTAL,
            &ImportRequest {
                count: 5,
                ..ImportRequest::default()
            },
        )
        .expect("import runs");

    // Act
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = client
            .list_contacts(portal(), after.as_deref(), 2, &["email"])
            .await
            .expect("list succeeds");
        seen.extend(page.contacts.iter().map(|c| c.id));
        match page.next_after {
            Some(next) => after = Some(next),
            None => break,
        }
    }

    // Assert
    assert_eq!(seen.len(), 5);
    seen.dedup();
    assert_eq!(seen.len(), 5);
}
