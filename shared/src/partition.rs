//! Partitions of EVENTS and JOBS: one stream per partition, so that a hub scales out by adding
//! matcher and dispatcher replicas (a single stream and its consumers are served by one
//! nats-server goroutine per consumer, and stopped near 30k messages/s however many cores there
//! were).
//!
//! A job's partition is a hash of its ordering key, or of its id when it has none: jobs of one
//! key always share a partition (per-key order is per-partition order), jobs without one spread
//! evenly. An event's partition is a hash of its source and learner (`relateduserid`, else
//! `userid`), so one learner's events keep Moodle's order within a partition; an event of no
//! user spreads by its dedup key, which a re-sent copy shares (JetStream's dedup window is per
//! stream). The hash is SHA-256's first eight bytes, fixed forever: every version of every
//! service must put a key in the same partition.

use std::collections::BTreeSet;

use async_nats::jetstream;
use futures::TryStreamExt;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::messages::Job;
use crate::names::{Names, SourceId};

/// The most partitions a stream may have: each is a stream and a consumer per reader.
pub const MAX_PARTITIONS: u16 = 64;

/// Which stream is partitioned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Partitioned {
    Events,
    Jobs,
}

impl Partitioned {
    /// The stream of `partition`: `<NS>_EVENTS` / `<NS>_JOBS` for partition 0 (what a hub had
    /// before partitions), `<NS>_EVENTS_<p>` / `<NS>_JOBS_<p>` for the others.
    pub fn stream(self, names: &Names, partition: u16) -> String {
        match self {
            Partitioned::Events => names.events_partition_stream(partition),
            Partitioned::Jobs => names.jobs_partition_stream(partition),
        }
    }

    /// The partition whose stream is `stream`, if it is one of this hub's.
    pub fn partition_of_stream(self, names: &Names, stream: &str) -> Option<u16> {
        match self {
            Partitioned::Events => names.events_partition_of_stream(stream),
            Partitioned::Jobs => names.jobs_partition_of_stream(stream),
        }
    }

    fn label(self) -> &'static str {
        match self {
            Partitioned::Events => "EVENTS",
            Partitioned::Jobs => "JOBS",
        }
    }
}

/// How many partitions a stream has (`streams.event_partitions`, `streams.job_partitions`);
/// at least one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Partitions(u16);

impl Partitions {
    pub const ONE: Partitions = Partitions(1);

    /// `count` partitions, at least one and at most [`MAX_PARTITIONS`].
    pub fn new(count: u16) -> Self {
        Partitions(count.clamp(1, MAX_PARTITIONS))
    }

    pub fn count(self) -> u16 {
        self.0
    }

    /// Every partition, 0 first.
    pub fn all(self) -> std::ops::Range<u16> {
        0..self.0
    }

    /// The partition of `job`.
    pub fn of_job(self, job: &Job) -> u16 {
        match job.ordering_key() {
            Some(key) => self.of_key(key.as_bytes()),
            None => self.of_key(job.id.0.as_bytes()),
        }
    }

    /// The partition of an event of `source` with Moodle's `data` and `dedup_key`.
    pub fn of_event(self, source: &SourceId, data: &Map<String, Value>, dedup_key: &str) -> u16 {
        if self.0 == 1 {
            return 0;
        }
        // The separator cannot occur in a source id, so no two (source, rest) pairs collide.
        // Hashed in parts: no string is built per event on ingest's path.
        let mut hasher = Sha256::new();
        hasher.update(source.as_str().as_bytes());
        match learner(data) {
            Some(user) => {
                hasher.update(b"\nuser:");
                hasher.update(user.to_string().as_bytes());
            }
            None => {
                hasher.update(b"\nkey:");
                hasher.update(dedup_key.as_bytes());
            }
        }
        self.of_digest(&hasher.finalize())
    }

    fn of_key(self, key: &[u8]) -> u16 {
        if self.0 == 1 {
            return 0;
        }
        self.of_digest(&Sha256::digest(key))
    }

    /// The partition of a SHA-256 digest: its first eight bytes, big endian, modulo the count.
    fn of_digest(self, digest: &[u8]) -> u16 {
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        let hash = u64::from_be_bytes(first);
        u16::try_from(hash % u64::from(self.0)).unwrap_or(0)
    }
}

