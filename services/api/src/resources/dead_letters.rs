//! `/api/v1/dead-letters`: jobs given up on. Search them, read one with its request and
//! attempts, replay one or a filtered set (a tracked operation), delete one or a filtered set.
//! The work is `crate::replay` (the rows `mih_dlq::store`'s), shared with `mih dlq`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use mih_dlq::store::filter::DeadLetterFilter;
use mih_dlq::store::letters::DeadLetterSummary;
use mih_dlq::store::operations::Operation;

use crate::auth::{Caller, Role};
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiQuery, Page, PageQuery};
use crate::replay::{self, DeadLetterDetail, Replayed};
use crate::state::AppState;

/// The list's query: the filter's fields (see `DeadLetterFilter`) and paging.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// The service the job was for.
    pub service: Option<String>,
    /// The rule that rendered the job.
    pub rule_id: Option<Uuid>,
    /// The Moodle event's name, e.g. `\core\event\user_created`.
    pub eventname: Option<String>,
    /// The source (Moodle site) the event came from.
    pub source: Option<String>,
    /// render or delivery.
    pub stage: Option<String>,
    /// dead or replaying.
    pub status: Option<String>,
    /// Case-insensitive text in the reason, or the last attempt's error or response excerpt.
    pub q: Option<String>,
    /// RFC 3339; dead-lettered at or after.
    pub from: Option<DateTime<Utc>>,
    /// RFC 3339; dead-lettered at or before.
    pub to: Option<DateTime<Utc>>,
    /// Items per page, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl ListQuery {
    fn split(self) -> (DeadLetterFilter, PageQuery) {
        let filter = DeadLetterFilter {
            service: self.service,
            rule_id: self.rule_id,
            eventname: self.eventname,
            source: self.source,
            stage: self.stage,
            status: self.status,
            q: self.q,
            from: self.from,
            to: self.to,
            all: false,
        };
        let page = PageQuery {
            limit: self.limit,
            cursor: self.cursor,
        };
        (filter, page)
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Deleted {
    pub deleted: u64,
}

/// List dead letters, newest first.
#[utoipa::path(get, path = "/api/v1/dead-letters", tag = "dead-letters", params(ListQuery),
    responses((status = 200, body = Page<DeadLetterSummary>), (status = 401), (status = 403), (status = 422)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> ApiResult<Json<Page<DeadLetterSummary>>> {
    caller.require(Role::Viewer)?;
    let (filter, page) = query.split();
    let filter = filter.validated()?;
    let limit = page.limit()?;
    Ok(Json(
        replay::list(&state.db, &filter, page.cursor.as_deref(), limit).await?,
    ))
}

/// One dead letter: the exact request, the last outcome, every logged attempt, and its replay.
#[utoipa::path(get, path = "/api/v1/dead-letters/{job_id}", tag = "dead-letters", params(("job_id" = String, Path)),
    responses((status = 200, body = DeadLetterDetail), (status = 401), (status = 403), (status = 404)))]
pub(crate) async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    Path(job_id): Path<String>,
) -> ApiResult<Json<DeadLetterDetail>> {
    caller.require(Role::Viewer)?;
    Ok(Json(replay::get(&state.db, &job_id).await?))
}

/// Replay one dead letter.
///
/// Queues the stored request again as a new job (new id, origin `replay`, `replay_of` = this
/// job, a new attempt budget); a render failure is rendered again from its event with the rule
/// as it is now. The dead letter becomes `replaying` and is removed once the new job is
/// delivered; if the new job fails for good, its own dead letter appears with `replay_of` set.
#[utoipa::path(post, path = "/api/v1/dead-letters/{job_id}/replay", tag = "dead-letters", params(("job_id" = String, Path)),
    responses((status = 202, body = Replayed), (status = 401), (status = 403), (status = 404),
              (status = 409, description = "The service, or the rule of a render failure, no longer exists or no longer takes the event"),
              (status = 422, description = "The rule still cannot render the request"),
              (status = 503, description = "NATS did not store the new job")))]
pub(crate) async fn replay_one(
    State(state): State<AppState>,
    caller: Caller,
    Path(job_id): Path<String>,
) -> ApiResult<(StatusCode, Json<Replayed>)> {
    caller.require(Role::Operator)?;
    let replayed = state.replayer().replay(&job_id, &caller.actor()).await?;
    Ok((StatusCode::ACCEPTED, Json(replayed)))
}

/// Delete one dead letter.
#[utoipa::path(delete, path = "/api/v1/dead-letters/{job_id}", tag = "dead-letters", params(("job_id" = String, Path)),
    responses((status = 204), (status = 401), (status = 403), (status = 404)))]
pub(crate) async fn delete_one(
    State(state): State<AppState>,
    caller: Caller,
    Path(job_id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require(Role::Operator)?;
    state.replayer().delete(&job_id, &caller.actor()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Replay every dead letter matching a filter, in the background.
///
/// An empty filter must say `"all": true`. Dead letters arriving after the request are not
/// part of it. Follow it at `/api/v1/dead-letters/operations/{id}`.
#[utoipa::path(post, path = "/api/v1/dead-letters/replay", tag = "dead-letters", request_body = DeadLetterFilter,
    responses((status = 202, body = Operation), (status = 401), (status = 403), (status = 422)))]
pub(crate) async fn replay_matching(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(filter): ApiJson<DeadLetterFilter>,
) -> ApiResult<Response> {
    caller.require(Role::Operator)?;
    let operation = state
        .replayer()
        .start_replay(filter, &caller.actor())
        .await?;
    let mut response = (StatusCode::ACCEPTED, Json(&operation)).into_response();
    if let Ok(location) =
        HeaderValue::from_str(&format!("/api/v1/dead-letters/operations/{}", operation.id))
    {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// Delete every dead letter matching a filter. An empty filter must say `"all": true`.
#[utoipa::path(post, path = "/api/v1/dead-letters/delete", tag = "dead-letters", request_body = DeadLetterFilter,
    responses((status = 200, body = Deleted), (status = 401), (status = 403), (status = 422)))]
pub(crate) async fn delete_matching(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(filter): ApiJson<DeadLetterFilter>,
) -> ApiResult<Json<Deleted>> {
    caller.require(Role::Operator)?;
    let deleted = state
        .replayer()
        .delete_matching(filter, &caller.actor())
        .await?;
    Ok(Json(Deleted { deleted }))
}

/// A bulk operation: status and counts.
#[utoipa::path(get, path = "/api/v1/dead-letters/operations/{id}", tag = "dead-letters", params(("id" = String, Path)),
    responses((status = 200, body = Operation), (status = 401), (status = 403), (status = 404)))]
pub(crate) async fn get_operation(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Operation>> {
    caller.require(Role::Viewer)?;
    Ok(Json(replay::get_operation(&state.db, &id).await?))
}

/// Cancel a running bulk operation. Dead letters replayed so far stay replayed.
#[utoipa::path(post, path = "/api/v1/dead-letters/operations/{id}/cancel", tag = "dead-letters", params(("id" = String, Path)),
    responses((status = 200, body = Operation), (status = 401), (status = 403), (status = 404), (status = 409)))]
pub(crate) async fn cancel_operation(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Operation>> {
    caller.require(Role::Operator)?;
    Ok(Json(state.replayer().cancel(&id, &caller.actor()).await?))
}
