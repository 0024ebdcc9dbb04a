//! One service's response-queue consumer: a long-lived connection to the service's broker, one
//! channel with a QoS prefetch, manual acknowledgements.
//!
//! Each message is read ([`Reply::read`]), published to JetStream — `<ns>.inbound.<source>.
//! <service>`, or `<ns>.inbound-parked.<service>` for what cannot be stored — and acknowledged
//! to RabbitMQ only once JetStream acknowledged the publish. Publishes are pipelined (up to the
//! prefetch in flight) and their acknowledgements settled in delivery order.
//!
//! When JetStream does not acknowledge (down, timeout), nothing more is acknowledged: the
//! session ends and its connection is closed, which hands every unacknowledged message back to
//! the queue in its order; the consumer waits (backing off) and consumes again. When the broker
//! connection or the channel drops, or the queue does not exist, it reconnects with backoff.
//! Nothing is acknowledged before it is stored, so nothing is lost; a message stored but not
//! yet acknowledged when the connection dropped comes again, and is stored once if it has a
//! `message-id` (the `Nats-Msg-Id`), twice if it has none.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, context::PublishAckFuture, message::PublishMessage};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions,
};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{FieldTable, ShortString};
use lapin::{Acker, Channel, Connection, Consumer, ErrorKind};
use metrics::{Gauge, counter, gauge};
use tracing::{Instrument, Span, field};

use mih_shared::names::Names;
use mih_shared::{Shutdown, telemetry};

use super::reply::{Reply, ReplyRoute, trace_headers};
use crate::metrics as m;
use crate::transport::amqp::{Broker, ConnectError, describe};

/// Room in a NATS message for the headers next to the stored message.
pub(crate) const HEADER_ROOM: usize = 4096;

/// Reconnecting to the broker: first pause, doubling up to the cap (with jitter).
const BROKER_BACKOFF: Duration = Duration::from_millis(200);
/// Consuming again after JetStream did not acknowledge.
const STORE_BACKOFF: Duration = Duration::from_millis(500);
const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// Longest wait for the broker to confirm closing a connection.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Publishes replies to `<NS>_INBOUND`.
#[derive(Debug, Clone)]
pub(crate) struct Store {
    /// Read for its connection state: nothing is sent while it is not connected (the client
    /// would buffer it and send it after reconnecting, when the message is back in the queue
    /// and coming again).
    pub nats: async_nats::Client,
    pub js: jetstream::Context,
    pub names: Names,
    /// The NATS server's `max_payload`.
    pub max_payload: usize,
    /// Longest wait for a publish to be sent (its acknowledgement is bounded by the
    /// JetStream context's timeout, `nats.request_timeout`).
    pub send_timeout: Duration,
}

/// Why a session ended; the consumer backs off and starts another.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("{phase} took longer than {timeout:?}")]
    Timeout {
        phase: &'static str,
        timeout: Duration,
    },
    #[error("cannot {what} on {endpoint}: {}", describe(source))]
    Broker {
        what: &'static str,
        endpoint: String,
        source: lapin::Error,
    },
    #[error(
        "the response queue `{queue}` does not exist on {endpoint} ({}); the service (or the \
         broker's definitions) must declare it",
        describe(source)
    )]
    NoQueue {
        queue: String,
        endpoint: String,
        source: lapin::Error,
    },
    #[error(
        "the connection to {endpoint} or its channel was lost: {}",
        describe(source)
    )]
    Lost {
        endpoint: String,
        source: lapin::Error,
    },
    #[error("the broker cancelled the consumer of `{queue}` (the queue was deleted?)")]
    Cancelled { queue: String },
    #[error("the broker did not take the acknowledgement of a stored reply: {0}")]
    Ack(String),
    #[error(
        "JetStream did not store a reply ({0}); the unacknowledged replies go back to the queue"
    )]
    Unavailable(String),
}

impl SessionError {
    /// JetStream's trouble rather than the broker's: a separate backoff.
    fn is_store(&self) -> bool {
        matches!(self, SessionError::Unavailable(_))
    }
}

/// Consecutive failures and the pause before the next try: exponential with jitter, so the
/// replicas reconnecting after a broker restart spread out.
#[derive(Debug)]
struct Backoff {
    base: Duration,
    failures: u32,
}

