//! Publishing a request's events to `<NS>_EVENTS` and collecting JetStream's acknowledgements.
//!
//! All events of a request are sent before any ack is awaited, so a batch costs one round trip,
//! not one per event. `Nats-Msg-Id` makes a re-sent event a duplicate inside the stream's
//! window; the answer then carries the id of the event stored first.

use async_nats::HeaderMap;
use async_nats::jetstream::{self, message::PublishMessage};
use bytes::Bytes;
use serde::Serialize;

use mih_shared::messages::{self, Event, EventId};

/// One event ready to go.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub index: usize,
    pub id: EventId,
    pub dedup_key: String,
    pub msg_id: String,
    pub subject: String,
    pub payload: Bytes,
}

/// What happened to one item of the request.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ItemReport {
    pub index: usize,
    /// The stored event's id; for a duplicate, the id of the event stored first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<EventId>,
    pub dedup_key: String,
    pub status: ItemStatus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ItemStatus {
    /// Stored, acknowledged by JetStream.
    Accepted,
    /// Already stored from an earlier request.
    Duplicate,
    /// JetStream did not acknowledge it: it may or may not be stored. Re-sending is safe.
    Unconfirmed,
}

#[derive(Debug, Clone)]
pub(crate) struct Publisher {
    js: jetstream::Context,
    events: jetstream::stream::Stream,
}

impl Publisher {
    pub(crate) fn new(js: jetstream::Context, events: jetstream::stream::Stream) -> Self {
        Self { js, events }
    }

    /// The JetStream context it publishes with (its timeout and backpressure).
    pub(crate) fn context(&self) -> &jetstream::Context {
        &self.js
    }

    /// Publishes every event with the given trace headers and waits for all acknowledgements.
    pub(crate) async fn publish(&self, items: Vec<Prepared>, trace: &HeaderMap) -> Vec<ItemReport> {
        let mut pending = Vec::with_capacity(items.len());
        for item in items {
            let mut headers = trace.clone();
            headers.insert("Mih-Event-Id", item.id.to_string().as_str());
            let message = PublishMessage::build()
                .payload(item.payload)
                .headers(headers)
                .message_id(&item.msg_id);
            let sent = self.js.send_publish(item.subject, message).await;
            pending.push((item.index, item.id, item.dedup_key, sent));
        }
        let acks = pending.into_iter().map(|(index, id, dedup_key, sent)| async move {
            let ack = match sent {
                Ok(future) => future.await,
                Err(e) => Err(e),
            };
            match ack {
                Ok(ack) if ack.duplicate => ItemReport {
                    index,
                    id: self.stored_id(&ack.stream, ack.sequence).await,
                    dedup_key,
                    status: ItemStatus::Duplicate,
                },
                Ok(_) => ItemReport {
                    index,
                    id: Some(id),
                    dedup_key,
                    status: ItemStatus::Accepted,
                },
                Err(error) => {
                    tracing::warn!(%error, event_id = %id, "event not acknowledged by jetstream");
                    ItemReport {
                        index,
                        id: Some(id),
                        dedup_key,
                        status: ItemStatus::Unconfirmed,
                    }
                }
            }
        });
        futures::future::join_all(acks).await
    }

    /// The id of the event stored at `sequence` of `stream` (the original of a duplicate, in
    /// the partition its copy went to).
    async fn stored_id(&self, stream: &str, sequence: u64) -> Option<EventId> {
        let stored = if stream == self.events.cached_info().config.name {
            self.events.direct_get(sequence).await
        } else {
            match self.js.get_stream(stream).await {
                Ok(partition) => partition.direct_get(sequence).await,
                Err(error) => {
                    tracing::warn!(%error, stream, "cannot open the partition of a duplicate event");
                    return None;
                }
            }
        };
        match stored {
            Ok(stored) => messages::decode::<Event>(&stored.payload)
                .ok()
                .map(|e| e.id),
            Err(error) => {
                tracing::warn!(%error, sequence, "cannot read the original of a duplicate event");
                None
            }
        }
    }
}
