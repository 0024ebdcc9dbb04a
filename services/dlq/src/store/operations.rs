//! Bulk replays: a `dead_letter_operations` row holds the filter, counts, status and a
//! checkpoint, so any api replica (or `mih dlq replay --filter`) can run, follow, cancel or
//! resume it. Running one (publishing the replays) is the api's; its state is kept here.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder};
use utoipa::ToSchema;
use uuid::Uuid;

use super::filter::DeadLetterFilter;

/// A tracked bulk operation on dead letters.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Operation {
    pub id: Uuid,
    /// replay.
    pub kind: String,
    /// The dead letters it acts on.
    #[schema(value_type = Object)]
    pub filter: Value,
    /// running, completed, cancelled or failed.
    pub status: String,
    /// Dead letters that matched when it was created.
    pub total: i64,
    /// Replayed so far.
    pub done: i64,
    /// Could not be replayed (service gone, rule still failing to render…).
    pub failed: i64,
    /// The last failure, or why the operation failed.
    pub error: Option<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "id, kind, filter, status, total, done, failed, error, created_by, \
    created_at, updated_at, finished_at";

/// Creates a running bulk replay of the dead letters matching `filter` (validated for a bulk
/// action by the caller), counting them. Run it in a transaction: `now()` is then the
/// transaction's start, and the same instant bounds the count and, through `created_at`, the
/// set [`next_batch`] walks, so dead letters arriving later are not part of it.
pub async fn create_replay(
    conn: &mut PgConnection,
    filter: &DeadLetterFilter,
    actor: &str,
) -> Result<Operation, sqlx::Error> {
    let filter_json = serde_json::to_value(filter).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let mut count = QueryBuilder::<Postgres>::new(
        "SELECT count(*) FROM dead_letters d WHERE d.recorded_at <= now()",
    );
    filter.push_conditions(&mut count);
    let total: i64 = count.build_query_scalar().fetch_one(&mut *conn).await?;
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO dead_letter_operations (id, kind, filter, total, created_by) \
         VALUES ($1, 'replay', $2, $3, $4) RETURNING {COLUMNS}"
    )))
    .bind(Uuid::now_v7())
    .bind(filter_json)
    .bind(total)
    .bind(actor)
    .fetch_one(conn)
    .await
}

pub async fn get(db: &PgPool, id: Uuid) -> Result<Option<Operation>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM dead_letter_operations WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(db)
    .await
}

/// Cancels a running operation; `false` if it was not running.
pub async fn cancel(db: &PgPool, id: Uuid) -> Result<bool, sqlx::Error> {
    let cancelled = sqlx::query(
        "UPDATE dead_letter_operations SET status = 'cancelled', finished_at = now(), \
         updated_at = now() WHERE id = $1 AND status = 'running'",
    )
    .bind(id)
    .execute(db)
    .await?;
    Ok(cancelled.rows_affected() > 0)
}

/// Ids of the operations still running.
pub async fn running(db: &PgPool) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM dead_letter_operations WHERE status = 'running' ORDER BY created_at",
    )
    .fetch_all(db)
    .await
}

/// What the runner needs to continue an operation.
#[derive(Debug, sqlx::FromRow)]
pub struct Progress {
    pub filter: Value,
    pub status: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub position: Option<Uuid>,
}

pub async fn progress(db: &PgPool, id: Uuid) -> Result<Option<Progress>, sqlx::Error> {
    sqlx::query_as(
        "SELECT filter, status, created_by, created_at, position FROM dead_letter_operations \
         WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(db)
    .await
}

/// One dead letter of the set, as the runner walks it.
#[derive(Debug, sqlx::FromRow)]
pub struct Item {
    pub job_id: Uuid,
    /// Replayed since the operation started (by it, before a crash, or by hand).
    pub already: bool,
}

/// The next dead letters of the set after `position`, by job id.
pub async fn next_batch(
    db: &PgPool,
    filter: &DeadLetterFilter,
    created_at: DateTime<Utc>,
    position: Option<Uuid>,
    size: i64,
) -> Result<Vec<Item>, sqlx::Error> {
    let mut sql = QueryBuilder::<Postgres>::new("SELECT d.job_id, COALESCE(d.replayed_at >= ");
    sql.push_bind(created_at)
        .push(", false) AS already FROM dead_letters d WHERE d.recorded_at <= ")
        .push_bind(created_at);
    filter.push_conditions(&mut sql);
    if let Some(position) = position {
        sql.push(" AND d.job_id > ").push_bind(position);
    }
    sql.push(" ORDER BY d.job_id LIMIT ").push_bind(size);
    sql.build_query_as().fetch_all(db).await
}

/// Adds a batch's counts and moves the checkpoint; `false` when the operation is no longer
/// running (cancelled meanwhile).
pub async fn checkpoint(
    db: &PgPool,
    id: Uuid,
    done: i64,
    failed: i64,
    position: Uuid,
    last_error: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query(
        "UPDATE dead_letter_operations SET done = done + $2, failed = failed + $3, \
         position = $4, error = COALESCE($5, error), updated_at = now() \
         WHERE id = $1 AND status = 'running'",
    )
    .bind(id)
    .bind(done)
    .bind(failed)
    .bind(position)
    .bind(last_error)
    .execute(db)
    .await?;
    Ok(updated.rows_affected() > 0)
}

/// Ends a running operation; `false` if it had ended already.
pub async fn finish(
    db: &PgPool,
    id: Uuid,
    status: &str,
    error: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query(
        "UPDATE dead_letter_operations SET status = $2, error = COALESCE($3, error), \
         finished_at = now(), updated_at = now() WHERE id = $1 AND status = 'running'",
    )
    .bind(id)
    .bind(status)
    .bind(error)
    .execute(db)
    .await?;
    Ok(updated.rows_affected() > 0)
}
