//! The dlq service's metrics, named and described in one place.

use metrics::{Unit, describe_counter};

pub const STORED: &str = "mih_dlq_dead_letters_stored_total";
pub const DUPLICATES: &str = "mih_dlq_dead_letters_duplicate_total";
pub const RESOLVED: &str = "mih_dlq_resolved_total";
pub const UNREADABLE: &str = "mih_dlq_unreadable_total";
pub const RETRIES: &str = "mih_dlq_retries_total";

pub fn describe() {
    describe_counter!(
        STORED,
        Unit::Count,
        "Dead letters stored in PostgreSQL, by service and stage (render, delivery)"
    );
    describe_counter!(
        DUPLICATES,
        Unit::Count,
        "Dead letters received again (redelivered, or resolved already) and not stored twice"
    );
    describe_counter!(
        RESOLVED,
        Unit::Count,
        "Dead letters removed because a replay of theirs was delivered, by service"
    );
    describe_counter!(
        UNREADABLE,
        Unit::Count,
        "Messages that could not be decoded and were terminated, by stream (dlq, results)"
    );
    describe_counter!(
        RETRIES,
        Unit::Count,
        "Messages handed back to JetStream because PostgreSQL failed, by stream"
    );
}
