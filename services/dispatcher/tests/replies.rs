//! Replies on AMQP response queues, consumed by a running dispatcher into `<NS>_INBOUND`:
//! real RabbitMQ (the machine's broker, one queue per test; a private node for the restart) and
//! a NATS server of the test's own (stopped and started again for the outage).
//!
//! The dispatcher runs as in production (`mih_dispatcher::run`), following the live
//! configuration the test writes into the `<ns>_config` bucket, as api would.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::uri::{AMQPAuthority, AMQPScheme, AMQPUri, AMQPUserInfo};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use serde_json::{Value, json};

use mih_shared::config::{Config, ConfigLoader};
use mih_shared::crypto::{Keyring, generate_key};
use mih_shared::live::{
    AmqpTransport, Auth, BreakerPolicy, LiveInbound, LiveService, RetryPolicy, Transport,
    service_key,
};
use mih_shared::messages::{InboundMessage, InboundVia, ParkedInbound, Version};
use mih_shared::names::{Names, ServiceSlug};
use mih_shared::readiness::Readiness;
use mih_shared::topology::{Resource, Topology};
use mih_shared::{RunError, ServiceContext, ServiceName, Shutdown};
use mih_testkit::rabbitmq::{RabbitMqNode, SYSTEM_HOST, SYSTEM_PORT, system_ctl};
use mih_testkit::{NatsServer, eventually, unique_namespace};

/// Generous: a busy CI machine, a broker that reboots, a consumer backing off.
const WAIT: Duration = Duration::from_secs(90);
const SOURCE: &str = "campus";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

// ---- a dispatcher of the test's own ------------------------------------------------------

struct Hub {
    nats: NatsServer,
    names: Names,
    keyring: Keyring,
    js: jetstream::Context,
    shutdown: Shutdown,
    task: Option<tokio::task::JoinHandle<Result<(), RunError>>>,
}

impl Hub {
    async fn start(extra_toml: &str) -> Hub {
        mih_shared::telemetry::init_for_tests();
        let nats = NatsServer::start().await.expect("nats-server starts");
        let key = generate_key().expect("key");
        let toml = format!(
            r#"
            namespace = "{ns}"
            secret_key = "{key}"
            [nats]
            url = "{url}"
            connect_timeout = "10s"
            request_timeout = "2s"
            [shutdown]
            drain_timeout = "10s"
            [dispatcher]
            listen = "127.0.0.1:0"
            allow_networks = ["127.0.0.0/8"]
            {extra_toml}
            "#,
            ns = unique_namespace(),
            url = nats.url(),
        );
        let config = Arc::new(
            ConfigLoader::new()
                .toml(&toml)
                .load()
                .unwrap_or_else(|e| panic!("test configuration is invalid: {e}")),
        );
        let names = Names::new(config.namespace.clone());
        let client = async_nats::connect(nats.url()).await.expect("test client");
        let js = jetstream::new(client);
        // The bucket the test writes services into exists before the dispatcher starts.
        Topology::new(names.clone(), &config)
            .ensure(&js, &Resource::ALL)
            .await
            .expect("topology");
        let hub = Hub {
            nats,
            names,
            keyring: Keyring::new(Some(&key), &[]).expect("keyring"),
            js,
            shutdown: Shutdown::new(),
            task: None,
        };
        hub.launch(config).await
    }

    async fn launch(mut self, config: Arc<Config>) -> Hub {
        let nats = mih_shared::connect::connect_nats(&config.nats, "mih-dispatcher-test")
            .await
            .expect("dispatcher connects");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("listener");
        let ctx = ServiceContext {
            service: ServiceName::Dispatcher,
            names: self.names.clone(),
            jetstream: jetstream::ContextBuilder::new()
                .timeout(config.nats.request_timeout)
                .build(nats.clone()),
            readiness: Readiness::new(
                ServiceName::Dispatcher,
                nats.clone(),
                None,
                self.shutdown.clone(),
            ),
            nats,
            config,
            db: None,
            listener,
            metrics: mih_shared::metrics::handle(),
        };
        self.task = Some(tokio::spawn(mih_dispatcher::run(
            ctx,
            self.shutdown.clone(),
        )));
        self
    }

