use super::{EventData, EventId, Version};
use crate::moodle::{EventName, EventNameError};
use crate::names::SourceId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

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
    /// kept; only `eventname` is normalised to carry its leading backslash. Read from a
    /// message, its fields are read on first use ([`EventData`]).
    pub data: EventData,
}

impl Event {
    /// The event's Moodle name. Ingest validated it, so an error means a foreign writer.
    pub fn name(&self) -> Result<EventName, EventNameError> {
        match self.data.eventname() {
            Some(name) => EventName::parse(name),
            None => Err(EventNameError::Empty),
        }
    }
}
