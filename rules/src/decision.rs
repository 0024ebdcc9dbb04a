//! What deciding one rule for one event comes to: what the rule produced, or why it did not take
//! the event. Rejections are typed and borrow what explains them, so the matcher's hot path
//! builds no text; only an explanation (preview, replay) turns one into words.

use std::fmt;

use mih_shared::messages::Job;
use mih_shared::moodle::EventName;
use mih_shared::names::{ServiceSlug, SourceId};

use crate::budget::Exhausted;

/// What a matching rule produced.
#[derive(Debug, Clone)]
pub enum Match {
    /// A job to publish.
    Job(Job),
    /// The rule matched but its request could not be rendered: a permanent failure of this
    /// job. `job` carries the unrendered target, for the dead letter.
    RenderFailed { job: Job, reason: String },
}

/// Why a rule did not take an event, in the order the checks run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection<'a> {
    /// The rule is switched off.
    Disabled,
    /// The event came from a source the rule does not take.
    SourceMismatch {
        source: &'a SourceId,
        sources: &'a [SourceId],
    },
    /// The event's name matches none of the rule's patterns.
    EventMismatch { name: &'a EventName },
    /// The rule's service is not configured.
    ServiceMissing { service: &'a ServiceSlug },
    /// The rule's service is switched off.
    ServiceDisabled { service: &'a ServiceSlug },
    /// The service's transport is not the one the rule's target is written for.
    TransportMismatch {
        service: &'a ServiceSlug,
        transport: &'static str,
        target: &'static str,
    },
    /// The condition is false for this event.
    ConditionFalse,
    /// The condition could not be decided for this event (a missing field, a type mismatch):
    /// CEL's message.
    ConditionError(String),
    /// The condition ran out of the rule's evaluation budget on this event.
    OutOfBudget(Exhausted),
    /// The condition does not compile; such a rule never matches.
    ConditionBroken { problem: &'a str },
}

/// The checks of a decision, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Enabled,
    Source,
    Event,
    Service,
    Condition,
    /// Not a check that refuses: a rule that took the event matched, rendered or not.
    Render,
}

impl Step {
    /// Every step, in order.
    pub const ALL: [Step; 6] = [
        Step::Enabled,
        Step::Source,
        Step::Event,
        Step::Service,
        Step::Condition,
        Step::Render,
    ];

    /// The step's name in an explanation.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Enabled => "enabled",
            Step::Source => "source",
            Step::Event => "event",
            Step::Service => "service",
            Step::Condition => "condition",
            Step::Render => "render",
        }
    }
}

impl Rejection<'_> {
    /// The check that refused the event.
    pub fn step(&self) -> Step {
        match self {
            Rejection::Disabled => Step::Enabled,
            Rejection::SourceMismatch { .. } => Step::Source,
            Rejection::EventMismatch { .. } => Step::Event,
            Rejection::ServiceMissing { .. }
            | Rejection::ServiceDisabled { .. }
            | Rejection::TransportMismatch { .. } => Step::Service,
            Rejection::ConditionFalse
            | Rejection::ConditionError(_)
            | Rejection::OutOfBudget(_)
            | Rejection::ConditionBroken { .. } => Step::Condition,
        }
    }
}

/// The explanation's wording; preview answers and replay conflicts show it as is.
impl fmt::Display for Rejection<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::Disabled => f.write_str("the rule is disabled"),
            Rejection::SourceMismatch { source, sources } => write!(
                f,
                "source `{source}` is not one of {:?}",
                sources.iter().map(|s| s.as_str()).collect::<Vec<_>>()
            ),
            Rejection::EventMismatch { name } => {
                write!(f, "`{name}` matches none of the rule's patterns")
            }
            Rejection::ServiceMissing { service } => {
                write!(f, "service `{service}` does not exist")
            }
            Rejection::ServiceDisabled { service } => write!(f, "service `{service}` is disabled"),
            Rejection::TransportMismatch {
                service,
                transport,
                target,
            } => write!(
                f,
                "service `{service}` is {transport} but the rule targets {target}"
            ),
            Rejection::ConditionFalse => f.write_str("the condition is false"),
            Rejection::ConditionError(error) => {
                write!(f, "the condition cannot be decided for this event: {error}")
            }
            Rejection::OutOfBudget(exhausted) => {
                write!(f, "the condition {exhausted} for this event")
            }
            Rejection::ConditionBroken { problem } => {
                write!(f, "the condition does not compile: {problem}")
            }
        }
    }
}
