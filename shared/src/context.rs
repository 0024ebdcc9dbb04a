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

    /// Creates or updates the streams and buckets this service uses.
    pub async fn ensure_topology(&self) -> Result<(), TopologyError> {
        self.topology()
            .ensure(&self.jetstream, Resource::used_by(self.service))
            .await
    }
}

/// Why a service stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Topology(#[from] TopologyError),
    #[error("serving HTTP failed: {0}")]
    Serve(#[from] std::io::Error),
    #[error("{0}")]
    Other(String),
}
