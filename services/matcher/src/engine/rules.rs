//! Compiled rules, indexed by event name, and what one rule does with one event.
//!
//! A rule set is built from the live configuration whenever it changes; the hot path only
//! looks at the rules whose patterns can match the event's name (exact, component, `*`), so
//! a thousand rules cost little more than ten.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use cel::Context as CelContext;
use chrono::Utc;
use handlebars::{Context as HbContext, Handlebars};
use serde::Serialize;
use serde_json::{Map, Value};

use mih_shared::live::{LiveConfig, LiveRule, LiveService, RuleTarget, Transport};
use mih_shared::messages::{
    AmqpRequest, Event, Header, HttpRequest, Job, JobId, Origin, Request, SoapRequest, Version,
};
use mih_shared::moodle::{EventName, EventPattern};
use mih_shared::names::ServiceSlug;

use super::budget::{self, Budget};
use super::condition::{self, Condition, Undecided, variables};
use super::template::{self, Mode, RenderFailure};

/// Top-level fields Moodle may send as numeric strings; conditions and templates see numbers.
const NUMERIC_FIELDS: &[&str] = &[
    "objectid",
    "contextid",
    "contextinstanceid",
    "userid",
    "courseid",
    "relateduserid",
    "edulevel",
    "contextlevel",
    "anonymous",
    "timecreated",
];

const BODY: &str = "body";
const PATH: &str = "path";
const ROUTING_KEY: &str = "routing_key";
const ORDERING_KEY: &str = "ordering_key";
const HEADER: &str = "header:";

/// What a matching rule produced.
#[derive(Debug, Clone)]
pub enum Match {
    /// A job to publish.
    Job(Job),
    /// The rule matched but its request could not be rendered: a permanent failure of this
    /// job. `job` carries the unrendered target, for the dead letter.
    RenderFailed { job: Job, reason: String },
}

/// One step of deciding whether a rule matches, for preview.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// enabled, source, event, service, condition, render.
    pub step: &'static str,
    pub passed: bool,
    pub detail: String,
}

/// Why a rule did or did not match an event, and what it rendered.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub matched: bool,
    pub checks: Vec<Check>,
    /// The request, when the rule matched and rendered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<Request>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ordering_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub render_error: Option<String>,
}

/// A rule with its condition and templates compiled.
#[derive(Debug)]
pub struct CompiledRule {
    pub live: Arc<LiveRule>,
    condition: Option<Condition>,
    templates: Handlebars<'static>,
    header_names: Vec<String>,
    body_mode: Mode,
    /// Parts that did not compile: (field, message). A rule with problems never renders.
    problems: Vec<(String, String)>,
    /// Most bytes its request may render to (`matcher.max_request_bytes`).
    max_request_bytes: usize,
    /// Whether deciding it may take long on a large event (see [`CompiledRule::may_be_costly`]).
    costly: bool,
}

/// `matcher.max_request_bytes` unless configured otherwise.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 512 * 1024;

impl CompiledRule {
    /// Caps what this rule may render for one event (`matcher.max_request_bytes`).
    pub fn limit_request(mut self, max_request_bytes: usize) -> Self {
        self.max_request_bytes = max_request_bytes;
        self
    }

