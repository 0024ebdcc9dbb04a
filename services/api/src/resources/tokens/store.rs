//! The `admin_tokens` table. Only a token's SHA-256 and its first characters are stored.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

#[derive(Debug, sqlx::FromRow)]
pub(super) struct TokenRow {
    pub id: Uuid,
    pub label: String,
    pub role: String,
    pub token_prefix: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub version: i64,
}

/// A token about to be stored.
#[derive(Debug)]
pub(super) struct NewToken<'a> {
    pub label: &'a str,
    pub role: &'a str,
    pub token_hash: &'a str,
    pub token_prefix: &'a str,
    pub created_by: &'a str,
    pub expires_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "id, label, role, token_prefix, created_by, created_at, last_used_at, expires_at, revoked_at, version";

pub(super) async fn load(
    db: &mut PgConnection,
    id: Uuid,
    for_update: bool,
) -> Result<Option<TokenRow>, sqlx::Error> {
    let lock = if for_update { " FOR UPDATE" } else { "" };
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM admin_tokens WHERE id = $1{lock}"
    )))
    .bind(id)
    .fetch_optional(db)
    .await
}

/// Up to `limit` tokens after `after` by id.
pub(super) async fn page(
    db: &PgPool,
    after: Option<Uuid>,
    role: Option<&str>,
    revoked: Option<bool>,
    limit: i64,
) -> Result<Vec<TokenRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM admin_tokens WHERE ($1::uuid IS NULL OR id > $1) \
         AND ($2::text IS NULL OR role = $2) \
         AND ($3::bool IS NULL OR (revoked_at IS NOT NULL) = $3) ORDER BY id LIMIT $4"
    )))
    .bind(after)
    .bind(role)
    .bind(revoked)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Active admin tokens other than `except`.
pub(super) async fn other_admins(db: &mut PgConnection, except: Uuid) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM admin_tokens WHERE role = 'admin' AND revoked_at IS NULL \
         AND (expires_at IS NULL OR expires_at > now()) AND id <> $1",
    )
    .bind(except)
    .fetch_one(db)
    .await
}

pub(super) async fn exists_with_hash(db: &PgPool, token_hash: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM admin_tokens WHERE token_hash = $1)")
        .bind(token_hash)
        .fetch_one(db)
        .await
}

pub(super) async fn insert(
    db: &mut PgConnection,
    token: &NewToken<'_>,
) -> Result<TokenRow, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO admin_tokens (id, label, role, token_hash, token_prefix, created_by, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {COLUMNS}"
    )))
    .bind(Uuid::now_v7())
    .bind(token.label)
    .bind(token.role)
    .bind(token.token_hash)
    .bind(token.token_prefix)
    .bind(token.created_by)
    .bind(token.expires_at)
    .fetch_one(db)
    .await
}

/// Sets the label and role, taking a new version.
pub(super) async fn update(
    db: &mut PgConnection,
    id: Uuid,
    label: &str,
    role: &str,
) -> Result<TokenRow, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE admin_tokens SET label = $2, role = $3, version = nextval('config_version') \
         WHERE id = $1 RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(label)
    .bind(role)
    .fetch_one(db)
    .await
}

pub(super) async fn revoke(db: &mut PgConnection, id: Uuid) -> Result<TokenRow, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE admin_tokens SET revoked_at = now(), version = nextval('config_version') WHERE id = $1 RETURNING {COLUMNS}"
    )))
    .bind(id)
    .fetch_one(db)
    .await
}
