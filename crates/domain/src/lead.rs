//! The lead fields leadsync keeps in sync, and their values.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A lead field that has a HubSpot counterpart (the seed's lead model; the
/// platform-only fields — source, platform, URLs — are not synced).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeadField {
    /// `first_name` ↔ `firstname`
    FirstName,
    /// `last_name` ↔ `lastname`
    LastName,
    /// `email` ↔ `email`
    Email,
    /// `phone` ↔ `phone`
    Phone,
    /// `company` ↔ `company`
    Company,
    /// `job_title` ↔ `jobtitle`
    JobTitle,
    /// `location` ↔ `city`
    Location,
    /// `country` ↔ `country`
    Country,
    /// `status` ↔ `hs_lead_status`
    Status,
}

impl LeadField {
    /// Every synced field.
    pub const ALL: [Self; 9] = [
        Self::FirstName,
        Self::LastName,
        Self::Email,
        Self::Phone,
        Self::Company,
        Self::JobTitle,
        Self::Location,
        Self::Country,
        Self::Status,
    ];

    /// The column name in `leads` (and the key in settings and audit rows).
    pub const fn name(self) -> &'static str {
        match self {
            Self::FirstName => "first_name",
            Self::LastName => "last_name",
            Self::Email => "email",
            Self::Phone => "phone",
            Self::Company => "company",
            Self::JobTitle => "job_title",
            Self::Location => "location",
            Self::Country => "country",
            Self::Status => "status",
        }
    }

    /// Parses a column name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }
}

impl fmt::Display for LeadField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Values of synced fields. An absent field and an empty string mean the same:
/// HubSpot clears a property with `""` and returns `null` for unset ones.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeadValues(BTreeMap<LeadField, String>);

impl LeadValues {
    /// No values.
    pub fn new() -> Self {
        Self::default()
    }

    /// The value of `field` (`""` when unset).
    pub fn get(&self, field: LeadField) -> &str {
        self.0.get(&field).map_or("", String::as_str)
    }

    /// Sets `field`; an empty value unsets it.
    pub fn set(&mut self, field: LeadField, value: impl Into<String>) {
        let value = value.into();
        if value.is_empty() {
            self.0.remove(&field);
        } else {
            self.0.insert(field, value);
        }
    }

    /// Builder form of [`LeadValues::set`].
    #[must_use]
    pub fn with(mut self, field: LeadField, value: impl Into<String>) -> Self {
        self.set(field, value);
        self
    }

    /// Fields with a non-empty value.
    pub fn iter(&self) -> impl Iterator<Item = (LeadField, &str)> {
        self.0.iter().map(|(f, v)| (*f, v.as_str()))
    }
}

impl FromIterator<(LeadField, String)> for LeadValues {
    fn from_iter<I: IntoIterator<Item = (LeadField, String)>>(iter: I) -> Self {
        let mut values = Self::new();
        for (f, v) in iter {
            values.set(f, v);
        }
        values
    }
}

/// A fingerprint of a field value, as the echo ledger and the merge base store
/// it: the values themselves (personal data) are not kept twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ValueHash([u8; 16]);

impl ValueHash {
    /// Hashes a value as HubSpot would hold it: surrounding white space does
    /// not make a different value, and `""` is "no value".
    pub fn of(value: &str) -> Self {
        let digest = Sha256::digest(value.trim().as_bytes());
        let mut out = [0u8; 16];
        out.copy_from_slice(&digest[..16]);
        Self(out)
    }

    /// The raw bytes (for storage).
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// From stored bytes; `None` when the length is wrong.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        <[u8; 16]>::try_from(bytes).ok().map(Self)
    }
}