    pub fn compile(live: Arc<LiveRule>) -> Self {
        let mut problems = Vec::new();
        let condition =
            live.condition
                .as_deref()
                .and_then(|source| match Condition::compile(source) {
                    Ok(condition) => Some(condition),
                    Err(e) => {
                        problems.push(("condition".to_owned(), e.to_string()));
                        None
                    }
                });
        let body_mode = match live.target {
            RuleTarget::Soap { .. } => Mode::Xml,
            _ => Mode::for_content_type(&live.content_type),
        };
        let mut templates = template::registry();
        let mut add = |name: String, field: String, source: &str, mode: Mode| {
            if let Err(e) = template::register(&mut templates, &name, source, mode) {
                problems.push((field, e.to_string()));
            }
        };
        if let Some(body) = &live.body {
            add(BODY.to_owned(), "body".to_owned(), body, body_mode);
        }
        match &live.target {
            RuleTarget::Rest { path, .. } => {
                add(PATH.to_owned(), "target.path".to_owned(), path, Mode::Path)
            }
            RuleTarget::Amqp {
                routing_key: Some(key),
                ..
            } => add(
                ROUTING_KEY.to_owned(),
                "target.routing_key".to_owned(),
                key,
                Mode::Text,
            ),
            RuleTarget::Amqp {
                routing_key: None, ..
            }
            | RuleTarget::Soap { .. } => {}
        }
        for (name, source) in &live.headers {
            add(
                format!("{HEADER}{name}"),
                format!("headers.{name}"),
                source,
                Mode::Text,
            );
        }
        if let Some(key) = &live.ordering_key {
            add(
                ORDERING_KEY.to_owned(),
                "ordering_key".to_owned(),
                key,
                Mode::Text,
            );
        }
        let costly = condition.as_ref().is_some_and(Condition::may_be_costly)
            || live
                .body
                .iter()
                .chain(live.headers.values())
                .chain(&live.ordering_key)
                .chain(match &live.target {
                    RuleTarget::Rest { path, .. } => Some(path),
                    RuleTarget::Amqp { routing_key, .. } => routing_key.as_ref(),
                    RuleTarget::Soap { .. } => None,
                })
                .any(|source| has_block(source));
        Self {
            costly,
            header_names: live.headers.keys().cloned().collect(),
            live,
            condition,
            templates,
            body_mode,
            problems,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
        }
    }

    /// The parts of the rule that do not compile, by field: the API refuses such rules.
    pub fn problems(&self) -> &[(String, String)] {
        &self.problems
    }

    /// Whether deciding it may take long on a large event: its condition loops or builds
    /// strings and lists, or a template has a block (`{{#each}}` loops). Otherwise it does a
    /// fixed number of operations, each at most linear in the event's size.
    pub fn may_be_costly(&self) -> bool {
        self.costly
    }

    /// Decides this rule for a prepared event; with `explain`, records every check. The whole
    /// decision (condition and templates) spends from one [`Budget::for_rule`].
    fn decide(
        &self,
        event: &Prepared<'_>,
        vars: &CelContext<'_, '_>,
        services: &BTreeMap<ServiceSlug, Arc<LiveService>>,
        origin: Origin,
        explain: bool,
    ) -> (Option<Match>, Vec<Check>) {
        budget::within(Budget::for_rule(), || {
            self.decide_within_budget(event, vars, services, origin, explain)
        })
    }

