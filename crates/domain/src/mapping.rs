//! Which HubSpot property each lead field maps to, and how values convert.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::lead::{LeadField, LeadValues};

/// Letter case applied to a value as it crosses over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueCase {
    /// Unchanged both ways.
    #[default]
    AsIs,
    /// Lower case on the platform, upper case in HubSpot (enumerations such as
    /// `hs_lead_status`: `NEW` ↔ `new`).
    LowerOnPlatform,
}

/// One lead field ↔ one HubSpot property.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MappingEntry {
    /// The lead field.
    pub field: LeadField,
    /// The contact property.
    pub property: String,
    /// Case conversion.
    #[serde(default)]
    pub case: ValueCase,
}

/// The field mapping of an integration. The default is the seed plan's
/// `mapHubSpotContactToLead`, made reversible (location ↔ city).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldMapping {
    entries: Vec<MappingEntry>,
}

impl Default for FieldMapping {
    fn default() -> Self {
        let entry = |field, property: &str, case| MappingEntry {
            field,
            property: property.to_owned(),
            case,
        };
        Self {
            entries: vec![
                entry(LeadField::FirstName, "firstname", ValueCase::AsIs),
                entry(LeadField::LastName, "lastname", ValueCase::AsIs),
                entry(LeadField::Email, "email", ValueCase::AsIs),
                entry(LeadField::Phone, "phone", ValueCase::AsIs),
                entry(LeadField::Company, "company", ValueCase::AsIs),
                entry(LeadField::JobTitle, "jobtitle", ValueCase::AsIs),
                entry(LeadField::Location, "city", ValueCase::AsIs),
                entry(LeadField::Country, "country", ValueCase::AsIs),
                entry(
                    LeadField::Status,
                    "hs_lead_status",
                    ValueCase::LowerOnPlatform,
                ),
            ],
        }
    }
}

/// Why a mapping was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    /// Two entries for one field, or one property for two fields: a value
    /// would have two sources and the sync could loop between them.
    #[error("`{0}` is mapped twice")]
    Duplicate(String),
    /// A property name HubSpot would refuse.
    #[error("`{0}` is not a valid HubSpot property name")]
    InvalidProperty(String),
}

impl FieldMapping {
    /// The default mapping with the HubSpot property of some fields renamed
    /// (an integration's `field_mapping` setting); the fields and their case
    /// rules stay the default ones.
    ///
    /// # Errors
    /// [`MappingError`] when a renamed property is invalid or two fields end
    /// up on one property.
    pub fn with_properties(overrides: &BTreeMap<LeadField, String>) -> Result<Self, MappingError> {
        if overrides.is_empty() {
            return Ok(Self::default());
        }
        let entries = Self::default()
            .entries()
            .iter()
            .map(|e| MappingEntry {
                field: e.field,
                property: overrides
                    .get(&e.field)
                    .cloned()
                    .unwrap_or_else(|| e.property.clone()),
                case: e.case,
            })
            .collect();
        Self::new(entries)
    }

    /// Builds a mapping; each field and each property at most once.
    pub fn new(entries: Vec<MappingEntry>) -> Result<Self, MappingError> {
        let mut fields = std::collections::BTreeSet::new();
        let mut properties = std::collections::BTreeSet::new();
        for e in &entries {
            let valid = !e.property.is_empty()
                && e.property
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !valid {
                return Err(MappingError::InvalidProperty(e.property.clone()));
            }
            if !fields.insert(e.field) {
                return Err(MappingError::Duplicate(e.field.name().to_owned()));
            }
            if !properties.insert(e.property.as_str()) {
                return Err(MappingError::Duplicate(e.property.clone()));
            }
        }
        Ok(Self { entries })
    }

    /// The entries.
    pub fn entries(&self) -> &[MappingEntry] {
        &self.entries
    }

    /// The HubSpot properties to read.
    pub fn properties(&self) -> Vec<&str> {
        self.entries.iter().map(|e| e.property.as_str()).collect()
    }

    /// The property a field maps to.
    pub fn property_of(&self, field: LeadField) -> Option<&str> {
        self.entries
            .iter()
            .find(|e| e.field == field)
            .map(|e| e.property.as_str())
    }

    /// The field a property maps to.
    pub fn field_of(&self, property: &str) -> Option<LeadField> {
        self.entries
            .iter()
            .find(|e| e.property == property)
            .map(|e| e.field)
    }

