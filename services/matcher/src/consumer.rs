//! The EVENTS consumer: in each partition, one durable pull consumer shared by every matcher
//! replica.
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
use async_nats::jetstream::{self, consumer::pull};
use metrics::{counter, histogram};
use tracing::Instrument;

use mih_rules::Match;
use mih_rules::RuleSet;
use mih_rules::budget::{Evaluators, OffloadError};
use mih_rules::dedup::{Claim, Dedup};
use mih_rules::publish;
use mih_shared::Shutdown;
use mih_shared::consumer::{DeadLetters, Handler, Settings, Settled};
use mih_shared::error::Disposition;
use mih_shared::messages::{self, Event, Origin};
use mih_shared::names::{MATCHER_CONSUMER as CONSUMER, Names};
use mih_shared::partition::Partitions;

use crate::metrics as m;
use crate::order_gate::{OrderGate, PROCEED_AFTER};

/// Every failure of the matcher's own (a busy evaluator, the dedup bucket or JOBS away) is
/// retried after the consumer loop's growing delay; the event is never lost.
const RETRY: Disposition = Disposition::Retry { after: None };
/// Events larger than this are matched off the async workers whatever their rules: a rule
/// without loops is linear in the event's size, and this keeps it well under a millisecond.
const INLINE_EVENT_BYTES: usize = 64 * 1024;
/// Longest an event waits for an evaluator before it is handed back to JetStream (every
/// evaluator busy that long means costly rules and a backlog: better retried later, from the
/// stream, than held past `ack_wait`).
const EVALUATOR_WAIT: Duration = Duration::from_secs(10);

pub(crate) struct Matcher {
    pub js: jetstream::Context,
    pub names: Names,
    /// Where each job goes: the partitions of JOBS.
    pub partitions: Partitions,
    pub rules: Arc<ArcSwap<RuleSet>>,
    pub dedup: Dedup,
    /// Where events are matched: off the async workers, one per core at a time.
    pub evaluators: Evaluators,
    /// `nats.ack_linger`.
    pub ack_linger: Duration,
}

/// The consumer's declared configuration; re-applied at every start.
///
/// It has no filter subject: it is made on one partition's stream and takes all of it. A filter
/// that is not the stream's own subject, even one matching everything the stream holds, makes
/// nats-server look for matching subjects in the block's subject index on every pull instead
/// of reading the next message (8 % of its CPU at saturation, BENCHMARKS.md). Re-applying this
/// to a consumer made with the former `<ns>.events.>` filter removes it.
pub fn consumer_config(max_in_flight: usize, ack_wait: Duration) -> pull::Config {
    pull::Config {
        durable_name: Some(CONSUMER.into()),
        description: Some("mih matcher: events to jobs".into()),
        ack_policy: jetstream::consumer::AckPolicy::Explicit,
        ack_wait,
        max_ack_pending: i64::try_from(max_in_flight).unwrap_or(i64::MAX),
        // Events accepted before the first matcher started are processed too.
        deliver_policy: jetstream::consumer::DeliverPolicy::All,
        max_deliver: -1,
        ..Default::default()
    }
}

impl Matcher {
    /// Processes events until shutdown, `max_in_flight` at a time; the events in hand are
    /// finished first.
    pub(crate) async fn run(
        self: Arc<Self>,
        consumer: jetstream::consumer::Consumer<pull::Config>,
        max_in_flight: usize,
        shutdown: Shutdown,
    ) {
        // An unusable event is of no use to anyone later either: JetStream forgets it.
        let settings = Settings::new(CONSUMER, max_in_flight, DeadLetters::Terminate)
            .pull_batch(max_in_flight.min(500))
            .ack_linger(self.ack_linger);
        let partition = Arc::new(Partition {
            gate: OrderGate::new(consumer.clone()),
            matcher: self,
        });
        mih_shared::consumer::run(consumer, settings, partition, shutdown).await;
    }