    /// Writes a service into the live configuration, as api does after a change.
    async fn put(&self, service: &LiveService) {
        let bucket = self
            .js
            .get_key_value(self.names.config_bucket())
            .await
            .expect("config bucket");
        bucket
            .put(
                service_key(&service.name),
                serde_json::to_vec(service).expect("json").into(),
            )
            .await
            .expect("put service");
    }

    async fn delete(&self, name: &ServiceSlug) {
        let bucket = self
            .js
            .get_key_value(self.names.config_bucket())
            .await
            .expect("config bucket");
        bucket.delete(service_key(name)).await.expect("delete");
    }

    /// Everything stored in `<NS>_INBOUND` on `subject`, in stream order.
    async fn stored(&self, subject: &str) -> Result<Vec<Stored>, String> {
        let stream = self
            .js
            .get_stream(self.names.inbound_stream())
            .await
            .map_err(|e| e.to_string())?;
        let info = stream.get_info().await.map_err(|e| e.to_string())?;
        let mut found = Vec::new();
        for sequence in info.state.first_sequence..=info.state.last_sequence {
            let Ok(message) = stream.direct_get(sequence).await else {
                continue;
            };
            if message.subject.as_str() == subject {
                found.push(Stored {
                    sequence,
                    headers: message.headers,
                    payload: message.payload,
                });
            }
        }
        Ok(found)
    }

