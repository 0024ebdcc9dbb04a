//! `/api/v1/services`: the external systems mih delivers to.

use axum::extract::{Path, State};
use axum::response::Response;

use super::input::{DeleteOptions, ServiceFilter, ServiceInput};
use super::store::ServiceRow;
use super::view::ServiceView;
use crate::auth::Caller;
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiQuery, IfMatch, Page, PageQuery};
use crate::resources::{config_row, crud};
use crate::state::AppState;

/// List services.
#[utoipa::path(get, path = "/api/v1/services", tag = "services", params(ServiceFilter, PageQuery),
    responses((status = 200, body = Page<ServiceView>), (status = 401), (status = 403), (status = 422)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(filter): ApiQuery<ServiceFilter>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> ApiResult<axum::Json<Page<ServiceView>>> {
    crud::list::<ServiceRow>(&state, &caller, filter, page).await
}

/// Register a service.
#[utoipa::path(post, path = "/api/v1/services", tag = "services", request_body = ServiceInput,
    responses((status = 201, body = ServiceView), (status = 401), (status = 403), (status = 409), (status = 422)))]
pub(crate) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(input): ApiJson<ServiceInput>,
) -> ApiResult<Response> {
    config_row::create::<ServiceRow>(&state, &caller, input).await
}

/// Get one service.
#[utoipa::path(get, path = "/api/v1/services/{name}", tag = "services", params(("name" = String, Path)),
    responses((status = 200, body = ServiceView), (status = 401), (status = 403), (status = 404)))]
pub(crate) async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    crud::get_one::<ServiceRow>(&state, &caller, &name).await
}

/// Change a service. Fields left out keep their value; secrets left out are kept.
#[utoipa::path(patch, path = "/api/v1/services/{name}", tag = "services", params(("name" = String, Path)), request_body = ServiceInput,
    responses((status = 200, body = ServiceView), (status = 401), (status = 403), (status = 404),
              (status = 409), (status = 412), (status = 422)))]
pub(crate) async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    if_match: IfMatch,
    ApiJson(input): ApiJson<ServiceInput>,
) -> ApiResult<Response> {
    config_row::update::<ServiceRow>(&state, &caller, &name, if_match, input).await
}

/// Enable a service.
#[utoipa::path(post, path = "/api/v1/services/{name}/enable", tag = "services", params(("name" = String, Path)),
    responses((status = 200, body = ServiceView), (status = 401), (status = 403), (status = 404), (status = 412)))]
pub(crate) async fn enable(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    if_match: IfMatch,
) -> ApiResult<Response> {
    config_row::set_enabled::<ServiceRow>(&state, &caller, &name, if_match, true).await
}

/// Disable a service: nothing is delivered to it until it is enabled again.
#[utoipa::path(post, path = "/api/v1/services/{name}/disable", tag = "services", params(("name" = String, Path)),
    responses((status = 200, body = ServiceView), (status = 401), (status = 403), (status = 404), (status = 412)))]
pub(crate) async fn disable(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    if_match: IfMatch,
) -> ApiResult<Response> {
    config_row::set_enabled::<ServiceRow>(&state, &caller, &name, if_match, false).await
}

/// Delete a service.
#[utoipa::path(delete, path = "/api/v1/services/{name}", tag = "services", params(("name" = String, Path), DeleteOptions),
    responses((status = 204), (status = 401), (status = 403), (status = 404), (status = 409), (status = 412)))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiQuery(options): ApiQuery<DeleteOptions>,
    if_match: IfMatch,
) -> ApiResult<Response> {
    let cascade = options.cascade == Some(true);
    config_row::delete::<ServiceRow>(&state, &caller, &name, if_match, cascade).await
}
