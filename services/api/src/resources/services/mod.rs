//! `/api/v1/services`: the external systems mih delivers to.

mod apply;
mod reach;

use apply::apply;
pub use reach::Warning;

use std::collections::BTreeMap;
use std::sync::Arc;

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

use mih_shared::crypto::Sealed;
use mih_shared::live::{
    self, Auth, BreakerPolicy, LiveService, RetryPolicy, SoapVersion, Transport,
};
use mih_shared::messages::Version;
use mih_shared::names::ServiceSlug;

use super::config_row::{self, ConfigRow};
use super::{Tri, with_etag};
use crate::auth::{Caller, Role};
use crate::error::{ApiFailure, ApiResult};
use crate::extract::{ApiJson, ApiQuery, IfMatch, Page, PageQuery};
use crate::state::AppState;

/// Defaults for the delivery policy of a new service.
mod defaults {
    pub const TIMEOUT_MS: u64 = 5_000;
    pub const MAX_RETRIES: u32 = 5;
    pub const BACKOFF_BASE_MS: u64 = 1_000;
    pub const BACKOFF_CAP_MS: u64 = 300_000;
    pub const FAILURE_THRESHOLD: u32 = 5;
    pub const COOLDOWN_MS: u64 = 30_000;
    pub const HALF_OPEN_PROBES: u32 = 1;
    pub const CONCURRENCY: u32 = 10;
    pub const MAX_JOB_AGE_MS: u64 = 24 * 3600 * 1000;
    pub const API_KEY_HEADER: &str = "X-API-Key";
}

/// How the service is reached. Secrets (`password`) are write-only.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum TransportInput {
    /// REST/HTTP: rules' paths are joined to `base_url`.
    Rest { base_url: String },
    /// RabbitMQ (AMQP 0-9-1).
    Amqp {
        host: String,
        /// Default 5672, or 5671 with `tls`.
        port: Option<u16>,
        /// Default `/`.
        vhost: Option<String>,
        /// Default `guest`.
        username: Option<String>,
        #[serde(default)]
        #[schema(value_type = Option<String>)]
        password: Tri<String>,
        /// amqps with the certificate verified (default false).
        tls: Option<bool>,
        /// Default: the default exchange (`""`), where the routing key names a queue.
        exchange: Option<String>,
        /// Used when a rule gives none.
        routing_key: Option<String>,
        /// A durable queue to declare before publishing.
        queue_declare: Option<String>,
    },
    /// SOAP 1.1 or 1.2 over HTTP.
    Soap {
        endpoint: String,
        wsdl_url: Option<String>,
        /// `1.1` (default) or `1.2`.
        version: Option<String>,
        /// The service's target namespace: the default namespace of an unqualified body, and
        /// the prefix of the SOAP action (`<namespace>/<operation>`).
        namespace: Option<String>,
        /// Send basic auth's credentials as a WS-Security UsernameToken (PasswordText) in the
        /// envelope instead of an HTTP `Authorization` header. Needs `auth.type` `basic`.
        /// Default false.
        ws_security: Option<bool>,
    },
}

