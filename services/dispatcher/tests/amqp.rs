//! The AMQP transport against real RabbitMQ: the machine's broker (127.0.0.1:5672) for most
//! tests, each with its own exchanges, queues, users and vhosts, and a private node
//! (`mih_testkit::rabbitmq::RabbitMqNode`) for the tests that stop the broker.
//!
//! The tests read what arrived with lapin directly, never through the transport under test.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lapin::options::{
    BasicAckOptions, BasicGetOptions, ExchangeDeclareOptions, ExchangeDeleteOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::uri::{AMQPAuthority, AMQPScheme, AMQPUri, AMQPUserInfo};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};

use mih_dispatcher::ssrf::SsrfGuard;
use mih_dispatcher::transport::amqp::AmqpTarget;
use mih_dispatcher::transport::{Attempt, AttemptMeta, TransportEnv, Verdict};
use mih_shared::crypto::{Keyring, generate_key};
use mih_shared::live::{AmqpTransport, Auth, BreakerPolicy, LiveService, RetryPolicy, Transport};
use mih_shared::messages::{AmqpRequest, EventId, Header, JobId, Version};
use mih_testkit::rabbitmq::{RabbitMqNode, SYSTEM_HOST, SYSTEM_PORT, system_ctl};
use mih_testkit::{eventually, unique_namespace};

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const WAIT: Duration = Duration::from_secs(30);
const SIGNING_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

// ---- the transport's side -----------------------------------------------------------------

struct Setup {
    keyring: Arc<Keyring>,
    guard: Arc<SsrfGuard>,
}

impl Setup {
    /// Tests run against 127.0.0.1, which the guard refuses unless allowed.
    fn loopback_allowed() -> Self {
        Self::with_guard(SsrfGuard::new(vec![
            "127.0.0.0/8".parse().expect("network"),
        ]))
    }

    fn with_guard(guard: SsrfGuard) -> Self {
        let key = generate_key().expect("key");
        Setup {
            keyring: Arc::new(Keyring::new(Some(&key), &[]).expect("keyring")),
            guard: Arc::new(guard),
        }
    }

    fn env(&self) -> TransportEnv {
        TransportEnv {
            keyring: Arc::clone(&self.keyring),
            guard: Arc::clone(&self.guard),
        }
    }

    /// guest/guest on the machine's broker, default vhost.
    fn transport(&self) -> AmqpTransport {
        self.transport_to(SYSTEM_PORT, "/", "guest", "guest")
    }

    fn transport_to(&self, port: u16, vhost: &str, user: &str, password: &str) -> AmqpTransport {
        AmqpTransport {
            host: SYSTEM_HOST.to_owned(),
            port,
            vhost: vhost.to_owned(),
            username: user.to_owned(),
            password: Some(self.keyring.seal(password).expect("seal")),
            tls: false,
            exchange: String::new(),
            routing_key: String::new(),
            queue_declare: None,
            response_queue: None,
        }
    }

    fn target(&self, service: &LiveService) -> AmqpTarget {
        let Transport::Amqp(amqp) = &service.transport else {
            panic!("not an AMQP service");
        };
        AmqpTarget::new(service, amqp, &self.env()).expect("target")
    }
}

fn service(amqp: AmqpTransport) -> LiveService {
    LiveService {
        v: Version,
        name: unique_namespace().parse().expect("slug"),
        description: String::new(),
        enabled: true,
        transport: Transport::Amqp(amqp),
        auth: Auth::None,
        signing_secret: None,
        headers: BTreeMap::from([("x-static".to_owned(), "from the service".to_owned())]),
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
        inbound: None,
        version: 1,
    }
}

fn request(exchange: Option<&str>, routing_key: &str, body: &str) -> AmqpRequest {
    AmqpRequest {
        exchange: exchange.map(str::to_owned),
        routing_key: routing_key.to_owned(),
        headers: vec![Header {
            name: "x-rule".to_owned(),
            value: "grades".to_owned(),
        }],
        body: body.to_owned(),
        content_type: "application/json".to_owned(),
    }
}

fn meta(job_id: JobId, attempt: u32) -> AttemptMeta {
    AttemptMeta {
        job_id,
        event_id: Some(EventId::new_v7()),
        attempt,
        traceparent: Some(TRACEPARENT.to_owned()),
        body_limit: 2048,
    }
}

