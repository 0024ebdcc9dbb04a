//! `/api/v1/sources`: the Moodle sites allowed to send events.

use axum::extract::{Path, State};
use axum::response::Response;

use super::input::{SourceFilter, SourceInput};
use super::store::SourceRow;
use super::view::SourceView;
use crate::auth::Caller;
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiQuery, IfMatch, Page, PageQuery};
use crate::resources::{config_row, crud};
use crate::state::AppState;

/// List sources.
#[utoipa::path(get, path = "/api/v1/sources", tag = "sources", params(SourceFilter, PageQuery),
    responses((status = 200, body = Page<SourceView>), (status = 401), (status = 403)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(filter): ApiQuery<SourceFilter>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> ApiResult<axum::Json<Page<SourceView>>> {
    crud::list::<SourceRow>(&state, &caller, filter, page).await
}

/// Create a source.
#[utoipa::path(post, path = "/api/v1/sources", tag = "sources", request_body = SourceInput,
    responses((status = 201, body = SourceView), (status = 401), (status = 403), (status = 409), (status = 422)))]
pub(crate) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(input): ApiJson<SourceInput>,
) -> ApiResult<Response> {
    config_row::create::<SourceRow>(&state, &caller, input).await
}

/// Get one source.
#[utoipa::path(get, path = "/api/v1/sources/{id}", tag = "sources", params(("id" = String, Path)),
    responses((status = 200, body = SourceView), (status = 401), (status = 403), (status = 404)))]
pub(crate) async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    crud::get_one::<SourceRow>(&state, &caller, &id).await
}

/// Change a source. Fields left out keep their value; `null` removes a secret.
#[utoipa::path(patch, path = "/api/v1/sources/{id}", tag = "sources", params(("id" = String, Path)), request_body = SourceInput,
    responses((status = 200, body = SourceView), (status = 401), (status = 403), (status = 404),
              (status = 409), (status = 412), (status = 422)))]
pub(crate) async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    if_match: IfMatch,
    ApiJson(input): ApiJson<SourceInput>,
) -> ApiResult<Response> {
    config_row::update::<SourceRow>(&state, &caller, &id, if_match, input).await
}

/// Enable a source.
#[utoipa::path(post, path = "/api/v1/sources/{id}/enable", tag = "sources", params(("id" = String, Path)),
    responses((status = 200, body = SourceView), (status = 401), (status = 403), (status = 404), (status = 412)))]
pub(crate) async fn enable(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    if_match: IfMatch,
) -> ApiResult<Response> {
    config_row::set_enabled::<SourceRow>(&state, &caller, &id, if_match, true).await
}

/// Disable a source: its requests are refused with 403.
#[utoipa::path(post, path = "/api/v1/sources/{id}/disable", tag = "sources", params(("id" = String, Path)),
    responses((status = 200, body = SourceView), (status = 401), (status = 403), (status = 404), (status = 412)))]
pub(crate) async fn disable(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    if_match: IfMatch,
) -> ApiResult<Response> {
    config_row::set_enabled::<SourceRow>(&state, &caller, &id, if_match, false).await
}

/// Delete a source. Refused while rules name it.
#[utoipa::path(delete, path = "/api/v1/sources/{id}", tag = "sources", params(("id" = String, Path)),
    responses((status = 204), (status = 401), (status = 403), (status = 404), (status = 409), (status = 412)))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    if_match: IfMatch,
) -> ApiResult<Response> {
    config_row::delete::<SourceRow>(&state, &caller, &id, if_match, false).await
}
