//! AMQP 0-9-1 (RabbitMQ) via lapin: one long-lived connection per service, opened on the first
//! delivery and reopened (with backoff) after the broker or the connection went away.
//!
//! Concurrent deliveries share the connection but not a channel: each takes a confirm-mode
//! channel from a small pool for the time of one publish. lapin hands a returned (unroutable)
//! message to whichever publisher confirm it resolves next, so with two publishes in flight on
//! one channel an unroutable message could be reported as delivered — lost — and a delivered one
//! as unroutable. One publish per channel at a time makes a return unambiguous.
//!
//! A delivery is a mandatory, persistent publish whose publisher confirm is awaited: a message
//! counts as delivered only once the broker has taken responsibility for it, and a message no
//! queue receives comes back as a permanent failure instead of vanishing.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lapin::message::BasicReturnMessage;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::tcp::{AsyncTcpStream, TLSConfig};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::uri::{AMQPAuthority, AMQPQueryString, AMQPScheme, AMQPUri, AMQPUserInfo};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ErrorKind};
use tokio::sync::Mutex;

use mih_shared::live::{AmqpTransport, LiveService};
use mih_shared::messages::{AmqpRequest, Header};

use super::{Attempt, AttemptMeta, TargetError, TransportEnv, Verdict};
use crate::ssrf::{SsrfError, SsrfGuard};

/// First pause before reconnecting after a failed connection; doubles up to
/// [`RECONNECT_CAP`]. Attempts in between fail at once instead of hammering a broker that is down.
const RECONNECT_BASE: Duration = Duration::from_millis(200);
const RECONNECT_CAP: Duration = Duration::from_secs(5);

/// Most idle channels kept per connection; more are closed when given back. In-flight
/// deliveries per service are bounded by its concurrency anyway.
const MAX_IDLE_CHANNELS: usize = 64;

/// RabbitMQ's mark for a message that survives a broker restart.
const PERSISTENT: u8 = 2;

pub struct AmqpTarget {
    service: String,
    broker: Broker,
    exchange: String,
    routing_key: String,
    queue_declare: Option<String>,
    timeout: Duration,
    /// The service's static headers.
    headers: FieldTable,
    signer: Option<standardwebhooks::Webhook>,
    state: Mutex<State>,
}

impl std::fmt::Debug for AmqpTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpTarget")
            .field("service", &self.service)
            .field("endpoint", &self.broker.endpoint())
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct State {
    link: Option<Box<Link>>,
    /// Tells a channel of the current connection from one of an earlier connection.
    generation: u64,
    reconnect: Reconnect,
    closed: bool,
}

struct Link {
    connection: Connection,
    generation: u64,
    /// Open confirm-mode channels with no publish in flight.
    idle: Vec<Channel>,
}

/// A channel taken from the pool for one publish. Dropped without [`AmqpTarget::give_back`]
/// (a timeout, an error) the channel is closed, so a late confirm cannot confuse its next user.
struct Lease {
    channel: Channel,
    generation: u64,
}

/// Why an attempt failed; its verdict says whether another attempt can help.
#[derive(Debug, thiserror::Error)]
enum DeliveryError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("cannot open a channel to {endpoint}: {}", describe(source))]
    Channel {
        endpoint: String,
        source: lapin::Error,
    },
    #[error("cannot declare queue `{queue}`: {}", describe(source))]
    Declare { queue: String, source: lapin::Error },
    #[error(
        "not reconnecting to {endpoint} for another {wait_ms} ms ({failures} failed connections); last: {last}"
    )]
    Backoff {
        endpoint: String,
        wait_ms: u128,
        failures: u32,
        last: String,
    },
    #[error("the service's AMQP connection was closed (the service changed or was removed)")]
    Closed,
    #[error("{what} `{value}` is longer than 255 bytes")]
    TooLong { what: &'static str, value: String },
    #[error(
        "unroutable: no queue is bound to {exchange} with routing key `{routing_key}` ({code} {text})"
    )]
    Unroutable {
        exchange: String,
        routing_key: String,
        code: u16,
        text: String,
    },
    #[error("the broker nacked the message: it could not take responsibility for it")]
    Nacked,
    #[error("publisher confirms are off on the channel")]
    Unconfirmed,
    #[error("publishing failed: {}", describe(.0))]
    Publish(lapin::Error),
    #[error("{phase} took longer than the service's timeout of {timeout:?}")]
    Timeout {
        phase: &'static str,
        timeout: Duration,
    },
}

