//! The workers of every enabled service, kept in step with the live configuration: a new
//! service gets a consumer and a worker, a changed one a new worker (new transport, limits and
//! consumer settings; the old one finishes its in-flight deliveries first), a disabled one
//! stops (its jobs wait in JOBS), a deleted one stops and loses its consumer.
//!
//! A worker reads every partition of JOBS in use: the configured ones and any left over from a
//! higher `streams.job_partitions` (drained, never abandoned). Those are looked up again every
//! [`PARTITIONS_CHECK`], so a partition another service created later gets its consumers.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use tokio::sync::RwLock;

use mih_shared::Shutdown;
use mih_shared::circuit::CircuitStore;
use mih_shared::config::Config;
use mih_shared::live::{ConfigSnapshot, LiveConfig, LiveService};
use mih_shared::names::{Names, ServiceSlug};
use mih_shared::partition::{self, Partitions};

use crate::breaker::Breaker;
use crate::outcome_batch::BatchLimits;
use crate::record::Recorder;
use crate::transport::{Target, TransportEnv};
use crate::worker::{self, SharedState, Worker};

/// How often the partitions in use are looked up again.
const PARTITIONS_CHECK: Duration = Duration::from_secs(30);

/// What a facade call needs of a running service.
#[derive(Debug, Clone)]
pub(crate) struct Running {
    pub worker: Arc<Worker>,
    /// The partitions it has consumers in.
    partitions: Vec<u16>,
    /// Whether it runs the keyed lane (`ordered-<service>`).
    keyed: bool,
    stop: Shutdown,
    done: Arc<tokio::sync::Notify>,
}

#[derive(Debug, Clone)]
pub(crate) struct Fleet {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    js: jetstream::Context,
    nats: async_nats::Client,
    names: Names,
    partitions: Partitions,
    env: TransportEnv,
    circuits: CircuitStore,
    shared: SharedState,
    recorder: Recorder,
    ack_wait_margin: Duration,
    running: RwLock<HashMap<ServiceSlug, Running>>,
    /// Bumped after every application of the configuration, for callers waiting on a worker.
    applied: tokio::sync::watch::Sender<u64>,
}

impl Fleet {
    pub(crate) fn new(
        js: jetstream::Context,
        nats: async_nats::Client,
        names: Names,
        env: TransportEnv,
        circuits: CircuitStore,
        shared: SharedState,
        config: &Config,
    ) -> Self {
        let settings = &config.dispatcher;
        Fleet {
            inner: Arc::new(Inner {
                recorder: Recorder::start(
                    js.clone(),
                    names.clone(),
                    settings.record_requests,
                    BatchLimits::new(
                        settings.outcome_batch_max,
                        nats.server_info().max_payload,
                        settings.outcome_linger,
                    ),
                ),
                js,
                nats,
                names,
                partitions: config.streams.job_partitions(),
                env,
                circuits,
                shared,
                ack_wait_margin: settings.ack_wait_margin,
                running: RwLock::new(HashMap::new()),
                applied: tokio::sync::watch::Sender::new(0),
            }),
        }
    }

    pub(crate) fn recorder(&self) -> &Recorder {
        &self.inner.recorder
    }

    /// The running worker of `service`, if it is enabled and started.
    pub(crate) async fn get(&self, service: &ServiceSlug) -> Option<Arc<Worker>> {
        self.inner
            .running
            .read()
            .await
            .get(service)
            .map(|running| Arc::clone(&running.worker))
    }

