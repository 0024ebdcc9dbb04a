use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{InboundId, Version};
use crate::names::{ServiceSlug, SourceId};

/// A message an external service sent back towards a Moodle site, stored in `<NS>_INBOUND`
/// on `<ns>.inbound.<source>.<service>` until the site's plugin pulls it and raises it as a
/// Moodle event (`\local_mih\event\webhook_received`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboundMessage {
    pub v: Version<1>,
    /// Stable for good: the Moodle event carries it as `messageid`, so observers deduplicate.
    pub id: InboundId,
    pub service: ServiceSlug,
    /// The Moodle site the service's configuration sends its inbound messages to.
    pub source: SourceId,
    pub via: InboundVia,
    pub received_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// The body: its JSON value when it was JSON, else the text.
    pub payload: Value,
    /// The sender's own id of the message (`webhook-id`, or the AMQP `message-id`): what
    /// duplicates are recognised by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
}

/// How an inbound message arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InboundVia {
    Webhook,
    Amqp,
}

impl InboundVia {
    pub fn as_str(self) -> &'static str {
        match self {
            InboundVia::Webhook => "webhook",
            InboundVia::Amqp => "amqp",
        }
    }
}

/// A message from an AMQP response queue that could not become an [`InboundMessage`]
/// (oversized, not text, JSON that does not parse), kept on `<ns>.inbound-parked.<service>`
/// with why, instead of blocking the queue behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParkedInbound {
    pub v: Version<1>,
    pub id: InboundId,
    pub service: ServiceSlug,
    pub via: InboundVia,
    pub received_at: DateTime<Utc>,
    pub reason: String,
    /// How large the body was, in bytes.
    pub size: usize,
    /// The start of the body, lossily decoded, bounded.
    pub excerpt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
}

/// Reads a body as an inbound payload: JSON when the content type says JSON (or none is
/// given and it parses), else text. Refuses what a Moodle event cannot carry.
pub fn payload_of(content_type: Option<&str>, body: &[u8]) -> Result<Value, PayloadError> {
    let text = std::str::from_utf8(body).map_err(|e| PayloadError::NotText {
        valid_up_to: e.valid_up_to(),
    })?;
    let media = content_type
        .map(|c| {
            c.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    let json = media == "application/json" || media.ends_with("+json");
    if json {
        return serde_json::from_str(text).map_err(|e| PayloadError::NotJson(e.to_string()));
    }
    if media.is_empty()
        && let Ok(value) = serde_json::from_str::<Value>(text)
    {
        return Ok(value);
    }
    Ok(Value::String(text.to_owned()))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("the body is not UTF-8 text (invalid byte at offset {valid_up_to})")]
    NotText { valid_up_to: usize },
    #[error("the body is declared JSON but does not parse: {0}")]
    NotJson(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_become_json_or_text() {
        assert_eq!(
            payload_of(Some("application/json; charset=utf-8"), br#"{"a":1}"#),
            Ok(serde_json::json!({"a": 1}))
        );
        assert_eq!(
            payload_of(Some("application/cloudevents+json"), b"[1]"),
            Ok(serde_json::json!([1]))
        );
        assert_eq!(payload_of(None, b"[1, 2]"), Ok(serde_json::json!([1, 2])));
        assert_eq!(
            payload_of(Some("text/plain"), b"[1, 2]"),
            Ok(Value::String("[1, 2]".into()))
        );
        assert_eq!(
            payload_of(None, b"<ok/>"),
            Ok(Value::String("<ok/>".into()))
        );
        assert!(matches!(
            payload_of(Some("application/json"), b"{"),
            Err(PayloadError::NotJson(_))
        ));
        assert_eq!(
            payload_of(None, b"ab\xff"),
            Err(PayloadError::NotText { valid_up_to: 2 })
        );
    }
}
