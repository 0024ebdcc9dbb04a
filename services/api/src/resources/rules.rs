//! `/api/v1/rules`: which events go to which service, and how each request is built.

use std::collections::BTreeMap;

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
use uuid::Uuid;

use mih_rules::CompiledRule;
use mih_shared::live::{self, LiveRule, RuleTarget, Transport};
use mih_shared::messages::{HttpMethod, RuleId, Version};
use mih_shared::moodle::EventPattern;
use mih_shared::names::SourceId;

use super::config_row::{self, ConfigRow};
use super::{Problems, Tri, check_header_name, check_text, with_etag};
use crate::auth::{Caller, Role};
use crate::error::{ApiFailure, ApiResult};
use crate::extract::{ApiJson, ApiQuery, IfMatch, Page, PageQuery};
use crate::state::AppState;

const MAX_BODY_TEMPLATE: usize = 256 * 1024;
const DEFAULT_CONTENT_TYPE: &str = "application/json";

/// Where the request goes; its kind must be the kind of the rule's service. Paths and routing
/// keys may be templates.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum TargetInput {
    Rest {
        /// GET, POST (default), PUT, PATCH or DELETE.
        #[schema(example = "POST")]
        method: Option<String>,
        /// Joined to the service's base URL (default `/`).
        path: Option<String>,
    },
    Amqp {
        /// Default: the service's routing key.
        routing_key: Option<String>,
        /// Default: the service's exchange.
        exchange: Option<String>,
    },
    Soap {
        operation: String,
    },
}

