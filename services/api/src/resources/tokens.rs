//! `/api/v1/tokens`: admin API tokens. The token itself is shown once, when issued; only its
//! SHA-256 is stored. Admin role only.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use mih_shared::crypto::random_hex;

use super::{Problems, check_text, not_found, with_etag};
use crate::audit;
use crate::auth::{Caller, Role, TOKEN_PREFIX, hash_token};
use crate::error::{ApiFailure, ApiResult};
use crate::extract::{ApiJson, ApiQuery, IfMatch, Page, PageQuery, check_version};
use crate::state::AppState;

const KIND: &str = "token";
/// Characters of the token kept in clear to recognise it (`mih_` + 6).
const SHOWN_PREFIX: usize = 10;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenInput {
    /// What the token is for. Required on create.
    #[schema(min_length = 1, max_length = 200)]
    pub label: Option<String>,
    /// Required on create.
    pub role: Option<Role>,
    /// When the token stops working (create only; default: never).
    pub expires_at: Option<DateTime<Utc>>,
    /// The version this update is based on (alternative to `If-Match`).
    pub version: Option<i64>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TokenView {
    pub id: Uuid,
    pub label: String,
    pub role: Role,
    /// The first characters of the token.
    pub token_prefix: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub version: i64,
}

/// A newly issued token: the only time its value is shown.
#[derive(Debug, Serialize, ToSchema)]
pub struct IssuedToken {
    #[serde(flatten)]
    pub view: TokenView,
    /// Send as `Authorization: Bearer <token>`. Not retrievable later.
    pub token: String,
}

#[derive(Debug, sqlx::FromRow)]
struct TokenRow {
    id: Uuid,
    label: String,
    role: String,
    token_prefix: String,
    created_by: String,
    created_at: DateTime<Utc>,
    last_used_at: Option<DateTime<Utc>>,
    expires_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
    version: i64,
}

impl TokenRow {
    fn view(&self) -> ApiResult<TokenView> {
        Ok(TokenView {
            id: self.id,
            label: self.label.clone(),
            role: self.role.parse().map_err(ApiFailure::Internal)?,
            token_prefix: self.token_prefix.clone(),
            created_by: self.created_by.clone(),
            created_at: self.created_at,
            last_used_at: self.last_used_at,
            expires_at: self.expires_at,
            revoked_at: self.revoked_at,
            version: self.version,
        })
    }

    fn view_json(&self) -> serde_json::Value {
        self.view()
            .ok()
            .and_then(|v| serde_json::to_value(v).ok())
            .unwrap_or_default()
    }
}

const COLUMNS: &str = "id, label, role, token_prefix, created_by, created_at, last_used_at, expires_at, revoked_at, version";

async fn load(
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

/// Active admin tokens other than `except`.
async fn other_admins(db: &mut PgConnection, except: Uuid) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM admin_tokens WHERE role = 'admin' AND revoked_at IS NULL \
         AND (expires_at IS NULL OR expires_at > now()) AND id <> $1",
    )
    .bind(except)
    .fetch_one(db)
    .await
}

fn check_label(problems: &mut Problems, label: &str) {
    check_text(problems, "label", label, 1, 200);
}

/// Issues a token; used by the API, `mih token create` and the bootstrap token.
pub async fn issue(
    db: &PgPool,
    label: &str,
    role: Role,
    expires_at: Option<DateTime<Utc>>,
    actor: &str,
    given: Option<&str>,
) -> ApiResult<IssuedToken> {
    let mut problems = Problems::default();
    check_label(&mut problems, label);
    if let Some(at) = expires_at {
        problems.check(at > Utc::now(), "expires_at", "must be in the future");
    }
    problems.into_result()?;
    let token = match given {
        Some(token) => token.to_owned(),
        None => format!(
            "{TOKEN_PREFIX}{}",
            random_hex(24).map_err(ApiFailure::Crypto)?
        ),
    };
    let prefix: String = token.chars().take(SHOWN_PREFIX).collect();
    let mut tx = db.begin().await?;
    let row: TokenRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO admin_tokens (id, label, role, token_hash, token_prefix, created_by, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {COLUMNS}"
    )))
    .bind(Uuid::now_v7())
    .bind(label)
    .bind(role.as_str())
    .bind(hash_token(&token))
    .bind(&prefix)
    .bind(actor)
    .bind(expires_at)
    .fetch_one(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        actor,
        "create",
        KIND,
        &row.id.to_string(),
        None,
        Some(row.view_json()),
    )
    .await?;
    tx.commit().await?;
    Ok(IssuedToken {
        view: row.view()?,
        token,
    })
}

/// Makes sure the configured bootstrap token exists as an admin token; true if it was created.
pub async fn ensure_bootstrap(db: &PgPool, token: &str) -> ApiResult<bool> {
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM admin_tokens WHERE token_hash = $1)")
            .bind(hash_token(token))
            .fetch_one(db)
            .await?;
    if exists {
        return Ok(false);
    }
    issue(
        db,
        "bootstrap (bootstrap_admin_token)",
        Role::Admin,
        None,
        "system",
        Some(token),
    )
    .await?;
    Ok(true)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TokenFilter {
    pub role: Option<Role>,
    /// Only revoked (true) or only active (false) tokens.
    pub revoked: Option<bool>,
}

