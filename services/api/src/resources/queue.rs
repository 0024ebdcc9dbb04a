//! `/api/v1/queue`: the jobs still in `<NS>_JOBS`, per service — how many wait, since when,
//! which are waiting for a retry — and an operator's two actions on one of them: attempt it
//! now, or move it to the dead letters (never a silent delete).
//!
//! JOBS is one work-queue stream per partition (`<NS>_JOBS`, `<NS>_JOBS_1`, ...). In each, a
//! service has two lanes: its jobs without an ordering key on one subject
//! (`<ns>.jobs.<service>`, `<ns>.jobs.<service>.<p>`) read by the durable consumer
//! `dispatch-<service>`, and its keyed jobs on one subject per key
//! (`<ns>.jobs.<service>.<p>.<key hash>`) read by `ordered-<service>`. A job is in its partition's stream
//! until the dispatcher acknowledges it (delivered, or dead-lettered by the dispatcher); what
//! is shown per service adds up every partition. A job's handle is its stream sequence in
//! partition 0 (`57`), and `<partition>.<sequence>` in the others (`3.57`).
//! In each partition, the consumer's delivered stream sequence splits the jobs of a service in
//! two: above it,
//! *queued* (never handed to a dispatcher); at or below it, *in the dispatcher* (being attempted,
//! held behind an open circuit, or waiting out a retry delay — a `nak` with a delay keeps the
//! message ack-pending, so `num_ack_pending` counts it and `num_pending` does not).

use std::collections::HashMap;

use async_nats::jetstream::consumer;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{DirectGetErrorKind, Stream};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use mih_shared::circuit::CircuitState;
use mih_shared::live::LiveService;
use mih_shared::messages::{self, DeadLetter, FailureStage, Job, Outcome, OutcomeStatus, Version};
use mih_shared::names::ServiceSlug;

use super::circuits::{self, CircuitView};
use super::{Problems, not_found, services};
use crate::audit;
use crate::auth::{Caller, Role};
use crate::error::{ApiFailure, ApiResult};
use crate::extract::ApiQuery;
use crate::state::AppState;

/// One service's share of JOBS.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueEntry {
    pub service: String,
    /// Every job of the service still in JOBS (queued + in_dispatcher).
    pub jobs: u64,
    /// Jobs no dispatcher has taken yet (the consumer's `num_pending`; all of them while no
    /// dispatcher has created the service's consumer).
    pub queued: u64,
    /// Jobs a dispatcher holds unacknowledged: being attempted, held behind an open circuit,
    /// or waiting for a retry (the consumer's `num_ack_pending`).
    pub in_dispatcher: u64,
    /// Of the jobs in the dispatcher, those handed out more than once (`num_redelivered`).
    /// A job waiting for its first retry is not counted until it comes back.
    pub redelivered: u64,
    /// Whether a dispatcher has created the service's consumers (in every partition; the
    /// keyed lane's only where keyed jobs wait, since it is created with the first rule that
    /// orders the service's jobs).
    pub consumer: bool,
    /// The partitions of JOBS read for this answer.
    pub partitions: u16,
    /// When the oldest job still in JOBS for the service was stored there.
    pub oldest_enqueued_at: Option<DateTime<Utc>>,
    /// Its age, in milliseconds, when this answer was made.
    pub oldest_age_ms: Option<u64>,
    pub circuit: CircuitView,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QueueList {
    pub items: Vec<QueueEntry>,
}

/// The jobs query: paging by position in every partition.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct JobsQuery {
    /// Items per page, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// Jobs after this position (`next_after` of the previous page): the last stream sequence
    /// read in each partition, comma-separated from partition 0 (a single number is partition
    /// 0's); absent for the oldest.
    pub after: Option<String>,
}

