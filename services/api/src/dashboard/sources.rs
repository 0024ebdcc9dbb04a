//! Sources (admins): the Moodle sites allowed to send events. Adding one or rotating its
//! signing secret makes a fresh random secret here and shows it once — what the site's
//! `local_mih` settings need — through the API's own create and update (audited, validated).

use axum::Form;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use mih_shared::crypto::generate_key;

use super::i18n::t;
use super::render::{failure_page, json_of, page};
use super::session::{Session, nonempty};
use crate::error::{ApiFailure, ApiResult};
use crate::extract::{IfMatch, PageQuery};
use crate::resources::config_row::{self, ConfigRow};
use crate::resources::crud::{self, Resource};
use crate::resources::sources::SourceRow;
use crate::state::AppState;

const HERE: &str = "/sources";

/// A Standard Webhooks secret: `whsec_` and 32 random bytes in base64.
fn fresh_secret() -> ApiResult<String> {
    generate_key()
        .map(|key| format!("whsec_{key}"))
        .map_err(|e| ApiFailure::Internal(format!("no random secret: {e}")))
}

pub async fn list(State(state): State<AppState>, session: Session) -> Response {
    render(&state, &session, StatusCode::OK, json!({})).await
}

async fn render(state: &AppState, session: &Session, status: StatusCode, extra: Value) -> Response {
    if let Err(failure) = session.caller.require(SourceRow::WRITE_ROLE) {
        return failure_page(session, HERE, &failure);
    }
    let listed = crud::list::<SourceRow>(
        state,
        &session.caller,
        crate::resources::sources::SourceFilter {
            enabled: None,
            q: None,
        },
        PageQuery {
            limit: Some(500),
            cursor: None,
        },
    )
    .await;
    let sources = match listed {
        Ok(listed) => serde_json::to_value(&listed.0).unwrap_or(Value::Null)["items"].clone(),
        Err(failure) => return failure_page(session, HERE, &failure),
    };
    let mut data = json!({
        "title": t(session.lang, "sources-title", None),
        "page": "sources",
        "sources": sources,
        "issued": null,
        "form": {"id": "", "name": ""},
        "general": [],
    });
    if let (Value::Object(data), Value::Object(extra)) = (&mut data, extra) {
        data.extend(extra);
    }
    page(status, "sources", session.lang, Some(session), HERE, data)
}

#[derive(Debug, Deserialize)]
pub struct AddForm {
    csrf: Option<String>,
    id: Option<String>,
    name: Option<String>,
}

pub async fn add(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Form(form): Form<AddForm>,
) -> Response {
    if let Err(failure) = session.require_csrf(&headers, form.csrf.as_deref()) {
        return failure_page(&session, HERE, &failure);
    }
    let id = nonempty(form.id.as_ref()).unwrap_or_default();
    let outcome = async {
        let secret = fresh_secret()?;
        let mut input = json!({"id": id, "signing_secret": secret});
        if let Some(name) = nonempty(form.name.as_ref()) {
            input["name"] = json!(name);
        }
        let input: <SourceRow as ConfigRow>::Input = serde_json::from_value(input)
            .map_err(|e| ApiFailure::BadRequest(format!("the form does not make a source: {e}")))?;
        config_row::create::<SourceRow>(&state, &session.caller, input).await?;
        Ok::<_, ApiFailure>(secret)
    }
    .await;
    match outcome {
        Ok(secret) => {
            render(
                &state,
                &session,
                StatusCode::OK,
                json!({"issued": {"source": id, "secret": secret}}),
            )
            .await
        }
        Err(ApiFailure::Forbidden(reason)) => {
            failure_page(&session, HERE, &ApiFailure::Forbidden(reason))
        }
        Err(failure) => {
            let status = match failure {
                ApiFailure::Conflict(_) => StatusCode::CONFLICT,
                _ => StatusCode::UNPROCESSABLE_ENTITY,
            };
            let general = match &failure {
                ApiFailure::Invalid(errors) => errors
                    .iter()
                    .map(|e| match &e.field {
                        Some(field) => format!("{field}: {}", e.message),
                        None => e.message.clone(),
                    })
                    .collect(),
                other => vec![other.to_string()],
            };
            render(
                &state,
                &session,
                status,
                json!({"general": general, "form": {"id": id, "name": form.name.unwrap_or_default()}}),
            )
            .await
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    csrf: Option<String>,
}

/// A new signing secret, shown once; the previous ones stay valid for the source's rotation
/// overlap (a day by default), so the site can be updated without losing an event.
pub async fn rotate(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Err(failure) = session.require_csrf(&headers, form.csrf.as_deref()) {
        return failure_page(&session, HERE, &failure);
    }
    let outcome = async {
        let secret = fresh_secret()?;
        let input: <SourceRow as ConfigRow>::Input =
            serde_json::from_value(json!({"signing_secret": secret}))
                .map_err(|e| ApiFailure::Internal(e.to_string()))?;
        let response =
            config_row::update::<SourceRow>(&state, &session.caller, &id, IfMatch(None), input)
                .await?;
        json_of(response).await;
        Ok::<_, ApiFailure>(secret)
    }
    .await;
    match outcome {
        Ok(secret) => {
            render(
                &state,
                &session,
                StatusCode::OK,
                json!({"issued": {"source": id, "secret": secret, "rotated": true}}),
            )
            .await
        }
        Err(failure) => failure_page(&session, HERE, &failure),
    }
}

async fn set_enabled(
    state: &AppState,
    session: &Session,
    headers: &HeaderMap,
    id: &str,
    form: &CsrfForm,
    enabled: bool,
) -> Response {
    super::config::set_enabled::<SourceRow>(
        state,
        session,
        headers,
        id,
        form.csrf.as_deref(),
        enabled,
        HERE,
    )
    .await
}

pub async fn enable(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    set_enabled(&state, &session, &headers, &id, &form, true).await
}

pub async fn disable(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    set_enabled(&state, &session, &headers, &id, &form, false).await
}
