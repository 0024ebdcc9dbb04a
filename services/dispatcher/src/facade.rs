//! The facade: synchronous calls from Moodle plugins (through api) to a registered service,
//! with the service's transport, auth, retries (within the call's deadline) and circuit. The
//! dispatchers answer `<ns>.rpc.request` in one queue group, so any replica serves a call.
//! Unlike queued jobs, a facade call does not wait for an open circuit: it fails fast.

use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt;

use mih_shared::circuit::{Admission, CircuitState};
use mih_shared::messages::{
    self, AmqpRequest, FacadeRequest, FacadeResponse, HttpRequest, Job, JobId, Origin,
    OutcomeStatus, Request, SoapRequest, Version,
};
use mih_shared::names::Names;
use mih_shared::{Shutdown, telemetry};

use crate::fleet::Fleet;
use crate::transport::{AttemptMeta, Link, Target, Verdict};
use crate::worker::{Worker, backoff};

/// How long a call waits for the worker of a service that was enabled a moment ago.
const WORKER_PATIENCE: Duration = Duration::from_secs(5);

/// Room in a reply message for everything but the response body.
const REPLY_ROOM: usize = 64 * 1024;

/// How facade calls are served: the most of a response body an answer carries.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FacadeLimits {
    /// `dispatcher.facade_max_body_bytes`, lowered to what fits in one NATS message.
    pub body_bytes: usize,
    /// The server's `max_payload`: no reply may be larger.
    pub max_payload: usize,
}

impl FacadeLimits {
    pub(crate) fn new(configured_body_bytes: usize, max_payload: usize) -> Self {
        FacadeLimits {
            body_bytes: configured_body_bytes.min(max_payload.saturating_sub(REPLY_ROOM)),
            max_payload,
        }
    }
}

/// Serves facade calls until `shutdown`.
pub(crate) async fn serve(
    nats: async_nats::Client,
    names: Names,
    fleet: Fleet,
    limits: FacadeLimits,
    shutdown: Shutdown,
) {
    let mut requests = match nats
        .queue_subscribe(names.rpc_request(), names.rpc_queue_group())
        .await
    {
        Ok(requests) => requests,
        Err(error) => {
            tracing::error!(%error, "cannot serve facade calls");
            return;
        }
    };
    loop {
        let request = tokio::select! {
            () = shutdown.triggered() => break,
            request = requests.next() => request,
        };
        let Some(request) = request else { break };
        let (nats, fleet) = (nats.clone(), fleet.clone());
        tokio::spawn(async move {
            let Some(reply) = request.reply.clone() else {
                return;
            };
            // A request/reply server span (OTel messaging conventions), in the caller's trace:
            // the API request a Moodle plugin made.
            let span = tracing::info_span!(
                "nats.process",
                otel.name = %format_args!("process {}", request.subject),
                otel.kind = "server",
                messaging.system = "nats",
                messaging.operation.type = "process",
                messaging.operation.name = "process",
                messaging.destination.name = %request.subject,
                messaging.message.body.size = request.payload.len(),
            );
            telemetry::set_parent_from(&span, request.headers.as_ref());
            let answer =
                tracing::Instrument::instrument(answer(&fleet, &request.payload, limits), span)
                    .await;
            match fit(answer, limits.max_payload) {
                Ok(payload) => {
                    if let Err(error) = nats.publish(reply, payload.into()).await {
                        tracing::warn!(%error, "facade answer not sent");
                    }
                }
                Err(error) => tracing::error!(%error, "facade answer not encodable"),
            }
        });
    }
    let _ = requests.unsubscribe().await;
}

