//! The recorder: projects `<NS>_RESULTS` into the delivery log (`deliveries`, one row per
//! attempt), its per-minute rollups (`delivery_rollups`) and their sums over longer periods
//! ([`periods`]), and follows the `<ns>_circuits`
//! bucket into `circuit_changes`.
//!
//! Every api replica runs one; they share the durable pull consumer [`CONSUMER`], so each
//! outcome is handled by one replica at a time. A RESULTS message carries one outcome or an
//! array of them (the dispatcher batches what is ready together). Outcomes are recorded in
//! batches (whatever the pull has ready, or brings within `api.record_linger` of the first,
//! up to [`BATCH`] messages), one statement each, and acknowledged only after it committed;
//! a redelivery (crash between commit and ack, two replicas racing after an ack
//! timeout, the same outcome published twice) finds its row and changes nothing, so the
//! rollups count every attempt exactly once. A batch the database refuses for its content is
//! recorded again one outcome at a time, so one bad outcome is set aside alone: after a few
//! refusals it is parked ([`mih_shared::parking`]), as is an unreadable message, and never
//! holds up the others.

/// The `DO UPDATE SET` list that adds an upsert's counts to a rollup row of `$table` (the
/// per-minute and the period rollups have the same count columns). A macro, so every statement
/// stays one static string.
macro_rules! add_counts {
    ($table:literal) => {
        concat!(
            "delivered = ",
            $table,
            ".delivered + EXCLUDED.delivered, ",
            "failed_retryable = ",
            $table,
            ".failed_retryable + EXCLUDED.failed_retryable, ",
            "failed_permanent = ",
            $table,
            ".failed_permanent + EXCLUDED.failed_permanent, ",
            "timeout = ",
            $table,
            ".timeout + EXCLUDED.timeout, ",
            "circuit_open = ",
            $table,
            ".circuit_open + EXCLUDED.circuit_open, ",
            "latency_sum_ms = ",
            $table,
            ".latency_sum_ms + EXCLUDED.latency_sum_ms, ",
            "latency_max_ms = GREATEST(",
            $table,
            ".latency_max_ms, EXCLUDED.latency_max_ms)"
        )
    };
}

mod batch;
pub mod histogram;
pub mod periods;
mod store;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull, kv};
use futures::StreamExt;
use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge};
use sqlx::PgPool;

use mih_shared::Shutdown;
use mih_shared::circuit::Circuit;
use mih_shared::consumer::{self, BatchHandler, DeadLetters, Settings, Settled};
use mih_shared::error::Disposition;
use mih_shared::messages::{self, Outcome};
use mih_shared::names::Names;
use mih_shared::parking::{self, Failure};

use crate::state::AppState;

pub use batch::record_batch;
pub use store::{
    CIRCUIT_CHANGES_RETENTION, DELIVERIES_RETENTION, PERIOD_LATENCY_RETENTION,
    PERIOD_ROLLUPS_RETENTION, ROLLUPS_RETENTION, record, record_circuit, truncate,
};

/// The durable consumer's name, shared by every api replica.
pub const CONSUMER: &str = "recorder";

pub const OUTCOMES: &str = "mih_recorder_outcomes_total";
pub const RECORD_SECONDS: &str = "mih_recorder_record_duration_seconds";
pub const LAG_SECONDS: &str = "mih_recorder_lag_seconds";
pub const BATCH_SIZE: &str = "mih_recorder_batch_size";
pub const CIRCUIT_STATES: &str = "mih_recorder_circuit_states_total";

/// Most outcomes recorded in one statement.
pub const BATCH: usize = 256;
/// Most bytes of outcomes one pull brings (at least twice the server's max_payload): RESULTS
/// messages carry up to `dispatcher.outcome_batch_max` outcomes each, so the message count
/// alone no longer bounds what the recorder holds.
const PULL_BYTES: usize = 2 * 1024 * 1024;
/// Most batches recorded at once; more would only queue on the same rollup rows.
const MAX_PARALLEL_BATCHES: usize = 4;
const ACK_WAIT: Duration = Duration::from_secs(30);
const RESUBSCRIBE_DELAY: Duration = Duration::from_secs(1);

fn describe() {
    describe_counter!(
        OUTCOMES,
        Unit::Count,
        "Outcomes taken from RESULTS, by result: recorded, duplicate (already recorded), \
         unreadable (parked), parked (refused by the database several times), retry \
         (redelivered later)"
    );
    describe_histogram!(
        RECORD_SECONDS,
        Unit::Seconds,
        "Time to record one batch of outcomes (their rows and rollups, in one statement)"
    );
    describe_histogram!(
        BATCH_SIZE,
        Unit::Count,
        "Outcomes per recorded batch: near 1 when idle, up to the batch limit under load"
    );
    describe_gauge!(
        LAG_SECONDS,
        Unit::Seconds,
        "How long the outcome last recorded by this replica waited in RESULTS"
    );
    describe_counter!(
        CIRCUIT_STATES,
        Unit::Count,
        "Circuit states taken from the circuits bucket, by result: recorded, duplicate, unreadable"
    );
}