/// How mih authenticates to the service. Secrets are write-only: on update, leaving one out
/// keeps it (when the type stays the same).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthInput {
    None,
    /// `Authorization: Bearer <token>`.
    Bearer {
        token: Option<String>,
    },
    /// `<header>: <key>` (header default `X-API-Key`).
    ApiKey {
        header: Option<String>,
        key: Option<String>,
    },
    /// HTTP Basic.
    Basic {
        username: String,
        password: Option<String>,
    },
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetrySettings {
    /// Retries after the first attempt (default 5).
    #[schema(maximum = 100)]
    pub max_retries: Option<u32>,
    /// First retry delay; doubles each retry with full jitter (default 1000).
    #[schema(minimum = 10, maximum = 3600000)]
    pub backoff_base_ms: Option<u64>,
    /// Longest retry delay (default 300000).
    #[schema(minimum = 10, maximum = 86400000)]
    pub backoff_cap_ms: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BreakerSettings {
    /// Consecutive failures that open the circuit (default 5).
    #[schema(minimum = 1, maximum = 1000)]
    pub failure_threshold: Option<u32>,
    /// How long the circuit stays open before probing (default 30000).
    #[schema(minimum = 100, maximum = 3600000)]
    pub cooldown_ms: Option<u64>,
    /// Probes admitted while half-open (default 1).
    #[schema(minimum = 1, maximum = 100)]
    pub half_open_probes: Option<u32>,
}

/// A service as written by a client. On update, fields left out keep their value.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceInput {
    /// The slug rules and facade callers use. Required on create; fixed afterwards.
    #[schema(pattern = "^[a-z0-9][a-z0-9_-]{0,63}$")]
    pub name: Option<String>,
    pub description: Option<String>,
    /// Default true.
    pub enabled: Option<bool>,
    /// Required on create.
    pub transport: Option<TransportInput>,
    /// Default `{"type": "none"}`.
    pub auth: Option<AuthInput>,
    /// Standard Webhooks secret (`whsec_…`) to sign each delivery, independent of `auth`.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub signing_secret: Tri<String>,
    /// Static headers sent with every request.
    pub headers: Option<BTreeMap<String, String>>,
    /// Per-attempt timeout (default 5000).
    #[schema(minimum = 1, maximum = 300000)]
    pub timeout_ms: Option<u64>,
    pub retry: Option<RetrySettings>,
    pub breaker: Option<BreakerSettings>,
    /// Most deliveries in flight at once (default 10).
    #[schema(minimum = 1, maximum = 1000)]
    pub concurrency: Option<u32>,
    /// Most deliveries started per second; `null` for no limit.
    #[serde(default)]
    #[schema(value_type = Option<u32>)]
    pub rate_limit_per_sec: Tri<u32>,
    /// A job older than this is dead-lettered instead of attempted (default 86400000).
    #[schema(minimum = 60000, maximum = 2592000000_u64)]
    pub max_job_age_ms: Option<u64>,
    /// The version this update is based on (alternative to `If-Match`).
    pub version: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum TransportView {
    Rest {
        base_url: String,
    },
    Amqp {
        host: String,
        port: u16,
        vhost: String,
        username: String,
        password_set: bool,
        tls: bool,
        exchange: String,
        routing_key: String,
        queue_declare: Option<String>,
    },
    Soap {
        endpoint: String,
        wsdl_url: Option<String>,
        #[schema(value_type = String)]
        version: SoapVersion,
        namespace: Option<String>,
        ws_security: bool,
    },
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AuthView {
    None,
    Bearer {
        token_set: bool,
    },
    ApiKey {
        header: String,
        key_set: bool,
    },
    Basic {
        username: String,
        password_set: bool,
    },
}

/// A service as the API shows it: secrets never appear, only whether they are set.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServiceView {
    pub name: String,
    pub description: String,
    pub enabled: bool,
    pub transport: TransportView,
    pub auth: AuthView,
    pub signing_secret_set: bool,
    pub headers: BTreeMap<String, String>,
    pub timeout_ms: u64,
    pub retry: RetrySettings,
    pub breaker: BreakerSettings,
    pub concurrency: u32,
    pub rate_limit_per_sec: Option<u32>,
    pub max_job_age_ms: u64,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// In the answer to a create or update only: what will not work as configured (an address
    /// the dispatcher's SSRF guard refuses, a host that does not resolve).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Warning>,
}

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
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Numbers are range-checked before they are stored, so these conversions cannot fail.
fn u64_of(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}
fn u32_of(n: i32) -> u32 {
    u32::try_from(n).unwrap_or(0)
}
fn i64_of(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
fn i32_of(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

impl ServiceRow {
    fn retry(&self) -> RetryPolicy {
        RetryPolicy {
            max_retries: u32_of(self.max_retries),
            backoff_base_ms: u64_of(self.backoff_base_ms),
            backoff_cap_ms: u64_of(self.backoff_cap_ms),
        }
    }

    fn breaker(&self) -> BreakerPolicy {
        BreakerPolicy {
            failure_threshold: u32_of(self.breaker_failure_threshold),
            cooldown_ms: u64_of(self.breaker_cooldown_ms),
            half_open_probes: u32_of(self.breaker_half_open_probes),
        }
    }
}

impl ConfigRow for ServiceRow {
    const KIND: &'static str = "service";
    const WRITE_ROLE: Role = Role::Admin;
    type View = ServiceView;
    type Live = LiveService;

    fn id(&self) -> String {
        self.name.clone()
    }

    fn version(&self) -> i64 {
        self.version
    }

    fn view(&self) -> ServiceView {
        let transport = match &self.transport.0 {
            Transport::Rest(t) => TransportView::Rest {
                base_url: t.base_url.clone(),
            },
            Transport::Amqp(t) => TransportView::Amqp {
                host: t.host.clone(),
                port: t.port,
                vhost: t.vhost.clone(),
                username: t.username.clone(),
                password_set: t.password.is_some(),
                tls: t.tls,
                exchange: t.exchange.clone(),
                routing_key: t.routing_key.clone(),
                queue_declare: t.queue_declare.clone(),
            },
            Transport::Soap(t) => TransportView::Soap {
                endpoint: t.endpoint.clone(),
                wsdl_url: t.wsdl_url.clone(),
                version: t.version,
                namespace: t.namespace.clone(),
                ws_security: t.ws_security,
            },
        };
        let auth = match &self.auth.0 {
            Auth::None => AuthView::None,
            Auth::Bearer { .. } => AuthView::Bearer { token_set: true },
            Auth::ApiKey { header, .. } => AuthView::ApiKey {
                header: header.clone(),
                key_set: true,
            },
            Auth::Basic { username, .. } => AuthView::Basic {
                username: username.clone(),
                password_set: true,
            },
        };
        let retry = self.retry();
        let breaker = self.breaker();
        ServiceView {
            name: self.name.clone(),
            description: self.description.clone(),
            enabled: self.enabled,
            transport,
            auth,
            signing_secret_set: self.signing_secret.is_some(),
            headers: self.headers.0.clone(),
            timeout_ms: u64_of(self.timeout_ms),
            retry: RetrySettings {
                max_retries: Some(retry.max_retries),
                backoff_base_ms: Some(retry.backoff_base_ms),
                backoff_cap_ms: Some(retry.backoff_cap_ms),
            },
            breaker: BreakerSettings {
                failure_threshold: Some(breaker.failure_threshold),
                cooldown_ms: Some(breaker.cooldown_ms),
                half_open_probes: Some(breaker.half_open_probes),
            },
            concurrency: u32_of(self.concurrency),
            rate_limit_per_sec: self.rate_limit_per_sec.map(u32_of),
            max_job_age_ms: u64_of(self.max_job_age_ms),
            version: self.version,
            created_at: self.created_at,
            updated_at: self.updated_at,
            warnings: Vec::new(),
        }
    }

    fn live(&self) -> ApiResult<(String, LiveService)> {
        let live = LiveService {
            v: Version,
            name: self
                .name
                .parse()
                .map_err(|e| ApiFailure::Internal(format!("stored service name: {e}")))?,
            description: self.description.clone(),
            enabled: self.enabled,
            transport: self.transport.0.clone(),
            auth: self.auth.0.clone(),
            signing_secret: self.signing_secret.as_ref().map(|s| s.0.clone()),
            headers: self.headers.0.clone(),
            timeout_ms: u64_of(self.timeout_ms),
            retry: self.retry(),
            breaker: self.breaker(),
            concurrency: u32_of(self.concurrency),
            rate_limit_per_sec: self.rate_limit_per_sec.map(u32_of),
            max_job_age_ms: u64_of(self.max_job_age_ms),
            version: self.version,
        };
        Ok((live::service_key(&live.name), live))
    }

    fn with_enabled(&self, enabled: bool) -> Self {
        ServiceRow {
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
        sqlx::query("DELETE FROM services WHERE name = $1")
            .bind(&row.name)
            .execute(db)
            .await?;
        Ok(())
    }
}

const COLUMNS: &str = "name, description, enabled, kind, transport, auth, \
    to_jsonb(signing_secret) AS signing_secret, headers, timeout_ms, max_retries, backoff_base_ms, \
    backoff_cap_ms, breaker_failure_threshold, breaker_cooldown_ms, breaker_half_open_probes, \
    concurrency, rate_limit_per_sec, max_job_age_ms, version, created_at, updated_at";

pub async fn load_all(db: &PgPool) -> Result<Vec<ServiceRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM services ORDER BY name"
    )))
    .fetch_all(db)
    .await
}

