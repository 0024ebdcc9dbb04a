//! The EVENTS consumer: one durable pull consumer shared by every matcher replica.
//!
//! For each event: match against the current rule set (no database), claim the dedup key when
//! something matched, publish every job and wait for JetStream to store them, and only then
//! acknowledge the event. Anything that fails on the way hands the event back to JetStream
//! with a growing delay; the event is never lost and its jobs are never published twice
//! under different ids.
//!
//! Matching is CPU work whose length depends on the rules and the event. When a rule the event
//! may match loops (a comprehension, a `{{#each}}`) or the event is large, the event is matched
//! on the blocking pool through the matcher's [`Evaluators`] (at most one per core at a time),
//! each rule bounded by its budget. Other events, whose matching is a fixed number of operations
//! on a small event, are matched in place: offloading every event cost a third of the
//! throughput in `mih-bench matcher` (about 21,000 → 14,000 events/s with 10 rules).

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_nats::jetstream::{self, AckKind, consumer::pull};
use futures::StreamExt;
use metrics::{counter, histogram};
use tracing::Instrument;

use mih_rules::RuleSet;
use mih_rules::budget::{Evaluators, OffloadError};
use mih_rules::dedup::{Claim, Dedup};
use mih_rules::publish;
use mih_shared::messages::{self, Event, Origin};
use mih_shared::names::{MATCHER_CONSUMER as CONSUMER, Names};
use mih_shared::{Shutdown, telemetry};

use crate::metrics as m;

const FIRST_RETRY: Duration = Duration::from_millis(500);
const MAX_RETRY: Duration = Duration::from_secs(30);
const RESUBSCRIBE_DELAY: Duration = Duration::from_secs(1);
/// Events larger than this are matched off the async workers whatever their rules: a rule
/// without loops is linear in the event's size, and this keeps it well under a millisecond.
const INLINE_EVENT_BYTES: usize = 64 * 1024;
/// Longest an event waits for an evaluator before it is handed back to JetStream (every
/// evaluator busy that long means costly rules and a backlog: better retried later, from the
/// stream, than held past `ack_wait`).
const EVALUATOR_WAIT: Duration = Duration::from_secs(10);

pub struct Matcher {
    pub js: jetstream::Context,
    pub names: Names,
    pub rules: Arc<ArcSwap<RuleSet>>,
    pub dedup: Dedup,
    /// Where events are matched: off the async workers, one per core at a time.
    pub evaluators: Evaluators,
}

/// The consumer's declared configuration; re-applied at every start.
pub fn consumer_config(names: &Names, max_in_flight: usize, ack_wait: Duration) -> pull::Config {
    pull::Config {
        durable_name: Some(CONSUMER.into()),
        description: Some("mih matcher: events to jobs".into()),
        filter_subject: names.events_all(),
        ack_policy: jetstream::consumer::AckPolicy::Explicit,
        ack_wait,
        max_ack_pending: i64::try_from(max_in_flight).unwrap_or(i64::MAX),
        // Events accepted before the first matcher started are processed too.
        deliver_policy: jetstream::consumer::DeliverPolicy::All,
        max_deliver: -1,
        ..Default::default()
    }
}

/// How the processing of one event ended.
enum Done {
    Ack,
    /// Hand back to JetStream, to try again after the delay.
    Retry(Duration),
    /// Unusable for good: tell JetStream never to redeliver it.
    Terminate,
}

impl Matcher {
    /// Processes events until shutdown, `max_in_flight` at a time.
    pub async fn run(
        self: Arc<Self>,
        consumer: jetstream::consumer::Consumer<pull::Config>,
        max_in_flight: usize,
        shutdown: Shutdown,
    ) {
        while !shutdown.is_triggered() {
            let messages = match consumer
                .stream()
                .max_messages_per_batch(max_in_flight.min(500))
                .messages()
                .await
            {
                Ok(messages) => messages,
                Err(error) => {
                    tracing::warn!(%error, "cannot pull events yet");
                    tokio::select! {
                        () = shutdown.triggered() => return,
                        () = tokio::time::sleep(RESUBSCRIBE_DELAY) => continue,
                    }
                }
            };
            messages
                .take_until(shutdown.triggered_owned())
                .for_each_concurrent(max_in_flight, |message| {
                    let this = Arc::clone(&self);
                    async move {
                        match message {
                            Ok(message) => this.handle(message).await,
                            Err(error) => tracing::warn!(%error, "pulling events failed"),
                        }
                    }
                })
                .await;
        }
    }

