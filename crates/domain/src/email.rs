//! E-mail addresses as leadsync compares them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A syntactically plausible e-mail address, trimmed and lower-cased: HubSpot
/// treats addresses case-insensitively (it stores them lower-cased), and so
/// does the unique index on leads.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email(String);

/// Why a string is not an [`Email`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    /// Nothing but white space.
    #[error("the e-mail address is empty")]
    Empty,
    /// Longer than the 254 characters SMTP allows.
    #[error("the e-mail address is longer than 254 characters")]
    TooLong,
    /// Not `local@domain`, or with white space or control characters inside.
    #[error("the e-mail address is not of the form local@domain")]
    Malformed,
}

impl Email {
    /// Parses and normalises an address.
    pub fn parse(raw: &str) -> Result<Self, EmailError> {
        let s = raw.trim();
        if s.is_empty() {
            return Err(EmailError::Empty);
        }
        if s.len() > 254 {
            return Err(EmailError::TooLong);
        }
        let (local, domain) = s.rsplit_once('@').ok_or(EmailError::Malformed)?;
        let bad = |c: char| c.is_whitespace() || c.is_control() || c == '@';
        if local.is_empty()
            || domain.is_empty()
            || local.chars().any(bad)
            || domain.chars().any(bad)
        {
            return Err(EmailError::Malformed);
        }
        Ok(Self(s.to_lowercase()))
    }

    /// The normalised address.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Email {
    type Error = EmailError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<Email> for String {
    fn from(e: Email) -> Self {
        e.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_trimmed_and_lower_cased() {
        assert_eq!(
            Email::parse("  Ada@Example.COM ").unwrap().as_str(),
            "ada@example.com"
        );
        assert_eq!(
            Email::parse("a+tag@sub.example.org").unwrap().as_str(),
            "a+tag@sub.example.org"
        );
    }

    #[test]
    fn malformed_addresses_are_refused() {
        assert_eq!(Email::parse("   "), Err(EmailError::Empty));
        for bad in [
            "ada",
            "@example.com",
            "ada@",
            "a da@example.com",
            "ada@exa mple.com",
            "a@b@c",
        ] {
            assert_eq!(Email::parse(bad), Err(EmailError::Malformed), "{bad}");
        }
        assert_eq!(
            Email::parse(&format!("{}@x.io", "a".repeat(260))),
            Err(EmailError::TooLong)
        );
    }
}
