//! `POST /v1/events`: authenticate, decode, validate, publish, answer.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use chrono::Utc;
use metrics::{counter, histogram};
use serde::Serialize;
use serde_json::Value;
use tracing::Instrument;

use crate::canonical;
use mih_shared::config::IngestConfig;
use mih_shared::error::{ErrorKind, FieldError, HasErrorKind};
use mih_shared::messages::{self, Event, EventId, Version};
use mih_shared::names::{Names, SourceId};
use mih_shared::signature;
use mih_shared::sources::SourceDirectory;
use mih_shared::telemetry;

use crate::auth::{self, Authenticated};
use crate::decode::{self, Shape};
use crate::error::{IngestError, Refusal};
use crate::inbound::{self, InboundDirectory};
use crate::metrics as m;
use crate::publish::{ItemReport, ItemStatus, Prepared, Publisher};
use crate::validate::{self, ValidEvent};

/// Most field errors listed in one answer; the message says how many items failed overall.
const MAX_REPORTED_ERRORS: usize = 100;

pub(crate) struct IngestState {
    pub config: IngestConfig,
    pub names: Names,
    pub sources: SourceDirectory,
    pub inbound: InboundDirectory,
    pub inbound_stream: async_nats::jetstream::stream::Stream,
    pub nats: async_nats::Client,
    pub publisher: Publisher,
    /// The partitions of EVENTS, which each event is published to.
    pub partitions: mih_shared::partition::Partitions,
}

pub(crate) fn router(state: Arc<IngestState>) -> Router {
    let events = Router::new()
        .route("/v1/events", post(post_events))
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes));
    let inbound = Router::new()
        .route("/v1/inbound/{service}", post(inbound::post_inbound))
        .layer(DefaultBodyLimit::max(state.config.inbound_max_body_bytes));
    events.merge(inbound).with_state(state)
}

#[derive(Debug, Serialize)]
pub(crate) struct Accepted {
    pub accepted: usize,
    pub duplicates: usize,
    pub events: Vec<ItemReport>,
}

async fn post_events(
    State(state): State<Arc<IngestState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let span = mih_shared::server_span!(
        &http::Method::POST,
        Some("/v1/events"),
        &headers,
        source = tracing::field::Empty,
        events = tracing::field::Empty
    );
    let response = async {
        match accept(&state, &headers, body).await {
            Ok(accepted) => (StatusCode::ACCEPTED, Json(accepted)).into_response(),
            Err(error) => {
                counter!(m::REJECTED, "reason" => error.metric_reason()).increment(1);
                match error.kind() {
                    ErrorKind::Internal => tracing::error!(%error, "request failed"),
                    ErrorKind::Unavailable => tracing::warn!(%error, "events not stored"),
                    _ => tracing::info!(%error, "request refused"),
                }
                Refusal::from(error).into_response()
            }
        }
    }
    .instrument(span.clone())
    .await;
    telemetry::record_response(&span, response.status());
    response
}

async fn accept(
    state: &IngestState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Accepted, IngestError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            IngestError::BodyTooLarge {
                max: state.config.max_body_bytes,
            }
        } else {
            IngestError::BodyUnreadable(rejection.body_text())
        }
    })?;
    let Authenticated { source, webhook_id } = auth::authenticate(
        &state.sources,
        headers,
        &body,
        Utc::now(),
        state.config.signature_tolerance,
    )?;
    let span = tracing::Span::current();
    span.record("source", source.id.as_str());
    let explicit_key = match webhook_id {
        Some(id) => Some(id),
        None => explicit_key(headers)?,
    };

    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("<not text>"));
    let format = decode::format_of(content_type)?;
    let (shape, items) = decode::decode(format, &body, state.config.max_batch_events)?;
    let total = items.len();
    span.record("events", total);

    let valid = validate_all(items)?;
    let prepared = prepare(state, &source.id, explicit_key.as_deref(), shape, valid)?;
    let reports = publish(state, prepared).await?;
    summarise(&source.id, total, reports, state.config.retry_after)
}

/// An event that passed validation, with its position and its own dedup key, if it has one.
struct ValidItem {
    index: usize,
    key: Option<String>,
    event: ValidEvent,
}

/// Validates every item; refuses the whole request if any is invalid, listing each problem.
fn validate_all(items: Vec<decode::Item>) -> Result<Vec<ValidItem>, IngestError> {
    let total = items.len();
    let mut valid = Vec::with_capacity(total);
    let mut errors = Vec::new();
    let mut invalid = 0;
    for item in items {
        let key = item_key(item.index, item.key);
        match (validate::validate(item.index, item.value), key) {
            (Ok(event), Ok(key)) => valid.push(ValidItem {
                index: item.index,
                key,
                event,
            }),
            (event, key) => {
                invalid += 1;
                errors.extend(key.err());
                errors.extend(event.err().into_iter().flatten());
            }
        }
    }
    if invalid == 0 {
        return Ok(valid);
    }
    errors.truncate(MAX_REPORTED_ERRORS);
    Err(IngestError::Invalid {
        invalid,
        total,
        errors,
    })
}

/// An envelope's `idempotency_key`: printable ASCII, as a `webhook-id` is.
fn item_key(index: usize, key: Option<Value>) -> Result<Option<String>, FieldError> {
    let refuse = || {
        FieldError::new(
            Some(index),
            Some("idempotency_key"),
            format!(
                "must be a string of 1 to {} printable ASCII characters",
                signature::MAX_ID_LEN
            ),
        )
    };
    match key {
        None => Ok(None),
        Some(Value::String(key))
            if !key.is_empty()
                && key.len() <= signature::MAX_ID_LEN
                && key.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Ok(Some(key))
        }
        Some(_) => Err(refuse()),
    }
}

