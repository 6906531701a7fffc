//! The OAuth `state` of `leadsync connect`: proof that an authorization code
//! comes from an install this command started, for this integration.
//!
//! HubSpot hands the `state` of the authorization URL back on the redirect
//! (docs/setup.md). Without a check, a code from someone else's install
//! (another HubSpot account, pasted by mistake or planted in a link) would
//! connect that account. The CLI keeps no session between `connect
//! oauth-url` and `connect oauth`, so the state carries its own proof: the
//! time it was issued, a random nonce, and an HMAC-SHA256 over both and the
//! integration's name, keyed with the token encryption key (which every
//! process that may connect an account has).

use std::time::Duration;

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

/// Issues a state for `integration` at `now_secs` (Unix time).
pub fn issue(key: &SecretString, integration: &str, now_secs: u64) -> String {
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
    key: &SecretString,
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

fn tag(key: &SecretString, integration: &str, issued: u64, nonce: &str) -> Vec<u8> {
    mac(key, integration, issued, nonce)
        .finalize()
        .into_bytes()
        .to_vec()
}

fn mac(key: &SecretString, integration: &str, issued: u64, nonce: &str) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.expose_secret().trim().as_bytes())
        .expect("HMAC takes any key length");
    // A label keeps this use of the key apart from its other use (sealing
    // tokens); the separators keep the fields from running into each other.
    mac.update(b"leadsync-oauth-state\n");
    mac.update(integration.as_bytes());
    mac.update(format!("\n{issued}\n{nonce}").as_bytes());
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> SecretString {
        SecretString::from(k.to_owned())
    }

    #[test]
    fn a_state_verifies_for_its_integration_within_the_hour_only() {
        let k = key("c2VjcmV0LWtleS1vZi0zMi1ieXRlcy1mb3ItdGVzdHM=");
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
            verify(&key("another-key"), "acme", &state, 1_000_000),
            Err(StateError::Forged)
        );
    }

    #[test]
    fn an_altered_or_foreign_state_is_refused() {
        let k = key("k");
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
