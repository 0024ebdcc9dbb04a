//! One service's worker: its durable consumer on the service's subject in every partition of
//! JOBS, at most `concurrency` deliveries at once shared out among the partitions (each
//! consumer's max unacknowledged is its share, so JetStream hands out no more to all replicas),
//! an optional rate limit, and the circuit breaker in front of every attempt.
//!
//! Retries are `nak`s with a delay (exponential backoff, full jitter), never a sleep on a held
//! message; JetStream's delivery count is the attempt number. While the circuit is open the
//! worker takes no new jobs: the ones it holds wait (their ack deadline extended), the rest
//! wait in JOBS.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind, consumer::pull};
use chrono::Utc;
use metrics::{counter, gauge, histogram};
use rand::Rng;
use tracing::Instrument;

use mih_shared::Shutdown;
use mih_shared::circuit::{Admission, Health};
use mih_shared::consumer::{DeadLetters, Handler, Settings};
use mih_shared::error::Disposition;
use mih_shared::live::LiveService;
use mih_shared::messages::{self, Job, JobId};
use mih_shared::names::Names;
use mih_shared::partition;

use crate::breaker::Breaker;
use crate::held::HeldKeys;
use crate::metrics as m;
use crate::rate::RateLimit;
use crate::record::Recorder;
use crate::replicas::ReplicaCount;
use crate::transport::{Attempt, AttemptMeta, EXCERPT_LIMIT, Target, Verdict};
use crate::uncounted::Uncounted;

/// When a job whose dead letter could not be published comes again, to try again.
const DEAD_LETTER_AGAIN: Duration = Duration::from_secs(5);

pub(crate) struct Worker {
    pub service: Arc<LiveService>,
    pub target: Arc<Target>,
    pub breaker: Arc<Breaker>,
    pub recorder: Recorder,
    pub ack_wait: Duration,
    pub shared: SharedState,
    limiter: Option<RateLimit>,
    names: Names,
}

/// What every replica keeps about jobs beside JOBS: deliveries that did not count, keys held
/// by a dead letter, and how many replicas share the rate limits.
#[derive(Debug, Clone)]
pub(crate) struct SharedState {
    pub uncounted: Uncounted,
    pub held: HeldKeys,
    pub replicas: ReplicaCount,
    /// `nats.ack_linger`.
    pub ack_linger: Duration,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("service", &self.service.name)
            .finish_non_exhaustive()
    }
}

/// A service's deliveries at once in the `index`th of `partitions` partitions: `concurrency`
/// shared out exactly (10 over 4: 3, 3, 2, 2) but at least one each, so a service with fewer
/// than `partitions` may have `partitions` at once.
pub(crate) fn concurrency_of_partition(concurrency: u32, partitions: usize, index: usize) -> usize {
    partition::share(
        usize::try_from(concurrency).unwrap_or(usize::MAX),
        partitions,
        index,
    )
}

/// The durable consumer of one service's jobs in one partition.
pub(crate) fn consumer_config(
    names: &Names,
    service: &LiveService,
    partition: u16,
    share: usize,
    ack_wait: Duration,
) -> pull::Config {
    pull::Config {
        durable_name: Some(names.dispatch_consumer(&service.name)),
        description: Some(format!("mih dispatcher: jobs of {}", service.name)),
        filter_subject: names.job_subject_in(&service.name, partition),
        ack_policy: jetstream::consumer::AckPolicy::Explicit,
        ack_wait,
        max_ack_pending: i64::try_from(share).unwrap_or(i64::MAX),
        deliver_policy: jetstream::consumer::DeliverPolicy::All,
        // The worker decides when a job is exhausted (max_retries) and dead-letters it.
        max_deliver: -1,
        ..Default::default()
    }
}

/// One partition's consumer of keyed jobs, with what its lane needs.
pub(crate) struct Keyed {
    pub consumer: jetstream::consumer::PullConsumer,
    pub stream: jetstream::stream::Stream,
    /// Attempts at once in the lane: the partition's share of the concurrency.
    pub share: usize,
}

/// The ack wait of a service's consumer: its timeout plus a margin.
pub(crate) fn ack_wait(service: &LiveService, margin: Duration) -> Duration {
    Duration::from_millis(service.timeout_ms) + margin
}