    /// Lead values from contact properties (`None` = HubSpot's `null`).
    /// Only mapped properties that are present are taken.
    pub fn to_lead(&self, properties: &BTreeMap<String, Option<String>>) -> LeadValues {
        self.entries
            .iter()
            .filter_map(|e| {
                let value = properties.get(&e.property)?.as_deref().unwrap_or("");
                Some((e.field, Self::inbound(e.case, value)))
            })
            .collect()
    }

    /// The inbound form of one property value for `field`.
    pub fn inbound_value(&self, field: LeadField, value: &str) -> String {
        let case = self
            .entries
            .iter()
            .find(|e| e.field == field)
            .map_or(ValueCase::AsIs, |e| e.case);
        Self::inbound(case, value)
    }

    /// Contact properties for `fields` of `values` (unset fields as `""`,
    /// which clears the property in HubSpot).
    pub fn to_hubspot(
        &self,
        values: &LeadValues,
        fields: &[LeadField],
    ) -> BTreeMap<String, String> {
        self.entries
            .iter()
            .filter(|e| fields.contains(&e.field))
            .map(|e| {
                let v = values.get(e.field).trim();
                let v = match e.case {
                    ValueCase::AsIs => v.to_owned(),
                    ValueCase::LowerOnPlatform => v.to_uppercase(),
                };
                (e.property.clone(), v)
            })
            .collect()
    }

    fn inbound(case: ValueCase, value: &str) -> String {
        let v = value.trim();
        match case {
            ValueCase::AsIs => v.to_owned(),
            ValueCase::LowerOnPlatform => v.to_lowercase(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renamed_properties_keep_the_other_defaults_and_may_not_collide() {
        let renamed = FieldMapping::with_properties(&BTreeMap::from([(
            LeadField::Phone,
            "mobilephone".to_owned(),
        )]))
        .unwrap();
        assert_eq!(renamed.property_of(LeadField::Phone), Some("mobilephone"));
        assert_eq!(renamed.field_of("mobilephone"), Some(LeadField::Phone));
        assert_eq!(renamed.field_of("phone"), None);
        assert_eq!(
            renamed.property_of(LeadField::Email),
            FieldMapping::default().property_of(LeadField::Email)
        );
        let collision = FieldMapping::with_properties(&BTreeMap::from([(
            LeadField::Phone,
            "email".to_owned(),
        )]));
        assert!(
            collision.is_err(),
            "two fields on one property: {collision:?}"
        );
    }

    #[test]
    fn the_default_mapping_follows_the_seed_plan() {
        let m = FieldMapping::default();
        let props: BTreeMap<String, Option<String>> = [
            ("firstname", Some("Ada")),
            ("lastname", Some("Lovelace")),
            ("city", Some("London")),
            ("hs_lead_status", Some("IN_PROGRESS")),
            ("phone", None),
            ("unmapped", Some("x")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.map(str::to_owned)))
        .collect();
        let lead = m.to_lead(&props);
        assert_eq!(lead.get(LeadField::FirstName), "Ada");
        assert_eq!(lead.get(LeadField::Location), "London");
        assert_eq!(lead.get(LeadField::Status), "in_progress");
        assert_eq!(lead.get(LeadField::Phone), "");
        let back = m.to_hubspot(
            &lead,
            &[LeadField::Status, LeadField::Location, LeadField::Phone],
        );
        assert_eq!(back["hs_lead_status"], "IN_PROGRESS");
        assert_eq!(back["city"], "London");
        assert_eq!(back["phone"], "", "an unset field clears the property");
        assert_eq!(back.len(), 3);
    }

    #[test]
    fn a_mapping_maps_each_field_and_property_once() {
        let e = |field, property: &str| MappingEntry {
            field,
            property: property.into(),
            case: ValueCase::AsIs,
        };
        assert!(
            FieldMapping::new(vec![
                e(LeadField::Email, "email"),
                e(LeadField::Phone, "mobilephone")
            ])
            .is_ok()
        );
        assert_eq!(
            FieldMapping::new(vec![
                e(LeadField::Email, "email"),
                e(LeadField::Phone, "email")
            ]),
            Err(MappingError::Duplicate("email".into()))
        );
        assert!(FieldMapping::new(vec![e(LeadField::Email, "Email Address")]).is_err());
    }
}
