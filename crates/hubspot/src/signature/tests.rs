use std::path::PathBuf;

use proptest::prelude::*;
use secrecy::SecretString;

use super::*;

const FIXTURE: &str = include_str!("../../tests/fixtures/signature_vectors.json");

#[derive(serde::Deserialize)]
struct Vectors {
    vectors: Vec<Vector>,
}

#[derive(serde::Deserialize)]
struct Vector {
    id: String,
    version: String,
    client_secret: String,
    method: Option<String>,
    uri: Option<String>,
    uri_as_received: Option<String>,
    body: String,
    timestamp: Option<String>,
    expected: String,
}

fn secrets(s: &str) -> WebhookSecrets {
    WebhookSecrets::new(vec![SecretString::from(s.to_owned())]).expect("non-empty")
}

/// Every published and generated vector verifies, and our signer reproduces it.
#[test]
fn every_known_answer_vector_verifies() {
    check_vectors(FIXTURE);
}

fn check_vectors(text: &str) {
    let vectors: Vectors = serde_json::from_str(text).expect("vectors parse");
    assert!(vectors.vectors.len() >= 10, "the vectors file lost vectors");
    for v in &vectors.vectors {
        let method = v.method.as_deref().unwrap_or("POST");
        let uri = v.uri.as_deref().unwrap_or("https://example.com/");
        // The URI as it reaches us may still carry escapes that HubSpot decodes first.
        let received = v.uri_as_received.as_deref().unwrap_or(uri);
        let body = Bytes::from(v.body.clone().into_bytes());
        let (headers, signed) = match v.version.as_str() {
            "v1" => (
                SignatureHeaders {
                    signature: Some(&v.expected),
                    version: Some("v1"),
                    ..Default::default()
                },
                sign_v1(&v.client_secret, &body),
            ),
            "v2" => (
                SignatureHeaders {
                    signature: Some(&v.expected),
                    version: Some("v2"),
                    ..Default::default()
                },
                sign_v2(&v.client_secret, method, uri, &body),
            ),
            "v3" => (
                SignatureHeaders {
                    signature_v3: Some(&v.expected),
                    timestamp: v.timestamp.as_deref(),
                    ..Default::default()
                },
                sign_v3(
                    &v.client_secret,
                    method,
                    uri,
                    &body,
                    v.timestamp.as_deref().expect("v3 has a timestamp"),
                ),
            ),
            other => panic!("vector {} has unknown version {other}", v.id),
        };
        assert_eq!(signed, v.expected, "signing vector {}", v.id);
        let now = v
            .timestamp
            .as_deref()
            .map_or(0, |t| t.parse::<i64>().unwrap());
        let verified = UnverifiedRequest {
            method,
            uri: received,
            body,
            headers,
        }
        .verify(&secrets(&v.client_secret), SignaturePolicy::default(), now);
        assert!(
            verified.is_ok(),
            "vector {} did not verify: {verified:?}",
            v.id
        );
    }
}

/// The fixture is the project's copy of the shared vectors (a clone on its
/// own has only the copy). When the shared file is present beside the
/// checkout, its vectors verify too, and the two files must not drift apart.
#[test]
fn shared_vectors_verify_and_match_the_fixture_when_present() {
    let shared = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/docs/signature_vectors.json");
    if let Ok(text) = std::fs::read_to_string(&shared) {
        check_vectors(&text);
        let a: serde_json::Value = serde_json::from_str(&text).unwrap();
        let b: serde_json::Value = serde_json::from_str(FIXTURE).unwrap();
        assert_eq!(a, b, "{} differs from the fixture", shared.display());
    }
}

#[test]
fn decode_uri_follows_hubspots_table_and_keeps_other_escapes() {
    assert_eq!(
        decode_uri("https://e.com/h?name=a%3Ab%2Fc&x=%28y%29&q=a%20b"),
        "https://e.com/h?name=a:b/c&x=(y)&q=a%20b"
    );
    assert_eq!(
        decode_uri("https://e.com/h?x=%3a%40"),
        "https://e.com/h?x=:@"
    );
    assert_eq!(decode_uri("https://e.com/%"), "https://e.com/%");
    assert_eq!(decode_uri("https://e.com/%2"), "https://e.com/%2");
    assert_eq!(decode_uri("https://e.com/ü%21"), "https://e.com/ü!");
}

