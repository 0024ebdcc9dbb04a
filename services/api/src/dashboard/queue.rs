//! The queue: each service's jobs still in JOBS with the age of the oldest (the original
//! plugin's queue monitor), one service's jobs with their attempts so far, and the operators'
//! "attempt now" and "move to dead letters" (never a silent delete) — through the API's own
//! handlers, so its checks and audit records apply.

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::i18n::t;
use super::render::{failure_page, page};
use super::session::{Session, percent_encode};
use crate::auth::Role;
use crate::extract::ApiQuery;
use crate::resources::queue::{self, JobsQuery};
use crate::state::AppState;

fn circuit_badge(state: &str) -> &'static str {
    match state {
        "closed" => "ok",
        "open" => "error",
        _ => "warn",
    }
}

fn status_badge(status: &str) -> &'static str {
    match status {
        "delivered" => "ok",
        "failed_retryable" | "timeout" | "circuit_open" => "warn",
        _ => "error",
    }
}

pub async fn overview(State(state): State<AppState>, session: Session) -> Response {
    let listed = match queue::list(State(state), session.caller.clone()).await {
        Ok(listed) => listed.0,
        Err(failure) => return failure_page(&session, "/queue", &failure),
    };
    let rows: Vec<Value> = listed
        .items
        .iter()
        .map(|entry| {
            json!({
                "service": entry.service,
                "jobs": entry.jobs,
                "queued": entry.queued,
                "in_dispatcher": entry.in_dispatcher,
                "redelivered": entry.redelivered,
                "oldest_enqueued_at": entry.oldest_enqueued_at.map(|at| at.to_rfc3339()),
                "oldest_age_s": entry.oldest_age_ms.map(|ms| ms / 1000),
                "circuit_key": format!("circuit-{}", entry.circuit.state),
                "badge": circuit_badge(&entry.circuit.state),
                "probe_at": entry.circuit.probe_at.map(|at| at.to_rfc3339()),
            })
        })
        .collect();
    page(
        StatusCode::OK,
        "queue",
        session.lang,
        Some(&session),
        "/queue",
        json!({
            "title": t(session.lang, "queue-title", None),
            "page": "queue",
            "services": rows,
        }),
    )
}

#[derive(Debug, Deserialize)]
pub struct JobsPageQuery {
    after: Option<String>,
    done: Option<String>,
}

pub async fn service_jobs(
    State(state): State<AppState>,
    session: Session,
    Path(service): Path<String>,
    Query(query): Query<JobsPageQuery>,
) -> Response {
    let here = format!("/queue/{}", percent_encode(&service));
    let found = queue::jobs(
        State(state),
        session.caller.clone(),
        Path(service.clone()),
        ApiQuery(JobsQuery {
            limit: Some(50),
            after: query.after,
        }),
    )
    .await;
    let found = match found {
        Ok(found) => found.0,
        Err(failure) => return failure_page(&session, &here, &failure),
    };
    let jobs: Vec<Value> = found
        .items
        .iter()
        .map(|job| {
            json!({
                "seq": job.handle,
                "job_id": job.job_id,
                "eventname": job.eventname,
                "origin": job.origin,
                "enqueued_at": job.enqueued_at.to_rfc3339(),
                "state_key": format!("queue-state-{}", job.state),
                "in_dispatcher": job.state == "in_dispatcher",
                "attempts": job.attempts,
                "last_status": job.last_status,
                "status_badge": job.last_status.as_deref().map(status_badge),
                "last_error": job.last_error,
                "last_attempt_at": job.last_attempt_at.map(|at| at.to_rfc3339()),
                "next_attempt_at": job.next_attempt_at.map(|at| at.to_rfc3339()),
                "unreadable": job.unreadable,
            })
        })
        .collect();
    let mut args = fluent_bundle::FluentArgs::new();
    args.set("service", service.clone());
    page(
        StatusCode::OK,
        "queue_jobs",
        session.lang,
        Some(&session),
        &here,
        json!({
            "title": t(session.lang, "queue-jobs-title", Some(&args)),
            "page": "queue",
            "service": service,
            "jobs": jobs,
            "next": found
                .next_after
                .map(|after| format!("{here}?after={}", percent_encode(&after))),
            "done": query.done.filter(|d| matches!(d.as_str(), "queue-attempted" | "queue-moved")),
            "can_operate": session.caller.role >= Role::Operator,
        }),
    )
}

#[derive(Debug, Deserialize)]
pub struct ActionForm {
    csrf: Option<String>,
}

pub async fn attempt_now(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Path((service, seq)): Path<(String, String)>,
    Form(form): Form<ActionForm>,
) -> Response {
    let here = format!("/queue/{}", percent_encode(&service));
    if let Err(failure) = session.require_csrf(&headers, form.csrf.as_deref()) {
        return failure_page(&session, &here, &failure);
    }
    match queue::attempt_now(State(state), session.caller.clone(), Path((service, seq))).await {
        Ok(_) => Redirect::to(&format!("{here}?done=queue-attempted")).into_response(),
        Err(failure) => failure_page(&session, &here, &failure),
    }
}

pub async fn dead_letter(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Path((service, seq)): Path<(String, String)>,
    Form(form): Form<ActionForm>,
) -> Response {
    let here = format!("/queue/{}", percent_encode(&service));
    if let Err(failure) = session.require_csrf(&headers, form.csrf.as_deref()) {
        return failure_page(&session, &here, &failure);
    }
    match queue::dead_letter(State(state), session.caller.clone(), Path((service, seq))).await {
        Ok(_) => Redirect::to(&format!("{here}?done=queue-moved")).into_response(),
        Err(failure) => failure_page(&session, &here, &failure),
    }
}
