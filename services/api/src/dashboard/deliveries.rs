//! The delivery log: every attempt, newest first, filtered by service, status and origin; and
//! one job with the request sent, every attempt's answer and its trace id.

use axum::extract::{OriginalUri, Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use super::i18n::t;
use super::render::{failure_page, page};
use super::session::{Session, nonempty, percent_encode};
use crate::extract::{ApiQuery, PageQuery};
use crate::resources::deliveries::{self, DeliveryFilter};
use crate::state::AppState;

const STATUSES: [&str; 5] = [
    "delivered",
    "failed_retryable",
    "failed_permanent",
    "timeout",
    "circuit_open",
];
const ORIGINS: [&str; 4] = ["rule", "facade", "replay", "backfill"];

fn badge(status: &str) -> &'static str {
    match status {
        "delivered" => "ok",
        "failed_retryable" | "timeout" => "warn",
        _ => "error",
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    service: Option<String>,
    status: Option<String>,
    origin: Option<String>,
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
        .map_or("/deliveries", |p| p.as_str())
        .to_owned();
    let filter = DeliveryFilter {
        service: nonempty(query.service.as_ref()),
        rule_id: None,
        status: nonempty(query.status.as_ref()),
        event_id: None,
        source: None,
        origin: nonempty(query.origin.as_ref()),
        from: None,
        to: None,
    };
    let paging = PageQuery {
        limit: Some(50),
        cursor: nonempty(query.cursor.as_ref()),
    };
    let found = deliveries::list(
        State(state),
        session.caller.clone(),
        ApiQuery(filter),
        ApiQuery(paging),
    )
    .await;
    let found = match found {
        Ok(found) => found.0,
        Err(failure) => return failure_page(&session, &path, &failure),
    };
    let next = found.next_cursor.as_ref().map(|cursor| {
        let mut url = format!("/deliveries?cursor={}", percent_encode(cursor));
        for (name, value) in [
            ("service", &query.service),
            ("status", &query.status),
            ("origin", &query.origin),
        ] {
            if let Some(value) = nonempty(value.as_ref()) {
                url.push_str(&format!("&{name}={}", percent_encode(&value)));
            }
        }
        url
    });
    let attempts: Vec<Value> = found
        .items
        .iter()
        .map(|a| {
            json!({
                "job_id": a.job_id,
                "started_at": a.started_at.to_rfc3339(),
                "service": a.service,
                "eventname": a.eventname,
                "status": a.status,
                "badge": badge(&a.status),
                "attempt": a.attempt,
                "response_status": a.response_status,
                "duration_ms": a.duration_ms,
                "error": a.error,
            })
        })
        .collect();
    page(
        StatusCode::OK,
        "deliveries",
        session.lang,
        Some(&session),
        &path,
        json!({
            "title": t(session.lang, "deliveries-title", None),
            "page": "deliveries",
            "attempts": attempts,
            "next": next,
            "statuses": STATUSES,
            "origins": ORIGINS,
            "filter": {
                "service": query.service.clone().unwrap_or_default(),
                "status": query.status.clone().unwrap_or_default(),
                "origin": query.origin.clone().unwrap_or_default(),
            },
        }),
    )
}

pub async fn detail(
    State(state): State<AppState>,
    session: Session,
    OriginalUri(uri): OriginalUri,
    Path(job_id): Path<String>,
) -> Response {
    let path = uri.path().to_owned();
    let job = match deliveries::get_one(State(state), session.caller.clone(), Path(job_id)).await {
        Ok(job) => job.0,
        Err(failure) => return failure_page(&session, &path, &failure),
    };
    // A JSON body is shown as JSON, not as an escaped string inside the request.
    let request = job.request.as_ref().map(|request| {
        let mut request = request.clone();
        if let Some(body) = request.get("body").and_then(Value::as_str)
            && let Ok(parsed) = serde_json::from_str::<Value>(body)
        {
            request["body"] = parsed;
        }
        serde_json::to_string_pretty(&request).unwrap_or_default()
    });
    let mut args = fluent_bundle::FluentArgs::new();
    args.set("job", job.job_id.to_string());
    page(
        StatusCode::OK,
        "delivery",
        session.lang,
        Some(&session),
        &path,
        json!({
            "title": t(session.lang, "delivery-title", Some(&args)),
            "page": "deliveries",
            "badge": badge(&job.status),
            "request": request,
            "job": job,
        }),
    )
}
