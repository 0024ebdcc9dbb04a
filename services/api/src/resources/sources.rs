//! `/api/v1/sources`: the Moodle sites allowed to send events.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::types::Json as SqlJson;
use sqlx::{PgConnection, PgPool};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use mih_shared::crypto::random_hex;
use mih_shared::live::{self, LiveSource, SealedSigningSecret};
use mih_shared::messages::Version;
use mih_shared::names::SourceId;
use mih_shared::signature::SigningSecret;
use mih_shared::sources::hash_token_hex;

use super::config_row::{self, ConfigRow};
use super::{Problems, Tri, check_text, seal, with_etag};
use crate::auth::{Caller, Role};
use crate::error::{ApiFailure, ApiResult};
use crate::extract::{ApiJson, ApiQuery, IfMatch, Page, PageQuery};
use crate::state::AppState;

const DEFAULT_OVERLAP_SECS: u64 = 24 * 3600;
const MAX_OVERLAP_SECS: u64 = 30 * 24 * 3600;
const MIN_TOKEN_LEN: usize = 16;

/// A source as written by a client. Secrets are write-only: on update, leaving one out keeps
/// it, `null` removes it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceInput {
    /// Slug the site names in the `mih-source` header. Required on create; fixed afterwards.
    #[schema(pattern = "^[a-z0-9][a-z0-9_-]{0,63}$")]
    pub id: Option<String>,
    /// Display name (defaults to the id).
    #[schema(min_length = 1, max_length = 200)]
    pub name: Option<String>,
    /// Default true.
    pub enabled: Option<bool>,
    /// A Standard Webhooks secret (`whsec_…`, 24–64 bytes). Setting it rotates: earlier
    /// secrets stay valid for `rotation_overlap_secs`.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub signing_secret: Tri<String>,
    /// How long the previous signing secrets remain valid after a rotation (default 86400).
    #[schema(maximum = 2592000)]
    pub rotation_overlap_secs: Option<u64>,
    /// A bearer token (at least 16 characters) the site may send instead of signing.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub bearer_token: Tri<String>,
    /// The version this update is based on (alternative to `If-Match`).
    pub version: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SigningSecretView {
    pub id: String,
    pub created_at: DateTime<Utc>,
    /// Set while a newer secret is taking over.
    pub expires_at: Option<DateTime<Utc>>,
}

/// A source as the API shows it: secrets never appear, only whether they are set.
#[derive(Debug, Serialize, ToSchema)]
pub struct SourceView {
    pub id: String,
    pub name: String,
    pub enabled: bool,
    pub signing_secrets: Vec<SigningSecretView>,
    pub bearer_token_set: bool,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

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

impl ConfigRow for SourceRow {
    const KIND: &'static str = "source";
    const WRITE_ROLE: Role = Role::Admin;
    type View = SourceView;
    type Live = LiveSource;

    fn id(&self) -> String {
        self.id.clone()
    }

    fn version(&self) -> i64 {
        self.version
    }

