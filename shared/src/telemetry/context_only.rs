//! Trace context without recorded spans, for a process that exports none.
//!
//! `tracing-opentelemetry` builds a full OpenTelemetry span for every `tracing` span: every
//! field turned into an attribute at the span's start, a span started and ended in the SDK at
//! its close. With no exporter all of that is thrown away, and at saturation it was a sixth of
//! the matcher's and the dispatcher's CPU. Yet the next hop still needs the context: its trace
//! id, a span id of ours to hang from, the sampled flag and `tracestate`. This layer keeps only
//! that, one [`SpanContext`] per span, decided as the SDK would decide it: a child continues
//! its parent's trace and sampling decision, a root asks the configured sampler, and a parent
//! from another process (`traceparent`) replaces the local one.

use opentelemetry::trace::{SpanContext, SpanId, SpanKind, TraceContextExt as _, TraceFlags};
use opentelemetry_sdk::trace::{
    IdGenerator as _, RandomIdGenerator, Sampler, SamplingDecision, ShouldSample as _,
};
use tracing::span;
use tracing::{Dispatch, Subscriber};
use tracing_subscriber::Registry;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::{LookupSpan, SpanData as _};

/// A span's place in its trace, in the span's extensions.
struct Place(SpanContext);

/// The layer installed instead of `tracing-opentelemetry`'s when nothing is exported.
#[derive(Debug)]
pub(super) struct ContextOnlyLayer {
    sampler: Sampler,
    ids: RandomIdGenerator,
}

impl ContextOnlyLayer {
    pub(super) fn new(sampler: Sampler) -> Self {
        Self {
            sampler,
            ids: RandomIdGenerator::default(),
        }
    }

    fn root(&self, name: &str) -> SpanContext {
        let trace_id = self.ids.new_trace_id();
        let result =
            self.sampler
                .should_sample(None, trace_id, name, &SpanKind::Internal, &[], &[]);
        let flags = match result.decision {
            SamplingDecision::RecordAndSample => TraceFlags::SAMPLED,
            SamplingDecision::RecordOnly | SamplingDecision::Drop => TraceFlags::default(),
        };
        SpanContext::new(
            trace_id,
            self.ids.new_span_id(),
            flags,
            false,
            result.trace_state,
        )
    }
}

/// Span `span_id` in the trace `parent` belongs to, with the parent's decision and state (as
/// the SDK's parent-based sampler keeps them, for local and remote parents alike).
fn continuing(parent: &SpanContext, span_id: SpanId) -> SpanContext {
    SpanContext::new(
        parent.trace_id(),
        span_id,
        parent.trace_flags(),
        false,
        parent.trace_state().clone(),
    )
}

impl<S> tracing_subscriber::Layer<S> for ContextOnlyLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        // A parent this layer does not see (filtered out) makes this a root, as in
        // `tracing-opentelemetry`; a contextual parent is the nearest one it sees.
        let parent = if let Some(parent) = attrs.parent() {
            ctx.span(parent)
        } else if attrs.is_contextual() {
            ctx.lookup_current()
        } else {
            None
        };
        let inherited = parent.and_then(|parent| {
            parent
                .extensions()
                .get::<Place>()
                .map(|place| continuing(&place.0, self.ids.new_span_id()))
        });
        let place = inherited.unwrap_or_else(|| self.root(attrs.metadata().name()));
        span.extensions_mut().insert(Place(place));
    }
}

/// The span's context if [`ContextOnlyLayer`] is installed, `None` otherwise.
pub(super) fn context(span: &tracing::Span) -> Option<opentelemetry::Context> {
    with_place(span, |place| {
        opentelemetry::Context::new().with_remote_span_context(place.0.clone())
    })
}

/// Makes `span` continue `remote` (a caller's or a publisher's context); false when this layer
/// is not installed.
pub(super) fn set_parent(span: &tracing::Span, remote: &SpanContext) -> bool {
    with_place(span, |place| {
        place.0 = continuing(remote, place.0.span_id())
    })
    .is_some()
}

fn with_place<T>(span: &tracing::Span, f: impl FnOnce(&mut Place) -> T) -> Option<T> {
    span.with_subscriber(|(id, dispatch)| place_in(dispatch, id, f))
        .flatten()
}

