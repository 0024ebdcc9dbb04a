//! Logs and traces: `tracing` everywhere, exported over OTLP/HTTP to `telemetry.otlp_endpoint`
//! (or `OTEL_EXPORTER_OTLP_ENDPOINT`), and W3C `traceparent` carried across NATS, HTTP and AMQP.
//!
//! Every request has a trace id to hand to the next hop, exporter or not. With an exporter,
//! `tracing-opentelemetry` records each span; without one, [`context_only`] keeps only each
//! span's trace context, which is all the next hop needs.
//!
//! Spans follow the OpenTelemetry semantic conventions so that a tracing backend draws them
//! as what they are: `POST /v1/events` (server), `publish <subject>` (producer),
//! `process <subject>` (consumer), `POST` (HTTP client) and `publish <exchange>` (AMQP
//! producer). Their names are set through `otel.name`, their kinds through `otel.kind`.

use std::io::IsTerminal;
use std::sync::OnceLock;

use opentelemetry::KeyValue;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogFormat, TelemetryConfig};

mod context_only;

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
    #[error(
        "cannot build the OTLP exporter (check telemetry.otlp_endpoint or OTEL_EXPORTER_OTLP_ENDPOINT): {0}"
    )]
    Exporter(String),
    #[error("a global tracing subscriber is already installed")]
    AlreadyInstalled,
}

/// Flushes and stops trace export when dropped; keep it alive for the life of the process.
#[derive(Debug)]
pub struct TelemetryGuard {
    exporting: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        let Some(provider) = &self.exporting else {
            return;
        };
        // Spans still queued in the batch processor are sent now: the last seconds before a
        // SIGTERM (a drain, a slow delivery) are often the ones someone wants to see.
        if let Err(e) = provider.shutdown() {
            // Nothing else can report it: the subscriber goes away with us.
            eprintln!("mih: trace export did not shut down cleanly: {e}");
        }
    }
}

/// Installs the global subscriber for a process named `service_name` (`mih` or `mih-ingest`)
/// of the hub in `namespace` (the resource's `service.namespace`).
pub fn init(
    service_name: &str,
    namespace: &str,
    config: &TelemetryConfig,
) -> Result<TelemetryGuard, TelemetryError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(from_env) if !from_env.trim().is_empty() => EnvFilter::try_new(&from_env)
            .map_err(|e| TelemetryError::BadFilter(from_env.clone(), e.to_string()))?,
        _ => EnvFilter::try_new(&config.log_level)
            .map_err(|e| TelemetryError::BadFilter(config.log_level.clone(), e.to_string()))?,
    };
    let exporting = exporting_provider(service_name, namespace, config)?;
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
    let traces = match &exporting {
        None => context_only::ContextOnlyLayer::new(sampler(config))
            .with_filter(otel_filter)
            .boxed(),
        Some(provider) => tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("mih"))
            // What follows is paid on every span, or on every poll of an instrumented
            // future, and was a fifth of the matcher's CPU at saturation: the source
            // location, thread name (a `String` per span) and target add nothing to our
            // named, attributed spans; busy/idle timing reads the clock on every poll; and
            // activating the OpenTelemetry context on every poll serves instrumentation
            // reading `Context::current()`, of which mih has none (it propagates through
            // the span, `inject_current`).
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_tracked_inactivity(false)
            .with_context_activation(false)
            .with_filter(otel_filter)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(traces)
        .try_init()
        .map_err(|_| TelemetryError::AlreadyInstalled)?;
    Ok(TelemetryGuard { exporting })
}

/// For tests and benchmarks: installs a quiet subscriber (warnings, or `RUST_LOG`) once per
/// process, with trace propagation working as in production.
pub fn init_for_tests() {
    static GUARD: OnceLock<Option<TelemetryGuard>> = OnceLock::new();
    GUARD.get_or_init(|| init("mih-test", "test", &TelemetryConfig::for_tests()).ok());
}

/// Parent-based: a trace the caller (Moodle, a facade client) started and sampled is recorded
/// whole whatever the ratio; only traces mih starts are thinned out.
fn sampler(config: &TelemetryConfig) -> Sampler {
    Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
        config.trace_sample_ratio.clamp(0.0, 1.0),
    )))
}