impl Backoff {
    fn new(base: Duration) -> Self {
        Backoff { base, failures: 0 }
    }

    fn next(&mut self) -> Duration {
        let exponent = self.failures.min(16);
        self.failures = self.failures.saturating_add(1);
        let ceiling = self.base.saturating_mul(1 << exponent).min(BACKOFF_CAP);
        ceiling.mul_f64(rand::random_range(0.5..=1.0))
    }

    fn reset(&mut self) {
        self.failures = 0;
    }
}

/// A message published to JetStream, waiting for its acknowledgement.
type InFlight = Pin<Box<dyn Future<Output = Published> + Send>>;

struct Published {
    acker: Acker,
    parked: bool,
    outcome: Result<jetstream::publish::PublishAck, String>,
    span: Span,
}

#[derive(Debug)]
pub(crate) struct ReplyConsumer {
    pub route: ReplyRoute,
    pub queue: ShortString,
    pub broker: Broker,
    pub store: Store,
    pub prefetch: u16,
    /// Bounds opening a session: connecting, the channel, the queue check, the consume.
    pub open_timeout: Duration,
}

impl ReplyConsumer {
    /// Consumes until `stop`, reconnecting whenever a session ends.
    pub(crate) async fn run(self, stop: Shutdown) {
        let running = gauge!(m::REPLY_CONSUMERS, "service" => self.route.service.to_string());
        let mut broker_backoff = Backoff::new(BROKER_BACKOFF);
        let mut store_backoff = Backoff::new(STORE_BACKOFF);
        loop {
            let ended = self
                .session(&stop, &running, &mut broker_backoff, &mut store_backoff)
                .await;
            running.set(0.0);
            let error = match ended {
                Ok(()) => break,
                Err(error) => error,
            };
            let wait = if error.is_store() {
                counter!(m::REPLIES, "service" => self.route.service.to_string(), "result" => "unavailable").increment(1);
                store_backoff.next()
            } else {
                broker_backoff.next()
            };
            let service = &self.route.service;
            let queue = self.queue.as_str();
            let broker = self.broker.endpoint();
            match &error {
                SessionError::NoQueue { .. } => {
                    tracing::error!(%service, queue, %broker, %error, retry_in = ?wait, "cannot consume the service's response queue");
                }
                _ => {
                    tracing::warn!(%service, queue, %broker, %error, retry_in = ?wait, "consuming the service's response queue again after a pause");
                }
            }
            tokio::select! {
                () = stop.triggered() => break,
                () = tokio::time::sleep(wait) => {}
            }
        }
        running.set(0.0);
    }

    /// One connection: open, consume until stopped or something fails, close.
    async fn session(
        &self,
        stop: &Shutdown,
        running: &Gauge,
        broker_backoff: &mut Backoff,
        store_backoff: &mut Backoff,
    ) -> Result<(), SessionError> {
        let opened = tokio::select! {
            () = stop.triggered() => return Ok(()),
            opened = tokio::time::timeout(self.open_timeout, self.open()) => opened,
        };
        let (connection, channel, consumer) = opened.map_err(|_| SessionError::Timeout {
            phase: "opening the connection and consuming",
            timeout: self.open_timeout,
        })??;
        broker_backoff.reset();
        running.set(1.0);
        tracing::info!(service = %self.route.service, queue = self.queue.as_str(), broker = %self.broker.endpoint(), "consuming the service's response queue");
        let consumed = self.consume(&channel, consumer, stop, store_backoff).await;
        // Closing the connection hands every unacknowledged message back to the queue.
        close(&connection).await;
        consumed
    }

    async fn open(&self) -> Result<(Connection, Channel, Consumer), SessionError> {
        let connection = self
            .broker
            .connect(format!("mih-dispatcher {} replies", self.route.service))
            .await?;
        match self.subscribe(&connection).await {
            Ok((channel, consumer)) => Ok((connection, channel, consumer)),
            Err(error) => {
                close(&connection).await;
                Err(error)
            }
        }
    }

