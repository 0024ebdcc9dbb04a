//! `/api/v1/parked`: messages a projection consumer set aside because the database refused
//! them (its poison policy, `mih_shared::parking`). Read why, retry one after fixing the cause
//! (it is published again to its subject, for its consumer to take), or delete it.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use mih_shared::parking::{self, Parked};

use super::not_found;
use crate::auth::{Caller, Role};
use crate::error::{ApiFailure, ApiResult};
use crate::extract::{ApiQuery, Page, PageQuery, parse_time_cursor, time_cursor};
use crate::state::AppState;

/// A parked message.
#[derive(Debug, Serialize, ToSchema)]
pub struct ParkedView {
    pub id: Uuid,
    /// The consumer that set it aside: `dlq`, `dlq-replays` or `recorder`.
    pub consumer: String,
    pub stream: String,
    pub subject: String,
    /// Its sequence in the stream.
    pub sequence: i64,
    /// Why it could not be stored.
    pub error: String,
    /// How often it was delivered before it was parked.
    pub deliveries: i32,
    pub parked_at: DateTime<Utc>,
    /// The message as text (NUL and invalid UTF-8 shown as U+FFFD).
    pub payload: String,
    pub size_bytes: usize,
}

impl From<Parked> for ParkedView {
    fn from(parked: Parked) -> Self {
        ParkedView {
            payload: parked.payload_text(),
            size_bytes: parked.payload.len(),
            id: parked.id,
            consumer: parked.consumer,
            stream: parked.stream,
            subject: parked.subject,
            sequence: parked.sequence,
            error: parked.error,
            deliveries: parked.deliveries,
            parked_at: parked.parked_at,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only what this consumer parked.
    pub consumer: Option<String>,
    /// Items per page, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// What a retry did.
#[derive(Debug, Serialize, ToSchema)]
pub struct Retried {
    pub id: Uuid,
    /// The subject it was published to again.
    pub subject: String,
}

fn parse_id(id: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(id).map_err(|_| not_found("parked message", id))
}

/// List parked messages, newest first.
#[utoipa::path(get, path = "/api/v1/parked", tag = "parked", params(ListQuery),
    responses((status = 200, body = Page<ParkedView>), (status = 401), (status = 403), (status = 422)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> ApiResult<Json<Page<ParkedView>>> {
    caller.require(Role::Viewer)?;
    let page = PageQuery {
        limit: query.limit,
        cursor: query.cursor,
    };
    let limit = page.limit()?;
    let before = page.cursor.as_deref().map(parse_time_cursor).transpose()?;
    let rows = parking::list(&state.db, query.consumer.as_deref(), before, limit + 1).await?;
    let items = rows.into_iter().map(ParkedView::from).collect();
    Ok(Json(Page::from_rows(items, limit, |item: &ParkedView| {
        time_cursor(item.parked_at, item.id)
    })))
}

/// One parked message.
#[utoipa::path(get, path = "/api/v1/parked/{id}", tag = "parked", params(("id" = String, Path)),
    responses((status = 200, body = ParkedView), (status = 401), (status = 403), (status = 404)))]
pub(crate) async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<ParkedView>> {
    caller.require(Role::Viewer)?;
    let parked = parking::get(&state.db, parse_id(&id)?)
        .await?
        .ok_or_else(|| not_found("parked message", &id))?;
    Ok(Json(parked.into()))
}

/// Retry a parked message: publish it again to its subject (its consumer takes it as new) and
/// remove it from the parked list. If the database still refuses it, it is parked again.
#[utoipa::path(post, path = "/api/v1/parked/{id}/retry", tag = "parked", params(("id" = String, Path)),
    responses((status = 202, body = Retried), (status = 401), (status = 403), (status = 404),
              (status = 503, description = "NATS did not store the message; it stays parked")))]
pub(crate) async fn retry(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<Retried>)> {
    caller.require(Role::Operator)?;
    let id = parse_id(&id)?;
    let parked = parking::get(&state.db, id)
        .await?
        .ok_or_else(|| not_found("parked message", id.to_string()))?;
    state
        .js
        .publish(parked.subject.clone(), parked.payload.into())
        .await
        .map_err(|e| ApiFailure::Unavailable(format!("cannot publish it again: {e}")))?
        .await
        .map_err(|e| ApiFailure::Unavailable(format!("NATS did not store it: {e}")))?;
    parking::delete(&state.db, id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Retried {
            id,
            subject: parked.subject,
        }),
    ))
}

/// Delete a parked message for good.
#[utoipa::path(delete, path = "/api/v1/parked/{id}", tag = "parked", params(("id" = String, Path)),
    responses((status = 204), (status = 401), (status = 403), (status = 404)))]
pub(crate) async fn delete_one(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require(Role::Operator)?;
    if parking::delete(&state.db, parse_id(&id)?).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found("parked message", &id))
    }
}
