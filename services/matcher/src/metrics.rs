//! The matcher's metrics, named and described in one place.

use metrics::{Unit, describe_counter, describe_histogram};

pub const EVENTS: &str = "mih_matcher_events_total";
pub const JOBS: &str = "mih_matcher_jobs_published_total";
pub const RENDER_FAILURES: &str = "mih_matcher_render_failures_total";
pub const CONDITION_ERRORS: &str = "mih_matcher_condition_errors_total";
pub const RETRIES: &str = "mih_matcher_retries_total";
pub const PROCESS_SECONDS: &str = "mih_matcher_event_duration_seconds";

pub fn describe() {
    describe_counter!(
        EVENTS,
        Unit::Count,
        "Events handled, by outcome: matched, unmatched, duplicate (another event with the same dedup key), unreadable"
    );
    describe_counter!(JOBS, Unit::Count, "Jobs published to JOBS, by service");
    describe_counter!(
        RENDER_FAILURES,
        Unit::Count,
        "Matches whose request could not be rendered (dead-lettered), by service"
    );
    describe_counter!(
        CONDITION_ERRORS,
        Unit::Count,
        "Conditions that could not be decided for an event (the rule did not match), by reason: error (a missing field, a type mismatch), budget (the rule's evaluation budget ran out)"
    );
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
