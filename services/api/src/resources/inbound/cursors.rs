//! The `inbound_cursors` table: each Moodle site's acknowledged position in `<NS>_INBOUND`.

use sqlx::PgPool;

/// The last sequence `source` acknowledged (0: none yet).
pub async fn acknowledged(db: &PgPool, source: &str) -> Result<u64, sqlx::Error> {
    let at: Option<i64> =
        sqlx::query_scalar("SELECT acknowledged FROM inbound_cursors WHERE source = $1")
            .bind(source)
            .fetch_optional(db)
            .await?;
    Ok(at.and_then(|a| u64::try_from(a).ok()).unwrap_or(0))
}

/// Moves `source`'s acknowledgement forward to `cursor` (never back); returns where it is.
pub async fn acknowledge(db: &PgPool, source: &str, cursor: u64) -> Result<u64, sqlx::Error> {
    let at: i64 = sqlx::query_scalar(
        "INSERT INTO inbound_cursors (source, acknowledged) VALUES ($1, $2) \
         ON CONFLICT (source) DO UPDATE SET \
           acknowledged = GREATEST(inbound_cursors.acknowledged, EXCLUDED.acknowledged), \
           updated_at = now() \
         RETURNING acknowledged",
    )
    .bind(source)
    .bind(i64::try_from(cursor).unwrap_or(i64::MAX))
    .fetch_one(db)
    .await?;
    Ok(u64::try_from(at).unwrap_or(0))
}
