//! Bearer tokens of the REST API, each scoped to one integration.
//!
//! A token is `lsk_` followed by 32 random bytes in unpadded base64url. Only
//! its SHA-256 is stored; the token is handed out once by [`issue`]. A
//! presented token is hashed and looked up by the hash ([`verify`]), so no
//! stored value is compared byte by byte and a database dump holds nothing a
//! caller could present.
//!
//! Each token has a [`Scope`]: what it may do besides reading.

use aes_gcm::aead::Generate as _;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret as _, SecretString};
use sha2::{Digest, Sha256};
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::StoreError;
use crate::text_enum::text_enum;

text_enum! {
    /// What a token may do. Each scope includes the ones before it
    /// (`Read < Write < Admin`), so "at least `Write`" is `scope >= Write`.
    pub enum Scope {
        /// Read-only: the API's `GET` routes.
        Read => "read",
        /// Also creates, updates and deletes leads.
        Write => "write",
        /// Also replaces the integration's settings and replays dead letters.
        Admin => "admin",
    }
}

impl Scope {
    /// The scope of a token issued without one named: leads CRUD, but not
    /// the integration's settings.
    pub const DEFAULT: Self = Self::Write;

    /// Whether a token of this scope may do what `needed` allows.
    pub fn allows(self, needed: Self) -> bool {
        self >= needed
    }
}

/// What every token starts with, so a leaked one is recognisable (secret
/// scanners, logs) and a malformed one is refused without a query.
pub const TOKEN_PREFIX: &str = "lsk_";

/// Random bytes in a token.
const TOKEN_BYTES: usize = 32;

/// Length of a token: the prefix plus 32 bytes in unpadded base64url.
const TOKEN_LEN: usize = TOKEN_PREFIX.len() + 43;

/// Characters of a token kept in clear to tell tokens apart in a list
/// (the prefix and 6 random characters: 36 bits, useless to an attacker).
const DISPLAY_LEN: usize = TOKEN_PREFIX.len() + 6;

/// Longest label accepted.
pub const MAX_LABEL_CHARS: usize = 100;

/// A stored token, without any secret.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ApiToken {
    /// Its id (what `revoke` takes).
    pub id: Uuid,
    /// The only integration it gives access to.
    pub integration_id: Uuid,
    /// What the operator called it.
    pub label: String,
    /// The token's first characters (`lsk_` and six more).
    pub token_prefix: String,
    /// What it may do.
    pub scope: Scope,
    /// When it was issued.
    pub created_at: DateTime<Utc>,
    /// When it was last accepted (updated at most once a minute).
    pub last_used_at: Option<DateTime<Utc>>,
    /// When it was revoked; a revoked token is refused.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A freshly issued token: the only time the token itself is available.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    /// The bearer token to hand to the caller.
    pub token: SecretString,
    /// What was stored.
    pub record: ApiToken,
}

/// Who a verified token speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// The token's id (safe to log).
    pub token_id: Uuid,
    /// The integration it is scoped to.
    pub integration_id: Uuid,
    /// What it may do.
    pub scope: Scope,
}

const COLUMNS: &str =
    "id, integration_id, label, token_prefix, scope, created_at, last_used_at, revoked_at";

/// SHA-256 of a token as presented: the stored form.
pub fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Issues a token of [`Scope::DEFAULT`] for an integration; see
/// [`issue_scoped`].
///
/// # Errors
/// As [`issue_scoped`].
pub async fn issue(
    exec: impl PgExecutor<'_>,
    integration_id: Uuid,
    label: &str,
) -> Result<IssuedToken, StoreError> {
    issue_scoped(exec, integration_id, label, Scope::DEFAULT).await
}

/// Issues a token of `scope` for an integration and stores its hash.
///
/// # Errors
/// [`StoreError::Invalid`] for a label longer than [`MAX_LABEL_CHARS`] or
/// with control characters, or when the integration does not exist.
pub async fn issue_scoped(
    exec: impl PgExecutor<'_>,
    integration_id: Uuid,
    label: &str,
    scope: Scope,
) -> Result<IssuedToken, StoreError> {
    let label = label.trim();
    if label.chars().count() > MAX_LABEL_CHARS || label.chars().any(char::is_control) {
        return Err(StoreError::Invalid(format!(
            "a token label has at most {MAX_LABEL_CHARS} characters and no control characters"
        )));
    }
    // The system's CSPRNG, the same source as the token-encryption keys.
    let random = <[u8; TOKEN_BYTES]>::generate();
    let token = format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(random));
    let record: ApiToken = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO api_tokens (integration_id, label, token_prefix, token_hash, scope) \
         VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}"
    )))
    .bind(integration_id)
    .bind(label)
    .bind(&token[..DISPLAY_LEN])
    .bind(hash(&token).as_slice())
    .bind(scope)
    .fetch_one(exec)
    .await?;
    Ok(IssuedToken {
        token: SecretString::from(token),
        record,
    })
}

/// The integration a presented token is scoped to, and its scope; `None`
/// when the token is malformed, unknown or revoked. Records the use (at most
/// once a minute per token, so a busy client does not write on every
/// request).
pub async fn verify(
    exec: impl PgExecutor<'_>,
    token: &SecretString,
) -> Result<Option<Verified>, StoreError> {
    let token = token.expose_secret();
    if token.len() != TOKEN_LEN || !token.starts_with(TOKEN_PREFIX) {
        return Ok(None);
    }
    let row: Option<(Uuid, Uuid, Scope)> = sqlx::query_as(
        "WITH found AS ( \
             SELECT id, integration_id, scope, last_used_at FROM api_tokens \
             WHERE token_hash = $1 AND revoked_at IS NULL \
         ), touched AS ( \
             UPDATE api_tokens t SET last_used_at = now() FROM found \
             WHERE t.id = found.id \
             AND (found.last_used_at IS NULL OR found.last_used_at < now() - interval '1 minute') \
         ) \
         SELECT id, integration_id, scope FROM found",
    )
    .bind(hash(token).as_slice())
    .fetch_optional(exec)
    .await?;
    Ok(row.map(|(token_id, integration_id, scope)| Verified {
        token_id,
        integration_id,
        scope,
    }))
}

/// Revokes a token of the integration; false when it has no such token or
/// it was already revoked.
pub async fn revoke(
    exec: impl PgExecutor<'_>,
    integration_id: Uuid,
    id: Uuid,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE api_tokens SET revoked_at = now() \
         WHERE integration_id = $1 AND id = $2 AND revoked_at IS NULL",
    )
    .bind(integration_id)
    .bind(id)
    .execute(exec)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// The tokens of an integration, revoked ones included, oldest first.
pub async fn list(
    exec: impl PgExecutor<'_>,
    integration_id: Uuid,
) -> Result<Vec<ApiToken>, StoreError> {
    let tokens = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM api_tokens WHERE integration_id = $1 ORDER BY created_at, id"
    )))
    .bind(integration_id)
    .fetch_all(exec)
    .await?;
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_hash_is_the_sha256_of_the_token() {
        // Arrange
        let token = format!("{TOKEN_PREFIX}{}", "a".repeat(43));

        // Act
        let stored = hash(&token);

        // Assert
        assert_eq!(stored.to_vec(), Sha256::digest(token.as_bytes()).to_vec());
        assert_eq!(token.len(), TOKEN_LEN);
        assert_ne!(hash("lsk_other"), stored);
    }
}