/// An ordering key as it appears in a subject: the first eight bytes of its SHA-256, in hex.
/// A key may hold any text (dots, spaces, wildcards), which a subject token cannot; two keys
/// sharing a hash are simply ordered together.
pub fn key_hash(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    digest[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The `index`th of `partitions` partitions' share of `total` (a concurrency, events in flight):
/// shared out exactly (10 over 4: 3, 3, 2, 2) but at least one each, so a total below
/// `partitions` gives `partitions` at once.
pub fn share(total: usize, partitions: usize, index: usize) -> usize {
    let total = total.max(1);
    let partitions = partitions.max(1);
    (total / partitions + usize::from(index < total % partitions)).max(1)
}

/// The user an event is about: `relateduserid` (the learner enrolled, graded, unenrolled…),
/// else `userid` (who acted); `None` for an event of nobody (0, null, absent: cron, a guest).
fn learner(data: &Map<String, Value>) -> Option<u64> {
    ["relateduserid", "userid"].into_iter().find_map(|field| {
        match data.get(field)? {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse::<u64>().ok(),
            _ => None,
        }
        .filter(|&user| user > 0)
    })
}

/// The partitions whose streams must be read: the configured ones and any other partition
/// stream still there (left by a higher setting, and drained by the readers until an operator
/// deletes it), in order.
pub async fn in_use(
    js: &jetstream::Context,
    names: &Names,
    kind: Partitioned,
    configured: Partitions,
) -> Result<Vec<u16>, jetstream::context::StreamsError> {
    let mut found: BTreeSet<u16> = configured.all().collect();
    let mut listed = js.stream_names();
    while let Some(name) = listed.try_next().await? {
        if let Some(partition) = kind.partition_of_stream(names, &name) {
            found.insert(partition);
        }
    }
    Ok(found.into_iter().collect())
}

#[derive(Debug, thiserror::Error)]
pub enum PartitionsError {
    #[error("cannot list the partitions of {kind}: {cause}")]
    List {
        kind: &'static str,
        cause: jetstream::context::StreamsError,
    },
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
    kind: Partitioned,
    configured: Partitions,
) -> Result<Vec<(u16, jetstream::stream::Stream)>, PartitionsError> {
    let numbers =
        in_use(js, names, kind, configured)
            .await
            .map_err(|cause| PartitionsError::List {
                kind: kind.label(),
                cause,
            })?;
    let mut found = Vec::with_capacity(numbers.len());
    for number in numbers {
        let name = kind.stream(names, number);
        match js.get_stream(&name).await {
            Ok(stream) => found.push((number, stream)),
            Err(cause) if number > 0 && stream_is_missing(&cause) => {}
            Err(cause) => return Err(PartitionsError::Stream { name, cause }),
        }
    }
    Ok(found)
}

/// The stream does not exist (as opposed to NATS not answering).
pub fn stream_is_missing(error: &jetstream::context::GetStreamError) -> bool {
    matches!(error.kind(), jetstream::context::GetStreamErrorKind::JetStream(api)
        if api.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND)
}

impl Default for Partitions {
    fn default() -> Self {
        Self::ONE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_partition_takes_everything() {
        assert_eq!(Partitions::ONE.of_key(b"anything"), 0);
        assert_eq!(Partitions::new(0), Partitions::ONE);
        assert_eq!(Partitions::new(1000).count(), MAX_PARTITIONS);
    }

    #[test]
    fn a_key_has_the_same_partition_in_every_version() {
        // Fixed values, computed apart (Python's hashlib: the first eight bytes of SHA-256, big
        // endian, modulo the count). A change here moves keys between partitions, which breaks
        // the order of every key with jobs queued across an upgrade.
        let four = Partitions::new(4);
        assert_eq!(four.of_key(b"user-42"), 1);
        assert_eq!(four.of_key(b"course-7"), 0);
        assert_eq!(Partitions::new(16).of_key(b"user-42"), 9);
    }

    #[test]
    fn keys_spread_over_every_partition() {
        let eight = Partitions::new(8);
        let mut seen = [0u32; 8];
        for n in 0..8000 {
            seen[usize::from(eight.of_key(format!("user-{n}").as_bytes()))] += 1;
        }
        for count in seen {
            assert!((800..1200).contains(&count), "{seen:?}");
        }
    }

    fn data(json: Value) -> Map<String, Value> {
        match json {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    #[test]
    fn an_event_goes_where_its_learner_goes_in_every_version() {
        let four = Partitions::new(4);
        let source: SourceId = "moodle".parse().expect("source");
        // Pinned like the jobs' values: "moodle\nuser:42" and "moodle\nkey:abc" by hashlib.
        let graded = data(serde_json::json!({"userid": 2, "relateduserid": 42}));
        assert_eq!(four.of_event(&source, &graded, "k1"), 1);
        assert_eq!(Partitions::new(16).of_event(&source, &graded, "k1"), 9);
        let viewed = data(serde_json::json!({"userid": "42", "relateduserid": null}));
        assert_eq!(
            four.of_event(&source, &viewed, "k2"),
            1,
            "userid when no relateduserid"
        );
        let cron = data(serde_json::json!({"userid": 0}));
        assert_eq!(
            four.of_event(&source, &cron, "abc"),
            2,
            "no user: the dedup key"
        );
        assert_eq!(Partitions::ONE.of_event(&source, &graded, "k1"), 0);
    }

    #[test]
    fn events_of_no_user_spread_and_learners_spread() {
        let eight = Partitions::new(8);
        let source: SourceId = "moodle".parse().expect("source");
        let mut seen = [0u32; 8];
        for n in 0..4000 {
            let nobody = data(serde_json::json!({"userid": 0}));
            seen[usize::from(eight.of_event(&source, &nobody, &format!("k{n}")))] += 1;
            let learner = data(serde_json::json!({"relateduserid": n + 1}));
            seen[usize::from(eight.of_event(&source, &learner, "same"))] += 1;
        }
        for count in seen {
            assert!((800..1200).contains(&count), "{seen:?}");
        }
    }
}