/// Wraps each event in its envelope (id, dedup key, subject) and encodes it, refusing the
/// request if any event is too large to store.
fn prepare(
    state: &IngestState,
    source: &SourceId,
    explicit_key: Option<&str>,
    shape: Shape,
    valid: Vec<ValidItem>,
) -> Result<Vec<Prepared>, IngestError> {
    let received_at = Utc::now();
    let max = state.config.max_event_bytes;
    let mut prepared = Vec::with_capacity(valid.len());
    let mut too_large = Vec::new();
    for ValidItem {
        index,
        key: item_key,
        event: ValidEvent { name, data },
    } in valid
    {
        let dedup_key = match (item_key, explicit_key, shape) {
            (Some(key), _, _) => key,
            (None, Some(key), Shape::Single) => key.to_owned(),
            (None, Some(key), Shape::Batch) => format!("{key}#{index}"),
            (None, None, _) => format!("sha256:{}", canonical::hash(&Value::Object(data.clone()))),
        };
        let event = Event {
            v: Version,
            id: EventId::new_v7(),
            source: source.clone(),
            received_at,
            dedup_key,
            data: data.into(),
        };
        let payload = messages::encode(&event).map_err(IngestError::Encode)?;
        if payload.len() > max {
            too_large.push(FieldError::new(
                Some(index),
                None,
                format!(
                    "the event is {} bytes once stored; the limit is {max} (ingest.max_event_bytes)",
                    payload.len()
                ),
            ));
            continue;
        }
        let partition = state
            .partitions
            .of_event(source, &event.data, &event.dedup_key);
        prepared.push(Prepared {
            index,
            id: event.id,
            msg_id: format!("{source}:{}", event.dedup_key),
            dedup_key: event.dedup_key,
            subject: state.names.event_subject_in(source, &name, partition),
            payload,
        });
    }
    if too_large.is_empty() {
        return Ok(prepared);
    }
    let count = too_large.len();
    too_large.truncate(MAX_REPORTED_ERRORS);
    Err(IngestError::EventsTooLarge {
        count,
        max,
        errors: too_large,
    })
}

/// Publishes with the request's trace context; refuses at once when NATS is not connected.
async fn publish(
    state: &IngestState,
    prepared: Vec<Prepared>,
) -> Result<Vec<ItemReport>, IngestError> {
    if state.nats.connection_state() != async_nats::connection::State::Connected {
        return Err(IngestError::Unavailable {
            reason: "not connected to NATS".into(),
            retry_after: state.config.retry_after,
        });
    }
    // One producer span for the request's events: they leave in one pipelined burst.
    let subject = prepared
        .first()
        .map(|p| p.subject.clone())
        .unwrap_or_default();
    let span = telemetry::publish_span(&subject, prepared.len());
    let mut trace = async_nats::HeaderMap::new();
    span.in_scope(|| telemetry::inject_current(&mut trace));
    let started = Instant::now();
    let reports = state
        .publisher
        .publish(prepared, &trace)
        .instrument(span)
        .await;
    histogram!(m::PUBLISH_SECONDS).record(started.elapsed().as_secs_f64());
    Ok(reports)
}

/// Counts what happened; any unconfirmed event turns the answer into a 503 with the report.
fn summarise(
    source: &SourceId,
    total: usize,
    reports: Vec<ItemReport>,
    retry_after: std::time::Duration,
) -> Result<Accepted, IngestError> {
    let count = |status| reports.iter().filter(|r| r.status == status).count();
    let (accepted, duplicates, unconfirmed) = (
        count(ItemStatus::Accepted),
        count(ItemStatus::Duplicate),
        count(ItemStatus::Unconfirmed),
    );
    let source = source.to_string();
    counter!(m::ACCEPTED, "source" => source.clone()).increment(accepted as u64);
    counter!(m::DUPLICATES, "source" => source.clone()).increment(duplicates as u64);
    if unconfirmed > 0 {
        counter!(m::UNCONFIRMED, "source" => source).increment(unconfirmed as u64);
        return Err(IngestError::PartiallyStored {
            unconfirmed,
            total,
            items: reports,
            retry_after,
        });
    }
    histogram!(m::BATCH_SIZE).record(total as f64);
    if tracing::enabled!(tracing::Level::DEBUG) {
        for report in &reports {
            let id = report.id.map(|id| id.to_string()).unwrap_or_default();
            tracing::debug!(event_id = %id, dedup_key = %report.dedup_key, status = ?report.status, "event stored");
        }
    }
    Ok(Accepted {
        accepted,
        duplicates,
        events: reports,
    })
}

/// The sender's idempotency key on an unsigned request: `Idempotency-Key`, else `webhook-id`.
fn explicit_key(headers: &HeaderMap) -> Result<Option<String>, IngestError> {
    for name in ["idempotency-key", signature::HEADER_ID] {
        if let Some(value) = headers.get(name) {
            let key = value.to_str().unwrap_or_default();
            let printable = !key.is_empty()
                && key.len() <= signature::MAX_ID_LEN
                && key.bytes().all(|b| b.is_ascii_graphic());
            return if printable {
                Ok(Some(key.to_owned()))
            } else {
                Err(IngestError::BadIdempotencyKey(
                    if name == "idempotency-key" {
                        "Idempotency-Key"
                    } else {
                        "webhook-id"
                    },
                ))
            };
        }
    }
    Ok(None)
}
