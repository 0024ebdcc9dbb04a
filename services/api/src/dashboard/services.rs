//! Services: each one's kind, state and circuit; operators reset a circuit and send a test
//! request through the facade, seeing the target's answer. Both actions go through the API's
//! own handlers, so the API's checks (role, audit log) apply unchanged.

use std::collections::BTreeMap;

use axum::Form;
use axum::body::to_bytes;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use super::i18n::t;
use super::render::{failure_page, json_of, page};
use super::session::{Session, percent_encode};
use crate::auth::Role;
use crate::error::{ApiFailure, ApiResult};
use crate::extract::ApiJson;
use crate::resources::crud::{self, Resource};
use crate::resources::facade::{self, CallInput};
use crate::resources::services::ServiceRow;
use crate::resources::{circuits, services};
use crate::state::AppState;

/// The target's answer is shown up to this many bytes.
const BODY_SHOWN: usize = 64 * 1024;

pub async fn list(
    State(state): State<AppState>,
    session: Session,
    OriginalUri(uri): OriginalUri,
) -> Response {
    render(&state, &session, uri.path(), json!({})).await
}

async fn render(state: &AppState, session: &Session, path: &str, extra: Value) -> Response {
    let rows = match rows(state).await {
        Ok(rows) => rows,
        Err(failure) => return failure_page(session, path, &failure),
    };
    let mut data = json!({
        "title": t(session.lang, "services-title", None),
        "page": "services",
        "services": rows,
        "can_operate": session.caller.role >= Role::Operator,
        "can_configure": session.caller.role >= ServiceRow::WRITE_ROLE,
    });
    if let (Value::Object(data), Value::Object(extra)) = (&mut data, extra) {
        data.extend(extra);
    }
    page(
        StatusCode::OK,
        "services",
        session.lang,
        Some(session),
        "/services",
        data,
    )
}

async fn rows(state: &AppState) -> Result<Vec<Value>, ApiFailure> {
    let live = services::load_live(&state.db).await?;
    let by_name: BTreeMap<String, _> = live.values().map(|s| (s.name.to_string(), s)).collect();
    Ok(circuits::all(state)
        .await?
        .into_iter()
        .map(|circuit| {
            let service = by_name.get(&circuit.service);
            json!({
                "name": circuit.service,
                "kind": service.map(|s| s.transport.kind()).unwrap_or_default(),
                "enabled": service.is_some_and(|s| s.enabled),
                "state_key": format!("circuit-{}", circuit.state),
                "badge": match circuit.state.as_str() { "closed" => "ok", "open" => "error", _ => "warn" },
                "probe_at": circuit.probe_at.map(|at| at.to_rfc3339()),
                "paused_until": circuit.paused_until.map(|at| at.to_rfc3339()),
                "failures": circuit.consecutive_failures,
                "last_error": circuit.last_error,
            })
        })
        .collect())
}

#[derive(Debug, Deserialize)]
pub struct ResetForm {
    csrf: Option<String>,
}

pub async fn reset(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Path(name): Path<String>,
    Form(form): Form<ResetForm>,
) -> Response {
    let here = "/services";
    if let Err(failure) = session.require_csrf(&headers, form.csrf.as_deref()) {
        return failure_page(&session, here, &failure);
    }
    match circuits::reset(
        State(state.clone()),
        session.caller.clone(),
        Path(name.clone()),
    )
    .await
    {
        Ok(_) => {
            let mut args = fluent_bundle::FluentArgs::new();
            args.set("service", name);
            let done = t(session.lang, "reset-done", Some(&args));
            render(&state, &session, here, json!({"done": done})).await
        }
        Err(failure) => failure_page(&session, here, &failure),
    }
}

#[derive(Debug, Deserialize)]
pub struct TestForm {
    csrf: Option<String>,
    method: String,
    path: String,
}