    fn view(&self) -> SourceView {
        SourceView {
            id: self.id.clone(),
            name: self.name.clone(),
            enabled: self.enabled,
            signing_secrets: self
                .signing_secrets
                .iter()
                .map(|s| SigningSecretView {
                    id: s.id.clone(),
                    created_at: s.created_at,
                    expires_at: s.expires_at,
                })
                .collect(),
            bearer_token_set: !self.bearer_token_hashes.is_empty(),
            version: self.version,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }

    fn live(&self) -> ApiResult<(String, LiveSource)> {
        let id: SourceId = self
            .id
            .parse()
            .map_err(|e| ApiFailure::Internal(format!("stored source id: {e}")))?;
        let live = LiveSource {
            v: Version,
            id,
            name: self.name.clone(),
            enabled: self.enabled,
            signing_secrets: self.signing_secrets.0.clone(),
            bearer_token_hashes: self.bearer_token_hashes.clone(),
            version: self.version,
        };
        Ok((live::source_key(&live.id), live))
    }

    fn with_enabled(&self, enabled: bool) -> Self {
        SourceRow {
            enabled,
            ..self.clone()
        }
    }

    async fn load(db: &mut PgConnection, id: &str, for_update: bool) -> ApiResult<Option<Self>> {
        Ok(load(db, id, for_update).await?)
    }

    async fn save(db: &mut PgConnection, row: &Self, insert: bool) -> ApiResult<Self> {
        Ok(save(db, row, insert).await?)
    }

    async fn delete(db: &mut PgConnection, row: &Self) -> ApiResult<()> {
        sqlx::query("DELETE FROM sources WHERE id = $1")
            .bind(&row.id)
            .execute(db)
            .await?;
        Ok(())
    }
}

/// Applies an input to the current row (none when creating), validating everything.
fn apply(
    state: &AppState,
    current: Option<&SourceRow>,
    input: SourceInput,
) -> ApiResult<SourceRow> {
    let mut problems = Problems::default();
    let id = match (current, &input.id) {
        (Some(row), Some(id)) if id != &row.id => {
            problems.add("id", "cannot change; create a new source instead");
            row.id.clone()
        }
        (Some(row), _) => row.id.clone(),
        (None, Some(id)) => {
            if let Err(e) = SourceId::parse(id.clone()) {
                problems.add("id", e.to_string());
            }
            id.clone()
        }
        (None, None) => {
            problems.add("id", "is required");
            String::new()
        }
    };
    let name = input
        .name
        .or_else(|| current.map(|r| r.name.clone()))
        .unwrap_or_else(|| id.clone());
    check_text(&mut problems, "name", &name, 1, 200);
    let overlap = input.rotation_overlap_secs.unwrap_or(DEFAULT_OVERLAP_SECS);
    problems.check(
        overlap <= MAX_OVERLAP_SECS,
        "rotation_overlap_secs",
        format!("must be at most {MAX_OVERLAP_SECS} (30 days)"),
    );
    if let Tri::Value(secret) = &input.signing_secret
        && let Err(e) = SigningSecret::parse(secret)
    {
        problems.add("signing_secret", e.to_string());
    }
    if let Tri::Value(token) = &input.bearer_token {
        problems.check(
            (MIN_TOKEN_LEN..=512).contains(&token.len()),
            "bearer_token",
            format!("must be {MIN_TOKEN_LEN} to 512 characters long"),
        );
    }
    problems.into_result()?;

    let now = Utc::now();
    let mut signing_secrets = current
        .map(|r| r.signing_secrets.0.clone())
        .unwrap_or_default();
    signing_secrets.retain(|s| s.active_at(now));
    match input.signing_secret {
        Tri::Absent => {}
        Tri::Null => signing_secrets.clear(),
        Tri::Value(secret) => {
            let expires =
                now + chrono::Duration::seconds(i64::try_from(overlap).unwrap_or(i64::MAX / 2));
            for old in &mut signing_secrets {
                old.expires_at = Some(old.expires_at.map_or(expires, |at| at.min(expires)));
            }
            if overlap == 0 {
                signing_secrets.clear();
            }
            signing_secrets.push(SealedSigningSecret {
                id: format!("sec_{}", random_hex(6).map_err(ApiFailure::Crypto)?),
                secret: seal(&state.keyring, "signing_secret", &secret)?,
                created_at: now,
                expires_at: None,
            });
        }
    }
    let bearer_token_hashes = match input.bearer_token {
        Tri::Absent => current
            .map(|r| r.bearer_token_hashes.clone())
            .unwrap_or_default(),
        Tri::Null => Vec::new(),
        Tri::Value(token) => vec![hash_token_hex(&token)],
    };
    Ok(SourceRow {
        id,
        name,
        enabled: input.enabled.or(current.map(|r| r.enabled)).unwrap_or(true),
        signing_secrets: SqlJson(signing_secrets),
        bearer_token_hashes,
        version: current.map_or(0, |r| r.version),
        created_at: current.map_or(now, |r| r.created_at),
        updated_at: now,
    })
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

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SourceFilter {
    /// Only enabled (true) or disabled (false) sources.
    pub enabled: Option<bool>,
    /// Part of the id or name, case-insensitive.
    pub q: Option<String>,
}

/// List sources.
#[utoipa::path(get, path = "", tag = "sources", params(SourceFilter, PageQuery),
    responses((status = 200, body = Page<SourceView>), (status = 401), (status = 403)))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(filter): ApiQuery<SourceFilter>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> ApiResult<axum::Json<Page<SourceView>>> {
    caller.require(Role::Viewer)?;
    let limit = page.limit()?;
    let rows: Vec<SourceRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM sources WHERE ($1::text IS NULL OR id > $1) \
         AND ($2::bool IS NULL OR enabled = $2) \
         AND ($3::text IS NULL OR id ILIKE '%' || $3 || '%' OR name ILIKE '%' || $3 || '%') \
         ORDER BY id LIMIT $4"
    )))
    .bind(&page.cursor)
    .bind(filter.enabled)
    .bind(&filter.q)
    .bind(limit + 1)
    .fetch_all(&state.db)
    .await?;
    let views = rows.iter().map(SourceRow::view).collect();
    Ok(axum::Json(Page::from_rows(
        views,
        limit,
        |v: &SourceView| v.id.clone(),
    )))
}

/// Create a source.
#[utoipa::path(post, path = "", tag = "sources", request_body = SourceInput,
    responses((status = 201, body = SourceView), (status = 401), (status = 403), (status = 409), (status = 422)))]
async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(input): ApiJson<SourceInput>,
) -> ApiResult<Response> {
    caller.require(Role::Admin)?;
    let row = apply(&state, None, input)?;
    config_row::create(&state, &caller, row).await
}

