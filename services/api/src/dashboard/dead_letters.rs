//! Dead letters: what was given up on, filtered by service, status or text; operators replay
//! one (a new job; the dead letter goes once it is delivered) or delete it, through the same
//! replayer the API uses.

use axum::Form;
use axum::extract::{OriginalUri, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use mih_dlq::store::filter::DeadLetterFilter;

use super::i18n::t;
use super::render::{failure_page, page};
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
    let filter = DeadLetterFilter {
        service: nonempty(query.service.as_ref()),
        status: nonempty(query.status.as_ref()),
        q: nonempty(query.q.as_ref()),
        ..DeadLetterFilter::default()
    };
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
