//! What the configuration pages (services, rules, sources) do alike: save a row built from a
//! form through the API's create or update, and enable or disable one.

use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::Value;

use super::render::{failure_page, json_of};
use super::session::Session;
use crate::error::{ApiFailure, ApiResult};
use crate::extract::IfMatch;
use crate::resources::config_row::{self, ConfigRow, Referenced};
use crate::state::AppState;

/// Creates (`editing` none) or updates the row `input` describes; answers its API view.
pub async fn save<R: Referenced>(
    state: &AppState,
    session: &Session,
    editing: Option<&str>,
    input: Value,
) -> ApiResult<Value> {
    let input: <R as ConfigRow>::Input = serde_json::from_value(input).map_err(|e| {
        ApiFailure::BadRequest(format!("the form does not make a {}: {e}", R::KIND))
    })?;
    let response = match editing {
        None => config_row::create::<R>(state, &session.caller, input).await?,
        Some(id) => {
            config_row::update::<R>(state, &session.caller, id, IfMatch(None), input).await?
        }
    };
    Ok(json_of(response).await)
}

/// Enables or disables a row after checking the form's CSRF token, then goes to `back`.
pub async fn set_enabled<R: ConfigRow>(
    state: &AppState,
    session: &Session,
    headers: &HeaderMap,
    id: &str,
    csrf: Option<&str>,
    enabled: bool,
    back: &str,
) -> Response {
    let here = back.split('?').next().unwrap_or(back);
    if let Err(failure) = session.require_csrf(headers, csrf) {
        return failure_page(session, here, &failure);
    }
    match config_row::set_enabled::<R>(state, &session.caller, id, IfMatch(None), enabled).await {
        Ok(_) => Redirect::to(back).into_response(),
        Err(failure) => failure_page(session, here, &failure),
    }
}