impl DeliveryError {
    fn verdict(&self) -> Verdict {
        match self {
            DeliveryError::Connect(ConnectError::Guard(SsrfError::Refused { .. }))
            | DeliveryError::TooLong { .. }
            | DeliveryError::Unroutable { .. } => Verdict::Permanent,
            DeliveryError::Publish(error) if refused_by_broker(error) => Verdict::Permanent,
            DeliveryError::Timeout { .. } => Verdict::Timeout,
            // Connection trouble, including wrong credentials or vhost and a queue that cannot be
            // declared: the service's fault, not the job's, so the breaker sees it and the jobs
            // wait for the fix instead of being dead-lettered.
            _ => Verdict::Retryable { retry_after: None },
        }
    }
}

/// The broker's own words and reply code when it refused something (`NOT_FOUND - no exchange
/// 'x' in vhost '/' (404)`), lapin's description otherwise.
pub(crate) fn describe(error: &lapin::Error) -> String {
    match error.kind() {
        ErrorKind::ProtocolError(amqp) => format!("{} ({})", amqp.get_message(), amqp.get_id()),
        _ => error.to_string(),
    }
}

/// The broker closed the channel because of what this publish asked for: an exchange that does
/// not exist (404), one the user may not write to (403), or a mismatch it rejects (406).
fn refused_by_broker(error: &lapin::Error) -> bool {
    let ErrorKind::ProtocolError(amqp) = error.kind() else {
        return false;
    };
    matches!(
        amqp.kind(),
        AMQPErrorKind::Soft(
            AMQPSoftError::NOTFOUND
                | AMQPSoftError::ACCESSREFUSED
                | AMQPSoftError::PRECONDITIONFAILED
        )
    )
}

impl AmqpTarget {
    pub fn new(
        service: &LiveService,
        amqp: &AmqpTransport,
        env: &TransportEnv,
    ) -> Result<Self, TargetError> {
        Ok(AmqpTarget {
            service: service.name.to_string(),
            broker: Broker::new(amqp, env, Duration::from_millis(service.timeout_ms))?,
            exchange: amqp.exchange.clone(),
            routing_key: amqp.routing_key.clone(),
            queue_declare: amqp.queue_declare.clone().filter(|q| !q.is_empty()),
            timeout: Duration::from_millis(service.timeout_ms),
            headers: static_headers(service)?,
            signer: signer(service, env)?,
            state: Mutex::new(State::default()),
        })
    }

    pub async fn deliver(&self, request: &AmqpRequest, meta: &AttemptMeta) -> Attempt {
        match self.try_deliver(request, meta).await {
            Ok(()) => Attempt {
                verdict: Verdict::Delivered,
                status: None,
                headers: Vec::new(),
                body: None,
                body_truncated: false,
                error: None,
            },
            Err(error) => {
                tracing::debug!(service = %self.service, %error, "AMQP delivery failed");
                Attempt::failed(error.verdict(), error.to_string())
            }
        }
    }

    /// Closes the connection; later deliveries fail (retryably) instead of reconnecting.
    pub async fn close(&self) {
        let link = {
            let mut state = self.state.lock().await;
            state.closed = true;
            state.link.take()
        };
        if let Some(link) = link
            && link.connection.status().connected()
            && let Err(error) = link.connection.close(200, "OK".into()).await
        {
            tracing::debug!(service = %self.service, %error, "closing the AMQP connection");
        }
    }

    /// The service's timeout bounds the whole attempt: connecting, publishing, the confirm.
    async fn try_deliver(
        &self,
        request: &AmqpRequest,
        meta: &AttemptMeta,
    ) -> Result<(), DeliveryError> {
        let message = self.message(request, meta)?;
        let deadline = tokio::time::Instant::now() + self.timeout;
        let lease = self.lease(deadline).await?;
        let published = tokio::time::timeout_at(deadline, publish(&lease.channel, message))
            .await
            .map_err(|_| self.timed_out("waiting for the publisher confirm"))?;
        self.give_back(lease).await;
        published
    }

