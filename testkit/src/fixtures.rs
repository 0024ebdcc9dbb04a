//! Real Moodle events (see `fixtures/README.md`).

use serde_json::Value;

const MOODLE_EVENTS: &str = include_str!("../fixtures/moodle-events.jsonl");

/// The 40 fixture events, as JSON values.
pub fn moodle_events() -> Vec<Value> {
    MOODLE_EVENTS
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("fixture line is not JSON: {e}"))
        })
        .collect()
}

/// The fixture file as it is: one event per line.
pub fn moodle_events_ndjson() -> &'static str {
    MOODLE_EVENTS
}
