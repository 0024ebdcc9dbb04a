//! `/api/v1/sources`: the Moodle sites allowed to send events.

use axum::extract::{Path, State};
use axum::response::Response;

use super::input::{SourceFilter, SourceInput};
use super::store::SourceRow;
use super::view::SourceView;
use crate::auth::Caller;
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiQuery, IfMatch, Page, PageQuery};
use crate::resources::handlers::config_handler;
use crate::resources::{config_row, crud};
use crate::state::AppState;

config_handler!(list SourceRow, SourceView, SourceFilter; " List sources.", "sources", "/api/v1/sources",
    [(status = 200, body = Page<SourceView>), (status = 401), (status = 403)]);
config_handler!(create SourceRow, SourceInput; " Create a source.", "sources", "/api/v1/sources",
    [(status = 201, body = SourceView), (status = 401), (status = 403), (status = 409), (status = 422)]);
config_handler!(get_one SourceRow, "id"; " Get one source.", "sources", "/api/v1/sources/{id}",
    [(status = 200, body = SourceView), (status = 401), (status = 403), (status = 404)]);
config_handler!(update SourceRow, SourceInput, "id";
    " Change a source. Fields left out keep their value; `null` removes a secret.", "sources", "/api/v1/sources/{id}",
    [(status = 200, body = SourceView), (status = 401), (status = 403), (status = 404), (status = 409), (status = 412), (status = 422)]);
config_handler!(set_enabled enable, true, SourceRow, "id"; " Enable a source.", "sources", "/api/v1/sources/{id}/enable",
    [(status = 200, body = SourceView), (status = 401), (status = 403), (status = 404), (status = 412)]);
config_handler!(set_enabled disable, false, SourceRow, "id"; " Disable a source: its requests are refused with 403.", "sources",
    "/api/v1/sources/{id}/disable",
    [(status = 200, body = SourceView), (status = 401), (status = 403), (status = 404), (status = 412)]);
config_handler!(delete SourceRow, "id"; " Delete a source. Refused while rules name it.", "sources", "/api/v1/sources/{id}",
    [(status = 204), (status = 401), (status = 403), (status = 404), (status = 409), (status = 412)]);
