//! The `backfills` table: one row holds a run's whole state, so any api replica can resume it.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use utoipa::ToSchema;
use uuid::Uuid;

/// What a backfill counted so far.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct Counts {
    /// Events read from the stream in the range.
    pub scanned: i64,
    /// Events the rule matched.
    pub matched: i64,
    /// Jobs published to JOBS.
    pub jobs: i64,
    /// Matches whose request could not be rendered (dead-lettered).
    pub render_failures: i64,
    /// Events skipped because another event holds their dedup key.
    pub skipped_duplicates: i64,
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, other: Self) {
        self.scanned += other.scanned;
        self.matched += other.matched;
        self.jobs += other.jobs;
        self.render_failures += other.render_failures;
        self.skipped_duplicates += other.skipped_duplicates;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Running,
    Completed,
    Cancelled,
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Completed => "completed",
            Status::Cancelled => "cancelled",
            Status::Failed => "failed",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "running" => Status::Running,
            "completed" => Status::Completed,
            "cancelled" => Status::Cancelled,
            _ => Status::Failed,
        }
    }
}

/// A backfill as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Backfill {
    pub id: Uuid,
    /// Absent once the rule is deleted.
    pub rule_id: Option<Uuid>,
    pub rule_name: String,
    /// Events received from this instant…
    pub from: DateTime<Utc>,
    /// …to this one, inclusive.
    pub to: DateTime<Utc>,
    pub status: Status,
    #[serde(flatten)]
    pub counts: Counts,
    /// The partition of EVENTS being scanned (partitions are scanned one after the other, in
    /// the order of their numbers); 0 on a hub of one partition.
    pub partition: i16,
    /// Sequences of that partition's stream: the first event in range (once found), the last
    /// handled, and the last that existed when the backfill was created.
    pub start_sequence: Option<i64>,
    pub position: i64,
    pub end_sequence: i64,
    /// Every partition's last sequence when the backfill was created, partition 0 first.
    #[serde(skip)]
    pub partition_ends: Vec<i64>,
    /// Share of the range handled, 0 to 1 (an estimate from the sequences: a rule's events are
    /// a subset of the stream, and each partition counts for the same share).
    pub progress: f64,
    /// Why it failed.
    pub error: Option<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "id, rule_id, rule_name, from_time, to_time, status, partition, \
    partition_ends, start_sequence, position, end_sequence, scanned, matched, jobs, render_failures, skipped_duplicates, error, \
    created_by, created_at, updated_at, finished_at";

impl<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> for Backfill {
    fn from_row(row: &'r sqlx::postgres::PgRow) -> Result<Self, sqlx::Error> {
        use sqlx::Row;
        let status = Status::parse(row.try_get::<&str, _>("status")?);
        let start_sequence: Option<i64> = row.try_get("start_sequence")?;
        let position: i64 = row.try_get("position")?;
        let end_sequence: i64 = row.try_get("end_sequence")?;
        let partition: i16 = row.try_get("partition")?;
        let partition_ends: Vec<i64> = row
            .try_get::<Option<Vec<i64>>, _>("partition_ends")?
            .unwrap_or_else(|| vec![end_sequence]);
        let current = Scanned {
            partition,
            count: partition_ends.len(),
            start: start_sequence,
            position,
            end: end_sequence,
        };
        Ok(Backfill {
            id: row.try_get("id")?,
            rule_id: row.try_get("rule_id")?,
            rule_name: row.try_get("rule_name")?,
            from: row.try_get("from_time")?,
            to: row.try_get("to_time")?,
            status,
            counts: Counts {
                scanned: row.try_get("scanned")?,
                matched: row.try_get("matched")?,
                jobs: row.try_get("jobs")?,
                render_failures: row.try_get("render_failures")?,
                skipped_duplicates: row.try_get("skipped_duplicates")?,
            },
            progress: progress(status, &current),
            partition,
            partition_ends,
            start_sequence,
            position,
            end_sequence,
            error: row.try_get("error")?,
            created_by: row.try_get("created_by")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            finished_at: row.try_get("finished_at")?,
        })
    }
}

/// Where a scan stands in its current partition.
struct Scanned {
    partition: i16,
    count: usize,
    start: Option<i64>,
    position: i64,
    end: i64,
}

