//! Ordering keys held by a dead letter (rules with `ordering_on_dead_letter: hold`) are
//! released here when their dead letter is deleted: the dispatcher holds a key and releases it
//! when a replay is delivered; deleting the dead letter is the other way to resolve it.

use std::time::Duration;

use futures::TryStreamExt;
use uuid::Uuid;

use super::Replayer;

/// A hold younger than this is left alone by a bulk delete: its dead letter may not have been
/// projected into PostgreSQL yet (the dispatcher holds the key before publishing it).
const YOUNGEST_ORPHAN: Duration = Duration::from_secs(60);

impl Replayer {
    /// Releases every key held by a dead letter that no longer exists (`deleted`, or any
    /// whose row is gone); failures are logged: the key stays held until the next delete.
    pub(crate) async fn release_held_keys(&self, deleted: Option<Uuid>) {
        if let Err(error) = self.release(deleted).await {
            tracing::warn!(%error, "cannot release the ordering keys held by deleted dead letters; delete again to retry");
        }
    }

    async fn release(&self, deleted: Option<Uuid>) -> Result<(), String> {
        let kv = self
            .js
            .get_key_value(self.names.held_keys_bucket())
            .await
            .map_err(|e| e.to_string())?;
        let keys: Vec<String> = kv
            .keys()
            .await
            .map_err(|e| e.to_string())?
            .try_collect()
            .await
            .map_err(|e| e.to_string())?;
        for key in keys {
            let Some(entry) = kv.entry(&key).await.map_err(|e| e.to_string())? else {
                continue;
            };
            let Some(holder) = std::str::from_utf8(&entry.value)
                .ok()
                .and_then(|text| text.parse::<Uuid>().ok())
            else {
                continue;
            };
            let gone = if Some(holder) == deleted {
                true
            } else {
                let age = time::OffsetDateTime::now_utc() - entry.created;
                age > YOUNGEST_ORPHAN && !self.dead_letter_exists(holder).await?
            };
            if gone {
                kv.delete_expect_revision(&key, Some(entry.revision))
                    .await
                    .map_err(|e| e.to_string())?;
                tracing::info!(key, dead_letter = %holder, "ordering key released: its dead letter was deleted");
            }
        }
        Ok(())
    }

    async fn dead_letter_exists(&self, job: Uuid) -> Result<bool, String> {
        mih_dlq::store::letters::summary(&self.db, job)
            .await
            .map(|found| found.is_some())
            .map_err(|e| e.to_string())
    }
}
