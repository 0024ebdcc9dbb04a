//! The dispatcher replicas alive, so that each takes an equal share of every service's rate
//! limit and the limit holds for the service as a whole.
//!
//! Each replica puts an entry in `<ns>_dispatchers` every [`HEARTBEAT`]; the bucket forgets
//! entries older than [`PRESENCE_TTL`] (its max age). Every replica watches the bucket and
//! counts the entries heard from within that time, by its own clock, so clocks need not
//! agree. A replica that stops deletes its entry after its last delivery, and the others take
//! up its share at once; one that dies is dropped from the count within `PRESENCE_TTL`.
//! Errors only ever keep a count too high (a slower rate), never too low.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use futures::StreamExt;
use metrics::gauge;
use tokio::sync::watch;
use tokio::time::Instant;

use mih_shared::Shutdown;
pub(crate) use mih_shared::topology::DISPATCHER_PRESENCE_TTL as PRESENCE_TTL;

use crate::metrics as m;

/// How often a replica renews its entry: well within [`PRESENCE_TTL`], so one lost renewal
/// does not drop it.
pub(crate) const HEARTBEAT: Duration = Duration::from_secs(5);
/// How often silent replicas are looked for, and a failed watch or renewal tried again.
const TICK: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub(crate) enum ReplicasError {
    #[error("dispatchers bucket: {0}")]
    Store(String),
}

/// This replica among the replicas alive, as it last saw them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Place {
    /// Replicas alive, this one included.
    pub count: usize,
    /// This one's position among them (by id), for splitting a whole number exactly.
    pub index: usize,
}

impl Place {
    #[cfg(test)]
    pub(crate) const ALONE: Place = Place { count: 1, index: 0 };

    /// This replica's part of `total` (10 over 4 replicas: 3, 3, 2, 2), at least one.
    pub(crate) fn part_of(self, total: usize) -> usize {
        mih_shared::partition::share(total, self.count, self.index)
    }
}

/// Where this replica stands among the dispatcher replicas, kept current.
pub(crate) type ReplicaCount = watch::Receiver<Place>;

/// This replica's membership: renewed until [`Membership::leave`].
#[derive(Debug)]
pub(crate) struct Membership {
    count: ReplicaCount,
    stop: Shutdown,
    /// `None` once left.
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Membership {
    /// A dispatcher that ends without leaving (an error on the way out) must not stay counted,
    /// renewing a share no worker uses: its entry is deleted in the background.
    fn drop(&mut self) {
        self.stop.trigger();
    }
}

impl Membership {
    /// Joins: this replica's entry is stored and the others are known before it returns, so
    /// its first deliveries already take only its share.
    pub(crate) async fn join(js: &jetstream::Context, bucket: &str) -> Result<Self, ReplicasError> {
        let kv = js
            .get_key_value(bucket)
            .await
            .map_err(|e| ReplicasError::Store(e.to_string()))?;
        let id = uuid::Uuid::new_v4().simple().to_string();
        let watch = kv
            .watch_with_history(">")
            .await
            .map_err(|e| ReplicasError::Store(e.to_string()))?;
        let mut members = Members::new(id.clone());
        renew(&kv, &id)
            .await
            .map_err(|e| ReplicasError::Store(e.to_string()))?;
        // The watch starts with every stored entry, then what changes; it is read until this
        // replica's own entry comes by, which follows every older one.
        let mut watch = watch;
        let deadline = Instant::now() + PRESENCE_TTL;
        while let Ok(Some(Ok(entry))) = tokio::time::timeout_at(deadline, watch.next()).await {
            members.apply(&entry, Instant::now());
            if entry.key == id {
                break;
            }
        }
        let (publish, count) = watch::channel(members.place());
        gauge!(m::REPLICAS).set(members.place().count as f64);
        let stop = Shutdown::new();
        let task = tokio::spawn(follow(kv, members, watch, publish, stop.clone()));
        Ok(Membership {
            count,
            stop,
            task: Some(task),
        })
    }

    pub(crate) fn count(&self) -> ReplicaCount {
        self.count.clone()
    }

    /// Deletes this replica's entry so the others take up its share now.
    pub(crate) async fn leave(mut self) {
        self.stop.trigger();
        if let Some(task) = self.task.take()
            && let Err(error) = task.await
        {
            tracing::warn!(%error, "the presence task ended abnormally");
        }
    }
}

/// The replicas heard from, and when (by this replica's clock).
#[derive(Debug)]
struct Members {
    own: String,
    heard: HashMap<String, Instant>,
}

impl Members {
    fn new(own: String) -> Self {
        Members {
            own,
            heard: HashMap::new(),
        }
    }

    fn apply(&mut self, entry: &kv::Entry, now: Instant) {
        match entry.operation {
            kv::Operation::Put => {
                self.heard.insert(entry.key.clone(), now);
            }
            kv::Operation::Delete | kv::Operation::Purge => {
                self.heard.remove(&entry.key);
            }
        }
    }

