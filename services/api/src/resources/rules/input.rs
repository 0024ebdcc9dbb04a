//! What a client writes for a rule, checked against the sources and the service it names, and
//! applied to a row.

use std::collections::BTreeMap;

use chrono::Utc;
use serde::Deserialize;
use sqlx::PgConnection;
use sqlx::types::Json as SqlJson;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use mih_rules::CompiledRule;
use mih_shared::live::{AfterDeadLetter, RuleTarget, Transport};
use mih_shared::messages::HttpMethod;
use mih_shared::moodle::EventPattern;
use mih_shared::names::SourceId;

use super::store::RuleRow;
use super::view::{TargetInput, target_view};
use crate::error::{ApiFailure, ApiResult};
use crate::resources::config_row::ConfigRow;
use crate::resources::services;
use crate::resources::{Problems, Tri, check_header_name, check_text};

const MAX_BODY_TEMPLATE: usize = 256 * 1024;
const DEFAULT_CONTENT_TYPE: &str = "application/json";

/// A rule as written by a client. On update, fields left out keep their value; `null` clears
/// the optional ones.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleInput {
    /// Required on create.
    #[schema(min_length = 1, max_length = 200)]
    pub name: Option<String>,
    pub description: Option<String>,
    /// Default true.
    pub enabled: Option<bool>,
    /// Source ids whose events the rule takes; empty or left out: every source.
    pub sources: Option<Vec<String>>,
    /// Event patterns: `*`, `\mod_quiz\event\*`, `\core\event\user_created` (the leading
    /// backslash is optional). Required on create.
    pub events: Option<Vec<String>>,
    /// A condition on the event's fields.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub condition: Tri<String>,
    /// The target service's name. Required on create.
    #[schema(pattern = "^[a-z0-9][a-z0-9_-]{0,63}$")]
    pub service: Option<String>,
    /// Default: POST `/` for REST, the service's routing key for AMQP; required for SOAP.
    pub target: Option<TargetInput>,
    /// Header name → template.
    pub headers: Option<BTreeMap<String, String>>,
    /// Body template; `null` (default) sends the event as Moodle gave it.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub body: Tri<String>,
    /// Default `application/json`.
    pub content_type: Option<String>,
    /// Template whose value keeps deliveries with the same key in order.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub ordering_key: Tri<String>,
    /// When one of a key's jobs is dead-lettered: `skip` (default) delivers the key's later
    /// jobs on; `hold` keeps them waiting until the dead letter is replayed and delivered, or
    /// deleted.
    #[schema(value_type = Option<String>, pattern = "^(skip|hold)$")]
    pub ordering_on_dead_letter: Option<String>,
    /// The version this update is based on (alternative to `If-Match`).
    pub version: Option<i64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RuleFilter {
    /// Rules targeting this service.
    pub service: Option<String>,
    pub enabled: Option<bool>,
    /// Rules taking events of this source (including rules for every source).
    pub source: Option<String>,
    /// Rules with exactly this event pattern.
    pub event: Option<String>,
    /// Part of the name or description, case-insensitive.
    pub q: Option<String>,
}

fn tri(input: Tri<String>, current: Option<Option<String>>) -> Option<String> {
    match input {
        Tri::Absent => current.flatten(),
        Tri::Null => None,
        Tri::Value(v) => Some(v),
    }
}

