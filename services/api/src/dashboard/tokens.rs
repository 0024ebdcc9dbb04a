//! API tokens (admin): who can reach the hub, with which role, when each was last used; issue
//! one (its value shown once) or revoke one. Through the API's own handlers: the admin role,
//! the last-admin rule and the audit log apply unchanged.

use axum::Form;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use super::i18n::t;
use super::render::{failure_page, json_of, page};
use super::session::Session;
use crate::auth::Role;
use crate::error::ApiFailure;
use crate::extract::{ApiJson, ApiQuery, IfMatch, PageQuery};
use crate::resources::tokens::handlers as tokens;
use crate::resources::tokens::input::{TokenFilter, TokenInput};
use crate::state::AppState;

const HERE: &str = "/tokens";

pub async fn list(
    State(state): State<AppState>,
    session: Session,
    OriginalUri(uri): OriginalUri,
) -> Response {
    render(&state, &session, uri.path(), json!({})).await
}

async fn render(state: &AppState, session: &Session, path: &str, extra: Value) -> Response {
    let listed = tokens::list(
        State(state.clone()),
        session.caller.clone(),
        ApiQuery(TokenFilter {
            role: None,
            revoked: None,
        }),
        ApiQuery(PageQuery {
            limit: Some(500),
            cursor: None,
        }),
    )
    .await;
    let listed = match listed {
        Ok(listed) => serde_json::to_value(&listed.0).unwrap_or(Value::Null),
        Err(failure) => return failure_page(session, path, &failure),
    };
    let rows: Vec<Value> = listed["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|token| {
            let mut token = token.clone();
            let role = token["role"].as_str().unwrap_or("viewer").to_owned();
            token["role_key"] = json!(format!("role-{role}"));
            token
        })
        .collect();
    let mut data = json!({
        "title": t(session.lang, "tokens-title", None),
        "page": "tokens",
        "tokens": rows,
    });
    if let (Value::Object(data), Value::Object(extra)) = (&mut data, extra) {
        data.extend(extra);
    }
    page(
        StatusCode::OK,
        "tokens",
        session.lang,
        Some(session),
        path,
        data,
    )
}

#[derive(Debug, Deserialize)]
pub struct IssueForm {
    csrf: Option<String>,
    label: String,
    role: String,
}

pub async fn issue(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Form(form): Form<IssueForm>,
) -> Response {
    if let Err(failure) = session.require_csrf(&headers, form.csrf.as_deref()) {
        return failure_page(&session, HERE, &failure);
    }
    let role: Role = match form.role.parse() {
        Ok(role) => role,
        Err(problem) => return failure_page(&session, HERE, &ApiFailure::invalid("role", problem)),
    };
    let input = TokenInput {
        label: Some(form.label),
        role: Some(role),
        expires_at: None,
        version: None,
    };
    match tokens::create(State(state.clone()), session.caller.clone(), ApiJson(input)).await {
        Ok(response) => {
            let issued = json_of(response).await;
            render(
                &state,
                &session,
                HERE,
                json!({"issued": {"token": issued["token"]}}),
            )
            .await
        }
        Err(failure) => failure_page(&session, HERE, &failure),
    }
}

#[derive(Debug, Deserialize)]
pub struct RevokeForm {
    csrf: Option<String>,
}

pub async fn revoke(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<RevokeForm>,
) -> Response {
    if let Err(failure) = session.require_csrf(&headers, form.csrf.as_deref()) {
        return failure_page(&session, HERE, &failure);
    }
    match tokens::revoke(
        State(state.clone()),
        session.caller.clone(),
        Path(id),
        IfMatch(None),
    )
    .await
    {
        Ok(_) => render(&state, &session, HERE, json!({"done": "token-revoked"})).await,
        Err(failure) => failure_page(&session, HERE, &failure),
    }
}
