//! One pass over a backfill's range: read the events in order, partition after partition,
//! match each against the one rule (off the async workers, by api's evaluators, within the
//! rule's budget), publish the jobs, checkpoint after every chunk.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::stream::Stream;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use time::OffsetDateTime;
use uuid::Uuid;

use mih_rules::budget::OffloadError;
use mih_rules::dedup::Dedup;
use mih_rules::{Match, RuleSet};
use mih_shared::Shutdown;
use mih_shared::live::LiveConfig;
use mih_shared::messages::{self, Event, Origin};
use mih_shared::names::Names;
use tracing::Instrument as _;

use super::store::{self, Backfill, Counts};
use crate::resources::config_row::ConfigRow;
use crate::resources::crud::Resource;
use crate::resources::preview::EVALUATORS;
use crate::resources::{rules::RuleRow, services};
use crate::state::AppState;

/// Events per chunk: published together, then one checkpoint.
const CHUNK: usize = 256;
/// Events of a chunk handled at once (dedup lookups and publishes in flight).
const IN_FLIGHT: usize = 64;
/// No event for this long: either the range is done or the consumer stalled (asked the server).
const IDLE: Duration = Duration::from_secs(3);
/// Past this many subject filters, read every event and let the rule decide.
const MAX_FILTERS: usize = 32;
/// Longest an event waits for a free evaluator (previews share them) before the pass stops and
/// a later sweep resumes from the checkpoint.
const EVALUATOR_WAIT: Duration = Duration::from_secs(60);

/// How a pass ended without error.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// Every event of the range was handled.
    Done,
    /// Cancelled, or the hub is shutting down; the checkpoint stands.
    Stopped,
}

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// Nothing a retry can fix (the rule was deleted).
    #[error("{0}")]
    Permanent(String),
    /// NATS or PostgreSQL failed; the next sweep resumes from the checkpoint.
    #[error("{0}")]
    Transient(String),
}

fn transient(context: &str) -> impl Fn(&dyn std::fmt::Display) -> ScanError + '_ {
    move |e| ScanError::Transient(format!("{context}: {e}"))
}

/// Where a pass starts, the range's bounds, and which subjects can hold matching events.
struct Plan {
    rules: Arc<RuleSet>,
    filters: Vec<String>,
    start: DeliverPolicy,
    to: OffsetDateTime,
}

pub async fn run(
    state: &AppState,
    dedup: &Dedup,
    id: Uuid,
    shutdown: &Shutdown,
) -> Result<End, ScanError> {
    loop {
        let Some(backfill) = store::get(&state.db, id)
            .await
            .map_err(|e| transient("reading the backfill")(&e))?
        else {
            return Ok(End::Stopped);
        };
        if backfill.status != store::Status::Running {
            return Ok(End::Stopped);
        }
        let partition = u16::try_from(backfill.partition).unwrap_or(0);
        if backfill.position < backfill.end_sequence
            && scan_partition(state, dedup, &backfill, partition, shutdown).await? == End::Stopped
        {
            return Ok(End::Stopped);
        }
        // The next partition that held events when the backfill was created.
        let next = backfill
            .partition_ends
            .iter()
            .enumerate()
            .skip(usize::from(partition) + 1)
            .find(|(_, end)| **end > 0);
        let Some((next, &end)) = next else {
            return Ok(End::Done);
        };
        let next = i16::try_from(next).unwrap_or(i16::MAX);
        let still_running = store::advance(&state.db, id, next, end)
            .await
            .map_err(|e| transient("recording progress")(&e))?;
        if !still_running {
            return Ok(End::Stopped);
        }
    }
}