fn new_job() -> JobId {
    JobId(uuid::Uuid::new_v4())
}

#[track_caller]
fn assert_delivered(attempt: &Attempt) {
    assert_eq!(attempt.verdict, Verdict::Delivered, "{attempt:?}");
    assert_eq!(attempt.error, None);
}

#[track_caller]
fn assert_failed(attempt: &Attempt, verdict: Verdict, needles: &[&str]) -> String {
    assert_eq!(attempt.verdict, verdict, "{attempt:?}");
    let error = attempt.error.clone().expect("an error text");
    for needle in needles {
        assert!(error.contains(needle), "`{needle}` not in: {error}");
    }
    error
}

// ---- the broker's side, through lapin ----------------------------------------------------

/// A plain lapin client for declaring, binding and reading back.
struct Broker {
    _connection: Connection,
    channel: Channel,
}

impl Broker {
    async fn system() -> Self {
        Self::connect(SYSTEM_PORT, "/", "guest", "guest").await
    }

    async fn connect(port: u16, vhost: &str, user: &str, password: &str) -> Self {
        let uri = AMQPUri {
            scheme: AMQPScheme::AMQP,
            authority: AMQPAuthority {
                userinfo: AMQPUserInfo {
                    username: user.to_owned(),
                    password: password.to_owned(),
                },
                host: SYSTEM_HOST.to_owned(),
                port,
            },
            vhost: vhost.to_owned(),
            query: Default::default(),
        };
        let connection = Connection::connect_uri(uri, ConnectionProperties::default())
            .await
            .expect("the test's own connection to RabbitMQ (run scripts/dev-deps)");
        let channel = connection.create_channel().await.expect("channel");
        Broker {
            _connection: connection,
            channel,
        }
    }

    async fn exchange(&self, name: &str) {
        self.channel
            .exchange_declare(
                name.into(),
                ExchangeKind::Direct,
                ExchangeDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("exchange.declare");
    }

    /// A queue that expires by itself if the test dies before deleting it.
    async fn queue(&self, name: &str) {
        let mut arguments = FieldTable::default();
        arguments.insert("x-expires".into(), AMQPValue::LongInt(600_000));
        self.channel
            .queue_declare(name.into(), QueueDeclareOptions::default(), arguments)
            .await
            .expect("queue.declare");
    }

    async fn bind(&self, queue: &str, exchange: &str, routing_key: &str) {
        self.channel
            .queue_bind(
                queue.into(),
                exchange.into(),
                routing_key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("queue.bind");
    }

    /// Takes (and acks) everything in the queue.
    async fn drain(&self, queue: &str) -> Vec<lapin::message::Delivery> {
        let mut taken = Vec::new();
        while let Some(message) = self
            .channel
            .basic_get(queue.into(), BasicGetOptions::default())
            .await
            .expect("basic.get")
        {
            message
                .delivery
                .acker
                .ack(BasicAckOptions::default())
                .await
                .expect("ack");
            taken.push(message.delivery);
        }
        taken
    }

    /// Takes what is in the queue, which must be `count` messages: a confirmed publish is
    /// already in its queue, so there is nothing to wait for.
    async fn take(&self, queue: &str, count: usize) -> Vec<lapin::message::Delivery> {
        let taken = self.drain(queue).await;
        assert_eq!(taken.len(), count, "messages in `{queue}`");
        taken
    }

    async fn delete_queue(&self, name: &str) {
        self.channel
            .queue_delete(name.into(), QueueDeleteOptions::default())
            .await
            .expect("queue.delete");
    }

    async fn delete_exchange(&self, name: &str) {
        self.channel
            .exchange_delete(name.into(), ExchangeDeleteOptions::default())
            .await
            .expect("exchange.delete");
    }
}

fn header<'a>(properties: &'a BasicProperties, name: &str) -> Option<&'a AMQPValue> {
    properties
        .headers()
        .as_ref()
        .and_then(|headers| headers.inner().get(name))
}

