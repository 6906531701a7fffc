//! HubSpot webhook signatures (v1, v2 and v3), as HubSpot documents them on
//! "Validating requests" and as its official SDKs implement them.
//!
//! A request body only becomes a [`VerifiedBody`] by passing
//! [`UnverifiedRequest::verify`]; nothing downstream accepts raw bytes.

use std::borrow::Cow;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Legacy signature header (v1 or v2, as `X-HubSpot-Signature-Version` says).
pub const HEADER_SIGNATURE: &str = "X-HubSpot-Signature";
/// Names the version of [`HEADER_SIGNATURE`]: `v1` or `v2`.
pub const HEADER_SIGNATURE_VERSION: &str = "X-HubSpot-Signature-Version";
/// The v3 signature: base64 HMAC-SHA256.
pub const HEADER_SIGNATURE_V3: &str = "X-HubSpot-Signature-v3";
/// Milliseconds since the epoch at which HubSpot signed the request (v3 only).
pub const HEADER_REQUEST_TIMESTAMP: &str = "X-HubSpot-Request-Timestamp";
/// HubSpot's documented replay window for v3 signatures: five minutes.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(300);

type HmacSha256 = Hmac<Sha256>;

/// The client secrets a signature may have been made with. Several are valid at
/// once so that a secret can be rotated without rejecting deliveries in flight.
#[derive(Clone)]
pub struct WebhookSecrets(Vec<SecretString>);

impl WebhookSecrets {
    /// Builds the set; `None` when it would be empty (nothing could ever verify).
    pub fn new(secrets: Vec<SecretString>) -> Option<Self> {
        let secrets: Vec<_> = secrets
            .into_iter()
            .filter(|s| !s.expose_secret().is_empty())
            .collect();
        (!secrets.is_empty()).then_some(Self(secrets))
    }

    fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.0.iter().map(|s| s.expose_secret().as_bytes())
    }
}

impl std::fmt::Debug for WebhookSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WebhookSecrets({} redacted)", self.0.len())
    }
}

/// How strict verification is.
#[derive(Debug, Clone, Copy)]
pub struct SignaturePolicy {
    /// Refuse v1/v2-only requests.
    pub require_v3: bool,
    /// Oldest v3 timestamp accepted (and how far in the future one may be,
    /// which bounds replays of a request signed with a skewed clock).
    pub max_age: Duration,
}

impl Default for SignaturePolicy {
    fn default() -> Self {
        Self {
            require_v3: false,
            max_age: DEFAULT_MAX_AGE,
        }
    }
}

/// Which signature scheme vouched for a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureVersion {
    /// SHA-256 of secret + body.
    V1,
    /// SHA-256 of secret + method + URI + body.
    V2,
    /// HMAC-SHA256 of method + URI + body + timestamp.
    V3,
}

/// Why a request was refused. Every variant maps to 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No signature header at all.
    #[error("the request carries no HubSpot signature")]
    Missing,
    /// Only a v1/v2 signature, while the configuration requires v3.
    #[error("a v3 signature is required")]
    V3Required,
    /// `X-HubSpot-Signature-Version` names a scheme we do not know.
    #[error("unsupported signature version {0:?}")]
    UnsupportedVersion(String),
    /// The v3 timestamp header is missing or not a number.
    #[error("the request timestamp is missing or malformed")]
    MalformedTimestamp,
    /// The v3 timestamp is outside the replay window.
    #[error("the request timestamp is {age_ms} ms away from now")]
    Stale {
        /// Now minus the timestamp, in milliseconds (negative: in the future).
        age_ms: i64,
    },
    /// The signature does not match any configured secret.
    #[error("the signature does not match")]
    Mismatch,
}

impl SignatureError {
    /// A stable, low-cardinality label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::V3Required => "v3_required",
            Self::UnsupportedVersion(_) => "unsupported_version",
            Self::MalformedTimestamp => "malformed_timestamp",
            Self::Stale { .. } => "stale",
            Self::Mismatch => "mismatch",
        }
    }
}

/// The signature-related headers of a request, as received.
#[derive(Debug, Default, Clone, Copy)]
pub struct SignatureHeaders<'a> {
    /// `X-HubSpot-Signature`.
    pub signature: Option<&'a str>,
    /// `X-HubSpot-Signature-Version`.
    pub version: Option<&'a str>,
    /// `X-HubSpot-Signature-v3`.
    pub signature_v3: Option<&'a str>,
    /// `X-HubSpot-Request-Timestamp`.
    pub timestamp: Option<&'a str>,
}

/// A request whose body nobody has vouched for yet.
#[derive(Debug)]
pub struct UnverifiedRequest<'a> {
    /// HTTP method, upper case.
    pub method: &'a str,
    /// The public URL HubSpot called (scheme, host, path and query), as received:
    /// [`decode_uri`] is applied during verification.
    pub uri: &'a str,
    /// The raw body bytes.
    pub body: Bytes,
    /// The signature headers.
    pub headers: SignatureHeaders<'a>,
}

/// A body whose signature verified. Only [`UnverifiedRequest::verify`] makes one.
#[derive(Debug, Clone)]
pub struct VerifiedBody {
    body: Bytes,
    version: SignatureVersion,
}

impl VerifiedBody {
    /// The verified bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.body
    }

    /// The scheme that verified them.
    pub fn version(&self) -> SignatureVersion {
        self.version
    }
}

