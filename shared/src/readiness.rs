//! What `/readyz` answers: the service finished starting, is not draining, and its
//! dependencies answer.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Serialize;
use sqlx::PgPool;

use crate::service::ServiceName;
use crate::shutdown::Shutdown;

const DB_PING_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct Readiness {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    service: ServiceName,
    started: AtomicBool,
    nats: async_nats::Client,
    db: Option<PgPool>,
    shutdown: Shutdown,
}

#[derive(Debug, Serialize)]
pub struct ReadyReport {
    pub service: ServiceName,
    pub ready: bool,
    pub started: bool,
    pub draining: bool,
    pub nats: Check,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<Check>,
}

#[derive(Debug, Serialize)]
pub struct Check {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Check {
    fn ok() -> Self {
        Self {
            ok: true,
            error: None,
        }
    }
    fn failed(error: impl Into<String>) -> Self {
        Self {
            ok: false,
            error: Some(error.into()),
        }
    }
}

impl Readiness {
    pub fn new(
        service: ServiceName,
        nats: async_nats::Client,
        db: Option<PgPool>,
        shutdown: Shutdown,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                service,
                started: AtomicBool::new(false),
                nats,
                db,
                shutdown,
            }),
        }
    }

    /// Called by the service once it provisioned what it needs and is serving.
    pub fn mark_started(&self) {
        self.inner.started.store(true, Ordering::Release);
    }

    pub async fn check(&self) -> ReadyReport {
        let started = self.inner.started.load(Ordering::Acquire);
        let draining = self.inner.shutdown.is_triggered();
        let nats = match self.inner.nats.connection_state() {
            async_nats::connection::State::Connected => Check::ok(),
            state => Check::failed(format!("nats connection is {state}")),
        };
        let database = match &self.inner.db {
            None => None,
            Some(pool) => Some(ping(pool).await),
        };
        let ready =
            started && !draining && nats.ok && database.as_ref().is_none_or(|check| check.ok);
        ReadyReport {
            service: self.inner.service,
            ready,
            started,
            draining,
            nats,
            database,
        }
    }
}

async fn ping(pool: &PgPool) -> Check {
    match tokio::time::timeout(DB_PING_TIMEOUT, sqlx::query("SELECT 1").execute(pool)).await {
        Ok(Ok(_)) => Check::ok(),
        Ok(Err(e)) => Check::failed(format!("postgres: {e}")),
        Err(_) => Check::failed(format!(
            "postgres did not answer within {DB_PING_TIMEOUT:?}"
        )),
    }
}
