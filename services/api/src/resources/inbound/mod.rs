//! `/api/v1/inbound`: the Moodle plugin of a site pulls the messages services sent back
//! towards it (`<NS>_INBOUND`, `<ns>.inbound.<source>.<service>`), raises each as a Moodle
//! event, then acknowledges how far it got. A pull without `after` starts after the last
//! acknowledgement, so a plugin that crashed between raising and acknowledging gets the same
//! messages again, with the same ids — observers deduplicate by `messageid` — and nothing is
//! skipped. Messages are kept by the stream's age limit, not deleted on acknowledgement.

pub mod cursors;
pub mod log;

use std::time::Duration;

use async_nats::jetstream::stream::{DirectGetErrorKind, Stream};
use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::time::Instant;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use mih_shared::messages::{self, InboundMessage};
use mih_shared::names::SourceId;

use super::sources;
use crate::auth::{Caller, Role};
use crate::error::{ApiFailure, ApiResult};
use crate::extract::{ApiJson, ApiQuery};
use crate::state::AppState;

const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 500;
/// The longest long-poll: under the usual 60 s of proxies and PHP's request timeouts.
const MAX_WAIT_SECS: u32 = 30;
/// How long a heard message is looked for in the stream before the wait listens again.
const STORE_PATIENCE: Duration = Duration::from_millis(500);

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PullQuery {
    /// The Moodle site (source id) whose messages to pull.
    pub source: Option<String>,
    /// Messages after this cursor (default: after the source's last acknowledgement).
    pub after: Option<u64>,
    /// Most messages in the answer, 1 to 500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// Seconds to wait for a message when there is none yet, 0 to 30 (default 0).
    #[param(maximum = 30)]
    pub wait: Option<u32>,
}

