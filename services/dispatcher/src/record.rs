//! What the dispatcher tells the rest of the hub: an Outcome on `<NS>_RESULTS` for every
//! attempt (the deliveries log) and a DeadLetter on `<NS>_DLQ` for every job given up on.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, message::PublishMessage};
use chrono::{DateTime, Utc};

use mih_shared::messages::{self, DeadLetter, FailureStage, Job, Outcome, OutcomeStatus, Version};
use mih_shared::names::Names;
use mih_shared::telemetry;

use crate::outcome_batch::{BatchLimits, OutcomeBatcher};
use crate::transport::{Attempt, EXCERPT_LIMIT, Verdict};

#[derive(Debug, thiserror::Error)]
#[error("publishing the {what} of job {job} failed: {cause}")]
pub(crate) struct RecordError {
    what: &'static str,
    job: String,
    cause: String,
}

#[derive(Debug, Clone)]
pub(crate) struct Recorder {
    js: jetstream::Context,
    names: Names,
    /// `dispatcher.record_requests`.
    record_requests: bool,
    outcomes: OutcomeBatcher,
}

impl Recorder {
    /// Starts the outcome batcher: call within the runtime.
    pub(crate) fn start(
        js: jetstream::Context,
        names: Names,
        record_requests: bool,
        limits: BatchLimits,
    ) -> Self {
        Recorder {
            outcomes: OutcomeBatcher::start(js.clone(), limits),
            js,
            names,
            record_requests,
        }
    }

    /// Publishes the outcome of one attempt. A lost outcome costs a line in the log, not a
    /// delivery, so failures are logged and the outcome returned all the same.
    pub(crate) async fn outcome(
        &self,
        job: &Job,
        attempt: u32,
        started_at: DateTime<Utc>,
        elapsed: Duration,
        result: &Attempt,
        retry_at: Option<DateTime<Utc>>,
    ) -> Outcome {
        let status = outcome_status(result.verdict);
        let outcome = Outcome {
            duration_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            response_status: result.status,
            // A facade call reads much more of the body than the log keeps.
            response_excerpt: result
                .body
                .as_deref()
                .map(|body| crate::transport::cut(body, EXCERPT_LIMIT).to_owned())
                .filter(|body| !body.is_empty()),
            error: result.error.clone(),
            retry_at,
            ..self.base(job, attempt, started_at, status)
        };
        self.publish_outcome(job, attempt, outcome).await
    }

    /// Records a facade call refused before anything was sent: by the open circuit
    /// (`CircuitOpen`), or by a pause or the rate limit outlasting the call. (Queued jobs are
    /// never refused: they wait in JOBS until they may go.)
    pub(crate) async fn refused(
        &self,
        job: &Job,
        attempt: u32,
        error: String,
        status: OutcomeStatus,
    ) -> Outcome {
        let outcome = Outcome {
            error: Some(error),
            ..self.base(job, attempt, Utc::now(), status)
        };
        self.publish_outcome(job, attempt, outcome).await
    }

    /// An outcome of `job` with nothing yet said about the target's answer.
    fn base(
        &self,
        job: &Job,
        attempt: u32,
        started_at: DateTime<Utc>,
        status: OutcomeStatus,
    ) -> Outcome {
        Outcome {
            v: Version,
            job_id: job.id,
            service: job.service.clone(),
            attempt,
            started_at,
            duration_ms: 0,
            status,
            response_status: None,
            response_excerpt: None,
            error: None,
            event_id: job.event_id,
            rule_id: job.rule_id,
            origin: job.origin,
            trace_id: telemetry::current_trace_id(),
            source: job.source.clone(),
            eventname: job.eventname.clone(),
            replay_of: job.replay_of,
            // Once per job: later attempts send the same request.
            request: (self.record_requests && attempt == 1).then(|| job.request.clone()),
            retry_at: None,
        }
    }

    /// Publishes an outcome in the next batch of its subject. No message id: a batch has
    /// none of its own, and the readers are idempotent on (job, attempt) anyway.
    async fn publish_outcome(&self, job: &Job, attempt: u32, outcome: Outcome) -> Outcome {
        metrics::counter!(crate::metrics::ATTEMPTS, "service" => job.service.to_string(), "status" => outcome.status.as_str()).increment(1);
        let subject = if job.replay_of.is_some() {
            self.names.replay_result_subject(&job.service)
        } else {
            self.names.result_subject(&job.service)
        };
        let stored = match messages::encode(&outcome) {
            Ok(encoded) => self.outcomes.publish(subject, encoded).await,
            Err(error) => Err(error.to_string()),
        };
        if let Err(error) = stored {
            tracing::warn!(%error, job_id = %job.id, attempt, "outcome not recorded");
        }
        outcome
    }

    pub(crate) async fn dead_letter(
        &self,
        job: &Job,
        last_outcome: Option<Outcome>,
        attempts: u32,
        reason: &str,
    ) -> Result<(), RecordError> {
        let dead = DeadLetter {
            v: Version,
            job: job.clone(),
            // The job carries the request already; a second copy could make the dead letter
            // too large for one message, and it would then never be stored.
            last_outcome: last_outcome.map(|outcome| Outcome {
                request: None,
                ..outcome
            }),
            attempts,
            reason: reason.to_owned(),
            dead_lettered_at: Utc::now(),
            stage: FailureStage::Delivery,
            event: None,
        };
        self.publish(
            self.names.dlq_subject(&job.service),
            format!("dead:{}", job.id),
            &dead,
            "dead letter",
            job,
        )
        .await
    }

    async fn publish<T: serde::Serialize>(
        &self,
        subject: String,
        message_id: String,
        message: &T,
        what: &'static str,
        job: &Job,
    ) -> Result<(), RecordError> {
        let fail = |cause: String| RecordError {
            what,
            job: job.id.to_string(),
            cause,
        };
        let payload = messages::encode(message).map_err(|e| fail(e.to_string()))?;
        let mut headers = HeaderMap::new();
        telemetry::inject_current(&mut headers);
        let message = PublishMessage::build()
            .payload(payload)
            .headers(headers)
            .message_id(message_id);
        self.js
            .send_publish(subject, message)
            .await
            .map_err(|e| fail(e.to_string()))?
            .await
            .map_err(|e| fail(e.to_string()))?;
        Ok(())
    }
}

/// How an attempt's verdict reads in the deliveries log.
pub(crate) fn outcome_status(verdict: Verdict) -> OutcomeStatus {
    match verdict {
        Verdict::Delivered => OutcomeStatus::Delivered,
        Verdict::Retryable { .. } => OutcomeStatus::FailedRetryable,
        Verdict::Timeout => OutcomeStatus::Timeout,
        Verdict::Permanent => OutcomeStatus::FailedPermanent,
    }
}
