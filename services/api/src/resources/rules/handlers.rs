//! `/api/v1/rules`: which events go to which service, and how each request is built.

use axum::extract::{Path, State};
use axum::response::Response;

use super::input::{RuleFilter, RuleInput};
use super::store::RuleRow;
use super::view::RuleView;
use crate::auth::Caller;
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiQuery, IfMatch, Page, PageQuery};
use crate::resources::handlers::config_handler;
use crate::resources::{config_row, crud};
use crate::state::AppState;

config_handler!(list RuleRow, RuleView, RuleFilter; " List rules.", "rules", "/api/v1/rules",
    [(status = 200, body = Page<RuleView>), (status = 401), (status = 403), (status = 422)]);
config_handler!(create RuleRow, RuleInput; " Create a rule.", "rules", "/api/v1/rules",
    [(status = 201, body = RuleView), (status = 401), (status = 403), (status = 422)]);
config_handler!(get_one RuleRow, "id"; " Get one rule.", "rules", "/api/v1/rules/{id}",
    [(status = 200, body = RuleView), (status = 401), (status = 403), (status = 404)]);
config_handler!(update RuleRow, RuleInput, "id"; " Change a rule. Fields left out keep their value; `null` clears optional ones.", "rules", "/api/v1/rules/{id}",
    [(status = 200, body = RuleView), (status = 401), (status = 403), (status = 404), (status = 409), (status = 412), (status = 422)]);
config_handler!(set_enabled enable, true, RuleRow, "id"; " Enable a rule.", "rules", "/api/v1/rules/{id}/enable",
    [(status = 200, body = RuleView), (status = 401), (status = 403), (status = 404), (status = 412)]);
config_handler!(set_enabled disable, false, RuleRow, "id"; " Disable a rule.", "rules", "/api/v1/rules/{id}/disable",
    [(status = 200, body = RuleView), (status = 401), (status = 403), (status = 404), (status = 412)]);
config_handler!(delete RuleRow, "id"; " Delete a rule.", "rules", "/api/v1/rules/{id}",
    [(status = 204), (status = 401), (status = 403), (status = 404), (status = 412)]);
