//! What every request handler shares.

use std::sync::Arc;

use sqlx::PgPool;

use mih_shared::crypto::Keyring;
use mih_shared::names::Names;

use crate::live::LiveWriter;

#[derive(Clone, Debug)]
pub struct AppState {
    pub db: PgPool,
    pub keyring: Arc<Keyring>,
    pub live: LiveWriter,
    pub names: Names,
    pub js: async_nats::jetstream::Context,
    /// The services' shared circuit breakers (`<ns>_circuits`).
    pub circuits: mih_shared::circuit::CircuitStore,
    /// Longest facade call (`dispatcher.facade_timeout`).
    pub facade_timeout: std::time::Duration,
    /// Wakes the backfill runner when a backfill is created.
    pub backfill_wake: Arc<tokio::sync::Notify>,
}
