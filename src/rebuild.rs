//! `mih rebuild-projections`: the delivery log, its rollups, the dead letters, the circuit
//! changes and the inbound log are projections of the streams (RESULTS, DLQ, the circuits
//! bucket's history, INBOUND). This
//! empties them and projects again everything the streams still hold, with the same functions
//! the recorder and the dlq service use, so a rebuild gives the same rows and counts.
//!
//! Running services may keep projecting meanwhile: every projection is idempotent (on job id
//! and attempt, on job id, on service and revision), so whichever writes a row first wins and
//! the other skips it.

use anyhow::Context;
use async_nats::jetstream::{self, consumer::pull, kv};
use futures::{StreamExt, TryStreamExt};
use sqlx::PgPool;

use mih_api::{delivery_log, inbound_log};
use mih_dlq::store as dead_letters;
use mih_shared::circuit::Circuit;
use mih_shared::config::Config;
use mih_shared::messages::{self, DeadLetter, Outcome, OutcomeStatus};
use mih_shared::names::Names;
use mih_shared::{connect, db};

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rebuilt {
    /// Outcomes of RESULTS projected into the delivery log.
    pub deliveries: u64,
    /// Dead letters of DLQ stored (before resolving delivered replays).
    pub dead_letters: u64,
    /// Dead letters removed because a replay of theirs was delivered.
    pub resolved: u64,
    /// Circuit states taken from the circuits bucket's history.
    pub circuit_changes: u64,
    /// Messages of INBOUND projected into the inbound log.
    pub inbound: u64,
}

pub async fn run(config: &Config) -> anyhow::Result<Rebuilt> {
    let pool = connect::connect_database(&config.database).await?;
    db::migrate(&pool).await.context("migrating the database")?;
    let nats = connect::connect_nats(&config.nats, "mih-rebuild").await?;
    let js = jetstream::new(nats);
    let names = Names::new(config.namespace.clone());
    rebuild(&pool, &js, &names).await
}

/// Empties the projections and rebuilds them from the streams of `names`.
pub async fn rebuild(
    pool: &PgPool,
    js: &jetstream::Context,
    names: &Names,
) -> anyhow::Result<Rebuilt> {
    delivery_log::truncate(pool)
        .await
        .context("emptying the delivery log")?;
    dead_letters::truncate(pool)
        .await
        .context("emptying the dead letters")?;
    let mut rebuilt = Rebuilt::default();
    // Dead letters first, so a delivered replay found in RESULTS can resolve its original.
    let mut dlq = StreamReader::open(js, &names.dlq_stream()).await?;
    while let Some(message) = dlq.next().await? {
        match messages::decode::<DeadLetter>(&message.payload) {
            Ok(dead) => {
                if dead_letters::store(pool, &dead).await? {
                    rebuilt.dead_letters += 1;
                }
            }
            Err(error) => tracing::warn!(%error, "unreadable dead letter skipped"),
        }
    }
    let mut results = StreamReader::open(js, &names.results_stream()).await?;
    while let Some(message) = results.next().await? {
        let outcomes = match messages::decode_outcomes(&message.payload) {
            Ok(outcomes) => outcomes,
            Err(error) => {
                tracing::warn!(%error, "unreadable outcome skipped");
                continue;
            }
        };
        for outcome in &outcomes {
            rebuild_outcome(pool, outcome, &mut rebuilt).await?;
        }
    }
    rebuilt.circuit_changes = circuits(pool, js, names).await?;
    inbound_log::truncate(pool)
        .await
        .context("emptying the inbound log")?;
    let mut inbound = StreamReader::open(js, &names.inbound_stream()).await?;
    while let Some(message) = inbound.next().await? {
        if inbound_log::project(pool, names, &message).await? == Some(true) {
            rebuilt.inbound += 1;
        }
    }
    Ok(rebuilt)
}

/// Projects one outcome of RESULTS into the delivery log and the dead letters.
async fn rebuild_outcome(
    pool: &PgPool,
    outcome: &Outcome,
    rebuilt: &mut Rebuilt,
) -> anyhow::Result<()> {
    if delivery_log::record(pool, outcome).await? {
        rebuilt.deliveries += 1;
    }
    if outcome.replay_of.is_some() {
        if dead_letters::resolve(pool, outcome).await? {
            rebuilt.resolved += 1;
        } else if outcome.status != OutcomeStatus::Delivered {
            // A replay that has not succeeded (yet): its original is being replayed.
            dead_letters::mark_replaying(pool, outcome).await?;
        }
    }
    Ok(())
}

/// Reads the messages a stream holds now, in order, one at a time (a week of RESULTS need
/// not fit in memory); later ones are the live projectors'.
struct StreamReader {
    messages: Option<pull::Ordered>,
    last: u64,
}

impl StreamReader {
    async fn open(js: &jetstream::Context, stream: &str) -> anyhow::Result<Self> {
        let mut handle = js
            .get_stream(stream)
            .await
            .with_context(|| format!("opening stream {stream}"))?;
        let state = handle.info().await?.state.clone();
        if state.messages == 0 {
            return Ok(StreamReader {
                messages: None,
                last: 0,
            });
        }
        let consumer = handle
            .create_consumer(pull::OrderedConfig::default())
            .await
            .context("creating a reader")?;
        Ok(StreamReader {
            messages: Some(consumer.messages().await?),
            last: state.last_sequence,
        })
    }

    async fn next(&mut self) -> anyhow::Result<Option<jetstream::Message>> {
        let Some(messages) = self.messages.as_mut() else {
            return Ok(None);
        };
        let Some(message) = messages.next().await.transpose()? else {
            self.messages = None;
            return Ok(None);
        };
        let info = message.info().map_err(|e| anyhow::anyhow!("{e}"))?;
        if info.stream_sequence >= self.last || info.pending == 0 {
            self.messages = None;
        }
        Ok(Some(message))
    }
}

/// The states each circuit went through, as far as the bucket's history reaches.
async fn circuits(pool: &PgPool, js: &jetstream::Context, names: &Names) -> anyhow::Result<u64> {
    let bucket = js.get_key_value(names.circuits_bucket()).await?;
    let keys: Vec<String> = bucket.keys().await?.try_collect().await?;
    let mut recorded = 0;
    for key in keys {
        let mut history = bucket.history(&key).await?;
        while let Some(entry) = history.next().await {
            let entry = entry?;
            if entry.operation != kv::Operation::Put {
                continue;
            }
            let Ok(circuit) = serde_json::from_slice::<Circuit>(&entry.value) else {
                continue;
            };
            if delivery_log::record_circuit(pool, &key, entry.revision, &circuit).await? {
                recorded += 1;
            }
        }
    }
    Ok(recorded)
}
