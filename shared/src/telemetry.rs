//! Logs and traces: `tracing` everywhere, exported over OTLP/HTTP when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set, and W3C `traceparent` carried across NATS.
//!
//! The OpenTelemetry layer is always installed, exporter or not, so every request has a trace
//! id to hand to the next hop; without an endpoint the spans are simply not shipped.

use std::io::IsTerminal;
use std::sync::OnceLock;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogFormat, TelemetryConfig};

pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";
const OTLP_ENDPOINT_VARS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("telemetry.log_level `{0}` is not a valid filter: {1}")]
    BadFilter(String, String),
    #[error("cannot build the OTLP exporter (check OTEL_EXPORTER_OTLP_ENDPOINT): {0}")]
    Exporter(String),
    #[error("a global tracing subscriber is already installed")]
    AlreadyInstalled,
}

/// Flushes and stops trace export when dropped; keep it alive for the life of the process.
#[derive(Debug)]
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Err(e) = self.provider.shutdown() {
            // Nothing else can report it: the subscriber goes away with us.
            eprintln!("mih: trace export did not shut down cleanly: {e}");
        }
    }
}

/// Installs the global subscriber for a process named `service_name` (`mih` or `mih-ingest`).
pub fn init(
    service_name: &str,
    config: &TelemetryConfig,
) -> Result<TelemetryGuard, TelemetryError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(from_env) if !from_env.trim().is_empty() => EnvFilter::try_new(&from_env)
            .map_err(|e| TelemetryError::BadFilter(from_env.clone(), e.to_string()))?,
        _ => EnvFilter::try_new(&config.log_level)
            .map_err(|e| TelemetryError::BadFilter(config.log_level.clone(), e.to_string()))?,
    };
    let provider = tracer_provider(service_name)?;
    let tracer = provider.tracer("mih");
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());

    let fmt = match config.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_target(true)
            // Colour codes only help a person at a terminal; in files and pipes they are noise.
            .with_ansi(std::io::stdout().is_terminal())
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
    };
    // Traces get our own spans at info and above, whatever the log filter says.
    let otel_filter = EnvFilter::new("info");
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(otel_filter),
        )
        .try_init()
        .map_err(|_| TelemetryError::AlreadyInstalled)?;
    Ok(TelemetryGuard { provider })
}

/// For tests and benchmarks: installs a quiet subscriber (warnings, or `RUST_LOG`) once per
/// process, with trace propagation working as in production.
pub fn init_for_tests() {
    static GUARD: OnceLock<Option<TelemetryGuard>> = OnceLock::new();
    GUARD.get_or_init(|| {
        let config = TelemetryConfig {
            log_format: LogFormat::Text,
            log_level: "warn".into(),
        };
        init("mih-test", &config).ok()
    });
}

fn tracer_provider(service_name: &str) -> Result<SdkTracerProvider, TelemetryError> {
    let resource = Resource::builder()
        .with_service_name(service_name.to_owned())
        .build();
    let builder = SdkTracerProvider::builder().with_resource(resource);
    let exporting = OTLP_ENDPOINT_VARS
        .iter()
        .any(|var| std::env::var(var).is_ok_and(|v| !v.trim().is_empty()));
    if !exporting {
        return Ok(builder.build());
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
    Ok(builder.with_batch_exporter(exporter).build())
}

struct NatsHeaders<'a>(&'a mut async_nats::HeaderMap);

impl Injector for NatsHeaders<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value.as_str());
    }
}

struct NatsHeadersRef<'a>(&'a async_nats::HeaderMap);

impl Extractor for NatsHeadersRef<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name.as_ref()).collect()
    }
}

/// Writes the current span's trace context (`traceparent`, `tracestate`) into NATS headers.
pub fn inject_current(headers: &mut async_nats::HeaderMap) {
    let context = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&context, &mut NatsHeaders(headers));
}

/// Makes `span` a child of the trace context carried by NATS headers, if any.
pub fn set_parent_from(span: &tracing::Span, headers: Option<&async_nats::HeaderMap>) {
    let Some(headers) = headers else { return };
    let context = TraceContextPropagator::new().extract(&NatsHeadersRef(headers));
    if context.span().span_context().is_valid() {
        // Fails only when no OpenTelemetry layer is installed; then there is nothing to link.
        let _ = span.set_parent(context);
    }
}

struct HttpHeadersRef<'a>(&'a http::HeaderMap);

impl Extractor for HttpHeadersRef<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Makes `span` a child of the trace context an HTTP caller sent, if any.
pub fn set_parent_from_http(span: &tracing::Span, headers: &http::HeaderMap) {
    let context = TraceContextPropagator::new().extract(&HttpHeadersRef(headers));
    if context.span().span_context().is_valid() {
        let _ = span.set_parent(context);
    }
}

/// The current span's W3C `traceparent`, for outbound requests.
pub fn current_traceparent() -> Option<String> {
    let context = tracing::Span::current().context();
    let mut carrier = std::collections::HashMap::<String, String>::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove("traceparent")
}

/// The current trace id (hex), for logs and stored outcomes.
pub fn current_trace_id() -> Option<String> {
    let context = tracing::Span::current().context();
    let span_context = context.span().span_context().clone();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_survives_a_round_trip_through_nats_headers() {
        init_for_tests();
        let outer = tracing::info_span!("outer");
        let _entered = outer.enter();
        let mut headers = async_nats::HeaderMap::new();
        inject_current(&mut headers);
        let traceparent = headers
            .get(TRACEPARENT)
            .map(|v| v.as_str().to_owned())
            .expect("traceparent injected");
        assert_eq!(traceparent.split('-').count(), 4, "{traceparent}");
        let trace_id = current_trace_id().expect("a trace id");
        assert!(traceparent.contains(&trace_id));

        // A root span: only the headers can connect it to `outer`.
        let inner = tracing::info_span!(parent: None, "consumer");
        set_parent_from(&inner, Some(&headers));
        let child_trace = inner.in_scope(current_trace_id);
        assert_eq!(child_trace.as_deref(), Some(trace_id.as_str()));
    }
}
