//! Creating and changing a rule (operators and admins), with a live preview of the draft against the recent
//! events of a source: which check decided and why, and the request it would send. The form's
//! inputs are the API's fields; saving goes through the same code as `POST`/`PATCH
//! /api/v1/rules`, previewing through `POST /api/v1/rules/preview` — nothing is sent.

use std::collections::BTreeMap;

use axum::Form;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::{Value, json};

use super::event_catalogue::COMMON_EVENTS;
use super::form::{self, Field, Input, Problems, Submitted, given, put};
use super::i18n::t;
use super::render::{failure_page, json_of, page, render};
use super::session::Session;
use crate::auth::Role;
use crate::error::{ApiFailure, ApiResult};
use crate::extract::ApiJson;
use crate::recent::recent_event_names;
use crate::resources::crud::{self, Resource};
use crate::resources::preview::{self, PreviewInput, RecentEvents};
use crate::resources::rules::RuleRow;
use crate::resources::{services, sources};
use crate::state::AppState;

const METHODS: &[(&str, &str)] = &[
    ("POST", "method-post"),
    ("PUT", "method-put"),
    ("PATCH", "method-patch"),
    ("GET", "method-get"),
    ("DELETE", "method-delete"),
];

const AFTER_DEAD_LETTER: &[(&str, &str)] = &[
    ("skip", "rule-after-dead-letter-skip"),
    ("hold", "rule-after-dead-letter-hold"),
];

/// How many recent events a preview tries the draft on.
const PREVIEW_EVENTS: u32 = 5;

/// The form's sections: (id, legend key, the service kind it is for, fields).
fn sections() -> Vec<(&'static str, &'static str, Option<&'static str>, Vec<Field>)> {
    use Input::{Checkbox, Select, Text, TextArea};
    vec![
        (
            "general",
            "rule-general",
            None,
            vec![
                Field::new("name", "rule-name", Text).required(),
                Field::new("description", "rule-description", Text),
                Field::new("enabled", "rule-enabled", Checkbox),
                Field::new("service", "rule-service", Select(&[])).required(),
            ],
        ),
        (
            "when",
            "rule-when",
            None,
            vec![
                Field::new("events", "rule-events", TextArea)
                    .hint()
                    .required(),
                Field::new("sources", "rule-sources", Text).hint(),
                Field::new("condition", "rule-condition", TextArea).hint(),
            ],
        ),
        (
            "rest",
            "rule-target-rest",
            Some("rest"),
            vec![
                Field::new("target.method", "rule-method", Select(METHODS)),
                Field::new("target.path", "rule-path", Text).hint(),
            ],
        ),
        (
            "amqp",
            "rule-target-amqp",
            Some("amqp"),
            vec![
                Field::new("target.routing_key", "rule-routing-key", Text).hint(),
                Field::new("target.exchange", "rule-exchange", Text),
            ],
        ),
        (
            "soap",
            "rule-target-soap",
            Some("soap"),
            vec![Field::new("target.operation", "rule-operation", Text).required()],
        ),
        (
            "request",
            "rule-request",
            None,
            vec![
                Field::new("body", "rule-body", TextArea).hint(),
                Field::new("content_type", "rule-content-type", Text),
                Field::new("headers", "rule-headers", TextArea).hint(),
                Field::new("ordering_key", "rule-ordering-key", Text).hint(),
                Field::new(
                    "ordering_on_dead_letter",
                    "rule-ordering-on-dead-letter",
                    Select(AFTER_DEAD_LETTER),
                )
                .hint(),
            ],
        ),
    ]
}

fn all_fields() -> Vec<Field> {
    sections()
        .into_iter()
        .flat_map(|(_, _, _, fields)| fields)
        .collect()
}

/// Each service's kind, by name.
async fn service_kinds(state: &AppState) -> ApiResult<BTreeMap<String, &'static str>> {
    Ok(services::load_live(&state.db)
        .await?
        .into_values()
        .map(|s| (s.name.to_string(), s.transport.kind()))
        .collect())
}

