//! The contact properties API (hubspot-api.md §5): enough to set up the
//! custom property `lead_source_system` once per portal.

use leadsync_domain::PortalId;
use reqwest::Method;
use serde::{Deserialize, Serialize};

use super::{Call, Client, Operation, decode};
use crate::error::HubSpotError;

const PROPERTIES: &[&str] = &["crm", "v3", "properties", "contacts"];

/// The custom contact property that records which system created a contact.
pub const SOURCE_SYSTEM_PROPERTY: &str = "lead_source_system";

/// The outcome of [`Client::ensure_source_property`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PropertyEnsured {
    /// The property did not exist; it was created with the source value as
    /// its option.
    Created,
    /// It existed and accepts the source value; nothing was changed.
    Existed,
    /// It existed as an enumeration without the source value; the value was
    /// added to its options (the others are kept).
    OptionAdded,
    /// A property of that name exists with a type that cannot hold the source
    /// value (neither an enumeration nor a string). Nothing was changed: an
    /// operator must rename or delete it in HubSpot.
    Incompatible {
        /// Its `type`, e.g. `number`.
        property_type: String,
    },
}

/// `PATCH /crm/v3/properties/contacts/{name}` with only the options.
#[derive(Serialize)]
struct OptionsUpdate<'a> {
    options: &'a [PropertyOption],
}

fn option(value: &str) -> PropertyOption {
    PropertyOption {
        label: value.to_owned(),
        value: value.to_owned(),
        hidden: false,
        display_order: None,
    }
}

/// A contact property definition (`PropertyCreate` / `Property`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Property {
    /// Internal name, e.g. `lead_source_system`.
    pub name: String,
    /// Label shown in HubSpot.
    pub label: String,
    /// `string`, `number`, `enumeration`, `datetime`, `date`, `bool`, `phone_number`.
    #[serde(rename = "type")]
    pub property_type: String,
    /// `text`, `select`, `booleancheckbox`, …; must suit `property_type`.
    pub field_type: String,
    /// Group, e.g. `contactinformation`.
    pub group_name: String,
    /// Description shown in HubSpot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Options of an enumeration.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<PropertyOption>,
    /// Whether values are unique per contact (then usable as `idProperty`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_unique_value: Option<bool>,
    /// Whether HubSpot defines it (answer only; never sent).
    #[serde(default, skip_serializing)]
    pub hubspot_defined: Option<bool>,
}

/// One option of an enumeration property.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PropertyOption {
    /// Label shown in HubSpot.
    pub label: String,
    /// Stored value.
    pub value: String,
    /// Hidden in forms.
    #[serde(default)]
    pub hidden: bool,
    /// Position in the list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_order: Option<i32>,
}

/// The outcome of [`Client::create_property`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PropertyCreated {
    /// HubSpot created it; this is its definition.
    Created(Property),
    /// A property of that name exists (409). Compare definitions with
    /// [`Client::get_property`] if it matters.
    AlreadyExists,
}

impl Client {
    /// Creates a contact property; an existing one is not an error.
    pub async fn create_property(
        &self,
        portal: PortalId,
        property: &Property,
    ) -> Result<PropertyCreated, HubSpotError> {
        let call = Call::post_json(Operation::CreateProperty, PROPERTIES, property)?;
        match self.execute(Some(portal), &call).await {
            Ok(bytes) => decode(Operation::CreateProperty, &bytes).map(PropertyCreated::Created),
            Err(HubSpotError::Permanent { status: 409, .. }) => Ok(PropertyCreated::AlreadyExists),
            Err(e) => Err(e),
        }
    }

    /// Makes sure the contact property [`SOURCE_SYSTEM_PROPERTY`] exists and
    /// accepts `value` (the value the worker writes on contacts it creates):
    /// creates it as an enumeration with that option, or adds the option to an
    /// existing enumeration that lacks it. Calling it again changes nothing.
    ///
    /// HubSpot does not document the answer to creating a property that exists
    /// (hubspot-api.md §5 guesses 409 `OBJECT_ALREADY_EXISTS`), so any 409 is
    /// read as "exists" and the definition is then read and compared.
    pub async fn ensure_source_property(
        &self,
        portal: PortalId,
        value: &str,
    ) -> Result<PropertyEnsured, HubSpotError> {
        // One read first: on an account already set up that is the only call.
        let existing = match self.get_property(portal, SOURCE_SYSTEM_PROPERTY).await {
            Ok(existing) => existing,
            Err(HubSpotError::NotFound) => {
                let created = self
                    .create_property(
                        portal,
                        &Property {
                            name: SOURCE_SYSTEM_PROPERTY.to_owned(),
                            label: "Lead source system".to_owned(),
                            property_type: "enumeration".to_owned(),
                            field_type: "select".to_owned(),
                            group_name: "contactinformation".to_owned(),
                            description: Some(
                                "The system that created the contact (set by leadsync).".to_owned(),
                            ),
                            options: vec![option(value)],
                            has_unique_value: None,
                            hubspot_defined: None,
                        },
                    )
                    .await?;
                match created {
                    PropertyCreated::Created(_) => return Ok(PropertyEnsured::Created),
                    // Created by someone else since the read.
                    PropertyCreated::AlreadyExists => {
                        self.get_property(portal, SOURCE_SYSTEM_PROPERTY).await?
                    }
                }
            }
            Err(e) => return Err(e),
        };
        match existing.property_type.as_str() {
            "string" => Ok(PropertyEnsured::Existed),
            "enumeration" if existing.options.iter().any(|o| o.value == value) => {
                Ok(PropertyEnsured::Existed)
            }
            "enumeration" => {
                // PATCH replaces the option list: send the old ones too.
                let mut options = existing.options;
                options.push(option(value));
                self.update_property_options(portal, SOURCE_SYSTEM_PROPERTY, &options)
                    .await?;
                Ok(PropertyEnsured::OptionAdded)
            }
            other => Ok(PropertyEnsured::Incompatible {
                property_type: other.to_owned(),
            }),
        }
    }

    /// Replaces the options of an enumeration property.
    pub async fn update_property_options(
        &self,
        portal: PortalId,
        name: &str,
        options: &[PropertyOption],
    ) -> Result<Property, HubSpotError> {
        let path: Vec<&str> = PROPERTIES.iter().copied().chain([name]).collect();
        let call = Call::json(
            Operation::UpdateProperty,
            Method::PATCH,
            &path,
            &OptionsUpdate { options },
        )?;
        let bytes = self.execute(Some(portal), &call).await?;
        decode(Operation::UpdateProperty, &bytes)
    }

    /// Reads a contact property; an unknown name is [`HubSpotError::NotFound`].
    pub async fn get_property(
        &self,
        portal: PortalId,
        name: &str,
    ) -> Result<Property, HubSpotError> {
        let path: Vec<&str> = PROPERTIES.iter().copied().chain([name]).collect();
        let call = Call::get(Operation::GetProperty, &path);
        let bytes = self.execute(Some(portal), &call).await?;
        decode(Operation::GetProperty, &bytes)
    }
}