/// Applies an input to the current row (none when creating), validating everything, including
/// that the sources and the service exist and the target fits the service.
pub(crate) async fn apply(
    db: &mut PgConnection,
    current: Option<&RuleRow>,
    input: RuleInput,
) -> ApiResult<RuleRow> {
    let mut problems = Problems::default();
    let name = input
        .name
        .or_else(|| current.map(|r| r.name.clone()))
        .unwrap_or_default();
    check_text(&mut problems, "name", &name, 1, 200);
    let description = input
        .description
        .or_else(|| current.map(|r| r.description.clone()))
        .unwrap_or_default();
    check_text(&mut problems, "description", &description, 0, 2000);

    let sources = input
        .sources
        .or_else(|| current.map(|r| r.sources.clone()))
        .unwrap_or_default();
    problems.check(sources.len() <= 100, "sources", "at most 100 sources");
    for (i, source) in sources.iter().enumerate() {
        if let Err(e) = SourceId::parse(source.clone()) {
            problems.add(&format!("sources[{i}]"), e.to_string());
        }
    }
    if !sources.is_empty() {
        let known = crate::resources::sources::existing(db, &sources).await?;
        for (i, source) in sources.iter().enumerate() {
            problems.check(
                known.contains(source),
                &format!("sources[{i}]"),
                format!("source `{source}` does not exist"),
            );
        }
    }

    let raw_events = input.events.or_else(|| current.map(|r| r.events.clone()));
    let mut events = Vec::new();
    match raw_events {
        None => problems.add("events", "is required"),
        Some(list) => {
            problems.check(
                (1..=50).contains(&list.len()),
                "events",
                "list 1 to 50 event patterns",
            );
            for (i, raw) in list.iter().enumerate() {
                match EventPattern::parse(raw) {
                    Ok(pattern) => events.push(pattern.to_string()),
                    Err(e) => problems.add(
                        &format!("events[{i}]"),
                        format!("`{raw}` is not an event pattern: {e}"),
                    ),
                }
            }
        }
    }

    let condition = tri(input.condition, current.map(|r| r.condition.clone()));
    if let Some(condition) = &condition {
        check_text(&mut problems, "condition", condition, 1, 10_000);
    }

    let service_name = input.service.or_else(|| current.map(|r| r.service.clone()));
    let service = match &service_name {
        None => {
            problems.add("service", "is required");
            None
        }
        Some(name) => {
            let found = services::load(db, name, false).await?;
            problems.check(
                found.is_some(),
                "service",
                format!("service `{name}` does not exist"),
            );
            found
        }
    };
    let target_input = input
        .target
        .or_else(|| current.map(|r| target_view(&r.target.0)));
    let target = match (&service, target_input) {
        (None, _) => None,
        (Some(service), target) => target_for(&mut problems, &service.transport.0, target),
    };

    let headers = input
        .headers
        .or_else(|| current.map(|r| r.headers.0.clone()))
        .unwrap_or_default();
    problems.check(headers.len() <= 50, "headers", "at most 50 headers");
    for (header, template) in &headers {
        let field = format!("headers.{header}");
        check_header_name(&mut problems, &field, header);
        check_text(&mut problems, &field, template, 0, 4096);
    }
    let body = tri(input.body, current.map(|r| r.body.clone()));
    if let Some(body) = &body {
        problems.check(
            body.len() <= MAX_BODY_TEMPLATE,
            "body",
            format!("must be at most {MAX_BODY_TEMPLATE} bytes"),
        );
    }
    let content_type = input
        .content_type
        .or_else(|| current.map(|r| r.content_type.clone()))
        .unwrap_or_else(|| DEFAULT_CONTENT_TYPE.into());
    problems.check(
        content_type.contains('/')
            && content_type.len() <= 255
            && http::HeaderValue::from_str(&content_type).is_ok(),
        "content_type",
        "must be a media type such as application/json",
    );
    let ordering_key = tri(input.ordering_key, current.map(|r| r.ordering_key.clone()));
    if let Some(key) = &ordering_key {
        check_text(&mut problems, "ordering_key", key, 1, 1024);
    }
    let ordering_on_dead_letter = input
        .ordering_on_dead_letter
        .or_else(|| current.map(|r| r.ordering_on_dead_letter.clone()))
        .unwrap_or_else(|| AfterDeadLetter::Skip.as_str().to_owned());
    problems.check(
        AfterDeadLetter::parse(&ordering_on_dead_letter).is_some(),
        "ordering_on_dead_letter",
        "must be skip or hold",
    );
    problems.into_result()?;

    let (Some(service), Some(target)) = (service, target) else {
        return Err(ApiFailure::Internal(
            "rule validation passed without service or target".into(),
        ));
    };
    let now = Utc::now();
    let row = RuleRow {
        id: current.map_or_else(Uuid::now_v7, |r| r.id),
        name,
        description,
        enabled: input.enabled.or(current.map(|r| r.enabled)).unwrap_or(true),
        sources,
        events,
        condition,
        service: service.name,
        target: SqlJson(target),
        headers: SqlJson(headers),
        body,
        content_type,
        ordering_key,
        ordering_on_dead_letter,
        version: current.map_or(0, |r| r.version),
        created_at: current.map_or(now, |r| r.created_at),
        updated_at: now,
    };
    // The condition and templates must compile as the matcher will compile them.
    let (_, live) = row.live()?;
    let compiled = CompiledRule::compile(std::sync::Arc::new(live));
    let mut problems = Problems::default();
    for (field, message) in compiled.problems() {
        problems.add(field, message.clone());
    }
    problems.into_result()?;
    Ok(row)
}

