//! One rule compiled (its condition and templates), and the decision it makes about one event.
//!
//! The decision runs the checks in a fixed order (enabled, source, event, service, condition)
//! and stops at the first that refuses, saying which as a typed [`Rejection`]; a rule that
//! takes the event renders its request.

use std::collections::BTreeMap;
use std::sync::Arc;

use cel::Context as CelContext;
use chrono::Utc;
use handlebars::Handlebars;

use mih_shared::live::{LiveRule, LiveService, RuleTarget};
use mih_shared::messages::{Job, JobId, Origin, Request, Version};
use mih_shared::names::ServiceSlug;

use crate::budget::{self, Budget};
use crate::condition::{Condition, Undecided};
use crate::decision::{Match, Rejection};
use crate::prepared::Prepared;
use crate::request::{BODY, HEADER, ORDERING_KEY, PATH, ROUTING_KEY};
use crate::template::{self, Mode};

/// A rule with its condition and templates compiled.
#[derive(Debug)]
pub struct CompiledRule {
    pub live: Arc<LiveRule>,
    condition: Option<Condition>,
    pub(crate) templates: Handlebars<'static>,
    pub(crate) header_names: Vec<String>,
    pub(crate) body_mode: Mode,
    /// Parts that did not compile: (field, message). A rule with problems never renders.
    pub(crate) problems: Vec<(String, String)>,
    /// Most bytes its request may render to (`matcher.max_request_bytes`).
    pub(crate) max_request_bytes: usize,
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

    /// Decides this rule for a prepared event: the job it produces (or why its request could
    /// not be rendered), or why it does not take the event. The whole decision (condition and
    /// templates) spends from one [`Budget::for_rule`].
    pub(crate) fn decide<'a>(
        &'a self,
        event: &'a Prepared<'_>,
        vars: &CelContext<'_, '_>,
        services: &'a BTreeMap<ServiceSlug, Arc<LiveService>>,
        origin: Origin,
    ) -> Result<Match, Rejection<'a>> {
        budget::within(Budget::for_rule(), || {
            self.decide_within_budget(event, vars, services, origin)
        })
    }

    fn decide_within_budget<'a>(
        &'a self,
        event: &'a Prepared<'_>,
        vars: &CelContext<'_, '_>,
        services: &'a BTreeMap<ServiceSlug, Arc<LiveService>>,
        origin: Origin,
    ) -> Result<Match, Rejection<'a>> {
        let rule = &*self.live;
        if !rule.enabled {
            return Err(Rejection::Disabled);
        }
        if !(rule.sources.is_empty() || rule.sources.contains(&event.event.source)) {
            return Err(Rejection::SourceMismatch {
                source: &event.event.source,
                sources: &rule.sources,
            });
        }
        if !rule.events.iter().any(|p| p.matches(&event.name)) {
            return Err(Rejection::EventMismatch { name: &event.name });
        }
        let service = self.service(services)?;
        self.check_condition(vars)?;
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
            hold_key: ordering_key.is_some() && !rule.ordering_on_dead_letter.is_skip(),
            ordering_key,
            source: Some(event.event.source.clone()),
            // The name as parsed (ingest stores it in this form): no second look into the event.
            eventname: Some(event.name.as_str().to_owned()),
        };
        Ok(match self.render(event, service) {
            Ok((request, ordering_key)) => Match::Job(job(request, ordering_key)),
            Err(reason) => Match::RenderFailed {
                job: job(self.unrendered(service), None),
                reason,
            },
        })
    }

    /// The rule's service, when it exists, is enabled and speaks the rule target's transport.
    fn service<'a>(
        &'a self,
        services: &'a BTreeMap<ServiceSlug, Arc<LiveService>>,
    ) -> Result<&'a LiveService, Rejection<'a>> {
        let rule = &*self.live;
        let service = &rule.service;
        match services.get(service) {
            None => Err(Rejection::ServiceMissing { service }),
            Some(s) if !s.enabled => Err(Rejection::ServiceDisabled { service }),
            Some(s) if s.transport.kind() != rule.target.kind() => {
                Err(Rejection::TransportMismatch {
                    service,
                    transport: s.transport.kind(),
                    target: rule.target.kind(),
                })
            }
            Some(s) => Ok(s),
        }
    }

    /// Whether the condition holds (a rule without one takes every event).
    fn check_condition(&self, vars: &CelContext<'_, '_>) -> Result<(), Rejection<'_>> {
        let Some(condition) = &self.condition else {
            return match self.problem("condition") {
                Some(problem) => Err(Rejection::ConditionBroken { problem }),
                None => Ok(()),
            };
        };
        match condition.evaluate(vars) {
            Ok(true) => Ok(()),
            Ok(false) => Err(Rejection::ConditionFalse),
            Err(undecided) => {
                metrics::counter!(crate::metrics::CONDITION_ERRORS, "reason" => undecided.reason())
                    .increment(1);
                Err(match undecided {
                    Undecided::Error(error) => Rejection::ConditionError(error),
                    Undecided::Budget(exhausted) => Rejection::OutOfBudget(exhausted),
                })
            }
        }
    }

    /// What is wrong with one field of the rule, if it did not compile.
    fn problem(&self, field: &str) -> Option<&str> {
        self.problems
            .iter()
            .find(|(name, _)| name == field)
            .map(|(_, problem)| problem.as_str())
    }

    /// Whether the rule has a condition that compiled (the explanation of a match says so).
    pub(crate) fn has_condition(&self) -> bool {
        self.condition.is_some()
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
