//! Replies on AMQP response queues, consumed into `<NS>_INBOUND`.
//!
//! An AMQP service with a `transport.response_queue`, inbound messages enabled (`inbound`,
//! which names the Moodle site they go to) and the service itself enabled gets a consumer of
//! that queue ([`consumer::ReplyConsumer`]). They live here, in the dispatcher, because it
//! already holds the services' AMQP connection code and follows the live configuration.
//!
//! Every dispatcher replica runs one consumer per such service: RabbitMQ shares the queue's
//! messages among them (round robin, each bounded by `dispatcher.reply_prefetch`), so replies
//! are consumed as long as one replica runs, and none is taken twice unless a replica drops
//! a connection before acknowledging (then JetStream's `Nats-Msg-Id` dedup absorbs it for
//! replies that carry a `message-id`). Across replicas the order of replies is not kept; within
//! one consumer it is.
//!
//! The consumers follow the live configuration: a service that starts qualifying gets one, a
//! change to what the consumer uses (broker, credentials, TLS, queue, inbound source, timeout)
//! restarts it, anything else leaves it alone, and a service removed, disabled or no longer
//! sending replies has its consumer stopped.

mod consumer;
mod reply;

use std::collections::HashMap;
use std::time::Duration;

use lapin::types::ShortString;

use mih_shared::Shutdown;
use mih_shared::crypto::Sealed;
use mih_shared::live::{ConfigSnapshot, LiveConfig, LiveService, Transport};
use mih_shared::names::{ServiceSlug, SourceId};

pub(crate) use consumer::{HEADER_ROOM, Store};

use self::consumer::ReplyConsumer;
use self::reply::ReplyRoute;
use crate::transport::TransportEnv;
use crate::transport::amqp::Broker;

/// What a service's reply consumer is built from: a change to any of it restarts the
/// consumer, a change to anything else of the service does not.
#[derive(Debug, Clone, PartialEq)]
struct Wanted {
    host: String,
    port: u16,
    vhost: String,
    username: String,
    password: Option<Sealed>,
    tls: bool,
    queue: String,
    source: SourceId,
    timeout_ms: u64,
}

impl Wanted {
    /// What `service` needs, if it should have a reply consumer at all.
    fn of(service: &LiveService) -> Option<Wanted> {
        if !service.enabled {
            return None;
        }
        let inbound = service.inbound.as_ref().filter(|i| i.enabled)?;
        let Transport::Amqp(amqp) = &service.transport else {
            return None;
        };
        let queue = amqp.response_queue.as_deref().filter(|q| !q.is_empty())?;
        Some(Wanted {
            host: amqp.host.clone(),
            port: amqp.port,
            vhost: amqp.vhost.clone(),
            username: amqp.username.clone(),
            password: amqp.password.clone(),
            tls: amqp.tls,
            queue: queue.to_owned(),
            source: inbound.source.clone(),
            timeout_ms: service.timeout_ms,
        })
    }
}

/// The dispatcher's settings for reply consumers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReplySettings {
    pub prefetch: u16,
    pub max_bytes: usize,
}

#[derive(Debug)]
struct Running {
    wanted: Wanted,
    stop: Shutdown,
    task: tokio::task::JoinHandle<()>,
}

/// The reply consumers of this replica, kept in step with the live configuration.
#[derive(Debug)]
pub(crate) struct Replies {
    env: TransportEnv,
    store: Store,
    settings: ReplySettings,
    running: HashMap<ServiceSlug, Running>,
}

impl Replies {
    pub(crate) fn new(env: TransportEnv, store: Store, settings: ReplySettings) -> Self {
        Replies {
            env,
            store,
            settings,
            running: HashMap::new(),
        }
    }

    /// Follows the live configuration until `shutdown`, then stops every consumer: each
    /// cancels its consumer, acknowledges what JetStream already stored and closes its
    /// connection (unacknowledged messages go back to the queue).
    pub(crate) async fn follow(mut self, snapshot: ConfigSnapshot, shutdown: Shutdown) {
        let mut changes = snapshot.changes();
        self.apply(&snapshot.current(), &shutdown).await;
        loop {
            tokio::select! {
                () = shutdown.triggered() => break,
                changed = changes.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    self.apply(&snapshot.current(), &shutdown).await;
                }
            }
        }
        let stopping = self.running.drain().map(|(_, running)| stop(running));
        futures::future::join_all(stopping).await;
    }

    async fn apply(&mut self, config: &LiveConfig, shutdown: &Shutdown) {
        let changed: Vec<ServiceSlug> = self
            .running
            .iter()
            .filter(|(name, running)| {
                config
                    .services
                    .get(*name)
                    .and_then(|s| Wanted::of(s))
                    .as_ref()
                    != Some(&running.wanted)
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in changed {
            if let Some(running) = self.running.remove(&name) {
                tracing::info!(service = %name, queue = %running.wanted.queue, "stopping the service's reply consumer");
                stop(running).await;
            }
        }
        for service in config.services.values() {
            if self.running.contains_key(&service.name) {
                continue;
            }
            let Some(wanted) = Wanted::of(service) else {
                continue;
            };
            match self.start(service, wanted, shutdown) {
                Ok(running) => {
                    self.running.insert(service.name.clone(), running);
                }
                Err(error) => {
                    tracing::error!(service = %service.name, %error, "cannot consume the service's response queue; its replies wait there until its configuration is fixed");
                }
            }
        }
    }

    fn start(
        &self,
        service: &LiveService,
        wanted: Wanted,
        shutdown: &Shutdown,
    ) -> Result<Running, String> {
        let Transport::Amqp(amqp) = &service.transport else {
            return Err("not an AMQP service".into());
        };
        let queue = ShortString::try_new(wanted.queue.as_str()).map_err(|_| {
            format!(
                "transport.response_queue `{}` is longer than 255 bytes",
                wanted.queue
            )
        })?;
        if amqp.queue_declare.as_deref() == Some(wanted.queue.as_str()) {
            tracing::warn!(service = %service.name, queue = %wanted.queue, "the response queue is also the queue the service's deliveries are declared into: mih may read its own deliveries back as replies");
        }
        let timeout = Duration::from_millis(service.timeout_ms.max(1));
        let broker = Broker::new(amqp, &self.env, timeout).map_err(|e| e.to_string())?;
        let consumer = ReplyConsumer {
            route: ReplyRoute {
                service: service.name.clone(),
                source: wanted.source.clone(),
                max_bytes: self.settings.max_bytes,
            },
            queue,
            broker,
            store: self.store.clone(),
            prefetch: self.settings.prefetch,
            // Connecting, the AMQP handshake, the channel, the queue check and the consume
            // each take a round trip or two.
            open_timeout: timeout.saturating_mul(2),
        };
        let stop = shutdown.child();
        let task = tokio::spawn(consumer.run(stop.clone()));
        Ok(Running { wanted, stop, task })
    }
}

/// Stops a consumer and waits until it closed its connection.
async fn stop(running: Running) {
    running.stop.trigger();
    if let Err(error) = running.task.await {
        tracing::warn!(%error, "a reply consumer ended abnormally");
    }
}
