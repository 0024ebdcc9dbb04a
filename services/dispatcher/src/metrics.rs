//! The dispatcher's metrics, named and described in one place.

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

pub(crate) const ATTEMPTS: &str = "mih_dispatcher_attempts_total";
pub(crate) const ATTEMPT_SECONDS: &str = "mih_dispatcher_attempt_duration_seconds";
pub(crate) const OUTCOMES_PER_MESSAGE: &str = "mih_dispatcher_outcomes_per_message";
pub(crate) const DEAD_LETTERS: &str = "mih_dispatcher_dead_letters_total";
pub(crate) const CIRCUIT_STATE: &str = "mih_dispatcher_circuit_state";
pub(crate) const CIRCUIT_TRANSITIONS: &str = "mih_dispatcher_circuit_transitions_total";
pub(crate) const HELD: &str = "mih_dispatcher_jobs_held";
pub(crate) const ORDER_WAITS: &str = "mih_dispatcher_order_waits_total";
pub(crate) const PAUSES: &str = "mih_dispatcher_pauses_total";
pub(crate) const RATE_WAIT_SECONDS: &str = "mih_dispatcher_rate_limit_wait_seconds";
pub(crate) const REPLICAS: &str = "mih_dispatcher_replicas";
pub(crate) const PROBES_FAILED: &str = "mih_dispatcher_probes_failed_total";
pub(crate) const REPLIES: &str = "mih_dispatcher_replies_total";
pub(crate) const REPLY_CONSUMERS: &str = "mih_dispatcher_reply_consumers";

pub(crate) fn describe() {
    describe_counter!(
        ATTEMPTS,
        Unit::Count,
        "Delivery attempts, by service and outcome status"
    );
    describe_histogram!(
        ATTEMPT_SECONDS,
        Unit::Seconds,
        "Duration of delivery attempts, by service"
    );
    describe_histogram!(
        OUTCOMES_PER_MESSAGE,
        Unit::Count,
        "Outcomes per RESULTS message: 1 when idle, more as outcomes gather under load"
    );
    describe_counter!(
        DEAD_LETTERS,
        Unit::Count,
        "Jobs dead-lettered, by service and reason (permanent, exhausted, expired, unreadable)"
    );
    describe_gauge!(
        CIRCUIT_STATE,
        "Circuit state by service: 0 closed, 1 half-open, 2 open"
    );
    describe_counter!(
        CIRCUIT_TRANSITIONS,
        Unit::Count,
        "Circuit state changes this replica made, by service and new state"
    );
    describe_counter!(
        ORDER_WAITS,
        Unit::Count,
        "Keyed jobs handed back to wait for an earlier job of their key, by service (not attempts)"
    );
    describe_gauge!(
        HELD,
        "Jobs a worker holds while its circuit is open (at most the service's concurrency)"
    );
    describe_counter!(
        PAUSES,
        Unit::Count,
        "Pauses of a whole service written by this replica because the service answered 429 \
         (Too Many Requests), by service; every replica waits until its Retry-After"
    );
    describe_histogram!(
        RATE_WAIT_SECONDS,
        Unit::Seconds,
        "How long each attempt waited for this replica's share of the service's rate limit, \
         by service (only services with a rate limit)"
    );
    describe_gauge!(
        REPLICAS,
        "Dispatcher replicas this one sees alive; each takes an equal share of every \
         service's rate limit"
    );
    describe_counter!(
        PROBES_FAILED,
        Unit::Count,
        "Half-open probes that failed because the service is still down, by service; they do \
         not count against the probe job's retries"
    );
    describe_counter!(
        REPLIES,
        Unit::Count,
        "Messages taken from AMQP response queues, by service and result: stored (in \
         <NS>_INBOUND), duplicate (its message-id was stored already), parked (on \
         <ns>.inbound-parked.<service>: too large, not text, broken JSON), unavailable \
         (JetStream did not acknowledge; handed back to the queue)"
    );
    describe_gauge!(
        REPLY_CONSUMERS,
        "Response-queue consumers of this replica consuming now, by service: 1 consuming, 0 \
         (re)connecting or waiting for the queue"
    );
}