impl Worker {
    pub(crate) fn new(
        service: Arc<LiveService>,
        target: Arc<Target>,
        breaker: Arc<Breaker>,
        recorder: Recorder,
        ack_wait: Duration,
        shared: SharedState,
        names: Names,
    ) -> Self {
        let limiter = service
            .rate_limit_per_sec
            .and_then(NonZeroU32::new)
            .map(|rate| RateLimit::new(service.name.to_string(), rate, shared.replicas.clone()));
        Worker {
            service,
            target,
            breaker,
            recorder,
            ack_wait,
            shared,
            limiter,
            names,
        }
    }

    /// The held-keys entry of `job`'s ordering key, if it has one.
    pub(crate) fn held_entry(&self, job: &Job) -> Option<String> {
        let key = job.ordering_key()?;
        Some(self.names.held_key(&job.service, &partition::key_hash(key)))
    }

    /// A delivered replay of the dead letter holding its key releases the key.
    async fn release_key(&self, job: &Job) {
        let (Some(entry), Some(original)) = (self.held_entry(job), job.replay_of) else {
            return;
        };
        if let Err(error) = self.shared.held.release(&entry, original).await {
            tracing::warn!(%error, key = %entry, "the replay was delivered but its key could not be released; delete the dead letter to release it");
        }
    }

    /// Delivers the service's jobs from every partition's consumers until `shutdown`: the
    /// unkeyed ones, and the keyed ones in order per key; in-flight deliveries finish first.
    pub(crate) async fn run(
        self: Arc<Self>,
        consumers: Vec<jetstream::consumer::PullConsumer>,
        keyed: Vec<Keyed>,
        shutdown: Shutdown,
    ) {
        let ordered = keyed.into_iter().map(|keyed| {
            let name = keyed.consumer.cached_info().name.clone();
            let settings = Settings::new(
                format!("{} (ordered)", self.service.name),
                crate::ordered::WINDOW,
                DeadLetters::Terminate,
            )
            .pull_batch(256)
            .ack_linger(self.shared.ack_linger);
            let lane = Arc::new(crate::ordered::Lane::new(
                Arc::clone(&self),
                keyed.stream,
                name,
                keyed.share,
                shutdown.clone(),
            ));
            mih_shared::consumer::run(keyed.consumer, settings, lane, shutdown.clone())
        });
        let ordered = futures::future::join_all(ordered);
        let loops = consumers.into_iter().map(|consumer| {
            // The consumer's max unacknowledged is this partition's share of the concurrency.
            let share = usize::try_from(consumer.cached_info().config.max_ack_pending)
                .ok()
                .filter(|share| *share > 0)
                .unwrap_or(1);
            // The worker dead-letters what it gives up on itself (to DLQ); the loop only
            // drops what cannot be read.
            let settings =
                Settings::new(self.service.name.to_string(), share, DeadLetters::Terminate)
                    .pull_batch(share.min(256))
                    .ack_linger(self.shared.ack_linger);
            let jobs = Arc::new(Jobs {
                worker: Arc::clone(&self),
                shutdown: shutdown.clone(),
                consumer: consumer.cached_info().name.clone(),
            });
            mih_shared::consumer::run(consumer, settings, jobs, shutdown.clone())
        });
        futures::future::join(futures::future::join_all(loops), ordered).await;
    }

    /// The span of one job taken from `consumer`; the attempt fills in the job and attempt.
    pub(crate) fn job_span(&self, message: &jetstream::Message, consumer: &str) -> tracing::Span {
        mih_shared::process_span!(
            message,
            consumer,
            service = %self.service.name,
            job_id = tracing::field::Empty,
            attempt = tracing::field::Empty,
        )
    }

