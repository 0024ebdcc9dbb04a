//! `/api/v1/audit`: every configuration change, newest first.

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::{Caller, Role};
use crate::error::{ApiFailure, ApiResult};
use crate::extract::{ApiQuery, Page, PageQuery};
use crate::state::AppState;

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct AuditEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    /// `token:<id> (<label>)`, `cli` or `system`.
    pub actor: String,
    /// create, update, delete, enable, disable, revoke, reencrypt.
    pub action: String,
    /// source, service, rule, token or backfill.
    pub resource_kind: String,
    pub resource_id: String,
    /// The resource as the API showed it before (secrets only as "is set" flags).
    #[schema(value_type = Option<Object>)]
    pub before: Option<serde_json::Value>,
    #[schema(value_type = Option<Object>)]
    pub after: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditFilter {
    /// source, service, rule, token or backfill.
    pub resource_kind: Option<String>,
    pub resource_id: Option<String>,
    pub action: Option<String>,
}

/// List configuration changes, newest first.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditFilter, PageQuery),
    responses((status = 200, body = Page<AuditEntry>), (status = 401), (status = 403), (status = 422)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(filter): ApiQuery<AuditFilter>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> ApiResult<axum::Json<Page<AuditEntry>>> {
    caller.require(Role::Viewer)?;
    let limit = page.limit()?;
    let cursor = match &page.cursor {
        Some(raw) => Some(
            raw.parse::<i64>()
                .map_err(|_| ApiFailure::invalid("cursor", "is not a cursor this API issued"))?,
        ),
        None => None,
    };
    let rows: Vec<AuditEntry> = sqlx::query_as(
        "SELECT id, at, actor, action, resource_kind, resource_id, before, after FROM config_audit \
         WHERE ($1::bigint IS NULL OR id < $1) AND ($2::text IS NULL OR resource_kind = $2) \
         AND ($3::text IS NULL OR resource_id = $3) AND ($4::text IS NULL OR action = $4) \
         ORDER BY id DESC LIMIT $5",
    )
    .bind(cursor)
    .bind(&filter.resource_kind)
    .bind(&filter.resource_id)
    .bind(&filter.action)
    .bind(limit + 1)
    .fetch_all(&state.db)
    .await?;
    Ok(axum::Json(Page::from_rows(
        rows,
        limit,
        |e: &AuditEntry| e.id.to_string(),
    )))
}