/// A rule as written by a client. On update, fields left out keep their value; `null` clears
/// the optional ones.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleInput {
    /// Required on create.
    #[schema(min_length = 1, max_length = 200)]
    pub name: Option<String>,
    pub description: Option<String>,
    /// Default true.
    pub enabled: Option<bool>,
    /// Source ids whose events the rule takes; empty or left out: every source.
    pub sources: Option<Vec<String>>,
    /// Event patterns: `*`, `\mod_quiz\event\*`, `\core\event\user_created` (the leading
    /// backslash is optional). Required on create.
    pub events: Option<Vec<String>>,
    /// A condition on the event's fields.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub condition: Tri<String>,
    /// The target service's name. Required on create.
    #[schema(pattern = "^[a-z0-9][a-z0-9_-]{0,63}$")]
    pub service: Option<String>,
    /// Default: POST `/` for REST, the service's routing key for AMQP; required for SOAP.
    pub target: Option<TargetInput>,
    /// Header name → template.
    pub headers: Option<BTreeMap<String, String>>,
    /// Body template; `null` (default) sends the event as Moodle gave it.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub body: Tri<String>,
    /// Default `application/json`.
    pub content_type: Option<String>,
    /// Template whose value keeps deliveries with the same key in order.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub ordering_key: Tri<String>,
    /// The version this update is based on (alternative to `If-Match`).
    pub version: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RuleView {
    pub id: Uuid,
    pub name: String,
    pub description: String,
    pub enabled: bool,
    pub sources: Vec<String>,
    pub events: Vec<String>,
    pub condition: Option<String>,
    pub service: String,
    pub target: TargetInput,
    pub headers: BTreeMap<String, String>,
    pub body: Option<String>,
    pub content_type: String,
    pub ordering_key: Option<String>,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

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
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

fn target_view(target: &RuleTarget) -> TargetInput {
    match target {
        RuleTarget::Rest { method, path } => TargetInput::Rest {
            method: Some(method.as_str().to_owned()),
            path: Some(path.clone()),
        },
        RuleTarget::Amqp {
            routing_key,
            exchange,
        } => TargetInput::Amqp {
            routing_key: routing_key.clone(),
            exchange: exchange.clone(),
        },
        RuleTarget::Soap { operation } => TargetInput::Soap {
            operation: operation.clone(),
        },
    }
}

impl ConfigRow for RuleRow {
    const KIND: &'static str = "rule";
    const WRITE_ROLE: Role = Role::Operator;
    type View = RuleView;
    type Live = LiveRule;

    fn id(&self) -> String {
        self.id.to_string()
    }

    fn version(&self) -> i64 {
        self.version
    }

    fn view(&self) -> RuleView {
        RuleView {
            id: self.id,
            name: self.name.clone(),
            description: self.description.clone(),
            enabled: self.enabled,
            sources: self.sources.clone(),
            events: self.events.clone(),
            condition: self.condition.clone(),
            service: self.service.clone(),
            target: target_view(&self.target.0),
            headers: self.headers.0.clone(),
            body: self.body.clone(),
            content_type: self.content_type.clone(),
            ordering_key: self.ordering_key.clone(),
            version: self.version,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }

    fn live(&self) -> ApiResult<(String, LiveRule)> {
        let internal = |what: &str, e: &dyn std::fmt::Display| {
            ApiFailure::Internal(format!("stored rule {}: {what}: {e}", self.id))
        };
        let live = LiveRule {
            v: Version,
            id: RuleId(self.id),
            name: self.name.clone(),
            description: self.description.clone(),
            enabled: self.enabled,
            sources: self
                .sources
                .iter()
                .map(|s| s.parse().map_err(|e| internal("source", &e)))
                .collect::<Result<_, _>>()?,
            events: self
                .events
                .iter()
                .map(|e| EventPattern::parse(e).map_err(|err| internal("event", &err)))
                .collect::<Result<_, _>>()?,
            condition: self.condition.clone(),
            service: self.service.parse().map_err(|e| internal("service", &e))?,
            target: self.target.0.clone(),
            headers: self.headers.0.clone(),
            body: self.body.clone(),
            content_type: self.content_type.clone(),
            ordering_key: self.ordering_key.clone(),
            version: self.version,
        };
        Ok((live::rule_key(&live.id), live))
    }

    fn with_enabled(&self, enabled: bool) -> Self {
        RuleRow {
            enabled,
            ..self.clone()
        }
    }

    /// A malformed id names no rule.
    async fn load(db: &mut PgConnection, id: &str, for_update: bool) -> ApiResult<Option<Self>> {
        match Uuid::parse_str(id) {
            Ok(uuid) => Ok(load(db, uuid, for_update).await?),
            Err(_) => Ok(None),
        }
    }

    async fn save(db: &mut PgConnection, row: &Self, insert: bool) -> ApiResult<Self> {
        Ok(save(db, row, insert).await?)
    }

    async fn delete(db: &mut PgConnection, row: &Self) -> ApiResult<()> {
        sqlx::query("DELETE FROM rules WHERE id = $1")
            .bind(row.id)
            .execute(db)
            .await?;
        Ok(())
    }
}

fn tri(input: Tri<String>, current: Option<Option<String>>) -> Option<String> {
    match input {
        Tri::Absent => current.flatten(),
        Tri::Null => None,
        Tri::Value(v) => Some(v),
    }
}

/// Applies an input to the current row (none when creating), validating everything, including
/// that the sources and the service exist and the target fits the service.
pub(crate) async fn apply(
    db: &mut PgConnection,
    current: Option<&RuleRow>,
    input: RuleInput,
) -> ApiResult<RuleRow> {
    let mut problems = Problems::default();
    let name = input
        .name
        .or_else(|| current.map(|r| r.name.clone()))
        .unwrap_or_default();
    check_text(&mut problems, "name", &name, 1, 200);
    let description = input
        .description
        .or_else(|| current.map(|r| r.description.clone()))
        .unwrap_or_default();
    check_text(&mut problems, "description", &description, 0, 2000);

    let sources = input
        .sources
        .or_else(|| current.map(|r| r.sources.clone()))
        .unwrap_or_default();
    problems.check(sources.len() <= 100, "sources", "at most 100 sources");
    for (i, source) in sources.iter().enumerate() {
        if let Err(e) = SourceId::parse(source.clone()) {
            problems.add(&format!("sources[{i}]"), e.to_string());
        }
    }
    if !sources.is_empty() {
        let known: Vec<String> = sqlx::query_scalar("SELECT id FROM sources WHERE id = ANY($1)")
            .bind(&sources)
            .fetch_all(&mut *db)
            .await?;
        for (i, source) in sources.iter().enumerate() {
            problems.check(
                known.contains(source),
                &format!("sources[{i}]"),
                format!("source `{source}` does not exist"),
            );
        }
    }

    let raw_events = input.events.or_else(|| current.map(|r| r.events.clone()));
    let mut events = Vec::new();
    match raw_events {
        None => problems.add("events", "is required"),
        Some(list) => {
            problems.check(
                (1..=50).contains(&list.len()),
                "events",
                "list 1 to 50 event patterns",
            );
            for (i, raw) in list.iter().enumerate() {
                match EventPattern::parse(raw) {
                    Ok(pattern) => events.push(pattern.to_string()),
                    Err(e) => problems.add(
                        &format!("events[{i}]"),
                        format!("`{raw}` is not an event pattern: {e}"),
                    ),
                }
            }
        }
    }

    let condition = tri(input.condition, current.map(|r| r.condition.clone()));
    if let Some(condition) = &condition {
        check_text(&mut problems, "condition", condition, 1, 10_000);
    }

    let service_name = input.service.or_else(|| current.map(|r| r.service.clone()));
    let service = match &service_name {
        None => {
            problems.add("service", "is required");
            None
        }
        Some(name) => {
            let found = super::services::load(db, name, false).await?;
            problems.check(
                found.is_some(),
                "service",
                format!("service `{name}` does not exist"),
            );
            found
        }
    };
    let target_input = input
        .target
        .or_else(|| current.map(|r| target_view(&r.target.0)));
    let target = match (&service, target_input) {
        (None, _) => None,
        (Some(service), target) => target_for(&mut problems, &service.transport.0, target),
    };

    let headers = input
        .headers
        .or_else(|| current.map(|r| r.headers.0.clone()))
        .unwrap_or_default();
    problems.check(headers.len() <= 50, "headers", "at most 50 headers");
    for (header, template) in &headers {
        let field = format!("headers.{header}");
        check_header_name(&mut problems, &field, header);
        check_text(&mut problems, &field, template, 0, 4096);
    }
    let body = tri(input.body, current.map(|r| r.body.clone()));
    if let Some(body) = &body {
        problems.check(
            body.len() <= MAX_BODY_TEMPLATE,
            "body",
            format!("must be at most {MAX_BODY_TEMPLATE} bytes"),
        );
    }
    let content_type = input
        .content_type
        .or_else(|| current.map(|r| r.content_type.clone()))
        .unwrap_or_else(|| DEFAULT_CONTENT_TYPE.into());
    problems.check(
        content_type.contains('/')
            && content_type.len() <= 255
            && http::HeaderValue::from_str(&content_type).is_ok(),
        "content_type",
        "must be a media type such as application/json",
    );
    let ordering_key = tri(input.ordering_key, current.map(|r| r.ordering_key.clone()));
    if let Some(key) = &ordering_key {
        check_text(&mut problems, "ordering_key", key, 1, 1024);
    }
    problems.into_result()?;

    let (Some(service), Some(target)) = (service, target) else {
        return Err(ApiFailure::Internal(
            "rule validation passed without service or target".into(),
        ));
    };
    let now = Utc::now();
    let row = RuleRow {
        id: current.map_or_else(Uuid::now_v7, |r| r.id),
        name,
        description,
        enabled: input.enabled.or(current.map(|r| r.enabled)).unwrap_or(true),
        sources,
        events,
        condition,
        service: service.name,
        target: SqlJson(target),
        headers: SqlJson(headers),
        body,
        content_type,
        ordering_key,
        version: current.map_or(0, |r| r.version),
        created_at: current.map_or(now, |r| r.created_at),
        updated_at: now,
    };
    // The condition and templates must compile as the matcher will compile them.
    let (_, live) = row.live()?;
    let compiled = CompiledRule::compile(std::sync::Arc::new(live));
    let mut problems = Problems::default();
    for (field, message) in compiled.problems() {
        problems.add(field, message.clone());
    }
    problems.into_result()?;
    Ok(row)
}

/// The rule's target, checked against (and defaulted from) its service's transport.
fn target_for(
    problems: &mut Problems,
    transport: &Transport,
    input: Option<TargetInput>,
) -> Option<RuleTarget> {
    let target = match (transport, input) {
        (Transport::Rest(_), None) => RuleTarget::Rest {
            method: HttpMethod::Post,
            path: "/".into(),
        },
        (Transport::Rest(_), Some(TargetInput::Rest { method, path })) => {
            let path = path.unwrap_or_else(|| "/".into());
            check_text(problems, "target.path", &path, 1, 2048);
            if let Some(refusal) = mih_shared::urlpath::refusal(&path) {
                problems.add("target.path", refusal);
            }
            let method = match method.as_deref().map(str::to_ascii_uppercase).as_deref() {
                None | Some("POST") => HttpMethod::Post,
                Some("GET") => HttpMethod::Get,
                Some("PUT") => HttpMethod::Put,
                Some("PATCH") => HttpMethod::Patch,
                Some("DELETE") => HttpMethod::Delete,
                Some(other) => {
                    problems.add(
                        "target.method",
                        format!("must be GET, POST, PUT, PATCH or DELETE, not `{other}`"),
                    );
                    HttpMethod::Post
                }
            };
            RuleTarget::Rest { method, path }
        }
        (Transport::Amqp(_), None) => RuleTarget::Amqp {
            routing_key: None,
            exchange: None,
        },
        (
            Transport::Amqp(service),
            Some(TargetInput::Amqp {
                routing_key,
                exchange,
            }),
        ) => {
            if let Some(key) = &routing_key {
                check_text(problems, "target.routing_key", key, 1, 1024);
            }
            if let Some(exchange) = &exchange {
                problems.check(
                    exchange.len() <= 255,
                    "target.exchange",
                    "must be at most 255 bytes",
                );
            }
            problems.check(
                routing_key.is_some()
                    || !service.routing_key.is_empty()
                    || service.queue_declare.is_some(),
                "target.routing_key",
                "is required: the service has no default routing key or queue",
            );
            RuleTarget::Amqp {
                routing_key,
                exchange,
            }
        }
        (Transport::Soap(_), Some(TargetInput::Soap { operation })) => {
            check_text(problems, "target.operation", &operation, 1, 255);
            problems.check(
                operation
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.'),
                "target.operation",
                "must be an XML element name (letters, digits, `_`, `-`, `.`)",
            );
            RuleTarget::Soap { operation }
        }
        (Transport::Soap(_), None) => {
            problems.add(
                "target",
                "is required for a SOAP service: {\"kind\": \"soap\", \"operation\": …}",
            );
            return None;
        }
        (transport, Some(other)) => {
            let given = match other {
                TargetInput::Rest { .. } => "rest",
                TargetInput::Amqp { .. } => "amqp",
                TargetInput::Soap { .. } => "soap",
            };
            problems.add(
                "target.kind",
                format!("is `{given}` but the service is `{}`", transport.kind()),
            );
            return None;
        }
    };
    Some(target)
}

const COLUMNS: &str = "id, name, description, enabled, sources, events, condition, service, target, headers, \
    body, content_type, ordering_key, version, created_at, updated_at";

pub async fn load_all(db: &PgPool) -> Result<Vec<RuleRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM rules ORDER BY id"
    )))
    .fetch_all(db)
    .await
}

