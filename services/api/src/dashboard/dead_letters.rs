//! Dead letters: what was given up on, filtered by service, status or text; operators replay
//! one (a new job; the dead letter goes once it is delivered) or delete it, through the same
//! replayer the API uses.

use axum::Form;
use axum::extract::{OriginalUri, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use mih_dlq::store::filter::DeadLetterFilter;
use mih_dlq::store::operations::Operation;

use super::i18n::t;
use super::render::{failure_page, page, render as render_template};
use super::session::{Session, nonempty, percent_encode};
use crate::auth::Role;
use crate::error::ApiFailure;
use crate::replay;
use crate::state::AppState;

const PAGE: i64 = 50;

#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    service: Option<String>,
    status: Option<String>,
    q: Option<String>,
    cursor: Option<String>,
    /// A bulk replay to follow on the page.
    operation: Option<String>,
}

impl ListQuery {
    fn filter(&self) -> DeadLetterFilter {
        DeadLetterFilter {
            service: nonempty(self.service.as_ref()),
            status: nonempty(self.status.as_ref()),
            q: nonempty(self.q.as_ref()),
            ..DeadLetterFilter::default()
        }
    }
}

pub async fn list(
    State(state): State<AppState>,
    session: Session,
    OriginalUri(uri): OriginalUri,
    Query(query): Query<ListQuery>,
) -> Response {
    let path = uri
        .path_and_query()
        .map_or("/dead-letters", |p| p.as_str())
        .to_owned();
    render(&state, &session, &path, &query, None).await
}

async fn render(
    state: &AppState,
    session: &Session,
    path: &str,
    query: &ListQuery,
    done: Option<&str>,
) -> Response {
    let filter = query.filter();
    let filtered = filter.has_conditions();
    let letters = match filter.validated() {
        Ok(filter) => replay::list(&state.db, &filter, query.cursor.as_deref(), PAGE).await,
        Err(invalid) => Err(ApiFailure::from(invalid)),
    };
    let letters = match letters {
        Ok(letters) => letters,
        Err(failure) => return failure_page(session, path, &failure),
    };
    let next = letters.next_cursor.as_ref().map(|cursor| {
        let field = |name: &str, value: &Option<String>| {
            value
                .as_deref()
                .map(|v| format!("&{name}={}", percent_encode(v)))
                .unwrap_or_default()
        };
        format!(
            "/dead-letters?cursor={}{}{}{}",
            percent_encode(cursor),
            field("service", &query.service),
            field("status", &query.status),
            field("q", &query.q)
        )
    });
    let operation = match nonempty(query.operation.as_ref()) {
        Some(id) => match replay::operations::get(&state.db, &id).await {
            Ok(operation) => Some(operation_view(&operation)),
            Err(failure) => return failure_page(session, path, &failure),
        },
        None => None,
    };
    let rows: Vec<Value> = letters
        .items
        .iter()
        .map(|letter| {
            json!({
                "job_id": letter.job_id,
                "at": letter.dead_lettered_at.to_rfc3339(),
                "service": letter.service,
                "eventname": letter.eventname,
                "stage": letter.stage,
                "reason": letter.reason,
                "last_error": letter.last_error,
                "attempts": letter.attempts,
                "status": letter.status,
                "status_key": format!("status-{}", letter.status),
            })
        })
        .collect();
    page(
        StatusCode::OK,
        "dead_letters",
        session.lang,
        Some(session),
        path,
        json!({
            "title": t(session.lang, "dead-letters-title", None),
            "page": "dead-letters",
            "letters": rows,
            "next": next,
            "done": done,
            "operation": operation,
            "filtered": filtered,
            "can_operate": session.caller.role >= Role::Operator,
            "filter": {
                "service": query.service.clone().unwrap_or_default(),
                "status": query.status.clone().unwrap_or_default(),
                "q": query.q.clone().unwrap_or_default(),
            },
        }),
    )
}

#[derive(Debug, Deserialize)]
pub struct ActionForm {
    csrf: Option<String>,
}

pub async fn replay_one(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Path(job_id): Path<String>,
    Form(form): Form<ActionForm>,
) -> Response {
    act(&state, &session, &headers, form, "replayed", async {
        state
            .replayer()
            .replay(&job_id, &session.caller.actor())
            .await
            .map(|_| ())
    })
    .await
}

pub async fn delete_one(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Path(job_id): Path<String>,
    Form(form): Form<ActionForm>,
) -> Response {
    act(&state, &session, &headers, form, "deleted", async {
        state
            .replayer()
            .delete(&job_id, &session.caller.actor())
            .await
            .map(|_| ())
    })
    .await
}

/// Checks the CSRF token and the operator role, does it, and shows the list again.
async fn act(
    state: &AppState,
    session: &Session,
    headers: &HeaderMap,
    form: ActionForm,
    done: &str,
    action: impl Future<Output = Result<(), ApiFailure>>,
) -> Response {
    let here = "/dead-letters";
    let allowed = session
        .require_csrf(headers, form.csrf.as_deref())
        .and_then(|()| session.caller.require(Role::Operator));
    if let Err(failure) = allowed {
        return failure_page(session, here, &failure);
    }
    match action.await {
        Ok(()) => render(state, session, here, &ListQuery::default(), Some(done)).await,
        Err(failure) => failure_page(session, here, &failure),
    }
}