fn header_text(properties: &BasicProperties, name: &str) -> Option<String> {
    match header(properties, name)? {
        AMQPValue::LongString(text) => Some(String::from_utf8_lossy(text.as_bytes()).into_owned()),
        AMQPValue::ShortString(text) => Some(text.to_string()),
        _ => None,
    }
}

fn job_ids(messages: &[lapin::message::Delivery]) -> Vec<String> {
    messages
        .iter()
        .filter_map(|m| {
            m.properties
                .message_id()
                .as_ref()
                .map(ShortString::to_string)
        })
        .collect()
}

/// A user (and optionally a vhost) on the machine's broker, removed again even when the test
/// fails.
struct SystemAccount {
    user: String,
    vhost: Option<String>,
}

impl SystemAccount {
    async fn create(user: &str, password: &str, vhost: Option<&str>) -> Self {
        let account = SystemAccount {
            user: user.to_owned(),
            vhost: vhost.map(str::to_owned),
        };
        if let Some(vhost) = vhost {
            system_ctl(&["add_vhost", vhost]).await.expect("add_vhost");
        }
        system_ctl(&["add_user", user, password])
            .await
            .expect("add_user");
        system_ctl(&[
            "set_permissions",
            "-p",
            vhost.unwrap_or("/"),
            user,
            ".*",
            ".*",
            ".*",
        ])
        .await
        .expect("set_permissions");
        account
    }
}

impl Drop for SystemAccount {
    fn drop(&mut self) {
        let ctl = |args: &[&str]| {
            let _ = std::process::Command::new("rabbitmqctl")
                .args(args)
                .stdout(std::process::Stdio::null())
                .status();
        };
        ctl(&["delete_user", &self.user]);
        if let Some(vhost) = &self.vhost {
            ctl(&["delete_vhost", vhost]);
        }
    }
}

// ---- tests ---------------------------------------------------------------------------------

