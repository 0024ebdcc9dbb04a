//! Rules: the list, one rule with its backfills, and the operators' backfill of a rule over a
//! time range, followed live (htmx polls its progress) and cancellable. Everything goes through
//! the API's own handlers and checks.

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use super::i18n::t;
use super::render::{failure_page, json_of, page, render};
use super::session::Session;
use crate::auth::Role;
use crate::error::{ApiFailure, ApiResult};
use crate::extract::{ApiJson, ApiQuery, PageQuery};
use crate::resources::backfills::{self, BackfillFilter, BackfillInput};
use crate::resources::crud::{self, Resource};
use crate::resources::rules::RuleRow;
use crate::resources::rules::handlers as rules_api;
use crate::state::AppState;

pub async fn list(State(state): State<AppState>, session: Session) -> Response {
    let listed = rules_api::list(
        State(state.clone()),
        session.caller.clone(),
        ApiQuery(crate::resources::rules::RuleFilter {
            service: None,
            enabled: None,
            source: None,
            event: None,
            q: None,
        }),
        ApiQuery(PageQuery {
            limit: Some(500),
            cursor: None,
        }),
    )
    .await;
    let rules = match listed {
        Ok(listed) => serde_json::to_value(&listed.0).unwrap_or(Value::Null)["items"].clone(),
        Err(failure) => return failure_page(&session, "/rules", &failure),
    };
    page(
        StatusCode::OK,
        "rules",
        session.lang,
        Some(&session),
        "/rules",
        json!({
            "title": t(session.lang, "rules-title", None),
            "page": "rules",
            "rules": rules,
            "can_configure": session.caller.role >= RuleRow::WRITE_ROLE,
        }),
    )
}

#[derive(Debug, Deserialize)]
pub struct DetailQuery {
    saved: Option<String>,
}

pub async fn detail(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    Query(query): Query<DetailQuery>,
) -> Response {
    let here = format!("/rules/{id}");
    match detail_data(&state, &session, &id).await {
        Ok(mut data) => {
            data["saved"] = json!(query.saved.is_some());
            page(
                StatusCode::OK,
                "rule",
                session.lang,
                Some(&session),
                &here,
                data,
            )
        }
        Err(failure) => failure_page(&session, &here, &failure),
    }
}

async fn detail_data(state: &AppState, session: &Session, id: &str) -> ApiResult<Value> {
    let rule = json_of(crud::get_one::<RuleRow>(state, &session.caller, id).await?).await;
    let rule_id = rule["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| ApiFailure::Internal("a rule without an id".into()))?;
    let backfills = backfills::list(
        State(state.clone()),
        session.caller.clone(),
        ApiQuery(BackfillFilter {
            rule_id: Some(rule_id),
            status: None,
        }),
        ApiQuery(PageQuery {
            limit: Some(20),
            cursor: None,
        }),
    )
    .await?
    .0;
    let backfills: Vec<Value> = backfills.items.iter().map(backfill_row).collect();
    Ok(json!({
        "title": rule["name"],
        "page": "rules",
        "rule": rule,
        "backfills": backfills,
        "can_operate": session.caller.role >= Role::Operator,
        "can_configure": session.caller.role >= RuleRow::WRITE_ROLE,
    }))
}

fn backfill_row(backfill: &crate::backfill::store::Backfill) -> Value {
    let mut row = serde_json::to_value(backfill).unwrap_or(Value::Null);
    let status = row["status"].as_str().unwrap_or("running").to_owned();
    row["status_key"] = json!(format!("backfill-{status}"));
    row["running"] = json!(status == "running");
    row["percent"] = json!((backfill.progress * 100.0).round());
    row
}

#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    csrf: Option<String>,
}

