//! Explaining a rule's decision about one event (preview, replay): every check in order with
//! what it found, and the request the rule renders. The only place a decision becomes text.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use mih_shared::live::LiveService;
use mih_shared::messages::{Event, Origin, Request};
use mih_shared::names::ServiceSlug;

use crate::condition::{self, variables};
use crate::decision::{Match, Step};
use crate::prepared::Prepared;
use crate::rule::CompiledRule;

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

impl Explanation {
    fn refused(checks: Vec<Check>) -> Self {
        Self {
            matched: false,
            checks,
            request: None,
            ordering_key: None,
            render_error: None,
        }
    }
}

impl CompiledRule {
    /// Every check for one event, and the request it renders (preview).
    pub fn explain(
        &self,
        event: &Event,
        services: &BTreeMap<ServiceSlug, Arc<LiveService>>,
    ) -> Explanation {
        let prepared = match Prepared::new(event) {
            Ok(prepared) => prepared,
            Err(unusable) => {
                return Explanation::refused(vec![Check {
                    step: Step::Event.as_str(),
                    passed: false,
                    detail: unusable.to_string(),
                }]);
            }
        };
        let root = condition::root();
        let vars = variables(&root, prepared.fields());
        let decision = self.decide(&prepared, &vars, services, Origin::Rule);
        // The checks before the one that decided all passed.
        let decided_at = match &decision {
            Ok(_) => Step::Render,
            Err(rejection) => rejection.step(),
        };
        let mut checks: Vec<Check> = Step::ALL
            .into_iter()
            .take_while(|step| *step != decided_at)
            .map(|step| Check {
                step: step.as_str(),
                passed: true,
                detail: self.passed(step, &prepared),
            })
            .collect();
        let last = |passed: bool, detail: String| Check {
            step: decided_at.as_str(),
            passed,
            detail,
        };
        match decision {
            Ok(Match::Job(job)) => {
                checks.push(last(true, self.passed(Step::Render, &prepared)));
                Explanation {
                    matched: true,
                    checks,
                    request: Some(job.request),
                    ordering_key: job.ordering_key,
                    render_error: None,
                }
            }
            Ok(Match::RenderFailed { reason, .. }) => {
                checks.push(last(false, reason.clone()));
                Explanation {
                    matched: true,
                    checks,
                    request: None,
                    ordering_key: None,
                    render_error: Some(reason),
                }
            }
            Err(rejection) => {
                checks.push(last(false, rejection.to_string()));
                Explanation::refused(checks)
            }
        }
    }

    /// What a check that passed found.
    fn passed(&self, step: Step, event: &Prepared<'_>) -> String {
        let rule = &self.live;
        match step {
            Step::Enabled => "the rule is enabled".to_owned(),
            Step::Source if rule.sources.is_empty() => "the rule takes every source".to_owned(),
            Step::Source => format!(
                "source `{}` is one of the rule's sources",
                event.event.source
            ),
            // `decide` passed this step with the same test, so a pattern is found; the
            // fallback only keeps a wording should the two ever part.
            Step::Event => match rule.events.iter().find(|p| p.matches(&event.name)) {
                Some(pattern) => format!("`{}` matches pattern `{pattern}`", event.name),
                None => format!("`{}` matches one of the rule's patterns", event.name),
            },
            Step::Service => format!("service `{}` is enabled", rule.service),
            Step::Condition if self.has_condition() => "the condition holds".to_owned(),
            Step::Condition => "the rule has no condition".to_owned(),
            Step::Render => "the request rendered".to_owned(),
        }
    }
}