/// The rule's target, checked against (and defaulted from) its service's transport.
fn target_for(
    problems: &mut Problems,
    transport: &Transport,
    input: Option<TargetInput>,
) -> Option<RuleTarget> {
    let target = match (transport, input) {
        (Transport::Rest(_), None) => RuleTarget::Rest {
            method: HttpMethod::Post,
            path: "/".into(),
        },
        (Transport::Rest(_), Some(TargetInput::Rest { method, path })) => {
            let path = path.unwrap_or_else(|| "/".into());
            check_text(problems, "target.path", &path, 1, 2048);
            if let Some(refusal) = mih_shared::urlpath::refusal(&path) {
                problems.add("target.path", refusal);
            }
            let method = match method.as_deref().map(str::to_ascii_uppercase).as_deref() {
                None | Some("POST") => HttpMethod::Post,
                Some("GET") => HttpMethod::Get,
                Some("PUT") => HttpMethod::Put,
                Some("PATCH") => HttpMethod::Patch,
                Some("DELETE") => HttpMethod::Delete,
                Some(other) => {
                    problems.add(
                        "target.method",
                        format!("must be GET, POST, PUT, PATCH or DELETE, not `{other}`"),
                    );
                    HttpMethod::Post
                }
            };
            RuleTarget::Rest { method, path }
        }
        (Transport::Amqp(_), None) => RuleTarget::Amqp {
            routing_key: None,
            exchange: None,
        },
        (
            Transport::Amqp(service),
            Some(TargetInput::Amqp {
                routing_key,
                exchange,
            }),
        ) => {
            if let Some(key) = &routing_key {
                check_text(problems, "target.routing_key", key, 1, 1024);
            }
            if let Some(exchange) = &exchange {
                problems.check(
                    exchange.len() <= 255,
                    "target.exchange",
                    "must be at most 255 bytes",
                );
            }
            problems.check(
                routing_key.is_some()
                    || !service.routing_key.is_empty()
                    || service.queue_declare.is_some(),
                "target.routing_key",
                "is required: the service has no default routing key or queue",
            );
            RuleTarget::Amqp {
                routing_key,
                exchange,
            }
        }
        (Transport::Soap(_), Some(TargetInput::Soap { operation })) => {
            check_text(problems, "target.operation", &operation, 1, 255);
            problems.check(
                operation
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.'),
                "target.operation",
                "must be an XML element name (letters, digits, `_`, `-`, `.`)",
            );
            RuleTarget::Soap { operation }
        }
        (Transport::Soap(_), None) => {
            problems.add(
                "target",
                "is required for a SOAP service: {\"kind\": \"soap\", \"operation\": …}",
            );
            return None;
        }
        (transport, Some(other)) => {
            let given = match other {
                TargetInput::Rest { .. } => "rest",
                TargetInput::Amqp { .. } => "amqp",
                TargetInput::Soap { .. } => "soap",
            };
            problems.add(
                "target.kind",
                format!("is `{given}` but the service is `{}`", transport.kind()),
            );
            return None;
        }
    };
    Some(target)
}
