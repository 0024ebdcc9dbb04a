//! What one message from a response queue becomes: an [`InboundMessage`] to store, or a
//! [`ParkedInbound`] saying why it cannot be (too large, not text, JSON that does not parse).

use chrono::Utc;
use lapin::BasicProperties;
use lapin::types::AMQPValue;
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

use mih_shared::messages::{
    self, InboundId, InboundMessage, InboundVia, ParkedInbound, Version, payload_of,
};
use mih_shared::names::{ServiceSlug, SourceId};

use crate::transport::cut;

/// Most bytes of a parked message's body kept with it.
pub(crate) const PARKED_EXCERPT: usize = 1024;

/// Characters of a message id that cannot go into a NATS header as they are. An id of
/// printable ASCII (what ingest accepts as a `webhook-id`) is used unchanged.
const NOT_IN_HEADER: &AsciiSet = &CONTROLS.add(b' ');

/// Who the replies of one service are for, and how large they may be.
#[derive(Debug, Clone)]
pub(crate) struct ReplyRoute {
    pub service: ServiceSlug,
    pub source: SourceId,
    pub max_bytes: usize,
}

/// A message read from a response queue, ready to publish.
#[derive(Debug)]
pub(crate) enum Reply {
    Store(InboundMessage),
    Park(ParkedInbound),
}

impl Reply {
    /// Reads one message: its body as the payload, its `content-type` and `message-id`
    /// properties as the content type and the external id.
    pub(crate) fn read(route: &ReplyRoute, properties: &BasicProperties, body: &[u8]) -> Reply {
        let external_id = properties
            .message_id()
            .as_ref()
            .map(ToString::to_string)
            .filter(|id| !id.is_empty());
        let content_type = properties
            .content_type()
            .as_ref()
            .map(ToString::to_string)
            .filter(|c| !c.is_empty());
        if body.len() > route.max_bytes {
            return Reply::park(
                route,
                format!(
                    "the body ({} bytes) is larger than dispatcher.reply_max_bytes ({})",
                    body.len(),
                    route.max_bytes
                ),
                body,
                external_id,
            );
        }
        match payload_of(content_type.as_deref(), body) {
            Ok(payload) => Reply::Store(InboundMessage {
                v: Version,
                id: InboundId::new_v7(),
                service: route.service.clone(),
                source: route.source.clone(),
                via: InboundVia::Amqp,
                received_at: Utc::now(),
                content_type,
                payload,
                external_id,
            }),
            Err(error) => Reply::park(route, error.to_string(), body, external_id),
        }
    }

    pub(crate) fn park(
        route: &ReplyRoute,
        reason: String,
        body: &[u8],
        external_id: Option<String>,
    ) -> Reply {
        Reply::Park(ParkedInbound {
            v: Version,
            id: InboundId::new_v7(),
            service: route.service.clone(),
            via: InboundVia::Amqp,
            received_at: Utc::now(),
            reason,
            size: body.len(),
            excerpt: lossy_excerpt(body, PARKED_EXCERPT),
            external_id,
        })
    }

    pub(crate) fn id(&self) -> InboundId {
        match self {
            Reply::Store(message) => message.id,
            Reply::Park(parked) => parked.id,
        }
    }

    pub(crate) fn external_id(&self) -> Option<&str> {
        match self {
            Reply::Store(message) => message.external_id.as_deref(),
            Reply::Park(parked) => parked.external_id.as_deref(),
        }
    }

    pub(crate) fn encode(&self) -> Result<bytes::Bytes, serde_json::Error> {
        match self {
            Reply::Store(message) => messages::encode(message),
            Reply::Park(parked) => messages::encode(parked),
        }
    }

    /// `Nats-Msg-Id`: `{service}:{message-id}` as ingest does for a `webhook-id`, so a
    /// redelivered reply is stored once within `streams.inbound_duplicate_window`. A parked
    /// message gets its own id space: a corrected message re-sent with the same id must not
    /// count as a duplicate of the parked one.
    pub(crate) fn msg_id(&self, service: &ServiceSlug) -> Option<String> {
        let id = utf8_percent_encode(self.external_id()?, NOT_IN_HEADER);
        Some(match self {
            Reply::Store(_) => format!("{service}:{id}"),
            Reply::Park(_) => format!("{service}:parked:{id}"),
        })
    }
}

/// The start of `body` as text, invalid bytes shown as U+FFFD, at most `limit` bytes.
fn lossy_excerpt(body: &[u8], limit: usize) -> String {
    let head = &body[..body.len().min(limit)];
    let mut text = String::with_capacity(head.len());
    for chunk in head.utf8_chunks() {
        text.push_str(chunk.valid());
        if !chunk.invalid().is_empty() {
            text.push(char::REPLACEMENT_CHARACTER);
        }
    }
    // A replacement character is 3 bytes, more than the byte it stands for.
    cut(&text, limit).to_owned()
}

