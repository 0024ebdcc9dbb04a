//! Auto-purge of the PostgreSQL projections: the delivery log, its rollups, dead letters and
//! circuit changes lose rows older than their maximum age and, beyond their maximum row count,
//! their oldest rows. One api replica purges at a time (a PostgreSQL advisory lock), every
//! `retention.interval`, deleting at most `retention.batch_size` rows per statement so no purge
//! holds a table for long. Each table's owner declares how it is pruned (its
//! [`RetentionSpec`]). Nothing is lost for good that the streams still hold:
//! `mih rebuild-projections` restores what they keep.

use std::time::Duration;

use chrono::Utc;
// Statements are built from the owners' constant table and column names, never from input.
use sqlx::{AssertSqlSafe, PgPool};

use mih_shared::Shutdown;
use mih_shared::config::RetentionConfig;
use mih_shared::db::RetentionSpec;

use crate::recorder;

/// Advisory lock key of the purge ("mihp"), distinct from the backfill and replay runners.
const LOCK_KEY: i64 = 0x6d69_6870;

/// Rows deleted by one purge, by table.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Purged {
    pub by_table: Vec<(&'static str, u64)>,
}

impl Purged {
    pub fn total(&self) -> u64 {
        self.by_table.iter().map(|(_, n)| n).sum()
    }
}

/// Purges every `retention.interval` until shutdown.
pub(crate) async fn periodically(
    db: PgPool,
    replayer: crate::replay::Replayer,
    settings: RetentionConfig,
    shutdown: Shutdown,
) {
    loop {
        tokio::select! {
            () = shutdown.triggered() => return,
            () = tokio::time::sleep(settings.interval) => {}
        }
        match purge_if_leader(&db, &settings).await {
            Ok(Some(purged)) if purged.total() > 0 => {
                tracing::info!(rows = purged.total(), tables = ?purged.by_table, "retention purge");
                // A purged dead letter no longer holds its ordering key.
                if purged
                    .by_table
                    .iter()
                    .any(|(table, n)| *table == mih_dlq::store::RETENTION.table && *n > 0)
                {
                    replayer.release_held_keys(None).await;
                }
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, "retention purge failed; trying again next interval")
            }
        }
    }
}

/// Purges unless another replica is purging right now (then `None`).
async fn purge_if_leader(
    db: &PgPool,
    settings: &RetentionConfig,
) -> Result<Option<Purged>, sqlx::Error> {
    let mut lock = db.acquire().await?;
    let leader: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(LOCK_KEY)
        .fetch_one(&mut *lock)
        .await?;
    if !leader {
        return Ok(None);
    }
    let result = purge(db, settings).await;
    // Unlock on the connection that locked; a failure here ends with the connection anyway.
    let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(LOCK_KEY)
        .execute(&mut *lock)
        .await;
    result.map(Some)
}

/// One purge of every table.
pub async fn purge(db: &PgPool, settings: &RetentionConfig) -> Result<Purged, sqlx::Error> {
    let batch = i64::from(settings.batch_size.max(1));
    let mut purged = Purged::default();
    // What each table's owner says to prune it by; how long to keep it is configuration.
    let plan = [
        (
            recorder::DELIVERIES_RETENTION,
            settings.deliveries_max_age,
            settings.deliveries_max_rows,
        ),
        (
            recorder::ROLLUPS_RETENTION,
            settings.rollups_max_age,
            settings.rollups_max_rows,
        ),
        (
            recorder::PERIOD_ROLLUPS_RETENTION,
            settings.rollups_max_age,
            settings.rollups_max_rows,
        ),
        (
            recorder::PERIOD_LATENCY_RETENTION,
            settings.rollups_max_age,
            settings.rollups_max_rows,
        ),
        (
            mih_dlq::store::RETENTION,
            settings.dead_letters_max_age,
            settings.dead_letters_max_rows,
        ),
        (
            crate::inbound_log::store::RETENTION,
            settings.deliveries_max_age,
            0,
        ),
        (
            recorder::CIRCUIT_CHANGES_RETENTION,
            settings.circuit_changes_max_age,
            0,
        ),
    ];
    for (table, max_age, max_rows) in plan {
        let by_age = purge_by_age(db, table, max_age, batch).await?;
        let by_rows = purge_by_rows(db, table, max_rows, batch).await?;
        for (reason, rows) in [("age", by_age), ("rows", by_rows)] {
            if rows > 0 {
                metrics::counter!("mih_retention_deleted_total", "table" => table.table, "reason" => reason)
                    .increment(rows);
            }
        }
        purged.by_table.push((table.table, by_age + by_rows));
    }
    Ok(purged)
}

async fn purge_by_age(
    db: &PgPool,
    table: RetentionSpec,
    max_age: Duration,
    batch: i64,
) -> Result<u64, sqlx::Error> {
    if max_age.is_zero() {
        return Ok(0);
    }
    let Ok(age) = chrono::Duration::from_std(max_age) else {
        return Ok(0);
    };
    let cutoff = Utc::now() - age;
    let statement = format!(
        "DELETE FROM {name} WHERE ({key}) IN \
         (SELECT {key} FROM {name} WHERE {age} < $1 LIMIT $2)",
        name = table.table,
        key = table.key,
        age = table.age_column,
    );
    let mut deleted = 0;
    loop {
        let rows = sqlx::query(AssertSqlSafe(statement.as_str()))
            .bind(cutoff)
            .bind(batch)
            .execute(db)
            .await?
            .rows_affected();
        deleted += rows;
        if rows < u64::try_from(batch).unwrap_or(u64::MAX) {
            return Ok(deleted);
        }
    }
}

async fn purge_by_rows(
    db: &PgPool,
    table: RetentionSpec,
    max_rows: u64,
    batch: i64,
) -> Result<u64, sqlx::Error> {
    if max_rows == 0 {
        return Ok(0);
    }
    let count_rows = format!("SELECT count(*) FROM {}", table.table);
    let count: i64 = sqlx::query_scalar(AssertSqlSafe(count_rows.as_str()))
        .fetch_one(db)
        .await?;
    let mut excess = u64::try_from(count).unwrap_or(0).saturating_sub(max_rows);
    let statement = format!(
        "DELETE FROM {name} WHERE ({key}) IN \
         (SELECT {key} FROM {name} ORDER BY {age} ASC LIMIT $1)",
        name = table.table,
        key = table.key,
        age = table.age_column,
    );
    let mut deleted = 0;
    while excess > 0 {
        let take = excess.min(u64::try_from(batch).unwrap_or(u64::MAX));
        let rows = sqlx::query(AssertSqlSafe(statement.as_str()))
            .bind(i64::try_from(take).unwrap_or(i64::MAX))
            .execute(db)
            .await?
            .rows_affected();
        if rows == 0 {
            break;
        }
        deleted += rows;
        excess = excess.saturating_sub(rows);
    }
    Ok(deleted)
}
