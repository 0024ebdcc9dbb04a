//! `POST /api/v1/services/{name}/request`: the facade through which Moodle plugins call a
//! registered service (the original plugin's `mih::request`) — looked up by name, with the
//! service's auth, retries, circuit and logging applied by a dispatcher, and one answer shape.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use tracing::Instrument as _;

use mih_shared::live::Transport;
use mih_shared::messages::{
    self, FacadeRequest, FacadeResponse, Header, HttpMethod, JobId, Version,
};
use mih_shared::names::ServiceSlug;
use mih_shared::telemetry;

use super::{Problems, check_header_name, not_found, services};
use crate::auth::{Caller, Role};
use crate::error::{ApiFailure, ApiResult};
use crate::extract::ApiJson;
use crate::state::AppState;

/// The call to make.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CallInput {
    /// GET, POST, PUT, PATCH or DELETE (default POST). REST services only.
    pub method: Option<String>,
    /// Joined to a REST service's base URL; a SOAP service's operation; an AMQP routing key.
    #[serde(default)]
    pub path: String,
    /// Query parameters.
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// A JSON value (sent as `application/json`) or a string (sent as given).
    #[schema(value_type = Option<Object>)]
    pub body: Option<Value>,
    /// Content type of a string body.
    pub content_type: Option<String>,
    /// Longest the call may take, retries included (default and maximum:
    /// `dispatcher.facade_timeout`).
    pub timeout_ms: Option<u64>,
}

/// The answer, whatever happened: the target's response, or why there is none.
#[derive(Debug, Serialize, ToSchema)]
pub struct CallAnswer {
    /// The target answered with success.
    pub ok: bool,
    /// The target's HTTP status (last attempt).
    pub status: Option<u16>,
    pub headers: BTreeMap<String, String>,
    /// The response body, up to `dispatcher.facade_max_body_bytes` (512 KiB by default).
    pub body: Option<String>,
    /// The target's body was longer than `body`, which holds its start.
    pub body_truncated: bool,
    /// Attempts made; `null` when the hub cannot tell (no dispatcher answered in time: the
    /// call may have been made — look `call_id` up in the delivery log before calling again).
    pub attempts: Option<u32>,
    pub duration_ms: u64,
    pub error: Option<String>,
    /// closed, open (nothing was sent), half_open, or unknown (no dispatcher answered).
    pub circuit: String,
    /// Id of the call in the delivery log (also its `Idempotency-Key`).
    pub call_id: Option<String>,
    /// When nothing was sent: when the service may be called again (the circuit's next
    /// probe, the end of a pause the service asked for with 429, the next rate-limit slot).
    pub retry_at: Option<DateTime<Utc>>,
}

impl From<FacadeResponse> for CallAnswer {
    fn from(answer: FacadeResponse) -> Self {
        CallAnswer {
            ok: answer.ok,
            status: answer.status,
            headers: answer
                .headers
                .into_iter()
                .map(|h| (h.name, h.value))
                .collect(),
            body: answer.body,
            body_truncated: answer.body_truncated,
            attempts: Some(answer.attempts),
            duration_ms: answer.duration_ms,
            error: answer.error,
            circuit: answer.circuit,
            call_id: answer.call_id,
            retry_at: answer.retry_at,
        }
    }
}

/// Extra time api waits for a dispatcher beyond the call's own deadline.
const REPLY_MARGIN: Duration = Duration::from_secs(2);

/// Room in the request message for everything but the call's body.
const REQUEST_ROOM: usize = 64 * 1024;

/// Call a registered service synchronously.
///
/// 200 whenever a dispatcher handled the call (`ok` says whether the target succeeded); 503
/// with the same shape when nothing was sent: the service's circuit is open (with
/// `Retry-After`) or no dispatcher is running (`circuit: "unknown"`); 504 with `attempts: null`
/// when no dispatcher answered within the call's deadline, so the call may have been made (look
/// up `call_id` in the delivery log); 404 for an unknown service, 409 for a disabled one, 413
/// for a body too large to pass to a dispatcher.
#[utoipa::path(post, path = "/api/v1/services/{name}/request", tag = "services", params(("name" = String, Path)),
    request_body = CallInput,
    responses((status = 200, body = CallAnswer), (status = 401), (status = 403), (status = 404),
              (status = 409), (status = 413), (status = 422), (status = 429, body = CallAnswer), (status = 503, body = CallAnswer),
              (status = 504, body = CallAnswer)))]