#[test]
fn v3_is_checked_when_present_even_if_a_valid_v1_is_sent() {
    let body = Bytes::from_static(b"[]");
    let v1 = sign_v1("s", &body);
    let err = UnverifiedRequest {
        method: "POST",
        uri: "https://e.com/h",
        body,
        headers: SignatureHeaders {
            signature: Some(&v1),
            version: Some("v1"),
            signature_v3: Some("AAAA"),
            timestamp: Some("1000"),
        },
    }
    .verify(&secrets("s"), SignaturePolicy::default(), 1000)
    .unwrap_err();
    assert_eq!(err, SignatureError::Mismatch);
}

#[test]
fn stale_and_future_timestamps_are_refused() {
    let body = Bytes::from_static(b"[]");
    let ts = "1000000";
    let sig = sign_v3("s", "POST", "https://e.com/h", &body, ts);
    let check = |now: i64| {
        UnverifiedRequest {
            method: "POST",
            uri: "https://e.com/h",
            body: body.clone(),
            headers: SignatureHeaders {
                signature_v3: Some(&sig),
                timestamp: Some(ts),
                ..Default::default()
            },
        }
        .verify(&secrets("s"), SignaturePolicy::default(), now)
    };
    assert!(check(1_000_000 + 300_000).is_ok());
    assert_eq!(
        check(1_000_000 + 300_001).unwrap_err(),
        SignatureError::Stale { age_ms: 300_001 }
    );
    assert!(matches!(
        check(1_000_000 - 300_001),
        Err(SignatureError::Stale { .. })
    ));
}

#[test]
fn rotation_accepts_any_configured_secret_and_policy_can_require_v3() {
    let body = Bytes::from_static(b"[1]");
    let v1 = sign_v1("new", &body);
    let both = WebhookSecrets::new(vec![
        SecretString::from("old".to_owned()),
        SecretString::from("new".to_owned()),
    ])
    .unwrap();
    let req = |policy| {
        UnverifiedRequest {
            method: "POST",
            uri: "https://e.com/h",
            body: body.clone(),
            headers: SignatureHeaders {
                signature: Some(&v1),
                version: Some("v1"),
                ..Default::default()
            },
        }
        .verify(&both, policy, 0)
    };
    assert_eq!(
        req(SignaturePolicy::default()).unwrap().version(),
        SignatureVersion::V1
    );
    let strict = SignaturePolicy {
        require_v3: true,
        ..Default::default()
    };
    assert_eq!(req(strict).unwrap_err(), SignatureError::V3Required);
    assert!(WebhookSecrets::new(vec![SecretString::from(String::new())]).is_none());

    // v3 signed with either secret verifies during the rotation, even when
    // v3 is required; a secret no longer configured does not.
    let v3 = |secret: &str| sign_v3(secret, "POST", "https://e.com/h", &body, "5000");
    let (old, new, gone) = (v3("old"), v3("new"), v3("retired"));
    let req_v3 = |sig: &str| {
        UnverifiedRequest {
            method: "POST",
            uri: "https://e.com/h",
            body: body.clone(),
            headers: SignatureHeaders {
                signature_v3: Some(sig),
                timestamp: Some("5000"),
                ..Default::default()
            },
        }
        .verify(&both, strict, 5000)
    };
    assert_eq!(req_v3(&old).unwrap().version(), SignatureVersion::V3);
    assert_eq!(req_v3(&new).unwrap().version(), SignatureVersion::V3);
    assert_eq!(req_v3(&gone).unwrap_err(), SignatureError::Mismatch);
}

#[test]
fn no_signature_header_is_missing() {
    let err = UnverifiedRequest {
        method: "POST",
        uri: "https://e.com/h",
        body: Bytes::new(),
        headers: SignatureHeaders::default(),
    }
    .verify(&secrets("s"), SignaturePolicy::default(), 0)
    .unwrap_err();
    assert_eq!(err, SignatureError::Missing);
}

/// Which part of a signed v3 request a mutation touches.
#[derive(Debug, Clone)]
enum Part {
    Body,
    Uri,
    Method,
    Timestamp,
    Secret,
}

