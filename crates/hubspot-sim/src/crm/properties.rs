//! Contact property definitions (Properties API v3) and value validation.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::parse_time_ms;
use crate::error::PropertyError;

/// When HubSpot's own properties were "created"; fixed so dumps are stable.
const HUBSPOT_EPOCH: &str = "2019-08-06T02:41:52.153Z";

/// A property definition, serialised as the API's `Property`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PropertyDef {
    pub(crate) updated_at: String,
    pub(crate) created_at: String,
    pub(crate) name: String,
    pub(crate) label: String,
    #[serde(rename = "type")]
    pub(crate) kind: String,
    pub(crate) field_type: String,
    pub(crate) description: String,
    pub(crate) group_name: String,
    pub(crate) options: Vec<PropertyOption>,
    pub(crate) display_order: i64,
    pub(crate) calculated: bool,
    pub(crate) external_options: bool,
    pub(crate) has_unique_value: bool,
    pub(crate) hidden: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) hubspot_defined: Option<bool>,
    pub(crate) modification_metadata: ModificationMetadata,
    pub(crate) form_field: bool,
    pub(crate) archived: bool,
}

/// An enumeration option.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PropertyOption {
    pub(crate) label: String,
    pub(crate) value: String,
    #[serde(default)]
    pub(crate) description: String,
    #[serde(default)]
    pub(crate) display_order: i64,
    #[serde(default)]
    pub(crate) hidden: bool,
}

/// What may be changed about a property and its values.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ModificationMetadata {
    pub(crate) archivable: bool,
    pub(crate) read_only_definition: bool,
    pub(crate) read_only_value: bool,
}

/// The body of `POST /crm/v3/properties/contacts` (SPEC `PropertyCreate`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PropertyCreate {
    name: Option<String>,
    label: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    field_type: Option<String>,
    group_name: Option<String>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    options: Vec<OptionInput>,
    #[serde(default = "minus_one")]
    display_order: i64,
    #[serde(default)]
    has_unique_value: bool,
    #[serde(default)]
    hidden: bool,
    #[serde(default)]
    form_field: bool,
}

/// The body of `PATCH /crm/v3/properties/contacts/{name}` (SPEC `PropertyUpdate`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PropertyUpdate {
    label: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    field_type: Option<String>,
    group_name: Option<String>,
    description: Option<String>,
    options: Option<Vec<OptionInput>>,
    display_order: Option<i64>,
    hidden: Option<bool>,
    form_field: Option<bool>,
}

/// SPEC `OptionInput`: `label`, `value` and `hidden` are required.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct OptionInput {
    label: String,
    value: String,
    hidden: Option<bool>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    display_order: i64,
}

fn minus_one() -> i64 {
    -1
}

const TYPES: &[&str] = &[
    "bool",
    "date",
    "datetime",
    "enumeration",
    "number",
    "phone_number",
    "string",
];
const FIELD_TYPES: &[&str] = &[
    "booleancheckbox",
    "calculation_equation",
    "checkbox",
    "date",
    "file",
    "html",
    "number",
    "phonenumber",
    "radio",
    "select",
    "text",
    "textarea",
];

/// The property definitions of one portal, by name.
#[derive(Debug, Clone)]
pub(crate) struct PropertyRegistry {
    defs: BTreeMap<String, PropertyDef>,
}

impl PropertyRegistry {
    /// HubSpot's standard contact properties.
    pub(crate) fn standard() -> Self {
        let mut defs = BTreeMap::new();
        for (name, label, kind, field, read_only) in STANDARD {
            let options = match *name {
                "lifecyclestage" => options(LIFECYCLE_STAGES),
                "hs_lead_status" => options(LEAD_STATUSES),
                _ => Vec::new(),
            };
            defs.insert(
                (*name).to_owned(),
                PropertyDef {
                    updated_at: HUBSPOT_EPOCH.to_owned(),
                    created_at: HUBSPOT_EPOCH.to_owned(),
                    name: (*name).to_owned(),
                    label: (*label).to_owned(),
                    kind: (*kind).to_owned(),
                    field_type: (*field).to_owned(),
                    description: String::new(),
                    group_name: "contactinformation".to_owned(),
                    options,
                    display_order: -1,
                    calculated: false,
                    external_options: false,
                    has_unique_value: *name == "email" || *name == "hs_object_id",
                    hidden: false,
                    hubspot_defined: Some(true),
                    modification_metadata: ModificationMetadata {
                        archivable: false,
                        read_only_definition: true,
                        read_only_value: *read_only,
                    },
                    form_field: !read_only,
                    archived: false,
                },
            );
        }
        Self { defs }
    }

    pub(crate) fn get(&self, name: &str) -> Option<&PropertyDef> {
        self.defs.get(name).filter(|d| !d.archived)
    }