/// One job still in JOBS.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueuedJob {
    /// The handle of the actions below: `seq` in partition 0, `<partition>.<seq>` in another.
    pub handle: String,
    /// Its partition of JOBS.
    pub partition: u16,
    /// Its sequence in its partition's stream.
    pub seq: u64,
    /// `null` only when the message is not a readable job (the dispatcher drops those).
    pub job_id: Option<Uuid>,
    pub event_id: Option<Uuid>,
    pub rule_id: Option<Uuid>,
    pub source: Option<String>,
    pub eventname: Option<String>,
    /// rule, facade, replay or backfill.
    pub origin: Option<String>,
    /// For a replay: the dead job it retries.
    pub replay_of: Option<Uuid>,
    /// The rule's ordering key: the job waits for the earlier jobs of this key.
    pub ordering_key: Option<String>,
    /// When the job was made (its max age counts from here).
    pub created_at: Option<DateTime<Utc>>,
    /// When this message was stored in JOBS.
    pub enqueued_at: DateTime<Utc>,
    /// `queued` (no dispatcher has taken it yet) or `in_dispatcher` (being attempted, held
    /// behind an open circuit, or waiting for a retry).
    pub state: String,
    /// Attempts in the delivery log so far (what the recorder has stored).
    pub attempts: u32,
    /// The newest logged attempt.
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// Its status: delivered, failed_retryable, failed_permanent, timeout, circuit_open.
    pub last_status: Option<String>,
    pub last_error: Option<String>,
    pub last_response_status: Option<u16>,
    /// When the next attempt is due: the retry delay the dispatcher drew for the last
    /// attempt (backoff with full jitter, or the target's `Retry-After`), recorded with its
    /// outcome. `null` when no retry is scheduled (no attempt yet, or one from before the
    /// hub recorded it). Behind an open circuit the job waits longer: until the circuit lets
    /// it through.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Why the message is not a readable job, when it is not.
    pub unreadable: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QueuePage {
    pub service: String,
    /// Oldest first across the partitions (by the time each job was stored).
    pub items: Vec<QueuedJob>,
    /// `after` for the next page; absent on the last page.
    pub next_after: Option<String>,
}

/// What an action did to one job.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueAction {
    pub service: String,
    pub handle: String,
    pub partition: u16,
    pub seq: u64,
    pub job_id: Uuid,
    /// attempt_now or dead_letter.
    pub action: String,
}

/// A JetStream request failed: the answer is "try again", not a bug.
fn nats(what: &str, error: impl std::fmt::Display) -> ApiFailure {
    ApiFailure::Unavailable(format!("{what}: {error}"))
}

fn gone(service: &str, place: Place) -> ApiFailure {
    ApiFailure::Conflict(format!(
        "job {} of service `{service}` is no longer in the queue: already delivered or moved",
        place.handle()
    ))
}

fn chrono_time(at: time::OffsetDateTime) -> DateTime<Utc> {
    let nanos = i64::try_from(at.unix_timestamp_nanos()).unwrap_or(i64::MAX);
    DateTime::from_timestamp_nanos(nanos)
}

/// Where a job is in JOBS: its partition and its sequence in that partition's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Place {
    partition: u16,
    seq: u64,
}

impl Place {
    fn handle(self) -> String {
        if self.partition == 0 {
            self.seq.to_string()
        } else {
            format!("{}.{}", self.partition, self.seq)
        }
    }

    fn parse(raw: &str) -> ApiResult<Place> {
        let (partition, seq) = match raw.split_once('.') {
            Some((partition, seq)) => (partition.parse::<u16>().ok(), seq),
            None => (Some(0), raw),
        };
        match (partition, seq.parse::<u64>().ok().filter(|seq| *seq > 0)) {
            (Some(partition), Some(seq)) => Ok(Place { partition, seq }),
            _ => Err(ApiFailure::invalid(
                "seq",
                "must be a job's handle: its stream sequence (a positive integer), or \
                 <partition>.<sequence> for a job in another partition than 0",
            )),
        }
    }
}

async fn service(state: &AppState, name: &str) -> ApiResult<std::sync::Arc<LiveService>> {
    let slug = ServiceSlug::parse(name).map_err(|_| not_found("service", name))?;
    services::load_live(&state.db)
        .await?
        .remove(&slug)
        .ok_or_else(|| not_found("service", name))
}

/// One lane of a service's jobs in one partition of JOBS: its subject filter and the
/// dispatcher's consumer that reads it.
struct Partition {
    number: u16,
    stream: Stream,
    subject: String,
    consumer: String,
    /// The keyed lane, whose consumer a dispatcher creates only once a rule orders the
    /// service's jobs.
    keyed: bool,
}

