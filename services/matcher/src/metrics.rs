//! The matcher's metrics, named and described in one place; the rule engine's own
//! (`mih_rules::metrics`: jobs published, render failures, condition errors) are described
//! with them.

use metrics::{Unit, describe_counter, describe_histogram};

pub(crate) const EVENTS: &str = "mih_matcher_events_total";
pub(crate) const RETRIES: &str = "mih_matcher_retries_total";
pub(crate) const PROCESS_SECONDS: &str = "mih_matcher_event_duration_seconds";

pub(crate) fn describe() {
    describe_counter!(
        EVENTS,
        Unit::Count,
        "Events handled, by outcome: matched, unmatched, duplicate (another event with the same dedup key), unreadable"
    );
    mih_rules::metrics::describe();
    describe_counter!(
        RETRIES,
        Unit::Count,
        "Events handed back to JetStream to retry (NATS unavailable)"
    );
    describe_histogram!(
        PROCESS_SECONDS,
        Unit::Seconds,
        "Time from receiving an event to acknowledging it"
    );
}