/// Every service as the live configuration carries it, by name (preview, backfill).
pub async fn load_live(db: &PgPool) -> ApiResult<BTreeMap<ServiceSlug, Arc<LiveService>>> {
    let mut services = BTreeMap::new();
    for row in load_all(db).await? {
        let (_, live) = row.live()?;
        services.insert(live.name.clone(), Arc::new(live));
    }
    Ok(services)
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

async fn save(
    db: &mut PgConnection,
    row: &ServiceRow,
    insert: bool,
) -> Result<ServiceRow, sqlx::Error> {
    let values = "$2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18";
    let sql = if insert {
        format!(
            "INSERT INTO services (name, description, enabled, kind, transport, auth, signing_secret, headers, \
             timeout_ms, max_retries, backoff_base_ms, backoff_cap_ms, breaker_failure_threshold, \
             breaker_cooldown_ms, breaker_half_open_probes, concurrency, rate_limit_per_sec, max_job_age_ms) \
             VALUES ($1, {values}) RETURNING {COLUMNS}"
        )
    } else {
        format!(
            "UPDATE services SET (description, enabled, kind, transport, auth, signing_secret, headers, \
             timeout_ms, max_retries, backoff_base_ms, backoff_cap_ms, breaker_failure_threshold, \
             breaker_cooldown_ms, breaker_half_open_probes, concurrency, rate_limit_per_sec, max_job_age_ms, \
             version, updated_at) = ({values}, nextval('config_version'), now()) \
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
        .fetch_one(db)
        .await
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ServiceFilter {
    /// `rest`, `amqp` or `soap`.
    pub kind: Option<String>,
    pub enabled: Option<bool>,
    /// Part of the name or description, case-insensitive.
    pub q: Option<String>,
}

/// List services.
#[utoipa::path(get, path = "", tag = "services", params(ServiceFilter, PageQuery),
    responses((status = 200, body = Page<ServiceView>), (status = 401), (status = 403), (status = 422)))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(filter): ApiQuery<ServiceFilter>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> ApiResult<axum::Json<Page<ServiceView>>> {
    caller.require(Role::Viewer)?;
    let limit = page.limit()?;
    let rows: Vec<ServiceRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM services WHERE ($1::text IS NULL OR name > $1) \
         AND ($2::text IS NULL OR kind = $2) AND ($3::bool IS NULL OR enabled = $3) \
         AND ($4::text IS NULL OR name ILIKE '%' || $4 || '%' OR description ILIKE '%' || $4 || '%') \
         ORDER BY name LIMIT $5"
    )))
    .bind(&page.cursor)
    .bind(&filter.kind)
    .bind(filter.enabled)
    .bind(&filter.q)
    .bind(limit + 1)
    .fetch_all(&state.db)
    .await?;
    let views = rows.iter().map(ServiceRow::view).collect();
    Ok(axum::Json(Page::from_rows(
        views,
        limit,
        |v: &ServiceView| v.name.clone(),
    )))
}