/// A bulk replay as the page shows it.
fn operation_view(operation: &Operation) -> Value {
    let mut view = serde_json::to_value(operation).unwrap_or(Value::Null);
    let handled = operation.done + operation.failed;
    let percent = if operation.total > 0 {
        (handled.saturating_mul(100) / operation.total).clamp(0, 100)
    } else {
        100
    };
    view["percent"] = json!(percent);
    view["running"] = json!(operation.status == "running");
    view["status_key"] = json!(format!("backfill-{}", operation.status));
    view
}

#[derive(Debug, Deserialize)]
pub struct ReplayAllForm {
    csrf: Option<String>,
    service: Option<String>,
    status: Option<String>,
    q: Option<String>,
}

/// Replays every dead letter the page's filter matches (every one, with no filter), in the
/// background; the page then follows the operation.
pub async fn replay_all(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Form(form): Form<ReplayAllForm>,
) -> Response {
    let here = "/dead-letters";
    let allowed = session
        .require_csrf(&headers, form.csrf.as_deref())
        .and_then(|()| session.caller.require(Role::Operator));
    if let Err(failure) = allowed {
        return failure_page(&session, here, &failure);
    }
    let query = ListQuery {
        service: form.service,
        status: form.status,
        q: form.q,
        ..ListQuery::default()
    };
    let mut filter = query.filter();
    filter.all = !filter.has_conditions();
    match state
        .replayer()
        .start_replay(filter, &session.caller.actor())
        .await
    {
        Ok(operation) => {
            let mut url = format!("/dead-letters?operation={}", operation.id);
            for (name, value) in [
                ("service", &query.service),
                ("status", &query.status),
                ("q", &query.q),
            ] {
                if let Some(value) = nonempty(value.as_ref()) {
                    url.push_str(&format!("&{name}={}", percent_encode(&value)));
                }
            }
            Redirect::to(&url).into_response()
        }
        Err(failure) => failure_page(&session, here, &failure),
    }
}

/// The operation's panel, for htmx to poll while it runs.
pub async fn operation_progress(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
) -> Response {
    let operation = match replay::operations::get(&state.db, &id).await {
        Ok(operation) => operation,
        Err(failure) => return failure_page(&session, "/dead-letters", &failure),
    };
    let data = json!({
        "operation": operation_view(&operation),
        "can_operate": session.caller.role >= Role::Operator,
    });
    match render_template(
        "operation_panel",
        session.lang,
        Some(&session),
        "/dead-letters",
        data,
    ) {
        Ok(html) => Html(html).into_response(),
        Err(error) => {
            tracing::error!(%error, "operation progress");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

pub async fn cancel_operation(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<ActionForm>,
) -> Response {
    let here = "/dead-letters";
    let allowed = session
        .require_csrf(&headers, form.csrf.as_deref())
        .and_then(|()| session.caller.require(Role::Operator));
    if let Err(failure) = allowed {
        return failure_page(&session, here, &failure);
    }
    match state.replayer().cancel(&id, &session.caller.actor()).await {
        Ok(operation) => {
            Redirect::to(&format!("/dead-letters?operation={}", operation.id)).into_response()
        }
        Err(failure) => failure_page(&session, here, &failure),
    }
}

/// One dead letter: why, the request exactly as it would be sent again, the last outcome, the
/// event (for a render failure) and every attempt.
pub async fn detail(
    State(state): State<AppState>,
    session: Session,
    Path(job_id): Path<String>,
) -> Response {
    let here = format!("/dead-letters/{job_id}");
    let letter = match replay::get(&state.db, &job_id).await {
        Ok(letter) => letter,
        Err(failure) => return failure_page(&session, &here, &failure),
    };
    let pretty = |value: &Value| serde_json::to_string_pretty(value).unwrap_or_default();
    let summary = &letter.summary;
    let mut args = fluent_bundle::FluentArgs::new();
    args.set("job", summary.job_id.to_string());
    page(
        StatusCode::OK,
        "dead_letter",
        session.lang,
        Some(&session),
        &here,
        json!({
            "title": t(session.lang, "dead-letter-title", Some(&args)),
            "page": "dead-letters",
            "letter": {
                "job_id": summary.job_id,
                "at": summary.dead_lettered_at.to_rfc3339(),
                "service": summary.service,
                "eventname": summary.eventname,
                "stage": summary.stage,
                "reason": summary.reason,
                "status": summary.status,
                "status_key": format!("status-{}", summary.status),
                "dead": summary.status == "dead",
            },
            "request": pretty(&letter.request),
            "last_outcome": letter.last_outcome.as_ref().map(pretty),
            "event": letter.event.as_ref().map(pretty),
            "has_attempts": !letter.deliveries.is_empty(),
            "can_operate": session.caller.role >= Role::Operator,
        }),
    )
}
