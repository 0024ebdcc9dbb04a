//! Per-key ordered delivery: the keyed lane of a service's worker.
//!
//! A job with an ordering key is stored on its key's own subject in JOBS
//! (`<ns>.jobs.<service>.<p>.<key hash>`), and JOBS is a work queue that forgets a job once it
//! is delivered or dead-lettered. So the key's next job is simply its subject's first message,
//! whichever replica holds it: a job is attempted only when it is that first message. Nothing
//! else is shared between replicas, and nothing has to be cleaned up after a dead one.
//!
//! The lane's consumer (`ordered-<service>`) has no cap on unacknowledged jobs, and each
//! process holds up to [`WINDOW`] at once, so that jobs waiting for their turn do not keep other
//! keys back; at most the service's concurrency share is attempted at once. A job whose predecessor this process holds waits here (its ack
//! deadline extended) and goes as soon as the predecessor is settled; one whose predecessor is
//! elsewhere (another replica, or waiting in JOBS for a retry) checks again after a short,
//! growing pause and is handed back after [`PATIENCE`]. Those waits do not count as attempts.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_nats::jetstream::stream::{DirectGetErrorKind, LastRawMessageErrorKind};
use async_nats::jetstream::{self, AckKind, consumer::pull};
use metrics::counter;
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::Instrument;

use mih_shared::Shutdown;
use mih_shared::consumer::{Handler, Settled};
use mih_shared::error::Disposition;
use mih_shared::live::LiveService;
use mih_shared::messages::{self, Job, JobId};
use mih_shared::names::Names;

use crate::held::HOLD_RECHECK;
use crate::metrics as m;
use crate::replicas::ReplicaCount;
use crate::worker::Worker;

/// Keyed jobs this process holds at once per partition (waiting for their turn or attempted).
pub(crate) const WINDOW: usize = 512;
/// Jobs of one key waiting here at once; later ones wait in JOBS, so that one busy key does
/// not fill the window.
const WAITERS_PER_KEY: usize = 8;
/// How long a job whose predecessor is elsewhere keeps checking before it is handed back.
const PATIENCE: Duration = Duration::from_secs(3);
/// First and longest pause between two checks of a predecessor held elsewhere.
const FIRST_CHECK: Duration = Duration::from_millis(5);
const LONGEST_CHECK: Duration = Duration::from_millis(250);
/// When a job handed back to wait comes again, unless its predecessor's retry is due later.
const COME_BACK: Duration = Duration::from_millis(500);
/// Keys known here beyond which the idle ones are forgotten.
const FORGET_ABOVE: usize = 10_000;
/// Sequences of jobs this process settled, remembered until JetStream has surely applied
/// the acknowledgement (it is not confirmed): a later job then need not wait for it.
const SETTLED_MEMORY: usize = 4096;

/// The durable consumer of one service's keyed jobs in one partition.
pub(crate) fn consumer_config(
    names: &Names,
    service: &LiveService,
    partition: u16,
    ack_wait: Duration,
) -> pull::Config {
    pull::Config {
        durable_name: Some(names.ordered_consumer(&service.name)),
        description: Some(format!(
            "mih dispatcher: jobs of {} in order per key",
            service.name
        )),
        filter_subject: names.keyed_jobs_in(&service.name, partition),
        ack_policy: jetstream::consumer::AckPolicy::Explicit,
        ack_wait,
        // Unlimited: jobs handed back to wait for their turn stay pending, and a cap would let a
        // key with a long backlog behind a retrying job stop the consumer for every other key.
        max_ack_pending: -1,
        deliver_policy: jetstream::consumer::DeliverPolicy::All,
        max_deliver: -1,
        ..Default::default()
    }
}

/// What this process knows of one key's jobs.
#[derive(Debug, Default)]
struct Key {
    /// Sequences of the key's jobs held here now (waiting or attempted).
    held: BTreeSet<u64>,
    /// The key's head handed back for a retry, and until when it is away.
    retry: Option<(u64, Instant)>,
    /// Woken when one of the key's jobs here is settled.
    settled: Arc<Notify>,
}

/// One partition's keyed lane: what its handlers share.
#[derive(Debug)]
pub(crate) struct Lane {
    worker: Arc<Worker>,
    stream: jetstream::stream::Stream,
    shutdown: Shutdown,
    /// The durable consumer's name, for the spans.
    consumer: String,
    /// Attempts at once: this replica's part of the partition's share of the concurrency.
    attempts: AttemptSlots,
    keys: Mutex<HashMap<String, Key>>,
    settled: Mutex<SettledSeqs>,
}