/// List tokens (never their values).
#[utoipa::path(get, path = "", tag = "tokens", params(TokenFilter, PageQuery),
    responses((status = 200, body = Page<TokenView>), (status = 401), (status = 403), (status = 422)))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(filter): ApiQuery<TokenFilter>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> ApiResult<axum::Json<Page<TokenView>>> {
    caller.require(Role::Admin)?;
    let limit = page.limit()?;
    let cursor = match &page.cursor {
        Some(raw) => Some(
            Uuid::parse_str(raw)
                .map_err(|_| ApiFailure::invalid("cursor", "is not a cursor this API issued"))?,
        ),
        None => None,
    };
    let rows: Vec<TokenRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM admin_tokens WHERE ($1::uuid IS NULL OR id > $1) \
         AND ($2::text IS NULL OR role = $2) \
         AND ($3::bool IS NULL OR (revoked_at IS NOT NULL) = $3) ORDER BY id LIMIT $4"
    )))
    .bind(cursor)
    .bind(filter.role.map(Role::as_str))
    .bind(filter.revoked)
    .bind(limit + 1)
    .fetch_all(&state.db)
    .await?;
    let views = rows
        .iter()
        .map(TokenRow::view)
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(axum::Json(Page::from_rows(
        views,
        limit,
        |v: &TokenView| v.id.to_string(),
    )))
}

/// Issue a token. The response is the only place its value appears.
#[utoipa::path(post, path = "", tag = "tokens", request_body = TokenInput,
    responses((status = 201, body = IssuedToken), (status = 401), (status = 403), (status = 422)))]
async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(input): ApiJson<TokenInput>,
) -> ApiResult<Response> {
    caller.require(Role::Admin)?;
    let mut problems = Problems::default();
    problems.check(input.label.is_some(), "label", "is required");
    problems.check(input.role.is_some(), "role", "is required");
    problems.into_result()?;
    let (Some(label), Some(role)) = (input.label, input.role) else {
        return Err(ApiFailure::Internal(
            "token validation passed without label or role".into(),
        ));
    };
    let issued = issue(
        &state.db,
        &label,
        role,
        input.expires_at,
        &caller.actor(),
        None,
    )
    .await?;
    Ok(with_etag(StatusCode::CREATED, issued.view.version, &issued))
}

fn parse_id(raw: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(raw).map_err(|_| not_found(KIND, raw))
}

/// Get one token (never its value).
#[utoipa::path(get, path = "/{id}", tag = "tokens", params(("id" = String, Path)),
    responses((status = 200, body = TokenView), (status = 401), (status = 403), (status = 404)))]
async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    caller.require(Role::Admin)?;
    let uuid = parse_id(&id)?;
    let mut conn = state.db.acquire().await?;
    let row = load(&mut conn, uuid, false)
        .await?
        .ok_or_else(|| not_found(KIND, &id))?;
    Ok(with_etag(StatusCode::OK, row.version, &row.view()?))
}

/// Change a token's label or role.
#[utoipa::path(patch, path = "/{id}", tag = "tokens", params(("id" = String, Path)), request_body = TokenInput,
    responses((status = 200, body = TokenView), (status = 401), (status = 403), (status = 404),
              (status = 409), (status = 412), (status = 422)))]
async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    if_match: IfMatch,
    ApiJson(input): ApiJson<TokenInput>,
) -> ApiResult<Response> {
    caller.require(Role::Admin)?;
    let uuid = parse_id(&id)?;
    let mut tx = state.db.begin().await?;
    let current = load(&mut tx, uuid, true)
        .await?
        .ok_or_else(|| not_found(KIND, &id))?;
    check_version(current.version, if_match, input.version)?;
    let mut problems = Problems::default();
    problems.check(
        input.expires_at.is_none(),
        "expires_at",
        "is set when a token is issued; issue a new token instead",
    );
    let label = input.label.unwrap_or_else(|| current.label.clone());
    check_label(&mut problems, &label);
    problems.into_result()?;
    let role = input.role.unwrap_or(current.view()?.role);
    if role != Role::Admin && current.role == "admin" && other_admins(&mut tx, uuid).await? == 0 {
        return Err(ApiFailure::Conflict(
            "this is the last admin token; issue another admin token first".into(),
        ));
    }
    let row: TokenRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE admin_tokens SET label = $2, role = $3, version = nextval('config_version') \
         WHERE id = $1 RETURNING {COLUMNS}"
    )))
    .bind(uuid)
    .bind(&label)
    .bind(role.as_str())
    .fetch_one(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        &caller.actor(),
        "update",
        KIND,
        &id,
        Some(current.view_json()),
        Some(row.view_json()),
    )
    .await?;
    tx.commit().await?;
    Ok(with_etag(StatusCode::OK, row.version, &row.view()?))
}

/// Revoke a token. The last active admin token cannot be revoked.
#[utoipa::path(delete, path = "/{id}", tag = "tokens", params(("id" = String, Path)),
    responses((status = 204), (status = 401), (status = 403), (status = 404), (status = 409), (status = 412)))]
async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    if_match: IfMatch,
) -> ApiResult<Response> {
    caller.require(Role::Admin)?;
    let uuid = parse_id(&id)?;
    let mut tx = state.db.begin().await?;
    let current = load(&mut tx, uuid, true)
        .await?
        .ok_or_else(|| not_found(KIND, &id))?;
    check_version(current.version, if_match, None)?;
    if current.revoked_at.is_some() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    if current.role == "admin" && other_admins(&mut tx, uuid).await? == 0 {
        return Err(ApiFailure::Conflict(
            "this is the last admin token; issue another admin token first".into(),
        ));
    }
    let row: TokenRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE admin_tokens SET revoked_at = now(), version = nextval('config_version') WHERE id = $1 RETURNING {COLUMNS}"
    )))
    .bind(uuid)
    .fetch_one(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        &caller.actor(),
        "revoke",
        KIND,
        &id,
        Some(current.view_json()),
        Some(row.view_json()),
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get_one, update, revoke))
}
