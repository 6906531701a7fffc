//! `ensure_source_property`: creates `lead_source_system` once, adds a missing
//! option, and refuses to touch a property of another type.

use leadsync_hubspot::{
    Property, PropertyCreated, PropertyEnsured, PropertyOption, SOURCE_SYSTEM_PROPERTY,
};

use crate::helpers::{client, portal, sim};

const CREATE: &str = "POST /crm/v3/properties/contacts";
const UPDATE: &str = "PATCH /crm/v3/properties/contacts/{propertyName}";

fn existing(property_type: &str, field_type: &str, options: &[&str]) -> Property {
    Property {
        name: SOURCE_SYSTEM_PROPERTY.to_owned(),
        label: "Lead source system".to_owned(),
        property_type: property_type.to_owned(),
        field_type: field_type.to_owned(),
        group_name: "contactinformation".to_owned(),
        description: None,
        options: options
            .iter()
            .map(|v| PropertyOption {
                label: (*v).to_owned(),
                value: (*v).to_owned(),
                hidden: false,
                display_order: None,
            })
            .collect(),
        has_unique_value: None,
        hubspot_defined: None,
    }
}

#[tokio::test]
async fn the_property_is_created_once_and_found_afterwards() {
    // Arrange
    let sim = sim().await;
    let client = client(&sim);

    // Act
    let first = client.ensure_source_property(portal(), "jazzaam").await;
    let second = client.ensure_source_property(portal(), "jazzaam").await;

    // Assert
    assert_eq!(first.expect("ensured"), PropertyEnsured::Created);
    assert_eq!(second.expect("ensured"), PropertyEnsured::Existed);
    let property = client
        .get_property(portal(), SOURCE_SYSTEM_PROPERTY)
        .await
        .expect("exists");
    assert_eq!(property.property_type, "enumeration");
    assert_eq!(
        property
            .options
            .iter()
            .map(|o| o.value.as_str())
            .collect::<Vec<_>>(),
        ["jazzaam"]
    );
    let stats = sim.control().stats();
    assert_eq!(stats.calls(CREATE), 1);
    assert_eq!(stats.calls(UPDATE), 0);
    sim.stop().await;
}

#[tokio::test]
async fn a_missing_option_is_added_and_the_others_are_kept() {
    // Arrange
    let sim = sim().await;
    let client = client(&sim);
    let created = client
        .create_property(
            portal(),
            &existing("enumeration", "select", &["hubspot", "manual"]),
        )
        .await
        .expect("created");
    assert!(matches!(created, PropertyCreated::Created(_)));

    // Act
    let first = client.ensure_source_property(portal(), "jazzaam").await;
    let second = client.ensure_source_property(portal(), "jazzaam").await;

    // Assert
    assert_eq!(first.expect("ensured"), PropertyEnsured::OptionAdded);
    assert_eq!(second.expect("ensured"), PropertyEnsured::Existed);
    let property = client
        .get_property(portal(), SOURCE_SYSTEM_PROPERTY)
        .await
        .expect("exists");
    assert_eq!(
        property
            .options
            .iter()
            .map(|o| o.value.as_str())
            .collect::<Vec<_>>(),
        ["hubspot", "manual", "jazzaam"]
    );
    assert_eq!(sim.control().stats().calls(UPDATE), 1);
    sim.stop().await;
}

#[tokio::test]
async fn a_property_of_another_type_is_reported_and_left_alone() {
    // Arrange
    let sim = sim().await;
    let client = client(&sim);
    client
        .create_property(portal(), &existing("number", "number", &[]))
        .await
        .expect("created");

    // Act
    let ensured = client.ensure_source_property(portal(), "jazzaam").await;

    // Assert
    assert_eq!(
        ensured.expect("answered"),
        PropertyEnsured::Incompatible {
            property_type: "number".to_owned()
        }
    );
    assert_eq!(sim.control().stats().calls(UPDATE), 0);
    sim.stop().await;
}