/// The turn of a job: go now, or hand it back for `after`.
enum Turn {
    Go,
    Later(Duration),
}

/// A job's key and the dead letters holding it.
enum Hold {
    Free,
    /// Held by a dead letter this job is not the replay of.
    Held,
    /// Held by the dead letter this job replays.
    Resolving,
}

impl Lane {
    pub(crate) fn new(
        worker: Arc<Worker>,
        stream: jetstream::stream::Stream,
        consumer: String,
        share: usize,
        shutdown: Shutdown,
    ) -> Self {
        Lane {
            attempts: AttemptSlots::new(share, worker.shared.replicas.clone()),
            worker,
            stream,
            shutdown,
            consumer,
            keys: Mutex::new(HashMap::new()),
            settled: Mutex::new(SettledSeqs::default()),
        }
    }

    async fn handle_job(&self, message: &jetstream::Message) -> Disposition {
        let Some(sequence) = message.info().ok().map(|info| info.stream_sequence) else {
            return self.worker.process(message, &self.shutdown).await;
        };
        let subject = message.subject.to_string();
        let job = messages::decode::<Job>(&message.payload).ok();
        let turn = match self.hold(job.as_ref()) {
            Hold::Free => match self.turn(message, &subject, sequence).await {
                // A dead letter may have held the key while this job waited.
                Turn::Go => match self.hold(job.as_ref()) {
                    Hold::Held => Turn::Later(HOLD_RECHECK),
                    Hold::Free | Hold::Resolving => Turn::Go,
                },
                later => later,
            },
            Hold::Held => Turn::Later(HOLD_RECHECK),
            // The replay that resolves the hold: ahead of the later jobs it is behind in JOBS.
            Hold::Resolving => Turn::Go,
        };
        match turn {
            Turn::Go => {}
            Turn::Later(after) => {
                counter!(m::ORDER_WAITS, "service" => self.worker.service.name.to_string())
                    .increment(1);
                self.spare(message).await;
                return Disposition::Retry { after: Some(after) };
            }
        }
        let _attempt = self.attempts.take().await;
        self.worker.until_ready().await;
        let disposition = self.worker.process(message, &self.shutdown).await;
        if let Disposition::Retry { after: Some(after) } = &disposition
            && let Some(key) = self.keys().get_mut(&subject)
        {
            key.retry = Some((sequence, Instant::now() + *after));
            key.settled.notify_waiters();
        }
        disposition
    }

    /// Whether `job`'s key is held by a dead letter, and whether `job` is the replay of it.
    fn hold(&self, job: Option<&Job>) -> Hold {
        let Some(job) = job else {
            return Hold::Free;
        };
        let Some(holder) = self
            .worker
            .held_entry(job)
            .and_then(|entry| self.worker.shared.held.holder(&entry))
        else {
            return Hold::Free;
        };
        if job.replay_of == Some(holder) {
            Hold::Resolving
        } else {
            Hold::Held
        }
    }

    /// Waits until `sequence` is its key's first job, or says when to hand it back.
    async fn turn(&self, message: &jetstream::Message, subject: &str, sequence: u64) -> Turn {
        let waiting_here = {
            let mut keys = self.keys();
            let key = keys.entry(subject.to_owned()).or_default();
            key.held.insert(sequence);
            key.held.range(..sequence).count()
        };
        if waiting_here > WAITERS_PER_KEY {
            return Turn::Later(COME_BACK);
        }
        let patience = Instant::now() + PATIENCE;
        let mut pause = FIRST_CHECK;
        let mut progress = Instant::now() + self.worker.ack_wait / 3;
        loop {
            // A predecessor handed back for a retry: come back after it. One held here: wait
            // for it to be settled.
            let notify = {
                let keys = self.keys();
                let key = keys.get(subject);
                if let Some((_, until)) = key
                    .and_then(|key| key.retry)
                    .filter(|(head, until)| *head < sequence && *until > Instant::now())
                {
                    return Turn::Later(until - Instant::now() + COME_BACK);
                }
                key.filter(|key| key.held.range(..sequence).next().is_some())
                    .map(|key| Arc::clone(&key.settled))
            };
            if let Some(notify) = notify {
                let settled = notify.notified();
                let mut settled = std::pin::pin!(settled);
                settled.as_mut().enable();
                // Checked again with the wake-up armed, so a settlement in between is seen.
                if self.has_predecessor_here(subject, sequence) {
                    tokio::select! {
                        () = self.shutdown.triggered() => return Turn::Later(Duration::ZERO),
                        () = settled => {}
                        () = tokio::time::sleep_until(progress) => {
                            progress = self.extend(message).await;
                        }
                    }
                }
                continue;
            }
            match self.first_pending(subject).await {
                Ok(Some(first)) if first < sequence => {
                    // Held elsewhere, or waiting in JOBS for its retry.
                    if Instant::now() >= patience {
                        return Turn::Later(COME_BACK);
                    }
                    tokio::select! {
                        () = self.shutdown.triggered() => return Turn::Later(Duration::ZERO),
                        () = tokio::time::sleep(pause) => {}
                    }
                    pause = (pause * 2).min(LONGEST_CHECK);
                    if Instant::now() >= progress {
                        progress = self.extend(message).await;
                    }
                }
                // This job is first (or, settled meanwhile, gone: delivering it again is the
                // at-least-once promise, never a reordering).
                Ok(_) => return Turn::Go,
                Err(error) => {
                    tracing::warn!(%error, subject, "cannot read the key's first job; trying later");
                    return Turn::Later(COME_BACK);
                }
            }
        }
    }