    pub(crate) fn get_any(&self, name: &str) -> Option<&PropertyDef> {
        self.defs.get(name)
    }

    pub(crate) fn list(&self, archived: bool) -> impl Iterator<Item = &PropertyDef> {
        self.defs.values().filter(move |d| d.archived == archived)
    }

    /// Whether `name` can identify a contact (`idProperty`).
    pub(crate) fn is_unique(&self, name: &str) -> bool {
        self.get(name).is_some_and(|d| d.has_unique_value)
    }

    /// Creates a custom property; `Err` carries (status is 409?, message).
    pub(crate) fn create(
        &mut self,
        input: PropertyCreate,
        now: &str,
    ) -> Result<&PropertyDef, CreateError> {
        let missing: Vec<&str> = [
            ("name", input.name.is_none()),
            ("label", input.label.is_none()),
            ("type", input.kind.is_none()),
            ("fieldType", input.field_type.is_none()),
            ("groupName", input.group_name.is_none()),
        ]
        .into_iter()
        .filter_map(|(f, m)| m.then_some(f))
        .collect();
        if !missing.is_empty() {
            return Err(CreateError::Invalid(format!(
                "Missing required field(s): {}",
                missing.join(", ")
            )));
        }
        let name = input.name.unwrap_or_default();
        let kind = input.kind.unwrap_or_default();
        let field_type = input.field_type.unwrap_or_default();
        validate_name(&name).map_err(CreateError::Invalid)?;
        validate_types(&kind, &field_type).map_err(CreateError::Invalid)?;
        if let Some(existing) = self.defs.get(&name) {
            return Err(if existing.archived {
                CreateError::Exists(format!(
                    "Property named '{name}' already exists in an archived state."
                ))
            } else {
                CreateError::Exists(format!("Property named '{name}' already exists."))
            });
        }
        let options = input
            .options
            .into_iter()
            .map(OptionInput::into_option)
            .collect();
        let def = PropertyDef {
            updated_at: now.to_owned(),
            created_at: now.to_owned(),
            name: name.clone(),
            label: input.label.unwrap_or_default(),
            kind,
            field_type,
            description: input.description,
            group_name: input.group_name.unwrap_or_default(),
            options,
            display_order: input.display_order,
            calculated: false,
            external_options: false,
            has_unique_value: input.has_unique_value,
            hidden: input.hidden,
            hubspot_defined: None,
            modification_metadata: ModificationMetadata {
                archivable: true,
                read_only_definition: false,
                read_only_value: false,
            },
            form_field: input.form_field,
            archived: false,
        };
        Ok(self.defs.entry(name).or_insert(def))
    }

    /// Applies a `PropertyUpdate`; `None` when the property does not exist.
    pub(crate) fn update(
        &mut self,
        name: &str,
        input: PropertyUpdate,
        now: &str,
    ) -> Result<Option<&PropertyDef>, String> {
        let Some(def) = self.defs.get_mut(name).filter(|d| !d.archived) else {
            return Ok(None);
        };
        if def.modification_metadata.read_only_definition {
            return Err(format!(
                "The property {name} is read-only and cannot be modified."
            ));
        }
        let kind = input.kind.unwrap_or_else(|| def.kind.clone());
        let field_type = input.field_type.unwrap_or_else(|| def.field_type.clone());
        validate_types(&kind, &field_type)?;
        def.kind = kind;
        def.field_type = field_type;
        if let Some(v) = input.label {
            def.label = v;
        }
        if let Some(v) = input.group_name {
            def.group_name = v;
        }
        if let Some(v) = input.description {
            def.description = v;
        }
        if let Some(v) = input.options {
            def.options = v.into_iter().map(OptionInput::into_option).collect();
        }
        if let Some(v) = input.display_order {
            def.display_order = v;
        }
        if let Some(v) = input.hidden {
            def.hidden = v;
        }
        if let Some(v) = input.form_field {
            def.form_field = v;
        }
        def.updated_at = now.to_owned();
        Ok(Some(def))
    }

    /// Archives a custom property. `Err` for HubSpot's own, `Ok(false)` if absent.
    pub(crate) fn archive(&mut self, name: &str) -> Result<bool, String> {
        match self.defs.get_mut(name).filter(|d| !d.archived) {
            None => Ok(false),
            Some(def) if !def.modification_metadata.archivable => Err(format!(
                "The property {name} is a HubSpot default property and cannot be archived."
            )),
            Some(def) => {
                def.archived = true;
                Ok(true)
            }
        }
    }

