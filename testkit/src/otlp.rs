//! A small OTLP/HTTP trace receiver: what `mih` processes export, decoded from protobuf, so
//! tests can follow one trace across processes.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message as _;

use crate::HttpSink;

/// One span as exported, its ids in hex and its attributes as text.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectedSpan {
    /// The resource's `service.name`: which process sent it (`mih-ingest`, …).
    pub service: String,
    pub resource: BTreeMap<String, String>,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub name: String,
    /// `server`, `client`, `producer`, `consumer` or `internal`.
    pub kind: &'static str,
    pub attributes: BTreeMap<String, String>,
    /// `ok`, `error` or `unset`.
    pub status: &'static str,
}

impl CollectedSpan {
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// Receives `POST /v1/traces` (OTLP/HTTP protobuf) and answers 200.
#[derive(Debug)]
pub struct OtlpCollector {
    sink: HttpSink,
}

impl OtlpCollector {
    pub async fn start() -> anyhow::Result<Self> {
        Ok(Self {
            sink: HttpSink::start().await?,
        })
    }

    /// The base URL to give as `telemetry.otlp_endpoint` or `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn url(&self) -> String {
        self.sink.url()
    }

    /// How many export requests arrived.
    pub fn exports(&self) -> usize {
        self.sink
            .requests()
            .iter()
            .filter(|r| r.uri.path() == "/v1/traces")
            .count()
    }

    /// Every span received so far, in arrival order. A body that is not an OTLP trace export
    /// fails loudly: the exporter and this receiver disagree.
    pub fn spans(&self) -> Vec<CollectedSpan> {
        let mut spans = Vec::new();
        for request in self.sink.requests() {
            if request.uri.path() != "/v1/traces" {
                continue;
            }
            let export = ExportTraceServiceRequest::decode(request.body.as_ref())
                .unwrap_or_else(|e| panic!("an OTLP export that is not protobuf: {e}"));
            for resource_spans in export.resource_spans {
                let resource = resource_spans
                    .resource
                    .map(|r| attributes(&r.attributes))
                    .unwrap_or_default();
                let service = resource.get("service.name").cloned().unwrap_or_default();
                for scope in resource_spans.scope_spans {
                    for span in scope.spans {
                        spans.push(CollectedSpan {
                            service: service.clone(),
                            resource: resource.clone(),
                            trace_id: hex::encode(&span.trace_id),
                            span_id: hex::encode(&span.span_id),
                            parent_span_id: hex::encode(&span.parent_span_id),
                            kind: kind(span.kind),
                            attributes: attributes(&span.attributes),
                            status: match span.status.map(|s| s.code) {
                                Some(1) => "ok",
                                Some(2) => "error",
                                _ => "unset",
                            },
                            name: span.name,
                        });
                    }
                }
            }
        }
        spans
    }

    /// The spans of one trace.
    pub fn trace(&self, trace_id: &str) -> Vec<CollectedSpan> {
        self.spans()
            .into_iter()
            .filter(|s| s.trace_id == trace_id)
            .collect()
    }
}

fn kind(kind: i32) -> &'static str {
    match SpanKind::try_from(kind) {
        Ok(SpanKind::Server) => "server",
        Ok(SpanKind::Client) => "client",
        Ok(SpanKind::Producer) => "producer",
        Ok(SpanKind::Consumer) => "consumer",
        Ok(SpanKind::Internal) => "internal",
        _ => "unspecified",
    }
}

fn attributes(list: &[KeyValue]) -> BTreeMap<String, String> {
    list.iter()
        .map(|kv| {
            (
                kv.key.clone(),
                kv.value.as_ref().map(text).unwrap_or_default(),
            )
        })
        .collect()
}

fn text(value: &AnyValue) -> String {
    match &value.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}