    /// Forgets replicas not heard from within the presence TTL before this one's own latest
    /// renewal came by. Measured against that rather than the clock, so that a replica cut
    /// off from NATS (hearing no one, itself included) forgets no one and does not take the
    /// whole rate for itself.
    fn forget_silent(&mut self) {
        let Some(own) = self.heard.get(&self.own).copied() else {
            return;
        };
        self.heard
            .retain(|_, heard| own.saturating_duration_since(*heard) < PRESENCE_TTL);
    }

    /// Replicas alive (at least this one, whatever the bucket said) and this one's place.
    fn place(&self) -> Place {
        let others = self.heard.keys().filter(|key| **key != self.own);
        let (count, before) = others.fold((1, 0), |(count, before), key| {
            (count + 1, before + usize::from(*key < self.own))
        });
        Place {
            count,
            index: before,
        }
    }
}

async fn renew(kv: &kv::Store, id: &str) -> Result<(), kv::PutError> {
    let value = serde_json::json!({ "since": chrono::Utc::now() }).to_string();
    kv.put(id, Bytes::from(value)).await.map(|_| ())
}

async fn follow(
    kv: kv::Store,
    mut members: Members,
    watch: kv::Watch,
    publish: watch::Sender<Place>,
    stop: Shutdown,
) {
    let mut watch = Some(watch);
    let mut tick = tokio::time::interval(TICK);
    let mut next_renewal = Instant::now() + HEARTBEAT;
    loop {
        let update = tokio::select! {
            () = stop.triggered() => break,
            _ = tick.tick() => None,
            update = next_update(&mut watch) => Some(update),
        };
        let now = Instant::now();
        match update {
            Some(Some(Ok(entry))) => members.apply(&entry, now),
            Some(Some(Err(error))) => {
                tracing::warn!(%error, "watching the dispatcher replicas failed; watching again");
                watch = None;
            }
            Some(None) => watch = None,
            None => {
                if watch.is_none() {
                    watch = kv.watch_with_history(">").await.ok();
                }
                if now >= next_renewal {
                    match renew(&kv, &members.own).await {
                        Ok(()) => next_renewal = now + HEARTBEAT,
                        Err(error) => {
                            tracing::warn!(%error, "cannot renew this dispatcher's presence; trying again")
                        }
                    }
                }
                members.forget_silent();
            }
        }
        let place = members.place();
        if *publish.borrow() != place {
            tracing::info!(
                replicas = place.count,
                "dispatcher replicas changed; each takes an equal share of every rate limit"
            );
            gauge!(m::REPLICAS).set(place.count as f64);
            publish.send_replace(place);
        }
    }
    if let Err(error) = kv.delete(&members.own).await {
        tracing::warn!(%error, "cannot delete this dispatcher's presence; the others take up its share when it expires");
    }
}

/// The watch's next update, or never while there is no watch.
async fn next_update(watch: &mut Option<kv::Watch>) -> Option<Result<kv::Entry, kv::WatcherError>> {
    match watch {
        Some(watch) => watch.next().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_counts_itself_and_those_heard_from_recently() {
        let start = Instant::now();
        let mut members = Members::new("m".into());
        assert_eq!(
            members.place(),
            Place::ALONE,
            "alone before anything is heard"
        );
        members.heard.insert("m".into(), start);
        members.heard.insert("b".into(), start);
        members
            .heard
            .insert("z".into(), start + Duration::from_secs(10));
        assert_eq!(members.place(), Place { count: 3, index: 1 });
        members.forget_silent();
        assert_eq!(members.place().count, 3, "no one silent yet");
        // Its own renewal came by 16 s later: b went silent, z is still heard.
        members
            .heard
            .insert("m".into(), start + PRESENCE_TTL + Duration::from_secs(1));
        members.forget_silent();
        assert_eq!(members.place(), Place { count: 2, index: 0 });
        members.heard.clear();
        assert_eq!(members.place(), Place::ALONE, "never fewer than itself");
    }

    #[test]
    fn a_replica_that_hears_no_one_forgets_no_one() {
        let start = Instant::now();
        let mut members = Members::new("m".into());
        members.heard.insert("m".into(), start);
        members.heard.insert("b".into(), start);
        // Its own renewals stopped coming by (NATS unreachable): b is kept, however long.
        members.forget_silent();
        assert_eq!(members.place().count, 2);
    }

    #[test]
    fn replicas_split_a_whole_number_exactly() {
        let parts: Vec<usize> = (0..4)
            .map(|index| Place { count: 4, index }.part_of(10))
            .collect();
        assert_eq!(parts, [3, 3, 2, 2]);
        assert_eq!(Place { count: 3, index: 2 }.part_of(1), 1, "at least one");
    }
}
