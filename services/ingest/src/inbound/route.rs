//! `POST /v1/inbound/{service}`: a service sends a message back towards Moodle. Authenticated
//! by the service's own inbound credentials, rate limited per service, stored in
//! `<NS>_INBOUND` for the Moodle site its configuration names, answered 202 only once
//! JetStream acknowledged it.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::message::PublishMessage;
use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chrono::Utc;
use governor::clock::{Clock, DefaultClock};
use metrics::counter;
use serde::Serialize;
use tracing::Instrument;

use mih_shared::error::{ApiError, ErrorKind, error_response};
use mih_shared::messages::{self, InboundId, InboundMessage, InboundVia, Version, payload_of};
use mih_shared::signature::{self, SignedHeaders};
use mih_shared::sources::hash_token;
use mih_shared::telemetry;

use super::directory::InboundService;
use crate::metrics as m;
use crate::routes::IngestState;

/// The one answer to every request that is not authenticated, whatever the reason — no
/// credentials, a wrong signature, a replay outside the tolerance, a service that does not
/// exist or takes no inbound messages — so nothing can be learnt about which services exist.
const UNAUTHORIZED: &str = "missing or invalid credentials for this inbound endpoint: sign the request with the \
     service's inbound secret (Standard Webhooks) or send its inbound bearer token";

/// What a stored message answers.
#[derive(Debug, Serialize)]
pub(crate) struct Stored {
    /// The message's id (for a duplicate, the id of the message stored first).
    pub id: Option<InboundId>,
    pub duplicate: bool,
}

fn refuse(kind: ErrorKind, message: impl Into<String>, retry_after: Option<Duration>) -> Response {
    let mut error = ApiError::new(kind, message);
    error.retry_after = retry_after;
    let mut response = error_response(kind, retry_after, &error);
    if kind == ErrorKind::Unauthorized {
        response.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer realm=\"mih-inbound\""),
        );
    }
    response
}

fn unauthorized(reason: &str, service: &str) -> Response {
    tracing::info!(service, reason, "inbound request refused");
    counter!(m::INBOUND, "result" => "unauthorized").increment(1);
    refuse(ErrorKind::Unauthorized, UNAUTHORIZED, None)
}

pub(crate) async fn post_inbound(
    State(state): State<Arc<IngestState>>,
    Path(service): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let span = mih_shared::server_span!(
        &http::Method::POST,
        Some("/v1/inbound/{service}"),
        &headers,
        service = %service
    );
    let response = async { accept(&state, &service, &headers, body).await }
        .instrument(span.clone())
        .await;
    telemetry::record_response(&span, response.status());
    response
}

async fn accept(
    state: &IngestState,
    name: &str,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    // Authentication first: an unknown service and a bad signature must look the same, and
    // an oversized body from a stranger says nothing about the service either.
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            counter!(m::INBOUND, "result" => "too_large").increment(1);
            return refuse(
                ErrorKind::PayloadTooLarge,
                format!(
                    "the body is larger than {} bytes (ingest.inbound_max_body_bytes)",
                    state.config.inbound_max_body_bytes
                ),
                None,
            );
        }
        Err(rejection) => {
            return refuse(
                ErrorKind::InvalidInput,
                format!("the body could not be read: {}", rejection.body_text()),
                None,
            );
        }
    };
    let now = Utc::now();
    let Some(service) = state.inbound.get(name) else {
        // Same work as a real check, so the answer's timing does not tell either.
        let _ = signature::verify(
            std::iter::empty(),
            &SignedHeaders::from_http(headers),
            &body,
            now.timestamp(),
            state.config.signature_tolerance,
        );
        return unauthorized("no such inbound endpoint", name);
    };
    let external_id = match authenticate(state, &service, headers, &body, now) {
        Ok(id) => id,
        Err(reason) => return unauthorized(&reason, name),
    };
    if let Err(not_until) = service.limiter.check() {
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        counter!(m::INBOUND, "result" => "rate_limited").increment(1);
        return refuse(
            ErrorKind::RateLimited,
            format!(
                "service `{}` sends more inbound messages than its rate limit allows; retry later",
                service.name
            ),
            Some(wait.max(Duration::from_secs(1))),
        );
    }
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let payload = match payload_of(content_type.as_deref(), &body) {
        Ok(payload) => payload,
        Err(error) => {
            counter!(m::INBOUND, "result" => "invalid").increment(1);
            return refuse(ErrorKind::InvalidInput, error.to_string(), None);
        }
    };
    let message = InboundMessage {
        v: Version,
        id: InboundId::new_v7(),
        service: service.name.clone(),
        source: service.source.clone(),
        via: InboundVia::Webhook,
        received_at: now,
        content_type,
        payload,
        external_id,
    };
    match store(state, &message).await {
        Ok(stored) => {
            let result = if stored.duplicate {
                "duplicate"
            } else {
                "stored"
            };
            counter!(m::INBOUND, "result" => result).increment(1);
            (StatusCode::ACCEPTED, Json(stored)).into_response()
        }
        Err(reason) => {
            tracing::warn!(%reason, service = %service.name, "inbound message not stored");
            counter!(m::INBOUND, "result" => "unavailable").increment(1);
            refuse(
                ErrorKind::Unavailable,
                format!("JetStream is unavailable: {reason}; nothing was stored, retry later"),
                Some(state.config.retry_after),
            )
        }
    }
}

