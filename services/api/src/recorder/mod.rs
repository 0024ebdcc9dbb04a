//! The recorder: projects `<NS>_RESULTS` into the delivery log (`deliveries`, one row per
//! attempt) and its per-minute rollups (`delivery_rollups`), and follows the `<ns>_circuits`
//! bucket into `circuit_changes`.
//!
//! Every api replica runs one; they share the durable pull consumer [`CONSUMER`], so each
//! outcome is handled by one replica at a time. Outcomes are recorded in batches (whatever the
//! pull has ready, up to [`BATCH`]), one transaction each, and acknowledged only after it
//! committed; a redelivery (crash between commit and ack, two replicas racing after an ack
//! timeout, the same outcome published twice) finds its row and changes nothing, so the
//! rollups count every attempt exactly once. A batch the database refuses for its content is
//! recorded again one outcome at a time, so one bad outcome is set aside alone: after a few
//! refusals it is parked ([`mih_shared::parking`]), as is an unreadable message, and never
//! holds up the others.

mod batch;
pub mod histogram;
mod store;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind, consumer::pull, kv};
use futures::{FutureExt, StreamExt};
use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge};
use sqlx::PgPool;

use mih_shared::Shutdown;
use mih_shared::circuit::Circuit;
use mih_shared::messages::{self, Outcome};
use mih_shared::names::Names;
use mih_shared::parking::{self, Failure, Next};

use crate::state::AppState;

pub use batch::record_batch;
pub use store::{
    CIRCUIT_CHANGES_RETENTION, DELIVERIES_RETENTION, ROLLUPS_RETENTION, record, record_circuit,
    truncate,
};

/// The durable consumer's name, shared by every api replica.
pub const CONSUMER: &str = "recorder";

pub const OUTCOMES: &str = "mih_recorder_outcomes_total";
pub const RECORD_SECONDS: &str = "mih_recorder_record_duration_seconds";
pub const LAG_SECONDS: &str = "mih_recorder_lag_seconds";
pub const BATCH_SIZE: &str = "mih_recorder_batch_size";
pub const CIRCUIT_STATES: &str = "mih_recorder_circuit_states_total";

/// Most outcomes recorded in one transaction.
pub const BATCH: usize = 256;
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
        "Time to record one batch of outcomes (their rows and rollups, in one transaction)"
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
    let consumer = loop {
        let created = match state.js.get_stream(state.names.results_stream()).await {
            Ok(stream) => stream
                .create_consumer(consumer_config(&state.names, parallel))
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match created {
            Ok(consumer) => break consumer,
            Err(error) => {
                tracing::warn!(%error, "cannot open the {CONSUMER} consumer yet; retrying");
                if !pause(&shutdown, RESUBSCRIBE_DELAY).await {
                    return;
                }
            }
        }
    };
    let db = Arc::new(state.db.clone());
    while !shutdown.is_triggered() {
        let messages = match consumer
            .stream()
            .max_messages_per_batch(BATCH)
            .messages()
            .await
        {
            Ok(messages) => messages,
            Err(error) => {
                tracing::warn!(%error, "cannot pull outcomes yet");
                if !pause(&shutdown, RESUBSCRIBE_DELAY).await {
                    return;
                }
                continue;
            }
        };
        batches(
            Box::pin(messages.take_until(shutdown.triggered_owned())),
            BATCH,
        )
        .for_each_concurrent(parallel, |pulled| {
            let db = Arc::clone(&db);
            async move { handle_batch(&db, pulled).await }
        })
        .await;
    }
}

/// Groups a stream into what is ready at once, up to `max`: a lone outcome is recorded at once,
/// a backlog in full batches. (`ready_chunks` would do, but it allocates room for `max` items
/// for every chunk, which at low rates means a large allocation per outcome.)
fn batches<S>(stream: S, max: usize) -> impl futures::Stream<Item = Vec<S::Item>>
where
    S: futures::Stream + Unpin,
{
    futures::stream::unfold(stream, move |mut stream| async move {
        let first = stream.next().await?;
        let mut batch = vec![first];
        while batch.len() < max {
            match stream.next().now_or_never() {
                Some(Some(item)) => batch.push(item),
                _ => break,
            }
        }
        Some((batch, stream))
    })
}

type Pulled = Result<jetstream::Message, async_nats::error::Error<pull::MessagesErrorKind>>;

