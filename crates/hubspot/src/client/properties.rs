//! The contact properties API (hubspot-api.md §5): enough to set up the
//! custom property `lead_source_system` once per portal.

use leadsync_domain::PortalId;
use serde::{Deserialize, Serialize};

use super::{Call, Client, Operation};
use crate::error::HubSpotError;

const PROPERTIES: &[&str] = &["crm", "v3", "properties", "contacts"];

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
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(PropertyCreated::Created)
                .map_err(|source| HubSpotError::Decode {
                    what: Operation::CreateProperty.as_str(),
                    source,
                }),
            Err(HubSpotError::Permanent { status: 409, .. }) => Ok(PropertyCreated::AlreadyExists),
            Err(e) => Err(e),
        }
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
        serde_json::from_slice(&bytes).map_err(|source| HubSpotError::Decode {
            what: Operation::GetProperty.as_str(),
            source,
        })
    }
}