/// The provider that records and exports spans, or `None` when no endpoint is configured.
fn exporting_provider(
    service_name: &str,
    namespace: &str,
    config: &TelemetryConfig,
) -> Result<Option<SdkTracerProvider>, TelemetryError> {
    let resource = Resource::builder()
        .with_service_name(service_name.to_owned())
        .with_attributes([
            KeyValue::new("service.namespace", namespace.to_owned()),
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
        ])
        .build();
    let builder = SdkTracerProvider::builder()
        .with_resource(resource)
        .with_sampler(sampler(config));
    let exporter = match config.otlp_endpoint() {
        Some(endpoint) => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/'))),
        None if OTLP_ENDPOINT_VARS
            .iter()
            .any(|var| std::env::var(var).is_ok_and(|v| !v.trim().is_empty())) =>
        {
            opentelemetry_otlp::SpanExporter::builder().with_http()
        }
        None => return Ok(None),
    };
    let exporter = exporter
        .build()
        .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
    Ok(Some(builder.with_batch_exporter(exporter).build()))
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

/// The trace context of `span`, from whichever layer keeps it.
fn context_of(span: &tracing::Span) -> opentelemetry::Context {
    context_only::context(span).unwrap_or_else(|| span.context())
}

/// Makes `span` a child of `remote`, a context from another process.
fn set_remote_parent(span: &tracing::Span, remote: opentelemetry::Context) {
    let handled = {
        let remote_span = remote.span();
        let span_context = remote_span.span_context();
        // An invalid context (no or a malformed `traceparent`) leaves the span a root.
        !span_context.is_valid() || context_only::set_parent(span, span_context)
    };
    if handled {
        return;
    }
    // Fails only when no OpenTelemetry layer is installed; then there is nothing to link.
    let _ = span.set_parent(remote);
}

/// Writes the current span's trace context (`traceparent`, `tracestate`) into NATS headers.
pub fn inject_current(headers: &mut async_nats::HeaderMap) {
    let context = context_of(&tracing::Span::current());
    TraceContextPropagator::new().inject_context(&context, &mut NatsHeaders(headers));
}

/// Makes `span` a child of the trace context carried by NATS headers, if any.
pub fn set_parent_from(span: &tracing::Span, headers: Option<&async_nats::HeaderMap>) {
    let Some(headers) = headers else { return };
    set_remote_parent(
        span,
        TraceContextPropagator::new().extract(&NatsHeadersRef(headers)),
    );
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
    set_remote_parent(
        span,
        TraceContextPropagator::new().extract(&HttpHeadersRef(headers)),
    );
}

/// An HTTP server span, `{method} {route}` (OTel HTTP semantic conventions), a child of the
/// trace the caller sent in `traceparent`, if any; more fields may follow the three
/// arguments. [`record_response`](crate::telemetry::record_response) completes it.
#[macro_export]
macro_rules! server_span {
    ($method:expr, $route:expr, $headers:expr $(, $($fields:tt)*)?) => {{
        let method: &::http::Method = $method;
        let route: Option<&str> = $route;
        let span = ::tracing::info_span!(
            "http.server",
            otel.name = %$crate::telemetry::server_span_name(method, route),
            otel.kind = "server",
            http.request.method = %method,
            http.route = route,
            http.response.status_code = ::tracing::field::Empty,
            otel.status_code = ::tracing::field::Empty,
            $($($fields)*)?
        );
        $crate::telemetry::set_parent_from_http(&span, $headers);
        span
    }};
}

/// A JetStream consumer's span for one message, `process <subject>` (OTel messaging semantic
/// conventions), a child of the publisher's span through the message's `traceparent`; more
/// fields may follow the two arguments.
#[macro_export]
macro_rules! process_span {
    ($message:expr, $consumer:expr $(, $($fields:tt)*)?) => {{
        let message: &::async_nats::jetstream::Message = $message;
        let span = ::tracing::info_span!(
            "nats.process",
            otel.name = %::std::format_args!("process {}", message.subject),
            otel.kind = "consumer",
            messaging.system = "nats",
            messaging.operation.type = "process",
            messaging.operation.name = "process",
            messaging.destination.name = %message.subject,
            messaging.consumer.group.name = $consumer,
            messaging.message.id = $crate::telemetry::message_id(message.headers.as_ref()),
            messaging.message.body.size = message.payload.len(),
            $($($fields)*)?
        );
        $crate::telemetry::set_parent_from(&span, message.headers.as_ref());
        span
    }};
}

/// `{method} {route}`, or the method alone where no route is known (a 404): raw paths would
/// give every id its own span name.
pub fn server_span_name(method: &http::Method, route: Option<&str>) -> String {
    match route {
        Some(route) => format!("{method} {route}"),
        None => method.to_string(),
    }
}

/// Records a server span's answer; a 5xx marks the span as failed (a 4xx is the client's).
pub fn record_response(span: &tracing::Span, status: http::StatusCode) {
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "error");
    }
}

/// Axum middleware, installed with `route_layer` so that the matched route names the span:
/// one [`server_span!`](crate::server_span) per request.
pub async fn http_server_middleware(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use tracing::Instrument as _;
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|path| path.as_str().to_owned());
    let span = crate::server_span!(request.method(), route.as_deref(), request.headers());
    let response = next.run(request).instrument(span.clone()).await;
    record_response(&span, response.status());
    response
}

/// A producer span for messages published to JetStream: `publish <subject>`. Headers injected
/// inside it make the consumers' spans its children.
pub fn publish_span(subject: &str, messages: usize) -> tracing::Span {
    tracing::info_span!(
        "nats.publish",
        otel.name = %format_args!("publish {subject}"),
        otel.kind = "producer",
        messaging.system = "nats",
        messaging.operation.type = "send",
        messaging.operation.name = "publish",
        messaging.destination.name = subject,
        messaging.batch.message_count = messages,
    )
}

/// The message id (`Nats-Msg-Id`) of a JetStream message, for `messaging.message.id`.
pub fn message_id(headers: Option<&async_nats::HeaderMap>) -> Option<&str> {
    headers
        .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
        .map(|v| v.as_str())
}

/// Adds an attribute to `span`'s trace only (not to its log lines), for values that vary by
/// span kind and so cannot be declared fields.
pub fn set_attribute(span: &tracing::Span, key: &'static str, value: &str) {
    span.set_attribute(key, value.to_owned());
}

/// The current span's W3C `traceparent`, for outbound requests.
pub fn current_traceparent() -> Option<String> {
    let context = context_of(&tracing::Span::current());
    let mut carrier = std::collections::HashMap::<String, String>::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove("traceparent")
}

/// The current trace id (hex), for logs and stored outcomes.
pub fn current_trace_id() -> Option<String> {
    let context = context_of(&tracing::Span::current());
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
