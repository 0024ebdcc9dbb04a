//! `GET /api/v1/inbound/log`: every message services sent back towards Moodle, newest first,
//! with where it stands — waiting for its site, delivered (its site acknowledged it), or
//! parked (it could not be stored for a site, and why).

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::auth::{Caller, Role};
use crate::error::{ApiFailure, ApiResult};
use crate::extract::{ApiQuery, Page, PageQuery, parse_time_cursor, time_cursor};
use crate::inbound_log::store::{self, Filter, Logged};
use crate::state::AppState;

const STATUSES: [&str; 3] = ["pending", "delivered", "parked"];

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    /// Messages of this service.
    pub service: Option<String>,
    /// Messages for this Moodle site (source id).
    pub source: Option<String>,
    /// `pending`, `delivered` or `parked`.
    pub status: Option<String>,
    /// Items per page, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A page of the log, for the API and the dashboard.
pub(crate) async fn page(state: &AppState, query: LogQuery) -> ApiResult<Page<Logged>> {
    if let Some(status) = &query.status
        && !STATUSES.contains(&status.as_str())
    {
        return Err(ApiFailure::invalid(
            "status",
            "must be pending, delivered or parked",
        ));
    }
    let paging = PageQuery {
        limit: query.limit,
        cursor: query.cursor,
    };
    let limit = paging.limit()?;
    let before = paging
        .cursor
        .as_deref()
        .map(parse_time_cursor)
        .transpose()?;
    let filter = Filter {
        service: query.service,
        source: query.source,
        status: query.status,
    };
    let rows = store::list(&state.db, &filter, before, limit + 1).await?;
    Ok(Page::from_rows(rows, limit, |item: &Logged| {
        time_cursor(item.received_at, item.id)
    }))
}

/// The inbound log, newest first.
#[utoipa::path(get, path = "/api/v1/inbound/log", tag = "inbound", params(LogQuery),
    responses((status = 200, body = Page<Logged>), (status = 401), (status = 403),
        (status = 422)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<LogQuery>,
) -> ApiResult<Json<Page<Logged>>> {
    caller.require(Role::Viewer)?;
    page(&state, query).await.map(Json)
}