/// A W3C trace context carried in the AMQP headers (the dispatcher sends `traceparent` with
/// every delivery; a service that echoes it back links its reply to the delivery's trace).
pub(crate) fn trace_headers(properties: &BasicProperties) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    let Some(headers) = properties.headers().as_ref() else {
        return map;
    };
    for name in ["traceparent", "tracestate"] {
        let text = match headers.inner().get(name) {
            Some(AMQPValue::LongString(text)) => String::from_utf8_lossy(text.as_bytes()).into(),
            Some(AMQPValue::ShortString(text)) => text.to_string(),
            _ => continue,
        };
        if let Ok(value) = http::HeaderValue::from_str(&text) {
            map.insert(name, value);
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::{FieldTable, LongString};
    use serde_json::json;

    fn route(max_bytes: usize) -> ReplyRoute {
        ReplyRoute {
            service: "crm".parse().expect("slug"),
            source: "campus".parse().expect("source"),
            max_bytes,
        }
    }

    fn properties(content_type: Option<&str>, message_id: Option<&str>) -> BasicProperties {
        let mut properties = BasicProperties::default();
        if let Some(content_type) = content_type {
            properties = properties.with_content_type(content_type.into());
        }
        if let Some(id) = message_id {
            properties = properties.with_message_id(id.into());
        }
        properties
    }

    #[test]
    fn a_json_reply_is_stored_with_its_properties() {
        let reply = Reply::read(
            &route(1024),
            &properties(Some("application/json"), Some("m-1")),
            br#"{"grade": 17}"#,
        );
        let Reply::Store(message) = &reply else {
            panic!("not stored: {reply:?}");
        };
        assert_eq!(message.payload, json!({"grade": 17}));
        assert_eq!(message.via, InboundVia::Amqp);
        assert_eq!(message.source.as_str(), "campus");
        assert_eq!(message.service.as_str(), "crm");
        assert_eq!(message.content_type.as_deref(), Some("application/json"));
        assert_eq!(message.external_id.as_deref(), Some("m-1"));
        assert_eq!(reply.msg_id(&message.service).as_deref(), Some("crm:m-1"));
    }

    #[test]
    fn text_without_a_message_id_is_stored_without_a_msg_id() {
        let reply = Reply::read(&route(1024), &properties(None, None), b"done <ok/>");
        let Reply::Store(message) = &reply else {
            panic!("not stored: {reply:?}");
        };
        assert_eq!(message.payload, json!("done <ok/>"));
        assert_eq!(message.content_type, None);
        assert_eq!(reply.msg_id(&message.service), None);
    }

    #[test]
    fn unreadable_and_oversized_bodies_are_parked_with_why() {
        let route = route(16);
        let cases: [(&[u8], Option<&str>, &str); 3] = [
            (b"ab\xffcd", None, "not UTF-8"),
            (b"{\"broken\": ", Some("application/json"), "does not parse"),
            (
                &[b'x'; 17],
                None,
                "larger than dispatcher.reply_max_bytes (16)",
            ),
        ];
        for (body, content_type, reason) in cases {
            let reply = Reply::read(&route, &properties(content_type, Some("p-1")), body);
            let Reply::Park(parked) = &reply else {
                panic!("not parked: {reply:?}");
            };
            assert!(
                parked.reason.contains(reason),
                "{reason}: {}",
                parked.reason
            );
            assert_eq!(parked.size, body.len());
            assert_eq!(parked.external_id.as_deref(), Some("p-1"));
            assert_eq!(
                reply.msg_id(&parked.service).as_deref(),
                Some("crm:parked:p-1")
            );
        }
    }

    #[test]
    fn the_excerpt_of_a_parked_message_is_bounded() {
        // Every byte invalid: lossy decoding makes 3 bytes of each.
        let body = vec![0xff_u8; 4096];
        let Reply::Park(parked) = Reply::read(&route(100_000), &properties(None, None), &body)
        else {
            panic!("not parked");
        };
        assert!(
            parked.excerpt.len() <= PARKED_EXCERPT,
            "{}",
            parked.excerpt.len()
        );
        assert!(!parked.excerpt.is_empty());
        assert_eq!(parked.size, 4096);
    }

    #[test]
    fn message_ids_are_made_header_safe() {
        let reply = Reply::read(&route(1024), &properties(None, Some("a b\r\nc")), b"text");
        assert_eq!(
            reply.msg_id(&"crm".parse().expect("slug")).as_deref(),
            Some("crm:a%20b%0D%0Ac")
        );
    }

    #[test]
    fn the_trace_context_is_read_from_the_headers() {
        let mut table = FieldTable::default();
        table.insert(
            "traceparent".into(),
            AMQPValue::LongString(LongString::from(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                    .as_bytes()
                    .to_vec(),
            )),
        );
        let headers = trace_headers(&BasicProperties::default().with_headers(table));
        assert_eq!(
            headers.get("traceparent").map(|v| v.as_bytes()),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".as_bytes())
        );
    }
}