/// Get one source.
#[utoipa::path(get, path = "/{id}", tag = "sources", params(("id" = String, Path)),
    responses((status = 200, body = SourceView), (status = 401), (status = 403), (status = 404)))]
async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    config_row::get_one::<SourceRow>(&state, &caller, &id).await
}

/// Change a source. Fields left out keep their value; `null` removes a secret.
#[utoipa::path(patch, path = "/{id}", tag = "sources", params(("id" = String, Path)), request_body = SourceInput,
    responses((status = 200, body = SourceView), (status = 401), (status = 403), (status = 404),
              (status = 409), (status = 412), (status = 422)))]
async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    if_match: IfMatch,
    ApiJson(input): ApiJson<SourceInput>,
) -> ApiResult<Response> {
    let mut tx = state.db.begin().await?;
    let current: SourceRow =
        config_row::load_for_change(&mut tx, &caller, &id, if_match, input.version).await?;
    let row = apply(&state, Some(&current), input)?;
    let stored = config_row::commit(
        &state,
        tx,
        &caller.actor(),
        "update",
        Some(&current),
        &row,
        false,
    )
    .await?;
    Ok(with_etag(StatusCode::OK, stored.version, &stored.view()))
}

/// Enable a source.
#[utoipa::path(post, path = "/{id}/enable", tag = "sources", params(("id" = String, Path)),
    responses((status = 200, body = SourceView), (status = 401), (status = 403), (status = 404), (status = 412)))]
async fn enable(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    if_match: IfMatch,
) -> ApiResult<Response> {
    config_row::set_enabled::<SourceRow>(&state, &caller, &id, if_match, true).await
}

/// Disable a source: its requests are refused with 403.
#[utoipa::path(post, path = "/{id}/disable", tag = "sources", params(("id" = String, Path)),
    responses((status = 200, body = SourceView), (status = 401), (status = 403), (status = 404), (status = 412)))]
async fn disable(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    if_match: IfMatch,
) -> ApiResult<Response> {
    config_row::set_enabled::<SourceRow>(&state, &caller, &id, if_match, false).await
}

/// Delete a source. Refused while rules name it.
#[utoipa::path(delete, path = "/{id}", tag = "sources", params(("id" = String, Path)),
    responses((status = 204), (status = 401), (status = 403), (status = 404), (status = 409), (status = 412)))]
async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    if_match: IfMatch,
) -> ApiResult<Response> {
    let mut tx = state.db.begin().await?;
    let current: SourceRow =
        config_row::load_for_change(&mut tx, &caller, &id, if_match, None).await?;
    let users: Vec<String> =
        sqlx::query_scalar("SELECT name FROM rules WHERE $1 = ANY(sources) ORDER BY name LIMIT 10")
            .bind(&id)
            .fetch_all(&mut *tx)
            .await?;
    if !users.is_empty() {
        return Err(ApiFailure::Conflict(format!(
            "rules still name source `{id}`: {}; change them first",
            users.join(", ")
        )));
    }
    config_row::delete_row(&mut tx, &caller.actor(), &current).await?;
    tx.commit().await?;
    config_row::forget(&state, &current).await?;
    Ok(config_row::deleted())
}

/// Creates the `[sources.*]` of the configuration that do not exist yet (never overwrites).
pub async fn import_seeds(
    state: &AppState,
    config: &mih_shared::config::Config,
) -> ApiResult<usize> {
    let mut created = 0;
    for (id, seed) in &config.sources {
        let mut tx = state.db.begin().await?;
        if load(&mut tx, id.as_str(), true).await?.is_some() {
            continue;
        }
        let now = Utc::now();
        let mut secrets = Vec::new();
        for secret in &seed.signing_secrets {
            secrets.push(SealedSigningSecret {
                id: format!("sec_{}", random_hex(6).map_err(ApiFailure::Crypto)?),
                secret: seal(
                    &state.keyring,
                    &format!("sources.{id}.signing_secrets"),
                    secret.expose(),
                )?,
                created_at: now,
                expires_at: None,
            });
        }
        let row = SourceRow {
            id: id.to_string(),
            name: seed.name.clone().unwrap_or_else(|| id.to_string()),
            enabled: seed.enabled,
            signing_secrets: SqlJson(secrets),
            bearer_token_hashes: seed
                .bearer_tokens
                .iter()
                .map(|t| hash_token_hex(t.expose()))
                .collect(),
            version: 0,
            created_at: now,
            updated_at: now,
        };
        config_row::commit(
            state,
            tx,
            "system (configuration seed)",
            "create",
            None,
            &row,
            true,
        )
        .await?;
        created += 1;
    }
    Ok(created)
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get_one, update, delete))
        .routes(routes!(enable))
        .routes(routes!(disable))
}