    async fn handle(&self, message: jetstream::Message) {
        let started = Instant::now();
        let span = tracing::info_span!(
            "matcher.event",
            event_id = tracing::field::Empty,
            jobs = tracing::field::Empty
        );
        telemetry::set_parent_from(&span, message.headers.as_ref());
        let done = self.process(&message).instrument(span).await;
        let (kind, label) = match done {
            Done::Ack => (AckKind::Ack, None),
            Done::Retry(delay) => (AckKind::Nak(Some(delay)), Some("retry")),
            Done::Terminate => (AckKind::Term, None),
        };
        if label.is_some() {
            counter!(m::RETRIES).increment(1);
        }
        if let Err(error) = message.ack_with(kind).await {
            // Not acknowledged: JetStream redelivers after ack_wait; claims and message ids
            // make that harmless.
            tracing::warn!(%error, "could not acknowledge an event");
        }
        histogram!(m::PROCESS_SECONDS).record(started.elapsed().as_secs_f64());
    }

    async fn process(&self, message: &jetstream::Message) -> Done {
        let event: Event = match messages::decode(&message.payload) {
            Ok(event) => event,
            Err(error) => {
                counter!(m::EVENTS, "outcome" => "unreadable").increment(1);
                tracing::error!(%error, subject = %message.subject, "event is not readable; dropped");
                return Done::Terminate;
            }
        };
        tracing::Span::current().record("event_id", tracing::field::display(event.id));
        let rules = self.rules.load_full();
        let matching = if message.payload.len() > INLINE_EVENT_BYTES || rules.may_be_costly(&event)
        {
            let span = tracing::Span::current();
            self.evaluators
                .run(EVALUATOR_WAIT, move || {
                    let matches = span.in_scope(|| rules.matches(&event, Origin::Rule));
                    (event, matches)
                })
                .await
        } else {
            let matches = rules.matches(&event, Origin::Rule);
            Ok((event, matches))
        };
        let (event, matches) = match matching {
            Ok(matched) => matched,
            Err(error @ OffloadError::Busy(_)) => {
                tracing::warn!(%error, "no evaluator free; retrying the event");
                return Done::Retry(retry_delay(message));
            }
            Err(error @ OffloadError::Panicked(_)) => {
                // A bug: handed back rather than dropped, so a fixed matcher still gets it.
                tracing::error!(%error, "matching an event panicked; retrying it");
                return Done::Retry(retry_delay(message));
            }
        };
        let matches = match matches {
            Ok(matches) => matches,
            Err(reason) => {
                counter!(m::EVENTS, "outcome" => "unreadable").increment(1);
                tracing::error!(event_id = %event.id, %reason, "event cannot be matched; dropped");
                return Done::Terminate;
            }
        };
        if matches.is_empty() {
            counter!(m::EVENTS, "outcome" => "unmatched").increment(1);
            return Done::Ack;
        }
        match self.dedup.claim(&event).await {
            Ok(Claim::Claimed | Claim::Ours) => {}
            Ok(Claim::Duplicate(holder)) => {
                counter!(m::EVENTS, "outcome" => "duplicate").increment(1);
                tracing::info!(event_id = %event.id, original = %holder, dedup_key = %event.dedup_key, "duplicate event dropped");
                return Done::Ack;
            }
            Err(error) => {
                tracing::warn!(%error, event_id = %event.id, "cannot claim the dedup key; retrying");
                return Done::Retry(retry_delay(message));
            }
        }
        match publish::publish(&self.js, &self.names, &event, matches).await {
            Ok(published) => {
                tracing::Span::current().record("jobs", published.jobs);
                tracing::debug!(
                    event_id = %event.id,
                    jobs = published.jobs,
                    render_failures = published.render_failures,
                    "event matched; jobs queued"
                );
                counter!(m::EVENTS, "outcome" => "matched").increment(1);
                Done::Ack
            }
            Err(error) => {
                tracing::warn!(%error, event_id = %event.id, "jobs not stored; retrying the event");
                Done::Retry(retry_delay(message))
            }
        }
    }
}

/// 0.5 s doubling per delivery, at most 30 s.
fn retry_delay(message: &jetstream::Message) -> Duration {
    let delivered = message.info().map(|info| info.delivered).unwrap_or(1);
    let exponent = u32::try_from(delivered.clamp(1, 7) - 1).unwrap_or(0);
    (FIRST_RETRY * 2u32.pow(exponent)).min(MAX_RETRY)
}
