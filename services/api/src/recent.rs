//! Reading a source's most recent events from `<NS>_EVENTS` (for preview).

use std::collections::VecDeque;
use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use futures::StreamExt;

use mih_shared::messages::{self, Event};
use mih_shared::names::SourceId;

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
    let unavailable =
        |e: &dyn std::fmt::Display| ApiFailure::Internal(format!("reading events: {e}"));
    let stream = state
        .js
        .get_stream(state.names.events_stream())
        .await
        .map_err(|e| unavailable(&e))?;
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
            filter_subject: state.names.events_of_source(source),
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: last.saturating_sub(SCAN_WINDOW).max(1),
            },
            ..Default::default()
        })
        .await
        .map_err(|e| unavailable(&e))?;
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