    /// Waits until this replica's share of the service's rate limit lets another attempt
    /// start.
    pub(crate) async fn until_ready(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.until_ready().await;
        }
    }

    /// Records that this delivery of job `id` does not count against its retries.
    pub(crate) async fn spare_id(&self, id: JobId) {
        if let Err(error) = self.shared.uncounted.add(id).await {
            tracing::warn!(%error, job_id = %id, "could not record an uncounted delivery; it counts as an attempt");
        }
    }

    pub(crate) async fn process(
        &self,
        message: &jetstream::Message,
        shutdown: &Shutdown,
    ) -> Disposition {
        let attempt = message
            .info()
            .map(|info| u32::try_from(info.delivered).unwrap_or(u32::MAX))
            .unwrap_or(1);
        let job: Job = match messages::decode(&message.payload) {
            Ok(job) => job,
            Err(error) => {
                counter!(m::DEAD_LETTERS, "service" => self.service.name.to_string(), "reason" => "unreadable").increment(1);
                tracing::error!(%error, subject = %message.subject, "job is not readable; dropped");
                return Disposition::DeadLetter {
                    reason: format!("not readable: {error}"),
                };
            }
        };
        let span = tracing::Span::current();
        span.record("job_id", tracing::field::display(job.id));
        span.record("attempt", attempt);

        let age = Utc::now() - job.created_at;
        let max_age = chrono::Duration::milliseconds(
            i64::try_from(self.service.max_job_age_ms).unwrap_or(i64::MAX),
        );
        if age > max_age {
            let reason = format!(
                "older than the service's max job age ({} s) before it could be delivered",
                self.service.max_job_age_ms / 1000
            );
            return self
                .dead_letter(&job, None, attempt.saturating_sub(1), &reason, "expired")
                .await;
        }

        let Some(probe) = self.wait_for_circuit(message, shutdown).await else {
            // Shutting down while paused: hand the job back untouched, at once, for another
            // replica. That redelivery is not an attempt.
            self.spare(&job).await;
            return Disposition::Retry {
                after: Some(Duration::ZERO),
            };
        };

        let meta = AttemptMeta {
            job_id: job.id,
            event_id: job.event_id,
            attempt,
            // Set by the target from the attempt's own span.
            traceparent: None,
            body_limit: EXCERPT_LIMIT,
        };
        let started_at = Utc::now();
        let clock = Instant::now();
        let result = self.target.deliver(&job.request, &meta).await;
        let elapsed = clock.elapsed();
        histogram!(m::ATTEMPT_SECONDS, "service" => self.service.name.to_string())
            .record(elapsed.as_secs_f64());
        // What happens next is decided before the outcome is published, so that a retry's
        // outcome carries when the retry is due.
        let next = self.next_step(&job, attempt, probe, &result).await;
        let retry_at = match &next {
            Next::Retry(delay) => chrono::Duration::from_std(*delay)
                .ok()
                .map(|delay| Utc::now() + delay),
            Next::Done | Next::GiveUp { .. } => None,
        };
        let outcome = self
            .recorder
            .outcome(&job, attempt, started_at, elapsed, &result, retry_at)
            .await;
        self.learn(&result).await;

        tracing::debug!(
            job_id = %job.id,
            attempt,
            probe,
            status = ?result.status,
            outcome = outcome.status.as_str(),
            duration_ms = outcome.duration_ms,
            "attempt finished"
        );
        match next {
            Next::Done => {
                if job.hold_key {
                    self.release_key(&job).await;
                }
                Disposition::Ack
            }
            Next::GiveUp { reason, label } => {
                self.dead_letter(&job, Some(outcome), attempt, &reason, label)
                    .await
            }
            Next::Retry(delay) => Disposition::Retry { after: Some(delay) },
        }
    }

    /// What an attempt's answer tells every replica about the service: its health, and a
    /// pause when it answered 429.
    pub(crate) async fn learn(&self, result: &Attempt) {
        if let Some(until) = pause_asked(result, Utc::now())
            && let Err(error) = self.breaker.pause(until).await
        {
            tracing::warn!(%error, "the service answered 429 but the pause could not be shared");
        }
        if let Err(error) = self.breaker.record(health(result)).await {
            tracing::warn!(%error, "circuit not updated");
        }
    }

    /// After an attempt: done, given up on (why), or retried after a delay.
    async fn next_step(&self, job: &Job, attempt: u32, probe: bool, result: &Attempt) -> Next {
        let retry_after = match result.verdict {
            Verdict::Delivered => return Next::Done,
            Verdict::Permanent => {
                return Next::GiveUp {
                    reason: format!("permanent failure: {}", describe(result)),
                    label: "permanent",
                };
            }
            Verdict::Retryable { retry_after } => retry_after,
            Verdict::Timeout => None,
        };
        // A failed probe only says the service is still down; the job goes back to waiting
        // behind the breaker with its retries intact.
        let spared = if probe {
            counter!(m::PROBES_FAILED, "service" => self.service.name.to_string()).increment(1);
            self.spare(job).await
        } else if attempt > 1 {
            match self.shared.uncounted.count(job.id).await {
                Ok(spared) => spared,
                Err(error) => {
                    // Without the count the job could be given up on too early: try later.
                    tracing::warn!(%error, "cannot read the job's uncounted deliveries; retrying it later");
                    return Next::Retry(self.retry_delay(attempt, retry_after));
                }
            }
        } else {
            0
        };
        let counted = attempt.saturating_sub(spared).max(1);
        if !probe && counted > self.service.retry.max_retries {
            let reason = if spared > 0 {
                format!(
                    "gave up after {counted} attempts (and {spared} probes while the service was down): {}",
                    describe(result)
                )
            } else {
                format!("gave up after {counted} attempts: {}", describe(result))
            };
            return Next::GiveUp {
                reason,
                label: "exhausted",
            };
        }
        Next::Retry(self.retry_delay(counted, retry_after))
    }

    /// Records that this delivery of `job` does not count against its retries; returns how
    /// many of its deliveries did not count so far. A failure to record makes it count.
    async fn spare(&self, job: &Job) -> u32 {
        match self.shared.uncounted.add(job.id).await {
            Ok(spared) => spared,
            Err(error) => {
                tracing::warn!(%error, job_id = %job.id, "could not record an uncounted delivery; it counts as an attempt");
                0
            }
        }
    }

    /// Waits while the circuit keeps attempts back, extending the held job's ack deadline.
    /// Returns whether the attempt is a half-open probe, or `None` when shutdown came first.
    async fn wait_for_circuit(
        &self,
        message: &jetstream::Message,
        shutdown: &Shutdown,
    ) -> Option<bool> {
        let mut changes = self.breaker.changes();
        let mut held = false;
        let admitted = loop {
            let until = match self.breaker.admit().await {
                Ok(Admission::Admit { probe }) => {
                    if probe {
                        tracing::info!("probing the service (circuit half-open)");
                    }
                    break Some(probe);
                }
                Ok(Admission::Wait { until } | Admission::Paused { until }) => until,
                Err(error) => {
                    // The shared state is unreachable (NATS trouble); deliver rather than stall.
                    tracing::warn!(%error, "circuit state unavailable; attempting anyway");
                    break Some(false);
                }
            };
            if !held {
                held = true;
                gauge!(m::HELD, "service" => self.service.name.to_string()).increment(1.0);
            }
            let cooldown_left = (until - Utc::now()).to_std().unwrap_or_default();
            let progress_every = self.ack_wait / 3;
            tokio::select! {
                () = shutdown.triggered() => break None,
                _ = changes.changed() => {}
                () = tokio::time::sleep(cooldown_left.min(progress_every)) => {}
            }
            if let Err(error) = message.ack_with(AckKind::Progress).await {
                tracing::debug!(%error, "could not extend a held job's ack deadline");
            }
        };
        if held {
            gauge!(m::HELD, "service" => self.service.name.to_string()).decrement(1.0);
        }
        admitted
    }

    /// Exponential backoff with full jitter, or what the target asked for (within the cap).
    fn retry_delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let policy = &self.service.retry;
        if let Some(asked) = retry_after {
            return asked.min(crate::transport::http::MAX_RETRY_AFTER);
        }
        backoff(
            policy.backoff_base_ms,
            policy.backoff_cap_ms,
            attempt,
            &mut rand::rng(),
        )
    }

    async fn dead_letter(
        &self,
        job: &Job,
        outcome: Option<messages::Outcome>,
        attempts: u32,
        reason: &str,
        label: &'static str,
    ) -> Disposition {
        // Held before the dead letter exists, so no later job of the key can slip through.
        if job.hold_key
            && let Some(entry) = self.held_entry(job)
            && let Err(error) = self.shared.held.hold(&entry, job.id).await
        {
            tracing::warn!(%error, "cannot hold the job's key; the job will come back");
            return Disposition::Retry {
                after: Some(DEAD_LETTER_AGAIN),
            };
        }
        match self
            .recorder
            .dead_letter(job, outcome, attempts, reason)
            .await
        {
            Ok(()) => {
                counter!(m::DEAD_LETTERS, "service" => self.service.name.to_string(), "reason" => label).increment(1);
                tracing::warn!(%reason, "job dead-lettered");
                Disposition::Ack
            }
            Err(error) => {
                // Not acknowledged: the job comes back and is dead-lettered then.
                tracing::warn!(%error, "dead letter not stored; the job will come back");
                Disposition::Retry {
                    after: Some(DEAD_LETTER_AGAIN),
                }
            }
        }
    }
}

