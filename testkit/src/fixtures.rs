//! Real Moodle events (see `fixtures/README.md`), and the messages the pipeline passes on
//! about them: jobs, outcomes, dead letters.

use chrono::{DateTime, Utc};
use serde_json::Value;

use mih_shared::messages::{
    DeadLetter, EventId, FailureStage, HttpMethod, HttpRequest, Job, JobId, Origin, Outcome,
    OutcomeStatus, Request, Version,
};
use mih_shared::names::{ServiceSlug, SourceId};

const MOODLE_EVENTS: &str = include_str!("../fixtures/moodle-events.jsonl");

/// The 40 fixture events, as JSON values.
pub fn moodle_events() -> Vec<Value> {
    MOODLE_EVENTS
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("fixture line is not JSON: {e}"))
        })
        .collect()
}

/// The fixture file as it is: one event per line.
pub fn moodle_events_ndjson() -> &'static str {
    MOODLE_EVENTS
}

/// A job as the matcher queues it for a `user_created` event from the source `moodle`: a
/// JSON POST of `body` to `path` on `service` (a valid slug).
pub fn job(service: &str, path: &str, body: &str) -> Job {
    Job {
        v: Version,
        id: JobId::new_v7(),
        event_id: Some(EventId::new_v7()),
        rule_id: None,
        service: ServiceSlug::parse(service).expect("fixture service is a slug"),
        request: Request::Http(HttpRequest {
            method: HttpMethod::Post,
            path: path.to_owned(),
            query: Vec::new(),
            headers: Vec::new(),
            body: Some(body.to_owned()),
            content_type: Some("application/json".to_owned()),
        }),
        origin: Origin::Rule,
        created_at: Utc::now(),
        replay_of: None,
        ordering_key: None,
        hold_key: false,
        source: Some(SourceId::parse("moodle").expect("fixture source is valid")),
        eventname: Some("\\core\\event\\user_created".to_owned()),
    }
}

/// The first attempt at `job`, started at `started_at`, as the dispatcher reports it: the
/// target answered 422, `error` says why when it failed.
pub fn outcome(
    job: &Job,
    status: OutcomeStatus,
    error: Option<&str>,
    started_at: DateTime<Utc>,
) -> Outcome {
    Outcome {
        v: Version,
        job_id: job.id,
        service: job.service.clone(),
        attempt: 1,
        started_at,
        duration_ms: 12,
        status,
        response_status: Some(422),
        response_excerpt: None,
        error: error.map(str::to_owned),
        event_id: job.event_id,
        rule_id: job.rule_id,
        origin: job.origin,
        trace_id: None,
        source: job.source.clone(),
        eventname: job.eventname.clone(),
        replay_of: job.replay_of,
        request: Some(job.request.clone()),
        retry_at: None,
    }
}

/// `job` given up at `at` for `reason`, as the dispatcher writes it: after one attempt that
/// failed for good with `error`, or (`None`) before any attempt reached anyone.
pub fn dead_letter(job: Job, reason: &str, error: Option<&str>, at: DateTime<Utc>) -> DeadLetter {
    let last_outcome =
        error.map(|error| outcome(&job, OutcomeStatus::FailedPermanent, Some(error), at));
    DeadLetter {
        v: Version,
        attempts: u32::from(last_outcome.is_some()),
        job,
        last_outcome,
        reason: reason.to_owned(),
        dead_lettered_at: at,
        stage: FailureStage::Delivery,
        event: None,
    }
}