/// One inbound message.
#[derive(Debug, Serialize, ToSchema)]
pub struct InboundItem {
    /// Its position: acknowledge up to it once its Moodle event was raised.
    pub cursor: u64,
    /// Stable: the Moodle event's `messageid`.
    pub id: Uuid,
    pub service: String,
    /// `webhook` or `amqp`.
    pub via: String,
    pub received_at: DateTime<Utc>,
    pub content_type: Option<String>,
    /// The body: its JSON value when it was JSON, else the text.
    pub payload: Value,
    /// The sender's own id (`webhook-id`, AMQP `message-id`), when it gave one.
    pub external_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Pulled {
    pub source: String,
    /// Oldest first.
    pub messages: Vec<InboundItem>,
    /// The last message's cursor, or `after` when there is none: the next pull's `after`.
    pub next_cursor: u64,
    /// The source's last acknowledgement.
    pub acknowledged: u64,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Ack {
    pub source: String,
    /// The cursor of the last message whose Moodle event was raised.
    pub cursor: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Acknowledged {
    pub source: String,
    /// Where the acknowledgement stands (never moves back).
    pub acknowledged: u64,
}

/// A source id that names an existing source, or 422 naming `field`.
async fn known_source(state: &AppState, raw: Option<String>) -> ApiResult<SourceId> {
    let raw = raw.ok_or_else(|| ApiFailure::invalid("source", "is required"))?;
    let source =
        SourceId::parse(raw.clone()).map_err(|e| ApiFailure::invalid("source", e.to_string()))?;
    let mut db = state.db.acquire().await?;
    if sources::existing(&mut db, std::slice::from_ref(&raw))
        .await?
        .is_empty()
    {
        return Err(ApiFailure::invalid(
            "source",
            format!("there is no source `{raw}`"),
        ));
    }
    Ok(source)
}

async fn inbound_stream(state: &AppState) -> ApiResult<Stream> {
    state
        .js
        .get_stream(state.names.inbound_stream())
        .await
        .map_err(|e| ApiFailure::Unavailable(format!("the inbound stream cannot be read: {e}")))
}

/// What `read` finds once a message has been heard on the subject, or nothing by `deadline`.
///
/// Hearing a message is not reading it: the subscription can hear it before the stream
/// has stored it, and a duplicate the stream refuses is heard and never stored. So each
/// arrival is followed by reads with a growing pause until one finds something, and
/// only the deadline ends the wait empty.
async fn wait_for_stored<F, Fut>(
    arrivals: &mut async_nats::Subscriber,
    deadline: Instant,
    mut read: F,
) -> ApiResult<Vec<InboundItem>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ApiResult<Vec<InboundItem>>>,
{
    while let Ok(Some(_)) = tokio::time::timeout_at(deadline, arrivals.next()).await {
        let mut pause = Duration::from_millis(5);
        loop {
            let messages = read().await?;
            if !messages.is_empty() {
                return Ok(messages);
            }
            // A refused duplicate is never stored: go back to listening rather than poll on.
            if pause > STORE_PATIENCE || Instant::now() + pause >= deadline {
                break;
            }
            tokio::time::sleep(pause).await;
            pause *= 2;
        }
    }
    Ok(Vec::new())
}

/// Up to `limit` messages of `subject` after sequence `after`, oldest first.
async fn read(
    stream: &Stream,
    subject: &str,
    after: u64,
    limit: usize,
) -> ApiResult<Vec<InboundItem>> {
    let mut items = Vec::new();
    let mut next = after.saturating_add(1);
    while items.len() < limit {
        let stored = match stream
            .direct_get_next_for_subject(subject, Some(next))
            .await
        {
            Ok(stored) => stored,
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => break,
            Err(e) => {
                return Err(ApiFailure::Unavailable(format!(
                    "the inbound stream cannot be read: {e}"
                )));
            }
        };
        next = stored.sequence.saturating_add(1);
        match messages::decode::<InboundMessage>(&stored.payload) {
            Ok(message) => items.push(InboundItem {
                cursor: stored.sequence,
                id: message.id.0,
                service: message.service.to_string(),
                via: message.via.as_str().to_owned(),
                received_at: message.received_at,
                content_type: message.content_type,
                payload: message.payload,
                external_id: message.external_id,
            }),
            // Only ingest and the reply consumer write here, so this is a bug, not input:
            // say so and go on rather than stop every later message.
            Err(error) => tracing::error!(%error, sequence = stored.sequence,
                "an inbound message cannot be read; it is left out"),
        }
    }
    Ok(items)
}

/// The messages services sent back towards a Moodle site.
#[utoipa::path(get, path = "/api/v1/inbound", tag = "inbound", params(PullQuery),
    responses((status = 200, body = Pulled), (status = 401), (status = 403), (status = 422),
        (status = 503)))]
pub(crate) async fn pull(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<PullQuery>,
) -> ApiResult<Json<Pulled>> {
    caller.require(Role::Operator)?;
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiFailure::invalid(
            "limit",
            format!("must be between 1 and {MAX_LIMIT}"),
        ));
    }
    let wait = query.wait.unwrap_or(0);
    if wait > MAX_WAIT_SECS {
        return Err(ApiFailure::invalid(
            "wait",
            format!("must be at most {MAX_WAIT_SECS} seconds"),
        ));
    }
    let source = known_source(&state, query.source).await?;
    let acknowledged = cursors::acknowledged(&state.db, source.as_str()).await?;
    let after = query.after.unwrap_or(acknowledged);
    let subject = state.names.inbound_of_source(&source);
    let stream = inbound_stream(&state).await?;
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    // Subscribed before reading, so a message stored in between still wakes the wait.
    let mut arrivals = if wait > 0 {
        Some(
            state
                .js
                .client()
                .subscribe(subject.clone())
                .await
                .map_err(|e| ApiFailure::Unavailable(format!("cannot wait for messages: {e}")))?,
        )
    } else {
        None
    };
    let mut messages = read(&stream, &subject, after, limit).await?;
    if messages.is_empty()
        && let Some(arrivals) = arrivals.as_mut()
    {
        let deadline = Instant::now() + Duration::from_secs(u64::from(wait));
        messages =
            wait_for_stored(arrivals, deadline, || read(&stream, &subject, after, limit)).await?;
    }
    if let Some(mut arrivals) = arrivals {
        let _ = arrivals.unsubscribe().await;
    }
    Ok(Json(Pulled {
        source: source.to_string(),
        next_cursor: messages.last().map_or(after, |m| m.cursor),
        messages,
        acknowledged,
    }))
}

/// Acknowledges a source's messages up to a cursor: their Moodle events were raised.
#[utoipa::path(post, path = "/api/v1/inbound/ack", tag = "inbound", request_body = Ack,
    responses((status = 200, body = Acknowledged), (status = 401), (status = 403),
        (status = 422)))]
pub(crate) async fn acknowledge(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(ack): ApiJson<Ack>,
) -> ApiResult<Json<Acknowledged>> {
    caller.require(Role::Operator)?;
    let source = known_source(&state, Some(ack.source)).await?;
    let mut stream = inbound_stream(&state).await?;
    let last = stream
        .info()
        .await
        .map_err(|e| ApiFailure::Unavailable(format!("the inbound stream cannot be read: {e}")))?
        .state
        .last_sequence;
    if ack.cursor > last {
        return Err(ApiFailure::invalid(
            "cursor",
            format!("is beyond the last inbound message ({last})"),
        ));
    }
    let acknowledged = cursors::acknowledge(&state.db, source.as_str(), ack.cursor).await?;
    Ok(Json(Acknowledged {
        source: source.to_string(),
        acknowledged,
    }))
}