/// Scans the backfill's current partition from its checkpoint.
async fn scan_partition(
    state: &AppState,
    dedup: &Dedup,
    backfill: &Backfill,
    partition: u16,
    shutdown: &Shutdown,
) -> Result<End, ScanError> {
    let id = backfill.id;
    let plan = plan(state, backfill, partition).await?;
    let name = state.names.events_partition_stream(partition);
    let stream = match state.js.get_stream(&name).await {
        Ok(stream) => stream,
        Err(error) if partition > 0 && mih_shared::partition::stream_is_missing(&error) => {
            tracing::warn!(backfill = %id, stream = %name, "the partition's stream was deleted; going on without it");
            return Ok(End::Done);
        }
        Err(error) => return Err(transient("opening EVENTS")(&error)),
    };
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subjects: plan.filters.clone(),
            deliver_policy: plan.start,
            ..Default::default()
        })
        .await
        .map_err(|e| transient("creating the backfill's consumer")(&e))?;
    // Nothing for the rule from here on in this partition (every event in range was stored
    // before the backfill began): done, without waiting out `IDLE` for each partition.
    if consumer.cached_info().num_pending == 0 {
        return Ok(End::Done);
    }
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| transient("reading EVENTS")(&e))?
        .ready_chunks(CHUNK);
    let end_sequence = u64::try_from(backfill.end_sequence).unwrap_or(0);
    let mut start_sequence = backfill.start_sequence;
    let mut checkpointed = backfill.position;
    loop {
        let next = tokio::select! {
            () = shutdown.triggered() => return Ok(End::Stopped),
            next = tokio::time::timeout(IDLE, messages.next()) => next,
        };
        let chunk = match next {
            Err(_idle) => return idle(&stream, &plan, checkpointed).await,
            Ok(None) => return Err(ScanError::Transient("the event stream ended".into())),
            Ok(Some(chunk)) => chunk,
        };
        let mut payloads = Vec::with_capacity(chunk.len());
        let (mut position, mut done) = (None, false);
        for message in chunk {
            let message = message.map_err(|e| transient("reading EVENTS")(&e))?;
            let info = message
                .info()
                .map_err(|e| transient("reading an event's metadata")(&e))?;
            let sequence = info.stream_sequence;
            if sequence > end_sequence || info.published > plan.to {
                done = true;
                break;
            }
            start_sequence.get_or_insert(i64::try_from(sequence).unwrap_or(i64::MAX));
            position = Some(sequence);
            // Nothing after it now; anything later is past `end_sequence`.
            done = info.pending == 0 || sequence == end_sequence;
            payloads.push(message.payload.clone());
        }
        let counts = handle(state, dedup, &plan.rules, payloads).await?;
        if let Some(position) = position {
            let position = i64::try_from(position).unwrap_or(i64::MAX);
            let still_running = store::checkpoint(&state.db, id, start_sequence, position, counts)
                .await
                .map_err(|e| transient("recording progress")(&e))?;
            if !still_running {
                return Ok(End::Stopped);
            }
            checkpointed = position;
        }
        if done {
            return Ok(End::Done);
        }
    }
}

/// The rule (as saved now) and services, compiled; the consumer's filters and start in
/// `partition`.
async fn plan(state: &AppState, backfill: &Backfill, partition: u16) -> Result<Plan, ScanError> {
    let deleted = || ScanError::Permanent("the rule was deleted".into());
    let rule_id = backfill.rule_id.ok_or_else(deleted)?;
    let mut conn = state
        .db
        .acquire()
        .await
        .map_err(|e| transient("reading the rule")(&e))?;
    let row = RuleRow::load(&mut conn, &rule_id.to_string(), false)
        .await
        .map_err(|e| transient("reading the rule")(&e))?
        .ok_or_else(deleted)?;
    drop(conn);
    let (_, rule) = row
        .live()
        .map_err(|e| ScanError::Permanent(e.to_string()))?;
    let services = services::load_live(&state.db)
        .await
        .map_err(|e| transient("reading services")(&e))?;
    let filters = state
        .names
        .events_matching(&rule.sources, &rule.events, MAX_FILTERS)
        .into_iter()
        .map(|filter| Names::in_event_partition(filter, partition))
        .collect();
    let rule = Arc::new(rule);
    let rules = Arc::new(
        RuleSet::build(&LiveConfig {
            sources: BTreeMap::new(),
            services,
            rules: BTreeMap::from([(rule.id, rule)]),
            revision: 0,
        })
        .limit_requests(state.max_request_bytes),
    );
    let start = if backfill.position == 0 {
        DeliverPolicy::ByStartTime {
            start_time: offset(backfill.from)?,
        }
    } else {
        DeliverPolicy::ByStartSequence {
            start_sequence: u64::try_from(backfill.position).unwrap_or(0) + 1,
        }
    };
    Ok(Plan {
        rules,
        filters,
        start,
        to: offset(backfill.to)?,
    })
}

fn offset(at: DateTime<Utc>) -> Result<OffsetDateTime, ScanError> {
    let nanos =
        i128::from(at.timestamp()) * 1_000_000_000 + i128::from(at.timestamp_subsec_nanos());
    OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .map_err(|e| ScanError::Permanent(format!("the range cannot be represented: {e}")))
}

