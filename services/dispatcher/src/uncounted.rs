//! Deliveries of a job that do not count against its retries: a half-open probe that failed
//! because the service is still down, and a job handed back unattempted while the dispatcher
//! stops behind an open circuit.
//!
//! JetStream's delivery count is a job's attempt number (every attempt is logged under it), and
//! a redelivery cannot carry anything new, so what did not count is kept beside it, per job, in
//! the `<ns>_attempts` bucket. It is written only when such a delivery happens (a failed probe:
//! once per cooldown and service) and read only when a job is retried, so a job delivered at its
//! first attempt never touches it. Every replica sees the same count.

use async_nats::jetstream::{self, kv};
use bytes::Bytes;

use mih_shared::messages::JobId;

#[derive(Debug, thiserror::Error)]
pub(crate) enum UncountedError {
    #[error("attempts bucket: {0}")]
    Store(String),
    #[error("the uncounted deliveries of job {0} kept changing under concurrent writers")]
    Contended(JobId),
}

/// Attempts of one compare-and-set increment; a conflict means another replica wrote the same
/// job's count in between (it held the job before this one), so the next try reads its value.
const CAS_ATTEMPTS: usize = 8;

#[derive(Debug, Clone)]
pub(crate) struct Uncounted {
    kv: kv::Store,
}

impl Uncounted {
    pub(crate) async fn open(
        js: &jetstream::Context,
        bucket: &str,
    ) -> Result<Self, UncountedError> {
        let kv = js
            .get_key_value(bucket)
            .await
            .map_err(|e| UncountedError::Store(e.to_string()))?;
        Ok(Uncounted { kv })
    }

    /// How many of the job's deliveries did not count (0 when none was recorded).
    pub(crate) async fn count(&self, job: JobId) -> Result<u32, UncountedError> {
        Ok(self.read(job).await?.0)
    }

    /// Records one more delivery of `job` that does not count; returns the new total.
    pub(crate) async fn add(&self, job: JobId) -> Result<u32, UncountedError> {
        let key = job.to_string();
        for _ in 0..CAS_ATTEMPTS {
            let (count, revision) = self.read(job).await?;
            let next = count.saturating_add(1);
            let value = Bytes::from(next.to_string());
            let written = match revision {
                Some(revision) => self
                    .kv
                    .update(&key, value, revision)
                    .await
                    .map(|_| ())
                    .map_err(|e| {
                        (
                            e.kind() == kv::UpdateErrorKind::WrongLastRevision,
                            e.to_string(),
                        )
                    }),
                None => self.kv.create(&key, value).await.map(|_| ()).map_err(|e| {
                    (
                        e.kind() == kv::CreateErrorKind::AlreadyExists,
                        e.to_string(),
                    )
                }),
            };
            match written {
                Ok(()) => return Ok(next),
                Err((true, _)) => continue,
                Err((false, cause)) => return Err(UncountedError::Store(cause)),
            }
        }
        Err(UncountedError::Contended(job))
    }

    /// The stored count and its revision (`None`: nothing stored yet).
    async fn read(&self, job: JobId) -> Result<(u32, Option<u64>), UncountedError> {
        let entry = self
            .kv
            .entry(job.to_string())
            .await
            .map_err(|e| UncountedError::Store(e.to_string()))?;
        Ok(match entry {
            Some(entry) if entry.operation == kv::Operation::Put => {
                // An unreadable value counts as nothing: the job is then judged by its
                // deliveries alone, as it was before this count existed.
                let count = std::str::from_utf8(&entry.value)
                    .ok()
                    .and_then(|text| text.trim().parse().ok())
                    .unwrap_or(0);
                (count, Some(entry.revision))
            }
            // A deleted or purged key is re-created from zero; its revision still guards the
            // write against a concurrent one.
            Some(entry) => (0, Some(entry.revision)),
            None => (0, None),
        })
    }
}