impl Partition {
    /// Whether a message stored on `subject` is in this lane.
    fn holds(&self, subject: &str) -> bool {
        match self.subject.strip_suffix('*') {
            Some(prefix) => subject
                .strip_prefix(prefix)
                .is_some_and(|rest| !rest.is_empty() && !rest.contains('.')),
            None => subject == self.subject,
        }
    }
}

/// The streams of every partition of JOBS, partition 0 first: the configured ones that exist
/// and any left over from a higher `streams.job_partitions`.
async fn partition_streams(state: &AppState) -> ApiResult<Vec<(u16, Stream)>> {
    mih_shared::partition::streams(
        &state.js,
        &state.names,
        mih_shared::partition::Partitioned::Jobs,
        state.partitions,
    )
    .await
    .map_err(|e| nats("the JOBS stream is unavailable", e))
}

/// `service`'s two lanes (unkeyed, keyed) in each of `streams`.
fn of_service(
    state: &AppState,
    streams: &[(u16, Stream)],
    service: &ServiceSlug,
) -> Vec<Partition> {
    let names = &state.names;
    streams
        .iter()
        .flat_map(|(number, stream)| {
            [
                Partition {
                    number: *number,
                    stream: stream.clone(),
                    subject: names.job_subject_in(service, *number),
                    consumer: names.dispatch_consumer(service),
                    keyed: false,
                },
                Partition {
                    number: *number,
                    stream: stream.clone(),
                    subject: names.keyed_jobs_in(service, *number),
                    consumer: names.ordered_consumer(service),
                    keyed: true,
                },
            ]
        })
        .collect()
}

/// Every partition of JOBS that can hold `service`'s jobs, partition 0 first.
async fn partitions(state: &AppState, service: &ServiceSlug) -> ApiResult<Vec<Partition>> {
    Ok(of_service(state, &partition_streams(state).await?, service))
}

/// The lanes of the partition holding `place`, which must be one `service`'s jobs can be in.
async fn partition_of(
    state: &AppState,
    service: &ServiceSlug,
    place: Place,
) -> ApiResult<Vec<Partition>> {
    let lanes: Vec<Partition> = partitions(state, service)
        .await?
        .into_iter()
        .filter(|p| p.number == place.partition)
        .collect();
    if lanes.is_empty() {
        return Err(not_found(
            "queued job",
            format!("{service}/{}", place.handle()),
        ));
    }
    Ok(lanes)
}

/// The dispatcher's consumer of one lane, or `None` while no dispatcher has created it.
async fn consumer_info(lane: &Partition) -> ApiResult<Option<consumer::Info>> {
    match lane.stream.consumer_info(&lane.consumer).await {
        Ok(info) => Ok(Some(info)),
        Err(error) => match error.kind() {
            async_nats::jetstream::context::ConsumerInfoErrorKind::NotFound => Ok(None),
            _ => Err(nats("the dispatcher consumer is unavailable", error)),
        },
    }
}

/// How many messages a stream holds on `subject`.
async fn count(stream: &Stream, subject: &str) -> ApiResult<u64> {
    let mut subjects = stream
        .info_with_subjects(subject)
        .await
        .map_err(|e| nats("cannot count the jobs", e))?;
    let mut total = 0u64;
    while let Some((_, n)) = subjects
        .try_next()
        .await
        .map_err(|e| nats("cannot count the jobs", e))?
    {
        total += u64::try_from(n).unwrap_or(u64::MAX);
    }
    Ok(total)
}

/// One partition's share of a service's queue.
#[derive(Debug, Default)]
struct Share {
    jobs: u64,
    queued: u64,
    in_dispatcher: u64,
    redelivered: u64,
    consumer: bool,
    oldest: Option<DateTime<Utc>>,
}

async fn share(partition: &Partition) -> ApiResult<Share> {
    let jobs = count(&partition.stream, &partition.subject).await?;
    let info = consumer_info(partition).await?;
    let oldest = match partition
        .stream
        .direct_get_first_for_subject(partition.subject.clone())
        .await
    {
        Ok(message) => Some(chrono_time(message.time)),
        Err(error) if matches!(error.kind(), DirectGetErrorKind::NotFound) => None,
        Err(error) => return Err(nats("cannot read the oldest job", error)),
    };
    Ok(match &info {
        Some(info) => Share {
            jobs,
            queued: info.num_pending,
            in_dispatcher: u64::try_from(info.num_ack_pending).unwrap_or(u64::MAX),
            redelivered: u64::try_from(info.num_redelivered).unwrap_or(u64::MAX),
            consumer: true,
            oldest,
        },
        None => Share {
            jobs,
            queued: jobs,
            oldest,
            ..Share::default()
        },
    })
}

