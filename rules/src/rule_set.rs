//! Every rule of the live configuration, compiled and indexed by event name.
//!
//! A rule set is built from the live configuration whenever it changes; the hot path only
//! looks at the rules whose patterns can match the event's name (exact, component, `*`), so
//! a thousand rules cost little more than ten.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use cel::Context as CelContext;

use mih_shared::live::{LiveConfig, LiveService};
use mih_shared::messages::{Event, Origin, RuleId};
use mih_shared::moodle::EventPattern;
use mih_shared::names::ServiceSlug;

use crate::condition::{self, variables};
use crate::decision::Match;
use crate::prepared::{Prepared, UnusableEvent};
use crate::rule::CompiledRule;

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

    pub fn rule(&self, id: &RuleId) -> Option<&CompiledRule> {
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
            .any(|&i| self.rules[i].may_be_costly())
    }

    /// The jobs (or render failures) of every rule the event matches, in rule order.
    pub fn matches(&self, event: &Event, origin: Origin) -> Result<Vec<Match>, UnusableEvent> {
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
        // Converting the event for CEL is a copy of it; a rule without a condition reads none.
        let vars = if candidates.iter().any(|&i| self.rules[i].has_condition()) {
            variables(&self.root, prepared.fields())
        } else {
            self.root.new_inner_scope()
        };
        Ok(candidates
            .into_iter()
            .filter_map(|i| {
                self.rules[i]
                    .decide(&prepared, &vars, &self.services, origin)
                    .ok()
            })
            .collect())
    }
}
