//! The properties API against the simulator.

use leadsync_hubspot::{HubSpotError, Property, PropertyCreated, PropertyOption};

use crate::helpers::{client, portal, sim};

fn lead_source_system() -> Property {
    Property {
        name: "lead_source_system".to_owned(),
        label: "Lead source system".to_owned(),
        property_type: "enumeration".to_owned(),
        field_type: "select".to_owned(),
        group_name: "contactinformation".to_owned(),
        description: Some("Which system created the contact.".to_owned()),
        options: vec![PropertyOption {
            label: "Lead platform".to_owned(),
            value: "lead_platform".to_owned(),
            hidden: false,
            display_order: Some(1),
        }],
        has_unique_value: None,
        hubspot_defined: None,
    }
}

#[tokio::test]
async fn create_property_is_idempotent_and_readable() {
    // Arrange
    let sim = sim().await;
    let client = client(&sim);

    // Act
    let first = client
        .create_property(portal(), &lead_source_system())
        .await
        .expect("create succeeds");
    let second = client
        .create_property(portal(), &lead_source_system())
        .await
        .expect("an existing property is not an error");
    let read = client
        .get_property(portal(), "lead_source_system")
        .await
        .expect("property readable");
    let missing = client.get_property(portal(), "no_such_property").await;

    // Assert
    assert!(matches!(first, PropertyCreated::Created(ref p) if p.name == "lead_source_system"));
    assert_eq!(second, PropertyCreated::AlreadyExists);
    assert_eq!(read.property_type, "enumeration");
    assert_eq!(read.options[0].value, "lead_platform");
    assert!(
        matches!(missing, Err(HubSpotError::NotFound)),
        "{missing:?}"
    );
}

#[tokio::test]
async fn an_invalid_property_definition_is_a_validation_error() {
    // Arrange
    let sim = sim().await;
    let client = client(&sim);
    let mut property = lead_source_system();
    property.name = "bad_pair".to_owned();
    property.field_type = "booleancheckbox".to_owned();
    property.property_type = "number".to_owned();

    // Act
    let result = client.create_property(portal(), &property).await;

    // Assert
    assert!(
        matches!(result, Err(HubSpotError::Validation { .. })),
        "{result:?}"
    );
}
