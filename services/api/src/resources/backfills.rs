//! Backfills over HTTP: `POST /api/v1/rules/{id}/backfill` starts one; `/api/v1/backfills`
//! follows and cancels them. The scanning itself is `crate::backfill`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::crud::Resource;
use super::rules::RuleRow;
use super::{Problems, not_found};
use crate::audit;
use crate::auth::{Caller, Role};
use crate::backfill::store::{self, Backfill, NewBackfill, Status};
use crate::error::{ApiFailure, ApiResult};
use crate::extract::{ApiJson, ApiQuery, Page, PageQuery};
use crate::state::AppState;

/// The range of events to replay through the rule, by when mih received them.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackfillInput {
    /// RFC 3339; events received at or after this instant.
    pub from: DateTime<Utc>,
    /// RFC 3339; events received at or before this instant (default: now). Events that arrive
    /// after the backfill starts are the live matcher's.
    pub to: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BackfillFilter {
    /// Backfills of this rule.
    pub rule_id: Option<Uuid>,
    /// running, completed, cancelled or failed.
    pub status: Option<String>,
}

/// Replay stored events through a rule.
///
/// Every event of EVENTS received in the range is matched against this rule alone, and each
/// match becomes a job with origin `backfill` (same job id as a live match of that event, so
/// nothing already queued is queued twice). Runs in the background; follow it at
/// `/api/v1/backfills/{id}`. One running backfill per rule.
#[utoipa::path(post, path = "/api/v1/rules/{id}/backfill", tag = "rules", params(("id" = String, Path)),
    request_body = BackfillInput,
    responses((status = 202, body = Backfill), (status = 401), (status = 403), (status = 404),
              (status = 409), (status = 422)))]
pub(crate) async fn start(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(input): ApiJson<BackfillInput>,
) -> ApiResult<Response> {
    caller.require(Role::Operator)?;
    let now = Utc::now();
    let to = input.to.unwrap_or(now);
    let mut problems = Problems::default();
    problems.check(input.from <= now, "from", "is in the future");
    problems.check(input.from <= to, "to", "must not be before from");
    problems.into_result()?;

    let mut tx = state.db.begin().await?;
    let rule = RuleRow::load(&mut tx, &id, false)
        .await?
        .ok_or_else(|| not_found("rule", id.clone()))?;
    if !rule.enabled {
        return Err(ApiFailure::Conflict(format!(
            "rule `{}` is disabled; enable it before backfilling",
            rule.name
        )));
    }
    let partition_ends = last_event_sequences(&state).await?;
    let created = store::insert(
        &mut tx,
        &NewBackfill {
            rule_id: rule.id,
            rule_name: &rule.name,
            from: input.from,
            to,
            partition_ends,
            created_by: &caller.actor(),
        },
    )
    .await
    .map_err(|e| match e {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") => {
            ApiFailure::Conflict(format!(
                "a backfill of rule `{}` is already running; cancel it or wait for it",
                rule.name
            ))
        }
        other => other.into(),
    })?;
    audit::record(
        &mut tx,
        &caller.actor(),
        "create",
        "backfill",
        &created.id.to_string(),
        None,
        serde_json::to_value(&created).ok(),
    )
    .await?;
    tx.commit().await?;
    state.backfill_wake.notify_one();
    let mut response = (StatusCode::ACCEPTED, Json(&created)).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/api/v1/backfills/{}", created.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// Every EVENTS partition's last sequence now, partition 0 first (0 for a partition without a
/// stream): a backfill never reads past them.
async fn last_event_sequences(state: &AppState) -> ApiResult<Vec<i64>> {
    let unavailable =
        |e: &dyn std::fmt::Display| ApiFailure::Internal(format!("reading EVENTS: {e}"));
    let streams = mih_shared::partition::streams(
        &state.js,
        &state.names,
        mih_shared::partition::Partitioned::Events,
        state.event_partitions,
    )
    .await
    .map_err(|e| unavailable(&e))?;
    let mut ends = Vec::new();
    for (partition, mut stream) in streams {
        let last = stream
            .info()
            .await
            .map_err(|e| unavailable(&e))?
            .state
            .last_sequence;
        let index = usize::from(partition);
        if ends.len() <= index {
            ends.resize(index + 1, 0);
        }
        ends[index] = i64::try_from(last).unwrap_or(i64::MAX);
    }
    Ok(ends)
}

/// List backfills, newest first.
#[utoipa::path(get, path = "/api/v1/backfills", tag = "backfills", params(BackfillFilter, PageQuery),
    responses((status = 200, body = Page<Backfill>), (status = 401), (status = 403), (status = 422)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(filter): ApiQuery<BackfillFilter>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> ApiResult<Json<Page<Backfill>>> {
    caller.require(Role::Viewer)?;
    let limit = page.limit()?;
    let cursor = match &page.cursor {
        Some(raw) => Some(
            Uuid::parse_str(raw)
                .map_err(|_| ApiFailure::invalid("cursor", "is not a cursor this API issued"))?,
        ),
        None => None,
    };
    if let Some(status) = &filter.status
        && !["running", "completed", "cancelled", "failed"].contains(&status.as_str())
    {
        return Err(ApiFailure::invalid(
            "status",
            "must be running, completed, cancelled or failed",
        ));
    }
    let rows = store::list(
        &state.db,
        filter.rule_id,
        filter.status.as_deref(),
        cursor,
        limit + 1,
    )
    .await?;
    Ok(Json(Page::from_rows(rows, limit, |b: &Backfill| {
        b.id.to_string()
    })))
}

async fn find(state: &AppState, id: &str) -> ApiResult<Backfill> {
    let missing = || not_found("backfill", id);
    let uuid = Uuid::parse_str(id).map_err(|_| missing())?;
    store::get(&state.db, uuid).await?.ok_or_else(missing)
}

/// Get one backfill: its status and counts.
#[utoipa::path(get, path = "/api/v1/backfills/{id}", tag = "backfills", params(("id" = String, Path)),
    responses((status = 200, body = Backfill), (status = 401), (status = 403), (status = 404)))]
pub(crate) async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Backfill>> {
    caller.require(Role::Viewer)?;
    Ok(Json(find(&state, &id).await?))
}

/// Cancel a running backfill. Jobs already queued stay queued.
#[utoipa::path(post, path = "/api/v1/backfills/{id}/cancel", tag = "backfills", params(("id" = String, Path)),
    responses((status = 200, body = Backfill), (status = 401), (status = 403), (status = 404), (status = 409)))]
pub(crate) async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Backfill>> {
    caller.require(Role::Operator)?;
    let before = find(&state, &id).await?;
    if !store::finish(&state.db, before.id, Status::Cancelled, None).await? {
        let now = find(&state, &id).await?;
        return Err(ApiFailure::Conflict(format!(
            "the backfill is {} already",
            now.status.as_str()
        )));
    }
    let after = find(&state, &id).await?;
    let mut conn = state.db.acquire().await?;
    audit::record(
        &mut conn,
        &caller.actor(),
        "cancel",
        "backfill",
        &id,
        serde_json::to_value(&before).ok(),
        serde_json::to_value(&after).ok(),
    )
    .await?;
    Ok(Json(after))
}
