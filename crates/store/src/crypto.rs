//! [`TokenCipher`]: AES-256-GCM encryption of OAuth tokens at rest.
//!
//! Stored layout: one version byte, the 96-bit random nonce, then the
//! ciphertext with its 128-bit tag. The version byte leaves room for key
//! rotation. The associated data binds a ciphertext to its row and column, so
//! a ciphertext copied to another integration or column does not decrypt.

use aes_gcm::aead::{Aead, Generate, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use secrecy::{ExposeSecret, SecretString};

/// Format version of the stored ciphertext.
const VERSION: u8 = 1;
/// AES-GCM nonce length in bytes.
const NONCE_LEN: usize = 12;

/// Why a token could not be encrypted or decrypted. Carries no key or
/// plaintext material.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// The key is not base64 of exactly 32 bytes.
    #[error("the token encryption key must be 32 bytes, base64-encoded")]
    InvalidKey,
    /// The ciphertext is truncated or of an unknown format version.
    #[error("malformed encrypted token")]
    Malformed,
    /// Authentication failed: wrong key, or the ciphertext was altered or
    /// moved to another row.
    #[error("encrypted token does not authenticate (wrong key or tampered data)")]
    Decrypt,
    /// Encryption failed.
    #[error("token encryption failed")]
    Encrypt,
}

/// Encrypts and decrypts tokens with one AES-256-GCM key. The key comes from
/// the environment and is never stored in the database.
#[derive(Clone)]
pub struct TokenCipher {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for TokenCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenCipher([REDACTED])")
    }
}

impl TokenCipher {
    /// Builds a cipher from a base64-encoded (standard alphabet) 32-byte key.
    pub fn from_base64_key(key: &SecretString) -> Result<Self, CryptoError> {
        let bytes = BASE64
            .decode(key.expose_secret().trim())
            .map_err(|_| CryptoError::InvalidKey)?;
        Self::from_key_bytes(&bytes)
    }

    /// Builds a cipher from raw key bytes (exactly 32).
    pub fn from_key_bytes(key: &[u8]) -> Result<Self, CryptoError> {
        let cipher = Aes256Gcm::new_from_slice(key).map_err(|_| CryptoError::InvalidKey)?;
        Ok(Self { cipher })
    }

    /// A fresh random key, base64-encoded, for `leadsync` setup and tests.
    pub fn generate_key() -> SecretString {
        let key = Key::<Aes256Gcm>::generate();
        SecretString::from(BASE64.encode(key.as_slice()))
    }

    /// Encrypts `plaintext`; `context` is authenticated but not stored (e.g.
    /// the integration id and column name).
    pub fn encrypt(
        &self,
        plaintext: &SecretString,
        context: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        let nonce = Nonce::generate();
        let sealed = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext.expose_secret().as_bytes(),
                    aad: context,
                },
            )
            .map_err(|_| CryptoError::Encrypt)?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        out.push(VERSION);
        out.extend_from_slice(nonce.as_slice());
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Decrypts what [`encrypt`](Self::encrypt) produced with the same
    /// `context`.
    pub fn decrypt(&self, stored: &[u8], context: &[u8]) -> Result<SecretString, CryptoError> {
        let Some((&VERSION, rest)) = stored.split_first() else {
            return Err(CryptoError::Malformed);
        };
        if rest.len() < NONCE_LEN + 16 {
            return Err(CryptoError::Malformed);
        }
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_from(nonce).map_err(|_| CryptoError::Malformed)?;
        let plain = self
            .cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: sealed,
                    aad: context,
                },
            )
            .map_err(|_| CryptoError::Decrypt)?;
        let text = String::from_utf8(plain).map_err(|_| CryptoError::Malformed)?;
        Ok(SecretString::from(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_wrong_key_or_context_fails() {
        // Arrange
        let cipher = TokenCipher::from_base64_key(&TokenCipher::generate_key()).unwrap();
        let other = TokenCipher::from_base64_key(&TokenCipher::generate_key()).unwrap();
        let token = SecretString::from("pat-na1-secret-token".to_owned());

        // Act
        let sealed = cipher.encrypt(&token, b"ctx").unwrap();
        let again = cipher.encrypt(&token, b"ctx").unwrap();

        // Assert
        assert!(
            !sealed.windows(8).any(|w| w == b"pat-na1-"),
            "plaintext visible"
        );
        assert_ne!(sealed, again, "nonce must be fresh per encryption");
        let opened = cipher.decrypt(&sealed, b"ctx").unwrap();
        assert_eq!(opened.expose_secret(), "pat-na1-secret-token");
        assert!(matches!(
            other.decrypt(&sealed, b"ctx"),
            Err(CryptoError::Decrypt)
        ));
        assert!(matches!(
            cipher.decrypt(&sealed, b"other"),
            Err(CryptoError::Decrypt)
        ));
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(matches!(
            cipher.decrypt(&tampered, b"ctx"),
            Err(CryptoError::Decrypt)
        ));
        assert!(matches!(
            cipher.decrypt(&sealed[..10], b"ctx"),
            Err(CryptoError::Malformed)
        ));
    }

    #[test]
    fn rejects_keys_of_the_wrong_size() {
        let short = SecretString::from(BASE64.encode([0u8; 16]));
        assert!(matches!(
            TokenCipher::from_base64_key(&short),
            Err(CryptoError::InvalidKey)
        ));
        let junk = SecretString::from("not base64!".to_owned());
        assert!(matches!(
            TokenCipher::from_base64_key(&junk),
            Err(CryptoError::InvalidKey)
        ));
    }
}