    /// Waits until `count` messages are stored on `subject` and returns them.
    async fn wait_stored(&self, subject: &str, count: usize) -> Vec<Stored> {
        eventually(WAIT, || async move {
            let stored = self.stored(subject).await?;
            if stored.len() >= count {
                Ok(stored)
            } else {
                Err(format!("{} of {count} stored on {subject}", stored.len()))
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
    }

    async fn inbound(&self, service: &LiveService, count: usize) -> Vec<(u64, InboundMessage)> {
        let subject = self
            .names
            .inbound_subject(&SOURCE.parse().expect("source"), &service.name);
        self.wait_stored(&subject, count)
            .await
            .into_iter()
            .map(|s| {
                (
                    s.sequence,
                    serde_json::from_slice(&s.payload).expect("InboundMessage"),
                )
            })
            .collect()
    }

    async fn parked(&self, service: &LiveService, count: usize) -> Vec<(u64, ParkedInbound)> {
        let subject = self.names.inbound_parked_subject(&service.name);
        self.wait_stored(&subject, count)
            .await
            .into_iter()
            .map(|s| {
                (
                    s.sequence,
                    serde_json::from_slice(&s.payload).expect("ParkedInbound"),
                )
            })
            .collect()
    }

    /// Stops the dispatcher the way SIGTERM does and waits for it.
    async fn stop(&mut self) {
        self.shutdown.trigger();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(WAIT, task)
                .await
                .expect("the dispatcher stops within the drain")
                .expect("dispatcher task")
                .expect("dispatcher ends cleanly");
        }
    }

    fn transport(&self, port: u16, queue: &str) -> AmqpTransport {
        AmqpTransport {
            host: SYSTEM_HOST.to_owned(),
            port,
            vhost: "/".to_owned(),
            username: "guest".to_owned(),
            password: Some(self.keyring.seal("guest").expect("seal")),
            tls: false,
            exchange: String::new(),
            routing_key: String::new(),
            queue_declare: None,
            response_queue: Some(queue.to_owned()),
        }
    }

    fn service(&self, port: u16, queue: &str) -> LiveService {
        LiveService {
            v: Version,
            name: unique_namespace().parse().expect("slug"),
            description: "replies".to_owned(),
            enabled: true,
            transport: Transport::Amqp(self.transport(port, queue)),
            auth: Auth::None,
            signing_secret: None,
            headers: BTreeMap::new(),
            timeout_ms: 5_000,
            retry: RetryPolicy {
                max_retries: 3,
                backoff_base_ms: 100,
                backoff_cap_ms: 1_000,
            },
            breaker: BreakerPolicy {
                failure_threshold: 5,
                cooldown_ms: 1_000,
                half_open_probes: 1,
            },
            concurrency: 4,
            rate_limit_per_sec: None,
            max_job_age_ms: 60_000,
            inbound: Some(LiveInbound {
                source: SOURCE.parse().expect("source"),
                enabled: true,
                signing_secrets: Vec::new(),
                bearer_token_hashes: Vec::new(),
                rate_limit_per_sec: 10,
                burst: 10,
            }),
            version: 1,
        }
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

struct Stored {
    sequence: u64,
    headers: async_nats::HeaderMap,
    payload: bytes::Bytes,
}

/// This process's rendering of a metric line's value (`name{labels} value`).
fn metric(name: &str, labels: &str) -> Option<f64> {
    let rendered = mih_shared::metrics::handle().render();
    let wanted = format!("{name}{{{labels}}} ");
    rendered
        .lines()
        .find_map(|line| line.strip_prefix(&wanted))
        .and_then(|value| value.trim().parse().ok())
}

async fn wait_consuming(service: &LiveService, consuming: bool) {
    let labels = format!("service=\"{}\"", service.name);
    let want = if consuming { 1.0 } else { 0.0 };
    eventually(WAIT, || {
        let value = metric("mih_dispatcher_reply_consumers", &labels);
        async move {
            if value == Some(want) {
                Ok(())
            } else {
                Err(format!("reply consumer gauge is {value:?}, want {want}"))
            }
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{}: {e}", service.name));
}

fn replies(service: &LiveService, result: &str) -> f64 {
    metric(
        "mih_dispatcher_replies_total",
        &format!("result=\"{result}\",service=\"{}\"", service.name),
    )
    .or_else(|| {
        metric(
            "mih_dispatcher_replies_total",
            &format!("service=\"{}\",result=\"{result}\"", service.name),
        )
    })
    .unwrap_or(0.0)
}

// ---- the service's side: a plain lapin client ---------------------------------------------

struct Sender {
    _connection: Connection,
    channel: Channel,
}

impl Sender {
    async fn connect(port: u16) -> Sender {
        let uri = AMQPUri {
            scheme: AMQPScheme::AMQP,
            authority: AMQPAuthority {
                userinfo: AMQPUserInfo {
                    username: "guest".to_owned(),
                    password: "guest".to_owned(),
                },
                host: SYSTEM_HOST.to_owned(),
                port,
            },
            vhost: "/".to_owned(),
            query: Default::default(),
        };
        let connection = Connection::connect_uri(uri, ConnectionProperties::default())
            .await
            .expect("the test's own connection to RabbitMQ (run scripts/dev-deps)");
        let channel = connection.create_channel().await.expect("channel");
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirms");
        Sender {
            _connection: connection,
            channel,
        }
    }

    /// A durable queue; on the machine's broker it expires by itself if the test dies.
    async fn queue(&self, name: &str, expires: bool) {
        let mut arguments = FieldTable::default();
        if expires {
            arguments.insert("x-expires".into(), AMQPValue::LongInt(600_000));
        }
        let options = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        self.channel
            .queue_declare(name.into(), options, arguments)
            .await
            .expect("queue.declare");
    }

    /// Messages in the queue that no consumer holds.
    async fn ready(&self, name: &str) -> u32 {
        let options = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        self.channel
            .queue_declare(name.into(), options, FieldTable::default())
            .await
            .expect("queue.declare passive")
            .message_count()
    }

    async fn send(&self, queue: &str, body: &[u8], content_type: Option<&str>, id: Option<&str>) {
        let mut properties = BasicProperties::default().with_delivery_mode(2);
        if let Some(content_type) = content_type {
            properties = properties.with_content_type(content_type.into());
        }
        if let Some(id) = id {
            properties = properties.with_message_id(id.into());
        }
        self.send_with(queue, body, properties).await;
    }

    async fn send_with(&self, queue: &str, body: &[u8], properties: BasicProperties) {
        let confirm = self
            .channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                body,
                properties,
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
        assert!(
            matches!(confirm, Confirmation::Ack(None)),
            "not confirmed: {confirm:?}"
        );
    }
}

/// Messages in a queue of the machine's broker, ready and unacknowledged alike.
async fn messages_in(queue: &str) -> Result<u64, String> {
    let listing = system_ctl(&["list_queues", "-q", "-p", "/", "name", "messages"])
        .await
        .map_err(|e| e.to_string())?;
    listing
        .lines()
        .find_map(|line| {
            let mut fields = line.split_whitespace();
            (fields.next() == Some(queue)).then(|| fields.next()?.parse().ok())?
        })
        .ok_or_else(|| format!("queue {queue} not listed: {listing}"))
}

fn queue_name() -> String {
    format!("mih-replies-{}", unique_namespace())
}

// ---- the tests ----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_amqp_replies_are_stored_in_order_once_and_acknowledged() {
    let mut hub = Hub::start("").await;
    let sender = Sender::connect(SYSTEM_PORT).await;
    let queue = queue_name();
    sender.queue(&queue, true).await;
    let service = hub.service(SYSTEM_PORT, &queue);
    hub.put(&service).await;
    wait_consuming(&service, true).await;

    let traced = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_message_id("r-1".into())
        .with_headers(FieldTable::from(BTreeMap::from([(
            "traceparent".into(),
            AMQPValue::LongString(LongString::from(TRACEPARENT.as_bytes().to_vec())),
        )])));
    sender
        .send_with(&queue, br#"{"grade": 17, "user": 27}"#, traced)
        .await;
    sender
        .send(&queue, b"plain text, no id", Some("text/plain"), None)
        .await;
    // The same message again (a service retrying): stored once.
    sender
        .send(
            &queue,
            br#"{"grade": 17, "user": 27}"#,
            Some("application/json"),
            Some("r-1"),
        )
        .await;
    sender
        .send(&queue, br#"[1, 2, 3]"#, None, Some("r-2"))
        .await;

    let stored = hub.inbound(&service, 3).await;
    let messages: Vec<&InboundMessage> = stored.iter().map(|(_, m)| m).collect();
    let payloads: Vec<&Value> = messages.iter().map(|m| &m.payload).collect();
    assert_eq!(
        payloads,
        [
            &json!({"grade": 17, "user": 27}),
            &json!("plain text, no id"),
            &json!([1, 2, 3])
        ]
    );
    let external: Vec<Option<&str>> = messages.iter().map(|m| m.external_id.as_deref()).collect();
    assert_eq!(external, [Some("r-1"), None, Some("r-2")]);
    let content_types: Vec<Option<&str>> =
        messages.iter().map(|m| m.content_type.as_deref()).collect();
    assert_eq!(
        content_types,
        [Some("application/json"), Some("text/plain"), None]
    );
    for message in &messages {
        assert_eq!(message.via, InboundVia::Amqp);
        assert_eq!(message.service, service.name);
        assert_eq!(message.source.as_str(), SOURCE);
        assert_eq!(message.id.0.get_version_num(), 7, "a UUIDv7");
    }

    // The duplicate was counted as such, after the message behind it was stored.
    eventually(WAIT, || async {
        match replies(&service, "duplicate") {
            1.0 => Ok(()),
            n => Err(format!("{n} duplicates counted")),
        }
    })
    .await
    .expect("duplicate counted");
    // Counted after the JetStream ack is handled, so possibly just after the stream has it.
    eventually(WAIT, || async {
        match replies(&service, "stored") {
            3.0 => Ok(()),
            n => Err(format!("{n} stored counted")),
        }
    })
    .await
    .expect("every stored reply counted");
    let subject = hub
        .names
        .inbound_subject(&SOURCE.parse().expect("source"), &service.name);
    let raw = hub.stored(&subject).await.expect("stored");
    assert_eq!(raw.len(), 3, "the duplicate is stored once");
    let msg_ids: Vec<Option<String>> = raw
        .iter()
        .map(|s| s.headers.get("Nats-Msg-Id").map(|v| v.as_str().to_owned()))
        .collect();
    assert_eq!(
        msg_ids,
        [
            Some(format!("{}:r-1", service.name)),
            None,
            Some(format!("{}:r-2", service.name))
        ]
    );
    // The trace the service's message carried goes on.
    let traceparent = raw[0]
        .headers
        .get("traceparent")
        .map(|v| v.as_str().to_owned())
        .expect("traceparent stored");
    assert!(
        traceparent.contains("4bf92f3577b34da6a3ce929d0e0e4736"),
        "{traceparent}"
    );

    // Everything was acknowledged: after the dispatcher stopped (its connection closed, which
    // would hand back anything unacknowledged) the queue is empty.
    hub.stop().await;
    assert_eq!(sender.ready(&queue).await, 0, "messages left in the queue");
    assert_eq!(messages_in(&queue).await, Ok(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_amqp_poison_replies_are_parked_and_the_rest_flow() {
    let mut hub = Hub::start("reply_max_bytes = 2048").await;
    let sender = Sender::connect(SYSTEM_PORT).await;
    let queue = queue_name();
    sender.queue(&queue, true).await;
    let service = hub.service(SYSTEM_PORT, &queue);
    hub.put(&service).await;
    wait_consuming(&service, true).await;

    sender
        .send(
            &queue,
            br#"{"n": 1}"#,
            Some("application/json"),
            Some("ok-1"),
        )
        .await;
    sender
        .send(
            &queue,
            b"caf\xe9 latin-1",
            Some("text/plain"),
            Some("bad-utf8"),
        )
        .await;
    sender
        .send(
            &queue,
            br#"{"n": "#,
            Some("application/json"),
            Some("bad-json"),
        )
        .await;
    let oversized = vec![b'x'; 5000];
    sender.send(&queue, &oversized, None, Some("too-big")).await;
    sender
        .send(
            &queue,
            br#"{"n": 2}"#,
            Some("application/json"),
            Some("ok-2"),
        )
        .await;

    let parked = hub.parked(&service, 3).await;
    let stored = hub.inbound(&service, 2).await;
    let ids: Vec<Option<&str>> = stored
        .iter()
        .map(|(_, m)| m.external_id.as_deref())
        .collect();
    assert_eq!(ids, [Some("ok-1"), Some("ok-2")]);

    let expected = [
        ("bad-utf8", "not UTF-8", 12),
        ("bad-json", "does not parse", 6),
        (
            "too-big",
            "larger than dispatcher.reply_max_bytes (2048)",
            5000,
        ),
    ];
    assert_eq!(parked.len(), 3);
    for ((_, parked), (id, reason, size)) in parked.iter().zip(expected) {
        assert_eq!(parked.external_id.as_deref(), Some(id));
        assert!(parked.reason.contains(reason), "{id}: {}", parked.reason);
        assert_eq!(parked.size, size, "{id}");
        assert_eq!(parked.via, InboundVia::Amqp);
        assert_eq!(parked.service, service.name);
        assert!(
            parked.excerpt.len() <= 1024,
            "{id}: excerpt of {}",
            parked.excerpt.len()
        );
    }
    assert!(
        parked[0].1.excerpt.starts_with("caf"),
        "{}",
        parked[0].1.excerpt
    );
    // ok-2 came after the poison messages and was stored after them: they blocked nothing.
    let last_parked = parked.iter().map(|(seq, _)| *seq).max().expect("parked");
    assert!(stored[1].0 > last_parked, "ok-2 stored at {}", stored[1].0);

    eventually(WAIT, || async {
        match (replies(&service, "parked"), replies(&service, "stored")) {
            (3.0, 2.0) => Ok(()),
            counts => Err(format!("parked, stored counted: {counts:?}")),
        }
    })
    .await
    .expect("counted");
    hub.stop().await;
    assert_eq!(messages_in(&queue).await, Ok(0), "everything acknowledged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_amqp_consumer_reconnects_after_a_broker_restart() {
    let mut node = RabbitMqNode::start().await.expect("private RabbitMQ node");
    let mut hub = Hub::start("").await;
    let queue = queue_name();
    {
        let sender = Sender::connect(node.port()).await;
        sender.queue(&queue, false).await;
    }
    let service = hub.service(node.port(), &queue);
    hub.put(&service).await;
    wait_consuming(&service, true).await;
    Sender::connect(node.port())
        .await
        .send(&queue, b"before", None, Some("before"))
        .await;
    hub.inbound(&service, 1).await;

    node.restart().await.expect("restart");
    eprintln!("node restarted in {:?}", node.last_boot());
    let sender = Sender::connect(node.port()).await;
    sender.send(&queue, b"after", None, Some("after")).await;
    let stored = hub.inbound(&service, 2).await;
    let payloads: Vec<&Value> = stored.iter().map(|(_, m)| &m.payload).collect();
    assert_eq!(payloads, [&json!("before"), &json!("after")]);
    wait_consuming(&service, true).await;

    hub.stop().await;
    assert_eq!(sender.ready(&queue).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_amqp_replies_wait_in_the_queue_while_jetstream_is_down() {
    let mut hub = Hub::start("").await;
    let sender = Sender::connect(SYSTEM_PORT).await;
    let queue = queue_name();
    sender.queue(&queue, true).await;
    let service = hub.service(SYSTEM_PORT, &queue);
    hub.put(&service).await;
    wait_consuming(&service, true).await;
    sender.send(&queue, b"first", None, Some("m-1")).await;
    hub.inbound(&service, 1).await;

    hub.nats.stop().await.expect("stop nats");
    sender.send(&queue, b"second", None, Some("m-2")).await;
    sender.send(&queue, b"third", None, Some("m-3")).await;
    // The consumer took them, could not store them, and handed them back: not acknowledged.
    eventually(WAIT, || async {
        match replies(&service, "unavailable") {
            n if n >= 2.0 => Ok(()),
            n => Err(format!("{n} failed attempts to store")),
        }
    })
    .await
    .expect("the consumer tried to store while NATS was down");
    assert_eq!(messages_in(&queue).await, Ok(2), "still in the queue");

    hub.nats.restart().await.expect("restart nats");
    let stored = hub.inbound(&service, 3).await;
    let payloads: Vec<&Value> = stored.iter().map(|(_, m)| &m.payload).collect();
    assert_eq!(
        payloads,
        [&json!("first"), &json!("second"), &json!("third")]
    );
    eventually(WAIT, || async {
        match messages_in(&queue).await? {
            0 => Ok(()),
            n => Err(format!("{n} messages in the queue")),
        }
    })
    .await
    .expect("acknowledged once stored");
    hub.stop().await;
    let subject = hub
        .names
        .inbound_subject(&SOURCE.parse().expect("source"), &service.name);
    assert_eq!(
        hub.stored(&subject).await.map(|s| s.len()),
        Ok(3),
        "each stored once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_amqp_consumers_follow_the_live_configuration() {
    let mut hub = Hub::start("").await;
    let sender = Sender::connect(SYSTEM_PORT).await;
    let queue = queue_name();
    sender.queue(&queue, true).await;
    let mut service = hub.service(SYSTEM_PORT, &queue);
    hub.put(&service).await;
    wait_consuming(&service, true).await;
    let tag = consumer_tags(&queue).await;
    assert_eq!(
        tag.len(),
        1,
        "one consumer per service and replica: {tag:?}"
    );

    // A change the consumer does not use leaves it alone. A second service added afterwards
    // shows when the change has been applied.
    service.description = "changed".to_owned();
    service.concurrency = 8;
    service.version += 1;
    hub.put(&service).await;
    let other_queue = queue_name();
    sender.queue(&other_queue, true).await;
    let other = hub.service(SYSTEM_PORT, &other_queue);
    hub.put(&other).await;
    wait_consuming(&other, true).await;
    assert_eq!(consumer_tags(&queue).await, tag, "not restarted");

    // Inbound disabled: the consumer stops, replies wait in the queue.
    if let Some(inbound) = service.inbound.as_mut() {
        inbound.enabled = false;
    }
    service.version += 1;
    hub.put(&service).await;
    wait_consuming(&service, false).await;
    eventually(WAIT, || async {
        match consumer_tags(&queue).await.len() {
            0 => Ok(()),
            n => Err(format!("{n} consumers")),
        }
    })
    .await
    .expect("consumer cancelled");
    sender.send(&queue, b"waiting", None, Some("w-1")).await;
    assert_eq!(messages_in(&queue).await, Ok(1));

    // Enabled again: consumed.
    if let Some(inbound) = service.inbound.as_mut() {
        inbound.enabled = true;
    }
    service.version += 1;
    hub.put(&service).await;
    let stored = hub.inbound(&service, 1).await;
    assert_eq!(stored[0].1.payload, json!("waiting"));

    // A changed queue: the consumer moves to it.
    let moved = queue_name();
    sender.queue(&moved, true).await;
    service.transport = Transport::Amqp(hub.transport(SYSTEM_PORT, &moved));
    service.version += 1;
    hub.put(&service).await;
    eventually(WAIT, || async {
        match (
            consumer_tags(&queue).await.len(),
            consumer_tags(&moved).await.len(),
        ) {
            (0, 1) => Ok(()),
            counts => Err(format!("consumers on old, new queue: {counts:?}")),
        }
    })
    .await
    .expect("moved");

    // Deleted: stopped.
    hub.delete(&service.name).await;
    wait_consuming(&service, false).await;
    hub.stop().await;
    wait_consuming(&other, false).await;
}

/// The consumer tags on a queue of the machine's broker.
async fn consumer_tags(queue: &str) -> Vec<String> {
    let listing = system_ctl(&[
        "list_consumers",
        "-q",
        "-p",
        "/",
        "queue_name",
        "consumer_tag",
    ])
    .await
    .expect("list_consumers");
    listing
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            (fields.next() == Some(queue)).then(|| fields.next().map(str::to_owned))?
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_amqp_a_missing_queue_is_retried_until_it_exists() {
    let mut hub = Hub::start("").await;
    let sender = Sender::connect(SYSTEM_PORT).await;
    let queue = queue_name();
    let service = hub.service(SYSTEM_PORT, &queue);
    hub.put(&service).await;
    // No queue yet: the consumer keeps trying (and the dispatcher keeps running).
    eventually(WAIT, || async {
        match replies(&service, "stored") {
            0.0 if metric(
                "mih_dispatcher_reply_consumers",
                &format!("service=\"{}\"", service.name),
            ) == Some(0.0) =>
            {
                Ok(())
            }
            n => Err(format!("{n} stored")),
        }
    })
    .await
    .expect("not consuming");
    sender.queue(&queue, true).await;
    sender.send(&queue, b"late", None, None).await;
    let stored = hub.inbound(&service, 1).await;
    assert_eq!(stored[0].1.payload, json!("late"));
    hub.stop().await;
}