#[tokio::test]
async fn a_message_lands_in_a_bound_queue_with_its_properties() {
    let ns = unique_namespace();
    let (exchange, queue) = (format!("{ns}-x"), format!("{ns}-q"));
    let broker = Broker::system().await;
    broker.exchange(&exchange).await;
    broker.queue(&queue).await;
    broker.bind(&queue, &exchange, "grades.updated").await;

    let setup = Setup::loopback_allowed();
    let mut amqp = setup.transport();
    amqp.exchange = exchange.clone();
    let mut service = service(amqp);
    service.signing_secret = Some(setup.keyring.seal(SIGNING_SECRET).expect("seal"));
    let target = setup.target(&service);
    let job = new_job();
    let meta = meta(job, 3);
    let attempt = target
        .deliver(&request(None, "grades.updated", r#"{"grade":"A"}"#), &meta)
        .await;
    assert_delivered(&attempt);

    let messages = broker.take(&queue, 1).await;
    assert_eq!(messages.len(), 1);
    let message = &messages[0];
    assert_eq!(message.data, br#"{"grade":"A"}"#);
    assert_eq!(message.exchange.as_str(), exchange);
    assert_eq!(message.routing_key.as_str(), "grades.updated");
    let properties = &message.properties;
    assert_eq!(
        properties.content_type().as_ref().map(ShortString::as_str),
        Some("application/json")
    );
    assert_eq!(*properties.delivery_mode(), Some(2), "persistent");
    assert_eq!(
        properties.message_id().as_ref().map(ShortString::to_string),
        Some(job.to_string())
    );
    assert_eq!(header_text(properties, "mih-job-id"), Some(job.to_string()));
    assert_eq!(
        header_text(properties, "mih-event-id"),
        meta.event_id.map(|e| e.to_string())
    );
    assert_eq!(
        header(properties, "mih-attempt"),
        Some(&AMQPValue::LongInt(3))
    );
    assert_eq!(
        header_text(properties, "traceparent").as_deref(),
        Some(TRACEPARENT)
    );
    assert_eq!(header_text(properties, "x-rule").as_deref(), Some("grades"));
    assert_eq!(
        header_text(properties, "x-static").as_deref(),
        Some("from the service")
    );
    // Signed the Standard Webhooks way, `webhook-id` being the job id.
    assert_eq!(header_text(properties, "webhook-id"), Some(job.to_string()));
    let mut signature = http::HeaderMap::new();
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        let value = header_text(properties, name).expect(name);
        signature.insert(name, value.parse().expect("header value"));
    }
    standardwebhooks::Webhook::new(SIGNING_SECRET)
        .expect("secret")
        .verify(&message.data, &signature)
        .expect("a valid signature");

    target.close().await;
    broker.delete_queue(&queue).await;
    broker.delete_exchange(&exchange).await;
}

#[tokio::test]
async fn the_default_exchange_routes_by_queue_name() {
    let queue = format!("{}-q", unique_namespace());
    let broker = Broker::system().await;
    broker.queue(&queue).await;

    let setup = Setup::loopback_allowed();
    let mut amqp = setup.transport();
    // The service's routing key applies when the request has none.
    amqp.routing_key = queue.clone();
    let target = setup.target(&service(amqp));
    assert_delivered(
        &target
            .deliver(&request(None, &queue, "one"), &meta(new_job(), 1))
            .await,
    );
    assert_delivered(
        &target
            .deliver(&request(None, "", "two"), &meta(new_job(), 1))
            .await,
    );

    let messages = broker.take(&queue, 2).await;
    let bodies: BTreeSet<&[u8]> = messages.iter().map(|m| m.data.as_slice()).collect();
    assert_eq!(bodies, BTreeSet::from([&b"one"[..], &b"two"[..]]));
    assert!(messages.iter().all(|m| m.exchange.as_str().is_empty()));

    target.close().await;
    broker.delete_queue(&queue).await;
}

#[tokio::test]
async fn queue_declare_creates_a_durable_queue() {
    let queue = format!("{}-declared", unique_namespace());
    let setup = Setup::loopback_allowed();
    let mut amqp = setup.transport();
    amqp.queue_declare = Some(queue.clone());
    let target = setup.target(&service(amqp));
    // No exchange and no routing key: straight into the declared queue.
    assert_delivered(
        &target
            .deliver(&request(None, "", "kept"), &meta(new_job(), 1))
            .await,
    );

    let listed = system_ctl(&["list_queues", "--quiet", "name", "durable", "messages"])
        .await
        .expect("list_queues");
    let row = listed
        .lines()
        .find(|line| line.split_whitespace().next() == Some(queue.as_str()))
        .unwrap_or_else(|| panic!("`{queue}` not declared: {listed}"));
    assert_eq!(
        row.split_whitespace().collect::<Vec<_>>(),
        [queue.as_str(), "true", "1"]
    );

    target.close().await;
    Broker::system().await.delete_queue(&queue).await;
}

#[tokio::test]
async fn an_unroutable_message_is_a_permanent_failure() {
    let ns = unique_namespace();
    let (exchange, queue) = (format!("{ns}-x"), format!("{ns}-q"));
    let broker = Broker::system().await;
    broker.exchange(&exchange).await;
    broker.queue(&queue).await;
    broker.bind(&queue, &exchange, "bound").await;

    let setup = Setup::loopback_allowed();
    let mut amqp = setup.transport();
    amqp.exchange = exchange.clone();
    let target = setup.target(&service(amqp));
    let attempt = target
        .deliver(
            &request(None, "nobody-listens", "lost?"),
            &meta(new_job(), 1),
        )
        .await;
    assert_failed(
        &attempt,
        Verdict::Permanent,
        &[
            "unroutable",
            &format!("exchange `{exchange}`"),
            "`nobody-listens`",
            "312 NO_ROUTE",
        ],
    );
    // The channel is still good for routable messages.
    assert_delivered(
        &target
            .deliver(&request(None, "bound", "found"), &meta(new_job(), 1))
            .await,
    );
    let messages = broker.take(&queue, 1).await;
    assert_eq!(messages[0].data, b"found");

    target.close().await;
    broker.delete_queue(&queue).await;
    broker.delete_exchange(&exchange).await;
}

/// Several publishes in flight at once, some routable, some not: each must be judged by its own
/// fate. (lapin hands a returned message to whichever confirm it resolves next, so this is only
/// true when no two publishes share a channel at the same time.)
#[tokio::test]
async fn concurrent_unroutable_and_routable_messages_are_told_apart() {
    let ns = unique_namespace();
    let (exchange, queue) = (format!("{ns}-x"), format!("{ns}-q"));
    let broker = Broker::system().await;
    broker.exchange(&exchange).await;
    broker.queue(&queue).await;
    broker.bind(&queue, &exchange, "bound").await;
    let setup = Setup::loopback_allowed();
    let mut amqp = setup.transport();
    amqp.exchange = exchange.clone();
    let target = Arc::new(setup.target(&service(amqp)));

    for round in 0..5 {
        let jobs: Vec<(JobId, bool)> = (0..40).map(|i| (new_job(), i % 3 != 0)).collect();
        let deliveries = jobs.iter().map(|&(job, routable)| {
            let target = Arc::clone(&target);
            let key = if routable { "bound" } else { "unbound" };
            let request = request(None, key, &job.to_string());
            async move { (job, routable, target.deliver(&request, &meta(job, 1)).await) }
        });
        for (job, routable, attempt) in futures::future::join_all(deliveries).await {
            let expected = if routable {
                Verdict::Delivered
            } else {
                Verdict::Permanent
            };
            assert_eq!(
                attempt.verdict, expected,
                "round {round}, job {job}: {attempt:?}"
            );
        }
        let arrived: BTreeSet<String> = job_ids(&broker.drain(&queue).await).into_iter().collect();
        let routed: BTreeSet<String> = jobs
            .iter()
            .filter(|(_, routable)| *routable)
            .map(|(job, _)| job.to_string())
            .collect();
        assert_eq!(arrived, routed, "round {round}");
    }

    target.close().await;
    broker.delete_queue(&queue).await;
    broker.delete_exchange(&exchange).await;
}

#[tokio::test]
async fn a_missing_exchange_is_permanent_and_the_channel_is_reopened() {
    let ns = unique_namespace();
    let queue = format!("{ns}-q");
    let broker = Broker::system().await;
    broker.queue(&queue).await;

    let setup = Setup::loopback_allowed();
    let target = setup.target(&service(setup.transport()));
    let missing = format!("{ns}-missing");
    let attempt = target
        .deliver(
            &request(Some(&missing), &queue, "nowhere"),
            &meta(new_job(), 1),
        )
        .await;
    assert_failed(
        &attempt,
        Verdict::Permanent,
        &["NOT_FOUND - no exchange", &missing, "(404)"],
    );

    // The broker closed the channel; the next delivery gets a new one.
    assert_delivered(
        &target
            .deliver(&request(None, &queue, "after"), &meta(new_job(), 1))
            .await,
    );
    assert_eq!(broker.take(&queue, 1).await[0].data, b"after");

    target.close().await;
    broker.delete_queue(&queue).await;
}

#[tokio::test]
async fn wrong_credentials_and_unknown_vhosts_fail_the_attempt() {
    let setup = Setup::loopback_allowed();
    let queue = format!("{}-q", unique_namespace());

    let wrong_password = setup.transport_to(SYSTEM_PORT, "/", "guest", "not-the-password");
    let target = setup.target(&service(wrong_password));
    let attempt = target
        .deliver(&request(None, &queue, "x"), &meta(new_job(), 1))
        .await;
    let error = assert_failed(
        &attempt,
        Verdict::Retryable { retry_after: None },
        &[
            "cannot connect to amqp://guest@127.0.0.1:5672",
            "ACCESS_REFUSED",
        ],
    );
    assert!(!error.contains("not-the-password"), "{error}");

    let unknown_vhost = format!("{}-no-such-vhost", unique_namespace());
    let target = setup.target(&service(setup.transport_to(
        SYSTEM_PORT,
        &unknown_vhost,
        "guest",
        "guest",
    )));
    let attempt = target
        .deliver(&request(None, &queue, "x"), &meta(new_job(), 1))
        .await;
    assert_failed(
        &attempt,
        Verdict::Retryable { retry_after: None },
        &["NOT_ALLOWED", &unknown_vhost, "(530)"],
    );

    // Reconnecting backs off instead of hammering the broker.
    let again = target
        .deliver(&request(None, &queue, "x"), &meta(new_job(), 2))
        .await;
    assert_failed(
        &again,
        Verdict::Retryable { retry_after: None },
        &["not reconnecting", "NOT_ALLOWED"],
    );
}

#[tokio::test]
async fn special_characters_in_password_and_vhost_work() {
    let ns = unique_namespace();
    let user = format!("{ns}-user");
    let password = "p@ss/w:rd%20?#&=é";
    let vhost = format!("{ns}/vhost with spaces%");
    let _account = SystemAccount::create(&user, password, Some(&vhost)).await;
    let queue = format!("{ns}-q");
    let broker = Broker::connect(SYSTEM_PORT, &vhost, &user, password).await;
    broker.queue(&queue).await;

    let setup = Setup::loopback_allowed();
    let target = setup.target(&service(setup.transport_to(
        SYSTEM_PORT,
        &vhost,
        &user,
        password,
    )));
    assert_delivered(
        &target
            .deliver(&request(None, &queue, "hello"), &meta(new_job(), 1))
            .await,
    );
    assert_eq!(broker.take(&queue, 1).await[0].data, b"hello");

    target.close().await;
    broker.delete_queue(&queue).await;
}

/// AMQP short strings end at 255 bytes (lapin panics beyond); a templated routing key can be
/// longer.
#[tokio::test]
async fn an_overlong_routing_key_is_a_permanent_failure() {
    let setup = Setup::loopback_allowed();
    let target = setup.target(&service(setup.transport()));
    let key = "k".repeat(300);
    let attempt = target
        .deliver(&request(None, &key, "x"), &meta(new_job(), 1))
        .await;
    assert_failed(
        &attempt,
        Verdict::Permanent,
        &["routing key `kkkk", "longer than 255 bytes"],
    );
}

#[tokio::test]
async fn the_ssrf_guard_refuses_loopback_without_an_allowlist() {
    let setup = Setup::with_guard(SsrfGuard::default());
    let target = setup.target(&service(setup.transport()));
    let attempt = target
        .deliver(&request(None, "q", "x"), &meta(new_job(), 1))
        .await;
    assert_failed(
        &attempt,
        Verdict::Permanent,
        &["127.0.0.1", "loopback", "dispatcher.allow_networks"],
    );
}

#[tokio::test]
async fn tls_refuses_a_certificate_it_cannot_verify() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = tokio::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
        ])
        .args(["-addext", "basicConstraints=critical,CA:FALSE", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .await
        .expect("openssl");
    assert!(made.status.success(), "{made:?}");
    // A TLS server with a self-signed certificate, standing in for a broker.
    let port = mih_testkit::free_port().expect("port");
    let _server = tokio::process::Command::new("openssl")
        .args([
            "s_server",
            "-quiet",
            "-accept",
            &format!("127.0.0.1:{port}"),
        ])
        .arg("-cert")
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("openssl s_server");
    eventually(WAIT, || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    })
    .await
    .expect("the TLS server listens");

    let setup = Setup::loopback_allowed();
    let mut amqp = setup.transport_to(port, "/", "guest", "guest");
    amqp.host = "localhost".to_owned();
    amqp.tls = true;
    let target = setup.target(&service(amqp));
    let attempt = target
        .deliver(&request(None, "q", "x"), &meta(new_job(), 1))
        .await;
    assert_failed(
        &attempt,
        Verdict::Retryable { retry_after: None },
        &["amqps://guest@localhost", "invalid peer certificate"],
    );
}

