//! The inbound log: api follows `<NS>_INBOUND` (messages stored for a Moodle site, and those
//! parked because they could not be) into `inbound_messages`, for `GET /api/v1/inbound/log`,
//! the dashboard's Inbound page and the statistics. One durable consumer shared by every api
//! replica; a message is acknowledged after its row is committed, a redelivery finds its row,
//! and a message the database refuses is parked after a few tries ([`mih_shared::parking`]).

pub mod store;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull};
use metrics::{Unit, counter, describe_counter};
use serde_json::Value;

use mih_shared::Shutdown;
use mih_shared::consumer::{DeadLetters, Handler, Settings};
use mih_shared::error::Disposition;
use mih_shared::messages::{self, InboundMessage, ParkedInbound};
use mih_shared::parking;

use crate::state::AppState;
use store::{EXCERPT_CHARS, Entry};

/// The durable consumer's name, shared by every api replica.
pub const CONSUMER: &str = "inbound-log";
pub const RECORDED: &str = "mih_inbound_log_total";

const MAX_IN_FLIGHT: usize = 64;
const ACK_WAIT: Duration = Duration::from_secs(30);
const RETRY_OPEN: Duration = Duration::from_secs(1);

fn consumer_config() -> pull::Config {
    pull::Config {
        durable_name: Some(CONSUMER.into()),
        description: Some("mih api: inbound messages into the inbound log".into()),
        ack_policy: jetstream::consumer::AckPolicy::Explicit,
        ack_wait: ACK_WAIT,
        max_ack_pending: i64::try_from(MAX_IN_FLIGHT).unwrap_or(i64::MAX),
        deliver_policy: jetstream::consumer::DeliverPolicy::All,
        max_deliver: -1,
        ..Default::default()
    }
}

/// Follows INBOUND until shutdown.
pub async fn run(state: AppState, shutdown: Shutdown) {
    describe_counter!(
        RECORDED,
        Unit::Count,
        "Inbound messages taken into the inbound log, by result: recorded, duplicate"
    );
    let Some(consumer) = mih_shared::consumer::open_durable(
        &state.js,
        &state.names.inbound_stream(),
        consumer_config(),
        RETRY_OPEN,
        &shutdown,
    )
    .await
    else {
        return;
    };
    let park = DeadLetters::Park {
        db: state.db.clone(),
        consumer: CONSUMER.to_owned(),
    };
    let settings = Settings::new(CONSUMER, MAX_IN_FLIGHT, park).ack_linger(state.ack_linger);
    let handler = Arc::new(Recorder {
        db: state.db.clone(),
        parked_prefix: format!("{}.inbound-parked.", state.names.namespace()),
    });
    mih_shared::consumer::run(consumer, settings, handler, shutdown).await;
}

struct Recorder {
    db: sqlx::PgPool,
    parked_prefix: String,
}

/// The start of a payload as text, at most [`EXCERPT_CHARS`] characters, and its size.
fn excerpt(payload: &Value) -> (String, usize) {
    let text = match payload {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    let size = text.len();
    (text.chars().take(EXCERPT_CHARS).collect(), size)
}

/// The row of a message, or why it cannot be read.
fn entry(message: &jetstream::Message, parked_prefix: &str) -> Result<Entry, String> {
    let sequence = message
        .info()
        .map(|info| info.stream_sequence)
        .map_err(|e| format!("no stream sequence: {e}"))?;
    if message.subject.as_str().starts_with(parked_prefix) {
        let parked: ParkedInbound =
            messages::decode(&message.payload).map_err(|e| format!("not readable: {e}"))?;
        return Ok(Entry {
            id: parked.id.0,
            sequence,
            service: parked.service.to_string(),
            source: None,
            via: parked.via.as_str(),
            received_at: parked.received_at,
            content_type: None,
            size_bytes: parked.size,
            excerpt: parked.excerpt.chars().take(EXCERPT_CHARS).collect(),
            external_id: parked.external_id,
            parked_reason: Some(parked.reason),
        });
    }
    let stored: InboundMessage =
        messages::decode(&message.payload).map_err(|e| format!("not readable: {e}"))?;
    let (excerpt, size_bytes) = excerpt(&stored.payload);
    Ok(Entry {
        id: stored.id.0,
        sequence,
        service: stored.service.to_string(),
        source: Some(stored.source.to_string()),
        via: stored.via.as_str(),
        received_at: stored.received_at,
        content_type: stored.content_type,
        size_bytes,
        excerpt,
        external_id: stored.external_id,
        parked_reason: None,
    })
}

/// Empties the log, for `mih rebuild-projections`.
pub async fn truncate(db: &sqlx::PgPool) -> Result<(), sqlx::Error> {
    store::truncate(db).await
}

/// Records one message of INBOUND as the live consumer does, for `mih rebuild-projections`:
/// `Ok(Some(new))`, or `Ok(None)` for a message that cannot be read (logged and skipped).
pub async fn project(
    db: &sqlx::PgPool,
    names: &mih_shared::names::Names,
    message: &jetstream::Message,
) -> Result<Option<bool>, sqlx::Error> {
    let prefix = format!("{}.inbound-parked.", names.namespace());
    match entry(message, &prefix) {
        Ok(entry) => store::record(db, &entry).await.map(Some),
        Err(reason) => {
            tracing::warn!(%reason, subject = %message.subject, "unreadable inbound message skipped");
            Ok(None)
        }
    }
}

impl Handler for Recorder {
    async fn handle(&self, message: &jetstream::Message) -> Disposition {
        let entry = match entry(message, &self.parked_prefix) {
            Ok(entry) => entry,
            Err(reason) => {
                tracing::error!(%reason, subject = %message.subject, "inbound message not readable");
                return Disposition::DeadLetter { reason };
            }
        };
        match store::record(&self.db, &entry).await {
            Ok(new) => {
                let result = if new { "recorded" } else { "duplicate" };
                counter!(RECORDED, "result" => result).increment(1);
                Disposition::Ack
            }
            Err(error) => {
                tracing::warn!(%error, id = %entry.id, "inbound message not logged yet");
                parking::disposition(&error)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_are_bounded_text() {
        let (text, size) = excerpt(&Value::String("é".repeat(2000)));
        assert_eq!(text.chars().count(), EXCERPT_CHARS);
        assert_eq!(size, 4000);
        let (json, _) = excerpt(&serde_json::json!({"a": 1}));
        assert_eq!(json, r#"{"a":1}"#);
    }
}
