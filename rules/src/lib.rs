//! mih-rules: an event in, jobs out. The rule engine (event patterns, CEL conditions,
//! templates, each rule within an evaluation budget), dedup claims, and publishing what matched
//! to `<NS>_JOBS`. The matcher's consumer runs it on every event; api uses it to validate rules,
//! preview them, backfill and replay.

pub mod budget;
mod condition;
mod cost;
mod decision;
pub mod dedup;
mod explain;
pub mod metrics;
mod prepared;
pub mod publish;
mod request;
mod rule;
mod rule_set;
mod shape;
mod template;

pub use decision::{Match, Rejection, Step};
pub use explain::{Check, Explanation};
pub use prepared::UnusableEvent;
pub use rule::{CompiledRule, DEFAULT_MAX_REQUEST_BYTES};
pub use rule_set::RuleSet;

#[cfg(test)]
mod tests;
