//! The OAuth `state` of `leadsync connect`: proof that an authorization code
//! answers an authorization URL this installation issued, for this
//! integration, within the hour.
//!
//! HubSpot hands the `state` of the authorization URL back on the redirect
//! (docs/setup.md). Without a check, a code from an install nobody here
//! started (of another HubSpot account, pasted by mistake or planted in a
//! link) would connect that account. The CLI keeps no session between
//! `connect oauth-url` and `connect oauth`, so the state carries its own
//! proof: the time it was issued, a random nonce, and an HMAC-SHA256 over
//! both and the integration's name. The HMAC key is derived from the token
//! encryption key (which every process that may connect an account has), so
//! the key that seals tokens is never used as it is for anything else.
//!
//! What it does not prove: that the browser that comes back is the one the
//! URL was given to. Whoever sees an authorization URL can pair its state
//! with a code of their own within the hour; the account connected is then
//! printed, and `hubspot.app_id` limits codes to this app.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit as _, Mac as _};
use secrecy::{ExposeSecret as _, SecretString};
use sha2::Sha256;

/// How long an authorization URL stays usable.
pub const STATE_LIFETIME: Duration = Duration::from_secs(60 * 60);

/// Clock difference tolerated between the machine that issued the state and
/// the one that checks it.
const CLOCK_SKEW_SECS: u64 = 5 * 60;

/// Why a returned `state` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// Not a state this command issues.
    #[error("the state is not one `leadsync connect oauth-url` issues")]
    Malformed,
    /// Issued by another key, for another integration, or altered.
    #[error(
        "the state was not issued for this integration by this installation (another integration's URL, another install, or altered)"
    )]
    Forged,
    /// Older than [`STATE_LIFETIME`].
    #[error(
        "the authorization URL expired (it is valid for an hour): open a new `leadsync connect oauth-url`"
    )]
    Expired,
}

/// The key `token_encryption_key` is not base64 of 32 bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not base64 of a 32-byte key")]
pub struct InvalidKey;

/// The HMAC key of states, derived from the token encryption key.
pub struct StateKey([u8; 32]);

impl StateKey {
    /// Derives the state key from `token_key` (base64 of the 32-byte
    /// AES-256-GCM key, `hubspot.token_encryption_key`): HMAC-SHA256 of a
    /// label under that key, a pseudo-random function of it that reveals
    /// nothing about it.
    ///
    /// # Errors
    /// [`InvalidKey`] when `token_key` is not base64 of 32 bytes.
    pub fn derive(token_key: &SecretString) -> Result<Self, InvalidKey> {
        let bytes = BASE64
            .decode(token_key.expose_secret().trim())
            .map_err(|_| InvalidKey)?;
        if bytes.len() != 32 {
            return Err(InvalidKey);
        }
        let mut mac = Hmac::<Sha256>::new_from_slice(&bytes).expect("HMAC takes any key length");
        mac.update(b"leadsync oauth state key v1");
        Ok(Self(mac.finalize().into_bytes().into()))
    }
}

/// Issues a state for `integration` at `now_secs` (Unix time).
pub fn issue(key: &StateKey, integration: &str, now_secs: u64) -> String {
    let nonce = format!("{:032x}", rand::random::<u128>());
    let tag = tag(key, integration, now_secs, &nonce);
    format!("{now_secs:x}.{nonce}.{}", hex::encode(tag))
}

/// Checks that `state` was issued by [`issue`] with `key` for `integration`
/// less than [`STATE_LIFETIME`] before `now_secs`.
///
/// # Errors
/// See [`StateError`].
pub fn verify(
    key: &StateKey,
    integration: &str,
    state: &str,
    now_secs: u64,
) -> Result<(), StateError> {
    let mut parts = state.trim().split('.');
    let (Some(issued), Some(nonce), Some(tag_hex), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(StateError::Malformed);
    };
    let issued = u64::from_str_radix(issued, 16).map_err(|_| StateError::Malformed)?;
    let tag = hex::decode(tag_hex).map_err(|_| StateError::Malformed)?;
    mac(key, integration, issued, nonce)
        .verify_slice(&tag)
        .map_err(|_| StateError::Forged)?;
    let lifetime = STATE_LIFETIME.as_secs();
    if issued > now_secs.saturating_add(CLOCK_SKEW_SECS)
        || now_secs.saturating_sub(issued) > lifetime
    {
        return Err(StateError::Expired);
    }
    Ok(())
}

fn tag(key: &StateKey, integration: &str, issued: u64, nonce: &str) -> Vec<u8> {
    mac(key, integration, issued, nonce)
        .finalize()
        .into_bytes()
        .to_vec()
}

fn mac(key: &StateKey, integration: &str, issued: u64, nonce: &str) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(&key.0).expect("HMAC takes any key length");
    // The separators keep the fields from running into each other.
    mac.update(integration.as_bytes());
    mac.update(format!("\n{issued}\n{nonce}").as_bytes());
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> StateKey {
        StateKey::derive(&leadsync_store::TokenCipher::generate_key()).expect("a valid key")
    }

    #[test]
    fn a_state_verifies_for_its_integration_within_the_hour_only() {
        let k = key();
        let state = issue(&k, "acme", 1_000_000);

        assert_eq!(verify(&k, "acme", &state, 1_000_000), Ok(()));
        assert_eq!(verify(&k, "acme", &state, 1_000_000 + 3_600), Ok(()));
        assert_eq!(
            verify(&k, "acme", &state, 1_000_000 + 3_601),
            Err(StateError::Expired)
        );
        assert_eq!(
            verify(&k, "acme", &state, 1_000_000 - 301),
            Err(StateError::Expired)
        );
        assert_eq!(
            verify(&k, "acme-2", &state, 1_000_000),
            Err(StateError::Forged)
        );
        assert_eq!(
            verify(&key(), "acme", &state, 1_000_000),
            Err(StateError::Forged)
        );
    }

    #[test]
    fn only_base64_of_32_bytes_derives_a_key() {
        assert!(StateKey::derive(&SecretString::from("not base64!")).is_err());
        assert!(StateKey::derive(&SecretString::from("c2hvcnQ=")).is_err());
        assert!(StateKey::derive(&leadsync_store::TokenCipher::generate_key()).is_ok());
    }

    #[test]
    fn an_altered_or_foreign_state_is_refused() {
        let k = key();
        let state = issue(&k, "acme", 5_000);
        let (issued, rest) = state.split_once('.').expect("three parts");
        // A later issue time with the same tag: the time is covered by the MAC.
        let moved = format!("{:x}.{rest}", u64::from_str_radix(issued, 16).unwrap() + 1);

        assert_eq!(verify(&k, "acme", &moved, 5_000), Err(StateError::Forged));
        assert_eq!(
            verify(&k, "acme", "0123456789abcdef0123456789abcdef", 5_000),
            Err(StateError::Malformed)
        );
        assert_eq!(verify(&k, "acme", "", 5_000), Err(StateError::Malformed));
        assert_ne!(issue(&k, "acme", 5_000), state, "a fresh nonce each time");
    }
}
