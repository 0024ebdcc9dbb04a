//! Events: a source's latest events as the hub received them, newest first, filtered by name,
//! each with the rules whose jobs for it were attempted (from the delivery log) and their
//! latest status. Read from `<NS>_EVENTS`, like the rule preview.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use mih_shared::moodle::EventName;
use mih_shared::names::SourceId;

use super::i18n::t;
use super::render::{failure_page, page};
use super::session::{Session, nonempty};
use crate::error::{ApiFailure, ApiResult};
use crate::recent::{recent_event_names, recent_events, recent_events_named};
use crate::resources::{rules, sources};
use crate::state::AppState;

const LASTS: [usize; 3] = [20, 50, 100];

#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    source: Option<String>,
    eventname: Option<String>,
    last: Option<usize>,
}

pub async fn list(
    State(state): State<AppState>,
    session: Session,
    Query(query): Query<EventsQuery>,
) -> Response {
    match data(&state, &session, &query).await {
        Ok(data) => page(
            StatusCode::OK,
            "events",
            session.lang,
            Some(&session),
            "/events",
            data,
        ),
        Err(failure) => failure_page(&session, "/events", &failure),
    }
}

#[derive(sqlx::FromRow)]
struct Taken {
    event_id: Uuid,
    rule_id: Uuid,
    job_id: Uuid,
    status: String,
}

async fn data(state: &AppState, session: &Session, query: &EventsQuery) -> ApiResult<Value> {
    session.caller.require(crate::auth::Role::Viewer)?;
    let mut known = sources::load_all(&state.db).await?;
    known.sort_by(|a, b| b.enabled.cmp(&a.enabled).then_with(|| a.id.cmp(&b.id)));
    let chosen = nonempty(query.source.as_ref())
        .or_else(|| known.first().map(|s| s.id.clone()))
        .unwrap_or_default();
    let last = query.last.filter(|n| LASTS.contains(n)).unwrap_or(LASTS[0]);
    let eventname = nonempty(query.eventname.as_ref());
    let events = if chosen.is_empty() {
        Vec::new()
    } else {
        let source = SourceId::parse(chosen.clone())
            .map_err(|e| ApiFailure::invalid("source", e.to_string()))?;
        match &eventname {
            Some(name) => {
                let name = EventName::parse(name)
                    .map_err(|e| ApiFailure::invalid("eventname", e.to_string()))?;
                recent_events_named(state, &source, &name, last).await?
            }
            None => recent_events(state, &source, last).await?,
        }
    };
    let ids: Vec<Uuid> = events.iter().map(|e| *e.id.as_uuid()).collect();
    let taken: Vec<Taken> = sqlx::query_as(
        "SELECT DISTINCT ON (event_id, rule_id) event_id, rule_id, job_id, status \
         FROM deliveries WHERE event_id = ANY($1) AND rule_id IS NOT NULL \
         ORDER BY event_id, rule_id, started_at DESC, attempt DESC",
    )
    .bind(&ids)
    .fetch_all(&state.db)
    .await?;
    let names: HashMap<Uuid, String> = rules::load_all(&state.db)
        .await?
        .into_iter()
        .map(|rule| (rule.id, rule.name))
        .collect();
    let mut by_event: HashMap<Uuid, Vec<Value>> = HashMap::new();
    for row in taken {
        by_event.entry(row.event_id).or_default().push(json!({
            "name": names.get(&row.rule_id).cloned().unwrap_or_else(|| row.rule_id.to_string()),
            "job_id": row.job_id,
            "badge": match row.status.as_str() { "delivered" => "ok", "failed_retryable" | "timeout" => "warn", _ => "error" },
            "status": row.status,
        }));
    }
    let rows: Vec<Value> = events
        .iter()
        .map(|event| {
            let id = *event.id.as_uuid();
            let field = |name: &str| event.data.get(name).cloned().unwrap_or(Value::Null);
            json!({
                "id": id,
                "received_at": event.received_at.to_rfc3339(),
                "eventname": field("eventname"),
                "userid": field("userid"),
                "courseid": field("courseid"),
                "rules": by_event.remove(&id).unwrap_or_default(),
                "data": serde_json::to_string_pretty(&event.data).unwrap_or_default(),
            })
        })
        .collect();
    let event_names: Vec<String> = recent_event_names(state, 100)
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    Ok(json!({
        "title": t(session.lang, "events-title", None),
        "page": "events",
        "events": rows,
        "event_names": event_names,
        "sources": known.iter().map(|s| json!({"id": s.id, "selected": s.id == chosen})).collect::<Vec<_>>(),
        "lasts": LASTS.iter().map(|n| json!({"value": n, "selected": *n == last})).collect::<Vec<_>>(),
        "filter": {"eventname": eventname.unwrap_or_default()},
    }))
}
