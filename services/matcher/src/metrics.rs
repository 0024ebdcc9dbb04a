//! The matcher's metrics, named and described in one place; the rule engine's own
//! (`mih_rules::metrics`: jobs published, render failures, condition errors) are described
//! with them.

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

pub(crate) const EVENTS: &str = "mih_matcher_events_total";
pub(crate) const RETRIES: &str = "mih_matcher_retries_total";
pub(crate) const PROCESS_SECONDS: &str = "mih_matcher_event_duration_seconds";
pub(crate) const ORDER_GATE_WAITS: &str = "mih_matcher_order_gate_waits_total";
pub(crate) const ORDER_GATE_TIMEOUTS: &str = "mih_matcher_order_gate_timeouts_total";
pub(crate) const DEDUP_CLAIMS: &str = "mih_matcher_dedup_claims";
pub(crate) const DEDUP_OLDEST_SECONDS: &str = "mih_matcher_dedup_oldest_claim_seconds";
pub(crate) const DEDUP_SHORTENED: &str = "mih_matcher_dedup_horizon_shortened";

pub(crate) fn describe() {
    describe_counter!(
        EVENTS,
        Unit::Count,
        "Events handled, by outcome: matched, unmatched, duplicate (another event with the same dedup key), unreadable"
    );
    describe_counter!(
        ORDER_GATE_WAITS,
        Unit::Count,
        "Events with keyed jobs handed back because an earlier event of their partition was not done within 5 s"
    );
    describe_counter!(
        ORDER_GATE_TIMEOUTS,
        Unit::Count,
        "Events whose keyed jobs were published out of turn after waiting in vain through six deliveries"
    );
    mih_rules::metrics::describe();
    describe_counter!(
        RETRIES,
        Unit::Count,
        "Events handed back to JetStream to retry (NATS unavailable)"
    );
    describe_gauge!(
        DEDUP_CLAIMS,
        Unit::Count,
        "Dedup claims held in the bucket (at most matcher.dedup_max_claims)"
    );
    describe_gauge!(
        DEDUP_OLDEST_SECONDS,
        Unit::Seconds,
        "Age of the oldest dedup claim: below matcher.dedup_horizon while the bucket is full, the horizon that really holds"
    );
    describe_gauge!(
        DEDUP_SHORTENED,
        Unit::Count,
        "1 while the full dedup bucket drops claims younger than matcher.dedup_horizon, else 0"
    );
    describe_histogram!(
        PROCESS_SECONDS,
        Unit::Seconds,
        "Time from receiving an event to acknowledging it"
    );
}