async fn load(
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

async fn save(db: &mut PgConnection, row: &RuleRow, insert: bool) -> Result<RuleRow, sqlx::Error> {
    let values = "$2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13";
    let sql = if insert {
        format!(
            "INSERT INTO rules (id, name, description, enabled, sources, events, condition, service, target, \
             headers, body, content_type, ordering_key) VALUES ($1, {values}) RETURNING {COLUMNS}"
        )
    } else {
        format!(
            "UPDATE rules SET (name, description, enabled, sources, events, condition, service, target, headers, \
             body, content_type, ordering_key, version, updated_at) = ({values}, nextval('config_version'), now()) \
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
        .fetch_one(db)
        .await
}

/// The rules that target a service (to delete them with it).
pub(crate) async fn for_service(db: &mut PgConnection, service: &str) -> ApiResult<Vec<RuleRow>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM rules WHERE service = $1 ORDER BY name FOR UPDATE"
    )))
    .bind(service)
    .fetch_all(db)
    .await?)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RuleFilter {
    /// Rules targeting this service.
    pub service: Option<String>,
    pub enabled: Option<bool>,
    /// Rules taking events of this source (including rules for every source).
    pub source: Option<String>,
    /// Rules with exactly this event pattern.
    pub event: Option<String>,
    /// Part of the name or description, case-insensitive.
    pub q: Option<String>,
}

