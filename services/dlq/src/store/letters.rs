//! Dead letters as this service stored them: listed, counted, read, marked as replayed,
//! deleted. What a replay sends, and who may do what, is the api's (and `mih dlq`'s); the rows
//! are changed here only.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder};
use utoipa::ToSchema;
use uuid::Uuid;

use super::filter::DeadLetterFilter;

/// The columns of [`DeadLetterSummary`], on the table aliased `d`.
const SUMMARY: &str = "d.job_id, d.service, d.rule_id, d.event_id, d.source, d.eventname, \
    d.origin, d.stage, d.reason, d.attempts, d.dead_lettered_at, d.status, d.replay_of, \
    d.replay_job_id, d.replayed_at, d.replayed_by, d.last_outcome->>'error' AS last_error, \
    (d.last_outcome->>'response_status')::int AS last_response_status";

/// One dead letter in a list.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct DeadLetterSummary {
    /// The job given up on (also the `Idempotency-Key` the target saw).
    pub job_id: Uuid,
    pub service: String,
    pub rule_id: Option<Uuid>,
    pub event_id: Option<Uuid>,
    pub source: Option<String>,
    pub eventname: Option<String>,
    /// rule, facade, replay or backfill.
    pub origin: String,
    /// render (never sent: the request could not be rendered) or delivery.
    pub stage: String,
    /// Why the job was given up on.
    pub reason: String,
    /// Delivery attempts made.
    pub attempts: i32,
    pub dead_lettered_at: DateTime<Utc>,
    /// dead, or replaying: replayed as `replay_job_id`, kept until that job is delivered.
    pub status: String,
    /// When this job was itself a replay: the dead letter it retried.
    pub replay_of: Option<Uuid>,
    /// The newest replay of this dead letter.
    pub replay_job_id: Option<Uuid>,
    pub replayed_at: Option<DateTime<Utc>>,
    pub replayed_by: Option<String>,
    /// The last attempt's error.
    pub last_error: Option<String>,
    /// The last attempt's HTTP status, when there was one.
    pub last_response_status: Option<i32>,
}

/// One dead letter with the JSON it keeps.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredLetter {
    #[sqlx(flatten)]
    pub summary: DeadLetterSummary,
    /// The job as it was queued.
    pub job: Value,
    /// The last attempt's outcome (absent when the job never ran).
    pub last_outcome: Option<Value>,
    /// For a render failure: the event, to render again.
    pub event: Option<Value>,
}

/// What a replay needs of a dead letter: the job and event exactly as they were published.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Replayable {
    pub job_id: Uuid,
    pub service: String,
    /// render or delivery.
    pub stage: String,
    pub job: Value,
    pub event: Option<Value>,
    /// The dead letter exactly as published, when its job or event carried what jsonb cannot
    /// hold (NUL): it wins over the stored copies.
    exact: Option<String>,
}

/// Why a dead letter could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("the exact copy of dead letter {job_id} is unreadable: {source}")]
    Unreadable {
        job_id: Uuid,
        source: serde_json::Error,
    },
}

impl Replayable {
    /// Takes the job and event from the exact message, if the row kept one.
    fn exactly(mut self) -> Result<Self, ReadError> {
        if let Some(exact) = self.exact.take() {
            let mut dead: Value =
                serde_json::from_str(&exact).map_err(|source| ReadError::Unreadable {
                    job_id: self.job_id,
                    source,
                })?;
            self.job = dead["job"].take();
            self.event = Some(dead["event"].take()).filter(|event| !event.is_null());
        }
        Ok(self)
    }
}

/// Up to `take` dead letters matching `filter`, newest first, after the sort key
/// (dead_lettered_at, job_id) `after` when given (keyset paging).
pub async fn list(
    db: &PgPool,
    filter: &DeadLetterFilter,
    after: Option<(DateTime<Utc>, Uuid)>,
    take: i64,
) -> Result<Vec<DeadLetterSummary>, sqlx::Error> {
    let mut sql =
        QueryBuilder::<Postgres>::new(format!("SELECT {SUMMARY} FROM dead_letters d WHERE TRUE"));
    filter.push_conditions(&mut sql);
    if let Some((at, id)) = after {
        sql.push(" AND (d.dead_lettered_at, d.job_id) < (")
            .push_bind(at)
            .push(", ")
            .push_bind(id)
            .push(")");
    }
    sql.push(" ORDER BY d.dead_lettered_at DESC, d.job_id DESC LIMIT ")
        .push_bind(take);
    sql.build_query_as().fetch_all(db).await
}

