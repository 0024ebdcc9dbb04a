//! The JSON messages that travel between services, one type each, every one versioned.
//!
//! A message carries `"v": 1`. Additive, optional fields stay within a version; anything a
//! reader of the previous version would misread needs a new version number, and readers refuse
//! versions they do not know instead of guessing.

mod dead_letter;
mod event;
mod facade;
mod ids;
mod inbound;
mod job;
mod outcome;
mod version;

pub use dead_letter::{DeadLetter, FailureStage};
pub use event::Event;
pub use facade::{FacadeRequest, FacadeResponse};
pub use ids::{EventId, InboundId, JobId, RuleId};
pub use inbound::{InboundMessage, InboundVia, ParkedInbound, PayloadError, payload_of};
pub use job::{AmqpRequest, Header, HttpMethod, HttpRequest, Job, Origin, Request, SoapRequest};
pub use outcome::{Outcome, OutcomeStatus};
pub use version::Version;

/// Encodes a message as the bytes published to NATS.
pub fn encode<T: serde::Serialize>(message: &T) -> Result<bytes::Bytes, serde_json::Error> {
    serde_json::to_vec(message).map(bytes::Bytes::from)
}

/// Decodes a message received from NATS.
pub fn decode<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T, serde_json::Error> {
    serde_json::from_slice(payload)
}

#[cfg(test)]
mod tests;