/// The answer encoded within `max_payload`: a body too large once encoded (JSON escaping can
/// multiply its size) is cut further and flagged, so the caller always gets an answer.
fn fit(mut answer: FacadeResponse, max_payload: usize) -> Result<Vec<u8>, serde_json::Error> {
    loop {
        let payload = serde_json::to_vec(&answer)?;
        if payload.len() <= max_payload {
            return Ok(payload);
        }
        match &mut answer.body {
            Some(body) if !body.is_empty() => {
                let half = crate::transport::cut(body, body.len() / 2).len();
                body.truncate(half);
                answer.body_truncated = true;
            }
            _ if !answer.headers.is_empty() => answer.headers.clear(),
            _ => {
                answer.error = Some("the answer does not fit in one NATS message".into());
                answer.body = None;
                return serde_json::to_vec(&answer);
            }
        }
    }
}

/// When a call refused for want of a rate-limit slot is worth making again.
const RATE_LIMITED_RETRY: chrono::Duration = chrono::Duration::seconds(1);

fn failed(error: impl Into<String>, circuit: &str) -> FacadeResponse {
    FacadeResponse {
        v: Version,
        ok: false,
        status: None,
        headers: Vec::new(),
        body: None,
        body_truncated: false,
        attempts: 0,
        duration_ms: 0,
        error: Some(error.into()),
        circuit: circuit.to_owned(),
        call_id: None,
        retry_at: None,
    }
}

async fn answer(fleet: &Fleet, payload: &[u8], limits: FacadeLimits) -> FacadeResponse {
    let call: FacadeRequest = match messages::decode(payload) {
        Ok(call) => call,
        Err(error) => return failed(format!("unreadable facade request: {error}"), "closed"),
    };
    let patience = Duration::from_millis(call.timeout_ms).min(WORKER_PATIENCE);
    let Some(worker) = fleet.wait_for(&call.service, patience).await else {
        return failed(
            format!(
                "service `{}` is not enabled on this dispatcher",
                call.service
            ),
            "closed",
        );
    };
    call_service(fleet, &worker, call, limits).await
}

fn request_for(target: &Target, call: &FacadeRequest) -> Request {
    match target.link() {
        Link::Http(_) => Request::Http(HttpRequest {
            method: call.method,
            path: call.path.clone(),
            query: call.query.clone(),
            headers: call.headers.clone(),
            body: call.body.clone(),
            content_type: call.content_type.clone(),
        }),
        Link::Soap(_) => Request::Soap(SoapRequest {
            operation: call.path.clone(),
            headers: call.headers.clone(),
            body: call.body.clone().unwrap_or_default(),
        }),
        Link::Amqp(_) => Request::Amqp(AmqpRequest {
            exchange: None,
            routing_key: call.path.clone(),
            headers: call.headers.clone(),
            body: call.body.clone().unwrap_or_default(),
            content_type: call
                .content_type
                .clone()
                .unwrap_or_else(|| "application/json".to_owned()),
        }),
    }
}