/// The consumer's declared configuration, re-applied at every start.
pub fn consumer_config(names: &Names, parallel_batches: usize) -> pull::Config {
    pull::Config {
        durable_name: Some(CONSUMER.into()),
        description: Some("mih api: outcomes into the delivery log and rollups".into()),
        filter_subject: names.results_all(),
        ack_policy: jetstream::consumer::AckPolicy::Explicit,
        ack_wait: ACK_WAIT,
        // Room for the batches being recorded and the next ones being pulled.
        max_ack_pending: i64::try_from(parallel_batches.max(1) * BATCH * 2).unwrap_or(i64::MAX),
        // Outcomes published before the first api started are recorded too.
        deliver_policy: jetstream::consumer::DeliverPolicy::All,
        max_deliver: -1,
        ..Default::default()
    }
}

/// Runs the outcome consumer and the circuit follower until shutdown.
pub async fn run(state: AppState, shutdown: Shutdown) {
    describe();
    parking::describe();
    tokio::join!(
        outcomes(state.clone(), shutdown.clone()),
        circuits(state, shutdown)
    );
}

/// Waits `delay` unless shutdown comes first; `false` on shutdown.
async fn pause(shutdown: &Shutdown, delay: Duration) -> bool {
    tokio::select! {
        () = shutdown.triggered() => false,
        () = tokio::time::sleep(delay) => true,
    }
}

async fn outcomes(state: AppState, shutdown: Shutdown) {
    // Each batch holds a connection; half the pool stays for the API's own requests.
    let parallel = usize::try_from(state.db.options().get_max_connections() / 2)
        .unwrap_or(1)
        .clamp(1, MAX_PARALLEL_BATCHES);
    let Some(consumer) = consumer::open_durable(
        &state.js,
        &state.names.results_stream(),
        consumer_config(&state.names, parallel),
        RESUBSCRIBE_DELAY,
        &shutdown,
    )
    .await
    else {
        return;
    };
    let settings = Settings::new(
        CONSUMER,
        parallel,
        DeadLetters::Park {
            db: state.db.clone(),
            consumer: CONSUMER.to_owned(),
        },
    )
    .pull_batch(BATCH)
    .ack_linger(state.ack_linger)
    .batch_linger(state.record_linger)
    .pull_bytes(
        PULL_BYTES.max(
            state
                .js
                .client()
                .server_info()
                .max_payload
                .saturating_mul(2),
        ),
    );
    let handler = Arc::new(Outcomes { db: state.db });
    consumer::run_batches(consumer, settings, BATCH, handler, shutdown).await;
}

/// Records the outcomes of a batch: one statement for all, or the lone one's own.
#[derive(Debug)]
struct Outcomes {
    db: PgPool,
}

impl Outcomes {
    /// Records outcomes in one statement; each one's disposition, in order.
    async fn record_chunk(&self, outcomes: &[Outcome]) -> Vec<Disposition> {
        match record_batch(&self.db, outcomes).await {
            Ok(fresh) => fresh
                .into_iter()
                .map(|new| {
                    let result = if new { "recorded" } else { "duplicate" };
                    counter!(OUTCOMES, "result" => result).increment(1);
                    Disposition::Ack
                })
                .collect(),
            Err(error) if Failure::of(&error) == Failure::Refused => {
                tracing::warn!(%error, outcomes = outcomes.len(),
                    "a batch of outcomes was refused; recording them one at a time");
                let mut dispositions = Vec::with_capacity(outcomes.len());
                for outcome in outcomes {
                    dispositions.push(record_one(&self.db, outcome).await);
                }
                dispositions
            }
            Err(error) => {
                tracing::warn!(%error, outcomes = outcomes.len(), "outcomes not recorded yet; retrying");
                outcomes
                    .iter()
                    .map(|_| Disposition::Retry { after: None })
                    .collect()
            }
        }
    }
}