async fn set_enabled(
    state: &AppState,
    session: &Session,
    headers: &HeaderMap,
    id: &str,
    form: &CsrfForm,
    enabled: bool,
) -> Response {
    let back = format!("/rules/{id}?saved=1");
    super::config::set_enabled::<RuleRow>(
        state,
        session,
        headers,
        id,
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

#[derive(Debug, Deserialize)]
pub struct BackfillForm {
    csrf: Option<String>,
    /// `datetime-local` values, in the browser's time zone…
    from: String,
    to: Option<String>,
    /// …whose offset from UTC in minutes (`Date.getTimezoneOffset()`), set by the page's
    /// script; without it, UTC.
    tz_offset: Option<i64>,
}

/// A `datetime-local` value (`2026-12-04T09:30`) in a zone `offset` minutes behind UTC.
pub(super) fn instant(field: &str, value: &str, offset: i64) -> ApiResult<DateTime<Utc>> {
    if let Ok(at) = DateTime::parse_from_rfc3339(value) {
        return Ok(at.with_timezone(&Utc));
    }
    let local = NaiveDateTime::parse_from_str(value, "%Y-%m-%dT%H:%M")
        .or_else(|_| NaiveDateTime::parse_from_str(value, "%Y-%m-%dT%H:%M:%S"))
        .map_err(|_| ApiFailure::invalid(field, format!("`{value}` is not a date and time")))?;
    Ok(local.and_utc() + chrono::Duration::minutes(offset))
}

pub async fn start_backfill(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<BackfillForm>,
) -> Response {
    let here = format!("/rules/{id}");
    if let Err(failure) = session.require_csrf(&headers, form.csrf.as_deref()) {
        return failure_page(&session, &here, &failure);
    }
    let offset = form.tz_offset.unwrap_or(0).clamp(-24 * 60, 24 * 60);
    let input = (|| -> ApiResult<BackfillInput> {
        Ok(BackfillInput {
            from: instant("from", form.from.trim(), offset)?,
            to: match form.to.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
                Some(to) => Some(instant("to", to, offset)?),
                None => None,
            },
        })
    })();
    let started = match input {
        Ok(input) => {
            backfills::start(
                State(state.clone()),
                session.caller.clone(),
                Path(id.clone()),
                ApiJson(input),
            )
            .await
        }
        Err(failure) => Err(failure),
    };
    match started {
        Ok(_) => Redirect::to(&here).into_response(),
        Err(failure) => failure_page(&session, &here, &failure),
    }
}

/// One backfill's row, for htmx to poll while it runs.
pub async fn backfill_progress(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
) -> Response {
    let backfill =
        match backfills::get_one(State(state.clone()), session.caller.clone(), Path(id)).await {
            Ok(backfill) => backfill.0,
            Err(failure) => return failure_page(&session, "/rules", &failure),
        };
    let data = json!({
        "backfill": backfill_row(&backfill),
        "can_operate": session.caller.role >= Role::Operator,
    });
    match render("backfill_row", session.lang, Some(&session), "/rules", data) {
        Ok(html) => Html(html).into_response(),
        Err(error) => {
            tracing::error!(%error, "backfill progress");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

pub async fn cancel_backfill(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Err(failure) = session.require_csrf(&headers, form.csrf.as_deref()) {
        return failure_page(&session, "/rules", &failure);
    }
    match backfills::cancel(State(state.clone()), session.caller.clone(), Path(id)).await {
        Ok(cancelled) => {
            let back = cancelled
                .0
                .rule_id
                .map_or_else(|| "/rules".to_owned(), |rule| format!("/rules/{rule}"));
            Redirect::to(&back).into_response()
        }
        Err(failure) => failure_page(&session, "/rules", &failure),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_times_are_read_in_the_browsers_zone() {
        // Madrid in winter is UTC+1: getTimezoneOffset() says -60.
        let at = instant("from", "2026-12-04T09:30", -60).expect("valid");
        assert_eq!(at.to_rfc3339(), "2026-12-04T08:30:00+00:00");
        assert!(instant("from", "yesterday", 0).is_err());
    }
}
