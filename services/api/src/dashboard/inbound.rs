//! Inbound: what services sent back towards Moodle, newest first — waiting for the site's
//! plugin, delivered (acknowledged by it), or parked and why — filtered by service and status.
//! Reads through the API's inbound log (`GET /api/v1/inbound/log`).

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use super::i18n::t;
use super::render::{failure_page, page};
use super::session::{Session, nonempty, percent_encode};
use crate::error::ApiResult;
use crate::resources::inbound::log::{self, LogQuery};
use crate::resources::services;
use crate::state::AppState;

const STATUSES: [&str; 3] = ["pending", "delivered", "parked"];

#[derive(Debug, Deserialize)]
pub struct InboundQuery {
    service: Option<String>,
    status: Option<String>,
    cursor: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    session: Session,
    Query(query): Query<InboundQuery>,
) -> Response {
    match data(&state, &session, query).await {
        Ok(data) => page(
            StatusCode::OK,
            "inbound",
            session.lang,
            Some(&session),
            "/inbound",
            data,
        ),
        Err(failure) => failure_page(&session, "/inbound", &failure),
    }
}

async fn data(state: &AppState, session: &Session, query: InboundQuery) -> ApiResult<Value> {
    session.caller.require(crate::auth::Role::Viewer)?;
    let service = nonempty(query.service.as_ref());
    let status = nonempty(query.status.as_ref()).filter(|s| STATUSES.contains(&s.as_str()));
    let found = log::page(
        state,
        LogQuery {
            service: service.clone(),
            status: status.clone(),
            cursor: nonempty(query.cursor.as_ref()),
            ..LogQuery::default()
        },
    )
    .await?;
    let next = found.next_cursor.as_ref().map(|cursor| {
        let mut url = format!("/inbound?cursor={}", percent_encode(cursor));
        for (name, value) in [("service", &service), ("status", &status)] {
            if let Some(value) = value {
                url.push_str(&format!("&{name}={}", percent_encode(value)));
            }
        }
        url
    });
    let with_inbound: Vec<Value> = services::load_all(&state.db)
        .await?
        .into_iter()
        .filter(|s| s.inbound.is_some())
        .map(|s| json!({"name": s.name, "selected": service.as_deref() == Some(s.name.as_str())}))
        .collect();
    let rows: Vec<Value> = found
        .items
        .iter()
        .map(|m| {
            json!({
                "id": m.id,
                "received_at": m.received_at.to_rfc3339(),
                "service": m.service,
                "source": m.source,
                "via": m.via,
                "status": m.status,
                "status_label": t(session.lang, &format!("inbound-status-{}", m.status), None),
                "badge": match m.status.as_str() { "delivered" => "ok", "pending" => "warn", _ => "error" },
                "size": m.size_bytes,
                "excerpt": m.excerpt,
                "external_id": m.external_id,
                "parked_reason": m.parked_reason,
            })
        })
        .collect();
    Ok(json!({
        "title": t(session.lang, "inbound-title", None),
        "page": "inbound",
        "messages": rows,
        "services": with_inbound,
        "statuses": STATUSES.iter().map(|s| json!({
            "value": s,
            "label": t(session.lang, &format!("inbound-status-{s}"), None),
            "selected": status.as_deref() == Some(*s),
        })).collect::<Vec<_>>(),
        "next": next,
    }))
}
