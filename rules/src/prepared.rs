//! An event made ready for rules once, whatever the number of rules that look at it: its name
//! parsed, and its fields as conditions and templates see them, copied out of the event only
//! when a condition or a template reads them (a rule without either, such as `*` forwarding the
//! event as it came, never pays for the copy).

use std::cell::OnceCell;

use serde_json::{Map, Value};

use mih_shared::messages::Event;
use mih_shared::moodle::{EventName, EventNameError};

/// Top-level fields Moodle may send as numeric strings; conditions and templates see numbers.
const NUMERIC_FIELDS: &[&str] = &[
    "objectid",
    "contextid",
    "contextinstanceid",
    "userid",
    "courseid",
    "relateduserid",
    "edulevel",
    "contextlevel",
    "anonymous",
    "timecreated",
];

/// An event no rule can match: its name is missing or not a Moodle event name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the event's name is not usable: {0}")]
pub struct UnusableEvent(#[from] EventNameError);

/// An event ready for rules.
#[derive(Debug)]
pub(crate) struct Prepared<'e> {
    pub(crate) event: &'e Event,
    pub(crate) name: EventName,
    fields: OnceCell<Map<String, Value>>,
}

impl<'e> Prepared<'e> {
    pub(crate) fn new(event: &'e Event) -> Result<Self, UnusableEvent> {
        Ok(Self {
            name: event.name()?,
            fields: OnceCell::new(),
            event,
        })
    }

    /// The variables of conditions and templates, made on first use.
    pub(crate) fn fields(&self) -> &Map<String, Value> {
        self.fields.get_or_init(|| template_context(self.event))
    }
}

/// The variables of conditions and templates: the event's fields (numeric-string ids as
/// numbers) and `event` (id, source, received_at, dedup_key), which wins over a shim field of
/// that name.
fn template_context(event: &Event) -> Map<String, Value> {
    let mut fields: Map<String, Value> = (*event.data).clone();
    for name in NUMERIC_FIELDS {
        if let Some(Value::String(text)) = fields.get(*name)
            && let Ok(number) = text.parse::<i64>()
        {
            fields.insert((*name).to_owned(), Value::from(number));
        }
    }
    fields.insert(
        "event".into(),
        serde_json::json!({
            "id": event.id,
            "source": event.source,
            "received_at": event.received_at,
            "dedup_key": event.dedup_key,
        }),
    );
    fields
}