async fn entry(
    state: &AppState,
    streams: &[(u16, Stream)],
    service: &LiveService,
    circuit: CircuitView,
    now: DateTime<Utc>,
) -> ApiResult<QueueEntry> {
    let partitions = of_service(state, streams, &service.name);
    let shares = futures::future::try_join_all(partitions.iter().map(share)).await?;
    let oldest = shares.iter().filter_map(|s| s.oldest).min();
    Ok(QueueEntry {
        service: service.name.to_string(),
        jobs: shares.iter().map(|s| s.jobs).sum(),
        queued: shares.iter().map(|s| s.queued).sum(),
        in_dispatcher: shares.iter().map(|s| s.in_dispatcher).sum(),
        redelivered: shares.iter().map(|s| s.redelivered).sum(),
        // A keyed lane without a consumer is fine while it holds nothing.
        consumer: !shares.is_empty()
            && shares
                .iter()
                .zip(&partitions)
                .all(|(share, lane)| share.consumer || (lane.keyed && share.jobs == 0)),
        partitions: u16::try_from(streams.len()).unwrap_or(u16::MAX),
        oldest_enqueued_at: oldest,
        oldest_age_ms: oldest.map(|at| u64::try_from((now - at).num_milliseconds()).unwrap_or(0)),
        circuit,
    })
}

/// Every service's queue: jobs waiting, in the dispatcher, the oldest's age, the circuit.
#[utoipa::path(get, path = "/api/v1/queue", tag = "queue",
    responses((status = 200, body = QueueList), (status = 401), (status = 403),
              (status = 503, description = "NATS did not answer")))]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<QueueList>> {
    caller.require(Role::Viewer)?;
    let services = services::load_live(&state.db).await?;
    let mut circuits: HashMap<String, CircuitView> = circuits::all(&state)
        .await?
        .into_iter()
        .map(|view| (view.service.clone(), view))
        .collect();
    // Looked up once for every service.
    let streams = partition_streams(&state).await?;
    let now = Utc::now();
    let mut items = Vec::with_capacity(services.len());
    for service in services.values() {
        let Some(circuit) = circuits.remove(service.name.as_str()) else {
            continue; // created between the two reads; it shows next time
        };
        items.push(entry(&state, &streams, service, circuit, now).await?);
    }
    Ok(Json(QueueList { items }))
}

/// The delivery log's summary of a job: how many attempts, and the newest.
#[derive(Debug, sqlx::FromRow)]
struct Logged {
    job_id: Uuid,
    attempts: i64,
    attempt: i32,
    status: String,
    started_at: DateTime<Utc>,
    duration_ms: i64,
    response_status: Option<i32>,
    response_excerpt: Option<String>,
    error: Option<String>,
    trace_id: Option<String>,
    retry_at: Option<DateTime<Utc>>,
}

async fn logged(state: &AppState, ids: &[Uuid]) -> ApiResult<HashMap<Uuid, Logged>> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<Logged> = sqlx::query_as(
        "SELECT DISTINCT ON (job_id) job_id, count(*) OVER (PARTITION BY job_id) AS attempts, \
           attempt, status, started_at, duration_ms, response_status, response_excerpt, error, \
           trace_id, retry_at \
         FROM deliveries WHERE job_id = ANY($1) \
         ORDER BY job_id, attempt DESC",
    )
    .bind(ids)
    .fetch_all(&state.db)
    .await?;
    Ok(rows.into_iter().map(|row| (row.job_id, row)).collect())
}

