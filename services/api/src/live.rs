//! Writing the live configuration into the `<ns>_config` KV bucket.
//!
//! After each committed change api publishes the materialised object; a value never replaces a
//! newer one (versions come from one PostgreSQL sequence and only grow). At start, and every
//! `api.reconcile_interval`, the bucket is made equal to PostgreSQL: missing or different
//! values are written, keys with no row are removed.

use std::collections::BTreeMap;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use futures::TryStreamExt;
use serde::Serialize;
use serde_json::Value;

const CAS_ATTEMPTS: usize = 8;

#[derive(Debug, thiserror::Error)]
#[error("live config ({key}): {message}")]
pub struct LiveError {
    key: String,
    message: String,
}

fn live_error(key: &str, error: impl std::fmt::Display) -> LiveError {
    LiveError {
        key: key.to_owned(),
        message: error.to_string(),
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReconcileReport {
    pub written: usize,
    pub removed: usize,
    pub unchanged: usize,
}

#[derive(Clone, Debug)]
pub struct LiveWriter {
    store: kv::Store,
}

impl LiveWriter {
    pub async fn open(js: &jetstream::Context, bucket: &str) -> Result<Self, LiveError> {
        let store = js
            .get_key_value(bucket)
            .await
            .map_err(|e| live_error(bucket, e))?;
        Ok(Self { store })
    }

    /// Writes `value` under `key` unless the bucket holds this version or a newer one.
    pub async fn publish<T: Serialize>(
        &self,
        key: &str,
        version: i64,
        value: &T,
    ) -> Result<(), LiveError> {
        let bytes = Bytes::from(serde_json::to_vec(value).map_err(|e| live_error(key, e))?);
        for _ in 0..CAS_ATTEMPTS {
            let entry = self
                .store
                .entry(key)
                .await
                .map_err(|e| live_error(key, e))?;
            let written = match entry {
                Some(entry) => {
                    if entry.operation == kv::Operation::Put
                        && stored_version(&entry.value) >= Some(version)
                    {
                        return Ok(());
                    }
                    self.store
                        .update(key, bytes.clone(), entry.revision)
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                }
                None => self
                    .store
                    .create(key, bytes.clone())
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
            };
            match written {
                Ok(()) => return Ok(()),
                // Another writer got there first: read again and decide again.
                Err(message) => tracing::debug!(key, %message, "live config write raced; retrying"),
            }
        }
        Err(live_error(key, "too many concurrent writers"))
    }

    pub async fn remove(&self, key: &str) -> Result<(), LiveError> {
        self.store.delete(key).await.map_err(|e| live_error(key, e))
    }

    /// Makes the bucket hold exactly `desired` (key → value).
    pub async fn reconcile(
        &self,
        desired: BTreeMap<String, Value>,
    ) -> Result<ReconcileReport, LiveError> {
        let current = self.current().await?;
        let mut report = ReconcileReport::default();
        for (key, value) in &desired {
            if current.get(key) == Some(value) {
                report.unchanged += 1;
                continue;
            }
            tracing::debug!(key, stored = ?current.get(key), wanted = %value, "live config differs");
            let bytes = Bytes::from(serde_json::to_vec(value).map_err(|e| live_error(key, e))?);
            self.store
                .put(key, bytes)
                .await
                .map_err(|e| live_error(key, e))?;
            report.written += 1;
        }
        for key in current.keys().filter(|k| !desired.contains_key(*k)) {
            self.remove(key).await?;
            report.removed += 1;
        }
        Ok(report)
    }

    /// Every live key and its value.
    async fn current(&self) -> Result<BTreeMap<String, Value>, LiveError> {
        let bucket = &self.store.name;
        let keys: Vec<String> = self
            .store
            .keys()
            .await
            .map_err(|e| live_error(bucket, e))?
            .try_collect()
            .await
            .map_err(|e| live_error(bucket, e))?;
        let mut values = BTreeMap::new();
        for key in keys {
            if let Some(bytes) = self
                .store
                .get(&key)
                .await
                .map_err(|e| live_error(&key, e))?
            {
                // An unreadable value differs from every wanted one, so it is rewritten.
                let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                values.insert(key, value);
            }
        }
        Ok(values)
    }
}

fn stored_version(value: &[u8]) -> Option<i64> {
    #[derive(serde::Deserialize)]
    struct Versioned {
        version: i64,
    }
    serde_json::from_slice::<Versioned>(value)
        .ok()
        .map(|v| v.version)
}