#[tokio::test]
async fn a_silent_broker_is_a_timeout() {
    // Accepts TCP connections and never says a word.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listener");
    let port = listener.local_addr().expect("addr").port();
    let held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            sockets.push(socket);
        }
    });

    let setup = Setup::loopback_allowed();
    let mut service = service(setup.transport_to(port, "/", "guest", "guest"));
    service.timeout_ms = 300;
    let target = setup.target(&service);
    let attempt = target
        .deliver(&request(None, "q", "x"), &meta(new_job(), 1))
        .await;
    assert_failed(
        &attempt,
        Verdict::Timeout,
        &["connecting to the broker", "300ms"],
    );
    held.abort();
}

#[tokio::test]
async fn concurrent_deliveries_share_one_connection_until_closed() {
    let queue = format!("{}-q", unique_namespace());
    let broker = Broker::system().await;
    broker.queue(&queue).await;
    let setup = Setup::loopback_allowed();
    let service = service(setup.transport());
    let name = service.name.to_string();
    let target = Arc::new(setup.target(&service));

    let jobs: Vec<JobId> = (0..50).map(|_| new_job()).collect();
    let deliveries = jobs.iter().map(|&job| {
        let target = Arc::clone(&target);
        let request = request(None, &queue, &job.to_string());
        async move { target.deliver(&request, &meta(job, 1)).await }
    });
    for attempt in futures::future::join_all(deliveries).await {
        assert_delivered(&attempt);
    }
    let arrived: BTreeSet<String> = job_ids(&broker.take(&queue, jobs.len()).await)
        .into_iter()
        .collect();
    let sent: BTreeSet<String> = jobs.iter().map(JobId::to_string).collect();
    assert_eq!(arrived, sent);

    let connections = || async {
        let listed = system_ctl(&["list_connections", "--quiet", "client_properties"])
            .await
            .map_err(|e| e.to_string())?;
        Ok::<usize, String>(listed.matches(&format!("mih-dispatcher {name}")).count())
    };
    assert_eq!(connections().await, Ok(1));

    target.close().await;
    eventually(WAIT, || async {
        match connections().await? {
            0 => Ok(()),
            n => Err(format!("{n} connections still open")),
        }
    })
    .await
    .expect("the connection closes");
    let after = target
        .deliver(&request(None, &queue, "late"), &meta(new_job(), 1))
        .await;
    assert_failed(
        &after,
        Verdict::Retryable { retry_after: None },
        &["closed"],
    );
    broker.delete_queue(&queue).await;
}

