//! Creating and changing a service (admins): one form for the three kinds, whose inputs are
//! the API's fields, saved through the same code as `POST`/`PATCH /api/v1/services` — the same
//! validation, the same audit record, the same optimistic locking (the version the form was
//! drawn from). Secrets are write-only: the form says whether one is stored, and a left-empty
//! secret input keeps it.

use std::collections::BTreeMap;

use axum::Form;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::{Value, json};

use super::form::{self, Field, Input, Problems, Submitted, given, number, put};
use super::i18n::t;
use super::render::{failure_page, json_of, page};
use super::session::{Session, percent_encode};
use crate::error::{ApiFailure, ApiResult};
use crate::resources::crud::{self, Resource};
use crate::resources::services::ServiceRow;
use crate::state::AppState;

const KINDS: &[(&str, &str)] = &[
    ("rest", "kind-rest"),
    ("amqp", "kind-amqp"),
    ("soap", "kind-soap"),
];
const AUTH_TYPES: &[(&str, &str)] = &[
    ("none", "auth-none"),
    ("bearer", "auth-bearer"),
    ("api_key", "auth-api-key"),
    ("basic", "auth-basic"),
];
const SOAP_VERSIONS: &[(&str, &str)] = &[("1.1", "soap-1-1"), ("1.2", "soap-1-2")];

/// The form's sections: (id, legend key, shown only for this kind, fields).
fn sections(creating: bool) -> Vec<(&'static str, &'static str, Option<&'static str>, Vec<Field>)> {
    use Input::{Checkbox, Number, Secret, Select, Text, TextArea, Url};
    let mut general = Vec::new();
    if creating {
        general.push(Field::new("name", "svc-name", Text).hint().required());
    }
    general.extend([
        Field::new("description", "svc-description", Text),
        Field::new("enabled", "svc-enabled", Checkbox),
        Field::new("transport.kind", "svc-kind", Select(KINDS)),
    ]);
    vec![
        ("general", "svc-general", None, general),
        (
            "rest",
            "kind-rest",
            Some("rest"),
            vec![
                Field::new("transport.base_url", "svc-base-url", Url)
                    .hint()
                    .required(),
            ],
        ),
        (
            "amqp",
            "kind-amqp",
            Some("amqp"),
            vec![
                Field::new("transport.host", "svc-host", Text).required(),
                Field::new("transport.port", "svc-port", Number).hint(),
                Field::new("transport.vhost", "svc-vhost", Text),
                Field::new("transport.username", "svc-username", Text),
                Field::new("transport.password", "svc-password", Secret),
                Field::new("transport.tls", "svc-tls", Checkbox),
                Field::new("transport.exchange", "svc-exchange", Text).hint(),
                Field::new("transport.routing_key", "svc-routing-key", Text),
                Field::new("transport.queue_declare", "svc-queue-declare", Text).hint(),
                Field::new("transport.response_queue", "svc-response-queue", Text).hint(),
            ],
        ),
        (
            "soap",
            "kind-soap",
            Some("soap"),
            vec![
                Field::new("transport.endpoint", "svc-endpoint", Url).required(),
                Field::new("transport.wsdl_url", "svc-wsdl-url", Url),
                Field::new(
                    "transport.version",
                    "svc-soap-version",
                    Select(SOAP_VERSIONS),
                ),
                Field::new("transport.namespace", "svc-namespace", Text).hint(),
                Field::new("transport.ws_security", "svc-ws-security", Checkbox).hint(),
            ],
        ),
        (
            "auth",
            "svc-auth",
            None,
            vec![
                Field::new("auth.type", "svc-auth-type", Select(AUTH_TYPES)),
                Field::new("auth.token", "svc-auth-token", Secret).when("auth.type", "bearer"),
                Field::new("auth.header", "svc-auth-header", Text).when("auth.type", "api_key"),
                Field::new("auth.key", "svc-auth-key", Secret).when("auth.type", "api_key"),
                Field::new("auth.username", "svc-auth-username", Text).when("auth.type", "basic"),
                Field::new("auth.password", "svc-auth-password", Secret).when("auth.type", "basic"),
                Field::new("signing_secret", "svc-signing-secret", Secret).hint(),
                Field::new("signing_secret_clear", "svc-signing-secret-clear", Checkbox),
                Field::new("headers", "svc-headers", TextArea).hint(),
            ],
        ),
        (
            "inbound",
            "svc-inbound",
            None,
            vec![
                Field::new("inbound_on", "svc-inbound-on", Checkbox).hint(),
                Field::new("inbound.source", "svc-inbound-source", Text).hint(),
                Field::new("inbound.enabled", "svc-inbound-enabled", Checkbox),
                Field::new("inbound.signing_secret", "svc-inbound-secret", Secret).hint(),
                Field::new("inbound.bearer_token", "svc-inbound-token", Secret).hint(),
                Field::new("inbound.rate_limit_per_sec", "svc-inbound-rate", Number),
                Field::new("inbound.burst", "svc-inbound-burst", Number),
            ],
        ),
        (
            "policy",
            "svc-policy",
            None,
            vec![
                Field::new("timeout_ms", "svc-timeout", Number),
                Field::new("retry.max_retries", "svc-max-retries", Number),
                Field::new("retry.backoff_base_ms", "svc-backoff-base", Number),
                Field::new("retry.backoff_cap_ms", "svc-backoff-cap", Number),
                Field::new("breaker.failure_threshold", "svc-failure-threshold", Number),
                Field::new("breaker.cooldown_ms", "svc-cooldown", Number),
                Field::new("breaker.half_open_probes", "svc-half-open-probes", Number),
                Field::new("concurrency", "svc-concurrency", Number),
                Field::new("rate_limit_per_sec", "svc-rate-limit", Number).hint(),
                Field::new("max_job_age_ms", "svc-max-job-age", Number),
            ],
        ),
    ]
}

