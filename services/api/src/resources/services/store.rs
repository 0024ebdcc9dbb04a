//! The `services` table.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::types::Json as SqlJson;
use sqlx::{PgConnection, PgPool};

use mih_shared::crypto::Sealed;
use mih_shared::live::{Auth, BreakerPolicy, LiveInbound, RetryPolicy, Transport};

/// A service as PostgreSQL holds it (secrets sealed).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ServiceRow {
    pub name: String,
    pub description: String,
    pub enabled: bool,
    pub kind: String,
    pub transport: SqlJson<Transport>,
    pub auth: SqlJson<Auth>,
    pub signing_secret: Option<SqlJson<Sealed>>,
    pub headers: SqlJson<BTreeMap<String, String>>,
    pub timeout_ms: i64,
    pub max_retries: i32,
    pub backoff_base_ms: i64,
    pub backoff_cap_ms: i64,
    pub breaker_failure_threshold: i32,
    pub breaker_cooldown_ms: i64,
    pub breaker_half_open_probes: i32,
    pub concurrency: i32,
    pub rate_limit_per_sec: Option<i32>,
    pub max_job_age_ms: i64,
    pub inbound: Option<SqlJson<LiveInbound>>,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Numbers are range-checked before they are stored, so these conversions cannot fail.
pub(super) fn u64_of(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}
pub(super) fn u32_of(n: i32) -> u32 {
    u32::try_from(n).unwrap_or(0)
}
pub(super) fn i64_of(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
pub(super) fn i32_of(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

impl ServiceRow {
    pub(super) fn retry(&self) -> RetryPolicy {
        RetryPolicy {
            max_retries: u32_of(self.max_retries),
            backoff_base_ms: u64_of(self.backoff_base_ms),
            backoff_cap_ms: u64_of(self.backoff_cap_ms),
        }
    }

    pub(super) fn breaker(&self) -> BreakerPolicy {
        BreakerPolicy {
            failure_threshold: u32_of(self.breaker_failure_threshold),
            cooldown_ms: u64_of(self.breaker_cooldown_ms),
            half_open_probes: u32_of(self.breaker_half_open_probes),
        }
    }
}

const COLUMNS: &str = "name, description, enabled, kind, transport, auth, \
    to_jsonb(signing_secret) AS signing_secret, headers, timeout_ms, max_retries, backoff_base_ms, \
    backoff_cap_ms, breaker_failure_threshold, breaker_cooldown_ms, breaker_half_open_probes, \
    concurrency, rate_limit_per_sec, max_job_age_ms, inbound, version, created_at, updated_at";

pub async fn load_all(db: &PgPool) -> Result<Vec<ServiceRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM services ORDER BY name"
    )))
    .fetch_all(db)
    .await
}

pub async fn load(
    db: &mut PgConnection,
    name: &str,
    for_update: bool,
) -> Result<Option<ServiceRow>, sqlx::Error> {
    let lock = if for_update { " FOR UPDATE" } else { "" };
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM services WHERE name = $1{lock}"
    )))
    .bind(name)
    .fetch_optional(db)
    .await
}

pub(super) async fn save(
    db: &mut PgConnection,
    row: &ServiceRow,
    insert: bool,
) -> Result<ServiceRow, sqlx::Error> {
    let values = "$2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19";
    let sql = if insert {
        format!(
            "INSERT INTO services (name, description, enabled, kind, transport, auth, signing_secret, headers, \
             timeout_ms, max_retries, backoff_base_ms, backoff_cap_ms, breaker_failure_threshold, \
             breaker_cooldown_ms, breaker_half_open_probes, concurrency, rate_limit_per_sec, max_job_age_ms, \
             inbound) VALUES ($1, {values}) RETURNING {COLUMNS}"
        )
    } else {
        format!(
            "UPDATE services SET (description, enabled, kind, transport, auth, signing_secret, headers, \
             timeout_ms, max_retries, backoff_base_ms, backoff_cap_ms, breaker_failure_threshold, \
             breaker_cooldown_ms, breaker_half_open_probes, concurrency, rate_limit_per_sec, max_job_age_ms, \
             inbound, version, updated_at) = ({values}, nextval('config_version'), now()) \
             WHERE name = $1 RETURNING {COLUMNS}"
        )
    };
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(&row.name)
        .bind(&row.description)
        .bind(row.enabled)
        .bind(&row.kind)
        .bind(&row.transport)
        .bind(&row.auth)
        .bind(row.signing_secret.as_ref().map(|s| s.0.as_str().to_owned()))
        .bind(&row.headers)
        .bind(row.timeout_ms)
        .bind(row.max_retries)
        .bind(row.backoff_base_ms)
        .bind(row.backoff_cap_ms)
        .bind(row.breaker_failure_threshold)
        .bind(row.breaker_cooldown_ms)
        .bind(row.breaker_half_open_probes)
        .bind(row.concurrency)
        .bind(row.rate_limit_per_sec)
        .bind(row.max_job_age_ms)
        .bind(&row.inbound)
        .fetch_one(db)
        .await
}

/// Up to `limit` services after `after` by name; `q` is part of the name or description.
pub(super) async fn page(
    db: &PgPool,
    after: Option<&str>,
    kind: Option<&str>,
    enabled: Option<bool>,
    q: Option<&str>,
    limit: i64,
) -> Result<Vec<ServiceRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM services WHERE ($1::text IS NULL OR name > $1) \
         AND ($2::text IS NULL OR kind = $2) AND ($3::bool IS NULL OR enabled = $3) \
         AND ($4::text IS NULL OR name ILIKE '%' || $4 || '%' OR description ILIKE '%' || $4 || '%') \
         ORDER BY name LIMIT $5"
    )))
    .bind(after)
    .bind(kind)
    .bind(enabled)
    .bind(q)
    .bind(limit)
    .fetch_all(db)
    .await
}

pub(super) async fn delete(db: &mut PgConnection, name: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM services WHERE name = $1")
        .bind(name)
        .execute(db)
        .await?;
    Ok(())
}
