//! Reading a source's most recent events from `<NS>_EVENTS` and its partitions (for preview).

use std::collections::VecDeque;
use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use futures::StreamExt;

use async_nats::jetstream::stream::Stream;
use mih_shared::messages::{self, Event};
use mih_shared::names::{Names, SourceId};
use mih_shared::partition::{self, Partitioned};

use crate::error::{ApiFailure, ApiResult};
use crate::state::AppState;

/// How far back to look: the latest events of a quiet source may be older than this.
const SCAN_WINDOW: u64 = 20_000;
const IDLE: Duration = Duration::from_secs(2);

/// Up to `count` of the source's latest events, newest first.
pub async fn recent_events(
    state: &AppState,
    source: &SourceId,
    count: usize,
) -> ApiResult<Vec<Event>> {
    latest(state, &state.names.events_of_source(source), count).await
}

/// Up to `count` of the source's latest events of one name, newest first.
pub async fn recent_events_named(
    state: &AppState,
    source: &SourceId,
    name: &mih_shared::moodle::EventName,
    count: usize,
) -> ApiResult<Vec<Event>> {
    latest(state, &state.names.event_subject(source, name), count).await
}

/// The stream of every partition of EVENTS, partition 0 first.
async fn event_streams(state: &AppState) -> Result<Vec<(u16, Stream)>, partition::PartitionsError> {
    partition::streams(
        &state.js,
        &state.names,
        Partitioned::Events,
        state.event_partitions,
    )
    .await
}

fn unavailable(e: &dyn std::fmt::Display) -> ApiFailure {
    ApiFailure::Internal(format!("reading events: {e}"))
}

/// Up to `count` of the latest events on `subject` (as partition 0 spells it) in every
/// partition, newest first.
async fn latest(state: &AppState, subject: &str, count: usize) -> ApiResult<Vec<Event>> {
    let streams = event_streams(state).await.map_err(|e| unavailable(&e))?;
    let reads = streams.iter().map(|(number, stream)| {
        latest_in(
            stream,
            Names::in_event_partition(subject.to_owned(), *number),
            count,
        )
    });
    let mut events: Vec<Event> = futures::future::try_join_all(reads)
        .await?
        .into_iter()
        .flatten()
        .collect();
    // Each partition's are newest first already; a stable sort keeps their stream order.
    events.sort_by_key(|event| std::cmp::Reverse(event.received_at));
    events.truncate(count);
    Ok(events)
}

/// Up to `count` of the latest events on `subject` in one partition's stream, newest first.
async fn latest_in(stream: &Stream, subject: String, count: usize) -> ApiResult<Vec<Event>> {
    let last = stream
        .get_info()
        .await
        .map_err(|e| unavailable(&e))?
        .state
        .last_sequence;
    if last == 0 {
        return Ok(Vec::new());
    }
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: subject,
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: last.saturating_sub(SCAN_WINDOW).max(1),
            },
            ..Default::default()
        })
        .await
        .map_err(|e| unavailable(&e))?;
    // Nothing for the subject in the window: no need to wait out `IDLE`.
    if consumer.cached_info().num_pending == 0 {
        return Ok(Vec::new());
    }
    let mut messages = consumer.messages().await.map_err(|e| unavailable(&e))?;
    let mut latest: VecDeque<Event> = VecDeque::with_capacity(count + 1);
    // Until caught up; a source with no event in the window delivers nothing, hence the idle stop.
    while let Ok(Some(message)) = tokio::time::timeout(IDLE, messages.next()).await {
        let message = message.map_err(|e| unavailable(&e))?;
        let pending = message.info().map(|info| info.pending).unwrap_or(0);
        if let Ok(event) = messages::decode::<Event>(&message.payload) {
            latest.push_back(event);
            if latest.len() > count {
                latest.pop_front();
            }
        }
        if pending == 0 {
            break;
        }
    }
    Ok(latest.into_iter().rev().collect())
}

/// The event names EVENTS holds (everything it retains, every source), with how many of each,
/// most frequent first: read from the stream's per-subject counts, not from the messages, so it
/// costs the same however many events are stored.
pub async fn recent_event_names(state: &AppState, max: usize) -> ApiResult<Vec<(String, usize)>> {
    use futures::TryStreamExt;
    let unavailable =
        |e: &dyn std::fmt::Display| ApiFailure::Internal(format!("reading event names: {e}"));
    let streams = event_streams(state).await.map_err(|e| unavailable(&e))?;
    let prefix = format!("{}.events.", state.names.namespace());
    let mut counts: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    for (_, stream) in streams {
        let mut subjects = stream
            .info_with_subjects(state.names.events_all())
            .await
            .map_err(|e| unavailable(&e))?;
        while let Some((subject, count)) = subjects.try_next().await.map_err(|e| unavailable(&e))? {
            if let Some(name) = subject
                .strip_prefix(&prefix)
                .and_then(event_name_of_subject_tail)
            {
                *counts.entry(name).or_default() += count;
            }
        }
    }
    let mut names: Vec<(String, usize)> = counts.into_iter().collect();
    names.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    names.truncate(max);
    Ok(names)
}

/// `<source>.<component>.<class token>[.<partition>]` → `\component\event\class` (the reverse
/// of `Names::event_subject_in`: a nested class's `__` is a namespace separator).
fn event_name_of_subject_tail(tail: &str) -> Option<String> {
    let mut parts = tail.splitn(4, '.');
    let (_source, component, class) = (parts.next()?, parts.next()?, parts.next()?);
    Some(format!(
        "\\{component}\\event\\{}",
        class.replace("__", "\\")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_give_back_moodle_event_names() {
        assert_eq!(
            event_name_of_subject_tail("site1.mod_assign.assessable_submitted").as_deref(),
            Some("\\mod_assign\\event\\assessable_submitted")
        );
        assert_eq!(
            event_name_of_subject_tail("site1.core.user_graded.3").as_deref(),
            Some("\\core\\event\\user_graded")
        );
        assert_eq!(event_name_of_subject_tail("site1.core"), None);
    }
}