fn job_view(
    place: Place,
    enqueued_at: DateTime<Utc>,
    delivered_up_to: u64,
    job: Result<Job, String>,
    log: Option<&Logged>,
) -> QueuedJob {
    let (job, unreadable) = match job {
        Ok(job) => (Some(job), None),
        Err(why) => (None, Some(why)),
    };
    let taken = place.seq <= delivered_up_to;
    QueuedJob {
        handle: place.handle(),
        partition: place.partition,
        seq: place.seq,
        job_id: job.as_ref().map(|j| j.id.0),
        event_id: job.as_ref().and_then(|j| j.event_id.map(|id| id.0)),
        rule_id: job.as_ref().and_then(|j| j.rule_id.map(|id| id.0)),
        source: job
            .as_ref()
            .and_then(|j| j.source.as_ref().map(ToString::to_string)),
        eventname: job.as_ref().and_then(|j| j.eventname.clone()),
        origin: job
            .as_ref()
            .and_then(|j| serde_json::to_value(j.origin).ok())
            .and_then(|v| v.as_str().map(str::to_owned)),
        replay_of: job.as_ref().and_then(|j| j.replay_of.map(|id| id.0)),
        ordering_key: job
            .as_ref()
            .and_then(|j| j.ordering_key().map(str::to_owned)),
        created_at: job.as_ref().map(|j| j.created_at),
        enqueued_at,
        state: if taken { "in_dispatcher" } else { "queued" }.to_owned(),
        attempts: log.map_or(0, |l| u32::try_from(l.attempts).unwrap_or(u32::MAX)),
        last_attempt_at: log.map(|l| l.started_at),
        last_status: log.map(|l| l.status.clone()),
        last_error: log.and_then(|l| l.error.clone()),
        last_response_status: log
            .and_then(|l| l.response_status.and_then(|s| u16::try_from(s).ok())),
        // Only a job a dispatcher holds is waiting for that retry; a queued one goes in turn.
        next_attempt_at: log.and_then(|l| l.retry_at).filter(|_| taken),
        unreadable,
    }
}

/// `after`: the last sequence read in each partition, from partition 0.
fn parse_after(raw: Option<&str>) -> ApiResult<Vec<u64>> {
    let Some(raw) = raw.map(str::trim).filter(|raw| !raw.is_empty()) else {
        return Ok(Vec::new());
    };
    raw.split(',')
        .map(|part| part.trim().parse::<u64>())
        .collect::<Result<Vec<u64>, _>>()
        .map_err(|_| {
            ApiFailure::invalid(
                "after",
                "must be the next_after of a previous page: sequences separated by commas",
            )
        })
}

fn format_after(positions: &[u64]) -> String {
    let used = positions
        .iter()
        .rposition(|seq| *seq > 0)
        .map_or(1, |last| last + 1);
    positions[..used]
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The jobs of one service still in JOBS, oldest first across its partitions, paged.
#[utoipa::path(get, path = "/api/v1/queue/{service}/jobs", tag = "queue",
    params(("service" = String, Path), JobsQuery),
    responses((status = 200, body = QueuePage), (status = 401), (status = 403), (status = 404), (status = 422),
              (status = 503, description = "NATS did not answer")))]
