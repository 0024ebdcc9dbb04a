//! Headers of a request signed the Standard Webhooks way, as a Moodle shim would send it.

use mih_shared::signature::{HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, SigningSecret};

/// The secret the test hubs give their `moodle` source.
pub const TEST_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// Another valid secret that no source has.
pub const OTHER_SECRET: &str = "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
/// The bearer token the test hubs give their `moodle` source.
pub const TEST_TOKEN: &str = "test-token-for-moodle-000";

/// `(name, value)` pairs: `webhook-id`, `webhook-timestamp`, `webhook-signature`, `mih-source`.
pub fn signed_headers(
    secret: &str,
    source: &str,
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> Vec<(String, String)> {
    let secret =
        SigningSecret::parse(secret).unwrap_or_else(|e| panic!("test secret is invalid: {e}"));
    vec![
        (HEADER_ID.into(), id.into()),
        (HEADER_TIMESTAMP.into(), timestamp.to_string()),
        (HEADER_SIGNATURE.into(), secret.sign(id, timestamp, body)),
        ("mih-source".into(), source.into()),
    ]
}

/// Signed headers for now, with a fresh `webhook-id`.
pub fn signed_now(secret: &str, source: &str, body: &[u8]) -> Vec<(String, String)> {
    let id = format!("msg_{}", uuid::Uuid::new_v4().simple());
    signed_headers(secret, source, &id, chrono::Utc::now().timestamp(), body)
}
