//! The JSON messages that travel between services, one type each, every one versioned.
//!
//! A message carries `"v": 1`. Additive, optional fields stay within a version; anything a
//! reader of the previous version would misread needs a new version number, and readers refuse
//! versions they do not know instead of guessing.

mod dead_letter;
mod event;
mod event_data;
mod facade;
mod ids;
mod inbound;
mod job;
mod outcome;
mod request_tag;
mod version;

pub use dead_letter::{DeadLetter, FailureStage};
pub use event::Event;
pub use event_data::EventData;
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

/// Decodes a RESULTS message: one outcome, or a JSON array of outcomes (the dispatcher batches
/// the outcomes of one subject that are ready together into one message).
pub fn decode_outcomes(payload: &[u8]) -> Result<Vec<Outcome>, serde_json::Error> {
    let first = payload.iter().find(|byte| !byte.is_ascii_whitespace());
    if first == Some(&b'[') {
        serde_json::from_slice(payload)
    } else {
        serde_json::from_slice(payload).map(|outcome| vec![outcome])
    }
}

/// Makes one RESULTS message of outcomes encoded one by one: the outcome itself when it is
/// alone (what readers before batching understood), a JSON array otherwise.
pub fn join_outcomes(encoded: &[bytes::Bytes]) -> bytes::Bytes {
    if let [only] = encoded {
        return only.clone();
    }
    let size = encoded
        .iter()
        .map(|outcome| outcome.len() + 1)
        .sum::<usize>()
        + 1;
    let mut joined = Vec::with_capacity(size);
    joined.push(b'[');
    for (i, outcome) in encoded.iter().enumerate() {
        if i > 0 {
            joined.push(b',');
        }
        joined.extend_from_slice(outcome);
    }
    joined.push(b']');
    bytes::Bytes::from(joined)
}

#[cfg(test)]
mod tests;
