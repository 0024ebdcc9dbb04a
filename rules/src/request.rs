//! Rendering the request a rule sends: its templates (body, path or routing key, headers,
//! ordering key) against the event, within one size allowance; and the unrendered target a
//! render failure's dead letter carries.

use std::cell::{Cell, OnceCell};
use std::sync::LazyLock;

use handlebars::Context as HbContext;
use handlebars::template::TemplateElement;
use serde_json::{Map, Value};

use mih_shared::live::{LiveService, RuleTarget, Transport};
use mih_shared::messages::{AmqpRequest, Header, HttpRequest, Request, SoapRequest};

use crate::prepared::Prepared;
use crate::rule::CompiledRule;
use crate::template::{self, Mode, RenderFailure};

// The names a rule's templates are registered under.
pub(crate) const BODY: &str = "body";
pub(crate) const PATH: &str = "path";
pub(crate) const ROUTING_KEY: &str = "routing_key";
pub(crate) const ORDERING_KEY: &str = "ordering_key";
pub(crate) const HEADER: &str = "header:";

/// What a template of fixed text is rendered against: it reads nothing.
static NO_CONTEXT: LazyLock<HbContext> = LazyLock::new(HbContext::null);

impl CompiledRule {
    /// Whether the template registered as `name` is text alone, with no expression to look up.
    fn is_fixed_text(&self, name: &str) -> bool {
        self.templates.get_template(name).is_some_and(|template| {
            template
                .elements
                .iter()
                .all(|element| matches!(element, TemplateElement::RawString(_)))
        })
    }

    /// Renders the request this rule sends to `service` for the event.
    pub(crate) fn render(
        &self,
        event: &Prepared<'_>,
        service: &LiveService,
    ) -> Result<(Request, Option<String>), String> {
        if let Some((field, problem)) = self.problems.first() {
            return Err(format!("{field} does not compile: {problem}"));
        }
        let rule = &self.live;
        // The context is a copy of the event's fields; made once, and only for a template that
        // reads it (a fixed path such as `/enrolments` does not).
        let context = OnceCell::new();
        let context_of = |name: &str| -> &HbContext {
            if self.is_fixed_text(name) {
                return &NO_CONTEXT;
            }
            context.get_or_init(|| {
                let mut fields = event.fields().clone();
                fields.insert(
                    "rule".into(),
                    serde_json::json!({"id": rule.id, "name": rule.name}),
                );
                HbContext::from(Value::Object(fields))
            })
        };
        // Body, headers, path and ordering key share one allowance.
        let room = Cell::new(self.max_request_bytes);
        let too_large = || {
            format!(
                "the request would be larger than matcher.max_request_bytes ({} bytes)",
                self.max_request_bytes
            )
        };
        let render = |name: &str| {
            let mut left = room.get();
            let rendered =
                template::render_within(&self.templates, name, context_of(name), &mut left);
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
                    _ => event.event.data.json().into_owned(),
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
    pub(crate) fn unrendered(&self, service: &LiveService) -> Request {
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