    fn has_predecessor_here(&self, subject: &str, sequence: u64) -> bool {
        self.keys()
            .get(subject)
            .is_some_and(|key| key.held.range(..sequence).next().is_some())
    }

    /// The sequence of the first job on `subject` that this process has not settled, `None`
    /// when there is none.
    ///
    /// Read with a direct get, which any replica of the stream answers without the JetStream
    /// API's queue (a third of the cost per keyed job in `mih-bench e2e --only ordered`). A
    /// replica behind the leader can only be missing the newest messages and still hold
    /// settled ones: the first an outdated replica names is never later than the true first,
    /// so at worst this job waits a little longer. "None" from it could hide an earlier job it
    /// has not received yet, so that answer is asked of the leader again.
    async fn first_pending(&self, subject: &str) -> Result<Option<u64>, String> {
        let mut from = None;
        loop {
            let first = match self.stream.direct_get_next_for_subject(subject, from).await {
                Ok(message) => Some(message.sequence),
                Err(error) if error.kind() == DirectGetErrorKind::NotFound => {
                    self.first_at_leader(subject, from).await?
                }
                Err(error) => return Err(error.to_string()),
            };
            match first {
                Some(first) if self.settled_here().contains(first) => from = Some(first + 1),
                first => return Ok(first),
            }
        }
    }

    /// The first job on `subject` from `from` on, as the stream's leader knows it.
    async fn first_at_leader(
        &self,
        subject: &str,
        from: Option<u64>,
    ) -> Result<Option<u64>, String> {
        let found = match from {
            None => self.stream.get_next_raw_message_by_subject(subject).await,
            Some(from) => {
                self.stream
                    .get_first_raw_message_by_subject(subject, from)
                    .await
            }
        };
        match found {
            Ok(message) => Ok(Some(message.sequence)),
            Err(error) if error.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(error) => Err(error.to_string()),
        }
    }

    /// Extends the job's ack deadline; returns when to do it again.
    async fn extend(&self, message: &jetstream::Message) -> Instant {
        if let Err(error) = message.ack_with(AckKind::Progress).await {
            tracing::debug!(%error, "could not extend a waiting job's ack deadline");
        }
        Instant::now() + self.worker.ack_wait / 3
    }

    /// Records that this delivery of the job was a wait, not an attempt.
    async fn spare(&self, message: &jetstream::Message) {
        let Some(job) = job_id(message) else {
            return;
        };
        self.worker.spare_id(job).await;
    }

    fn keys(&self) -> std::sync::MutexGuard<'_, HashMap<String, Key>> {
        self.keys.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn settled_here(&self) -> std::sync::MutexGuard<'_, SettledSeqs> {
        self.settled.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// After the loop settled a job: its key's next job here may go.
    fn release(&self, message: &jetstream::Message, settled: Settled) {
        let Some(sequence) = message.info().ok().map(|info| info.stream_sequence) else {
            return;
        };
        if settled != Settled::Retried {
            self.settled_here().insert(sequence);
        }
        let mut keys = self.keys();
        let subject = message.subject.as_str();
        let Some(key) = keys.get_mut(subject) else {
            return;
        };
        key.held.remove(&sequence);
        if settled != Settled::Retried {
            key.retry = None;
        }
        key.settled.notify_waiters();
        if key.held.is_empty() && key.retry.is_none_or(|(_, until)| until <= Instant::now()) {
            keys.remove(subject);
        }
        // A key whose retried job came back to another replica is never settled here again.
        if keys.len() > FORGET_ABOVE {
            let now = Instant::now();
            keys.retain(|_, key| {
                !key.held.is_empty() || key.retry.is_some_and(|(_, until)| until > now)
            });
        }
    }
}