/// Counters shared by the publishing workers and the test.
#[derive(Default)]
struct Run {
    /// Jobs handed out so far; workers stop taking new ones once `limit` is reached.
    issued: std::sync::Mutex<Vec<JobId>>,
    limit: AtomicUsize,
    delivered: AtomicUsize,
    failed_attempts: AtomicUsize,
}

impl Run {
    fn next_job(&self) -> Option<JobId> {
        let mut issued = self.issued.lock().expect("lock");
        if issued.len() >= self.limit.load(Ordering::SeqCst) {
            return None;
        }
        let job = new_job();
        issued.push(job);
        Some(job)
    }

    fn issued(&self) -> Vec<JobId> {
        self.issued.lock().expect("lock").clone()
    }

    async fn wait_for(&self, what: &str, fact: impl Fn(&Run) -> bool) {
        eventually(WAIT, || async {
            if fact(self) {
                Ok(())
            } else {
                Err(format!(
                    "{what}: {} delivered, {} failed attempts",
                    self.delivered.load(Ordering::SeqCst),
                    self.failed_attempts.load(Ordering::SeqCst)
                ))
            }
        })
        .await
        .expect(what);
    }
}

/// One publishing worker: takes jobs and retries each until the broker confirms it, as the
/// dispatcher's retries would.
async fn publish_jobs(target: Arc<AmqpTarget>, run: Arc<Run>) -> Result<(), String> {
    while let Some(job) = run.next_job() {
        let request = request(None, "", &job.to_string());
        let mut attempt = 0;
        eventually(Duration::from_secs(120), || {
            attempt += 1;
            let meta = meta(job, attempt);
            let (target, request, run) = (&target, &request, &run);
            async move {
                let outcome = target.deliver(request, &meta).await;
                match outcome.verdict {
                    Verdict::Delivered => Ok(Ok(())),
                    Verdict::Permanent => Ok(Err(format!("{outcome:?}"))),
                    Verdict::Retryable { .. } | Verdict::Timeout => {
                        run.failed_attempts.fetch_add(1, Ordering::SeqCst);
                        Err(format!("{outcome:?}"))
                    }
                }
            }
        })
        .await
        .map_err(|e| format!("job {job} never delivered: {e}"))??;
        run.delivered.fetch_add(1, Ordering::SeqCst);
    }
    Ok(())
}

