//! Who is sending: a source authenticated by a Standard Webhooks signature (`mih-source` names
//! it) or by a bearer token (which names it by itself).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use http::HeaderMap;

use mih_shared::names::SourceId;
use mih_shared::signature::{self, SignedHeaders};
use mih_shared::sources::{Source, SourceDirectory};

use crate::error::IngestError;

/// Header naming the source of a signed request.
pub const SOURCE_HEADER: &str = "mih-source";

#[derive(Debug)]
pub(crate) struct Authenticated {
    pub source: Arc<Source>,
    /// The `webhook-id` of a verified signature: the sender's idempotency key.
    pub webhook_id: Option<String>,
}

pub(crate) fn authenticate(
    directory: &SourceDirectory,
    headers: &HeaderMap,
    body: &[u8],
    now: DateTime<Utc>,
    tolerance: Duration,
) -> Result<Authenticated, IngestError> {
    let named_source = headers
        .get(SOURCE_HEADER)
        .map(|v| v.to_str().unwrap_or_default().trim().to_owned());
    let signed = SignedHeaders::from_http(headers);

    if signed.present() {
        let raw = named_source.ok_or(IngestError::MissingSource)?;
        let id =
            SourceId::parse(raw.clone()).map_err(|_| IngestError::UnknownSource(raw.clone()))?;
        let source = directory.get(&id).ok_or(IngestError::UnknownSource(raw))?;
        let webhook_id = signature::verify(
            source.secrets_at(now),
            &signed,
            body,
            now.timestamp(),
            tolerance,
        )?;
        let webhook_id = webhook_id.to_owned();
        return enabled(source).map(|source| Authenticated {
            source,
            webhook_id: Some(webhook_id),
        });
    }

    let token = bearer_token(headers).ok_or(IngestError::MissingCredentials)?;
    let source = directory
        .by_bearer_token(token)
        .ok_or(IngestError::BadToken)?;
    if let Some(named) = named_source.filter(|named| named != source.id.as_str()) {
        return Err(IngestError::TokenSourceMismatch(named));
    }
    enabled(source).map(|source| Authenticated {
        source,
        webhook_id: None,
    })
}

fn enabled(source: Arc<Source>) -> Result<Arc<Source>, IngestError> {
    if source.enabled {
        Ok(source)
    } else {
        Err(IngestError::SourceDisabled(source.id.to_string()))
    }
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;
    use mih_shared::signature::SigningSecret;
    use mih_shared::sources::{ActiveSecret, hash_token};

    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const TOKEN: &str = "token-for-moodle-0001";
    const TOLERANCE: Duration = Duration::from_secs(300);

    fn directory(enabled: bool) -> SourceDirectory {
        SourceDirectory::new(vec![Source {
            id: SourceId::parse("moodle").expect("id"),
            name: "Moodle".into(),
            enabled,
            signing_secrets: vec![ActiveSecret {
                secret: SigningSecret::parse(SECRET).expect("secret"),
                expires_at: None,
            }],
            bearer_token_hashes: vec![hash_token(TOKEN)],
        }])
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).expect("valid time")
    }

    fn signed(source: &str, body: &[u8], now: i64) -> HeaderMap {
        let secret = SigningSecret::parse(SECRET).expect("secret");
        let mut headers = HeaderMap::new();
        headers.insert("webhook-id", HeaderValue::from_static("msg_1"));
        headers.insert(
            "webhook-timestamp",
            HeaderValue::from_str(&now.to_string()).expect("ascii"),
        );
        headers.insert(
            "webhook-signature",
            HeaderValue::from_str(&secret.sign("msg_1", now, body)).expect("ascii"),
        );
        headers.insert(SOURCE_HEADER, HeaderValue::from_str(source).expect("ascii"));
        headers
    }

    #[test]
    fn a_signed_request_names_its_source_and_yields_its_webhook_id() {
        let auth = authenticate(
            &directory(true),
            &signed("moodle", b"{}", 100),
            b"{}",
            at(100),
            TOLERANCE,
        )
        .expect("authenticated");
        assert_eq!(auth.source.id.as_str(), "moodle");
        assert_eq!(auth.webhook_id.as_deref(), Some("msg_1"));
    }

    #[test]
    fn signature_failures_are_unauthorized() {
        let dir = directory(true);
        let tampered = authenticate(
            &dir,
            &signed("moodle", b"{}", 100),
            b"{ }",
            at(100),
            TOLERANCE,
        );
        assert!(matches!(tampered, Err(IngestError::BadSignature(_))));
        let unknown = authenticate(
            &dir,
            &signed("other", b"{}", 100),
            b"{}",
            at(100),
            TOLERANCE,
        );
        assert!(matches!(unknown, Err(IngestError::UnknownSource(_))));
        let mut unnamed = signed("moodle", b"{}", 100);
        unnamed.remove(SOURCE_HEADER);
        assert!(matches!(
            authenticate(&dir, &unnamed, b"{}", at(100), TOLERANCE),
            Err(IngestError::MissingSource)
        ));
        assert!(matches!(
            authenticate(&dir, &HeaderMap::new(), b"{}", at(100), TOLERANCE),
            Err(IngestError::MissingCredentials)
        ));
    }

    #[test]
    fn bearer_tokens_identify_their_source() {
        let dir = directory(true);
        let mut headers = HeaderMap::new();
        headers.insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {TOKEN}")).expect("ascii"),
        );
        let auth = authenticate(&dir, &headers, b"{}", at(0), TOLERANCE).expect("authenticated");
        assert_eq!(auth.source.id.as_str(), "moodle");
        assert!(auth.webhook_id.is_none());
        headers.insert(SOURCE_HEADER, HeaderValue::from_static("elsewhere"));
        assert!(matches!(
            authenticate(&dir, &headers, b"{}", at(0), TOLERANCE),
            Err(IngestError::TokenSourceMismatch(_))
        ));
        headers.insert("authorization", HeaderValue::from_static("Bearer nope"));
        assert!(matches!(
            authenticate(&dir, &headers, b"{}", at(0), TOLERANCE),
            Err(IngestError::BadToken)
        ));
    }

    #[test]
    fn disabled_sources_are_forbidden() {
        let result = authenticate(
            &directory(false),
            &signed("moodle", b"{}", 1),
            b"{}",
            at(1),
            TOLERANCE,
        );
        assert!(matches!(result, Err(IngestError::SourceDisabled(_))));
    }
}