async fn call_service(
    fleet: &Fleet,
    worker: &Worker,
    call: FacadeRequest,
    limits: FacadeLimits,
) -> FacadeResponse {
    let clock = Instant::now();
    let deadline = clock + Duration::from_millis(call.timeout_ms);
    let job = Job {
        v: Version,
        id: call.call_id.unwrap_or_else(JobId::new_v7),
        event_id: None,
        rule_id: None,
        service: call.service.clone(),
        request: request_for(&worker.target, &call),
        origin: Origin::Facade,
        created_at: Utc::now(),
        replay_of: None,
        ordering_key: None,
        hold_key: false,
        source: None,
        eventname: None,
    };
    let policy = worker.service.retry;
    let mut attempt = 0;
    loop {
        let refusal = match worker.breaker.admit().await {
            Ok(Admission::Admit { .. }) => None,
            Ok(Admission::Paused { until }) => {
                // A pause that ends within the call's time is waited out, then admitted anew.
                let pause = (until - Utc::now()).to_std().unwrap_or_default();
                if Instant::now() + pause < deadline {
                    tokio::time::sleep(pause).await;
                    continue;
                }
                Some((
                    format!(
                        "`{}` asked not to be called before {} (it answered 429 Too Many \
                         Requests); nothing was sent",
                        call.service,
                        until.to_rfc3339()
                    ),
                    until,
                ))
            }
            Ok(Admission::Wait { until }) => Some((
                format!(
                    "the circuit of `{}` is open (the service failed repeatedly); next probe at {}",
                    call.service,
                    until.to_rfc3339()
                ),
                until,
            )),
            Err(error) => {
                tracing::warn!(%error, "circuit state unavailable; calling anyway");
                None
            }
        };
        // The service's rate limit holds for calls too, as long as the call's time allows.
        let left = deadline.saturating_duration_since(Instant::now());
        let refusal = match refusal {
            None if tokio::time::timeout(left, worker.until_ready())
                .await
                .is_err() =>
            {
                Some((
                    format!(
                        "`{}` is at its rate limit and no slot came within the call's deadline \
                         ({} ms); nothing was sent",
                        call.service, call.timeout_ms
                    ),
                    Utc::now() + RATE_LIMITED_RETRY,
                ))
            }
            refusal => refusal,
        };
        if let Some((error, retry_at)) = refusal {
            let circuit = worker.breaker.current().state;
            // Refused by the open circuit, or held back at the service's own request (429) or
            // limit: the latter is worth trying again soon, so it is logged as retryable.
            let status = if circuit == CircuitState::Closed {
                OutcomeStatus::FailedRetryable
            } else {
                OutcomeStatus::CircuitOpen
            };
            fleet
                .recorder()
                .refused(&job, attempt + 1, error.clone(), status)
                .await;
            let mut answer = failed(error, circuit.as_str());
            answer.attempts = attempt;
            answer.call_id = Some(job.id.to_string());
            answer.duration_ms = elapsed_ms(clock);
            answer.retry_at = Some(retry_at);
            return answer;
        }
        attempt += 1;
        let meta = AttemptMeta {
            job_id: job.id,
            event_id: None,
            attempt,
            // Set by the target from the attempt's own span.
            traceparent: None,
            body_limit: limits.body_bytes,
        };
        let started_at = Utc::now();
        let attempt_clock = Instant::now();
        let left = deadline.saturating_duration_since(Instant::now());
        let result =
            match tokio::time::timeout(left, worker.target.deliver(&job.request, &meta)).await {
                Ok(result) => result,
                Err(_) => crate::transport::Attempt::failed(
                    Verdict::Timeout,
                    format!(
                        "no answer within the call's deadline ({} ms)",
                        call.timeout_ms
                    ),
                ),
            };
        fleet
            .recorder()
            .outcome(
                &job,
                attempt,
                started_at,
                attempt_clock.elapsed(),
                &result,
                None,
            )
            .await;
        worker.learn(&result).await;
        let retry_in = match result.verdict {
            Verdict::Retryable { retry_after } if attempt <= policy.max_retries => {
                Some(retry_after.unwrap_or_else(|| {
                    backoff(
                        policy.backoff_base_ms,
                        policy.backoff_cap_ms,
                        attempt,
                        &mut rand::rng(),
                    )
                }))
            }
            Verdict::Timeout if attempt <= policy.max_retries => Some(backoff(
                policy.backoff_base_ms,
                policy.backoff_cap_ms,
                attempt,
                &mut rand::rng(),
            )),
            _ => None,
        };
        let out_of_time = retry_in.is_none_or(|wait| Instant::now() + wait >= deadline);
        if out_of_time {
            return FacadeResponse {
                v: Version,
                ok: result.verdict == Verdict::Delivered,
                status: result.status,
                headers: result.headers,
                body: result.body,
                body_truncated: result.body_truncated,
                attempts: attempt,
                duration_ms: elapsed_ms(clock),
                error: result.error,
                circuit: worker.breaker.current().state.as_str().to_owned(),
                call_id: Some(job.id.to_string()),
                retry_at: None,
            };
        }
        if let Some(wait) = retry_in {
            tokio::time::sleep(wait).await;
        }
    }
}

fn elapsed_ms(clock: Instant) -> u64 {
    u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX)
}
