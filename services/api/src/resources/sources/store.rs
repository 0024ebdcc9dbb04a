//! The `sources` table.

use chrono::{DateTime, Utc};
use sqlx::types::Json as SqlJson;
use sqlx::{PgConnection, PgPool};

use mih_shared::live::SealedSigningSecret;

/// A source as PostgreSQL holds it (secrets sealed, bearer tokens hashed).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SourceRow {
    pub id: String,
    pub name: String,
    pub enabled: bool,
    pub signing_secrets: SqlJson<Vec<SealedSigningSecret>>,
    pub bearer_token_hashes: Vec<String>,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str =
    "id, name, enabled, signing_secrets, bearer_token_hashes, version, created_at, updated_at";

pub async fn load_all(db: &PgPool) -> Result<Vec<SourceRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM sources ORDER BY id"
    )))
    .fetch_all(db)
    .await
}

pub(crate) async fn load(
    db: &mut PgConnection,
    id: &str,
    for_update: bool,
) -> Result<Option<SourceRow>, sqlx::Error> {
    let lock = if for_update { " FOR UPDATE" } else { "" };
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM sources WHERE id = $1{lock}"
    )))
    .bind(id)
    .fetch_optional(db)
    .await
}

/// Up to `limit` sources after `after` by id; `q` is part of the id or name.
pub(crate) async fn page(
    db: &PgPool,
    after: Option<&str>,
    enabled: Option<bool>,
    q: Option<&str>,
    limit: i64,
) -> Result<Vec<SourceRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM sources WHERE ($1::text IS NULL OR id > $1) \
         AND ($2::bool IS NULL OR enabled = $2) \
         AND ($3::text IS NULL OR id ILIKE '%' || $3 || '%' OR name ILIKE '%' || $3 || '%') \
         ORDER BY id LIMIT $4"
    )))
    .bind(after)
    .bind(enabled)
    .bind(q)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Those of `ids` that name a source.
pub(crate) async fn existing(
    db: &mut PgConnection,
    ids: &[String],
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM sources WHERE id = ANY($1)")
        .bind(ids)
        .fetch_all(db)
        .await
}

/// Inserts or updates `row`, taking a new version; returns the stored row.
pub async fn save(
    db: &mut PgConnection,
    row: &SourceRow,
    insert: bool,
) -> Result<SourceRow, sqlx::Error> {
    let sql = if insert {
        format!(
            "INSERT INTO sources (id, name, enabled, signing_secrets, bearer_token_hashes) \
             VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}"
        )
    } else {
        format!(
            "UPDATE sources SET name = $2, enabled = $3, signing_secrets = $4, bearer_token_hashes = $5, \
             version = nextval('config_version'), updated_at = now() WHERE id = $1 RETURNING {COLUMNS}"
        )
    };
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(&row.id)
        .bind(&row.name)
        .bind(row.enabled)
        .bind(&row.signing_secrets)
        .bind(&row.bearer_token_hashes)
        .fetch_one(db)
        .await
}

pub(crate) async fn delete(db: &mut PgConnection, id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM sources WHERE id = $1")
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}