async fn handle_batch(db: &PgPool, pulled: Vec<Pulled>) {
    let started = Instant::now();
    let mut received = Vec::with_capacity(pulled.len());
    let mut outcomes = Vec::with_capacity(pulled.len());
    for item in pulled {
        let message = match item {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(%error, "pulling outcomes failed");
                continue;
            }
        };
        match messages::decode::<Outcome>(&message.payload) {
            Ok(outcome) => {
                received.push(message);
                outcomes.push(outcome);
            }
            Err(error) => {
                let error = format!("not readable: {error}");
                let kind = park(db, &message, &error).await;
                settle(&message, kind, "unreadable").await;
            }
        }
    }
    let Some(last) = received.last() else {
        return;
    };
    if let Ok(info) = last.info() {
        let waited = time::OffsetDateTime::now_utc() - info.published;
        gauge!(LAG_SECONDS).set(waited.as_seconds_f64().max(0.0));
    }
    metrics::histogram!(BATCH_SIZE).record(outcomes.len() as f64);
    if let ([message], [outcome]) = (received.as_slice(), outcomes.as_slice()) {
        // Alone (the usual case below a few hundred outcomes/s), one statement is one round
        // trip where a transaction would be four.
        let (kind, result) = record_one(db, message, outcome).await;
        settle(message, kind, result).await;
        metrics::histogram!(RECORD_SECONDS).record(started.elapsed().as_secs_f64());
        return;
    }
    match record_batch(db, &outcomes).await {
        Ok(fresh) => {
            for (message, new) in received.iter().zip(fresh) {
                let result = if new { "recorded" } else { "duplicate" };
                settle(message, AckKind::Ack, result).await;
            }
        }
        Err(error) if Failure::of(&error) == Failure::Refused => {
            tracing::warn!(%error, outcomes = outcomes.len(),
                "a batch of outcomes was refused; recording them one at a time");
            for (message, outcome) in received.iter().zip(&outcomes) {
                let (kind, result) = record_one(db, message, outcome).await;
                settle(message, kind, result).await;
            }
        }
        Err(error) => {
            tracing::warn!(%error, outcomes = outcomes.len(), "outcomes not recorded yet; retrying");
            for message in &received {
                let delay = parking::retry_delay(parking::delivered(message));
                settle(message, AckKind::Nak(Some(delay)), "retry").await;
            }
        }
    }
    metrics::histogram!(RECORD_SECONDS).record(started.elapsed().as_secs_f64());
}

async fn settle(message: &jetstream::Message, kind: AckKind, result: &'static str) {
    counter!(OUTCOMES, "result" => result).increment(1);
    if let Err(error) = message.ack_with(kind).await {
        // JetStream redelivers after ack_wait; recording is idempotent.
        tracing::warn!(%error, "could not acknowledge an outcome");
    }
}

async fn record_one(
    db: &PgPool,
    message: &jetstream::Message,
    outcome: &Outcome,
) -> (AckKind, &'static str) {
    match record(db, outcome).await {
        Ok(true) => (AckKind::Ack, "recorded"),
        Ok(false) => (AckKind::Ack, "duplicate"),
        Err(error) => {
            tracing::warn!(%error, job_id = %outcome.job_id, attempt = outcome.attempt,
                "outcome not recorded");
            match parking::after(Failure::of(&error), parking::delivered(message)) {
                Next::Retry(delay) => (AckKind::Nak(Some(delay)), "retry"),
                Next::Park => (park(db, message, &error.to_string()).await, "parked"),
            }
        }
    }
}

/// Parks a message; how to acknowledge it (handed back if it could not be parked yet).
async fn park(db: &PgPool, message: &jetstream::Message, error: &str) -> AckKind {
    match parking::park(db, CONSUMER, message, error).await {
        Ok(()) => AckKind::Ack,
        Err(park_error) => {
            tracing::warn!(error = %park_error, "cannot park an outcome yet; retrying it");
            AckKind::Nak(Some(parking::retry_delay(parking::delivered(message))))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn batches_take_what_is_ready_up_to_the_limit() {
        let ready = futures::stream::iter(1..=7);
        let got: Vec<Vec<i32>> = batches(ready, 3).collect().await;
        assert_eq!(got, vec![vec![1, 2, 3], vec![4, 5, 6], vec![7]]);

        // An item that is not ready yet ends the batch instead of being waited for.
        let (tx, rx) = futures::channel::mpsc::unbounded();
        tx.unbounded_send(1).expect("open");
        tx.unbounded_send(2).expect("open");
        let mut grouped = Box::pin(batches(rx, 10));
        assert_eq!(grouped.next().await, Some(vec![1, 2]));
        tx.unbounded_send(3).expect("open");
        drop(tx);
        assert_eq!(grouped.next().await, Some(vec![3]));
        assert_eq!(grouped.next().await, None);
    }
}