/// Nothing arrived for a while: done if the server has nothing left for these filters from
/// where the pass stands, else the consumer stalled and a later sweep retries.
async fn idle(stream: &Stream, plan: &Plan, position: i64) -> Result<End, ScanError> {
    let start = match position {
        0 => plan.start,
        _ => DeliverPolicy::ByStartSequence {
            start_sequence: u64::try_from(position).unwrap_or(0) + 1,
        },
    };
    let probe = stream
        .create_consumer(pull::Config {
            filter_subjects: plan.filters.clone(),
            deliver_policy: start,
            ack_policy: AckPolicy::None,
            inactive_threshold: Duration::from_secs(30),
            memory_storage: true,
            // A throwaway probe: on a cluster it needs no Raft group of its own.
            num_replicas: 1,
            ..Default::default()
        })
        .await
        .map_err(|e| transient("asking what is left")(&e))?;
    let mut probe = probe;
    let pending = probe
        .info()
        .await
        .map_err(|e| transient("asking what is left")(&e))?
        .num_pending;
    let name = probe.cached_info().name.clone();
    if let Err(error) = stream.delete_consumer(&name).await {
        tracing::debug!(%error, "the probe consumer expires on its own");
    }
    if pending == 0 {
        Ok(End::Done)
    } else {
        Err(ScanError::Transient(format!(
            "{pending} events are left but none arrived for {IDLE:?}"
        )))
    }
}

/// Matches and publishes a chunk of events; counts what happened.
async fn handle(
    state: &AppState,
    dedup: &Dedup,
    rules: &Arc<RuleSet>,
    payloads: Vec<Bytes>,
) -> Result<Counts, ScanError> {
    let outcomes: Vec<Result<Counts, ScanError>> = futures::stream::iter(payloads)
        .map(|payload| handle_one(state, dedup, rules, payload))
        .buffered(IN_FLIGHT)
        .collect()
        .await;
    let mut total = Counts::default();
    for outcome in outcomes {
        total += outcome?;
    }
    Ok(total)
}

async fn handle_one(
    state: &AppState,
    dedup: &Dedup,
    rules: &Arc<RuleSet>,
    payload: Bytes,
) -> Result<Counts, ScanError> {
    let mut counts = Counts {
        scanned: 1,
        ..Counts::default()
    };
    let event: Event = match messages::decode(&payload) {
        Ok(event) => event,
        Err(error) => {
            tracing::warn!(%error, "skipping an unreadable stored event");
            return Ok(counts);
        }
    };
    let rules = Arc::clone(rules);
    let matching = EVALUATORS
        .run(EVALUATOR_WAIT, move || {
            let matches = rules.matches(&event, Origin::Backfill);
            (event, matches)
        })
        .await;
    let (event, matches) = match matching {
        Ok(matched) => matched,
        Err(error @ OffloadError::Busy(_)) => {
            return Err(ScanError::Transient(format!("matching events: {error}")));
        }
        // A bug, which another pass would meet again: the backfill fails, visibly.
        Err(error @ OffloadError::Panicked(_)) => {
            return Err(ScanError::Permanent(format!("matching events: {error}")));
        }
    };
    let matches: Vec<Match> = match matches {
        Ok(matches) => matches,
        Err(reason) => {
            tracing::warn!(event = %event.id, %reason, "skipping an event no rule can match");
            return Ok(counts);
        }
    };
    if matches.is_empty() {
        return Ok(counts);
    }
    counts.matched = 1;
    // Each backfilled event starts a trace of its own: one trace for a whole backfill would
    // hold thousands of deliveries, and the event's original trace is long closed.
    let span = tracing::info_span!(
        parent: None,
        "backfill.event",
        otel.name = "backfill event",
        mih.event.id = %event.id,
        mih.backfill.jobs = matches.len(),
    );
    handle_match(state, dedup, &event, matches, counts)
        .instrument(span)
        .await
}

async fn handle_match(
    state: &AppState,
    dedup: &Dedup,
    event: &Event,
    matches: Vec<Match>,
    mut counts: Counts,
) -> Result<Counts, ScanError> {
    // Only look: a claim taken now would outlive the old event by the whole horizon.
    let holder = dedup
        .holder(event)
        .await
        .map_err(|e| transient("dedup lookup")(&e))?;
    if holder.is_some_and(|holder| holder != event.id) {
        counts.skipped_duplicates = 1;
        return Ok(counts);
    }
    let published =
        mih_rules::publish::publish(&state.js, &state.names, state.partitions, event, matches)
            .await
            .map_err(|e| transient("publishing jobs")(&e))?;
    counts.jobs = i64::try_from(published.jobs).unwrap_or(i64::MAX);
    counts.render_failures = i64::try_from(published.render_failures).unwrap_or(i64::MAX);
    Ok(counts)
}