/// The verified sender id (`webhook-id`, or an `Idempotency-Key` sent with a bearer token),
/// or why the request is refused (logged, never answered).
fn authenticate(
    state: &IngestState,
    service: &InboundService,
    headers: &HeaderMap,
    body: &[u8],
    now: chrono::DateTime<Utc>,
) -> Result<Option<String>, String> {
    let signed = SignedHeaders::from_http(headers);
    if signed.present() {
        return signature::verify(
            service.secrets_at(now),
            &signed,
            body,
            now.timestamp(),
            state.config.signature_tolerance,
        )
        .map(|id| Some(id.to_owned()))
        .map_err(|e| e.to_string());
    }
    let token = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|t| !t.is_empty())
        .ok_or("no signature and no bearer token")?;
    if !service.accepts_token(&hash_token(token)) {
        return Err("wrong bearer token".into());
    }
    let key = headers
        .get("idempotency-key")
        .or_else(|| headers.get(signature::HEADER_ID))
        .and_then(|v| v.to_str().ok())
        .filter(|k| {
            !k.is_empty()
                && k.len() <= signature::MAX_ID_LEN
                && k.bytes().all(|b| b.is_ascii_graphic())
        })
        .map(str::to_owned);
    Ok(key)
}

/// Publishes and waits for JetStream's acknowledgement. The sender's id makes a re-sent
/// message a duplicate inside the stream's (long) duplicate window.
async fn store(state: &IngestState, message: &InboundMessage) -> Result<Stored, String> {
    let payload = messages::encode(message).map_err(|e| e.to_string())?;
    let subject = state
        .names
        .inbound_subject(&message.source, &message.service);
    let span = telemetry::publish_span(&subject, 1);
    let mut headers = async_nats::HeaderMap::new();
    span.in_scope(|| telemetry::inject_current(&mut headers));
    let mut publish = PublishMessage::build().payload(payload).headers(headers);
    let msg_id = message
        .external_id
        .as_ref()
        .map(|id| format!("{}:{id}", message.service));
    if let Some(msg_id) = &msg_id {
        publish = publish.message_id(msg_id);
    }
    let ack = async {
        state
            .publisher
            .context()
            .send_publish(subject, publish)
            .await
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())
    }
    .instrument(span)
    .await?;
    if !ack.duplicate {
        return Ok(Stored {
            id: Some(message.id),
            duplicate: false,
        });
    }
    let original = match state.inbound_stream.direct_get(ack.sequence).await {
        Ok(stored) => messages::decode::<InboundMessage>(&stored.payload)
            .ok()
            .map(|m| m.id),
        Err(error) => {
            tracing::warn!(%error, "cannot read the original of a duplicate inbound message");
            None
        }
    };
    Ok(Stored {
        id: original,
        duplicate: true,
    })
}