    async fn process(&self, message: &jetstream::Message, gate: &OrderGate) -> Disposition {
        let event: Event = match messages::decode(&message.payload) {
            Ok(event) => event,
            Err(error) => {
                counter!(m::EVENTS, "outcome" => "unreadable").increment(1);
                tracing::error!(%error, subject = %message.subject, "event is not readable; dropped");
                return Disposition::DeadLetter {
                    reason: format!("not readable: {error}"),
                };
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
                return RETRY;
            }
            Err(error @ OffloadError::Panicked(_)) => {
                // A bug: handed back rather than dropped, so a fixed matcher still gets it.
                tracing::error!(%error, "matching an event panicked; retrying it");
                return RETRY;
            }
        };
        let matches = match matches {
            Ok(matches) => matches,
            Err(reason) => {
                counter!(m::EVENTS, "outcome" => "unreadable").increment(1);
                tracing::error!(event_id = %event.id, %reason, "event cannot be matched; dropped");
                return Disposition::DeadLetter {
                    reason: reason.to_string(),
                };
            }
        };
        if matches.is_empty() {
            counter!(m::EVENTS, "outcome" => "unmatched").increment(1);
            return Disposition::Ack;
        }
        match self.dedup.claim(&event).await {
            Ok(Claim::Claimed | Claim::Ours) => {}
            Ok(Claim::Duplicate(holder)) => {
                counter!(m::EVENTS, "outcome" => "duplicate").increment(1);
                tracing::info!(event_id = %event.id, original = %holder, dedup_key = %event.dedup_key, "duplicate event dropped");
                return Disposition::Ack;
            }
            Err(error) => {
                tracing::warn!(%error, event_id = %event.id, "cannot claim the dedup key; retrying");
                return RETRY;
            }
        }
        let keyed = matches
            .iter()
            .any(|found| matches!(found, Match::Job(job) if job.ordering_key().is_some()));
        if keyed && !self.wait_turn(message, gate).await {
            return Disposition::Retry {
                after: Some(Duration::ZERO),
            };
        }
        match publish::publish(&self.js, &self.names, self.partitions, &event, matches).await {
            Ok(published) => {
                tracing::Span::current().record("jobs", published.jobs);
                tracing::debug!(
                    event_id = %event.id,
                    jobs = published.jobs,
                    render_failures = published.render_failures,
                    "event matched; jobs queued"
                );
                counter!(m::EVENTS, "outcome" => "matched").increment(1);
                Disposition::Ack
            }
            Err(error) => {
                tracing::warn!(%error, event_id = %event.id, "jobs not stored; retrying the event");
                RETRY
            }
        }
    }

    /// Waits until the event's keyed jobs may be published (see [`crate::order_gate`]);
    /// `false` to hand the event back.
    async fn wait_turn(&self, message: &jetstream::Message, gate: &OrderGate) -> bool {
        let Ok(info) = message.info() else {
            return true;
        };
        if gate.wait_turn(info.stream_sequence).await {
            return true;
        }
        let delivered = u64::try_from(info.delivered).unwrap_or(u64::MAX);
        if delivered >= PROCEED_AFTER {
            counter!(m::ORDER_GATE_TIMEOUTS).increment(1);
            tracing::warn!(
                sequence = info.stream_sequence,
                delivered,
                "an earlier event of the partition is still not done; publishing this event's keyed jobs out of turn"
            );
            return true;
        }
        counter!(m::ORDER_GATE_WAITS).increment(1);
        false
    }
}

/// One EVENTS partition's handler: the matcher and the partition's order gate.
struct Partition {
    matcher: Arc<Matcher>,
    gate: OrderGate,
}

impl Handler for Partition {
    async fn handle(&self, message: &jetstream::Message) -> Disposition {
        let sequence = message.info().ok().map(|info| info.stream_sequence);
        let started = Instant::now();
        let span = mih_shared::process_span!(
            message,
            CONSUMER,
            event_id = tracing::field::Empty,
            jobs = tracing::field::Empty
        );
        let disposition = self
            .matcher
            .process(message, &self.gate)
            .instrument(span)
            .await;
        // Done for the order gate once its jobs are stored, not once the ack is sent: the next
        // event of the partition need not wait for that round trip. An ack that is lost makes
        // the event come again, and its jobs' ids are JetStream duplicates then.
        if let (Some(sequence), Disposition::Ack | Disposition::DeadLetter { .. }) =
            (sequence, &disposition)
        {
            self.gate.settle(sequence, true);
        }
        histogram!(m::PROCESS_SECONDS).record(started.elapsed().as_secs_f64());
        disposition
    }

    fn received(&self, message: &jetstream::Message) {
        // Here, not in `handle`: a later event's handler may start first, and must then find
        // this one held rather than ask the server about it.
        if let Ok(info) = message.info() {
            self.gate.hold(info.stream_sequence);
        }
    }

    fn settled(&self, message: &jetstream::Message, settled: Settled) {
        if let Ok(info) = message.info() {
            self.gate
                .settle(info.stream_sequence, settled != Settled::Retried);
        }
        if settled == Settled::Retried {
            counter!(m::RETRIES).increment(1);
        }
    }
}