/// List rules.
#[utoipa::path(get, path = "", tag = "rules", params(RuleFilter, PageQuery),
    responses((status = 200, body = Page<RuleView>), (status = 401), (status = 403), (status = 422)))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(filter): ApiQuery<RuleFilter>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> ApiResult<axum::Json<Page<RuleView>>> {
    caller.require(Role::Viewer)?;
    let limit = page.limit()?;
    let cursor = match &page.cursor {
        Some(raw) => Some(
            Uuid::parse_str(raw)
                .map_err(|_| ApiFailure::invalid("cursor", "is not a cursor this API issued"))?,
        ),
        None => None,
    };
    let event = match &filter.event {
        Some(raw) => Some(
            EventPattern::parse(raw)
                .map_err(|e| ApiFailure::invalid("event", e.to_string()))?
                .to_string(),
        ),
        None => None,
    };
    let rows: Vec<RuleRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM rules WHERE ($1::uuid IS NULL OR id > $1) \
         AND ($2::text IS NULL OR service = $2) AND ($3::bool IS NULL OR enabled = $3) \
         AND ($4::text IS NULL OR sources = '{{}}' OR $4 = ANY(sources)) \
         AND ($5::text IS NULL OR $5 = ANY(events)) \
         AND ($6::text IS NULL OR name ILIKE '%' || $6 || '%' OR description ILIKE '%' || $6 || '%') \
         ORDER BY id LIMIT $7"
    )))
    .bind(cursor)
    .bind(&filter.service)
    .bind(filter.enabled)
    .bind(&filter.source)
    .bind(&event)
    .bind(&filter.q)
    .bind(limit + 1)
    .fetch_all(&state.db)
    .await?;
    let views = rows.iter().map(RuleRow::view).collect();
    Ok(axum::Json(Page::from_rows(views, limit, |v: &RuleView| {
        v.id.to_string()
    })))
}

