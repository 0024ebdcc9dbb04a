//! Ordering keys held by a dead letter (rules with `ordering_on_dead_letter: hold`).
//!
//! When such a rule's job is dead-lettered, its key is held: `<service>.<key hash>` → the dead
//! job's id in the `<ns>_held_keys` bucket, written before the dead letter is published. The
//! key's later jobs wait (handed back every [`HOLD_RECHECK`], not counted as attempts) until
//! the entry is gone: a replay of that dead letter is delivered (the replay may go although
//! later jobs of the key are ahead of it in JOBS; if it fails for good the key stays held by
//! the replay's own dead letter), or the api deletes the dead letter.
//!
//! Every dispatcher keeps the bucket's entries in memory (a watch), so a keyed job asks no
//! one whether its key is held.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use mih_shared::Shutdown;
use mih_shared::messages::JobId;

/// How often a job of a held key comes back to see whether its key is still held.
pub(crate) const HOLD_RECHECK: Duration = Duration::from_secs(10);
/// Pause before watching again after the watch ended.
const REWATCH: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub(crate) enum HeldError {
    #[error("held keys bucket: {0}")]
    Store(String),
}

/// The held keys, as this dispatcher last saw them.
#[derive(Debug, Clone)]
pub(crate) struct HeldKeys {
    kv: kv::Store,
    held: Arc<RwLock<HashMap<String, JobId>>>,
}

impl HeldKeys {
    /// Opens the bucket, loads what it holds, and follows it until `shutdown`.
    pub(crate) async fn open(
        js: &jetstream::Context,
        bucket: &str,
        shutdown: Shutdown,
    ) -> Result<Self, HeldError> {
        let kv = js
            .get_key_value(bucket)
            .await
            .map_err(|e| HeldError::Store(e.to_string()))?;
        let held = HeldKeys {
            kv,
            held: Arc::new(RwLock::new(HashMap::new())),
        };
        let watch = held.watch().await?;
        held.load().await?;
        tokio::spawn(held.clone().follow(watch, shutdown));
        Ok(held)
    }

    async fn watch(&self) -> Result<kv::Watch, HeldError> {
        self.kv
            .watch_all()
            .await
            .map_err(|e| HeldError::Store(e.to_string()))
    }

    /// Replaces what is known by what the bucket holds now.
    async fn load(&self) -> Result<(), HeldError> {
        let keys: Vec<String> = self
            .kv
            .keys()
            .await
            .map_err(|e| HeldError::Store(e.to_string()))?
            .try_collect()
            .await
            .map_err(|e| HeldError::Store(e.to_string()))?;
        let mut now = HashMap::new();
        for key in keys {
            if let Some(entry) = self
                .kv
                .entry(&key)
                .await
                .map_err(|e| HeldError::Store(e.to_string()))?
                && let Some(job) = job_of(&entry.value)
            {
                now.insert(key, job);
            }
        }
        *self.write() = now;
        Ok(())
    }

    async fn follow(self, mut watch: kv::Watch, shutdown: Shutdown) {
        loop {
            let next = tokio::select! {
                () = shutdown.triggered() => return,
                next = watch.next() => next,
            };
            match next {
                Some(Ok(entry)) => self.apply(&entry),
                Some(Err(error)) => {
                    tracing::warn!(%error, "watching the held keys failed; watching again");
                    match self.rewatch(&shutdown).await {
                        Some(again) => watch = again,
                        None => return,
                    }
                }
                None => match self.rewatch(&shutdown).await {
                    Some(again) => watch = again,
                    None => return,
                },
            }
        }
    }

    /// A new watch, once the bucket answers again; `None` on shutdown.
    async fn rewatch(&self, shutdown: &Shutdown) -> Option<kv::Watch> {
        loop {
            tokio::select! {
                () = shutdown.triggered() => return None,
                () = tokio::time::sleep(REWATCH) => {}
            }
            match self.watch().await {
                Ok(watch) => match self.load().await {
                    Ok(()) => return Some(watch),
                    Err(error) => tracing::warn!(%error, "cannot load the held keys"),
                },
                Err(error) => tracing::warn!(%error, "cannot watch the held keys"),
            }
        }
    }

    fn apply(&self, entry: &kv::Entry) {
        let mut held = self.write();
        match (entry.operation, job_of(&entry.value)) {
            (kv::Operation::Put, Some(job)) => {
                held.insert(entry.key.clone(), job);
            }
            _ => {
                held.remove(&entry.key);
            }
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, JobId>> {
        self.held
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The dead job holding `key`, if it is held.
    pub(crate) fn holder(&self, key: &str) -> Option<JobId> {
        self.held
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(key)
            .copied()
    }

    /// Holds `key` for `job`, which is being dead-lettered.
    pub(crate) async fn hold(&self, key: &str, job: JobId) -> Result<(), HeldError> {
        self.kv
            .put(key, Bytes::from(job.to_string()))
            .await
            .map_err(|e| HeldError::Store(e.to_string()))?;
        self.write().insert(key.to_owned(), job);
        Ok(())
    }

    /// Releases `key` if `job` still holds it (its replay was delivered).
    pub(crate) async fn release(&self, key: &str, job: JobId) -> Result<(), HeldError> {
        let entry = self
            .kv
            .entry(key)
            .await
            .map_err(|e| HeldError::Store(e.to_string()))?;
        let Some(entry) = entry.filter(|e| job_of(&e.value) == Some(job)) else {
            return Ok(());
        };
        self.kv
            .delete_expect_revision(key, Some(entry.revision))
            .await
            .map_err(|e| HeldError::Store(e.to_string()))?;
        self.write().remove(key);
        Ok(())
    }
}

fn job_of(value: &[u8]) -> Option<JobId> {
    std::str::from_utf8(value).ok()?.parse().ok()
}
