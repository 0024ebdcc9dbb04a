//! The metrics the rule engine emits, named and described in one place. They keep the
//! matcher's names (`mih_matcher_*`): dashboards and alerts know them by those, and the matcher
//! is where they are emitted in production (api's backfill adds its jobs to the same series).

use metrics::{Unit, describe_counter};

pub const JOBS: &str = "mih_matcher_jobs_published_total";
pub const RENDER_FAILURES: &str = "mih_matcher_render_failures_total";
pub const CONDITION_ERRORS: &str = "mih_matcher_condition_errors_total";

pub fn describe() {
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
}
