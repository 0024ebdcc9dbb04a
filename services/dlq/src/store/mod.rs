//! Every statement on `dead_letters` and `dead_letter_operations`: this crate owns both tables,
//! and the api (its HTTP handlers and bulk-replay runner), `mih dlq` and
//! `mih rebuild-projections` read and change them through these functions only.
//!
//! - [`store`] and [`resolve`]: the projection of DLQ and of the replay outcomes;
//! - [`letters`]: listing, reading, replaying and deleting dead letters;
//! - [`operations`]: bulk replays, tracked so any api replica can run or resume them;
//! - [`filter`]: which dead letters a list or a bulk operation is about.

pub mod filter;
pub mod letters;
pub mod operations;
mod projection;

use mih_shared::db::RetentionSpec;

pub use projection::{mark_replaying, resolve, store, truncate};

/// How retention prunes dead letters: by when they were dead-lettered.
pub const RETENTION: RetentionSpec = RetentionSpec {
    table: "dead_letters",
    age_column: "dead_lettered_at",
    key: "job_id",
};
