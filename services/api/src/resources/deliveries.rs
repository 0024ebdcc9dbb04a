//! The delivery log (viewer role): `GET /api/v1/deliveries` searches attempts, newest first;
//! `GET /api/v1/deliveries/{job_id}` shows one job with every attempt and the request sent.
//! Both read what the recorder projected from `<NS>_RESULTS`.

use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{Problems, not_found};
use crate::auth::{Caller, Role};
use crate::error::{ApiFailure, ApiResult};
use crate::extract::{ApiQuery, Page, PageQuery};
use crate::state::AppState;

pub const STATUSES: &[&str] = &[
    "delivered",
    "failed_retryable",
    "failed_permanent",
    "timeout",
    "circuit_open",
];
const ORIGINS: &[&str] = &["rule", "facade", "replay", "backfill"];

/// One delivery attempt.
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct DeliveryAttempt {
    pub job_id: Uuid,
    /// 1 for the first attempt.
    pub attempt: i32,
    pub service: String,
    /// The rule that made the job; absent for facade calls.
    pub rule_id: Option<Uuid>,
    /// The Moodle event delivered; absent for facade calls.
    pub event_id: Option<Uuid>,
    /// The Moodle site (source) the event came from.
    pub source: Option<String>,
    /// The Moodle event's name, e.g. `\core\event\user_created`.
    pub eventname: Option<String>,
    /// rule, facade, replay or backfill.
    pub origin: String,
    /// delivered, failed_retryable, failed_permanent, timeout, or circuit_open (a facade call
    /// the open circuit refused: queued jobs are never refused, they wait).
    pub status: String,
    pub started_at: DateTime<Utc>,
    pub duration_ms: i64,
    /// The target's HTTP status (or the transport's equivalent).
    pub response_status: Option<i32>,
    /// The start of the response body (bounded by the dispatcher).
    pub response_excerpt: Option<String>,
    pub error: Option<String>,
    /// The OpenTelemetry trace of the attempt.
    pub trace_id: Option<String>,
    /// For a replay: the job whose dead letter it retries.
    pub replay_of: Option<Uuid>,
}

/// One attempt of a job, in the job's detail.
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct JobAttemptView {
    pub attempt: i32,
    /// delivered, failed_retryable, failed_permanent, timeout, or circuit_open (a facade call
    /// the open circuit refused: queued jobs are never refused, they wait).
    pub status: String,
    pub started_at: DateTime<Utc>,
    pub duration_ms: i64,
    pub response_status: Option<i32>,
    pub response_excerpt: Option<String>,
    pub error: Option<String>,
    pub trace_id: Option<String>,
    pub recorded_at: DateTime<Utc>,
}

/// A job as the delivery log knows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryDetail {
    pub job_id: Uuid,
    pub service: String,
    pub rule_id: Option<Uuid>,
    pub event_id: Option<Uuid>,
    pub source: Option<String>,
    pub eventname: Option<String>,
    /// rule, facade, replay or backfill.
    pub origin: String,
    /// The status of the latest attempt recorded.
    pub status: String,
    /// For a replay: the job whose dead letter it retries.
    pub replay_of: Option<Uuid>,
    /// Jobs that replayed this one (newest last).
    pub replayed_by: Vec<Uuid>,
    /// The request as sent (method, path, headers, body — or AMQP routing key, SOAP
    /// operation); absent when the first attempt's outcome was not recorded.
    #[schema(value_type = Option<Object>)]
    pub request: Option<serde_json::Value>,
    /// Every attempt recorded, in order.
    pub attempts: Vec<JobAttemptView>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveryFilter {
    /// Attempts of this service.
    pub service: Option<String>,
    /// Attempts of jobs made by this rule (UUID).
    pub rule_id: Option<String>,
    /// delivered, failed_retryable, failed_permanent, timeout, or circuit_open (a facade call
    /// the open circuit refused: queued jobs are never refused, they wait).
    pub status: Option<String>,
    /// Attempts delivering this Moodle event (UUID).
    pub event_id: Option<String>,
    /// Attempts for events of this source.
    pub source: Option<String>,
    /// rule, facade, replay or backfill.
    pub origin: Option<String>,
    /// RFC 3339; attempts started at or after this instant.
    pub from: Option<String>,
    /// RFC 3339; attempts started before this instant.
    pub to: Option<String>,
    /// Attempts delivering events of this name (`\core\event\user_created`; the leading
    /// backslash is optional).
    pub eventname: Option<String>,
    /// Text in the event name, the error or the response excerpt (case-insensitive; 2 to 200
    /// characters). Narrow it with a time range on a large log.
    pub q: Option<String>,
}