    fn timed_out(&self, phase: &'static str) -> DeliveryError {
        DeliveryError::Timeout {
            phase,
            timeout: self.timeout,
        }
    }

    /// An idle channel of the live connection, (re)opening the connection or a channel as needed.
    async fn lease(&self, deadline: tokio::time::Instant) -> Result<Lease, DeliveryError> {
        let mut state = tokio::time::timeout_at(deadline, self.state.lock())
            .await
            .map_err(|_| self.timed_out("waiting for the connection"))?;
        if state.closed {
            return Err(DeliveryError::Closed);
        }
        let live = (state.link.take()).filter(|link| link.connection.status().connected());
        let link = match live {
            Some(link) => link,
            None => Box::new(self.reconnect(&mut state, deadline).await?),
        };
        let link = state.link.insert(link);
        let channel = match idle_channel(link) {
            Some(channel) => channel,
            None => tokio::time::timeout_at(deadline, self.open_channel(&link.connection))
                .await
                .map_err(|_| self.timed_out("opening a channel"))??,
        };
        Ok(Lease {
            channel,
            generation: link.generation,
        })
    }

    /// Opens a new connection unless the last failures call for waiting; a failure (a timeout
    /// included) lengthens the wait.
    async fn reconnect(
        &self,
        state: &mut State,
        deadline: tokio::time::Instant,
    ) -> Result<Link, DeliveryError> {
        state.reconnect.check(&self.broker.endpoint())?;
        let opened = tokio::time::timeout_at(deadline, self.open_link())
            .await
            .unwrap_or_else(|_| Err(self.timed_out("connecting to the broker")));
        match opened {
            Ok((connection, channel)) => {
                state.reconnect = Reconnect::default();
                state.generation += 1;
                Ok(Link {
                    connection,
                    generation: state.generation,
                    idle: vec![channel],
                })
            }
            Err(error) => {
                if error.verdict() != Verdict::Permanent {
                    state.reconnect.failed(&error);
                }
                Err(error)
            }
        }
    }

    /// Returns a channel to the pool if it is still open and of the current connection; one the
    /// broker closed over this publish (a missing exchange) is left to close.
    async fn give_back(&self, lease: Lease) {
        let mut state = self.state.lock().await;
        if let Some(link) = state.link.as_mut()
            && link.generation == lease.generation
            && lease.channel.status().connected()
            && link.idle.len() < MAX_IDLE_CHANNELS
        {
            link.idle.push(lease.channel);
        }
    }

    /// A connection and its first channel, on which the queue to declare (if any) is declared:
    /// once per connection, before the first publish.
    async fn open_link(&self) -> Result<(Connection, Channel), DeliveryError> {
        let connection = self
            .broker
            .connect(format!("mih-dispatcher {}", self.service))
            .await?;
        let channel = self.open_channel(&connection).await?;
        if let Some(queue) = &self.queue_declare {
            declare(&channel, queue).await?;
        }
        tracing::debug!(service = %self.service, endpoint = %self.broker.endpoint(), "AMQP connection open");
        Ok((connection, channel))
    }

    async fn open_channel(&self, connection: &Connection) -> Result<Channel, DeliveryError> {
        let failed = |source| DeliveryError::Channel {
            endpoint: self.broker.endpoint(),
            source,
        };
        let channel = connection.create_channel().await.map_err(failed)?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(failed)?;
        Ok(channel)
    }

    /// The producer span of one attempt (OTel messaging conventions for RabbitMQ):
    /// `publish <exchange>`, the default exchange named `amq.default`.
    pub fn span(&self, request: &AmqpRequest) -> tracing::Span {
        let (exchange, routing_key) = self.destination(request);
        let shown = if exchange.is_empty() {
            "amq.default"
        } else {
            exchange
        };
        tracing::info_span!(
            "amqp.publish",
            otel.name = %format_args!("publish {shown}"),
            otel.kind = "producer",
            messaging.system = "rabbitmq",
            messaging.operation.type = "send",
            messaging.operation.name = "publish",
            messaging.destination.name = shown,
            messaging.rabbitmq.destination.routing_key = routing_key,
            messaging.message.body.size = request.body.len(),
            server.address = %self.broker.uri.authority.host,
            server.port = self.broker.uri.authority.port,
            error.type = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        )
    }