    fn decide_within_budget(
        &self,
        event: &Prepared<'_>,
        vars: &CelContext<'_, '_>,
        services: &BTreeMap<ServiceSlug, Arc<LiveService>>,
        origin: Origin,
        explain: bool,
    ) -> (Option<Match>, Vec<Check>) {
        let mut checks = Vec::new();
        let mut check = |step: &'static str, passed: bool, detail: String| {
            if explain {
                checks.push(Check {
                    step,
                    passed,
                    detail,
                });
            }
            passed
        };
        let rule = &self.live;
        if !check(
            "enabled",
            rule.enabled,
            if rule.enabled {
                "the rule is enabled"
            } else {
                "the rule is disabled"
            }
            .into(),
        ) {
            return (None, checks);
        }
        let source_ok = rule.sources.is_empty() || rule.sources.contains(&event.event.source);
        let source_detail = if rule.sources.is_empty() {
            "the rule takes every source".to_owned()
        } else if source_ok {
            format!(
                "source `{}` is one of the rule's sources",
                event.event.source
            )
        } else {
            format!(
                "source `{}` is not one of {:?}",
                event.event.source,
                rule.sources.iter().map(|s| s.as_str()).collect::<Vec<_>>()
            )
        };
        if !check("source", source_ok, source_detail) {
            return (None, checks);
        }
        let pattern = rule.events.iter().find(|p| p.matches(&event.name));
        let event_detail = match pattern {
            Some(p) => format!("`{}` matches pattern `{p}`", event.name),
            None => format!("`{}` matches none of the rule's patterns", event.name),
        };
        if !check("event", pattern.is_some(), event_detail) {
            return (None, checks);
        }
        let service = services.get(&rule.service);
        let service_detail = match service {
            None => format!("service `{}` does not exist", rule.service),
            Some(s) if !s.enabled => format!("service `{}` is disabled", rule.service),
            Some(s) if s.transport.kind() != rule.target.kind() => {
                format!(
                    "service `{}` is {} but the rule targets {}",
                    rule.service,
                    s.transport.kind(),
                    rule.target.kind()
                )
            }
            Some(_) => format!("service `{}` is enabled", rule.service),
        };
        let Some(service) =
            service.filter(|s| s.enabled && s.transport.kind() == rule.target.kind())
        else {
            check("service", false, service_detail);
            return (None, checks);
        };
        check("service", true, service_detail);
        if let Some(condition) = &self.condition {
            match condition.evaluate(vars) {
                Ok(true) => check("condition", true, "the condition holds".into()),
                Ok(false) => {
                    return (None, {
                        check("condition", false, "the condition is false".into());
                        checks
                    });
                }
                Err(undecided) => {
                    let reason = undecided.reason();
                    metrics::counter!(crate::metrics::CONDITION_ERRORS, "reason" => reason)
                        .increment(1);
                    let detail = match &undecided {
                        Undecided::Error(error) => {
                            format!("the condition cannot be decided for this event: {error}")
                        }
                        Undecided::Budget(_) => undecided.to_string(),
                    };
                    check("condition", false, detail);
                    return (None, checks);
                }
            };
        } else if let Some((_, problem)) =
            self.problems.iter().find(|(field, _)| field == "condition")
        {
            check(
                "condition",
                false,
                format!("the condition does not compile: {problem}"),
            );
            return (None, checks);
        } else {
            check("condition", true, "the rule has no condition".into());
        }
        let job = |request: Request, ordering_key: Option<String>| Job {
            v: Version,
            id: JobId::for_rule(event.event.id, rule.id),
            event_id: Some(event.event.id),
            rule_id: Some(rule.id),
            service: rule.service.clone(),
            request,
            origin,
            created_at: Utc::now(),
            replay_of: None,
            ordering_key,
            source: Some(event.event.source.clone()),
            eventname: event
                .event
                .data
                .get("eventname")
                .and_then(|n| n.as_str())
                .map(str::to_owned),
        };
        match self.render(event, service) {
            Ok((request, ordering_key)) => {
                check("render", true, "the request rendered".into());
                (Some(Match::Job(job(request, ordering_key))), checks)
            }
            Err(reason) => {
                check("render", false, reason.clone());
                let unrendered = self.unrendered(service);
                (
                    Some(Match::RenderFailed {
                        job: job(unrendered, None),
                        reason,
                    }),
                    checks,
                )
            }
        }
    }

    /// Renders the request this rule sends to `service` for the event.
    fn render(
        &self,
        event: &Prepared<'_>,
        service: &LiveService,
    ) -> Result<(Request, Option<String>), String> {
        if let Some((field, problem)) = self.problems.first() {
            return Err(format!("{field} does not compile: {problem}"));
        }
        let rule = &self.live;
        let mut context_value = event.fields.clone();
        context_value.insert(
            "rule".into(),
            serde_json::json!({"id": rule.id, "name": rule.name}),
        );
        let context = HbContext::wraps(Value::Object(context_value)).map_err(|e| e.to_string())?;
        // Body, headers, path and ordering key share one allowance.
        let room = std::cell::Cell::new(self.max_request_bytes);
        let too_large = || {
            format!(
                "the request would be larger than matcher.max_request_bytes ({} bytes)",
                self.max_request_bytes
            )
        };
        let render = |name: &str| {
            let mut left = room.get();
            let rendered = template::render_within(&self.templates, name, &context, &mut left);
            room.set(left);
            rendered.map_err(|failure| match failure {
                RenderFailure::TooLarge => too_large(),
                RenderFailure::Template(reason) => reason,
            })
        };

        let body = match &rule.body {
            Some(_) => {
                let body = render(BODY).map_err(|e| format!("body: {e}"))?;
                if self.body_mode == Mode::Json {
                    serde_json::from_str::<serde::de::IgnoredAny>(&body)
                        .map_err(|e| format!("the rendered body is not valid JSON: {e}"))?;
                }
                body
            }
            None => {
                let body = match &rule.target {
                    RuleTarget::Soap { operation } => {
                        default_soap_body(operation, &event.event.data)
                    }
                    // The event as Moodle gave it.
                    _ => serde_json::to_string(&event.event.data).map_err(|e| e.to_string())?,
                };
                room.set(room.get().checked_sub(body.len()).ok_or_else(too_large)?);
                body
            }
        };
        let mut headers = Vec::with_capacity(self.header_names.len());
        for name in &self.header_names {
            let value =
                render(&format!("{HEADER}{name}")).map_err(|e| format!("header {name}: {e}"))?;
            if http::HeaderValue::from_str(&value).is_err() {
                return Err(format!(
                    "header {name}: the rendered value contains characters a header cannot carry"
                ));
            }
            headers.push(Header {
                name: name.clone(),
                value,
            });
        }
        let ordering_key = match &rule.ordering_key {
            Some(_) => Some(render(ORDERING_KEY).map_err(|e| format!("ordering_key: {e}"))?),
            None => None,
        };
        let request = match &rule.target {
            RuleTarget::Rest { method, .. } => Request::Http(HttpRequest {
                method: *method,
                path: render(PATH).map_err(|e| format!("target.path: {e}"))?,
                query: Vec::new(),
                headers,
                body: Some(body),
                content_type: Some(rule.content_type.clone()),
            }),
            RuleTarget::Amqp {
                routing_key,
                exchange,
            } => Request::Amqp(AmqpRequest {
                exchange: exchange.clone(),
                routing_key: match routing_key {
                    Some(_) => {
                        render(ROUTING_KEY).map_err(|e| format!("target.routing_key: {e}"))?
                    }
                    None => default_routing_key(service),
                },
                headers,
                body,
                content_type: rule.content_type.clone(),
            }),
            RuleTarget::Soap { operation } => Request::Soap(SoapRequest {
                operation: operation.clone(),
                headers,
                body,
            }),
        };
        Ok((request, ordering_key))
    }

    /// The rule's target with templates as written: what a render-failure dead letter shows.
    fn unrendered(&self, service: &LiveService) -> Request {
        let rule = &self.live;
        let headers = rule
            .headers
            .iter()
            .map(|(name, value)| Header {
                name: name.clone(),
                value: value.clone(),
            })
            .collect();
        match &rule.target {
            RuleTarget::Rest { method, path } => Request::Http(HttpRequest {
                method: *method,
                path: path.clone(),
                query: Vec::new(),
                headers,
                body: rule.body.clone(),
                content_type: Some(rule.content_type.clone()),
            }),
            RuleTarget::Amqp {
                routing_key,
                exchange,
            } => Request::Amqp(AmqpRequest {
                exchange: exchange.clone(),
                routing_key: routing_key
                    .clone()
                    .unwrap_or_else(|| default_routing_key(service)),
                headers,
                body: rule.body.clone().unwrap_or_default(),
                content_type: rule.content_type.clone(),
            }),
            RuleTarget::Soap { operation } => Request::Soap(SoapRequest {
                operation: operation.clone(),
                headers,
                body: rule.body.clone().unwrap_or_default(),
            }),
        }
    }

    /// Every check for one event, and the request it renders (preview).
    pub fn explain(
        &self,
        event: &Event,
        services: &BTreeMap<ServiceSlug, Arc<LiveService>>,
    ) -> Explanation {
        let prepared = match Prepared::new(event) {
            Ok(prepared) => prepared,
            Err(reason) => {
                return Explanation {
                    matched: false,
                    checks: vec![Check {
                        step: "event",
                        passed: false,
                        detail: reason,
                    }],
                    request: None,
                    ordering_key: None,
                    render_error: None,
                };
            }
        };
        let root = condition::root();
        let vars = variables(&root, &prepared.fields);
        let (result, checks) = self.decide(&prepared, &vars, services, Origin::Rule, true);
        match result {
            Some(Match::Job(job)) => Explanation {
                matched: true,
                checks,
                request: Some(job.request),
                ordering_key: job.ordering_key,
                render_error: None,
            },
            Some(Match::RenderFailed { reason, .. }) => Explanation {
                matched: true,
                checks,
                request: None,
                ordering_key: None,
                render_error: Some(reason),
            },
            None => Explanation {
                matched: false,
                checks,
                request: None,
                ordering_key: None,
                render_error: None,
            },
        }
    }
}