/// Register a service.
#[utoipa::path(post, path = "", tag = "services", request_body = ServiceInput,
    responses((status = 201, body = ServiceView), (status = 401), (status = 403), (status = 409), (status = 422)))]
async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(input): ApiJson<ServiceInput>,
) -> ApiResult<Response> {
    caller.require(Role::Admin)?;
    let row = apply(&state, None, input)?;
    let warnings = reach::warnings(&state.ssrf, &row.transport.0).await;
    let stored = config_row::insert(&state, &caller, row).await?;
    let view = ServiceView {
        warnings,
        ..stored.view()
    };
    Ok(with_etag(StatusCode::CREATED, stored.version, &view))
}

/// Get one service.
#[utoipa::path(get, path = "/{name}", tag = "services", params(("name" = String, Path)),
    responses((status = 200, body = ServiceView), (status = 401), (status = 403), (status = 404)))]
async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    config_row::get_one::<ServiceRow>(&state, &caller, &name).await
}

/// Change a service. Fields left out keep their value; secrets left out are kept.
#[utoipa::path(patch, path = "/{name}", tag = "services", params(("name" = String, Path)), request_body = ServiceInput,
    responses((status = 200, body = ServiceView), (status = 401), (status = 403), (status = 404),
              (status = 409), (status = 412), (status = 422)))]