/// Create a rule.
#[utoipa::path(post, path = "", tag = "rules", request_body = RuleInput,
    responses((status = 201, body = RuleView), (status = 401), (status = 403), (status = 422)))]
async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(input): ApiJson<RuleInput>,
) -> ApiResult<Response> {
    caller.require(Role::Operator)?;
    let mut tx = state.db.begin().await?;
    let row = apply(&mut tx, None, input).await?;
    let stored =
        config_row::commit(&state, tx, &caller.actor(), "create", None, &row, true).await?;
    Ok(with_etag(
        StatusCode::CREATED,
        stored.version,
        &stored.view(),
    ))
}

/// Get one rule.
#[utoipa::path(get, path = "/{id}", tag = "rules", params(("id" = String, Path)),
    responses((status = 200, body = RuleView), (status = 401), (status = 403), (status = 404)))]
async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    config_row::get_one::<RuleRow>(&state, &caller, &id).await
}

/// Change a rule. Fields left out keep their value; `null` clears optional ones.
#[utoipa::path(patch, path = "/{id}", tag = "rules", params(("id" = String, Path)), request_body = RuleInput,
    responses((status = 200, body = RuleView), (status = 401), (status = 403), (status = 404),
              (status = 409), (status = 412), (status = 422)))]
async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    if_match: IfMatch,
    ApiJson(input): ApiJson<RuleInput>,
) -> ApiResult<Response> {
    let mut tx = state.db.begin().await?;
    let current: RuleRow =
        config_row::load_for_change(&mut tx, &caller, &id, if_match, input.version).await?;
    let row = apply(&mut tx, Some(&current), input).await?;
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

/// Enable a rule.
#[utoipa::path(post, path = "/{id}/enable", tag = "rules", params(("id" = String, Path)),
    responses((status = 200, body = RuleView), (status = 401), (status = 403), (status = 404), (status = 412)))]
async fn enable(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    if_match: IfMatch,
) -> ApiResult<Response> {
    config_row::set_enabled::<RuleRow>(&state, &caller, &id, if_match, true).await
}

/// Disable a rule.
#[utoipa::path(post, path = "/{id}/disable", tag = "rules", params(("id" = String, Path)),
    responses((status = 200, body = RuleView), (status = 401), (status = 403), (status = 404), (status = 412)))]
async fn disable(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    if_match: IfMatch,
) -> ApiResult<Response> {
    config_row::set_enabled::<RuleRow>(&state, &caller, &id, if_match, false).await
}

/// Delete a rule.
#[utoipa::path(delete, path = "/{id}", tag = "rules", params(("id" = String, Path)),
    responses((status = 204), (status = 401), (status = 403), (status = 404), (status = 412)))]
async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    if_match: IfMatch,
) -> ApiResult<Response> {
    let mut tx = state.db.begin().await?;
    let current: RuleRow =
        config_row::load_for_change(&mut tx, &caller, &id, if_match, None).await?;
    config_row::delete_row(&mut tx, &caller.actor(), &current).await?;
    tx.commit().await?;
    config_row::forget(&state, &current).await?;
    Ok(config_row::deleted())
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(super::preview::preview))
        .routes(routes!(get_one, update, delete))
        .routes(routes!(enable))
        .routes(routes!(disable))
        .routes(routes!(super::backfills::start))
}