pub(crate) async fn call(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(input): ApiJson<CallInput>,
) -> ApiResult<Response> {
    caller.require(Role::Operator)?;
    let slug = ServiceSlug::parse(&name).map_err(|_| not_found("service", &name))?;
    let service = services::load_live(&state.db)
        .await?
        .remove(&slug)
        .ok_or_else(|| not_found("service", &name))?;
    if !service.enabled {
        return Err(ApiFailure::Conflict(format!(
            "service `{name}` is disabled; enable it to call it"
        )));
    }
    if matches!(service.transport, Transport::Rest(_))
        && let Some(refusal) = mih_shared::urlpath::refusal(&input.path)
    {
        return Err(ApiFailure::invalid("path", refusal));
    }
    let request = build(&state, slug, input, &caller)?;
    let call_id = request.call_id.map(|id| id.to_string());
    let wait = Duration::from_millis(request.timeout_ms) + REPLY_MARGIN;
    let payload = messages::encode(&request).map_err(|e| ApiFailure::Internal(e.to_string()))?;
    let nats = state.js.client();
    let max_payload = nats.server_info().max_payload;
    if payload.len() > max_payload {
        return Err(ApiFailure::PayloadTooLarge(format!(
            "the call is {} bytes; at most {} fit in one message to a dispatcher \
             (the NATS server's max_payload, less room for the envelope)",
            payload.len(),
            max_payload.saturating_sub(REQUEST_ROOM)
        )));
    }
    // The NATS client's own request timeout is shorter than a call may take; this call waits
    // for its whole deadline.
    // The caller's trace goes on to the dispatcher that makes the call, and to the service.
    let subject = state.names.rpc_request();
    let span = telemetry::publish_span(&subject, 1);
    let mut headers = async_nats::HeaderMap::new();
    span.in_scope(|| telemetry::inject_current(&mut headers));
    let reply = nats
        .send_request(
            subject,
            async_nats::Request::new()
                .payload(payload)
                .headers(headers)
                .timeout(Some(wait)),
        )
        .instrument(span)
        .await;
    let no_answer =
        |status: StatusCode, error: String, attempts: Option<u32>| -> ApiResult<Response> {
            let answer = CallAnswer {
                ok: false,
                status: None,
                headers: BTreeMap::new(),
                body: None,
                body_truncated: false,
                attempts,
                duration_ms: 0,
                error: Some(error),
                circuit: "unknown".to_owned(),
                call_id: call_id.clone(),
                retry_at: None,
            };
            Ok((status, Json(answer)).into_response())
        };
    let message = match reply {
        Ok(message) => message,
        Err(error) if error.kind() == async_nats::RequestErrorKind::NoResponders => {
            return no_answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "no dispatcher is running to make the call; nothing was sent".into(),
                Some(0),
            );
        }
        Err(error) => {
            // Timed out, or the connection failed after the request went out: a dispatcher
            // may be making the call. Saying "not sent" would invite a duplicate.
            return no_answer(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "no dispatcher answered within {} ms ({error}); the call may have been made: \
                     look up call_id in the delivery log before calling again",
                    wait.as_millis()
                ),
                None,
            );
        }
    };
    let answer: FacadeResponse = messages::decode(&message.payload)
        .map_err(|e| ApiFailure::Internal(format!("unreadable dispatcher answer: {e}")))?;
    let refused = refusal(&answer, service.breaker.cooldown_ms);
    let mut response = Json(CallAnswer::from(answer)).into_response();
    if let Some((status, retry_after)) = refused {
        *response.status_mut() = status;
        if let Ok(value) = HeaderValue::from_str(&retry_after.to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
    }
    Ok(response)
}

/// A call refused before anything was sent: 503 while the circuit is open, 429 while the
/// service is paused (it answered 429) or at its rate limit; with the seconds to wait.
fn refusal(answer: &FacadeResponse, cooldown_ms: u64) -> Option<(StatusCode, u64)> {
    if answer.attempts > 0 || answer.ok {
        return None;
    }
    let seconds_left = |at: DateTime<Utc>| {
        let millis = u64::try_from((at - Utc::now()).num_milliseconds()).unwrap_or(0);
        millis.div_ceil(1000).max(1)
    };
    match (answer.circuit.as_str(), answer.retry_at) {
        ("open", retry_at) => Some((
            StatusCode::SERVICE_UNAVAILABLE,
            retry_at.map_or((cooldown_ms / 1000).max(1), seconds_left),
        )),
        (_, Some(retry_at)) => Some((StatusCode::TOO_MANY_REQUESTS, seconds_left(retry_at))),
        _ => None,
    }
}

fn build(
    state: &AppState,
    service: ServiceSlug,
    input: CallInput,
    caller: &Caller,
) -> ApiResult<FacadeRequest> {
    let mut problems = Problems::default();
    let method = match input
        .method
        .as_deref()
        .map(str::to_ascii_uppercase)
        .as_deref()
    {
        None | Some("POST") => HttpMethod::Post,
        Some("GET") => HttpMethod::Get,
        Some("PUT") => HttpMethod::Put,
        Some("PATCH") => HttpMethod::Patch,
        Some("DELETE") => HttpMethod::Delete,
        Some(other) => {
            problems.add(
                "method",
                format!("`{other}` is not GET, POST, PUT, PATCH or DELETE"),
            );
            HttpMethod::Post
        }
    };
    for name in input.headers.keys() {
        check_header_name(&mut problems, "headers", name);
    }
    let limit = u64::try_from(state.facade_timeout.as_millis()).unwrap_or(u64::MAX);
    let timeout_ms = input.timeout_ms.unwrap_or(limit);
    problems.check(
        (1..=limit).contains(&timeout_ms),
        "timeout_ms",
        format!("must be between 1 and {limit} (dispatcher.facade_timeout)"),
    );
    let (body, content_type) = match input.body {
        None | Some(Value::Null) => (None, input.content_type),
        Some(Value::String(text)) => (Some(text), input.content_type),
        Some(json) => (
            Some(json.to_string()),
            Some(
                input
                    .content_type
                    .unwrap_or_else(|| "application/json".into()),
            ),
        ),
    };
    problems.into_result()?;
    Ok(FacadeRequest {
        v: Version,
        service,
        method,
        path: input.path,
        query: input.query.into_iter().collect(),
        headers: input
            .headers
            .into_iter()
            .map(|(name, value)| Header { name, value })
            .collect(),
        body,
        content_type,
        timeout_ms,
        caller: Some(caller.actor()),
        call_id: Some(JobId::new_v7()),
    })
}