/// Whether a template opens a block (`{{#each …}}`, `{{~#if …}}`).
fn has_block(source: &str) -> bool {
    source.split("{{").skip(1).any(|after| {
        after
            .trim_start_matches(['~', ' ', '\t', '\n'])
            .starts_with('#')
    })
}

/// The AMQP routing key of a rule without one: the service's, else its declared queue.
fn default_routing_key(service: &LiveService) -> String {
    match &service.transport {
        Transport::Amqp(amqp) if !amqp.routing_key.is_empty() => amqp.routing_key.clone(),
        Transport::Amqp(amqp) => amqp.queue_declare.clone().unwrap_or_default(),
        Transport::Rest(_) | Transport::Soap(_) => String::new(),
    }
}

/// A SOAP operation element carrying the event's fields, for rules without a body template.
fn default_soap_body(operation: &str, data: &Map<String, Value>) -> String {
    let mut body = format!("<{operation}>");
    for (name, value) in data {
        let valid_name = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.');
        if !valid_name {
            continue;
        }
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        };
        let escaped = text
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;");
        body.push_str(&format!("<{name}>{escaped}</{name}>"));
    }
    body.push_str(&format!("</{operation}>"));
    body
}

/// An event ready for rules: its name parsed, its fields as conditions and templates see them.
struct Prepared<'e> {
    event: &'e Event,
    name: EventName,
    fields: Map<String, Value>,
}

