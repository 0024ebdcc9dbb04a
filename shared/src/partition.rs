//! Partitions of JOBS: one stream per partition, so that a hub scales out by adding dispatcher
//! replicas (a single stream and its consumers are served by one nats-server goroutine per
//! consumer, and stopped near 30k messages/s however many cores there were).
//!
//! A job's partition is a hash of its ordering key, or of its id when it has none: jobs of one
//! key always share a partition (per-key order is per-partition order), jobs without one spread
//! evenly. The hash is SHA-256's first eight bytes, fixed forever: every version of every
//! service must put a key in the same partition.

use std::collections::BTreeSet;

use async_nats::jetstream;
use futures::TryStreamExt;
use sha2::{Digest, Sha256};

use crate::messages::Job;
use crate::names::Names;

/// The most partitions a hub may have: each is a stream and a consumer per service.
pub const MAX_JOB_PARTITIONS: u16 = 64;

/// How many partitions JOBS has (`streams.job_partitions`); at least one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct JobPartitions(u16);

impl JobPartitions {
    pub const ONE: JobPartitions = JobPartitions(1);

    /// `count` partitions, at least one and at most [`MAX_JOB_PARTITIONS`].
    pub fn new(count: u16) -> Self {
        JobPartitions(count.clamp(1, MAX_JOB_PARTITIONS))
    }

    pub fn count(self) -> u16 {
        self.0
    }

    /// Every partition, 0 first.
    pub fn all(self) -> std::ops::Range<u16> {
        0..self.0
    }

    /// The partition of `job`.
    pub fn of(self, job: &Job) -> u16 {
        match job.ordering_key.as_deref().filter(|key| !key.is_empty()) {
            Some(key) => self.of_key(key.as_bytes()),
            None => self.of_key(job.id.0.as_bytes()),
        }
    }

    fn of_key(self, key: &[u8]) -> u16 {
        if self.0 == 1 {
            return 0;
        }
        let digest = Sha256::digest(key);
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        let hash = u64::from_be_bytes(first);
        u16::try_from(hash % u64::from(self.0)).unwrap_or(0)
    }
}

/// The partitions whose streams must be read: the configured ones and any other partition
/// stream still there (left by a higher `streams.job_partitions`, and drained by the
/// dispatchers until an operator deletes it), in order.
pub async fn in_use(
    js: &jetstream::Context,
    names: &Names,
    configured: JobPartitions,
) -> Result<Vec<u16>, jetstream::context::StreamsError> {
    let mut found: BTreeSet<u16> = configured.all().collect();
    let mut listed = js.stream_names();
    while let Some(name) = listed.try_next().await? {
        if let Some(partition) = names.jobs_partition_of_stream(&name) {
            found.insert(partition);
        }
    }
    Ok(found.into_iter().collect())
}

#[derive(Debug, thiserror::Error)]
pub enum PartitionsError {
    #[error("cannot list the partitions of JOBS: {0}")]
    List(#[from] jetstream::context::StreamsError),
    #[error("stream `{name}` is unavailable: {cause}")]
    Stream {
        name: String,
        cause: jetstream::context::GetStreamError,
    },
}

/// The stream of every partition in [`in_use`] that exists, partition 0 first. A configured
/// partition whose stream no service of this version has created yet is left out; partition 0
/// missing, or a stream that does not answer, is an error.
pub async fn streams(
    js: &jetstream::Context,
    names: &Names,
    configured: JobPartitions,
) -> Result<Vec<(u16, jetstream::stream::Stream)>, PartitionsError> {
    let numbers = in_use(js, names, configured).await?;
    let mut found = Vec::with_capacity(numbers.len());
    for number in numbers {
        let name = names.jobs_partition_stream(number);
        match js.get_stream(&name).await {
            Ok(stream) => found.push((number, stream)),
            Err(cause) if number > 0 && is_missing(&cause) => {}
            Err(cause) => return Err(PartitionsError::Stream { name, cause }),
        }
    }
    Ok(found)
}

fn is_missing(error: &jetstream::context::GetStreamError) -> bool {
    matches!(error.kind(), jetstream::context::GetStreamErrorKind::JetStream(api)
        if api.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND)
}

impl Default for JobPartitions {
    fn default() -> Self {
        Self::ONE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_partition_takes_everything() {
        assert_eq!(JobPartitions::ONE.of_key(b"anything"), 0);
        assert_eq!(JobPartitions::new(0), JobPartitions::ONE);
        assert_eq!(JobPartitions::new(1000).count(), MAX_JOB_PARTITIONS);
    }

    #[test]
    fn a_key_has_the_same_partition_in_every_version() {
        // Fixed values, computed apart (Python's hashlib: the first eight bytes of SHA-256, big
        // endian, modulo the count). A change here moves keys between partitions, which breaks
        // the order of every key with jobs queued across an upgrade.
        let four = JobPartitions::new(4);
        assert_eq!(four.of_key(b"user-42"), 1);
        assert_eq!(four.of_key(b"course-7"), 0);
        assert_eq!(JobPartitions::new(16).of_key(b"user-42"), 9);
    }

    #[test]
    fn keys_spread_over_every_partition() {
        let eight = JobPartitions::new(8);
        let mut seen = [0u32; 8];
        for n in 0..8000 {
            seen[usize::from(eight.of_key(format!("user-{n}").as_bytes()))] += 1;
        }
        for count in seen {
            assert!((800..1200).contains(&count), "{seen:?}");
        }
    }
}