fn all_fields(creating: bool) -> Vec<Field> {
    sections(creating)
        .into_iter()
        .flat_map(|(_, _, _, fields)| fields)
        .collect()
}

/// The API's input for what was submitted: only the chosen kind's and auth type's fields;
/// secrets only when typed in (left empty, the stored one stays).
fn input_of(values: &Submitted, creating: bool) -> Result<Value, Problems> {
    let mut problems = Problems::default();
    let mut input = json!({});
    let text = |input: &mut Value, name: &str| {
        if let Some(value) = given(values, name) {
            put(input, name, json!(value));
        }
    };
    if creating {
        text(&mut input, "name");
    }
    put(
        &mut input,
        "description",
        json!(given(values, "description").unwrap_or("")),
    );
    put(&mut input, "enabled", json!(values.contains_key("enabled")));
    let kind = given(values, "transport.kind").unwrap_or("rest");
    put(&mut input, "transport.kind", json!(kind));
    match kind {
        "rest" => put(
            &mut input,
            "transport.base_url",
            json!(given(values, "transport.base_url").unwrap_or("")),
        ),
        "amqp" => {
            put(
                &mut input,
                "transport.host",
                json!(given(values, "transport.host").unwrap_or("")),
            );
            if let Some(port) = number(values, "transport.port", &mut problems) {
                put(&mut input, "transport.port", json!(port));
            }
            for name in [
                "transport.vhost",
                "transport.username",
                "transport.password",
                "transport.queue_declare",
                "transport.response_queue",
            ] {
                text(&mut input, name);
            }
            // Empty is meaningful here: the default exchange, no routing key.
            for name in ["transport.exchange", "transport.routing_key"] {
                put(
                    &mut input,
                    name,
                    json!(given(values, name).unwrap_or_default()),
                );
            }
            put(
                &mut input,
                "transport.tls",
                json!(values.contains_key("transport.tls")),
            );
        }
        "soap" => {
            put(
                &mut input,
                "transport.endpoint",
                json!(given(values, "transport.endpoint").unwrap_or("")),
            );
            for name in [
                "transport.wsdl_url",
                "transport.version",
                "transport.namespace",
            ] {
                text(&mut input, name);
            }
            put(
                &mut input,
                "transport.ws_security",
                json!(values.contains_key("transport.ws_security")),
            );
        }
        other => problems.add("transport.kind", format!("unknown kind `{other}`")),
    }
    let auth = given(values, "auth.type").unwrap_or("none");
    put(&mut input, "auth.type", json!(auth));
    let auth_fields: &[&str] = match auth {
        "bearer" => &["auth.token"],
        "api_key" => &["auth.header", "auth.key"],
        "basic" => &["auth.username", "auth.password"],
        _ => &[],
    };
    for name in auth_fields {
        text(&mut input, name);
    }
    if auth == "basic" && given(values, "auth.username").is_none() {
        put(&mut input, "auth.username", json!(""));
    }
    if let Some(secret) = given(values, "signing_secret") {
        put(&mut input, "signing_secret", json!(secret));
    } else if values.contains_key("signing_secret_clear") {
        put(&mut input, "signing_secret", Value::Null);
    }
    put(
        &mut input,
        "headers",
        Value::Object(headers_of(values, &mut problems)),
    );
    if values.contains_key("inbound_on") {
        put(&mut input, "inbound", json!({}));
        for name in [
            "inbound.source",
            "inbound.signing_secret",
            "inbound.bearer_token",
        ] {
            text(&mut input, name);
        }
        put(
            &mut input,
            "inbound.enabled",
            json!(values.contains_key("inbound.enabled")),
        );
        for name in ["inbound.rate_limit_per_sec", "inbound.burst"] {
            if let Some(n) = number(values, name, &mut problems) {
                put(&mut input, name, json!(n));
            }
        }
    } else if !creating {
        // Unticked: the service takes no inbound messages any more, and its secrets go.
        put(&mut input, "inbound", Value::Null);
    }
    for name in [
        "timeout_ms",
        "retry.max_retries",
        "retry.backoff_base_ms",
        "retry.backoff_cap_ms",
        "breaker.failure_threshold",
        "breaker.cooldown_ms",
        "breaker.half_open_probes",
        "concurrency",
        "max_job_age_ms",
    ] {
        if let Some(n) = number(values, name, &mut problems) {
            put(&mut input, name, json!(n));
        }
    }
    match number(values, "rate_limit_per_sec", &mut problems) {
        Some(n) => put(&mut input, "rate_limit_per_sec", json!(n)),
        // Emptied on an existing service: no limit any more.
        None if !creating && given(values, "rate_limit_per_sec").is_none() => {
            put(&mut input, "rate_limit_per_sec", Value::Null);
        }
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

/// `Name: value` per line.
fn headers_of(values: &Submitted, problems: &mut Problems) -> serde_json::Map<String, Value> {
    let mut headers = serde_json::Map::new();
    for line in values
        .get("headers")
        .map(String::as_str)
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
    {
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
    headers
}

/// The form's values for a stored service (its API view).
fn values_of(view: &Value) -> (Submitted, BTreeMap<&'static str, bool>) {
    let mut values = Submitted::new();
    let mut plain = view.clone();
    if let Value::Object(map) = &mut plain {
        map.remove("headers");
    }
    form::flatten(&plain, "", &mut values);
    let headers = view["headers"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(name, value)| format!("{name}: {}", value.as_str().unwrap_or_default()))
        .collect::<Vec<_>>()
        .join("\n");
    values.insert("headers".into(), headers);
    let set = |value: &Value| value.as_bool().unwrap_or(false);
    let secrets = BTreeMap::from([
        (
            "transport.password",
            set(&view["transport"]["password_set"]),
        ),
        ("auth.token", set(&view["auth"]["token_set"])),
        ("auth.key", set(&view["auth"]["key_set"])),
        ("auth.password", set(&view["auth"]["password_set"])),
        ("signing_secret", set(&view["signing_secret_set"])),
        (
            "inbound.signing_secret",
            view["inbound"]["signing_secrets"].as_u64().unwrap_or(0) > 0,
        ),
        (
            "inbound.bearer_token",
            set(&view["inbound"]["bearer_token_set"]),
        ),
    ]);
    if view["inbound"].is_object() {
        values.insert("inbound_on".into(), "on".into());
    }
    (values, secrets)
}

/// A new service's starting values: the API's defaults, shown so nobody has to guess them.
fn defaults() -> Submitted {
    [
        ("enabled", "on"),
        ("transport.kind", "rest"),
        ("transport.version", "1.1"),
        ("auth.type", "none"),
        ("timeout_ms", "5000"),
        ("retry.max_retries", "5"),
        ("retry.backoff_base_ms", "1000"),
        ("retry.backoff_cap_ms", "300000"),
        ("breaker.failure_threshold", "5"),
        ("breaker.cooldown_ms", "30000"),
        ("breaker.half_open_probes", "1"),
        ("concurrency", "10"),
        ("max_job_age_ms", "86400000"),
        ("inbound.enabled", "on"),
        ("inbound.rate_limit_per_sec", "10"),
        ("inbound.burst", "20"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

#[derive(Clone, Copy)]
struct Drawn<'a> {
    editing: Option<&'a str>,
    values: &'a Submitted,
    secrets: &'a BTreeMap<&'static str, bool>,
    problems: &'a Problems,
}

fn draw(session: &Session, status: StatusCode, form: Drawn<'_>) -> Response {
    let creating = form.editing.is_none();
    let fieldsets: Vec<Value> = sections(creating)
        .into_iter()
        .map(|(id, legend, kind, fields)| {
            json!({
                "id": id,
                "legend": legend,
                "when_field": kind.map(|_| "transport-kind"),
                "when_value": kind,
                "fields": form::describe(&fields, form.values, form.secrets, form.problems),
            })
        })
        .collect();
    let title = match form.editing {
        Some(name) => {
            let mut args = fluent_bundle::FluentArgs::new();
            args.set("service", name.to_owned());
            t(session.lang, "svc-edit-title", Some(&args))
        }
        None => t(session.lang, "svc-new-title", None),
    };
    let action = match form.editing {
        Some(name) => format!("/services/{}/edit", percent_encode(name)),
        None => "/services/new".to_owned(),
    };
    page(
        status,
        "service_form",
        session.lang,
        Some(session),
        &action,
        json!({
            "title": title,
            "page": "services",
            "editing": form.editing,
            "action": action,
            "version": form.values.get("version"),
            "fieldsets": fieldsets,
            "general": form.problems.general,
        }),
    )
}

pub async fn new_form(session: Session) -> Response {
    if let Err(failure) = session.caller.require(ServiceRow::WRITE_ROLE) {
        return failure_page(&session, "/services/new", &failure);
    }
    draw(
        &session,
        StatusCode::OK,
        Drawn {
            editing: None,
            values: &defaults(),
            secrets: &BTreeMap::new(),
            problems: &Problems::default(),
        },
    )
}

async fn stored(state: &AppState, session: &Session, name: &str) -> ApiResult<Value> {
    session.caller.require(ServiceRow::WRITE_ROLE)?;
    let response = crud::get_one::<ServiceRow>(state, &session.caller, name).await?;
    Ok(json_of(response).await)
}

pub async fn edit_form(
    State(state): State<AppState>,
    session: Session,
    Path(name): Path<String>,
) -> Response {
    let view = match stored(&state, &session, &name).await {
        Ok(view) => view,
        Err(failure) => return failure_page(&session, "/services", &failure),
    };
    let (values, secrets) = values_of(&view);
    draw(
        &session,
        StatusCode::OK,
        Drawn {
            editing: Some(&name),
            values: &values,
            secrets: &secrets,
            problems: &Problems::default(),
        },
    )
}

/// Saves through the API's create or update; a refusal draws the form again with what was
/// typed (secrets excepted) and each message next to its input.
async fn save(
    state: &AppState,
    session: &Session,
    headers: &HeaderMap,
    editing: Option<&str>,
    values: Submitted,
) -> Response {
    let here = editing.map_or_else(|| "/services/new".to_owned(), |n| format!("/services/{n}"));
    if let Err(failure) = session.require_csrf(headers, values.get("csrf").map(String::as_str)) {
        return failure_page(session, &here, &failure);
    }
    let creating = editing.is_none();
    let outcome = match input_of(&values, creating) {
        Ok(input) => submit(state, session, editing, input).await,
        Err(problems) => Err(problems.into_failure()),
    };
    let failure = match outcome {
        Ok(name) => {
            return Redirect::to(&format!("/services/{}?saved=1", percent_encode(&name)))
                .into_response();
        }
        Err(failure) => failure,
    };
    if matches!(
        failure,
        ApiFailure::Forbidden(_) | ApiFailure::NotFound { .. }
    ) {
        return failure_page(session, &here, &failure);
    }
    let problems = Problems::from_failure(&failure, &all_fields(creating));
    // What is stored decides which secrets the form can say are kept.
    let secrets = match editing {
        Some(name) => match stored(state, session, name).await {
            Ok(view) => values_of(&view).1,
            Err(failure) => return failure_page(session, &here, &failure),
        },
        None => BTreeMap::new(),
    };
    let status = match failure {
        ApiFailure::Conflict(_) | ApiFailure::PreconditionFailed(_) => StatusCode::CONFLICT,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    draw(
        session,
        status,
        Drawn {
            editing,
            values: &values,
            secrets: &secrets,
            problems: &problems,
        },
    )
}

async fn submit(
    state: &AppState,
    session: &Session,
    editing: Option<&str>,
    input: Value,
) -> ApiResult<String> {
    let view = super::config::save::<ServiceRow>(state, session, editing, input).await?;
    Ok(view["name"].as_str().unwrap_or_default().to_owned())
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
    Path(name): Path<String>,
    Form(values): Form<Submitted>,
) -> Response {
    save(&state, &session, &headers, Some(&name), values).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn submitted(pairs: &[(&str, &str)]) -> Submitted {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn only_the_chosen_kind_and_auth_reach_the_api() {
        let values = submitted(&[
            ("name", "crm"),
            ("transport.kind", "rest"),
            ("transport.base_url", "https://crm.example/api"),
            ("transport.host", "ignored"),
            ("auth.type", "bearer"),
            ("auth.token", "s3cret"),
            ("auth.username", "ignored"),
            ("headers", "X-Site: moodle\n\n X-Env : prod "),
            ("timeout_ms", "2500"),
        ]);
        let input = input_of(&values, true).expect("valid");
        assert_eq!(
            input["transport"],
            json!({"kind": "rest", "base_url": "https://crm.example/api"})
        );
        assert_eq!(input["auth"], json!({"type": "bearer", "token": "s3cret"}));
        assert_eq!(
            input["headers"],
            json!({"X-Site": "moodle", "X-Env": "prod"})
        );
        assert_eq!(input["timeout_ms"], json!(2500));
        assert_eq!(input["enabled"], json!(false));
        assert!(input.get("signing_secret").is_none(), "left empty: kept");
    }

    #[test]
    fn an_empty_secret_is_kept_and_the_clear_box_removes_it() {
        let kept = input_of(&submitted(&[("auth.type", "bearer")]), false).expect("valid");
        assert!(kept["auth"].get("token").is_none());
        let cleared =
            input_of(&submitted(&[("signing_secret_clear", "on")]), false).expect("valid");
        assert_eq!(cleared["signing_secret"], Value::Null);
    }

    #[test]
    fn bad_numbers_and_headers_name_their_inputs() {
        let problems = input_of(
            &submitted(&[("retry.max_retries", "many"), ("headers", "no colon")]),
            true,
        )
        .expect_err("invalid");
        assert!(problems.by_field.contains_key("retry.max_retries"));
        assert!(problems.by_field.contains_key("headers"));
    }

    #[test]
    fn every_section_field_has_a_distinct_name() {
        let fields = all_fields(true);
        let names: std::collections::BTreeSet<_> = fields.iter().map(|f| f.name).collect();
        assert_eq!(names.len(), fields.len());
    }
}