    /// Checks one written value and returns it in stored form.
    pub(crate) fn normalize(&self, name: &str, value: &str) -> Result<String, PropertyError> {
        let def = self.get(name).ok_or_else(|| PropertyError::missing(name))?;
        if def.modification_metadata.read_only_value {
            return Err(PropertyError::read_only(name));
        }
        // An empty string clears a value of any type (contacts docs).
        if value.is_empty() {
            return Ok(String::new());
        }
        if name == "email" {
            let email = value.trim().to_lowercase();
            return if is_valid_email(&email) {
                Ok(email)
            } else {
                Err(PropertyError::invalid_email(value))
            };
        }
        match def.kind.as_str() {
            "enumeration" => {
                // Checkbox enumerations take several values joined with ';'.
                let all_known = value
                    .split(';')
                    .all(|v| def.options.iter().any(|o| o.value == v));
                if all_known {
                    Ok(value.to_owned())
                } else {
                    let allowed: Vec<String> =
                        def.options.iter().map(|o| o.value.clone()).collect();
                    Err(PropertyError::invalid_option(name, value, &allowed))
                }
            }
            "number" => value
                .trim()
                .parse::<f64>()
                .map(|_| value.trim().to_owned())
                .map_err(|_| {
                    PropertyError::invalid_value(
                        name,
                        "INVALID_FLOAT",
                        format!("{value} was not a valid number."),
                    )
                }),
            "bool" => crate::query::parse_bool(value)
                .map(|b| b.to_string())
                .ok_or_else(|| {
                    PropertyError::invalid_value(
                        name,
                        "INVALID_BOOLEAN",
                        format!("{value} was not a valid boolean."),
                    )
                }),
            "datetime" => parse_time_ms(value).map(super::iso).ok_or_else(|| {
                PropertyError::invalid_value(
                    name,
                    "INVALID_DATETIME",
                    format!("{value} was not a valid datetime."),
                )
            }),
            "date" => parse_time_ms(value)
                .filter(|ms| ms % 86_400_000 == 0)
                .map(|ms| super::iso(ms)[..10].to_owned())
                .ok_or_else(|| {
                    PropertyError::invalid_value(
                        name,
                        "INVALID_DATE",
                        format!("{value} was not a valid date at midnight UTC."),
                    )
                }),
            _ => Ok(value.to_owned()),
        }
    }

    /// The type of a property (`string` when unknown).
    pub(crate) fn kind(&self, name: &str) -> &str {
        self.get_any(name).map_or("string", |d| d.kind.as_str())
    }
}

/// Why a property could not be created.
#[derive(Debug)]
pub(crate) enum CreateError {
    Invalid(String),
    Exists(String),
}

impl OptionInput {
    fn into_option(self) -> PropertyOption {
        PropertyOption {
            label: self.label,
            value: self.value,
            description: self.description,
            display_order: self.display_order,
            hidden: self.hidden.unwrap_or(false),
        }
    }
}

fn validate_name(name: &str) -> Result<(), String> {
    let ok = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 100;
    if ok {
        Ok(())
    } else {
        Err(format!(
            "Property name '{name}' is invalid: use lower-case letters, digits and underscores, starting with a letter."
        ))
    }
}

fn validate_types(kind: &str, field_type: &str) -> Result<(), String> {
    if !TYPES.contains(&kind) {
        return Err(format!(
            "Unknown property type '{kind}'. Allowed: {}",
            TYPES.join(", ")
        ));
    }
    if !FIELD_TYPES.contains(&field_type) {
        return Err(format!(
            "Unknown fieldType '{field_type}'. Allowed: {}",
            FIELD_TYPES.join(", ")
        ));
    }
    // The valid pairs the properties docs list.
    let ok = match kind {
        "bool" => matches!(field_type, "booleancheckbox" | "calculation_equation"),
        "enumeration" => matches!(
            field_type,
            "booleancheckbox" | "checkbox" | "radio" | "select" | "calculation_equation"
        ),
        "date" => matches!(field_type, "date"),
        "datetime" => matches!(field_type, "date"),
        "number" => matches!(field_type, "number" | "calculation_equation"),
        "phone_number" => matches!(field_type, "phonenumber"),
        _ => matches!(
            field_type,
            "text" | "textarea" | "html" | "file" | "calculation_equation"
        ),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "fieldType '{field_type}' is not valid for type '{kind}'."
        ))
    }
}

/// A deliberately simple check: something@something.tld, no spaces.
fn is_valid_email(email: &str) -> bool {
    let Some((local, domain)) = email.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !email.contains(char::is_whitespace)
}

fn options(values: &[(&str, &str)]) -> Vec<PropertyOption> {
    values
        .iter()
        .zip(0..)
        .map(|((value, label), order)| PropertyOption {
            label: (*label).to_owned(),
            value: (*value).to_owned(),
            description: String::new(),
            display_order: order,
            hidden: false,
        })
        .collect()
}