impl BatchHandler for Outcomes {
    async fn handle(&self, messages: &[jetstream::Message]) -> Vec<Disposition> {
        let started = Instant::now();
        let mut dispositions = Vec::with_capacity(messages.len());
        // A RESULTS message holds one outcome or several (the dispatcher batches them);
        // `carrier[k]` is the message outcome k came in, which is acknowledged for all of them.
        let mut carrier = Vec::with_capacity(messages.len());
        let mut outcomes = Vec::with_capacity(messages.len());
        let mut last_readable = None;
        for (i, message) in messages.iter().enumerate() {
            match messages::decode_outcomes(&message.payload) {
                Ok(batch) => {
                    last_readable = Some(i);
                    carrier.extend(std::iter::repeat_n(i, batch.len()));
                    outcomes.extend(batch);
                    dispositions.push(Disposition::Ack);
                }
                Err(error) => dispositions.push(Disposition::DeadLetter {
                    reason: format!("not readable: {error}"),
                }),
            }
        }
        let Some(last) = last_readable else {
            return dispositions;
        };
        if let Ok(info) = messages[last].info() {
            let waited = time::OffsetDateTime::now_utc() - info.published;
            gauge!(LAG_SECONDS).set(waited.as_seconds_f64().max(0.0));
        }
        if outcomes.is_empty() {
            return dispositions;
        }
        metrics::histogram!(BATCH_SIZE).record(outcomes.len() as f64);
        if let ([i], [outcome]) = (carrier.as_slice(), outcomes.as_slice()) {
            // Alone (the usual case below a few hundred outcomes/s): a lighter statement than
            // a batch's, with nothing to group.
            dispositions[*i] = record_one(&self.db, outcome).await;
            metrics::histogram!(RECORD_SECONDS).record(started.elapsed().as_secs_f64());
            return dispositions;
        }
        // At most BATCH outcomes per statement, however many the messages carry.
        for (chunk, start) in outcomes.chunks(BATCH).zip((0..).step_by(BATCH)) {
            let carriers = &carrier[start..start + chunk.len()];
            for (&i, disposition) in carriers.iter().zip(self.record_chunk(chunk).await) {
                // A message is settled by the worst of its outcomes; those recorded are
                // duplicates when it comes again, so nothing counts twice.
                if matches!(dispositions[i], Disposition::Ack) {
                    dispositions[i] = disposition;
                }
            }
        }
        metrics::histogram!(RECORD_SECONDS).record(started.elapsed().as_secs_f64());
        dispositions
    }

    /// Counts what was not counted when recording: retries, parked and unreadable outcomes.
    fn settled(&self, _message: &jetstream::Message, settled: Settled) {
        let result = match settled {
            Settled::Acked => return,
            Settled::Retried => "retry",
            Settled::GaveUp => "parked",
            Settled::DeadLettered => "unreadable",
        };
        counter!(OUTCOMES, "result" => result).increment(1);
    }
}

async fn record_one(db: &PgPool, outcome: &Outcome) -> Disposition {
    match record(db, outcome).await {
        Ok(new) => {
            let result = if new { "recorded" } else { "duplicate" };
            counter!(OUTCOMES, "result" => result).increment(1);
            Disposition::Ack
        }
        Err(error) => {
            tracing::warn!(%error, job_id = %outcome.job_id, attempt = outcome.attempt,
                "outcome not recorded");
            parking::disposition(&error)
        }
    }
}

/// Follows every write to the circuits bucket (history included) into `circuit_changes`,
/// resuming after the last revision recorded. Every replica follows; rows are idempotent on
/// (service, revision). A change that the bucket's history no longer holds when the follower
/// resumes (a long outage) is missed; the current state is always recorded.
async fn circuits(state: AppState, shutdown: Shutdown) {
    let kv = state.circuits.kv().clone();
    while !shutdown.is_triggered() {
        let from = match store::last_circuit_revision(&state.db).await {
            Ok(last) => last + 1,
            Err(error) => {
                tracing::warn!(%error, "cannot read recorded circuit changes; retrying");
                if !pause(&shutdown, RESUBSCRIBE_DELAY).await {
                    return;
                }
                continue;
            }
        };
        match follow(&state.db, &kv, from, &shutdown).await {
            Ok(()) => return,
            Err(error) => {
                tracing::warn!(%error, "following the circuits bucket stopped; resuming");
                if !pause(&shutdown, RESUBSCRIBE_DELAY).await {
                    return;
                }
            }
        }
    }
}

/// Records entries from revision `from` on; returns `Ok` only on shutdown.
async fn follow(db: &PgPool, kv: &kv::Store, from: u64, shutdown: &Shutdown) -> Result<(), String> {
    let mut watch = kv
        .watch_all_from_revision(from)
        .await
        .map_err(|e| e.to_string())?;
    loop {
        let entry = tokio::select! {
            () = shutdown.triggered() => return Ok(()),
            entry = watch.next() => entry,
        };
        let entry = match entry {
            Some(Ok(entry)) => entry,
            Some(Err(error)) => return Err(error.to_string()),
            None => return Err("the watch ended".into()),
        };
        if entry.operation != kv::Operation::Put {
            continue;
        }
        let circuit: Circuit = match serde_json::from_slice(&entry.value) {
            Ok(circuit) => circuit,
            Err(error) => {
                counter!(CIRCUIT_STATES, "result" => "unreadable").increment(1);
                tracing::error!(%error, service = %entry.key, revision = entry.revision,
                    "circuit state is not readable; skipped");
                continue;
            }
        };
        // A database failure restarts the watch from the last recorded revision, so nothing
        // after it is skipped.
        let new = record_circuit(db, &entry.key, entry.revision, &circuit)
            .await
            .map_err(|e| format!("recording a circuit state: {e}"))?;
        let result = if new { "recorded" } else { "duplicate" };
        counter!(CIRCUIT_STATES, "result" => result).increment(1);
    }
}
