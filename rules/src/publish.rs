//! Publishing what matched: jobs to their partition of `<NS>_JOBS` (message id = job id, and
//! a job's partition is fixed by its key, so a re-publish is recognised) and render failures as dead letters to `<NS>_DLQ`. Every publish is awaited.

use async_nats::HeaderMap;
use async_nats::jetstream::{self, message::PublishMessage};
use chrono::Utc;
use futures::future::try_join_all;

use mih_shared::messages::{self, DeadLetter, Event, FailureStage, Job, Request, Version};
use mih_shared::names::Names;
use mih_shared::partition::Partitions;
use mih_shared::telemetry;

use crate::decision::Match;

#[derive(Debug, thiserror::Error)]
#[error("publishing {what} failed: {message}")]
pub struct PublishError {
    what: String,
    message: String,
}

/// What a batch of matches turned into.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    pub jobs: usize,
    pub render_failures: usize,
}

fn headers(event: &Event, job: &Job) -> HeaderMap {
    let mut headers = HeaderMap::new();
    telemetry::inject_current(&mut headers);
    headers.insert("Mih-Event-Id", event.id.to_string().as_str());
    if let Some(rule) = job.rule_id {
        headers.insert("Mih-Rule-Id", rule.to_string().as_str());
    }
    headers
}

/// Room in a NATS message for the headers next to a job.
const HEADER_ROOM: usize = 4096;

/// A job too large for one NATS message, as a render failure: its request without the body
/// and headers that made it too large (a replay renders it again from the event).
fn too_large(mut job: Job, encoded: usize, max_payload: usize) -> Match {
    strip_request(&mut job);
    Match::RenderFailed {
        job,
        reason: format!(
            "the rendered job is {encoded} bytes; one NATS message holds at most {} (the \
             server's max_payload less room for headers): lower what the templates render, or \
             matcher.max_request_bytes",
            max_payload.saturating_sub(HEADER_ROOM)
        ),
    }
}

fn strip_request(job: &mut Job) {
    match &mut job.request {
        Request::Http(http) => {
            http.body = None;
            http.headers.clear();
        }
        Request::Amqp(amqp) => {
            amqp.body.clear();
            amqp.headers.clear();
        }
        Request::Soap(soap) => {
            soap.body.clear();
            soap.headers.clear();
        }
    }
}

/// Publishes every match of `event` and waits until JetStream stored them all, in one producer
/// span (`publish <JOBS stream>`) whose context every job carries to its dispatcher.
pub async fn publish(
    js: &jetstream::Context,
    names: &Names,
    partitions: Partitions,
    event: &Event,
    matches: Vec<Match>,
) -> Result<Published, PublishError> {
    let span = telemetry::publish_span(&names.jobs_stream(), matches.len());
    tracing::Instrument::instrument(publish_all(js, names, partitions, event, matches), span).await
}

async fn publish_all(
    js: &jetstream::Context,
    names: &Names,
    partitions: Partitions,
    event: &Event,
    matches: Vec<Match>,
) -> Result<Published, PublishError> {
    let mut published = Published::default();
    let mut acks = Vec::with_capacity(matches.len());
    let max_payload = js.client().server_info().max_payload;
    for found in matches {
        // A job that cannot fit in a message never will: it is a render failure, dead-lettered
        // now, not a publish error that would hand the event back forever.
        let (found, encoded) = match found {
            Match::Job(job) => {
                let payload = messages::encode(&job).map_err(|e| error(&job, e))?;
                if payload.len() + HEADER_ROOM > max_payload {
                    (too_large(job, payload.len(), max_payload), None)
                } else {
                    (Match::Job(job), Some(payload))
                }
            }
            render_failed => (render_failed, None),
        };
        let (metric, subject, message_id, payload, job) = match (found, encoded) {
            (Match::Job(job), Some(payload)) => {
                published.jobs += 1;
                (
                    crate::metrics::JOBS,
                    names.job_subject_for(&job, partitions),
                    job.id.to_string(),
                    payload,
                    job,
                )
            }
            (Match::Job(job), None) => {
                return Err(error(&job, "a job went unencoded"));
            }
            (Match::RenderFailed { job, reason }, _) => {
                published.render_failures += 1;
                tracing::warn!(job_id = %job.id, rule = ?job.rule_id, %reason, "request could not be rendered; dead-lettered");
                let mut dead = DeadLetter {
                    v: Version,
                    job: job.clone(),
                    last_outcome: None,
                    attempts: 0,
                    reason: format!("render failed: {reason}"),
                    dead_lettered_at: Utc::now(),
                    stage: FailureStage::Render,
                    event: Some(event.clone()),
                };
                let mut payload = messages::encode(&dead).map_err(|e| error(&job, e))?;
                if payload.len() + HEADER_ROOM > max_payload {
                    // The event is what a replay renders from; the rule's templates are in
                    // its configuration.
                    strip_request(&mut dead.job);
                    payload = messages::encode(&dead).map_err(|e| error(&job, e))?;
                }
                (
                    crate::metrics::RENDER_FAILURES,
                    names.dlq_subject(&job.service),
                    format!("render:{}", job.id),
                    payload,
                    job,
                )
            }
        };
        let message = PublishMessage::build()
            .payload(payload)
            .headers(headers(event, &job))
            .message_id(message_id);
        let ack = js
            .send_publish(subject, message)
            .await
            .map_err(|e| error(&job, e))?;
        acks.push(async move {
            let ack = ack.await.map_err(|e| error(&job, e))?;
            // A redelivered event re-publishes what JetStream already holds; count it once.
            if !ack.duplicate {
                metrics::counter!(metric, "service" => job.service.to_string()).increment(1);
            }
            Ok::<_, PublishError>(())
        });
    }
    try_join_all(acks).await?;
    Ok(published)
}

fn error(job: &Job, cause: impl std::fmt::Display) -> PublishError {
    PublishError {
        what: format!("job {}", job.id),
        message: cause.to_string(),
    }
}