/// The API's input for what was submitted; the target is the one for the chosen service's kind.
fn input_of(
    values: &Submitted,
    kinds: &BTreeMap<String, &'static str>,
    creating: bool,
) -> Result<Value, Problems> {
    let mut problems = Problems::default();
    let mut input = json!({});
    put(
        &mut input,
        "name",
        json!(given(values, "name").unwrap_or("")),
    );
    put(
        &mut input,
        "description",
        json!(given(values, "description").unwrap_or("")),
    );
    put(&mut input, "enabled", json!(values.contains_key("enabled")));
    let service = given(values, "service").unwrap_or("");
    put(&mut input, "service", json!(service));
    let lines = |name: &str| -> Vec<String> {
        values
            .get(name)
            .map(String::as_str)
            .unwrap_or_default()
            .split(['\n', ','])
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    };
    put(&mut input, "events", json!(lines("events")));
    put(&mut input, "sources", json!(lines("sources")));
    // Emptied: no condition, the event's own JSON as the body, no ordering.
    for name in ["condition", "body", "ordering_key"] {
        let value = values
            .get(name)
            .map(|v| v.trim_end_matches(['\r', '\n']))
            .filter(|v| !v.trim().is_empty());
        match value {
            Some(value) => put(&mut input, name, json!(value)),
            None if !creating => put(&mut input, name, Value::Null),
            None => {}
        }
    }
    if let Some(content_type) = given(values, "content_type") {
        put(&mut input, "content_type", json!(content_type));
    }
    if let Some(choice) = given(values, "ordering_on_dead_letter") {
        put(&mut input, "ordering_on_dead_letter", json!(choice));
    }
    let mut headers = serde_json::Map::new();
    for line in lines_of(values.get("headers")) {
        match line.split_once(':') {
            Some((name, value)) => {
                headers.insert(name.trim().to_owned(), json!(value.trim()));
            }
            None => problems.add(
                "headers",
                format!("`{line}` is not `Name: value` (one header per line)"),
            ),
        }
    }
    put(&mut input, "headers", Value::Object(headers));
    match kinds.get(service).copied() {
        Some("rest") => {
            put(&mut input, "target.kind", json!("rest"));
            for name in ["target.method", "target.path"] {
                if let Some(value) = given(values, name) {
                    put(&mut input, name, json!(value));
                }
            }
        }
        Some("amqp") => {
            put(&mut input, "target.kind", json!("amqp"));
            for name in ["target.routing_key", "target.exchange"] {
                if let Some(value) = given(values, name) {
                    put(&mut input, name, json!(value));
                }
            }
        }
        Some(_) => {
            put(&mut input, "target.kind", json!("soap"));
            put(
                &mut input,
                "target.operation",
                json!(given(values, "target.operation").unwrap_or("")),
            );
        }
        // The API names the unknown service.
        None => {}
    }
    if let Some(version) = given(values, "version").and_then(|v| v.parse::<i64>().ok()) {
        put(&mut input, "version", json!(version));
    }
    if problems.is_empty() {
        Ok(input)
    } else {
        Err(problems)
    }
}

fn lines_of(text: Option<&String>) -> Vec<&str> {
    text.map(String::as_str)
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect()
}

/// The form's values for a stored rule (its API view).
fn values_of(view: &Value) -> Submitted {
    let mut plain = view.clone();
    if let Value::Object(map) = &mut plain {
        for name in ["headers", "events", "sources"] {
            map.remove(name);
        }
    }
    let mut values = Submitted::new();
    form::flatten(&plain, "", &mut values);
    let joined = |name: &str, separator: &str| {
        view[name]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(separator)
    };
    values.insert("events".into(), joined("events", "\n"));
    values.insert("sources".into(), joined("sources", ", "));
    let headers = view["headers"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(name, value)| format!("{name}: {}", value.as_str().unwrap_or_default()))
        .collect::<Vec<_>>()
        .join("\n");
    values.insert("headers".into(), headers);
    values
}

