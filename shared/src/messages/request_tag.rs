//! Reading a [`Request`] by its `transport` tag without buffering it first.
//!
//! serde's derived reader for an internally tagged enum cannot know where the tag is, so it
//! copies the whole object (the rendered body included) into an intermediate tree and reads
//! the variant from that: 5.5 % of the dispatcher's samples at saturation, of which the
//! body's unescaping stays and the copy (~1.4 %) goes (BENCHMARKS.md). Every writer of
//! mih's messages puts the tag first (serde's own order for such an enum), so when it comes
//! first the rest of the object is read straight into the variant. An object whose tag comes
//! later (a `jsonb` column sorts keys by length) is read through a JSON value as before.

use serde::de::value::MapAccessDeserializer;
use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::{Map, Value};

use super::{AmqpRequest, HttpRequest, Request, SoapRequest};

const TAG: &str = "transport";

#[derive(Debug, Clone, Copy, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
enum Transport {
    Http,
    Amqp,
    Soap,
}

impl<'de> Deserialize<'de> for Request {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(RequestVisitor)
    }
}

struct RequestVisitor;

impl<'de> Visitor<'de> for RequestVisitor {
    type Value = Request;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a request object with its `transport`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Request, A::Error> {
        let Some(first) = map.next_key::<String>()? else {
            return Err(de::Error::missing_field(TAG));
        };
        if first == TAG {
            let transport = map.next_value::<Transport>()?;
            return variant(transport, MapAccessDeserializer::new(map));
        }
        let mut fields = Map::new();
        fields.insert(first, map.next_value()?);
        while let Some((key, value)) = map.next_entry::<String, Value>()? {
            fields.insert(key, value);
        }
        let transport = fields
            .remove(TAG)
            .ok_or_else(|| de::Error::missing_field(TAG))?;
        let transport = Transport::deserialize(transport).map_err(de::Error::custom)?;
        variant(transport, Value::Object(fields)).map_err(de::Error::custom)
    }
}

fn variant<'de, D: Deserializer<'de>>(
    transport: Transport,
    fields: D,
) -> Result<Request, D::Error> {
    Ok(match transport {
        Transport::Http => Request::Http(HttpRequest::deserialize(fields)?),
        Transport::Amqp => Request::Amqp(AmqpRequest::deserialize(fields)?),
        Transport::Soap => Request::Soap(SoapRequest::deserialize(fields)?),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::messages::{Header, HttpMethod};

    fn http() -> Request {
        Request::Http(HttpRequest {
            method: HttpMethod::Post,
            path: "/users".into(),
            query: vec![("a".into(), "1".into())],
            headers: vec![Header {
                name: "X-Trace".into(),
                value: "\"quoted\" \\ \u{e9}".into(),
            }],
            body: Some("{\"name\":\"Zo\u{eb}\",\"n\":1}".into()),
            content_type: Some("application/json".into()),
        })
    }

    #[test]
    fn a_request_reads_back_as_written_whatever_its_transport() {
        let requests = [
            http(),
            Request::Amqp(AmqpRequest {
                exchange: None,
                routing_key: "grades".into(),
                headers: Vec::new(),
                body: "<x/>".into(),
                content_type: "application/xml".into(),
            }),
            Request::Soap(SoapRequest {
                operation: "Enrol".into(),
                headers: Vec::new(),
                body: "<Enrol/>".into(),
            }),
        ];
        for request in requests {
            let written = serde_json::to_string(&request).expect("encode");
            assert!(written.starts_with("{\"transport\":"), "{written}");
            let read: Request = serde_json::from_str(&written).expect("decode");
            assert_eq!(read, request);
        }
    }

    #[test]
    fn a_tag_that_comes_later_is_found_as_from_a_jsonb_column() {
        let sorted = json!({
            "path": "/users",
            "body": "{\"name\":\"Zo\u{eb}\",\"n\":1}",
            "query": [["a", "1"]],
            "method": "POST",
            "headers": [{"name": "X-Trace", "value": "\"quoted\" \\ \u{e9}"}],
            "transport": "http",
            "content_type": "application/json",
        });
        let read: Request = serde_json::from_value(sorted.clone()).expect("from a value");
        assert_eq!(read, http());
        let read: Request = serde_json::from_str(&sorted.to_string()).expect("from text");
        assert_eq!(read, http());
    }

    #[test]
    fn a_missing_or_unknown_transport_or_a_bad_field_is_named() {
        let error = |text: &str| {
            serde_json::from_str::<Request>(text)
                .expect_err("refused")
                .to_string()
        };
        assert!(error("{}").contains("missing field `transport`"));
        assert!(error(r#"{"path":"/x"}"#).contains("missing field `transport`"));
        let unknown = error(r#"{"transport":"ftp","path":"/x"}"#);
        assert!(unknown.contains("unknown variant `ftp`"), "{unknown}");
        let later = error(r#"{"path":"/x","transport":"ftp"}"#);
        assert!(later.contains("unknown variant `ftp`"), "{later}");
        let field = error(r#"{"transport":"http","path":"/x"}"#);
        assert!(field.contains("missing field `method`"), "{field}");
        assert!(error(r#"[1]"#).contains("a request object"));
    }
}