fn place_in<T>(dispatch: &Dispatch, id: &span::Id, f: impl FnOnce(&mut Place) -> T) -> Option<T> {
    let registry = dispatch.downcast_ref::<Registry>()?;
    let data = registry.span_data(id)?;
    let mut extensions = data.extensions_mut();
    extensions.get_mut::<Place>().map(f)
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{TraceId, TraceState};
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::{EnvFilter, Layer as _};

    use super::*;
    use crate::telemetry::{
        current_trace_id, current_traceparent, inject_current, set_parent_from,
    };

    /// As `init` installs it: beside a log layer that may see more spans than traces do.
    fn with_layer<T>(ratio: f64, f: impl FnOnce() -> T) -> T {
        let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio)));
        let logs = tracing_subscriber::fmt::layer()
            .with_writer(std::io::sink)
            .with_filter(EnvFilter::new("debug"));
        let subscriber = tracing_subscriber::registry()
            .with(logs)
            .with(ContextOnlyLayer::new(sampler).with_filter(EnvFilter::new("info")));
        tracing::subscriber::with_default(subscriber, f)
    }

    fn parts(traceparent: &str) -> (String, String, String) {
        let parts: Vec<&str> = traceparent.split('-').collect();
        assert_eq!(parts.len(), 4, "{traceparent}");
        (parts[1].into(), parts[2].into(), parts[3].into())
    }

    fn traceparent_in(span: &tracing::Span) -> String {
        span.in_scope(current_traceparent).expect("a traceparent")
    }

    #[test]
    fn children_continue_their_parents_trace_with_spans_of_their_own() {
        with_layer(1.0, || {
            let root = tracing::info_span!("root");
            let child = root.in_scope(|| tracing::info_span!("child"));
            let (root_trace, root_span, root_flags) = parts(&traceparent_in(&root));
            let (child_trace, child_span, child_flags) = parts(&traceparent_in(&child));
            assert_eq!(child_trace, root_trace);
            assert_ne!(child_span, root_span);
            assert_ne!(root_trace, TraceId::INVALID.to_string());
            assert_ne!(root_span, SpanId::INVALID.to_string());
            assert_eq!((root_flags.as_str(), child_flags.as_str()), ("01", "01"));
            assert_eq!(
                root.in_scope(current_trace_id).as_deref(),
                Some(root_trace.as_str())
            );

            let other = tracing::info_span!(parent: None, "another root");
            assert_ne!(parts(&traceparent_in(&other)).0, root_trace);
            // An explicit parent wins over the span we are in.
            let explicit = other.in_scope(|| tracing::info_span!(parent: &root, "explicit"));
            assert_eq!(parts(&traceparent_in(&explicit)).0, root_trace);
        });
    }

    #[test]
    fn a_span_the_filter_hides_passes_its_parents_trace_through() {
        with_layer(1.0, || {
            let root = tracing::info_span!("root");
            let child = root.in_scope(|| {
                let hidden = tracing::debug_span!("hidden");
                assert!(!hidden.is_disabled(), "the log layer sees it");
                assert!(context(&hidden).is_none(), "traces do not");
                hidden.in_scope(|| tracing::info_span!("child"))
            });
            assert_eq!(
                parts(&traceparent_in(&child)).0,
                parts(&traceparent_in(&root)).0
            );
        });
    }

    #[test]
    fn a_ratio_of_zero_leaves_new_traces_unsampled_but_still_passed_on() {
        with_layer(0.0, || {
            let root = tracing::info_span!("root");
            let (trace, span, flags) = parts(&traceparent_in(&root));
            assert_ne!(trace, TraceId::INVALID.to_string());
            assert_ne!(span, SpanId::INVALID.to_string());
            assert_eq!(flags, "00");
        });
    }

    #[test]
    fn a_remote_parent_gives_its_trace_decision_and_state_to_the_span_and_its_children() {
        for (flags, ratio) in [("01", 0.0), ("00", 1.0)] {
            with_layer(ratio, || {
                let remote_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(
                    "traceparent",
                    format!("00-{remote_trace}-00f067aa0ba902b7-{flags}").as_str(),
                );
                headers.insert("tracestate", "vendor=value");
                let consumer = tracing::info_span!(parent: None, "process");
                set_parent_from(&consumer, Some(&headers));
                let child = consumer.in_scope(|| tracing::info_span!("publish"));

                for span in [&consumer, &child] {
                    let (trace, parent_span, sampled) = parts(&traceparent_in(span));
                    assert_eq!(trace, remote_trace);
                    assert_ne!(parent_span, "00f067aa0ba902b7", "a span id of our own");
                    assert_eq!(sampled, flags, "the caller's decision is kept");
                    let mut out = async_nats::HeaderMap::new();
                    span.in_scope(|| inject_current(&mut out));
                    assert_eq!(
                        out.get("tracestate").map(|v| v.as_str()),
                        Some("vendor=value")
                    );
                }
            });
        }
    }

    #[test]
    fn nothing_is_found_without_the_layer() {
        let subscriber = tracing_subscriber::registry();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("root");
            assert!(context(&span).is_none());
            let remote = SpanContext::new(
                TraceId::from(1),
                SpanId::from(1),
                TraceFlags::SAMPLED,
                true,
                TraceState::default(),
            );
            assert!(!set_parent(&span, &remote));
        });
    }
}
