//! What every request handler shares.

use std::sync::Arc;

use sqlx::PgPool;

use mih_shared::config::Config;
use mih_shared::crypto::Keyring;
use mih_shared::names::Names;

use crate::live::LiveWriter;
use crate::replay::Replayer;

#[derive(Clone, Debug)]
pub struct AppState {
    pub db: PgPool,
    pub keyring: Arc<Keyring>,
    pub live: LiveWriter,
    pub names: Names,
    /// The partitions of JOBS (`streams.job_partitions`): where replays and backfills put a
    /// job, and which streams the queue views read.
    pub partitions: mih_shared::partition::Partitions,
    /// The partitions of EVENTS (`streams.event_partitions`): what recent events, event
    /// names and backfills read.
    pub event_partitions: mih_shared::partition::Partitions,
    pub js: async_nats::jetstream::Context,
    /// The services' shared circuit breakers (`<ns>_circuits`).
    pub circuits: mih_shared::circuit::CircuitStore,
    /// Longest facade call (`dispatcher.facade_timeout`).
    pub facade_timeout: std::time::Duration,
    /// The dispatcher's SSRF guard (`dispatcher.allow_networks`), to warn about services it
    /// will refuse to reach.
    pub ssrf: Arc<mih_shared::ssrf::SsrfGuard>,
    /// Most bytes a rule may render for one event (`matcher.max_request_bytes`), so preview
    /// and backfill render what the matcher would.
    pub max_request_bytes: usize,
    /// Wakes the backfill runner when a backfill is created.
    pub backfill_wake: Arc<tokio::sync::Notify>,
    /// `nats.ack_linger`, for the api's consumers.
    pub ack_linger: std::time::Duration,
    /// `api.record_linger`, for the recorder.
    pub record_linger: std::time::Duration,
}

/// Why the API's shared state could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("secret_key: {0}")]
    Keyring(#[from] mih_shared::crypto::CryptoError),
    #[error("opening the live config bucket: {0}")]
    Live(#[from] crate::live::LiveError),
    #[error("opening the circuits bucket: {0}")]
    Circuits(#[from] mih_shared::circuit::CircuitError),
}

impl AppState {
    /// The one place the API's state is assembled from configuration, for the service and
    /// for the CLI commands that act as it (`mih admin`, `mih dlq`). The buckets must exist.
    pub async fn open(
        config: &Config,
        db: PgPool,
        js: async_nats::jetstream::Context,
    ) -> Result<Self, StateError> {
        let names = Names::new(config.namespace.clone());
        Ok(AppState {
            keyring: Arc::new(config.keyring()?),
            live: LiveWriter::open(&js, &names.config_bucket()).await?,
            circuits: mih_shared::circuit::CircuitStore::open(&js, &names.circuits_bucket())
                .await?,
            facade_timeout: config.dispatcher.facade_timeout,
            ssrf: Arc::new(mih_shared::ssrf::SsrfGuard::new(
                config.dispatcher.allow_networks.clone(),
            )),
            max_request_bytes: config.matcher.max_request_bytes,
            backfill_wake: Arc::default(),
            ack_linger: config.nats.ack_linger,
            record_linger: config.api.record_linger,
            partitions: config.streams.job_partitions(),
            event_partitions: config.streams.event_partitions(),
            db,
            names,
            js,
        })
    }

    /// What replaying dead letters needs of the state.
    pub(crate) fn replayer(&self) -> Replayer {
        Replayer::new(
            self.db.clone(),
            self.js.clone(),
            self.names.clone(),
            self.partitions,
        )
    }
}
