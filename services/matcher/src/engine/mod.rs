//! Deciding which rules an event matches and rendering their requests. Used by the matcher's
//! consumer, and by api for rule validation, preview and backfill.

pub mod budget;
pub mod condition;
mod cost;
mod rules;
mod shape;
pub mod template;

pub use rules::{Check, CompiledRule, Explanation, Match, RuleSet, template_context};
