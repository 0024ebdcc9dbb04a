//! Ingest's metrics, named and described in one place.

use metrics::{Unit, describe_counter, describe_histogram};

pub(crate) const ACCEPTED: &str = "mih_ingest_events_accepted_total";
pub(crate) const DUPLICATES: &str = "mih_ingest_events_duplicate_total";
pub(crate) const UNCONFIRMED: &str = "mih_ingest_events_unconfirmed_total";
pub(crate) const REJECTED: &str = "mih_ingest_rejected_total";
pub(crate) const PUBLISH_SECONDS: &str = "mih_ingest_publish_duration_seconds";
pub(crate) const BATCH_SIZE: &str = "mih_ingest_batch_events";
pub(crate) const INBOUND: &str = "mih_ingest_inbound_total";

pub(crate) fn describe() {
    describe_counter!(ACCEPTED, Unit::Count, "Events stored in EVENTS, by source");
    describe_counter!(
        DUPLICATES,
        Unit::Count,
        "Events recognised as already stored, by source"
    );
    describe_counter!(
        UNCONFIRMED,
        Unit::Count,
        "Events JetStream did not acknowledge (answered 503), by source"
    );
    describe_counter!(REJECTED, Unit::Count, "Requests refused, by reason");
    describe_histogram!(
        PUBLISH_SECONDS,
        Unit::Seconds,
        "Time from the first publish of a request to its last JetStream ack"
    );
    describe_histogram!(BATCH_SIZE, Unit::Count, "Events per accepted request");
    describe_counter!(
        INBOUND,
        Unit::Count,
        "Inbound webhooks (POST /v1/inbound/{service}), by result: stored, duplicate, \
         unauthorized, rate_limited, too_large, invalid, unavailable"
    );
}
