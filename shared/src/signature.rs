//! Standard Webhooks signatures (<https://www.standardwebhooks.com>): HMAC-SHA256 over
//! `{webhook-id}.{webhook-timestamp}.{body}`, sent as `webhook-signature: v1,<base64> …`.
//!
//! Used by ingest to authenticate Moodle sites and by the dispatcher to sign deliveries. The
//! scheme is a few lines of RustCrypto's `hmac`; the `standardwebhooks` crate serves as the
//! independent implementation our tests check against.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const HEADER_ID: &str = "webhook-id";
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
pub const HEADER_SIGNATURE: &str = "webhook-signature";

const SECRET_PREFIX: &str = "whsec_";
const MIN_KEY_BYTES: usize = 24;
const MAX_KEY_BYTES: usize = 64;
/// Longest `webhook-id` accepted: it becomes part of the dedup key.
pub const MAX_ID_LEN: usize = 256;

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("is not base64 after the `whsec_` prefix")]
    NotBase64,
    #[error(
        "decodes to {0} bytes; Standard Webhooks secrets are {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes"
    )]
    WrongLength(usize),
}

/// A signing key, parsed from its `whsec_<base64>` form.
#[derive(Clone)]
pub struct SigningSecret {
    key: Vec<u8>,
}

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret(<redacted>)")
    }
}

impl SigningSecret {
    pub fn parse(text: &str) -> Result<Self, SecretError> {
        let encoded = text.strip_prefix(SECRET_PREFIX).unwrap_or(text);
        let key = BASE64.decode(encoded).map_err(|_| SecretError::NotBase64)?;
        if !(MIN_KEY_BYTES..=MAX_KEY_BYTES).contains(&key.len()) {
            return Err(SecretError::WrongLength(key.len()));
        }
        Ok(Self { key })
    }

    fn mac(&self, id: &str, timestamp: &str, body: &[u8]) -> HmacSha256 {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// The `webhook-signature` value (`v1,<base64>`) for a message.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let tag = self
            .mac(id, &timestamp.to_string(), body)
            .finalize()
            .into_bytes();
        format!("v1,{}", BASE64.encode(tag))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing `{0}` header")]
    MissingHeader(&'static str),
    #[error("`webhook-id` is longer than {MAX_ID_LEN} characters or not printable ASCII")]
    BadId,
    #[error("`webhook-timestamp` is not a Unix time in seconds")]
    BadTimestamp,
    #[error(
        "`webhook-timestamp` is {skew_secs} s away from the server clock; at most {tolerance_secs} s is accepted"
    )]
    OutsideTolerance { skew_secs: i64, tolerance_secs: u64 },
    #[error("no `v1` signature matches any current secret of this source")]
    NoMatch,
}

/// The three Standard Webhooks headers of one request.
#[derive(Debug, Clone, Copy)]
pub struct SignedHeaders<'a> {
    pub id: Option<&'a str>,
    pub timestamp: Option<&'a str>,
    pub signature: Option<&'a str>,
}

impl<'a> SignedHeaders<'a> {
    pub fn from_http(headers: &'a http::HeaderMap) -> Self {
        let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        Self {
            id: get(HEADER_ID),
            timestamp: get(HEADER_TIMESTAMP),
            signature: get(HEADER_SIGNATURE),
        }
    }

    /// Whether the request claims to be signed at all.
    pub fn present(&self) -> bool {
        self.signature.is_some()
    }
}