/// How many dead letters match `filter`.
pub async fn count(db: &PgPool, filter: &DeadLetterFilter) -> Result<i64, sqlx::Error> {
    let mut sql = QueryBuilder::<Postgres>::new("SELECT count(*) FROM dead_letters d WHERE TRUE");
    filter.push_conditions(&mut sql);
    sql.build_query_scalar().fetch_one(db).await
}

/// How many dead letters match `filter`, per service (services without any are left out).
pub async fn count_per_service(
    db: &PgPool,
    filter: &DeadLetterFilter,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let mut sql =
        QueryBuilder::<Postgres>::new("SELECT d.service, count(*) FROM dead_letters d WHERE TRUE");
    filter.push_conditions(&mut sql);
    sql.push(" GROUP BY d.service");
    sql.build_query_as().fetch_all(db).await
}

/// Dead letters per time bucket of `width` seconds (aligned to the epoch, as the stats'
/// other series are), dead-lettered in [from, to), optionally of one service and one rule.
pub async fn per_bucket(
    db: &PgPool,
    width: f64,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    service: Option<&str>,
    rule_id: Option<Uuid>,
) -> Result<Vec<(DateTime<Utc>, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT to_timestamp(floor(extract(epoch FROM dead_lettered_at)::float8 / $1) * $1) \
         AS at, count(*) FROM dead_letters \
         WHERE dead_lettered_at >= $2 AND dead_lettered_at < $3 \
         AND ($4::text IS NULL OR service = $4) AND ($5::uuid IS NULL OR rule_id = $5) \
         GROUP BY 1",
    )
    .bind(width)
    .bind(from)
    .bind(to)
    .bind(service)
    .bind(rule_id)
    .fetch_all(db)
    .await
}

pub async fn summary(db: &PgPool, job_id: Uuid) -> Result<Option<DeadLetterSummary>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {SUMMARY} FROM dead_letters d WHERE d.job_id = $1"
    )))
    .bind(job_id)
    .fetch_optional(db)
    .await
}

/// One dead letter with its job, last outcome and event.
pub async fn get(db: &PgPool, job_id: Uuid) -> Result<Option<StoredLetter>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {SUMMARY}, d.job, d.last_outcome, d.event FROM dead_letters d WHERE d.job_id = $1"
    )))
    .bind(job_id)
    .fetch_optional(db)
    .await
}

/// The job and event to replay, exactly as they were dead-lettered.
pub async fn replayable(db: &PgPool, job_id: Uuid) -> Result<Option<Replayable>, ReadError> {
    sqlx::query_as::<_, Replayable>(
        "SELECT job_id, service, stage, job, event, exact FROM dead_letters WHERE job_id = $1",
    )
    .bind(job_id)
    .fetch_optional(db)
    .await?
    .map(Replayable::exactly)
    .transpose()
}

/// Marks a dead letter `replaying`, as `replay_job_id`, by `actor`.
pub async fn mark_replayed(
    db: &PgPool,
    job_id: Uuid,
    replay_job_id: Uuid,
    actor: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE dead_letters SET status = 'replaying', replay_job_id = $2, replayed_at = now(), \
         replayed_by = $3 WHERE job_id = $1",
    )
    .bind(job_id)
    .bind(replay_job_id)
    .bind(actor)
    .execute(db)
    .await?;
    Ok(())
}

/// Deletes one dead letter and returns it as it was (`None` if there was none). On a
/// connection, so the caller's audit entry can share its transaction.
pub async fn delete(
    conn: &mut PgConnection,
    job_id: Uuid,
) -> Result<Option<DeadLetterSummary>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "DELETE FROM dead_letters d WHERE d.job_id = $1 RETURNING {SUMMARY}"
    )))
    .bind(job_id)
    .fetch_optional(conn)
    .await
}

/// Deletes every dead letter matching `filter`, which the caller validated for a bulk action
/// ([`DeadLetterFilter::validated_for_bulk`]); returns how many. On a connection, so the
/// caller's audit entry can share its transaction.
pub async fn delete_matching(
    conn: &mut PgConnection,
    filter: &DeadLetterFilter,
) -> Result<u64, sqlx::Error> {
    let mut sql = QueryBuilder::<Postgres>::new("DELETE FROM dead_letters d WHERE TRUE");
    filter.push_conditions(&mut sql);
    Ok(sql.build().execute(conn).await?.rows_affected())
}