impl<'e> Prepared<'e> {
    fn new(event: &'e Event) -> Result<Self, String> {
        let name = event
            .name()
            .map_err(|e| format!("the event's name is not usable: {e}"))?;
        Ok(Self {
            name,
            fields: template_context(event),
            event,
        })
    }
}

/// The variables of conditions and templates: the event's fields (numeric-string ids as
/// numbers) and `event` (id, source, received_at, dedup_key), which wins over a shim field of
/// that name.
pub fn template_context(event: &Event) -> Map<String, Value> {
    let mut fields = event.data.clone();
    for name in NUMERIC_FIELDS {
        if let Some(Value::String(text)) = fields.get(*name)
            && let Ok(number) = text.parse::<i64>()
        {
            fields.insert((*name).to_owned(), Value::from(number));
        }
    }
    fields.insert(
        "event".into(),
        serde_json::json!({
            "id": event.id,
            "source": event.source,
            "received_at": event.received_at,
            "dedup_key": event.dedup_key,
        }),
    );
    fields
}

/// Every rule of the live configuration, compiled and indexed.
pub struct RuleSet {
    root: CelContext<'static, 'static>,
    rules: Vec<CompiledRule>,
    by_name: HashMap<String, Vec<usize>>,
    by_component: HashMap<String, Vec<usize>>,
    any: Vec<usize>,
    services: BTreeMap<ServiceSlug, Arc<LiveService>>,
}

