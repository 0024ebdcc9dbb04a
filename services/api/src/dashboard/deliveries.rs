//! The delivery log: every attempt, newest first, filtered by service, rule, status, origin,
//! event name, time range and text; and
//! one job with the request sent, every attempt's answer and its trace id.

use axum::extract::{OriginalUri, Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use super::i18n::t;
use super::render::{failure_page, page};
use super::rules::instant;
use super::session::{Session, nonempty, percent_encode};
use crate::error::ApiFailure;
use crate::extract::{ApiQuery, PageQuery};
use crate::recent::recent_event_names;
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
    rule_id: Option<String>,
    status: Option<String>,
    origin: Option<String>,
    eventname: Option<String>,
    /// `datetime-local` values in the browser's zone, `tz_offset` minutes behind UTC.
    from: Option<String>,
    to: Option<String>,
    tz_offset: Option<i64>,
    q: Option<String>,
    cursor: Option<String>,
}

impl ListQuery {
    /// The filter's values as they were given, for the form and the next page's link.
    fn pairs(&self) -> Vec<(&'static str, String)> {
        [
            ("service", &self.service),
            ("rule_id", &self.rule_id),
            ("status", &self.status),
            ("origin", &self.origin),
            ("eventname", &self.eventname),
            ("from", &self.from),
            ("to", &self.to),
            ("q", &self.q),
        ]
        .into_iter()
        .filter_map(|(name, value)| nonempty(value.as_ref()).map(|v| (name, v)))
        .collect()
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
        .map_or("/deliveries", |p| p.as_str())
        .to_owned();
    let offset = query.tz_offset.unwrap_or(0).clamp(-24 * 60, 24 * 60);
    let time = |field: &str, value: &Option<String>| -> Result<Option<String>, ApiFailure> {
        nonempty(value.as_ref())
            .map(|v| instant(field, &v, offset).map(|at| at.to_rfc3339()))
            .transpose()
    };
    let (from, to) = match (time("from", &query.from), time("to", &query.to)) {
        (Ok(from), Ok(to)) => (from, to),
        (Err(failure), _) | (_, Err(failure)) => return failure_page(&session, &path, &failure),
    };
    let filter = DeliveryFilter {
        service: nonempty(query.service.as_ref()),
        rule_id: nonempty(query.rule_id.as_ref()),
        status: nonempty(query.status.as_ref()),
        event_id: None,
        source: None,
        origin: nonempty(query.origin.as_ref()),
        from,
        to,
        eventname: nonempty(query.eventname.as_ref()),
        q: nonempty(query.q.as_ref()),
    };
    let paging = PageQuery {
        limit: Some(50),
        cursor: nonempty(query.cursor.as_ref()),
    };
    let found = deliveries::list(
        State(state.clone()),
        session.caller.clone(),
        ApiQuery(filter),
        ApiQuery(paging),
    )
    .await;
    let found = match found {
        Ok(found) => found.0,
        Err(failure) => return failure_page(&session, &path, &failure),
    };
    let given = query.pairs();
    let next = found.next_cursor.as_ref().map(|cursor| {
        let mut url = format!("/deliveries?cursor={}", percent_encode(cursor));
        for (name, value) in &given {
            url.push_str(&format!("&{name}={}", percent_encode(value)));
        }
        if let Some(offset) = query.tz_offset {
            url.push_str(&format!("&tz_offset={offset}"));
        }
        url
    });
    let rules: Vec<Value> = match crate::resources::rules::load_all(&state.db).await {
        Ok(rules) => rules
            .into_iter()
            .map(|rule| {
                let id = rule.id.to_string();
                json!({"selected": query.rule_id.as_deref() == Some(id.as_str()), "id": id, "name": rule.name})
            })
            .collect(),
        Err(failure) => return failure_page(&session, &path, &failure.into()),
    };
    let names: Vec<String> = recent_event_names(&state, 100)
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|(name, _)| name)
        .collect();
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
            "rules": rules,
            "event_names": names,
            "filter": {
                "service": query.service.clone().unwrap_or_default(),
                "status": query.status.clone().unwrap_or_default(),
                "origin": query.origin.clone().unwrap_or_default(),
                "eventname": query.eventname.clone().unwrap_or_default(),
                "from": query.from.clone().unwrap_or_default(),
                "to": query.to.clone().unwrap_or_default(),
                "q": query.q.clone().unwrap_or_default(),
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
