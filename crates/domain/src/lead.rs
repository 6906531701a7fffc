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
/// it: the values themselves (personal data) are not kept twice. Serialized as
/// a lowercase hex string, stored as its 16 raw bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
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

    /// Hashes an optional value; an absent value hashes like `""`, as HubSpot
    /// does not distinguish a cleared property from an empty one.
    pub fn of_opt(value: Option<&str>) -> Self {
        Self::of(value.unwrap_or_default())
    }

    /// The raw bytes (for storage).
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// From stored bytes; `None` when the length is wrong.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        <[u8; 16]>::try_from(bytes).ok().map(Self)
    }

    /// The 32 lowercase hex digits of the bytes.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|byte| format!("{byte:02x}")).collect()
    }

    /// From 32 hex digits (either case); `None` for anything else.
    pub fn from_hex(text: &str) -> Option<Self> {
        let digits = text.as_bytes();
        if digits.len() != 32 {
            return None;
        }
        let mut out = [0u8; 16];
        for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
            // One digit at a time: `u8::from_str_radix` on the pair would
            // also take a leading `+`.
            let high = char::from(pair[0]).to_digit(16)?;
            let low = char::from(pair[1]).to_digit(16)?;
            *byte = u8::try_from(high << 4 | low).ok()?;
        }
        Some(Self(out))
    }
}

impl Serialize for ValueHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for ValueHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::from_hex(&text).ok_or_else(|| {
            serde::de::Error::invalid_value(serde::de::Unexpected::Str(&text), &"32 hex digits")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_hash_hex_round_trips_and_rejects_malformed_text() {
        // Arrange
        let hash = ValueHash::of("  Ada ");

        // Act
        let hex = hash.to_hex();

        // Assert
        assert_eq!(hash, ValueHash::of("Ada"));
        assert_eq!(hex.len(), 32);
        assert_eq!(ValueHash::from_hex(&hex), Some(hash));
        assert_eq!(ValueHash::from_hex(&hex.to_uppercase()), Some(hash));
        assert_eq!(ValueHash::from_hex(&hex[..30]), None);
        assert_eq!(ValueHash::from_hex(&format!("{}zz", &hex[..30])), None);
        assert_eq!(ValueHash::from_hex(&format!("{hex}00")), None);
    }

    #[test]
    fn value_hash_serializes_as_a_hex_string() {
        // Arrange
        let hash = ValueHash::of("a@x.io");

        // Act
        let json = serde_json::to_string(&hash).unwrap();
        let back: ValueHash = serde_json::from_str(&json).unwrap();

        // Assert
        assert_eq!(json, format!("\"{}\"", hash.to_hex()));
        assert_eq!(back, hash);
        assert!(serde_json::from_str::<ValueHash>("[1,2,3]").is_err());
        assert!(serde_json::from_str::<ValueHash>("\"abc\"").is_err());
    }

    #[test]
    fn value_hash_of_opt_treats_none_as_empty() {
        assert_eq!(ValueHash::of_opt(None), ValueHash::of(""));
        assert_eq!(ValueHash::of_opt(Some(" x ")), ValueHash::of("x"));
    }
}