    /// The request's exchange and routing key, else the service's. With neither routing key and
    /// the default exchange, the routing key is the queue to declare: straight into that queue.
    fn destination<'a>(&'a self, request: &'a AmqpRequest) -> (&'a str, &'a str) {
        let exchange = request.exchange.as_deref().unwrap_or(&self.exchange);
        let routing_key = match (request.routing_key.as_str(), self.routing_key.as_str()) {
            ("", "") if exchange.is_empty() => self.queue_declare.as_deref().unwrap_or(""),
            ("", service) => service,
            (request, _) => request,
        };
        (exchange, routing_key)
    }

    fn message(&self, request: &AmqpRequest, meta: &AttemptMeta) -> Result<Message, DeliveryError> {
        let (exchange, routing_key) = self.destination(request);
        Ok(Message {
            exchange: short("exchange", exchange)?,
            routing_key: short("routing key", routing_key)?,
            properties: self.properties(request, meta)?,
            body: request.body.clone().into_bytes(),
        })
    }

    fn properties(
        &self,
        request: &AmqpRequest,
        meta: &AttemptMeta,
    ) -> Result<BasicProperties, DeliveryError> {
        let job_id = meta.job_id.to_string();
        let mut headers = self.headers.clone();
        add_headers(&mut headers, &request.headers)?;
        identify(&mut headers, meta);
        if let Some(signer) = &self.signer {
            sign(signer, &mut headers, &job_id, request.body.as_bytes());
        }
        let mut properties = BasicProperties::default();
        if !request.content_type.is_empty() {
            properties =
                properties.with_content_type(short("content type", &request.content_type)?);
        }
        Ok(properties
            .with_delivery_mode(PERSISTENT)
            .with_message_id(job_id.into())
            .with_timestamp(chrono::Utc::now().timestamp().unsigned_abs())
            .with_app_id("mih".into())
            .with_headers(headers))
    }
}

/// An idle channel still open; the broker closes a channel over a failed publish (a missing
/// exchange, say) while the connection lives on.
fn idle_channel(link: &mut Link) -> Option<Channel> {
    while let Some(channel) = link.idle.pop() {
        if channel.status().connected() {
            return Some(channel);
        }
    }
    None
}

struct Message {
    exchange: ShortString,
    routing_key: ShortString,
    properties: BasicProperties,
    body: Vec<u8>,
}

async fn publish(channel: &Channel, message: Message) -> Result<(), DeliveryError> {
    let options = BasicPublishOptions {
        mandatory: true,
        ..BasicPublishOptions::default()
    };
    let Message {
        exchange,
        routing_key,
        properties,
        body,
    } = message;
    let confirm = channel
        .basic_publish(
            exchange.clone(),
            routing_key.clone(),
            options,
            &body,
            properties,
        )
        .await
        .map_err(DeliveryError::Publish)?;
    match confirm.await.map_err(DeliveryError::Publish)? {
        Confirmation::Ack(None) => Ok(()),
        // A returned message is acked too (the broker handled it, by returning it).
        Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)) => {
            Err(unroutable(&exchange, &routing_key, &returned))
        }
        Confirmation::Nack(None) => Err(DeliveryError::Nacked),
        Confirmation::NotRequested => Err(DeliveryError::Unconfirmed),
    }
}

fn unroutable(
    exchange: &ShortString,
    routing_key: &ShortString,
    returned: &BasicReturnMessage,
) -> DeliveryError {
    let exchange = match exchange.as_str() {
        "" => "the default exchange".to_owned(),
        name => format!("exchange `{name}`"),
    };
    DeliveryError::Unroutable {
        exchange,
        routing_key: routing_key.to_string(),
        code: returned.reply_code,
        text: returned.reply_text.to_string(),
    }
}

async fn declare(channel: &Channel, queue: &str) -> Result<(), DeliveryError> {
    let options = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    let name = short("queue", queue)?;
    channel
        .queue_declare(name, options, FieldTable::default())
        .await
        .map(drop)
        .map_err(|source| DeliveryError::Declare {
            queue: queue.to_owned(),
            source,
        })
}

