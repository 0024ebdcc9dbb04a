//! Dedup claims in `<ns>_dedup`: the first event with a dedup key claims it with its id.
//!
//! The same event redelivered (a crash between publishing its jobs and acknowledging it) finds
//! its own claim and goes on; a different event with the same key is a duplicate. Claims expire
//! with the bucket's max age, the dedup horizon.

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use sha2::{Digest, Sha256};

use mih_shared::messages::{Event, EventId};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The key was free; it is this event's now.
    Claimed,
    /// This event claimed it before: a redelivery.
    Ours,
    /// Another event holds it: this one is a duplicate.
    Duplicate(EventId),
}

#[derive(Debug, thiserror::Error)]
#[error("dedup claim failed: {0}")]
pub struct DedupError(String);

#[derive(Debug, Clone)]
pub struct Dedup {
    store: kv::Store,
}

/// `<source>.<32 hex digits of SHA-256(dedup key)>`: bounded and KV-safe whatever the key.
pub fn key(event: &Event) -> String {
    let digest = Sha256::digest(event.dedup_key.as_bytes());
    format!("{}.{}", event.source, &hex::encode(digest)[..32])
}

impl Dedup {
    pub async fn open(js: &jetstream::Context, bucket: &str) -> Result<Self, DedupError> {
        let store = js
            .get_key_value(bucket)
            .await
            .map_err(|e| DedupError(e.to_string()))?;
        Ok(Self { store })
    }

    /// Claims the event's dedup key, or says who holds it.
    pub async fn claim(&self, event: &Event) -> Result<Claim, DedupError> {
        let key = key(event);
        let ours = event.id.to_string();
        // Twice: a claim can expire between a failed create and the read.
        for _ in 0..2 {
            match self.store.create(&key, Bytes::from(ours.clone())).await {
                Ok(_) => return Ok(Claim::Claimed),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
                Err(e) => return Err(DedupError(e.to_string())),
            }
            match self
                .store
                .get(&key)
                .await
                .map_err(|e| DedupError(e.to_string()))?
            {
                Some(holder) if holder.as_ref() == ours.as_bytes() => return Ok(Claim::Ours),
                Some(holder) => {
                    let id = std::str::from_utf8(&holder)
                        .ok()
                        .and_then(|text| text.parse().ok())
                        .ok_or_else(|| DedupError(format!("claim {key} holds no event id")))?;
                    return Ok(Claim::Duplicate(id));
                }
                None => continue,
            }
        }
        Err(DedupError(format!("claim {key} kept changing")))
    }

    /// Who holds the event's dedup key, without claiming it (backfill).
    pub async fn holder(&self, event: &Event) -> Result<Option<EventId>, DedupError> {
        let held = self
            .store
            .get(key(event))
            .await
            .map_err(|e| DedupError(e.to_string()))?;
        Ok(held.and_then(|bytes| {
            std::str::from_utf8(&bytes)
                .ok()
                .and_then(|t| t.parse().ok())
        }))
    }
}