    /// The worker of `service`, waiting up to `patience` for one that is starting (a service
    /// enabled a moment ago).
    pub(crate) async fn wait_for(
        &self,
        service: &ServiceSlug,
        patience: Duration,
    ) -> Option<Arc<Worker>> {
        let mut applied = self.inner.applied.subscribe();
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            if let Some(worker) = self.get(service).await {
                return Some(worker);
            }
            match tokio::time::timeout_at(deadline, applied.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return None,
            }
        }
    }

    /// Follows the live configuration until `shutdown`, then stops every worker.
    pub(crate) async fn follow(self, snapshot: ConfigSnapshot, shutdown: Shutdown) {
        let mut changes = snapshot.changes();
        self.apply(&snapshot.current(), &shutdown).await;
        let mut check = tokio::time::interval(PARTITIONS_CHECK);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        check.reset();
        loop {
            tokio::select! {
                () = shutdown.triggered() => break,
                changed = changes.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    self.apply(&snapshot.current(), &shutdown).await;
                }
                _ = check.tick() => self.apply(&snapshot.current(), &shutdown).await,
            }
        }
        let running: Vec<Running> = self
            .inner
            .running
            .write()
            .await
            .drain()
            .map(|(_, r)| r)
            .collect();
        for worker in running {
            stop(worker).await;
        }
    }

    async fn apply(&self, config: &LiveConfig, shutdown: &Shutdown) {
        // Unanswered: keep what runs (a restart would stop deliveries for nothing).
        let partitions = self.partitions_in_use().await;
        let current: HashMap<ServiceSlug, (i64, Vec<u16>, bool)> = self
            .inner
            .running
            .read()
            .await
            .iter()
            .map(|(name, running)| {
                (
                    name.clone(),
                    (
                        running.worker.service.version,
                        running.partitions.clone(),
                        running.keyed,
                    ),
                )
            })
            .collect();
        let keyed = keyed_services(config);
        let numbers: Option<Vec<u16>> = partitions
            .as_ref()
            .map(|found| found.iter().map(|(number, _)| *number).collect());
        for (name, (version, running_in, has_keyed_lane)) in &current {
            let wanted = config.services.get(name);
            let same_partitions = numbers.as_ref().is_none_or(|p| p == running_in);
            // A keyed rule for a service running without the keyed lane: restart with it.
            let lanes_enough = *has_keyed_lane || !keyed.contains(name);
            let keep = wanted.is_some_and(|s| s.enabled && s.version == *version)
                && same_partitions
                && lanes_enough;
            if keep {
                continue;
            }
            if let Some(running) = self.inner.running.write().await.remove(name) {
                tracing::info!(service = %name, "stopping the service's worker");
                stop(running).await;
            }
            if wanted.is_none() {
                self.remove_consumer(name, running_in).await;
            }
        }
        let Some(partitions) = partitions else {
            self.inner
                .applied
                .send_modify(|generation| *generation += 1);
            return;
        };
        for service in config.services.values() {
            if !service.enabled || self.inner.running.read().await.contains_key(&service.name) {
                continue;
            }
            let wants_keyed = keyed.contains(&service.name);
            match self
                .start(Arc::clone(service), &partitions, wants_keyed, shutdown)
                .await
            {
                Ok(running) => {
                    self.inner
                        .running
                        .write()
                        .await
                        .insert(service.name.clone(), running);
                }
                Err(error) => {
                    tracing::error!(service = %service.name, %error, "cannot deliver to the service; its jobs wait in JOBS until its configuration is fixed");
                }
            }
        }
        self.inner
            .applied
            .send_modify(|generation| *generation += 1);
    }

    /// The streams of the partitions of JOBS that exist, or `None` when NATS did not answer.
    async fn partitions_in_use(&self) -> Option<Vec<(u16, jetstream::stream::Stream)>> {
        let inner = &self.inner;
        let existing = match partition::streams(
            &inner.js,
            &inner.names,
            partition::Partitioned::Jobs,
            inner.partitions,
        )
        .await
        {
            Ok(existing) => existing,
            Err(error) => {
                tracing::warn!(%error, "cannot read the partitions of JOBS; trying again later");
                return None;
            }
        };
        if existing.len() > usize::from(inner.partitions.count()) {
            tracing::warn!(
                configured = inner.partitions.count(),
                in_use = existing.len(),
                "more JOBS partitions exist than streams.job_partitions: their jobs are still delivered; delete a partition's stream once it is empty"
            );
        }
        Some(existing)
    }

    /// Starts a service's worker: its unkeyed lane, and its keyed lane when `wants_keyed` (a
    /// rule with an ordering key sends to it) or when its ordered consumer already exists
    /// (keyed jobs of an earlier rule, or dead letters to replay, may be waiting for it).
    async fn start(
        &self,
        service: Arc<LiveService>,
        partitions: &[(u16, jetstream::stream::Stream)],
        wants_keyed: bool,
        shutdown: &Shutdown,
    ) -> Result<Running, String> {
        let inner = &self.inner;
        let target = Target::build(&service, &inner.env).map_err(|e| e.to_string())?;
        let stop = shutdown.child();
        let breaker = Breaker::start(
            inner.circuits.clone(),
            service.name.clone(),
            service.breaker,
            inner.nats.clone(),
            &inner.names,
            stop.clone(),
        )
        .await
        .map_err(|e| e.to_string())?;
        let ack_wait = worker::ack_wait(&service, inner.ack_wait_margin);
        let keyed_lane = wants_keyed || self.has_ordered_consumer(&service, partitions).await?;
        let mut consumers = Vec::with_capacity(partitions.len());
        let mut keyed = Vec::with_capacity(partitions.len());
        for (index, (partition, stream)) in partitions.iter().enumerate() {
            let share =
                worker::concurrency_of_partition(service.concurrency, partitions.len(), index);
            let partition = *partition;
            let consumer = stream
                .create_consumer(worker::consumer_config(
                    &inner.names,
                    &service,
                    partition,
                    share,
                    ack_wait,
                ))
                .await
                .map_err(|e| {
                    let name = inner.names.jobs_partition_stream(partition);
                    format!("cannot create its consumer on {name}: {e}")
                })?;
            consumers.push(consumer);
            if !keyed_lane {
                continue;
            }
            let ordered = stream
                .create_consumer(crate::ordered::consumer_config(
                    &inner.names,
                    &service,
                    partition,
                    ack_wait,
                ))
                .await
                .map_err(|e| {
                    let name = inner.names.jobs_partition_stream(partition);
                    format!("cannot create its ordered consumer on {name}: {e}")
                })?;
            keyed.push(worker::Keyed {
                consumer: ordered,
                stream: stream.clone(),
                share,
            });
        }
        let worker = Arc::new(Worker::new(
            Arc::clone(&service),
            Arc::new(target),
            breaker,
            inner.recorder.clone(),
            ack_wait,
            inner.shared.clone(),
            inner.names.clone(),
        ));
        let done = Arc::new(tokio::sync::Notify::new());
        let running = Running {
            worker: Arc::clone(&worker),
            partitions: partitions.iter().map(|(number, _)| *number).collect(),
            keyed: keyed_lane,
            stop: stop.clone(),
            done: Arc::clone(&done),
        };
        tracing::info!(service = %service.name, transport = worker.target.kind(), concurrency = service.concurrency, partitions = consumers.len(), ordered = keyed_lane, "delivering the service's jobs");
        tokio::spawn(async move {
            worker.clone().run(consumers, keyed, stop).await;
            worker.target.close().await;
            done.notify_one();
        });
        Ok(running)
    }

    /// Whether any partition holds the service's ordered consumer; an unanswered question
    /// fails the start (it is tried again), rather than leave keyed jobs without a lane.
    async fn has_ordered_consumer(
        &self,
        service: &LiveService,
        partitions: &[(u16, jetstream::stream::Stream)],
    ) -> Result<bool, String> {
        let name = self.inner.names.ordered_consumer(&service.name);
        for (_, stream) in partitions {
            match stream.consumer_info(&name).await {
                Ok(_) => return Ok(true),
                Err(error)
                    if error.kind() == jetstream::context::ConsumerInfoErrorKind::NotFound => {}
                Err(error) => return Err(format!("cannot look up its ordered consumer: {error}")),
            }
        }
        Ok(false)
    }

    async fn remove_consumer(&self, name: &ServiceSlug, partitions: &[u16]) {
        let inner = &self.inner;
        for &partition in partitions {
            let Ok(stream) = inner
                .js
                .get_stream(inner.names.jobs_partition_stream(partition))
                .await
            else {
                continue;
            };
            for consumer in [
                inner.names.dispatch_consumer(name),
                inner.names.ordered_consumer(name),
            ] {
                match stream.delete_consumer(&consumer).await {
                    Ok(_) => {
                        tracing::info!(service = %name, partition, consumer, "service deleted; its consumer removed");
                    }
                    Err(error) => {
                        tracing::debug!(service = %name, partition, consumer, %error, "no consumer to remove");
                    }
                }
            }
        }
    }
}

/// Stops a worker and waits until its in-flight deliveries are done.
async fn stop(running: Running) {
    let finished = running.done.notified();
    running.stop.trigger();
    finished.await;
}

/// The services a rule with an ordering key sends to (enabled or not: a disabled rule's keyed
/// jobs may still be queued).
fn keyed_services(config: &LiveConfig) -> HashSet<ServiceSlug> {
    config
        .rules
        .values()
        .filter(|rule| rule.ordering_key.is_some())
        .map(|rule| rule.service.clone())
        .collect()
}
