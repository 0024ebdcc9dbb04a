//! `GET /api/v1/inbound/log`: every message services sent back towards Moodle, newest first,
//! with where it stands — waiting for its site, delivered (its site acknowledged it), or
//! parked (it could not be stored for a site, and why).

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

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

/// One message of the inbound log.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoggedView {
    /// The Moodle event's `messageid`.
    pub id: Uuid,
    /// Its position in the site's inbound messages.
    pub cursor: i64,
    pub service: String,
    /// The Moodle site it is for (none when parked).
    pub source: Option<String>,
    /// `webhook` or `amqp`.
    pub via: String,
    pub received_at: DateTime<Utc>,
    pub content_type: Option<String>,
    pub size_bytes: i32,
    /// The start of the payload as text.
    pub excerpt: String,
    pub external_id: Option<String>,
    /// `pending` (its site has not acknowledged it yet), `delivered` or `parked`.
    pub status: String,
    /// Why it was parked.
    pub parked_reason: Option<String>,
}

impl From<Logged> for LoggedView {
    fn from(row: Logged) -> Self {
        LoggedView {
            id: row.id,
            cursor: row.sequence,
            service: row.service,
            source: row.source,
            via: row.via,
            received_at: row.received_at,
            content_type: row.content_type,
            size_bytes: row.size_bytes,
            excerpt: row.excerpt,
            external_id: row.external_id,
            status: row.status,
            parked_reason: row.parked_reason,
        }
    }
}

/// A page of the log, for the API and the dashboard.
pub(crate) async fn page(state: &AppState, query: LogQuery) -> ApiResult<Page<LoggedView>> {
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
    let items = rows.into_iter().map(LoggedView::from).collect();
    Ok(Page::from_rows(items, limit, |item: &LoggedView| {
        time_cursor(item.received_at, item.id)
    }))
}

/// The inbound log, newest first.
#[utoipa::path(get, path = "/api/v1/inbound/log", tag = "inbound", params(LogQuery),
    responses((status = 200, body = Page<LoggedView>), (status = 401), (status = 403),
        (status = 422)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<LogQuery>,
) -> ApiResult<Json<Page<LoggedView>>> {
    caller.require(Role::Viewer)?;
    page(&state, query).await.map(Json)
}