/// Checks a signed request against every secret of its source (several during rotation).
/// `now` is Unix seconds. Returns the verified `webhook-id`.
pub fn verify<'a, 's>(
    secrets: impl IntoIterator<Item = &'s SigningSecret>,
    headers: &SignedHeaders<'a>,
    body: &[u8],
    now: i64,
    tolerance: Duration,
) -> Result<&'a str, SignatureError> {
    let id = headers.id.ok_or(SignatureError::MissingHeader(HEADER_ID))?;
    let timestamp = headers
        .timestamp
        .ok_or(SignatureError::MissingHeader(HEADER_TIMESTAMP))?;
    let signature = headers
        .signature
        .ok_or(SignatureError::MissingHeader(HEADER_SIGNATURE))?;
    if id.is_empty() || id.len() > MAX_ID_LEN || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(SignatureError::BadId);
    }
    let sent_at: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| SignatureError::BadTimestamp)?;
    let skew = now.saturating_sub(sent_at);
    let tolerance_secs = tolerance.as_secs();
    if skew.unsigned_abs() > tolerance_secs {
        return Err(SignatureError::OutsideTolerance {
            skew_secs: skew,
            tolerance_secs,
        });
    }
    let candidates: Vec<Vec<u8>> = signature
        .split_whitespace()
        .filter_map(|part| part.strip_prefix("v1,"))
        .filter_map(|b64| BASE64.decode(b64).ok())
        .collect();
    for secret in secrets {
        let mac = secret.mac(id, timestamp, body);
        // `verify_slice` compares in constant time.
        if candidates
            .iter()
            .any(|candidate| mac.clone().verify_slice(candidate).is_ok())
        {
            return Ok(id);
        }
    }
    Err(SignatureError::NoMatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const TOLERANCE: Duration = Duration::from_secs(300);

    fn headers<'a>(id: &'a str, ts: &'a str, sig: &'a str) -> SignedHeaders<'a> {
        SignedHeaders {
            id: Some(id),
            timestamp: Some(ts),
            signature: Some(sig),
        }
    }

    #[test]
    fn matches_the_standard_webhooks_reference_vector() {
        // The example from the Standard Webhooks specification.
        let secret = SigningSecret::parse(SECRET).expect("valid");
        let body = br#"{"test": 2432232314}"#;
        let sig = secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn agrees_with_the_standardwebhooks_crate() {
        let now = chrono::Utc::now().timestamp();
        let secret = SigningSecret::parse(SECRET).expect("valid");
        let body = br#"{"eventname":"\\core\\event\\user_created"}"#;
        let sig = secret.sign("msg_1", now, body);
        let mut map = http::HeaderMap::new();
        map.insert(HEADER_ID, http::HeaderValue::from_static("msg_1"));
        map.insert(
            HEADER_TIMESTAMP,
            http::HeaderValue::from_str(&now.to_string()).expect("ascii"),
        );
        map.insert(
            HEADER_SIGNATURE,
            http::HeaderValue::from_str(&sig).expect("ascii"),
        );
        let reference = standardwebhooks::Webhook::new(SECRET).expect("valid secret");
        reference
            .verify(body, &map)
            .expect("reference accepts our signature");

        let theirs = reference.sign("msg_2", now, body).expect("reference signs");
        verify(
            &[secret],
            &headers("msg_2", &now.to_string(), &theirs),
            body,
            now,
            TOLERANCE,
        )
        .expect("we accept the reference signature");
    }

    #[test]
    fn any_current_secret_and_any_listed_signature_is_enough() {
        let old = SigningSecret::parse(SECRET).expect("valid");
        let new = SigningSecret::parse("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
            .expect("valid");
        let body = b"{}";
        let sig_new = new.sign("id", 1000, body);
        let both = format!("v1,AAAA {sig_new} v2,zzz");
        let ok = verify(
            &[old.clone(), new.clone()],
            &headers("id", "1000", &both),
            body,
            1000,
            TOLERANCE,
        );
        assert_eq!(ok, Ok("id"));
        let only_old = verify(
            &[old],
            &headers("id", "1000", &sig_new),
            body,
            1000,
            TOLERANCE,
        );
        assert_eq!(only_old, Err(SignatureError::NoMatch));
    }

    #[test]
    fn tampering_and_stale_timestamps_are_refused() {
        let secret = SigningSecret::parse(SECRET).expect("valid");
        let sig = secret.sign("id", 1000, b"{\"a\":1}");
        let secrets = [secret];
        assert_eq!(
            verify(
                &secrets,
                &headers("id", "1000", &sig),
                b"{\"a\":2}",
                1000,
                TOLERANCE
            ),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            verify(
                &secrets,
                &headers("id2", "1000", &sig),
                b"{\"a\":1}",
                1000,
                TOLERANCE
            ),
            Err(SignatureError::NoMatch)
        );
        assert!(matches!(
            verify(
                &secrets,
                &headers("id", "1000", &sig),
                b"{\"a\":1}",
                1301,
                TOLERANCE
            ),
            Err(SignatureError::OutsideTolerance { skew_secs: 301, .. })
        ));
        assert!(matches!(
            verify(
                &secrets,
                &headers("id", "1000", &sig),
                b"{\"a\":1}",
                699,
                TOLERANCE
            ),
            Err(SignatureError::OutsideTolerance {
                skew_secs: -301,
                ..
            })
        ));
        assert_eq!(
            verify(
                &secrets,
                &headers("id", "soon", &sig),
                b"{}",
                1000,
                TOLERANCE
            ),
            Err(SignatureError::BadTimestamp)
        );
        let missing = SignedHeaders {
            id: None,
            timestamp: Some("1"),
            signature: Some("v1,x"),
        };
        assert_eq!(
            verify(&secrets, &missing, b"{}", 1, TOLERANCE),
            Err(SignatureError::MissingHeader(HEADER_ID))
        );
    }

    #[test]
    fn secrets_must_be_whsec_base64_of_sane_length() {
        assert!(SigningSecret::parse("whsec_%%%").is_err());
        assert_eq!(
            SigningSecret::parse("whsec_AAAA").map(|_| ()),
            Err(SecretError::WrongLength(3))
        );
        assert!(SigningSecret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_ok());
    }
}

/// Hostile headers and bodies: verification never panics, accepts exactly what was signed
/// with a current secret, and refuses any single flipped bit.
#[cfg(test)]
mod proptests {
    use proptest::prelude::*;

    use super::*;

    const TOLERANCE: Duration = Duration::from_secs(300);

    fn secret_from(key: &[u8]) -> SigningSecret {
        SigningSecret::parse(&format!("whsec_{}", BASE64.encode(key))).expect("valid length")
    }

    fn key() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(any::<u8>(), MIN_KEY_BYTES..=MAX_KEY_BYTES)
    }

    /// A `webhook-id` as senders make them: printable ASCII, 1 to 256 characters.
    fn id() -> impl Strategy<Value = String> {
        "[!-~]{1,256}"
    }

    fn signed<'a>(id: &'a str, ts: &'a str, sig: &'a str) -> SignedHeaders<'a> {
        SignedHeaders {
            id: Some(id),
            timestamp: Some(ts),
            signature: Some(sig),
        }
    }

    /// Flips bit `bit` of `text`, or `None` when that makes it invalid UTF-8 (it could not be a
    /// header value then).
    fn flip(text: &str, bit: usize) -> Option<String> {
        let mut bytes = text.as_bytes().to_vec();
        let bit = bit % (bytes.len() * 8);
        bytes[bit / 8] ^= 1 << (bit % 8);
        String::from_utf8(bytes).ok()
    }

    #[test]
    fn hostile_header_corpus_is_refused_without_panicking() {
        let secret = secret_from(&[7; 32]);
        let good = secret.sign("msg", 1000, b"{}");
        let long_id = "a".repeat(MAX_ID_LEN + 1);
        let cases: Vec<(&str, &str, &str)> = vec![
            ("", "1000", &good),
            (&long_id, "1000", &good),
            ("msg\u{0}", "1000", &good),
            ("msg id", "1000", &good),
            ("m\u{e9}g", "1000", &good),
            ("msg", "", &good),
            ("msg", "-0", &good),
            ("msg", "1e3", &good),
            ("msg", "0x3e8", &good),
            ("msg", "99999999999999999999", &good),
            ("msg", "-9223372036854775808", &good),
            ("msg", "9223372036854775807", &good),
            ("msg", "\u{feff}1000", &good),
            ("msg", "1000", ""),
            ("msg", "1000", "v1,"),
            ("msg", "1000", "v1,%%%%"),
            ("msg", "1000", "v1"),
            ("msg", "1000", "v1a,AAAA"),
            ("msg", "1000", "V1,AAAA"),
            (
                "msg",
                "1000",
                "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            ),
        ];
        for now in [1000, i64::MIN, i64::MAX, 0] {
            for (id, ts, sig) in &cases {
                let outcome = verify([&secret], &signed(id, ts, sig), b"{}", now, TOLERANCE);
                assert!(outcome.is_err(), "{id:?} {ts:?} {sig:?} at {now}");
            }
        }
        // The signature of a message is no signature of another one built from the same bytes.
        let shifted = secret.sign("msg.1000", 1000, b"");
        assert!(
            verify(
                [&secret],
                &signed("msg", "1000", &shifted),
                b"",
                1000,
                TOLERANCE
            )
            .is_err()
        );
        // Timestamps at the ends of i64 and clocks at the ends of i64 cannot overflow the skew.
        let far = secret.sign("msg", i64::MIN, b"{}");
        assert!(matches!(
            verify(
                [&secret],
                &signed("msg", &i64::MIN.to_string(), &far),
                b"{}",
                i64::MAX,
                TOLERANCE
            ),
            Err(SignatureError::OutsideTolerance { .. })
        ));
        let huge = verify(
            [&secret],
            &signed("msg", "1000", &good),
            b"{}",
            1000,
            Duration::MAX,
        );
        assert_eq!(huge, Ok("msg"));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn arbitrary_headers_and_bodies_never_panic(
            id in prop::option::of(".{0,300}"),
            ts in prop::option::of(prop_oneof![".{0,30}", any::<i64>().prop_map(|t| t.to_string())]),
            sig in prop::option::of(prop_oneof![".{0,200}", "(v1,[A-Za-z0-9+/=]{0,50} ?){0,4}"]),
            body in prop::collection::vec(any::<u8>(), 0..512),
            now in any::<i64>(),
            tolerance in any::<u64>(),
            keys in prop::collection::vec(key(), 0..3),
        ) {
            let secrets: Vec<SigningSecret> = keys.iter().map(|k| secret_from(k)).collect();
            let headers = SignedHeaders { id: id.as_deref(), timestamp: ts.as_deref(), signature: sig.as_deref() };
            let _ = verify(&secrets, &headers, &body, now, Duration::from_secs(tolerance));
        }

        #[test]
        fn arbitrary_header_bytes_never_panic(
            values in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 3),
            body in prop::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut map = http::HeaderMap::new();
            for (name, value) in [HEADER_ID, HEADER_TIMESTAMP, HEADER_SIGNATURE].into_iter().zip(&values) {
                if let Ok(value) = http::HeaderValue::from_bytes(value) {
                    map.insert(name, value);
                }
            }
            let secret = secret_from(&[1; 32]);
            let _ = verify([&secret], &SignedHeaders::from_http(&map), &body, 0, TOLERANCE);
        }

        #[test]
        fn arbitrary_secret_text_parses_or_errors(text in ".{0,120}") {
            let _ = SigningSecret::parse(&text);
        }

        #[test]
        fn a_valid_signature_verifies_and_any_flipped_bit_fails(
            key in key(),
            id in id(),
            sent_at in -4_000_000_000i64..4_000_000_000,
            skew in -300i64..=300,
            body in prop::collection::vec(any::<u8>(), 0..256),
            bit in any::<usize>(),
        ) {
            let secret = secret_from(&key);
            let now = sent_at + skew;
            let ts = sent_at.to_string();
            let sig = secret.sign(&id, sent_at, &body);
            let secrets = [secret];
            prop_assert_eq!(verify(&secrets, &signed(&id, &ts, &sig), &body, now, TOLERANCE), Ok(id.as_str()));

            if !body.is_empty() {
                let mut tampered = body.clone();
                let bit = bit % (body.len() * 8);
                tampered[bit / 8] ^= 1 << (bit % 8);
                prop_assert!(verify(&secrets, &signed(&id, &ts, &sig), &tampered, now, TOLERANCE).is_err());
            }
            let mut longer = body.clone();
            longer.push(b' ');
            prop_assert!(verify(&secrets, &signed(&id, &ts, &sig), &longer, now, TOLERANCE).is_err());
            if let Some(other_id) = flip(&id, bit) {
                prop_assert!(verify(&secrets, &signed(&other_id, &ts, &sig), &body, now, TOLERANCE).is_err());
            }
            if let Some(other_ts) = flip(&ts, bit) {
                prop_assert!(verify(&secrets, &signed(&id, &other_ts, &sig), &body, now, TOLERANCE).is_err());
            }
            if let Some(other_sig) = flip(&sig, bit) {
                prop_assert!(verify(&secrets, &signed(&id, &ts, &other_sig), &body, now, TOLERANCE).is_err()
                    || other_sig.trim() == sig.trim());
            }
        }

        #[test]
        fn only_a_current_secret_verifies(
            keys in prop::collection::vec(key(), 2..5),
            id in id(),
            body in prop::collection::vec(any::<u8>(), 0..128),
            signer in any::<prop::sample::Index>(),
        ) {
            let secrets: Vec<SigningSecret> = keys.iter().map(|k| secret_from(k)).collect();
            let signer = signer.index(keys.len());
            let sig = secrets[signer].sign(&id, 1000, &body);
            let headers = signed(&id, "1000", &sig);
            prop_assert_eq!(verify(&secrets, &headers, &body, 1000, TOLERANCE), Ok(id.as_str()));
            let others: Vec<&SigningSecret> = secrets
                .iter()
                .enumerate()
                .filter(|(i, _)| keys[*i] != keys[signer])
                .map(|(_, s)| s)
                .collect();
            prop_assert_eq!(verify(others, &headers, &body, 1000, TOLERANCE), Err(SignatureError::NoMatch));
            prop_assert_eq!(verify([], &headers, &body, 1000, TOLERANCE), Err(SignatureError::NoMatch));
        }

        #[test]
        fn the_reference_implementation_agrees(
            key in key(),
            id in "[a-zA-Z0-9_]{1,64}",
            body in ".{0,200}".prop_map(String::into_bytes),
        ) {
            let text = format!("whsec_{}", BASE64.encode(&key));
            let now = chrono::Utc::now().timestamp();
            let reference = standardwebhooks::Webhook::new(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let theirs = reference.sign(&id, now, &body).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let ours = SigningSecret::parse(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&ours.sign(&id, now, &body), &theirs);
            let now_text = now.to_string();
            prop_assert_eq!(verify([&ours], &signed(&id, &now_text, &theirs), &body, now, TOLERANCE), Ok(id.as_str()));
        }
    }
}
