//! `POST /api/v1/rules/preview`: what a rule — saved, or a draft — does with an event: which
//! check decided, and the request it renders. Nothing is saved or sent.
//!
//! Any viewer may preview, so a preview is as costly as a rule can be: a condition over the
//! cost limit is refused with 422 like a rule being saved, and the rule is tried off the async
//! workers, within its budget, by one of [`EVALUATORS`].

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use mih_rules::CompiledRule;
use mih_rules::budget::{self, Evaluators, OffloadError};
use mih_shared::live::LiveService;
use mih_shared::messages::{Event, EventId, Version};
use mih_shared::moodle::EventName;
use mih_shared::names::{ServiceSlug, SourceId};

use super::config_row::ConfigRow;
use super::crud::Resource;
use super::rules::{self, RuleInput, RuleRow};
use super::{Problems, services};
use crate::auth::{Caller, Role};
use crate::error::{ApiFailure, ApiResult};
use crate::extract::ApiJson;
use crate::recent::recent_events;
use crate::state::AppState;

const MAX_RECENT: u32 = 50;

/// Where api evaluates rules (previews, backfills): on the blocking pool, at most half the cores
/// at a time (at least one), so that a flood of costly previews takes neither the async workers
/// (the admin API, health checks, the recorder and, in `mih run`, ingest) nor all of the CPU
/// from them. Further previews wait for a free evaluator without holding a thread.
pub(crate) static EVALUATORS: LazyLock<Evaluators> =
    LazyLock::new(|| Evaluators::new(budget::cores().div_ceil(2)));

/// Longest a preview waits for a free evaluator before answering 503.
const EVALUATOR_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecentEvents {
    pub source: String,
    /// How many of the source's latest events (1 to 50, default 1).
    pub last: Option<u32>,
}

/// A rule (saved, or a draft) and the event(s) to try it on.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreviewInput {
    /// A saved rule.
    pub rule_id: Option<Uuid>,
    /// A draft rule, as it would be created; validated but not saved.
    pub rule: Option<RuleInput>,
    /// A Moodle event, as ingest takes it.
    #[schema(value_type = Option<Object>)]
    pub event: Option<Value>,
    /// The source the inline event comes from (default `preview`).
    pub source: Option<String>,
    /// Or: the latest events a source sent.
    pub recent: Option<RecentEvents>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PreviewResult {
    /// The stored event's id (absent for an inline event).
    pub event_id: Option<String>,
    pub eventname: String,
    pub source: String,
    pub matched: bool,
    /// Each check in order (enabled, source, event, service, condition, render), with why.
    #[schema(value_type = Vec<Object>)]
    pub checks: Value,
    /// The request that would be queued, when the rule matched and rendered.
    #[schema(value_type = Option<Object>)]
    pub request: Option<Value>,
    pub ordering_key: Option<String>,
    /// Why the request could not be rendered (the job would be dead-lettered).
    pub render_error: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PreviewAnswer {
    pub results: Vec<PreviewResult>,
}

/// Preview a rule against an event.
#[utoipa::path(post, path = "/api/v1/rules/preview", tag = "rules", request_body = PreviewInput,
    responses((status = 200, body = PreviewAnswer), (status = 401), (status = 403), (status = 404), (status = 422)))]
pub(crate) async fn preview(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(input): ApiJson<PreviewInput>,
) -> ApiResult<Json<PreviewAnswer>> {
    caller.require(Role::Viewer)?;
    let mut problems = Problems::default();
    problems.check(
        input.rule_id.is_some() != input.rule.is_some(),
        "rule_id",
        "give either rule_id (a saved rule) or rule (a draft)",
    );
    problems.check(
        input.event.is_some() != input.recent.is_some(),
        "event",
        "give either event (inline) or recent (a source's latest events)",
    );
    problems.into_result()?;

    let mut conn = state.db.acquire().await?;
    let row = match (input.rule_id, input.rule) {
        (Some(id), _) => RuleRow::load(&mut conn, &id.to_string(), false)
            .await?
            .ok_or_else(|| super::not_found("rule", id.to_string()))?,
        (None, Some(draft)) => rules::apply(&mut conn, None, draft).await?,
        (None, None) => return Err(ApiFailure::invalid("rule_id", "is required")),
    };
    drop(conn);
    let (_, live) = row.live()?;
    let rule = CompiledRule::compile(Arc::new(live)).limit_request(state.max_request_bytes);
    let services = services::load_live(&state.db).await?;

    let (events, stored) = match (input.event, input.recent) {
        (Some(event), _) => (vec![inline_event(event, input.source.as_deref())?], false),
        (None, Some(recent)) => {
            let source = SourceId::parse(recent.source)
                .map_err(|e| ApiFailure::invalid("recent.source", e.to_string()))?;
            let last = recent.last.unwrap_or(1);
            if !(1..=MAX_RECENT).contains(&last) {
                return Err(ApiFailure::invalid(
                    "recent.last",
                    format!("must be between 1 and {MAX_RECENT}"),
                ));
            }
            let count = usize::try_from(last).unwrap_or(1);
            (recent_events(&state, &source, count).await?, true)
        }
        (None, None) => return Err(ApiFailure::invalid("event", "is required")),
    };
    let explain = move || {
        events
            .iter()
            .map(|event| explain_one(&rule, &services, event, stored))
            .collect::<Vec<_>>()
    };
    let results = EVALUATORS
        .run(EVALUATOR_WAIT, explain)
        .await
        .map_err(|error| match error {
            OffloadError::Busy(_) => ApiFailure::Unavailable(
                "every rule evaluator is busy with other previews; try again shortly".into(),
            ),
            OffloadError::Panicked(_) => ApiFailure::Internal(error.to_string()),
        })?;
    Ok(Json(PreviewAnswer { results }))
}

/// One event's explanation, as the answer shows it.
fn explain_one(
    rule: &CompiledRule,
    services: &BTreeMap<ServiceSlug, Arc<LiveService>>,
    event: &Event,
    stored: bool,
) -> PreviewResult {
    let explanation = rule.explain(event, services);
    PreviewResult {
        event_id: stored.then(|| event.id.to_string()),
        eventname: event
            .data
            .get("eventname")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        source: event.source.to_string(),
        matched: explanation.matched,
        checks: serde_json::to_value(&explanation.checks).unwrap_or_default(),
        request: explanation
            .request
            .as_ref()
            .and_then(|r| serde_json::to_value(r).ok()),
        ordering_key: explanation.ordering_key,
        render_error: explanation.render_error,
    }
}

/// An inline event as the matcher would see it: `eventname` normalised, the rest as given.
fn inline_event(value: Value, source: Option<&str>) -> ApiResult<Event> {
    let Value::Object(mut data) = value else {
        return Err(ApiFailure::invalid(
            "event",
            "must be a JSON object (a Moodle event)",
        ));
    };
    let name = match data.get("eventname") {
        Some(Value::String(raw)) => EventName::parse(raw)
            .map_err(|e| ApiFailure::invalid("event.eventname", e.to_string()))?,
        _ => {
            return Err(ApiFailure::invalid(
                "event.eventname",
                "is required and must be a string",
            ));
        }
    };
    data.insert("eventname".into(), Value::String(name.as_str().to_owned()));
    let source = SourceId::parse(source.unwrap_or("preview"))
        .map_err(|e| ApiFailure::invalid("source", e.to_string()))?;
    Ok(Event {
        v: Version,
        id: EventId::new_v7(),
        source,
        received_at: Utc::now(),
        dedup_key: "preview".into(),
        data: data.into(),
    })
}