pub(crate) async fn jobs(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiQuery(query): ApiQuery<JobsQuery>,
) -> ApiResult<Json<QueuePage>> {
    caller.require(Role::Viewer)?;
    let mut problems = Problems::default();
    let limit = query.limit.unwrap_or(50);
    problems.check((1..=500).contains(&limit), "limit", "must be 1 to 500");
    problems.into_result()?;
    let after = parse_after(query.after.as_deref())?;
    let limit = usize::try_from(limit).unwrap_or(50);
    let service = service(&state, &name).await?;
    let partitions = partitions(&state, &service.name).await?;
    let width = partitions
        .iter()
        .map(|p| usize::from(p.number) + 1)
        .max()
        .unwrap_or(1)
        .max(after.len());
    let mut positions = vec![0u64; width];
    positions[..after.len()].copy_from_slice(&after);

    // A merge of the partitions by the time each job was stored: one message read ahead in
    // each, so a page costs about `limit` reads whatever the number of partitions.
    // Both lanes of a partition share its sequences: ordered by (time, partition, sequence),
    // a partition's messages are taken in sequence order whichever lane holds them, so one
    // position per partition pages both.
    let mut heads = Vec::with_capacity(partitions.len());
    let mut delivered_up_to = Vec::with_capacity(partitions.len());
    for partition in &partitions {
        let index = usize::from(partition.number);
        let from = positions[index].saturating_add(1);
        heads.push(next_message(&partition.stream, &partition.subject, from).await?);
        delivered_up_to.push(
            consumer_info(partition)
                .await?
                .map_or(0, |info| info.delivered.stream_sequence),
        );
    }
    let mut taken = Vec::new();
    while taken.len() < limit {
        let next = heads
            .iter()
            .enumerate()
            .filter_map(|(i, head)| {
                head.as_ref()
                    .map(|m| (m.time, partitions[i].number, m.sequence, i))
            })
            .min();
        let Some((_, _, _, i)) = next else { break };
        let Some(message) = heads[i].take() else {
            break;
        };
        let partition = &partitions[i];
        positions[usize::from(partition.number)] = message.sequence;
        heads[i] = next_message(
            &partition.stream,
            &partition.subject,
            message.sequence.saturating_add(1),
        )
        .await?;
        taken.push((i, message));
    }
    let more = heads.iter().any(Option::is_some);

    let decoded: Vec<Result<Job, String>> = taken
        .iter()
        .map(|(_, m)| messages::decode::<Job>(&m.payload).map_err(|e| e.to_string()))
        .collect();
    let ids: Vec<Uuid> = decoded
        .iter()
        .filter_map(|job| job.as_ref().ok().map(|job| job.id.0))
        .collect();
    let log = logged(&state, &ids).await?;
    let items: Vec<QueuedJob> = taken
        .iter()
        .zip(decoded)
        .map(|((lane, message), job)| {
            let entry = job.as_ref().ok().and_then(|job| log.get(&job.id.0));
            job_view(
                Place {
                    partition: partitions[*lane].number,
                    seq: message.sequence,
                },
                chrono_time(message.time),
                delivered_up_to[*lane],
                job,
                entry,
            )
        })
        .collect();
    Ok(Json(QueuePage {
        service: service.name.to_string(),
        items,
        next_after: more.then(|| format_after(&positions)),
    }))
}

async fn next_message(
    stream: &Stream,
    subject: &str,
    from: u64,
) -> ApiResult<Option<async_nats::jetstream::message::StreamMessage>> {
    match stream
        .direct_get_next_for_subject(subject.to_owned(), Some(from))
        .await
    {
        Ok(message) => Ok(Some(message)),
        Err(error) if matches!(error.kind(), DirectGetErrorKind::NotFound) => Ok(None),
        Err(error) => Err(nats("cannot read the queue", error)),
    }
}

/// The job stored at `place`, which must be one of `service`'s: 404 when it is another
/// service's, 409 when it is gone.
async fn queued_job(
    lanes: Vec<Partition>,
    service: &ServiceSlug,
    place: Place,
) -> ApiResult<(Partition, Job, DateTime<Utc>)> {
    let Some(stream) = lanes.first().map(|lane| lane.stream.clone()) else {
        return Err(not_found(
            "queued job",
            format!("{service}/{}", place.handle()),
        ));
    };
    let message = match stream.direct_get(place.seq).await {
        Ok(message) => message,
        Err(error) if matches!(error.kind(), DirectGetErrorKind::NotFound) => {
            return Err(gone(service.as_str(), place));
        }
        Err(error) => return Err(nats("cannot read the job", error)),
    };
    let Some(lane) = lanes
        .into_iter()
        .find(|lane| lane.holds(message.subject.as_str()))
    else {
        return Err(not_found(
            "queued job",
            format!("{service}/{}", place.handle()),
        ));
    };
    let job: Job = messages::decode(&message.payload).map_err(|e| {
        ApiFailure::Conflict(format!(
            "job {} is not a readable job ({e}); the dispatcher drops it",
            place.handle()
        ))
    })?;
    Ok((lane, job, chrono_time(message.time)))
}

/// Attempt a job waiting for a retry now, without waiting out its retry delay.
///
/// Only a job the dispatcher holds (`state` = `in_dispatcher`) can be hurried: a queued one
/// goes out in its turn anyway, and an open circuit holds every attempt back (reset it first;
/// both answer 409). The api sends the consumer the same negative acknowledgement the
/// dispatcher sends when it schedules a retry, without a delay, so JetStream hands the job out
/// again at once: same message, same job id (the target's `Idempotency-Key`), the next attempt
/// number — the delivery log goes on where it was, nothing is copied or deleted, nothing can
/// be lost. Race: a job being attempted at the moment of the request is handed out again
/// and may be attempted twice; targets dedupe by the idempotency key.
#[utoipa::path(post, path = "/api/v1/queue/{service}/jobs/{seq}/attempt-now", tag = "queue",
    params(("service" = String, Path),
           ("seq" = String, Path, description = "The job's handle: `<seq>` in partition 0, `<partition>.<seq>` in another")),
    responses((status = 202, body = QueueAction), (status = 401), (status = 403), (status = 404),
              (status = 409, description = "The job is gone (already delivered or moved), not yet taken by a dispatcher, or the circuit is open"),
              (status = 503, description = "NATS did not answer")))]
