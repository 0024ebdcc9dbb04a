//! `/api/v1/services`: the external systems mih delivers to.

use axum::extract::{Path, State};
use axum::response::Response;

use super::input::{DeleteOptions, ServiceFilter, ServiceInput};
use super::store::ServiceRow;
use super::view::ServiceView;
use crate::auth::Caller;
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiQuery, IfMatch, Page, PageQuery};
use crate::resources::handlers::config_handler;
use crate::resources::{config_row, crud};
use crate::state::AppState;

config_handler!(list ServiceRow, ServiceView, ServiceFilter; " List services.", "services", "/api/v1/services",
    [(status = 200, body = Page<ServiceView>), (status = 401), (status = 403), (status = 422)]);
config_handler!(create ServiceRow, ServiceInput; " Register a service.", "services", "/api/v1/services",
    [(status = 201, body = ServiceView), (status = 401), (status = 403), (status = 409), (status = 422)]);
config_handler!(get_one ServiceRow, "name"; " Get one service.", "services", "/api/v1/services/{name}",
    [(status = 200, body = ServiceView), (status = 401), (status = 403), (status = 404)]);
config_handler!(update ServiceRow, ServiceInput, "name"; " Change a service. Fields left out keep their value; secrets left out are kept.", "services", "/api/v1/services/{name}",
    [(status = 200, body = ServiceView), (status = 401), (status = 403), (status = 404), (status = 409), (status = 412), (status = 422)]);
config_handler!(set_enabled enable, true, ServiceRow, "name"; " Enable a service.", "services", "/api/v1/services/{name}/enable",
    [(status = 200, body = ServiceView), (status = 401), (status = 403), (status = 404), (status = 412)]);
config_handler!(set_enabled disable, false, ServiceRow, "name"; " Disable a service: nothing is delivered to it until it is enabled again.", "services", "/api/v1/services/{name}/disable",
    [(status = 200, body = ServiceView), (status = 401), (status = 403), (status = 404), (status = 412)]);

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
