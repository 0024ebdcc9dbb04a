//! Runs a set of services in one process: connects the shared clients once, binds each
//! service's listener, starts the services, and stops them together.
//!
//! Failure policy, declared once: any service that stops — with an error or not — stops the
//! others (one process, one fate; the orchestrator restarts it). Shutdown gives in-flight work
//! `shutdown.drain_timeout` to finish, then abandons what is left.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tracing::Instrument;

use mih_shared::config::Config;
use mih_shared::connect::{self, ConnectError};
use mih_shared::names::Names;
use mih_shared::readiness::Readiness;
use mih_shared::{RunError, ServiceContext, ServiceName, Shutdown, metrics};

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    // Causes are in the messages, not `#[source]`s, so `{:#}` prints each once.
    #[error("cannot listen on {addr} (setting `{setting}`): {cause}")]
    Bind {
        setting: String,
        addr: SocketAddr,
        cause: std::io::Error,
    },
    #[error("service {service} failed: {cause}")]
    Service {
        service: ServiceName,
        cause: RunError,
    },
    #[error("service {0} ended abnormally (panic or abort)")]
    Panicked(String),
    #[error("{0} still running after the {1:?} drain deadline (shutdown.drain_timeout); abandoned")]
    DrainTimedOut(String, Duration),
}

const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// How a service task ended.
type ServiceExit = (ServiceName, Result<(), RunError>);

/// A running set of services.
#[derive(Debug)]
pub struct Hub {
    addrs: BTreeMap<ServiceName, SocketAddr>,
    shutdown: Shutdown,
    tasks: JoinSet<ServiceExit>,
    names: BTreeMap<tokio::task::Id, ServiceName>,
    nats: async_nats::Client,
    drain_timeout: Duration,
}

/// Connects, binds and starts `services`.
pub async fn start(config: Arc<Config>, services: &[ServiceName]) -> Result<Hub, HubError> {
    let handle = metrics::handle();
    metrics::spawn_upkeep(handle.clone());
    let client_name = match services {
        [one] => format!("mih-{one}"),
        _ => "mih".to_owned(),
    };
    let nats = connect::connect_nats(&config.nats, &client_name).await?;
    let db = if services.iter().any(|s| s.uses_database()) {
        Some(connect::connect_database(&config.database).await?)
    } else {
        None
    };
    let names = Names::new(config.namespace.clone());
    let jetstream = async_nats::jetstream::ContextBuilder::new()
        .timeout(config.nats.request_timeout)
        .build(nats.clone());

    let mut listeners = Vec::with_capacity(services.len());
    let mut addrs = BTreeMap::new();
    for &service in services {
        let addr = config.listen_addr(service);
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|cause| HubError::Bind {
                setting: Config::listen_setting(service),
                addr,
                cause,
            })?;
        let local = listener.local_addr().map_err(|cause| HubError::Bind {
            setting: Config::listen_setting(service),
            addr,
            cause,
        })?;
        addrs.insert(service, local);
        listeners.push((service, listener));
    }

    let shutdown = Shutdown::new();
    let mut tasks = JoinSet::new();
    let mut task_names = BTreeMap::new();
    for (service, listener) in listeners {
        let service_shutdown = shutdown.child();
        let service_db = service.uses_database().then(|| db.clone()).flatten();
        let ctx = ServiceContext {
            service,
            config: Arc::clone(&config),
            names: names.clone(),
            nats: nats.clone(),
            jetstream: jetstream.clone(),
            readiness: Readiness::new(
                service,
                nats.clone(),
                service_db.clone(),
                service_shutdown.clone(),
            ),
            db: service_db,
            listener,
            metrics: handle.clone(),
        };
        let span = tracing::info_span!("service", name = %service);
        let run = run_service(service, ctx, service_shutdown);
        let task = tasks.spawn(async move { (service, run.await) }.instrument(span));
        task_names.insert(task.id(), service);
    }
    Ok(Hub {
        addrs,
        shutdown,
        tasks,
        names: task_names,
        nats,
        drain_timeout: config.shutdown.drain_timeout,
    })
}

/// The one place that knows which crate runs which service.
fn run_service(
    service: ServiceName,
    ctx: ServiceContext,
    shutdown: Shutdown,
) -> BoxFuture<'static, Result<(), RunError>> {
    match service {
        ServiceName::Ingest => Box::pin(mih_ingest::run(ctx, shutdown)),
        ServiceName::Matcher => Box::pin(mih_matcher::run(ctx, shutdown)),
        ServiceName::Dispatcher => Box::pin(mih_dispatcher::run(ctx, shutdown)),
        ServiceName::Dlq => Box::pin(mih_dlq::run(ctx, shutdown)),
        ServiceName::Api => Box::pin(mih_api::run(ctx, shutdown)),
    }
}

impl Hub {
    /// Where a service listens (the bound address, so port 0 resolves to the real port).
    pub fn addr(&self, service: ServiceName) -> Option<SocketAddr> {
        self.addrs.get(&service).copied()
    }

    pub fn addrs(&self) -> &BTreeMap<ServiceName, SocketAddr> {
        &self.addrs
    }

    /// A handle that stops the hub when triggered.
    pub fn shutdown_handle(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// Runs until `stop` resolves or a service stops, then shuts everything down.
    pub async fn run_until(mut self, stop: impl Future<Output = ()>) -> Result<(), HubError> {
        let first_failure = tokio::select! {
            () = stop => None,
            () = self.shutdown.triggered() => None,
            Some(joined) = self.tasks.join_next_with_id() => Some(self.service_ended(joined)),
        };
        let drained = self.stop().await;
        match first_failure {
            Some(Err(error)) => Err(error),
            _ => drained,
        }
    }

    /// Asks every service to stop and waits for them up to the drain deadline.
    pub async fn stop(mut self) -> Result<(), HubError> {
        self.shutdown.trigger();
        let deadline = self.drain_timeout;
        let mut failure = None;
        let drained = mih_shared::shutdown::drain(
            async {
                while let Some(joined) = self.tasks.join_next_with_id().await {
                    if let Err(error) = self.service_ended(joined) {
                        failure.get_or_insert(error);
                    }
                }
            },
            deadline,
        )
        .await;
        if drained.is_err() {
            let left: Vec<String> = self.names.values().map(ToString::to_string).collect();
            self.tasks.abort_all();
            return Err(HubError::DrainTimedOut(left.join(", "), deadline));
        }
        // Bounded: with the server gone, a flush would wait for it forever.
        match tokio::time::timeout(FLUSH_TIMEOUT, self.nats.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(%error, "could not flush the NATS connection on shutdown")
            }
            Err(_) => tracing::warn!("NATS unreachable on shutdown; unsent messages are dropped"),
        }
        failure.map_or(Ok(()), Err)
    }

    fn service_ended(
        &mut self,
        joined: Result<(tokio::task::Id, ServiceExit), tokio::task::JoinError>,
    ) -> Result<(), HubError> {
        match joined {
            Ok((id, (service, result))) => {
                self.names.remove(&id);
                match result {
                    Ok(()) => {
                        tracing::info!(%service, "service stopped");
                        Ok(())
                    }
                    Err(cause) => {
                        tracing::error!(%service, error = %cause, "service failed");
                        Err(HubError::Service { service, cause })
                    }
                }
            }
            Err(join_error) => {
                let service = self
                    .names
                    .remove(&join_error.id())
                    .map_or_else(|| "unknown".to_owned(), |s| s.to_string());
                tracing::error!(%service, error = %join_error, "service task ended abnormally");
                Err(HubError::Panicked(service))
            }
        }
    }
}