    /// A channel with the prefetch, the queue checked, the consumer started.
    async fn subscribe(
        &self,
        connection: &Connection,
    ) -> Result<(Channel, Consumer), SessionError> {
        let failed = |what| {
            move |source| SessionError::Broker {
                what,
                endpoint: self.broker.endpoint(),
                source,
            }
        };
        let channel = connection
            .create_channel()
            .await
            .map_err(failed("open a channel"))?;
        channel
            .basic_qos(self.prefetch, BasicQosOptions::default())
            .await
            .map_err(failed("set the prefetch"))?;
        // Passive: the queue is the service's, and mih never creates a queue it only reads
        // (a misspelt name would become a queue nobody writes to, consumed in silence).
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        channel
            .queue_declare(self.queue.clone(), passive, FieldTable::default())
            .await
            .map_err(|source| {
                if not_found(&source) {
                    SessionError::NoQueue {
                        queue: self.queue.to_string(),
                        endpoint: self.broker.endpoint(),
                        source,
                    }
                } else {
                    failed("check the response queue")(source)
                }
            })?;
        let tag = format!(
            "mih-dispatcher-{}-{}",
            self.route.service,
            uuid::Uuid::new_v4().simple()
        );
        let consumer = channel
            .basic_consume(
                self.queue.clone(),
                tag.into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(failed("consume the response queue"))?;
        Ok((channel, consumer))
    }

    async fn consume(
        &self,
        channel: &Channel,
        mut consumer: Consumer,
        stop: &Shutdown,
        store_backoff: &mut Backoff,
    ) -> Result<(), SessionError> {
        let mut in_flight: FuturesOrdered<InFlight> = FuturesOrdered::new();
        let window = usize::from(self.prefetch).max(1);
        loop {
            tokio::select! {
                biased;
                () = stop.triggered() => break,
                Some(published) = in_flight.next(), if !in_flight.is_empty() => {
                    self.settle(published).await?;
                    store_backoff.reset();
                }
                next = consumer.next(), if in_flight.len() < window => match next {
                    Some(Ok(delivery)) => in_flight.push_back(self.publish(delivery).await?),
                    Some(Err(source)) => {
                        return Err(SessionError::Lost {
                            endpoint: self.broker.endpoint(),
                            source,
                        });
                    }
                    None => {
                        return Err(SessionError::Cancelled {
                            queue: self.queue.to_string(),
                        });
                    }
                },
            }
        }
        // Stopping: take no more; what was published is settled (acknowledged once stored),
        // what was only prefetched goes back to the queue when the connection closes.
        if let Err(error) = channel
            .basic_cancel(consumer.tag(), BasicCancelOptions::default())
            .await
        {
            tracing::debug!(service = %self.route.service, %error, "cancelling the reply consumer");
        }
        while let Some(published) = in_flight.next().await {
            self.settle(published).await?;
        }
        Ok(())
    }

    /// Reads one delivery and sends it to JetStream; the returned future resolves with
    /// JetStream's acknowledgement.
    async fn publish(&self, delivery: Delivery) -> Result<InFlight, SessionError> {
        let Delivery {
            properties,
            data,
            acker,
            redelivered,
            ..
        } = delivery;
        // A RabbitMQ consumer span (OTel messaging conventions), in the trace of whoever sent
        // the reply with a `traceparent` header.
        let span = tracing::info_span!(
            "amqp.process",
            otel.name = %format_args!("process {}", self.queue),
            otel.kind = "consumer",
            messaging.system = "rabbitmq",
            messaging.operation.type = "process",
            messaging.operation.name = "process",
            messaging.destination.name = self.queue.as_str(),
            messaging.message.body.size = data.len(),
            service = %self.route.service,
            queue = self.queue.as_str(),
            message_id = field::Empty,
            id = field::Empty,
            redelivered,
            result = field::Empty,
        );
        telemetry::set_parent_from_http(&span, &trace_headers(&properties));
        let reply = Reply::read(&self.route, &properties, &data);
        if let Some(id) = reply.external_id() {
            span.record("message_id", id);
        }
        let (reply, payload) = self.fit(reply, &data);
        span.record("id", field::display(reply.id()));
        let parked = matches!(reply, Reply::Park(_));
        let pending = self
            .send(&reply, payload)
            .instrument(span.clone())
            .await
            .map_err(SessionError::Unavailable)?;
        Ok(Box::pin(async move {
            let outcome = pending.await.map_err(|e| e.to_string());
            Published {
                acker,
                parked,
                outcome,
                span,
            }
        }))
    }

    /// The reply and its encoding, parked instead when it would not fit in a NATS message
    /// (JSON escaping can make a text body several times larger).
    fn fit(&self, reply: Reply, body: &[u8]) -> (Reply, Bytes) {
        let room = self.store.max_payload.saturating_sub(HEADER_ROOM);
        let reason = match reply.encode() {
            Ok(payload) if payload.len() <= room => return (reply, payload),
            Ok(payload) => format!(
                "stored as JSON the message would take {} bytes, more than fits in a NATS \
                 message ({room}; the server's max_payload)",
                payload.len()
            ),
            Err(error) => format!("cannot be encoded: {error}"),
        };
        let parked = Reply::park(
            &self.route,
            reason,
            body,
            reply.external_id().map(str::to_owned),
        );
        // A parked message is small (its excerpt is bounded), so it encodes and fits.
        let payload = parked.encode().unwrap_or_default();
        (parked, payload)
    }

    async fn send(&self, reply: &Reply, payload: Bytes) -> Result<PublishAckFuture, String> {
        let store = &self.store;
        let route = &self.route;
        let state = store.nats.connection_state();
        if state != async_nats::connection::State::Connected {
            return Err(format!("the NATS connection is {state}"));
        }
        let subject = match reply {
            Reply::Store(_) => store.names.inbound_subject(&route.source, &route.service),
            Reply::Park(_) => store.names.inbound_parked_subject(&route.service),
        };
        let mut headers = HeaderMap::new();
        telemetry::inject_current(&mut headers);
        let mut message = PublishMessage::build().payload(payload).headers(headers);
        if let Some(id) = reply.msg_id(&route.service) {
            message = message.message_id(id);
        }
        tokio::time::timeout(store.send_timeout, store.js.send_publish(subject, message))
            .await
            .map_err(|_| format!("sending took longer than {:?}", store.send_timeout))?
            .map_err(|e| e.to_string())
    }

    /// Acknowledges a stored message to RabbitMQ, or ends the session if it was not stored.
    async fn settle(&self, published: Published) -> Result<(), SessionError> {
        let Published {
            acker,
            parked,
            outcome,
            span,
        } = published;
        let service = self.route.service.to_string();
        let ack = match outcome {
            Ok(ack) => ack,
            Err(error) => {
                span.record("result", "unavailable");
                return Err(SessionError::Unavailable(error));
            }
        };
        let result = match (parked, ack.duplicate) {
            (true, _) => "parked",
            (false, true) => "duplicate",
            (false, false) => "stored",
        };
        span.record("result", result);
        span.in_scope(|| match result {
            "parked" => tracing::warn!(
                subject = %self.store.names.inbound_parked_subject(&self.route.service),
                "a reply that cannot be stored was parked"
            ),
            _ => tracing::debug!(sequence = ack.sequence, "reply stored"),
        });
        counter!(m::REPLIES, "service" => service, "result" => result).increment(1);
        match acker.ack(BasicAckOptions::default()).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(SessionError::Ack(
                "the delivery belongs to a channel that is gone".into(),
            )),
            Err(error) => Err(SessionError::Ack(describe(&error))),
        }
    }
}

/// The broker said the queue does not exist (404 on a passive declare).
fn not_found(error: &lapin::Error) -> bool {
    matches!(
        error.kind(),
        ErrorKind::ProtocolError(amqp)
            if matches!(amqp.kind(), AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND))
    )
}

/// Closes the connection (and with it the channel), not waiting long for a broker that went
/// silent.
async fn close(connection: &Connection) {
    if !connection.status().connected() {
        return;
    }
    match tokio::time::timeout(CLOSE_TIMEOUT, connection.close(200, "OK".into())).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::debug!(%error, "closing the reply consumer's connection"),
        Err(_) => tracing::debug!("the broker did not confirm closing the connection in time"),
    }
}
