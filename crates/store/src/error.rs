//! [`StoreError`]: what the storage layer reports, with unique violations
//! mapped to meaningful variants by constraint name.

use crate::crypto::CryptoError;

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another integration already has this name.
    #[error("an integration with this name already exists")]
    DuplicateIntegrationName,
    /// Another integration is already connected to this HubSpot portal.
    #[error("an integration for this HubSpot portal already exists")]
    DuplicateIntegrationPortal,
    /// Another live lead of the integration has this e-mail address
    /// (compared case-insensitively).
    #[error("a lead with this e-mail address already exists")]
    DuplicateEmail,
    /// Another lead of the integration is linked to this HubSpot contact.
    #[error("a lead linked to this HubSpot contact already exists")]
    DuplicateCrmId,
    /// The referenced row does not exist.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The input breaks a rule of the schema (check or foreign key).
    #[error("invalid input: {0}")]
    Invalid(String),
    /// A stored value could not be read back (e.g. malformed settings JSON).
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// The database URL could not be parsed (its text is not repeated here:
    /// it may hold a password).
    #[error("the database URL is not valid")]
    InvalidUrl,
    /// Encrypting or decrypting a token failed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// A migration failed.
    #[error("migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Any other database error.
    #[error("database error")]
    Database(#[source] sqlx::Error),
}

impl StoreError {
    /// Whether retrying the same operation later may succeed: connection
    /// trouble, pool exhaustion, serialization failures and deadlocks.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Database(err) => match err {
                sqlx::Error::Io(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed => true,
                sqlx::Error::Database(db) => {
                    // 40001 serialization_failure, 40P01 deadlock_detected,
                    // 57P01 admin_shutdown, 08* connection exceptions.
                    db.code().is_some_and(|c| {
                        c == "40001" || c == "40P01" || c == "57P01" || c.starts_with("08")
                    })
                }
                _ => false,
            },
            _ => false,
        }
    }
}

impl StoreError {
    /// The SQLSTATE under which the database refused the data itself: a data
    /// exception (class 22: invalid text such as a NUL byte, a value too
    /// long or out of range) or an integrity violation (class 23: check,
    /// foreign key, unique). Retrying the same write cannot succeed, unlike
    /// the transient failures of [`StoreError::is_retryable`]; `None` for
    /// every other error.
    ///
    /// Violations already mapped to a variant keep their class: `23505` for
    /// the duplicates, the class code `23000` for [`StoreError::Invalid`]
    /// (which does not keep the exact code).
    pub fn rejected_sqlstate(&self) -> Option<String> {
        match self {
            Self::DuplicateIntegrationName
            | Self::DuplicateIntegrationPortal
            | Self::DuplicateEmail
            | Self::DuplicateCrmId => Some("23505".to_owned()),
            Self::Invalid(_) => Some("23000".to_owned()),
            Self::Database(sqlx::Error::Database(db)) => db
                .code()
                .filter(|c| is_data_sqlstate(c))
                .map(|c| c.into_owned()),
            _ => None,
        }
    }
}

/// Whether a SQLSTATE names a problem of the data written (classes 22 and
/// 23) rather than of the connection, the transaction or the server.
fn is_data_sqlstate(code: &str) -> bool {
    code.starts_with("22") || code.starts_with("23")
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &err {
            if db.is_unique_violation() {
                match db.constraint() {
                    Some("integrations_name_key") => return Self::DuplicateIntegrationName,
                    Some("integrations_portal_id_key") => return Self::DuplicateIntegrationPortal,
                    Some("leads_integration_email_key") => return Self::DuplicateEmail,
                    Some("leads_integration_crm_id_key") => return Self::DuplicateCrmId,
                    _ => {}
                }
            }
            if db.is_check_violation() || db.is_foreign_key_violation() {
                // The constraint name says which rule; the message may quote
                // row values (personal data), so it is not kept.
                let name = db.constraint().unwrap_or("unnamed constraint");
                return Self::Invalid(format!("violates {name}"));
            }
        }
        Self::Database(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_exceptions_and_integrity_violations_are_data_sqlstates() {
        for code in ["22021", "22001", "22P02", "23505", "23514", "23503"] {
            assert!(is_data_sqlstate(code), "{code}");
        }
    }

    #[test]
    fn transient_failures_are_not_data_sqlstates() {
        // Serialization failure, deadlock, connection failure, statement
        // timeout, lock timeout, admin shutdown, out of memory.
        for code in [
            "40001", "40P01", "08006", "57014", "55P03", "57P01", "53200",
        ] {
            assert!(!is_data_sqlstate(code), "{code}");
        }
    }

    #[test]
    fn mapped_violations_keep_their_class_and_other_errors_have_none() {
        assert_eq!(
            StoreError::DuplicateEmail.rejected_sqlstate().as_deref(),
            Some("23505")
        );
        assert_eq!(
            StoreError::Invalid("violates leads_status_check".into())
                .rejected_sqlstate()
                .as_deref(),
            Some("23000")
        );
        for err in [
            StoreError::Database(sqlx::Error::PoolTimedOut),
            StoreError::Database(sqlx::Error::Io(std::io::Error::other("reset"))),
            StoreError::NotFound("lead"),
            StoreError::InvalidUrl,
        ] {
            assert_eq!(err.rejected_sqlstate(), None, "{err:?}");
        }
    }
}