fn defaults() -> Submitted {
    [
        ("enabled", "on"),
        ("target.method", "POST"),
        ("target.path", "/"),
        ("content_type", "application/json"),
        ("ordering_on_dead_letter", "skip"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// Where a condition's error points (`… (line L, column C)`): the line, and a marker under
/// the column, so the editor shows the mistake where it is.
fn pointer(condition: &str, message: &str) -> Option<Value> {
    let at = message.rfind("(line ")?;
    let rest = message[at + 6..].trim_end_matches(')');
    let (line, column) = rest.split_once(", column ")?;
    let line: usize = line.trim().parse().ok()?;
    let column: usize = column.trim().parse().ok()?;
    let text = condition.lines().nth(line.checked_sub(1)?)?;
    let before: String = text.chars().take(column.saturating_sub(1)).collect();
    let marker: String = before
        .chars()
        .map(|c| if c == '\t' { '\t' } else { ' ' })
        .chain(std::iter::once('^'))
        .collect();
    Some(json!({"line": line, "column": column, "text": text, "marker": marker}))
}

struct Drawn<'a> {
    editing: Option<&'a str>,
    values: &'a Submitted,
    problems: &'a Problems,
    preview: Option<Value>,
}

async fn draw(
    state: &AppState,
    session: &Session,
    status: StatusCode,
    form: Drawn<'_>,
) -> Response {
    let here = form
        .editing
        .map_or_else(|| "/rules/new".to_owned(), |id| format!("/rules/{id}/edit"));
    let kinds = match service_kinds(state).await {
        Ok(kinds) => kinds,
        Err(failure) => return failure_page(session, &here, &failure),
    };
    let chosen = form.values.get("service").cloned().unwrap_or_default();
    let mut service_options: Vec<Value> = kinds
        .iter()
        .map(|(name, kind)| {
            json!({"value": name, "label": "", "text": name, "kind": kind, "selected": *name == chosen})
        })
        .collect();
    if chosen.is_empty() || !kinds.contains_key(&chosen) {
        service_options.insert(
            0,
            json!({"value": chosen, "label": "rule-service-choose", "text": null, "kind": null, "selected": true}),
        );
    }
    let secrets = BTreeMap::new();
    let fieldsets: Vec<Value> = sections()
        .into_iter()
        .map(|(id, legend, kind, fields)| {
            let mut described = form::describe(&fields, form.values, &secrets, form.problems);
            for field in &mut described {
                if field["name"] == "service" {
                    field["options"] = Value::Array(service_options.clone());
                }
            }
            json!({
                "id": id,
                "legend": legend,
                "when_field": kind.map(|_| "service"),
                "when_value": kind,
                "fields": described,
            })
        })
        .collect();
    let condition_error = form.problems.by_field.get("condition").and_then(|message| {
        pointer(
            form.values
                .get("condition")
                .map(String::as_str)
                .unwrap_or(""),
            message,
        )
    });
    let seen = recent_event_names(state, 100).await.unwrap_or_default();
    let suggestions: Vec<Value> = seen
        .iter()
        .map(|(name, count)| json!({"name": name, "count": count}))
        .chain(
            COMMON_EVENTS
                .iter()
                .filter(|name| !seen.iter().any(|(s, _)| s == *name))
                .map(|name| json!({"name": name, "count": null})),
        )
        .collect();
    // Enabled sources first: a disabled one sends nothing new to preview on.
    let source_names: Vec<String> = match sources::load_all(&state.db).await {
        Ok(mut rows) => {
            rows.sort_by(|a, b| b.enabled.cmp(&a.enabled).then_with(|| a.id.cmp(&b.id)));
            rows.into_iter().map(|s| s.id).collect()
        }
        Err(failure) => return failure_page(session, &here, &failure.into()),
    };
    let preview_source = form
        .values
        .get("preview_source")
        .cloned()
        .or_else(|| source_names.first().cloned())
        .unwrap_or_default();
    let title = match form.editing {
        Some(_) => {
            let mut args = fluent_bundle::FluentArgs::new();
            args.set("rule", form.values.get("name").cloned().unwrap_or_default());
            t(session.lang, "rule-edit-title", Some(&args))
        }
        None => t(session.lang, "rule-new-title", None),
    };
    page(
        status,
        "rule_form",
        session.lang,
        Some(session),
        &here,
        json!({
            "title": title,
            "page": "rules",
            "editing": form.editing,
            "action": here,
            "version": form.values.get("version"),
            "fieldsets": fieldsets,
            "general": form.problems.general,
            "condition_error": condition_error,
            "suggestions": suggestions,
            "sources": source_names.iter().map(|s| json!({"id": s, "selected": *s == preview_source})).collect::<Vec<_>>(),
            "preview": form.preview,
        }),
    )
}

fn require_writer(session: &Session) -> ApiResult<()> {
    session.caller.require(RuleRow::WRITE_ROLE)
}

pub async fn new_form(State(state): State<AppState>, session: Session) -> Response {
    if let Err(failure) = require_writer(&session) {
        return failure_page(&session, "/rules/new", &failure);
    }
    let mut values = defaults();
    let services = service_kinds(&state).await.unwrap_or_default();
    if let Some(first) = services.keys().next() {
        values.insert("service".into(), first.clone());
    }
    draw(
        &state,
        &session,
        StatusCode::OK,
        Drawn {
            editing: None,
            values: &values,
            problems: &Problems::default(),
            preview: None,
        },
    )
    .await
}

pub async fn edit_form(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
) -> Response {
    let here = format!("/rules/{id}/edit");
    if let Err(failure) = require_writer(&session) {
        return failure_page(&session, &here, &failure);
    }
    let view = match crud::get_one::<RuleRow>(&state, &session.caller, &id).await {
        Ok(response) => json_of(response).await,
        Err(failure) => return failure_page(&session, &here, &failure),
    };
    draw(
        &state,
        &session,
        StatusCode::OK,
        Drawn {
            editing: Some(&id),
            values: &values_of(&view),
            problems: &Problems::default(),
            preview: None,
        },
    )
    .await
}

async fn save(
    state: &AppState,
    session: &Session,
    headers: &HeaderMap,
    editing: Option<&str>,
    values: Submitted,
) -> Response {
    let here = editing.map_or_else(|| "/rules/new".to_owned(), |id| format!("/rules/{id}/edit"));
    if let Err(failure) = session.require_csrf(headers, values.get("csrf").map(String::as_str)) {
        return failure_page(session, &here, &failure);
    }
    let kinds = match service_kinds(state).await {
        Ok(kinds) => kinds,
        Err(failure) => return failure_page(session, &here, &failure),
    };
    let outcome = match input_of(&values, &kinds, editing.is_none()) {
        Ok(input) => submit(state, session, editing, input).await,
        Err(problems) => Err(problems.into_failure()),
    };
    let failure = match outcome {
        Ok(id) => return Redirect::to(&format!("/rules/{id}?saved=1")).into_response(),
        Err(failure) => failure,
    };
    if matches!(
        failure,
        ApiFailure::Forbidden(_) | ApiFailure::NotFound { .. }
    ) {
        return failure_page(session, &here, &failure);
    }
    let problems = Problems::from_failure(&failure, &all_fields());
    let status = match failure {
        ApiFailure::Conflict(_) | ApiFailure::PreconditionFailed(_) => StatusCode::CONFLICT,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    draw(
        state,
        session,
        status,
        Drawn {
            editing,
            values: &values,
            problems: &problems,
            preview: None,
        },
    )
    .await
}

async fn submit(
    state: &AppState,
    session: &Session,
    editing: Option<&str>,
    input: Value,
) -> ApiResult<String> {
    let view = super::config::save::<RuleRow>(state, session, editing, input).await?;
    Ok(view["id"].as_str().unwrap_or_default().to_owned())
}

pub async fn create(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Form(values): Form<Submitted>,
) -> Response {
    save(&state, &session, &headers, None, values).await
}

pub async fn update(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(values): Form<Submitted>,
) -> Response {
    save(&state, &session, &headers, Some(&id), values).await
}

/// The draft tried on the chosen source's latest events. From htmx (as the form changes) the
/// answer is the preview panel alone; from a plain form submit, the whole form with it.
pub async fn preview(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Form(values): Form<Submitted>,
) -> Response {
    let editing = given(&values, "editing").map(str::to_owned);
    if let Err(failure) = session.require_csrf(&headers, values.get("csrf").map(String::as_str)) {
        return failure_page(&session, "/rules", &failure);
    }
    let outcome = run_preview(&state, &session, &values, editing.is_none()).await;
    let panel = match outcome {
        Ok(results) => json!({"results": results, "problems": []}),
        Err(failure) => {
            let problems = Problems::from_failure(&failure, &[]);
            json!({"results": [], "problems": problems.general})
        }
    };
    if headers.contains_key("hx-request") {
        let data = json!({"preview": panel});
        return match render("rule_preview", session.lang, Some(&session), "/rules", data) {
            Ok(html) => (StatusCode::OK, axum::response::Html(html)).into_response(),
            Err(error) => {
                tracing::error!(%error, "rule preview");
                StatusCode::INTERNAL_SERVER_ERROR.into_response()
            }
        };
    }
    draw(
        &state,
        &session,
        StatusCode::OK,
        Drawn {
            editing: editing.as_deref(),
            values: &values,
            problems: &Problems::default(),
            preview: Some(panel),
        },
    )
    .await
}

async fn run_preview(
    state: &AppState,
    session: &Session,
    values: &Submitted,
    creating: bool,
) -> ApiResult<Vec<Value>> {
    session.caller.require(Role::Viewer)?;
    let kinds = service_kinds(state).await?;
    let mut input = input_of(values, &kinds, creating).map_err(Problems::into_failure)?;
    // A draft is validated as a new rule: the stored version does not apply.
    if let Value::Object(map) = &mut input {
        map.remove("version");
        map.retain(|_, v| !v.is_null());
    }
    let rule = serde_json::from_value(input)
        .map_err(|e| ApiFailure::BadRequest(format!("the form does not make a rule: {e}")))?;
    let source = given(values, "preview_source")
        .ok_or_else(|| ApiFailure::invalid("preview_source", "choose a source to preview on"))?;
    let answer = preview::preview(
        State(state.clone()),
        session.caller.clone(),
        ApiJson(PreviewInput {
            rule_id: None,
            rule: Some(rule),
            event: None,
            source: None,
            recent: Some(RecentEvents {
                source: source.to_owned(),
                last: Some(PREVIEW_EVENTS),
            }),
        }),
    )
    .await?
    .0;
    Ok(answer
        .results
        .into_iter()
        .map(|result| {
            let body = result
                .request
                .as_ref()
                .and_then(|r| r["body"].as_str())
                .map(pretty);
            let mut request = result.request.clone().unwrap_or(Value::Null);
            if let Value::Object(map) = &mut request {
                map.remove("body");
            }
            json!({
                "event_id": result.event_id,
                "eventname": result.eventname,
                "matched": result.matched,
                "checks": result.checks,
                "request": (!request.is_null()).then(|| serde_json::to_string_pretty(&request).unwrap_or_default()),
                "body": body,
                "ordering_key": result.ordering_key,
                "render_error": result.render_error,
            })
        })
        .collect())
}

/// A JSON body indented for reading; anything else as it is.
fn pretty(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| body.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_condition_error_points_at_its_column() {
        let at = pointer(
            "data.courseid == 2 &&\n  data.userid >>> 3",
            "Syntax error: unexpected `>` (line 2, column 15)",
        )
        .expect("a position");
        assert_eq!(at["text"], "  data.userid >>> 3");
        assert_eq!(at["marker"], "              ^");
        assert!(pointer("x", "no position here").is_none());
    }

    #[test]
    fn the_target_follows_the_services_kind() {
        let kinds = BTreeMap::from([("queue".to_owned(), "amqp"), ("crm".to_owned(), "rest")]);
        let values: Submitted = [
            ("name", "r"),
            ("service", "queue"),
            (
                "events",
                "\\core\\event\\user_created\n\\mod_quiz\\event\\*",
            ),
            ("target.method", "PUT"),
            ("target.routing_key", "users"),
            ("sources", "site-a, site-b"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let input = input_of(&values, &kinds, true).expect("valid");
        assert_eq!(
            input["target"],
            json!({"kind": "amqp", "routing_key": "users"})
        );
        assert_eq!(
            input["events"],
            json!(["\\core\\event\\user_created", "\\mod_quiz\\event\\*"])
        );
        assert_eq!(input["sources"], json!(["site-a", "site-b"]));
    }
}