pub(crate) async fn attempt_now(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, seq)): Path<(String, String)>,
) -> ApiResult<(StatusCode, Json<QueueAction>)> {
    caller.require(Role::Operator)?;
    let service = service(&state, &name).await?;
    let place = Place::parse(&seq)?;
    let lanes = partition_of(&state, &service.name, place).await?;
    let (partition, job, enqueued_at) = queued_job(lanes, &service.name, place).await?;
    let (circuit, _) = state
        .circuits
        .load(&service.name)
        .await
        .map_err(|e| nats("circuit state unavailable", e))?;
    if circuit.state == CircuitState::Open {
        return Err(ApiFailure::Conflict(format!(
            "the circuit of `{}` is open: no attempt goes out until it lets one through (reset it to retry now)",
            service.name
        )));
    }
    let info = consumer_info(&partition)
        .await?
        .filter(|info| place.seq <= info.delivered.stream_sequence)
        .ok_or_else(|| {
            ApiFailure::Conflict(format!(
                "job {} is queued, not waiting for a retry: it goes out in its turn",
                place.handle()
            ))
        })?;
    // The consumer's reply subject for a delivery of `seq`: `$JS.ACK.<stream>.<consumer>.
    // <delivery count>.<stream seq>.<consumer seq>.<timestamp>.<pending>`. The server acts on a
    // NAK when the stream sequence is pending and the consumer sequence lies between its ack
    // floor and its last delivery — the last delivery's is always such a one.
    let subject = format!(
        "$JS.ACK.{}.{}.1.{}.{}.{}.0",
        state.names.jobs_partition_stream(place.partition),
        partition.consumer,
        place.seq,
        info.delivered.consumer_sequence,
        Utc::now().timestamp_nanos_opt().unwrap_or(0),
    );
    let client = state.js.client();
    client
        .publish(subject, "-NAK".into())
        .await
        .map_err(|e| nats("cannot reach the dispatcher's consumer", e))?;
    client
        .flush()
        .await
        .map_err(|e| nats("cannot reach the dispatcher's consumer", e))?;
    let view = job_view(place, enqueued_at, place.seq, Ok(job.clone()), None);
    let mut conn = state.db.acquire().await?;
    audit::record(
        &mut conn,
        &caller.actor(),
        "attempt_now",
        "queued_job",
        &job.id.to_string(),
        serde_json::to_value(&view).ok(),
        None,
    )
    .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(QueueAction {
            service: service.name.to_string(),
            handle: place.handle(),
            partition: place.partition,
            seq: place.seq,
            job_id: job.id.0,
            action: "attempt_now".to_owned(),
        }),
    ))
}

/// The last logged attempt as the dispatcher reported it, for the dead letter.
fn last_outcome(job: &Job, log: &Logged) -> Option<Outcome> {
    let status: OutcomeStatus = serde_json::from_value(serde_json::json!(log.status)).ok()?;
    Some(Outcome {
        v: Version,
        job_id: job.id,
        service: job.service.clone(),
        attempt: u32::try_from(log.attempt).unwrap_or(0),
        started_at: log.started_at,
        duration_ms: u64::try_from(log.duration_ms).unwrap_or(0),
        status,
        response_status: log.response_status.and_then(|s| u16::try_from(s).ok()),
        response_excerpt: log.response_excerpt.clone(),
        error: log.error.clone(),
        event_id: job.event_id,
        rule_id: job.rule_id,
        origin: job.origin,
        trace_id: log.trace_id.clone(),
        source: job.source.clone(),
        eventname: job.eventname.clone(),
        replay_of: job.replay_of,
        request: None,
        retry_at: None,
    })
}

