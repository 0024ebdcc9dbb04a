//! `/api/v1/rules`: which events go to which service, and how each request is built.

use axum::extract::{Path, State};
use axum::response::Response;

use super::input::{RuleFilter, RuleInput};
use super::store::RuleRow;
use super::view::RuleView;
use crate::auth::Caller;
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiQuery, IfMatch, Page, PageQuery};
use crate::resources::{config_row, crud};
use crate::state::AppState;

/// List rules.
#[utoipa::path(get, path = "/api/v1/rules", tag = "rules", params(RuleFilter, PageQuery),
    responses((status = 200, body = Page<RuleView>), (status = 401), (status = 403), (status = 422)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(filter): ApiQuery<RuleFilter>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> ApiResult<axum::Json<Page<RuleView>>> {
    crud::list::<RuleRow>(&state, &caller, filter, page).await
}

/// Create a rule.
#[utoipa::path(post, path = "/api/v1/rules", tag = "rules", request_body = RuleInput,
    responses((status = 201, body = RuleView), (status = 401), (status = 403), (status = 422)))]
pub(crate) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(input): ApiJson<RuleInput>,
) -> ApiResult<Response> {
    config_row::create::<RuleRow>(&state, &caller, input).await
}

/// Get one rule.
#[utoipa::path(get, path = "/api/v1/rules/{id}", tag = "rules", params(("id" = String, Path)),
    responses((status = 200, body = RuleView), (status = 401), (status = 403), (status = 404)))]
pub(crate) async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    crud::get_one::<RuleRow>(&state, &caller, &id).await
}

/// Change a rule. Fields left out keep their value; `null` clears optional ones.
#[utoipa::path(patch, path = "/api/v1/rules/{id}", tag = "rules", params(("id" = String, Path)), request_body = RuleInput,
    responses((status = 200, body = RuleView), (status = 401), (status = 403), (status = 404),
              (status = 409), (status = 412), (status = 422)))]
pub(crate) async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    if_match: IfMatch,
    ApiJson(input): ApiJson<RuleInput>,
) -> ApiResult<Response> {
    config_row::update::<RuleRow>(&state, &caller, &id, if_match, input).await
}

/// Enable a rule.
#[utoipa::path(post, path = "/api/v1/rules/{id}/enable", tag = "rules", params(("id" = String, Path)),
    responses((status = 200, body = RuleView), (status = 401), (status = 403), (status = 404), (status = 412)))]
pub(crate) async fn enable(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    if_match: IfMatch,
) -> ApiResult<Response> {
    config_row::set_enabled::<RuleRow>(&state, &caller, &id, if_match, true).await
}

/// Disable a rule.
#[utoipa::path(post, path = "/api/v1/rules/{id}/disable", tag = "rules", params(("id" = String, Path)),
    responses((status = 200, body = RuleView), (status = 401), (status = 403), (status = 404), (status = 412)))]
pub(crate) async fn disable(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    if_match: IfMatch,
) -> ApiResult<Response> {
    config_row::set_enabled::<RuleRow>(&state, &caller, &id, if_match, false).await
}

/// Delete a rule.
#[utoipa::path(delete, path = "/api/v1/rules/{id}", tag = "rules", params(("id" = String, Path)),
    responses((status = 204), (status = 401), (status = 403), (status = 404), (status = 412)))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    if_match: IfMatch,
) -> ApiResult<Response> {
    config_row::delete::<RuleRow>(&state, &caller, &id, if_match, false).await
}