/// Workers publish jobs into a durable queue declared by the transport; `outage` stops the
/// broker in the middle of the run, attempts fail, the broker comes back, the workers carry on
/// through a new connection. Then every job must be in the queue: duplicates allowed (a publish
/// whose confirm was lost is sent again), none missing.
async fn publish_through_outage(outage: impl AsyncFnOnce(&mut RabbitMqNode), label: &str) {
    const WORKERS: usize = 4;
    const BATCH: usize = 40;
    let mut node = RabbitMqNode::start().await.expect("private RabbitMQ node");
    eprintln!("{label}: private node booted in {:?}", node.last_boot());
    let queue = format!("{}-durable", unique_namespace());
    let setup = Setup::loopback_allowed();
    let mut amqp = setup.transport_to(node.port(), "/", "guest", "guest");
    amqp.queue_declare = Some(queue.clone());
    let mut service = service(amqp);
    service.timeout_ms = 2_000;
    let target = Arc::new(setup.target(&service));
    let run = Arc::new(Run {
        limit: AtomicUsize::new(usize::MAX),
        ..Run::default()
    });
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| tokio::spawn(publish_jobs(Arc::clone(&target), Arc::clone(&run))))
        .collect();

    run.wait_for("deliveries before the outage", |run| {
        run.delivered.load(Ordering::SeqCst) >= BATCH
    })
    .await;
    let delivered_before_outage = run.delivered.load(Ordering::SeqCst);
    outage(&mut node).await;
    let delivered_at_outage = run.delivered.load(Ordering::SeqCst);
    run.wait_for("failed attempts during the outage", |run| {
        run.failed_attempts.load(Ordering::SeqCst) > 0
    })
    .await;
    node.restart().await.expect("restart");
    eprintln!("{label}: node restarted in {:?}", node.last_boot());
    let before = run.delivered.load(Ordering::SeqCst);
    run.wait_for("deliveries after the restart", |run| {
        run.delivered.load(Ordering::SeqCst) >= before + BATCH
    })
    .await;
    {
        let issued = run.issued.lock().expect("lock");
        run.limit.store(issued.len(), Ordering::SeqCst);
    }
    for worker in workers {
        worker.await.expect("worker").expect("every job delivered");
    }
    let issued = run.issued();
    assert_eq!(run.delivered.load(Ordering::SeqCst), issued.len());

    let listed = node
        .ctl(&["list_queues", "--quiet", "name", "durable"])
        .await
        .expect("list_queues");
    assert!(
        listed
            .lines()
            .any(|line| line.split_whitespace().eq([queue.as_str(), "true"])),
        "{listed}"
    );
    let broker = Broker::connect(node.port(), "/", "guest", "guest").await;
    let arrived = job_ids(&broker.drain(&queue).await);
    let unique: BTreeSet<&String> = arrived.iter().collect();
    let missing: Vec<String> = issued
        .iter()
        .map(JobId::to_string)
        .filter(|job| !unique.contains(job))
        .collect();
    // Where the lost ones sit in issue order tells a broker that dropped its queue's content
    // on recovery (every job confirmed before the outage) from confirms counted wrongly.
    let positions: Vec<usize> = issued
        .iter()
        .enumerate()
        .filter(|(_, job)| !unique.contains(&job.to_string()))
        .map(|(i, _)| i)
        .collect();
    assert!(
        missing.is_empty(),
        "lost {} of {} jobs; confirmed when the outage began {delivered_before_outage}, when \
         it ended {delivered_at_outage}; lost positions in issue order {:?}..{:?}; the \
         broker's log ends with:\n{}",
        missing.len(),
        issued.len(),
        positions.first(),
        positions.last(),
        node.log_tail(40)
    );
    eprintln!(
        "{label}: {} jobs, {} failed attempts during the outage, {} messages in the queue ({} duplicates)",
        issued.len(),
        run.failed_attempts.load(Ordering::SeqCst),
        arrived.len(),
        arrived.len() - unique.len()
    );
    target.close().await;
}

#[tokio::test]
async fn a_broker_restart_mid_run_loses_nothing() {
    publish_through_outage(
        async |node: &mut RabbitMqNode| node.stop().await.expect("stop"),
        "graceful restart",
    )
    .await;
}

#[tokio::test]
async fn a_broker_crash_mid_run_loses_nothing() {
    publish_through_outage(
        async |node: &mut RabbitMqNode| node.kill().await.expect("kill"),
        "crash",
    )
    .await;
}