/// What follows an attempt.
enum Next {
    Done,
    GiveUp { reason: String, label: &'static str },
    Retry(Duration),
}

/// The consumer loop's view of a worker: one job at a time, within the service's rate limit.
struct Jobs {
    worker: Arc<Worker>,
    /// Lets a job held behind an open circuit go back when the worker stops.
    shutdown: Shutdown,
    /// The durable consumer's name, for the spans (`messaging.consumer.group.name`).
    consumer: String,
}

impl Handler for Jobs {
    async fn handle(&self, message: &jetstream::Message) -> Disposition {
        let span = self.worker.job_span(message, &self.consumer);
        self.worker
            .process(message, &self.shutdown)
            .instrument(span)
            .await
    }

    async fn ready(&self) {
        self.worker.until_ready().await;
    }
}

/// Full jitter (AWS architecture blog): uniform in [0, min(cap, base·2^(attempt-1))], so
/// retries of many jobs that failed together spread out instead of returning together.
pub(crate) fn backoff(base_ms: u64, cap_ms: u64, attempt: u32, rng: &mut impl Rng) -> Duration {
    let exponent = attempt.saturating_sub(1).min(32);
    let ceiling = base_ms
        .max(1)
        .saturating_mul(1u64 << exponent)
        .min(cap_ms.max(1));
    Duration::from_millis(rng.random_range(0..=ceiling))
}

pub(crate) fn health(result: &Attempt) -> Health {
    match result.verdict {
        Verdict::Delivered => Health::Up,
        Verdict::Permanent => Health::Answered,
        // Too Many Requests: up and busy. The pause slows the service; opening the circuit
        // would only add a cooldown and a probe on top.
        Verdict::Retryable { .. } if result.status == Some(TOO_MANY_REQUESTS) => Health::Answered,
        Verdict::Retryable { .. } | Verdict::Timeout => Health::Down(describe(result)),
    }
}

const TOO_MANY_REQUESTS: u16 = 429;
/// The pause after a 429 that says nothing of when to come back.
pub(crate) const PAUSE_WITHOUT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Until when the whole service is paused by an attempt's answer: a 429 pauses it for its
/// `Retry-After` (capped like a job's), or [`PAUSE_WITHOUT_RETRY_AFTER`].
pub(crate) fn pause_asked(
    result: &Attempt,
    now: chrono::DateTime<Utc>,
) -> Option<chrono::DateTime<Utc>> {
    if result.status != Some(TOO_MANY_REQUESTS) {
        return None;
    }
    let Verdict::Retryable { retry_after } = result.verdict else {
        return None;
    };
    let pause = retry_after
        .unwrap_or(PAUSE_WITHOUT_RETRY_AFTER)
        .min(crate::transport::http::MAX_RETRY_AFTER);
    chrono::Duration::from_std(pause)
        .ok()
        .map(|pause| now + pause)
}

fn describe(result: &Attempt) -> String {
    match (&result.error, result.status) {
        (Some(error), _) => error.clone(),
        (None, Some(status)) => format!("HTTP {status}"),
        (None, None) => "failed".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn a_services_concurrency_is_shared_out_exactly_among_the_partitions() {
        let shares = |concurrency, partitions| -> Vec<usize> {
            (0..partitions)
                .map(|index| concurrency_of_partition(concurrency, partitions, index))
                .collect()
        };
        assert_eq!(shares(10, 4), [3, 3, 2, 2]);
        assert_eq!(shares(8, 4), [2, 2, 2, 2]);
        assert_eq!(shares(64, 1), [64]);
        // Fewer than the partitions: one each, the least that lets every partition move.
        assert_eq!(shares(1, 3), [1, 1, 1]);
        assert_eq!(shares(0, 2), [1, 1]);
    }

    #[test]
    fn backoff_grows_to_the_cap_with_full_jitter() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for attempt in 1..12 {
            let ceiling = (100u64 << (attempt - 1)).min(5_000);
            let delays: Vec<u64> = (0..200)
                .map(|_| {
                    u64::try_from(backoff(100, 5_000, attempt, &mut rng).as_millis())
                        .unwrap_or(u64::MAX)
                })
                .collect();
            assert!(
                delays.iter().all(|d| *d <= ceiling),
                "attempt {attempt}: {delays:?}"
            );
            let spread = delays.iter().max().unwrap_or(&0) - delays.iter().min().unwrap_or(&0);
            assert!(
                spread > ceiling / 2,
                "attempt {attempt}: jittered over the range"
            );
        }
        assert!(backoff(100, 5_000, u32::MAX, &mut rng) <= Duration::from_millis(5_000));
    }
}