/// Move a job from the queue to the dead letters, where it can be inspected and replayed.
///
/// The dead letter is the dispatcher's own (same subject, same message id `dead:<job id>`, its
/// last logged attempt, the reason naming the operator), so the dlq service keeps it like any
/// other. Order: the dead letter is stored (JetStream ack) *before* the job is deleted from
/// JOBS, so a crash or a NATS failure between the two leaves the job in both places — a
/// duplicate at worst, never nothing; deleting first could lose it. The delete is atomic: if
/// the job went meanwhile (delivered, or moved by another request) the answer is 409; a second
/// request for the same job is 409 too, and its dead letter is the same message. Race: a job
/// being attempted at the moment of the request may still reach the target and also appear in
/// the dead letters (a replay then sends it under a new job id, with the same event id).
#[utoipa::path(post, path = "/api/v1/queue/{service}/jobs/{seq}/dead-letter", tag = "queue",
    params(("service" = String, Path),
           ("seq" = String, Path, description = "The job's handle: `<seq>` in partition 0, `<partition>.<seq>` in another")),
    responses((status = 200, body = QueueAction), (status = 401), (status = 403), (status = 404),
              (status = 409, description = "The job is gone: already delivered or moved"),
              (status = 503, description = "NATS did not store the dead letter or delete the job")))]
pub(crate) async fn dead_letter(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, seq)): Path<(String, String)>,
) -> ApiResult<Json<QueueAction>> {
    caller.require(Role::Operator)?;
    let service = service(&state, &name).await?;
    let place = Place::parse(&seq)?;
    let lanes = partition_of(&state, &service.name, place).await?;
    let (partition, job, enqueued_at) = queued_job(lanes, &service.name, place).await?;
    let log = logged(&state, &[job.id.0]).await?;
    let log = log.get(&job.id.0);
    let actor = caller.actor();
    let attempts = log.map_or(0, |l| u32::try_from(l.attempts).unwrap_or(u32::MAX));
    let dead = DeadLetter {
        v: Version,
        job: job.clone(),
        last_outcome: log.and_then(|l| last_outcome(&job, l)),
        attempts,
        reason: format!(
            "moved to the dead letters from the queue by {actor} after {attempts} logged attempt(s)"
        ),
        dead_lettered_at: Utc::now(),
        stage: FailureStage::Delivery,
        event: None,
    };
    let payload = messages::encode(&dead)
        .map_err(|e| ApiFailure::Internal(format!("cannot encode the dead letter: {e}")))?;
    let message = PublishMessage::build()
        .payload(payload)
        .message_id(format!("dead:{}", job.id));
    state
        .js
        .send_publish(state.names.dlq_subject(&service.name), message)
        .await
        .map_err(|e| nats("the dead letter was not stored", e))?
        .await
        .map_err(|e| nats("the dead letter was not stored", e))?;
    // Only now, with the dead letter stored, may the job leave JOBS.
    match partition.stream.delete_message(place.seq).await {
        Ok(true) => {}
        Ok(false) => return Err(gone(service.name.as_str(), place)),
        Err(error) => {
            let missing = matches!(
                error.kind(),
                async_nats::jetstream::stream::DeleteMessageErrorKind::JetStream(e)
                    if e.error_code() == async_nats::jetstream::ErrorCode::STREAM_MESSAGE_DELETE_FAILED
                        || e.error_code() == async_nats::jetstream::ErrorCode::NO_MESSAGE_FOUND
            );
            if missing {
                tracing::warn!(job_id = %job.id, handle = %place.handle(), "job left the queue while it was being dead-lettered; its dead letter stays");
                return Err(gone(service.name.as_str(), place));
            }
            return Err(nats(
                "the dead letter is stored but the job is still queued (it may be delivered too)",
                error,
            ));
        }
    }
    let view = job_view(place, enqueued_at, 0, Ok(job.clone()), log);
    let mut conn = state.db.acquire().await?;
    audit::record(
        &mut conn,
        &actor,
        "dead_letter",
        "queued_job",
        &job.id.to_string(),
        serde_json::to_value(&view).ok(),
        None,
    )
    .await?;
    Ok(Json(QueueAction {
        service: service.name.to_string(),
        handle: place.handle(),
        partition: place.partition,
        seq: place.seq,
        job_id: job.id.0,
        action: "dead_letter".to_owned(),
    }))
}
