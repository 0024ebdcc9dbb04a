//! The `rules` table.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::types::Json as SqlJson;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use mih_shared::live::RuleTarget;

/// A rule as PostgreSQL holds it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RuleRow {
    pub id: Uuid,
    pub name: String,
    pub description: String,
    pub enabled: bool,
    pub sources: Vec<String>,
    pub events: Vec<String>,
    pub condition: Option<String>,
    pub service: String,
    pub target: SqlJson<RuleTarget>,
    pub headers: SqlJson<BTreeMap<String, String>>,
    pub body: Option<String>,
    pub content_type: String,
    pub ordering_key: Option<String>,
    pub ordering_on_dead_letter: String,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, name, description, enabled, sources, events, condition, service, target, headers, \
    body, content_type, ordering_key, ordering_on_dead_letter, version, created_at, updated_at";

pub async fn load_all(db: &PgPool) -> Result<Vec<RuleRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM rules ORDER BY id"
    )))
    .fetch_all(db)
    .await
}

pub(super) async fn load(
    db: &mut PgConnection,
    id: Uuid,
    for_update: bool,
) -> Result<Option<RuleRow>, sqlx::Error> {
    let lock = if for_update { " FOR UPDATE" } else { "" };
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM rules WHERE id = $1{lock}"
    )))
    .bind(id)
    .fetch_optional(db)
    .await
}

/// What a list may ask for besides paging.
#[derive(Debug, Default)]
pub(super) struct Wanted<'a> {
    pub service: Option<&'a str>,
    pub enabled: Option<bool>,
    /// Rules taking this source's events, including rules for every source.
    pub source: Option<&'a str>,
    /// Rules with exactly this (normalised) event pattern.
    pub event: Option<&'a str>,
    /// Part of the name or description.
    pub q: Option<&'a str>,
}

/// Up to `limit` rules after `after` by id.
pub(super) async fn page(
    db: &PgPool,
    wanted: &Wanted<'_>,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<RuleRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM rules WHERE ($1::uuid IS NULL OR id > $1) \
         AND ($2::text IS NULL OR service = $2) AND ($3::bool IS NULL OR enabled = $3) \
         AND ($4::text IS NULL OR sources = '{{}}' OR $4 = ANY(sources)) \
         AND ($5::text IS NULL OR $5 = ANY(events)) \
         AND ($6::text IS NULL OR name ILIKE '%' || $6 || '%' OR description ILIKE '%' || $6 || '%') \
         ORDER BY id LIMIT $7"
    )))
    .bind(after)
    .bind(wanted.service)
    .bind(wanted.enabled)
    .bind(wanted.source)
    .bind(wanted.event)
    .bind(wanted.q)
    .bind(limit)
    .fetch_all(db)
    .await
}

pub(super) async fn save(
    db: &mut PgConnection,
    row: &RuleRow,
    insert: bool,
) -> Result<RuleRow, sqlx::Error> {
    let values = "$2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14";
    let sql = if insert {
        format!(
            "INSERT INTO rules (id, name, description, enabled, sources, events, condition, service, target, \
             headers, body, content_type, ordering_key, ordering_on_dead_letter) VALUES ($1, {values}) RETURNING {COLUMNS}"
        )
    } else {
        format!(
            "UPDATE rules SET (name, description, enabled, sources, events, condition, service, target, headers, \
             body, content_type, ordering_key, ordering_on_dead_letter, version, updated_at) = ({values}, nextval('config_version'), now()) \
             WHERE id = $1 RETURNING {COLUMNS}"
        )
    };
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(row.id)
        .bind(&row.name)
        .bind(&row.description)
        .bind(row.enabled)
        .bind(&row.sources)
        .bind(&row.events)
        .bind(&row.condition)
        .bind(&row.service)
        .bind(&row.target)
        .bind(&row.headers)
        .bind(&row.body)
        .bind(&row.content_type)
        .bind(&row.ordering_key)
        .bind(&row.ordering_on_dead_letter)
        .fetch_one(db)
        .await
}

pub(super) async fn delete(db: &mut PgConnection, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM rules WHERE id = $1")
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

/// The rules that target a service, locked (to delete them with it).
pub(super) async fn for_service(
    db: &mut PgConnection,
    service: &str,
) -> Result<Vec<RuleRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM rules WHERE service = $1 ORDER BY name FOR UPDATE"
    )))
    .bind(service)
    .fetch_all(db)
    .await
}

/// How many rules target a service.
pub(super) async fn count_for_service(
    db: &mut PgConnection,
    service: &str,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM rules WHERE service = $1")
        .bind(service)
        .fetch_one(db)
        .await
}

/// The names of (up to ten) rules that name a source.
pub(super) async fn naming_source(
    db: &mut PgConnection,
    source: &str,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT name FROM rules WHERE $1 = ANY(sources) ORDER BY name LIMIT 10")
        .bind(source)
        .fetch_all(db)
        .await
}