/// `q` as a LIKE pattern matching it anywhere, its own `%`, `_` and `\` taken literally.
fn contains_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// Parses an optional query value, naming the field when it is malformed.
pub fn parse_field<T>(
    problems: &mut Problems,
    field: &str,
    raw: Option<&str>,
    parse: impl FnOnce(&str) -> Option<T>,
    expected: &str,
) -> Option<T> {
    let raw = raw?;
    let parsed = parse(raw);
    if parsed.is_none() {
        problems.add(field, format!("`{raw}` is not {expected}"));
    }
    parsed
}

pub fn parse_time(raw: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(raw)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

pub fn parse_uuid(raw: &str) -> Option<Uuid> {
    Uuid::parse_str(raw).ok()
}

fn one_of(problems: &mut Problems, field: &str, value: Option<&str>, allowed: &[&str]) {
    if let Some(value) = value
        && !allowed.contains(&value)
    {
        problems.add(field, format!("must be one of {}", allowed.join(", ")));
    }
}

/// The keyset of the newest-first order: (started_at, job_id, attempt).
fn cursor_of(d: &DeliveryAttempt) -> String {
    format!(
        "{}_{}_{}",
        d.started_at.timestamp_micros(),
        d.job_id,
        d.attempt
    )
}

fn parse_cursor(raw: &str) -> Option<(DateTime<Utc>, Uuid, i32)> {
    let mut parts = raw.splitn(3, '_');
    let micros = parts.next()?.parse::<i64>().ok()?;
    let job = Uuid::parse_str(parts.next()?).ok()?;
    let attempt = parts.next()?.parse::<i32>().ok()?;
    Some((DateTime::from_timestamp_micros(micros)?, job, attempt))
}

/// Search the delivery log: one item per attempt, newest first.
#[utoipa::path(get, path = "/api/v1/deliveries", tag = "deliveries", params(DeliveryFilter, PageQuery),
    responses((status = 200, body = Page<DeliveryAttempt>), (status = 401), (status = 403),
              (status = 422)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(filter): ApiQuery<DeliveryFilter>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> ApiResult<Json<Page<DeliveryAttempt>>> {
    caller.require(Role::Viewer)?;
    let limit = page.limit()?;
    let mut problems = Problems::default();
    let rule_id = parse_field(
        &mut problems,
        "rule_id",
        filter.rule_id.as_deref(),
        parse_uuid,
        "a rule id (UUID)",
    );
    let event_id = parse_field(
        &mut problems,
        "event_id",
        filter.event_id.as_deref(),
        parse_uuid,
        "an event id (UUID)",
    );
    let from = parse_field(
        &mut problems,
        "from",
        filter.from.as_deref(),
        parse_time,
        "an RFC 3339 time",
    );
    let to = parse_field(
        &mut problems,
        "to",
        filter.to.as_deref(),
        parse_time,
        "an RFC 3339 time",
    );
    if let (Some(from), Some(to)) = (from, to) {
        problems.check(from < to, "to", "must be after from");
    }
    one_of(&mut problems, "status", filter.status.as_deref(), STATUSES);
    one_of(&mut problems, "origin", filter.origin.as_deref(), ORIGINS);
    let eventname = filter.eventname.as_deref().map(|name| {
        let name = name.trim();
        if name.starts_with('\\') {
            name.to_owned()
        } else {
            format!("\\{name}")
        }
    });
    let q = filter.q.as_deref().map(str::trim);
    if let Some(q) = q {
        problems.check(
            (2..=200).contains(&q.chars().count()),
            "q",
            "must be 2 to 200 characters",
        );
    }
    let q = q.map(contains_pattern);
    let cursor = parse_field(
        &mut problems,
        "cursor",
        page.cursor.as_deref(),
        parse_cursor,
        "a cursor this API issued",
    );
    problems.into_result()?;
    let (after_at, after_job, after_attempt) = cursor.unzip3();
    let rows: Vec<DeliveryAttempt> = sqlx::query_as(
        "SELECT job_id, attempt, service, rule_id, event_id, source, eventname, origin, status, \
         started_at, duration_ms, response_status, response_excerpt, error, trace_id, replay_of \
         FROM deliveries \
         WHERE ($1::text IS NULL OR service = $1) AND ($2::uuid IS NULL OR rule_id = $2) \
         AND ($3::text IS NULL OR status = $3) AND ($4::uuid IS NULL OR event_id = $4) \
         AND ($5::text IS NULL OR source = $5) AND ($6::text IS NULL OR origin = $6) \
         AND ($7::timestamptz IS NULL OR started_at >= $7) \
         AND ($8::timestamptz IS NULL OR started_at < $8) \
         AND ($9::timestamptz IS NULL OR (started_at, job_id, attempt) < ($9, $10, $11)) \
         AND ($13::text IS NULL OR eventname = $13) \
         AND ($14::text IS NULL OR eventname ILIKE $14 OR error ILIKE $14 \
              OR response_excerpt ILIKE $14) \
         ORDER BY started_at DESC, job_id DESC, attempt DESC LIMIT $12",
    )
    .bind(&filter.service)
    .bind(rule_id)
    .bind(&filter.status)
    .bind(event_id)
    .bind(&filter.source)
    .bind(&filter.origin)
    .bind(from)
    .bind(to)
    .bind(after_at)
    .bind(after_job)
    .bind(after_attempt)
    .bind(limit + 1)
    .bind(eventname)
    .bind(q)
    .fetch_all(&state.db)
    .await?;
    Ok(Json(Page::from_rows(rows, limit, cursor_of)))
}

trait Unzip3<A, B, C> {
    fn unzip3(self) -> (Option<A>, Option<B>, Option<C>);
}

impl<A, B, C> Unzip3<A, B, C> for Option<(A, B, C)> {
    fn unzip3(self) -> (Option<A>, Option<B>, Option<C>) {
        match self {
            Some((a, b, c)) => (Some(a), Some(b), Some(c)),
            None => (None, None, None),
        }
    }
}

#[derive(sqlx::FromRow)]
struct JobRow {
    service: String,
    rule_id: Option<Uuid>,
    event_id: Option<Uuid>,
    source: Option<String>,
    eventname: Option<String>,
    origin: String,
    replay_of: Option<Uuid>,
    request: Option<serde_json::Value>,
}

/// One job of the delivery log: the request sent and every attempt, in order.
#[utoipa::path(get, path = "/api/v1/deliveries/{job_id}", tag = "deliveries", params(("job_id" = String, Path)),
    responses((status = 200, body = DeliveryDetail), (status = 401), (status = 403),
              (status = 404)))]