/// Consecutive failed connections, and when the next one may be tried.
#[derive(Default)]
struct Reconnect {
    failures: u32,
    not_before: Option<Instant>,
    last: String,
}

impl Reconnect {
    fn check(&self, endpoint: &str) -> Result<(), DeliveryError> {
        match self.not_before {
            Some(at) if at > Instant::now() => Err(DeliveryError::Backoff {
                endpoint: endpoint.to_owned(),
                wait_ms: (at - Instant::now()).as_millis(),
                failures: self.failures,
                last: self.last.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// Exponential with jitter, so replicas reconnecting after a broker restart spread out.
    fn failed(&mut self, error: &DeliveryError) {
        self.failures = self.failures.saturating_add(1);
        let exponent = self.failures.saturating_sub(1).min(16);
        let ceiling = RECONNECT_BASE
            .saturating_mul(1 << exponent)
            .min(RECONNECT_CAP);
        let wait = ceiling.mul_f64(rand::random_range(0.5..=1.0));
        self.not_before = Some(Instant::now() + wait);
        self.last = error.to_string();
    }
}

/// A service's broker and how to reach it — its URI with the password opened from the
/// keyring, TLS, the SSRF guard — shared by the delivering [`AmqpTarget`] and the consumer of
/// the service's response queue (`crate::inbound`), so both connect the same way.
pub(crate) struct Broker {
    /// Credentials included; deliberately not `Debug`. Boxed to keep `Target`'s variants of
    /// similar size.
    uri: Box<AMQPUri>,
    guard: Arc<SsrfGuard>,
    /// Bounds the TCP connect; callers bound the whole handshake.
    connect_timeout: Duration,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Broker").field(&self.endpoint()).finish()
    }
}

/// Why a connection to a broker could not be opened.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error(transparent)]
    Guard(#[from] SsrfError),
    #[error("cannot connect to {endpoint}: {}", describe(source))]
    Connect {
        endpoint: String,
        source: lapin::Error,
    },
}

impl Broker {
    pub(crate) fn new(
        amqp: &AmqpTransport,
        env: &TransportEnv,
        connect_timeout: Duration,
    ) -> Result<Self, TargetError> {
        Ok(Broker {
            uri: Box::new(uri(amqp, env)?),
            guard: Arc::clone(&env.guard),
            connect_timeout,
        })
    }

    /// Where the broker is, for messages: no password.
    pub(crate) fn endpoint(&self) -> String {
        let AMQPAuthority {
            userinfo,
            host,
            port,
        } = &self.uri.authority;
        format!(
            "{}://{}@{host}:{port} (vhost `{}`)",
            self.uri.scheme, userinfo.username, self.uri.vhost
        )
    }

    /// Opens a connection named `name` (shown by `rabbitmqctl list_connections`) to the
    /// addresses the guard approved, never to a second resolution of the name (which could
    /// answer differently); TLS still verifies the certificate against the name.
    pub(crate) async fn connect(&self, name: String) -> Result<Connection, ConnectError> {
        let addrs = self
            .guard
            .resolve(&self.uri.authority.host, self.uri.authority.port)
            .await?;
        self.open(addrs, name)
            .await
            .map_err(|source| ConnectError::Connect {
                endpoint: self.endpoint(),
                source,
            })
    }

    async fn open(&self, addrs: Vec<SocketAddr>, name: String) -> lapin::Result<Connection> {
        let runtime = lapin::runtime::default_runtime()?;
        let timeout = self.connect_timeout;
        let properties = ConnectionProperties::default().with_connection_name(name.into());
        Connection::connector(
            AMQPUri::clone(&self.uri),
            runtime,
            async move |uri: AMQPUri, runtime| {
                let tcp =
                    tokio::time::timeout(timeout, AsyncTcpStream::connect(&runtime, addrs.clone()))
                        .await
                        .map_err(|_| {
                            io::Error::new(io::ErrorKind::TimedOut, "TCP connect timed out")
                        })??;
                Ok(match uri.scheme {
                    AMQPScheme::AMQP => tcp,
                    AMQPScheme::AMQPS => {
                        tcp.into_tls(&uri.authority.host, TLSConfig::default())
                            .await?
                    }
                })
            },
            properties,
        )
        .await
    }
}

/// The connection's URI, built as a structure so credentials and vhost need no escaping (lapin
/// percent-encodes them wherever it prints the URI).
fn uri(amqp: &AmqpTransport, env: &TransportEnv) -> Result<AMQPUri, TargetError> {
    let invalid = |setting, message: &str| TargetError::Invalid {
        setting,
        message: message.to_owned(),
    };
    if amqp.host.is_empty() {
        return Err(invalid("transport.host", "the broker's host is missing"));
    }
    if amqp.port == 0 {
        return Err(invalid("transport.port", "the broker's port is missing"));
    }
    let password = match &amqp.password {
        Some(sealed) => env.keyring.open(sealed)?,
        None => String::new(),
    };
    Ok(AMQPUri {
        scheme: if amqp.tls {
            AMQPScheme::AMQPS
        } else {
            AMQPScheme::AMQP
        },
        authority: AMQPAuthority {
            userinfo: AMQPUserInfo {
                username: amqp.username.clone(),
                password,
            },
            host: amqp.host.clone(),
            port: amqp.port,
        },
        vhost: match amqp.vhost.as_str() {
            "" => "/".to_owned(),
            vhost => vhost.to_owned(),
        },
        query: AMQPQueryString::default(),
    })
}

fn static_headers(service: &LiveService) -> Result<FieldTable, TargetError> {
    let mut table = FieldTable::default();
    for (name, value) in &service.headers {
        let key = ShortString::try_new(name.as_str()).map_err(|e| TargetError::Invalid {
            setting: "headers",
            message: format!("`{name}`: {e}"),
        })?;
        table.insert(key, text(value));
    }
    Ok(table)
}

fn signer(
    service: &LiveService,
    env: &TransportEnv,
) -> Result<Option<standardwebhooks::Webhook>, TargetError> {
    let Some(sealed) = &service.signing_secret else {
        return Ok(None);
    };
    standardwebhooks::Webhook::new(&env.keyring.open(sealed)?)
        .map(Some)
        .map_err(|e| TargetError::Invalid {
            setting: "signing_secret",
            message: format!("not a Standard Webhooks secret: {e}"),
        })
}

fn add_headers(table: &mut FieldTable, headers: &[Header]) -> Result<(), DeliveryError> {
    for header in headers {
        table.insert(short("header name", &header.name)?, text(&header.value));
    }
    Ok(())
}

/// The job id (also the message id, the same on every attempt), the event id, the attempt
/// number and the trace context: what a consumer needs to recognise a duplicate.
fn identify(table: &mut FieldTable, meta: &AttemptMeta) {
    table.insert("mih-job-id".into(), text(&meta.job_id.to_string()));
    if let Some(event) = meta.event_id {
        table.insert("mih-event-id".into(), text(&event.to_string()));
    }
    let attempt = i32::try_from(meta.attempt).unwrap_or(i32::MAX);
    table.insert("mih-attempt".into(), AMQPValue::LongInt(attempt));
    if let Some(traceparent) = &meta.traceparent {
        table.insert("traceparent".into(), text(traceparent));
    }
}

/// Standard Webhooks headers, as for HTTP: `webhook-id` is the job id.
fn sign(signer: &standardwebhooks::Webhook, table: &mut FieldTable, id: &str, body: &[u8]) {
    let timestamp = chrono::Utc::now().timestamp();
    let Ok(signature) = signer.sign(id, timestamp, body) else {
        return;
    };
    for (name, value) in [
        ("webhook-id", id.to_owned()),
        ("webhook-timestamp", timestamp.to_string()),
        ("webhook-signature", signature),
    ] {
        table.insert(name.into(), text(&value));
    }
}

fn text(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value.as_bytes().to_vec()))
}

/// lapin's `From<&str>` panics past 255 bytes; these values come from rules and requests.
fn short(what: &'static str, value: &str) -> Result<ShortString, DeliveryError> {
    ShortString::try_new(value).map_err(|_| DeliveryError::TooLong {
        what,
        value: value.chars().take(64).collect::<String>() + "…",
    })
}
