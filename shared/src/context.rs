//! What a service gets when it starts: its config and the clients it shares with the others.

use std::sync::Arc;

use async_nats::jetstream;
use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::names::Names;
use crate::readiness::Readiness;
use crate::service::ServiceName;
use crate::topology::{Resource, Topology, TopologyError};

/// Everything one service needs to run. The listener is bound before the service starts, so a
/// port in use is reported at startup naming its setting, and tests can bind port 0.
#[derive(Debug)]
pub struct ServiceContext {
    pub service: ServiceName,
    pub config: Arc<Config>,
    pub names: Names,
    pub nats: async_nats::Client,
    pub jetstream: jetstream::Context,
    /// Present for services that use PostgreSQL.
    pub db: Option<PgPool>,
    pub listener: TcpListener,
    pub readiness: Readiness,
    pub metrics: PrometheusHandle,
}

impl ServiceContext {
    pub fn topology(&self) -> Topology {
        Topology::new(self.names.clone(), &self.config)
    }

    /// Opens what the service needs at start (a bucket, the live configuration), trying again
    /// for up to `nats.connect_timeout` (see [`crate::connect::open_with_patience`]); the error
    /// names `what`.
    pub async fn open_at_start<T, E, F, Fut>(&self, what: String, open: F) -> Result<T, RunError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: std::fmt::Display + Into<BoxError>,
    {
        crate::connect::open_with_patience(self.config.nats.connect_timeout, &what, open)
            .await
            .map_err(|e| RunError::Open {
                what,
                cause: e.into(),
            })
    }

    /// Creates or updates the streams and buckets this service uses.
    pub async fn ensure_topology(&self) -> Result<(), TopologyError> {
        self.topology()
            .ensure(&self.jetstream, Resource::used_by(self.service))
            .await
    }

    /// The service's PostgreSQL pool; an error naming the setting when none is configured.
    pub fn database(&self) -> Result<&PgPool, RunError> {
        self.db.as_ref().ok_or(RunError::NoDatabase {
            service: self.service,
        })
    }
}

/// Any error, kept with its type for whoever inspects it.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a service stopped with an error. Each cause is kept as a typed field and printed in the
/// message rather than exposed as a `#[source]`, so that a chain printed with `{:#}` (the
/// supervisor's `HubError` does the same) shows each cause once.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Topology(#[from] TopologyError),
    #[error("serving HTTP failed: {0}")]
    Serve(#[from] std::io::Error),
    #[error("{service} needs PostgreSQL: set `database.url` (MIH_DATABASE_URL)")]
    NoDatabase { service: ServiceName },
    #[error("database migration failed: {cause}")]
    Migrate { cause: sqlx::migrate::MigrateError },
    /// A setting that cannot work as given; `problem` says what to change.
    #[error("setting `{setting}`: {problem}")]
    Setting {
        setting: &'static str,
        problem: BoxError,
    },
    #[error("cannot open {what}: {cause}")]
    Open { what: String, cause: BoxError },
    #[error("cannot create the {consumer} consumer on stream {stream}: {cause}")]
    Consumer {
        consumer: String,
        stream: String,
        cause: BoxError,
    },
    /// A task the service cannot run without panicked or was aborted.
    #[error("{what} ended abnormally: {cause}")]
    Task {
        what: &'static str,
        cause: tokio::task::JoinError,
    },
}