pub(crate) async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> ApiResult<Json<DeliveryDetail>> {
    caller.require(Role::Viewer)?;
    let missing = || not_found("delivery", raw.clone());
    let job_id = Uuid::parse_str(&raw).map_err(|_| missing())?;
    // The job's attributes are the same on every attempt; the request travels with the first
    // attempt only, so it is taken from whichever row has it.
    let job: JobRow = sqlx::query_as(
        "SELECT service, rule_id, event_id, source, eventname, origin, replay_of, \
         (SELECT request FROM deliveries r WHERE r.job_id = $1 AND r.request IS NOT NULL \
          ORDER BY attempt LIMIT 1) AS request \
         FROM deliveries WHERE job_id = $1 ORDER BY attempt LIMIT 1",
    )
    .bind(job_id)
    .fetch_optional(&state.db)
    .await?
    .ok_or_else(missing)?;
    let attempts: Vec<JobAttemptView> = sqlx::query_as(
        "SELECT attempt, status, started_at, duration_ms, response_status, response_excerpt, \
         error, trace_id, recorded_at FROM deliveries WHERE job_id = $1 ORDER BY attempt",
    )
    .bind(job_id)
    .fetch_all(&state.db)
    .await?;
    let replayed_by: Vec<Uuid> = sqlx::query_scalar(
        "SELECT job_id FROM deliveries WHERE replay_of = $1 GROUP BY job_id \
         ORDER BY min(started_at)",
    )
    .bind(job_id)
    .fetch_all(&state.db)
    .await?;
    let status = attempts
        .last()
        .map(|a| a.status.clone())
        .ok_or_else(|| ApiFailure::Internal("a recorded job without attempts".into()))?;
    Ok(Json(DeliveryDetail {
        job_id,
        service: job.service,
        rule_id: job.rule_id,
        event_id: job.event_id,
        source: job.source,
        eventname: job.eventname,
        origin: job.origin,
        status,
        replay_of: job.replay_of,
        replayed_by,
        request: job.request,
        attempts,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip() {
        let d = DeliveryAttempt {
            job_id: Uuid::now_v7(),
            attempt: 3,
            service: "s".into(),
            rule_id: None,
            event_id: None,
            source: None,
            eventname: None,
            origin: "rule".into(),
            status: "delivered".into(),
            started_at: DateTime::from_timestamp_micros(1_800_000_000_123_456).expect("time"),
            duration_ms: 1,
            response_status: None,
            response_excerpt: None,
            error: None,
            trace_id: None,
            replay_of: None,
        };
        assert_eq!(
            parse_cursor(&cursor_of(&d)),
            Some((d.started_at, d.job_id, 3))
        );
        assert_eq!(parse_cursor("nonsense"), None);
    }
}