pub async fn test(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Path(name): Path<String>,
    Form(form): Form<TestForm>,
) -> Response {
    let here = "/services";
    if let Err(failure) = session.require_csrf(&headers, form.csrf.as_deref()) {
        return failure_page(&session, here, &failure);
    }
    let call = CallInput {
        method: Some(form.method),
        path: form.path,
        query: BTreeMap::new(),
        headers: BTreeMap::new(),
        body: None,
        content_type: None,
        timeout_ms: None,
    };
    let answer = match facade::call(
        State(state.clone()),
        session.caller.clone(),
        Path(name.clone()),
        ApiJson(call),
    )
    .await
    {
        Ok(response) => response,
        Err(failure) => return failure_page(&session, here, &failure),
    };
    let bytes = to_bytes(answer.into_body(), 4 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let body = answer["body"].as_str().map(|b| {
        let mut end = b.len().min(BODY_SHOWN);
        while !b.is_char_boundary(end) {
            end -= 1;
        }
        b[..end].to_owned()
    });
    let result = json!({
        "service": name,
        "ok": answer["ok"].as_bool().unwrap_or(false),
        "status": answer["status"],
        "attempts": answer["attempts"],
        "duration_ms": answer["duration_ms"],
        "circuit": answer["circuit"],
        "error": answer["error"],
        "body": body,
    });
    render(&state, &session, here, json!({"result": result})).await
}

#[derive(Debug, Deserialize)]
pub struct DetailQuery {
    saved: Option<String>,
}

/// One service: how it is configured (secrets only as "set"), its circuit now and how the
/// circuit changed, and what an operator or admin can do about it.
pub async fn detail(
    State(state): State<AppState>,
    session: Session,
    Path(name): Path<String>,
    axum::extract::Query(query): axum::extract::Query<DetailQuery>,
) -> Response {
    let here = format!("/services/{}", percent_encode(&name));
    match detail_data(&state, &session, &name).await {
        Ok(mut data) => {
            data["saved"] = json!(query.saved.is_some());
            page(
                StatusCode::OK,
                "service",
                session.lang,
                Some(&session),
                &here,
                data,
            )
        }
        Err(failure) => failure_page(&session, &here, &failure),
    }
}

async fn detail_data(state: &AppState, session: &Session, name: &str) -> ApiResult<Value> {
    let mut service =
        json_of(crud::get_one::<ServiceRow>(state, &session.caller, name).await?).await;
    // The API leaves an empty list out; the page lists what there is.
    if service.get("warnings").is_none() {
        service["warnings"] = json!([]);
    }
    let circuit = circuits::get_one(
        State(state.clone()),
        session.caller.clone(),
        Path(name.to_owned()),
    )
    .await?
    .0;
    let history = circuits::changes(state, name, 50).await?;
    let transport = &service["transport"];
    let target = match transport["kind"].as_str() {
        Some("rest") => transport["base_url"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        Some("amqp") => format!(
            "amqp{}://{}:{}{} → {}",
            if transport["tls"].as_bool() == Some(true) {
                "s"
            } else {
                ""
            },
            transport["host"].as_str().unwrap_or_default(),
            transport["port"],
            transport["vhost"].as_str().unwrap_or_default(),
            transport["exchange"]
                .as_str()
                .filter(|e| !e.is_empty())
                .unwrap_or("(default)"),
        ),
        _ => transport["endpoint"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    };
    Ok(json!({
        "title": name,
        "page": "services",
        "service": service,
        "target": target,
        "auth_key": format!("auth-{}", service["auth"]["type"].as_str().unwrap_or("none").replace('_', "-")),
        "circuit": circuit,
        "circuit_key": format!("circuit-{}", circuit.state),
        "badge": badge_of(&circuit.state),
        "history": history.iter().map(|change| json!({
            "state_key": format!("circuit-{}", change.state),
            "badge": badge_of(&change.state),
            "changed_at": change.changed_at.to_rfc3339(),
            "failures": change.consecutive_failures,
            "last_error": change.last_error,
        })).collect::<Vec<_>>(),
        "can_operate": session.caller.role >= Role::Operator,
        "can_configure": session.caller.role >= ServiceRow::WRITE_ROLE,
    }))
}

fn badge_of(state: &str) -> &'static str {
    match state {
        "closed" => "ok",
        "open" => "error",
        _ => "warn",
    }
}

#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    csrf: Option<String>,
}

/// Enabling or disabling (admins), through the API's own operation.
async fn set_enabled(
    state: &AppState,
    session: &Session,
    headers: &HeaderMap,
    name: &str,
    form: &CsrfForm,
    enabled: bool,
) -> Response {
    let back = format!("/services/{}?saved=1", percent_encode(name));
    super::config::set_enabled::<ServiceRow>(
        state,
        session,
        headers,
        name,
        form.csrf.as_deref(),
        enabled,
        &back,
    )
    .await
}

pub async fn enable(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Path(name): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    set_enabled(&state, &session, &headers, &name, &form, true).await
}

pub async fn disable(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Path(name): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    set_enabled(&state, &session, &headers, &name, &form, false).await
}