const LIFECYCLE_STAGES: &[(&str, &str)] = &[
    ("subscriber", "Subscriber"),
    ("lead", "Lead"),
    ("marketingqualifiedlead", "Marketing Qualified Lead"),
    ("salesqualifiedlead", "Sales Qualified Lead"),
    ("opportunity", "Opportunity"),
    ("customer", "Customer"),
    ("evangelist", "Evangelist"),
    ("other", "Other"),
];

const LEAD_STATUSES: &[(&str, &str)] = &[
    ("NEW", "New"),
    ("OPEN", "Open"),
    ("IN_PROGRESS", "In Progress"),
    ("OPEN_DEAL", "Open Deal"),
    ("UNQUALIFIED", "Unqualified"),
    ("ATTEMPTED_TO_CONNECT", "Attempted to Connect"),
    ("CONNECTED", "Connected"),
    ("BAD_TIMING", "Bad Timing"),
];

/// (name, label, type, fieldType, read-only value)
const STANDARD: &[(&str, &str, &str, &str, bool)] = &[
    ("email", "Email", "string", "text", false),
    ("firstname", "First Name", "string", "text", false),
    ("lastname", "Last Name", "string", "text", false),
    ("phone", "Phone Number", "string", "phonenumber", false),
    (
        "mobilephone",
        "Mobile Phone Number",
        "string",
        "phonenumber",
        false,
    ),
    ("company", "Company Name", "string", "text", false),
    ("jobtitle", "Job Title", "string", "text", false),
    ("address", "Street Address", "string", "text", false),
    ("city", "City", "string", "text", false),
    ("state", "State/Region", "string", "text", false),
    ("zip", "Postal Code", "string", "text", false),
    ("country", "Country/Region", "string", "text", false),
    ("website", "Website URL", "string", "text", false),
    ("industry", "Industry", "string", "text", false),
    ("message", "Message", "string", "textarea", false),
    (
        "lifecyclestage",
        "Lifecycle Stage",
        "enumeration",
        "radio",
        false,
    ),
    (
        "hs_lead_status",
        "Lead Status",
        "enumeration",
        "radio",
        false,
    ),
    ("hubspot_owner_id", "Contact owner", "string", "text", false),
    (
        "hs_additional_emails",
        "Additional email addresses",
        "string",
        "textarea",
        true,
    ),
    (
        "hs_merged_object_ids",
        "Merged Contact IDs",
        "string",
        "text",
        true,
    ),
    ("createdate", "Create Date", "datetime", "date", false),
    (
        "lastmodifieddate",
        "Last Modified Date",
        "datetime",
        "date",
        true,
    ),
    ("hs_object_id", "Record ID", "number", "number", true),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_properties_validate_values() {
        let reg = PropertyRegistry::standard();
        assert_eq!(
            reg.normalize("email", " Ann@X.COM ").expect("email"),
            "ann@x.com"
        );
        assert_eq!(
            reg.normalize("email", "nope").unwrap_err().code,
            "INVALID_EMAIL"
        );
        assert_eq!(
            reg.normalize("lifecyclestage", "lead").expect("lead"),
            "lead"
        );
        assert_eq!(
            reg.normalize("lifecyclestage", "Lead").unwrap_err().code,
            "INVALID_OPTION"
        );
        assert_eq!(
            reg.normalize("nope", "x").unwrap_err().code,
            "PROPERTY_DOESNT_EXIST"
        );
        assert_eq!(
            reg.normalize("hs_object_id", "1").unwrap_err().code,
            "READ_ONLY_VALUE"
        );
        assert_eq!(reg.normalize("phone", "").expect("clear"), "");
        assert_eq!(
            reg.normalize("createdate", "1726078910012").expect("ms"),
            "2024-09-11T18:21:50.012Z"
        );
    }

    #[test]
    fn custom_property_create_checks_shape_and_duplicates() {
        let mut reg = PropertyRegistry::standard();
        let body = r#"{"name":"favorite_food","label":"Favorite Food","type":"enumeration","fieldType":"select","groupName":"contactinformation","options":[{"label":"Pizza","value":"pizza","hidden":false}]}"#;
        let input: PropertyCreate = serde_json::from_str(body).expect("parse");
        reg.create(input, "2025-01-01T00:00:00.000Z")
            .expect("created");
        assert_eq!(
            reg.normalize("favorite_food", "pizza").expect("option"),
            "pizza"
        );
        let again: PropertyCreate = serde_json::from_str(body).expect("parse");
        assert!(matches!(
            reg.create(again, "x"),
            Err(CreateError::Exists(_))
        ));
        let bad: PropertyCreate = serde_json::from_str(
            r#"{"name":"x","label":"X","type":"bool","fieldType":"text","groupName":"g"}"#,
        )
        .expect("parse");
        assert!(matches!(reg.create(bad, "x"), Err(CreateError::Invalid(_))));
    }
}
