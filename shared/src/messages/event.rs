use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{EventId, Version};
use crate::moodle::{EventName, EventNameError};
use crate::names::SourceId;

/// An event accepted by ingest and stored in `<NS>_EVENTS`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub v: Version<1>,
    pub id: EventId,
    pub source: SourceId,
    pub received_at: DateTime<Utc>,
    /// What makes two posts the same event: the sender's `webhook-id`/`Idempotency-Key`, or a
    /// hash of the canonical event.
    pub dedup_key: String,
    /// The Moodle event as `\core\event\base::get_data()` gives it, key order and extra keys
    /// kept; only `eventname` is normalised to carry its leading backslash.
    pub data: Map<String, Value>,
}

impl Event {
    /// The event's Moodle name. Ingest validated it, so an error means a foreign writer.
    pub fn name(&self) -> Result<EventName, EventNameError> {
        match self.data.get("eventname") {
            Some(Value::String(name)) => EventName::parse(name),
            _ => Err(EventNameError::Empty),
        }
    }
}
