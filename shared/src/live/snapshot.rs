//! An in-memory copy of the config bucket, loaded at start and kept current by a KV watch.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use tokio::sync::watch;

use super::{LiveRule, LiveService, LiveSource};
use crate::messages::RuleId;
use crate::names::{ServiceSlug, SourceId};
use crate::shutdown::Shutdown;

const REWATCH_DELAY: Duration = Duration::from_secs(1);
/// The config bucket revision a service has applied, by service.
pub const REVISION_GAUGE: &str = "mih_config_revision";

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("cannot open the config bucket `{bucket}`: {message}")]
    Open { bucket: String, message: String },
    #[error("cannot watch the config bucket `{bucket}`: {message}")]
    Watch { bucket: String, message: String },
}

/// Everything configured, as of one moment.
#[derive(Debug, Clone, Default)]
pub struct LiveConfig {
    pub sources: BTreeMap<SourceId, Arc<LiveSource>>,
    pub services: BTreeMap<ServiceSlug, Arc<LiveService>>,
    pub rules: BTreeMap<RuleId, Arc<LiveRule>>,
    /// The bucket revision this copy reflects.
    pub revision: u64,
}

impl LiveConfig {
    /// Applies one KV entry. Returns false for keys and values it cannot read (logged).
    fn apply(&mut self, key: &str, value: Option<&[u8]>, revision: u64) -> bool {
        self.revision = self.revision.max(revision);
        let Some((kind, id)) = key.split_once('.') else {
            tracing::warn!(key, "ignoring a config key of unknown form");
            return false;
        };
        let applied = match (kind, value) {
            ("source", Some(bytes)) => decode::<LiveSource>(key, bytes)
                .map(|s| self.sources.insert(s.id.clone(), Arc::new(s)))
                .is_some(),
            ("service", Some(bytes)) => decode::<LiveService>(key, bytes)
                .map(|s| self.services.insert(s.name.clone(), Arc::new(s)))
                .is_some(),
            ("rule", Some(bytes)) => decode::<LiveRule>(key, bytes)
                .map(|r| self.rules.insert(r.id, Arc::new(r)))
                .is_some(),
            ("source", None) => id
                .parse()
                .map(|id: SourceId| self.sources.remove(&id))
                .is_ok(),
            ("service", None) => id
                .parse()
                .map(|id: ServiceSlug| self.services.remove(&id))
                .is_ok(),
            ("rule", None) => id.parse().map(|id: RuleId| self.rules.remove(&id)).is_ok(),
            _ => false,
        };
        if !applied {
            tracing::warn!(key, "ignoring a config entry that could not be applied");
        }
        applied
    }
}

fn decode<T: serde::de::DeserializeOwned>(key: &str, bytes: &[u8]) -> Option<T> {
    match serde_json::from_slice(bytes) {
        Ok(value) => Some(value),
        Err(error) => {
            tracing::warn!(key, %error, "config entry is not readable; keeping the previous value");
            None
        }
    }
}

/// The live configuration, shared by every task of a service. Reads are lock-free.
#[derive(Debug, Clone)]
pub struct ConfigSnapshot {
    current: Arc<ArcSwap<LiveConfig>>,
    changes: watch::Receiver<u64>,
}

impl ConfigSnapshot {
    /// Loads the bucket completely, then follows it until `shutdown`.
    /// `owner` labels the `mih_config_revision` gauge: the bucket revision it has applied.
    pub async fn start(
        js: &jetstream::Context,
        bucket: &str,
        owner: &'static str,
        shutdown: Shutdown,
    ) -> Result<Self, SnapshotError> {
        let store = js
            .get_key_value(bucket)
            .await
            .map_err(|e| SnapshotError::Open {
                bucket: bucket.to_owned(),
                message: e.to_string(),
            })?;
        let watch_error = |e: &dyn std::fmt::Display| SnapshotError::Watch {
            bucket: bucket.to_owned(),
            message: e.to_string(),
        };
        let values = store.status().await.map_err(|e| watch_error(&e))?.values();
        let mut entries = store
            .watch_with_history(">")
            .await
            .map_err(|e| watch_error(&e))?;
        let mut config = LiveConfig::default();
        if values > 0 {
            while let Some(entry) = entries.next().await {
                let entry = entry.map_err(|e| watch_error(&e))?;
                apply_entry(&mut config, &entry);
                if entry.delta == 0 || entry.seen_current {
                    break;
                }
            }
        }
        let revision = metrics::gauge!(REVISION_GAUGE, "service" => owner);
        #[allow(clippy::cast_precision_loss)]
        revision.set(config.revision as f64);
        let current = Arc::new(ArcSwap::from_pointee(config));
        let (notify, changes) = watch::channel(0);
        tokio::spawn(follow(
            store,
            entries,
            Arc::clone(&current),
            notify,
            revision,
            shutdown,
        ));
        Ok(Self { current, changes })
    }

    /// The configuration now.
    pub fn current(&self) -> Arc<LiveConfig> {
        self.current.load_full()
    }

    /// Fires after every applied change (the value counts changes).
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.clone()
    }
}

fn apply_entry(config: &mut LiveConfig, entry: &kv::Entry) {
    let value = match entry.operation {
        kv::Operation::Put => Some(entry.value.as_ref()),
        kv::Operation::Delete | kv::Operation::Purge => None,
    };
    config.apply(&entry.key, value, entry.revision);
}

async fn follow(
    store: kv::Store,
    mut entries: kv::Watch,
    current: Arc<ArcSwap<LiveConfig>>,
    notify: watch::Sender<u64>,
    revision: metrics::Gauge,
    shutdown: Shutdown,
) {
    let mut changes = 0u64;
    loop {
        let next = tokio::select! {
            () = shutdown.triggered() => return,
            next = entries.next() => next,
        };
        match next {
            Some(Ok(entry)) => {
                let mut config = LiveConfig::clone(&current.load());
                apply_entry(&mut config, &entry);
                #[allow(clippy::cast_precision_loss)]
                revision.set(config.revision as f64);
                current.store(Arc::new(config));
                changes += 1;
                notify.send_replace(changes);
            }
            other => {
                if let Some(Err(error)) = other {
                    tracing::warn!(%error, "config watch failed; watching again");
                }
                // Resume after the last revision applied, so nothing is missed or replayed.
                let from = current.load().revision + 1;
                loop {
                    tokio::select! {
                        () = shutdown.triggered() => return,
                        () = tokio::time::sleep(REWATCH_DELAY) => {}
                    }
                    match store.watch_all_from_revision(from).await {
                        Ok(watch) => {
                            entries = watch;
                            break;
                        }
                        Err(error) => tracing::warn!(%error, "cannot watch the config bucket yet"),
                    }
                }
            }
        }
    }
}
