//! `/api/v1/tokens`: admin API tokens (admin role only).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::input::{self, TokenFilter, TokenInput};
use super::store::{self, TokenRow};
use super::view::{IssuedToken, TokenView};
use crate::audit;
use crate::auth::{Caller, Role};
use crate::error::{ApiFailure, ApiResult};
use crate::extract::{ApiJson, ApiQuery, IfMatch, Page, PageQuery};
use crate::resources::crud::{self, Resource};
use crate::resources::handlers::config_handler;
use crate::resources::with_etag;
use crate::state::AppState;

config_handler!(list TokenRow, TokenView, TokenFilter; " List tokens (never their values).", "tokens", "/api/v1/tokens",
    [(status = 200, body = Page<TokenView>), (status = 401), (status = 403), (status = 422)]);

/// Issue a token. The response is the only place its value appears.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens", request_body = TokenInput,
    responses((status = 201, body = IssuedToken), (status = 401), (status = 403), (status = 422)))]
pub(crate) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(input): ApiJson<TokenInput>,
) -> ApiResult<Response> {
    caller.require(TokenRow::WRITE_ROLE)?;
    let (label, role, expires_at) = input::required(input)?;
    let issued = super::issue(&state.db, &label, role, expires_at, &caller.actor(), None).await?;
    Ok(with_etag(StatusCode::CREATED, issued.view.version, &issued))
}

config_handler!(get_one TokenRow, "id"; " Get one token (never its value).", "tokens", "/api/v1/tokens/{id}",
    [(status = 200, body = TokenView), (status = 401), (status = 403), (status = 404)]);

/// Change a token's label or role.
#[utoipa::path(patch, path = "/api/v1/tokens/{id}", tag = "tokens", params(("id" = String, Path)), request_body = TokenInput,
    responses((status = 200, body = TokenView), (status = 401), (status = 403), (status = 404),
              (status = 409), (status = 412), (status = 422)))]
pub(crate) async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    if_match: IfMatch,
    ApiJson(input): ApiJson<TokenInput>,
) -> ApiResult<Response> {
    let mut tx = state.db.begin().await?;
    let current: TokenRow =
        crud::load_for_change(&mut tx, &caller, &id, if_match, input.version).await?;
    let label = input::changed_label(&input, &current)?;
    let role = input.role.unwrap_or(current.view()?.role);
    if role != Role::Admin
        && current.role == "admin"
        && store::other_admins(&mut tx, current.id).await? == 0
    {
        return Err(last_admin());
    }
    let row = store::update(&mut tx, current.id, &label, role.as_str()).await?;
    audit::record(
        &mut tx,
        &caller.actor(),
        "update",
        TokenRow::KIND,
        &id,
        Some(current.view_json()),
        Some(row.view_json()),
    )
    .await?;
    tx.commit().await?;
    Ok(with_etag(StatusCode::OK, row.version, &row.view()?))
}

/// Revoke a token. The last active admin token cannot be revoked.
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "tokens", params(("id" = String, Path)),
    responses((status = 204), (status = 401), (status = 403), (status = 404), (status = 409), (status = 412)))]
pub(crate) async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    if_match: IfMatch,
) -> ApiResult<Response> {
    let mut tx = state.db.begin().await?;
    let current: TokenRow = crud::load_for_change(&mut tx, &caller, &id, if_match, None).await?;
    if current.revoked_at.is_some() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    if current.role == "admin" && store::other_admins(&mut tx, current.id).await? == 0 {
        return Err(last_admin());
    }
    let row = store::revoke(&mut tx, current.id).await?;
    audit::record(
        &mut tx,
        &caller.actor(),
        "revoke",
        TokenRow::KIND,
        &id,
        Some(current.view_json()),
        Some(row.view_json()),
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn last_admin() -> ApiFailure {
    ApiFailure::Conflict("this is the last admin token; issue another admin token first".into())
}