fn flip(bytes: &mut [u8], index: usize, xor: u8) {
    let i = index % bytes.len();
    bytes[i] ^= xor;
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Changing one byte of body, URI, method, timestamp or secret fails verification.
    #[test]
    fn v3_any_single_byte_change_fails(
        secret in "[a-zA-Z0-9-]{8,40}",
        method in prop::sample::select(vec!["POST", "GET", "PUT"]),
        path in "/[a-z0-9/_-]{0,30}",
        body in prop::collection::vec(any::<u8>(), 1..300),
        ts in 1_600_000_000_000i64..1_900_000_000_000i64,
        part in prop::sample::select(vec![Part::Body, Part::Uri, Part::Method, Part::Timestamp, Part::Secret]),
        index in any::<usize>(),
        xor in 1u8..=255,
    ) {
        let uri = format!("https://hooks.example.com{path}");
        let ts_s = ts.to_string();
        let sig = sign_v3(&secret, method, &uri, &body, &ts_s);

        let (mut m, mut u, mut b, mut t, mut s) =
            (method.as_bytes().to_vec(), uri.clone().into_bytes(), body.clone(), ts_s.clone().into_bytes(), secret.clone().into_bytes());
        match part {
            Part::Body => flip(&mut b, index, xor),
            Part::Uri => flip(&mut u, index, xor),
            Part::Method => flip(&mut m, index, xor),
            Part::Timestamp => flip(&mut t, index, xor),
            Part::Secret => flip(&mut s, index, xor),
        }
        // Strings that are no longer UTF-8 cannot reach the verifier as such;
        // their lossy form still differs from the original, which is what we test.
        let m = String::from_utf8_lossy(&m).into_owned();
        let u = String::from_utf8_lossy(&u).into_owned();
        let t = String::from_utf8_lossy(&t).into_owned();
        let s = String::from_utf8_lossy(&s).into_owned();
        prop_assume!(decode_uri(&u) != decode_uri(&uri) || !matches!(part, Part::Uri));
        // The original verifies...
        let ok = UnverifiedRequest {
            method, uri: &uri, body: Bytes::from(body),
            headers: SignatureHeaders { signature_v3: Some(&sig), timestamp: Some(&ts_s), ..Default::default() },
        }.verify(&secrets(&secret), SignaturePolicy::default(), ts);
        prop_assert!(ok.is_ok());
        // ...and the mutated one does not, whatever the clock says about its timestamp.
        let wide = SignaturePolicy { require_v3: false, max_age: Duration::from_secs(u64::from(u32::MAX)) * 1000 };
        let mutated = if s.is_empty() { None } else { Some(secrets(&s)) };
        if let Some(keys) = mutated {
            let res = UnverifiedRequest {
                method: &m, uri: &u, body: Bytes::from(b),
                headers: SignatureHeaders { signature_v3: Some(&sig), timestamp: Some(&t), ..Default::default() },
            }.verify(&keys, wide, ts);
            prop_assert!(res.is_err(), "mutation of {:?} still verified", part);
        }
    }

    /// A timestamp changed into another valid one inside the accepted window
    /// (one digit replaced by another) fails on the HMAC, not on parsing.
    #[test]
    fn v3_another_timestamp_in_the_window_fails(
        ts in 1_600_000_000_000i64..1_900_000_000_000i64,
        position in 8usize..13,
        delta in 1u8..=9,
    ) {
        let uri = "https://hooks.example.com/webhooks/hubspot";
        let body = Bytes::from_static(b"[]");
        let original = ts.to_string();
        let sig = sign_v3("s", "POST", uri, &body, &original);
        let mut digits = original.into_bytes();
        digits[position] = b'0' + (digits[position] - b'0' + delta) % 10;
        let changed = String::from_utf8(digits).expect("digits");
        let changed_ms: i64 = changed.parse().expect("still a number");
        // Digits 8..13 of a 13-digit millisecond time move it by under 100 s.
        prop_assert!((changed_ms - ts).abs() < 100_000);
        let res = UnverifiedRequest {
            method: "POST", uri, body,
            headers: SignatureHeaders { signature_v3: Some(&sig), timestamp: Some(&changed), ..Default::default() },
        }.verify(&secrets("s"), SignaturePolicy::default(), ts);
        prop_assert_eq!(res.unwrap_err(), SignatureError::Mismatch);
    }
}