impl std::fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleSet")
            .field("rules", &self.rules.len())
            .finish()
    }
}

impl RuleSet {
    pub fn build(config: &LiveConfig) -> Self {
        let mut set = Self {
            root: condition::root(),
            rules: Vec::with_capacity(config.rules.len()),
            by_name: HashMap::new(),
            by_component: HashMap::new(),
            any: Vec::new(),
            services: config.services.clone(),
        };
        for live in config.rules.values() {
            let index = set.rules.len();
            let compiled = CompiledRule::compile(Arc::clone(live));
            for (field, problem) in compiled.problems() {
                tracing::warn!(rule = %live.id, field, problem, "rule does not compile; its matches are dead-lettered");
            }
            for pattern in &live.events {
                let slot = match pattern {
                    EventPattern::All => &mut set.any,
                    EventPattern::Component(component) => {
                        set.by_component.entry(component.clone()).or_default()
                    }
                    EventPattern::Exact(name) => {
                        set.by_name.entry(name.as_str().to_owned()).or_default()
                    }
                };
                slot.push(index);
            }
            set.rules.push(compiled);
        }
        set
    }

    /// Caps what each rule may render for one event (`matcher.max_request_bytes`).
    pub fn limit_requests(mut self, max_request_bytes: usize) -> Self {
        self.rules = self
            .rules
            .into_iter()
            .map(|rule| rule.limit_request(max_request_bytes))
            .collect();
        self
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn services(&self) -> &BTreeMap<ServiceSlug, Arc<LiveService>> {
        &self.services
    }

    pub fn rule(&self, id: &mih_shared::messages::RuleId) -> Option<&CompiledRule> {
        self.rules.iter().find(|r| &r.live.id == id)
    }

    /// Whether one of the rules the event may match may take long to decide (see
    /// [`CompiledRule::may_be_costly`]); cheap to ask, the event is not prepared.
    pub fn may_be_costly(&self, event: &Event) -> bool {
        let Ok(name) = event.name() else {
            // `matches` refuses it at once.
            return false;
        };
        self.by_name
            .get(name.as_str())
            .into_iter()
            .chain(self.by_component.get(name.component()))
            .flatten()
            .chain(&self.any)
            .any(|&i| self.rules[i].costly)
    }

    /// The jobs (or render failures) of every rule the event matches, in rule order.
    pub fn matches(&self, event: &Event, origin: Origin) -> Result<Vec<Match>, String> {
        let prepared = Prepared::new(event)?;
        let mut candidates: Vec<usize> = self
            .by_name
            .get(prepared.name.as_str())
            .into_iter()
            .chain(self.by_component.get(prepared.name.component()))
            .flatten()
            .chain(&self.any)
            .copied()
            .collect();
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        candidates.sort_unstable();
        candidates.dedup();
        let vars = variables(&self.root, &prepared.fields);
        Ok(candidates
            .into_iter()
            .filter_map(|i| {
                self.rules[i]
                    .decide(&prepared, &vars, &self.services, origin, false)
                    .0
            })
            .collect())
    }

    /// The outcome of one rule for an event (backfill): `None` when it does not match.
    pub fn match_one(
        &self,
        rule: &CompiledRule,
        event: &Event,
        origin: Origin,
    ) -> Result<Option<Match>, String> {
        let prepared = Prepared::new(event)?;
        let vars = variables(&self.root, &prepared.fields);
        Ok(rule
            .decide(&prepared, &vars, &self.services, origin, false)
            .0)
    }
}

#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;