impl UnverifiedRequest<'_> {
    /// Checks the signature with every secret in `secrets`.
    ///
    /// v3 is checked whenever its header is present (HubSpot's webhook deliveries
    /// carry v1 *and* v3); v1/v2 only when v3 is absent and `policy` allows it.
    pub fn verify(
        self,
        secrets: &WebhookSecrets,
        policy: SignaturePolicy,
        now_ms: i64,
    ) -> Result<VerifiedBody, SignatureError> {
        let h = self.headers;
        let version = if let Some(sig) = h.signature_v3 {
            let ts = h.timestamp.ok_or(SignatureError::MalformedTimestamp)?;
            let ts_ms: i64 = ts
                .trim()
                .parse()
                .map_err(|_| SignatureError::MalformedTimestamp)?;
            let age_ms = now_ms.saturating_sub(ts_ms);
            let max_ms = i64::try_from(policy.max_age.as_millis()).unwrap_or(i64::MAX);
            if age_ms > max_ms || age_ms < -max_ms {
                return Err(SignatureError::Stale { age_ms });
            }
            let expected = B64
                .decode(sig.trim())
                .map_err(|_| SignatureError::Mismatch)?;
            let uri = decode_uri(self.uri);
            let ok = secrets.iter().any(|s| {
                v3_mac(s, self.method, &uri, &self.body, ts)
                    .verify_slice(&expected)
                    .is_ok()
            });
            ok.then_some(SignatureVersion::V3)
        } else {
            let sig = h.signature.ok_or(SignatureError::Missing)?;
            if policy.require_v3 {
                return Err(SignatureError::V3Required);
            }
            let expected = hex::decode(sig.trim()).map_err(|_| SignatureError::Mismatch)?;
            let version = match h.version.map(str::trim) {
                None | Some("v1" | "V1") => SignatureVersion::V1,
                Some("v2" | "V2") => SignatureVersion::V2,
                Some(other) => return Err(SignatureError::UnsupportedVersion(other.to_owned())),
            };
            let ok = secrets.iter().any(|s| {
                let digest = match version {
                    SignatureVersion::V2 => v2_digest(s, self.method, self.uri, &self.body),
                    _ => v1_digest(s, &self.body),
                };
                bool::from(digest.as_slice().ct_eq(&expected))
            });
            ok.then_some(version)
        };
        version
            .map(|version| VerifiedBody {
                body: self.body,
                version,
            })
            .ok_or(SignatureError::Mismatch)
    }
}

fn v3_mac(secret: &[u8], method: &str, uri: &str, body: &[u8], timestamp: &str) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(method.as_bytes());
    mac.update(uri.as_bytes());
    mac.update(body);
    mac.update(timestamp.as_bytes());
    mac
}

fn v1_digest(secret: &[u8], body: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(secret);
    h.update(body);
    h.finalize().into()
}

fn v2_digest(secret: &[u8], method: &str, uri: &str, body: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(secret);
    h.update(method.as_bytes());
    h.update(uri.as_bytes());
    h.update(body);
    h.finalize().into()
}

/// v1 signature: lowercase hex SHA-256 of `secret + body`.
pub fn sign_v1(secret: &str, body: &[u8]) -> String {
    hex::encode(v1_digest(secret.as_bytes(), body))
}

/// v2 signature: lowercase hex SHA-256 of `secret + method + uri + body`.
pub fn sign_v2(secret: &str, method: &str, uri: &str, body: &[u8]) -> String {
    hex::encode(v2_digest(secret.as_bytes(), method, uri, body))
}

/// v3 signature: base64 HMAC-SHA256 (key = secret) of `method + uri + body + timestamp`,
/// where `uri` is already decoded (see [`decode_uri`]).
pub fn sign_v3(secret: &str, method: &str, uri: &str, body: &[u8], timestamp: &str) -> String {
    B64.encode(
        v3_mac(secret.as_bytes(), method, uri, body, timestamp)
            .finalize()
            .into_bytes(),
    )
}

/// Applies HubSpot's v3 URI decoding table: only these twelve escapes are
/// decoded; every other `%XX` (such as `%20`) is kept as it is. Lower-case hex
/// digits are decoded too, since HubSpot does not say that it keeps them.
pub fn decode_uri(uri: &str) -> Cow<'_, str> {
    if !uri.contains('%') {
        return Cow::Borrowed(uri);
    }
    let bytes = uri.as_bytes();
    let mut out = String::with_capacity(uri.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let pair = [
                bytes[i + 1].to_ascii_uppercase(),
                bytes[i + 2].to_ascii_uppercase(),
            ];
            let decoded = match &pair {
                b"3A" => Some(':'),
                b"2F" => Some('/'),
                b"3F" => Some('?'),
                b"40" => Some('@'),
                b"21" => Some('!'),
                b"24" => Some('$'),
                b"27" => Some('\''),
                b"28" => Some('('),
                b"29" => Some(')'),
                b"2A" => Some('*'),
                b"2C" => Some(','),
                b"3B" => Some(';'),
                _ => None,
            };
            if let Some(c) = decoded {
                out.push(c);
                i += 3;
                continue;
            }
        }
        // Copy one whole UTF-8 character.
        let ch = uri[i..]
            .chars()
            .next()
            .expect("index is on a char boundary");
        out.push(ch);
        i += ch.len_utf8();
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests;