async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    if_match: IfMatch,
    ApiJson(input): ApiJson<ServiceInput>,
) -> ApiResult<Response> {
    let mut tx = state.db.begin().await?;
    let current: ServiceRow =
        config_row::load_for_change(&mut tx, &caller, &name, if_match, input.version).await?;
    let row = apply(&state, Some(&current), input)?;
    if row.kind != current.kind {
        let rules: i64 = sqlx::query_scalar("SELECT count(*) FROM rules WHERE service = $1")
            .bind(&name)
            .fetch_one(&mut *tx)
            .await?;
        if rules > 0 {
            return Err(ApiFailure::invalid(
                "transport.kind",
                format!(
                    "{rules} rules target this service as {}; change or delete them first",
                    current.kind
                ),
            ));
        }
    }
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
    // After the commit: resolving a name must not hold the row's lock.
    let view = ServiceView {
        warnings: reach::warnings(&state.ssrf, &stored.transport.0).await,
        ..stored.view()
    };
    Ok(with_etag(StatusCode::OK, stored.version, &view))
}

/// Enable a service.
#[utoipa::path(post, path = "/{name}/enable", tag = "services", params(("name" = String, Path)),
    responses((status = 200, body = ServiceView), (status = 401), (status = 403), (status = 404), (status = 412)))]
async fn enable(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    if_match: IfMatch,
) -> ApiResult<Response> {
    config_row::set_enabled::<ServiceRow>(&state, &caller, &name, if_match, true).await
}

/// Disable a service: nothing is delivered to it until it is enabled again.
#[utoipa::path(post, path = "/{name}/disable", tag = "services", params(("name" = String, Path)),
    responses((status = 200, body = ServiceView), (status = 401), (status = 403), (status = 404), (status = 412)))]
async fn disable(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    if_match: IfMatch,
) -> ApiResult<Response> {
    config_row::set_enabled::<ServiceRow>(&state, &caller, &name, if_match, false).await
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeleteOptions {
    /// Also delete the rules that target the service (otherwise they make the delete fail).
    pub cascade: Option<bool>,
}

/// Delete a service.
#[utoipa::path(delete, path = "/{name}", tag = "services", params(("name" = String, Path), DeleteOptions),
    responses((status = 204), (status = 401), (status = 403), (status = 404), (status = 409), (status = 412)))]
async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiQuery(options): ApiQuery<DeleteOptions>,
    if_match: IfMatch,
) -> ApiResult<Response> {
    let mut tx = state.db.begin().await?;
    let current: ServiceRow =
        config_row::load_for_change(&mut tx, &caller, &name, if_match, None).await?;
    let rules = super::rules::for_service(&mut tx, &name).await?;
    if !rules.is_empty() && options.cascade != Some(true) {
        let names: Vec<&str> = rules.iter().take(10).map(|r| r.name.as_str()).collect();
        return Err(ApiFailure::Conflict(format!(
            "{} rules target service `{name}` ({}); delete them first or pass cascade=true",
            rules.len(),
            names.join(", ")
        )));
    }
    for rule in &rules {
        config_row::delete_row(&mut tx, &caller.actor(), rule).await?;
    }
    config_row::delete_row(&mut tx, &caller.actor(), &current).await?;
    tx.commit().await?;
    for rule in &rules {
        config_row::forget(&state, rule).await?;
    }
    config_row::forget(&state, &current).await?;
    Ok(config_row::deleted())
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get_one, update, delete))
        .routes(routes!(enable))
        .routes(routes!(disable))
        .merge(super::facade::router())
}