/// The job id a message carries in its `Nats-Msg-Id` header (set when it was published), so a
/// wait can be recorded without decoding the job.
fn job_id(message: &jetstream::Message) -> Option<JobId> {
    let headers = message.headers.as_ref()?;
    let id = headers.get(async_nats::header::NATS_MESSAGE_ID)?;
    id.as_str().parse().ok()
}

/// The last [`SETTLED_MEMORY`] sequences settled here.
#[derive(Debug, Default)]
struct SettledSeqs {
    order: VecDeque<u64>,
    set: std::collections::HashSet<u64>,
}

impl SettledSeqs {
    fn insert(&mut self, sequence: u64) {
        if self.set.insert(sequence) {
            self.order.push_back(sequence);
        }
        while self.order.len() > SETTLED_MEMORY {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }

    fn contains(&self, sequence: u64) -> bool {
        self.set.contains(&sequence)
    }
}

impl Handler for Lane {
    async fn handle(&self, message: &jetstream::Message) -> Disposition {
        let span = self.worker.job_span(message, &self.consumer);
        self.handle_job(message).instrument(span).await
    }

    fn settled(&self, message: &jetstream::Message, settled: Settled) {
        self.release(message, settled);
    }
}

/// How often a lane waiting for an attempt slot looks again at the replicas alive (a slot
/// freed here wakes it at once).
const SLOTS_RECHECK: Duration = Duration::from_millis(100);

/// The attempts a lane may make at once. Every replica's lane reads the same keyed consumer,
/// which has no cap on pending jobs, so the partition's share of the service's concurrency
/// is split among the replicas alive (10 over 4: 3, 3, 2, 2), as JetStream's cap does for
/// unkeyed jobs.
#[derive(Debug)]
struct AttemptSlots {
    share: usize,
    replicas: ReplicaCount,
    busy: Mutex<usize>,
    freed: Notify,
}

/// An attempt slot, given back when dropped.
struct Slot<'a>(&'a AttemptSlots);

impl AttemptSlots {
    fn new(share: usize, replicas: ReplicaCount) -> Self {
        AttemptSlots {
            share: share.max(1),
            replicas,
            busy: Mutex::new(0),
            freed: Notify::new(),
        }
    }

    fn limit(&self) -> usize {
        self.replicas.borrow().part_of(self.share)
    }

    fn try_take(&self) -> Option<Slot<'_>> {
        let mut busy = self.busy.lock().unwrap_or_else(PoisonError::into_inner);
        (*busy < self.limit()).then(|| {
            *busy += 1;
            Slot(self)
        })
    }

    async fn take(&self) -> Slot<'_> {
        loop {
            if let Some(slot) = self.try_take() {
                return slot;
            }
            // `notify_one` keeps a wake-up for a waiter that is not waiting yet.
            let _ = tokio::time::timeout(SLOTS_RECHECK, self.freed.notified()).await;
        }
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut busy = self.0.busy.lock().unwrap_or_else(PoisonError::into_inner);
        *busy = busy.saturating_sub(1);
        drop(busy);
        self.0.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settled_sequences_are_remembered_up_to_the_memory() {
        let mut settled = SettledSeqs::default();
        for sequence in 1..=(SETTLED_MEMORY as u64 + 10) {
            settled.insert(sequence);
        }
        assert!(!settled.contains(10));
        assert!(settled.contains(11));
        assert!(settled.contains(SETTLED_MEMORY as u64 + 10));
        assert_eq!(settled.order.len(), SETTLED_MEMORY);
    }

    #[tokio::test]
    async fn replicas_split_the_attempt_slots_and_a_freed_slot_is_taken_again() {
        use crate::replicas::Place;
        let (tell, replicas) = tokio::sync::watch::channel(Place { count: 2, index: 0 });
        let slots = AttemptSlots::new(3, replicas);
        let first = slots.try_take().expect("first of two");
        let _second = slots.try_take().expect("second of two");
        assert!(slots.try_take().is_none(), "3 over 2 replicas: 2 here");
        tell.send_replace(Place::ALONE);
        let third = slots.try_take().expect("alone: all 3");
        assert!(slots.try_take().is_none());
        drop(third);
        tell.send_replace(Place { count: 3, index: 2 });
        drop(first);
        assert!(slots.try_take().is_none(), "1 of 3 here, and 1 still busy");
        let waiting = slots.take();
        tell.send_replace(Place::ALONE);
        let _fourth = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("taken once the replicas change");
    }
}