#[allow(clippy::cast_precision_loss)] // an estimate shown as a fraction
fn progress(status: Status, at: &Scanned) -> f64 {
    let within = match at.start {
        Some(start) if at.end >= start => {
            ((at.position - start + 1) as f64 / (at.end - start + 1) as f64).clamp(0.0, 1.0)
        }
        _ => 0.0,
    };
    match status {
        Status::Completed => 1.0,
        _ => ((f64::from(at.partition) + within) / at.count.max(1) as f64).clamp(0.0, 1.0),
    }
}

/// What a new backfill needs.
pub struct NewBackfill<'a> {
    pub rule_id: Uuid,
    pub rule_name: &'a str,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// Every partition's last sequence now, partition 0 first.
    pub partition_ends: Vec<i64>,
    pub created_by: &'a str,
}

pub async fn insert(
    db: &mut sqlx::PgConnection,
    new: &NewBackfill<'_>,
) -> Result<Backfill, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO backfills (id, rule_id, rule_name, from_time, to_time, end_sequence, \
         partition_ends, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {COLUMNS}"
    )))
    .bind(Uuid::now_v7())
    .bind(new.rule_id)
    .bind(new.rule_name)
    .bind(new.from)
    .bind(new.to)
    .bind(new.partition_ends.first().copied().unwrap_or(0))
    .bind(&new.partition_ends)
    .bind(new.created_by)
    .fetch_one(db)
    .await
}

pub async fn get(db: &PgPool, id: Uuid) -> Result<Option<Backfill>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM backfills WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(db)
    .await
}

/// Newest first, `limit` after `before` (a backfill id).
pub async fn list(
    db: &PgPool,
    rule_id: Option<Uuid>,
    status: Option<&str>,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Backfill>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM backfills WHERE ($1::uuid IS NULL OR rule_id = $1) \
         AND ($2::text IS NULL OR status = $2) AND ($3::uuid IS NULL OR id < $3) \
         ORDER BY id DESC LIMIT $4"
    )))
    .bind(rule_id)
    .bind(status)
    .bind(before)
    .bind(limit)
    .fetch_all(db)
    .await
}

pub async fn running(db: &PgPool) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM backfills WHERE status = 'running' ORDER BY id")
        .fetch_all(db)
        .await
}

/// Records progress; false when the backfill is no longer running (cancelled, or deleted).
pub async fn checkpoint(
    db: &PgPool,
    id: Uuid,
    start_sequence: Option<i64>,
    position: i64,
    added: Counts,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query(
        "UPDATE backfills SET start_sequence = COALESCE(start_sequence, $2), \
         position = GREATEST(position, $3), scanned = scanned + $4, matched = matched + $5, \
         jobs = jobs + $6, render_failures = render_failures + $7, \
         skipped_duplicates = skipped_duplicates + $8, updated_at = now() \
         WHERE id = $1 AND status = 'running'",
    )
    .bind(id)
    .bind(start_sequence)
    .bind(position)
    .bind(added.scanned)
    .bind(added.matched)
    .bind(added.jobs)
    .bind(added.render_failures)
    .bind(added.skipped_duplicates)
    .execute(db)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// Moves a running scan on to `partition`, which ends at `end_sequence`; false when the
/// backfill is no longer running.
pub async fn advance(
    db: &PgPool,
    id: Uuid,
    partition: i16,
    end_sequence: i64,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query(
        "UPDATE backfills SET partition = $2, start_sequence = NULL, position = 0, \
         end_sequence = $3, updated_at = now() WHERE id = $1 AND status = 'running'",
    )
    .bind(id)
    .bind(partition)
    .bind(end_sequence)
    .execute(db)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// Ends a running backfill; false when it had already ended.
pub async fn finish(
    db: &PgPool,
    id: Uuid,
    status: Status,
    error: Option<&str>,
) -> Result<bool, sqlx::Error> {
    if status == Status::Running {
        return Ok(false);
    }
    let updated = sqlx::query(
        "UPDATE backfills SET status = $2, error = $3, finished_at = now(), updated_at = now() \
         WHERE id = $1 AND status = 'running'",
    )
    .bind(id)
    .bind(status.as_str())
    .bind(error)
    .execute(db)
    .await?;
    Ok(updated.rows_affected() == 1)
}
