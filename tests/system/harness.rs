//! Starting a hub for one test: its own NATS server, namespace and database, services on
//! ephemeral ports, and typed helpers to talk to it.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use reqwest::StatusCode;
use serde_json::Value;

use mih::Hub;
use mih_shared::ServiceName;
use mih_shared::config::{Config, ConfigLoader};
use mih_shared::messages::{self, Event};
use mih_testkit::sign::{TEST_SECRET, TEST_TOKEN};
use mih_testkit::{NatsServer, TestDatabase, unique_namespace};

/// Token of the `closed` source, which exists but is disabled.
pub const CLOSED_TOKEN: &str = "closed-source-token-0000";
/// The admin API token every test hub bootstraps.
pub const ADMIN_TOKEN: &str = "test-admin-token-0000000";
/// The key test hubs encrypt secrets with.
pub const SECRET_KEY: &str = "q2Vp2Nv5rPfBk0pO2Kq7pZbJm0Ck4YqZp0dJmQ8v3Xo=";

pub struct TestHub {
    pub nats: NatsServer,
    /// Held so the database lives as long as the hub; dropped (and deleted) with it.
    _db: Option<TestDatabase>,
    pub config: Arc<Config>,
    pub http: reqwest::Client,
    pub js: jetstream::Context,
    services: Vec<ServiceName>,
    hub: Option<Hub>,
    /// Hubs started later with `add_services` (as extra replicas or late services).
    extra: Vec<Hub>,
}

#[derive(Default)]
pub struct Builder {
    services: Vec<ServiceName>,
    extra_toml: String,
}

impl Builder {
    pub fn services(mut self, services: &[ServiceName]) -> Self {
        self.services = services.to_vec();
        self
    }

    /// TOML merged over the test configuration.
    pub fn toml(mut self, extra: &str) -> Self {
        self.extra_toml.push_str(extra);
        self.extra_toml.push('\n');
        self
    }

    pub async fn start(self) -> TestHub {
        mih_shared::telemetry::init_for_tests();
        let services = if self.services.is_empty() {
            ServiceName::ALL.to_vec()
        } else {
            self.services
        };
        let nats = NatsServer::start().await.expect("nats-server starts");
        let db = if services.iter().any(|s| s.uses_database()) {
            Some(TestDatabase::create().await.expect("test database"))
        } else {
            None
        };
        let config = test_config(&nats, db.as_ref(), &self.extra_toml);
        let hub = mih::start(Arc::clone(&config), &services)
            .await
            .expect("hub starts");
        let client = async_nats::connect(nats.url())
            .await
            .expect("test client connects");
        let hub = TestHub {
            nats,
            _db: db,
            config,
            http: reqwest::Client::new(),
            js: jetstream::new(client),
            services,
            hub: Some(hub),
            extra: Vec::new(),
        };
        hub.wait_until_serving().await;
        hub
    }
}

pub fn test_config(nats: &NatsServer, db: Option<&TestDatabase>, extra: &str) -> Arc<Config> {
    let database_url = db.map_or("postgres://postgres@127.0.0.1:5432/unused", |db| db.url());
    let base = format!(
        r#"
        namespace = "{ns}"
        secret_key = "{SECRET_KEY}"
        bootstrap_admin_token = "{ADMIN_TOKEN}"
        [nats]
        url = "{nats}"
        connect_timeout = "10s"
        request_timeout = "3s"
        [database]
        url = "{database_url}"
        max_connections = 4
        connect_timeout = "10s"
        [shutdown]
        drain_timeout = "10s"
        [ingest]
        listen = "127.0.0.1:0"
        publish_timeout = "2s"
        retry_after = "3s"
        [matcher]
        listen = "127.0.0.1:0"
        [dispatcher]
        listen = "127.0.0.1:0"
        allow_networks = ["127.0.0.0/8"]
        [dlq]
        listen = "127.0.0.1:0"
        [api]
        listen = "127.0.0.1:0"
        [sources.moodle]
        name = "Moodle under test"
        signing_secrets = ["{TEST_SECRET}"]
        bearer_tokens = ["{TEST_TOKEN}"]
        [sources.closed]
        enabled = false
        signing_secrets = ["{TEST_SECRET}"]
        bearer_tokens = ["{CLOSED_TOKEN}"]
        "#,
        ns = unique_namespace(),
        nats = nats.url(),
    );
    let config = ConfigLoader::new()
        .toml(&base)
        .toml(extra)
        .load()
        .unwrap_or_else(|e| panic!("test configuration is invalid: {e}"));
    Arc::new(config)
}

/// A stored stream message, decoded.
#[derive(Debug)]
pub struct Stored {
    pub subject: String,
    pub headers: async_nats::HeaderMap,
    pub payload: bytes::Bytes,
}

impl Stored {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).map(|v| v.as_str().to_owned())
    }

    pub fn event(&self) -> Event {
        messages::decode(&self.payload).expect("stored message is an Event")
    }
}

/// An HTTP answer with its JSON body.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Answer {
    /// Reads a response whose body is JSON (or empty, as for 204).
    pub async fn read(response: reqwest::Response) -> Answer {
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"))
        };
        Answer {
            status,
            headers,
            body,
        }
    }

    pub fn etag(&self) -> Option<String> {
        self.headers
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    /// The names of the fields a 422 complains about.
    pub fn fields(&self) -> Vec<String> {
        self.body["errors"]
            .as_array()
            .map(|errors| {
                errors
                    .iter()
                    .filter_map(|e| e["field"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The admin API of a test hub, as one token.
pub struct Api<'a> {
    hub: &'a TestHub,
    token: String,
}

impl Api<'_> {
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> Answer {
        let mut request = self
            .hub
            .http
            .request(method, self.hub.url(ServiceName::Api, path))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        if let Some(etag) = if_match {
            request = request.header("if-match", etag);
        }
        Answer::read(request.send().await.expect("api answers")).await
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(reqwest::Method::GET, path, None, None).await
    }
    pub async fn post(&self, path: &str, body: &Value) -> Answer {
        self.send(reqwest::Method::POST, path, Some(body), None)
            .await
    }
    pub async fn patch(&self, path: &str, body: &Value) -> Answer {
        self.send(reqwest::Method::PATCH, path, Some(body), None)
            .await
    }
    pub async fn patch_if(&self, path: &str, body: &Value, etag: &str) -> Answer {
        self.send(reqwest::Method::PATCH, path, Some(body), Some(etag))
            .await
    }
    pub async fn delete(&self, path: &str) -> Answer {
        self.send(reqwest::Method::DELETE, path, None, None).await
    }
    /// Sends any method with an optional body (table-driven tests).
    pub async fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Answer {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        self.send(method, path, body, None).await
    }
}

impl TestHub {
    pub fn builder() -> Builder {
        Builder::default()
    }

    pub fn addr(&self, service: ServiceName) -> std::net::SocketAddr {
        self.hub
            .as_ref()
            .and_then(|h| h.addr(service))
            .unwrap_or_else(|| panic!("{service} is not running in this hub"))
    }

    pub fn url(&self, service: ServiceName, path: &str) -> String {
        format!("http://{}{path}", self.addr(service))
    }

    pub fn names(&self) -> mih_shared::names::Names {
        mih_shared::names::Names::new(self.config.namespace.clone())
    }

    /// Ready, and when ingest runs with api: ingest knows the seeded `moodle` source.
    async fn wait_until_serving(&self) {
        for service in &self.services {
            self.wait_ready(*service).await;
        }
        if self.services.contains(&ServiceName::Ingest) && self.services.contains(&ServiceName::Api)
        {
            mih_testkit::eventually(Duration::from_secs(10), || async {
                // An empty batch is refused as 400 once the token is known, 401 before.
                let answer = self.post_bearer(b"[]", "application/json").await;
                if answer.status == StatusCode::BAD_REQUEST {
                    Ok(())
                } else {
                    Err(format!("{}: {}", answer.status, answer.body))
                }
            })
            .await
            .unwrap_or_else(|e| panic!("ingest never learned the seeded source: {e}"));
        }
    }

    /// Stops the hub and starts it again with the same NATS, database and configuration.
    pub async fn restart(&mut self) {
        if let Some(hub) = self.hub.take() {
            hub.stop().await.expect("hub stops cleanly");
        }
        let hub = mih::start(Arc::clone(&self.config), &self.services)
            .await
            .expect("hub restarts");
        self.hub = Some(hub);
        self.wait_until_serving().await;
    }

    /// Registers REST service `service` at `sink` and a rule sending every event to it at
    /// `path`, and waits until the matcher and the dispatcher (when running) know them.
    pub async fn deliver_everything_to(
        &self,
        sink: &mih_testkit::HttpSink,
        service: &str,
        path: &str,
    ) {
        let created = self
            .api()
            .post(
                "/api/v1/services",
                &serde_json::json!({"name": service,
                    "transport": {"kind": "rest", "base_url": format!("{}/api", sink.url())}}),
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
        let rule = self
            .api()
            .post(
                "/api/v1/rules",
                &serde_json::json!({"name": format!("everything to {service}"), "events": ["*"],
                    "service": service, "target": {"kind": "rest", "method": "POST", "path": path}}),
            )
            .await;
        assert_eq!(rule.status, StatusCode::CREATED, "{}", rule.body);
        for running in [ServiceName::Matcher, ServiceName::Dispatcher] {
            if self.services.contains(&running) {
                self.wait_for_config(running).await;
            }
        }
    }

    /// Stops the hub's services (NATS and the database stay), as an outage would.
    pub async fn stop_services(&mut self) {
        if let Some(hub) = self.hub.take() {
            hub.stop().await.expect("hub stops cleanly");
        }
    }

    /// Starts the services again after [`Self::stop_services`]; fixed ports keep their ports.
    pub async fn start_services(&mut self) {
        assert!(self.hub.is_none(), "the hub is running");
        let hub = mih::start(Arc::clone(&self.config), &self.services)
            .await
            .expect("hub restarts");
        self.hub = Some(hub);
        self.wait_until_serving().await;
    }

    /// Starts more services in a hub of their own (same NATS, database and configuration).
    pub async fn add_services(&mut self, services: &[ServiceName]) {
        let hub = mih::start(Arc::clone(&self.config), services)
            .await
            .expect("services start");
        for service in services {
            let url = format!("http://{}/readyz", hub.addr(*service).expect("listening"));
            mih_testkit::wait_until_ok(&url, Duration::from_secs(15))
                .await
                .unwrap_or_else(|e| panic!("{service} not ready: {e}"));
        }
        self.extra.push(hub);
    }

    /// Stops what [`Self::add_services`] started, cleanly.
    pub async fn stop_added_services(&mut self) {
        for extra in self.extra.drain(..) {
            extra.stop().await.expect("added services stop cleanly");
        }
    }

    /// The Prometheus text `service` serves on `/metrics` now.
    pub async fn metrics(&self, service: ServiceName) -> String {
        self.http
            .get(self.url(service, "/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// Waits until `service` has applied every change in the config bucket so far (its
    /// `mih_config_revision` gauge reached the bucket's last revision).
    pub async fn wait_for_config(&self, service: ServiceName) {
        let bucket = format!("KV_{}", self.names().config_bucket());
        let stream = self.js.get_stream(&bucket).await.expect("config bucket");
        let last = stream.get_info().await.expect("info").state.last_sequence;
        let url = self.url(service, "/metrics");
        let label = format!("mih_config_revision{{service=\"{service}\"}} ");
        mih_testkit::eventually(Duration::from_secs(10), || {
            let (http, url, label) = (self.http.clone(), url.clone(), label.clone());
            async move {
                let text = http
                    .get(&url)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?
                    .text()
                    .await
                    .map_err(|e| e.to_string())?;
                let applied = text
                    .lines()
                    .find_map(|line| line.strip_prefix(&label))
                    .and_then(|value| value.trim().parse::<f64>().ok())
                    .unwrap_or(-1.0);
                #[allow(clippy::cast_precision_loss)]
                if applied >= last as f64 {
                    Ok(())
                } else {
                    Err(format!(
                        "{service} applied revision {applied}, the bucket is at {last}"
                    ))
                }
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{service} did not catch up with the config: {e}"));
    }

    /// The admin API as the bootstrap admin.
    pub fn api(&self) -> Api<'_> {
        self.api_as(ADMIN_TOKEN)
    }

    /// The admin API with another token.
    pub fn api_as(&self, token: &str) -> Api<'_> {
        Api {
            hub: self,
            token: token.to_owned(),
        }
    }

    pub async fn wait_ready(&self, service: ServiceName) {
        mih_testkit::wait_until_ok(&self.url(service, "/readyz"), Duration::from_secs(15))
            .await
            .unwrap_or_else(|e| panic!("{service} not ready: {e}"));
    }

    /// POSTs to ingest's `/v1/events`.
    pub async fn post_events(
        &self,
        body: impl Into<Vec<u8>>,
        content_type: &str,
        headers: &[(String, String)],
    ) -> Answer {
        let mut request = self
            .http
            .post(self.url(ServiceName::Ingest, "/v1/events"))
            .header("content-type", content_type)
            .body(body.into());
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let response = request.send().await.expect("ingest answers");
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body");
        let body =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"));
        Answer {
            status,
            headers,
            body,
        }
    }

    /// POSTs a body signed as the `moodle` source, with a fresh `webhook-id`.
    pub async fn post_signed(&self, body: &[u8], content_type: &str) -> Answer {
        let headers = mih_testkit::sign::signed_now(TEST_SECRET, "moodle", body);
        self.post_events(body.to_vec(), content_type, &headers)
            .await
    }

    /// POSTs `body` signed (a fresh `webhook-id` each time) until ingest answers `want`.
    pub async fn post_signed_until(&self, body: &[u8], want: StatusCode) -> Answer {
        mih_testkit::eventually(Duration::from_secs(20), || async move {
            let answer = self.post_signed(body, "application/json").await;
            if answer.status == want {
                Ok(answer)
            } else {
                Err(format!("{}: {}", answer.status, answer.body))
            }
        })
        .await
        .unwrap_or_else(|e| panic!("ingest never answered {want}: {e}"))
    }

    /// POSTs a body with the `moodle` source's bearer token.
    pub async fn post_bearer(&self, body: &[u8], content_type: &str) -> Answer {
        let headers = vec![("authorization".to_owned(), format!("Bearer {TEST_TOKEN}"))];
        self.post_events(body.to_vec(), content_type, &headers)
            .await
    }

    /// Waits until the matcher has acknowledged every event stored so far: whatever it was
    /// going to publish for them is published.
    pub async fn wait_for_matcher_idle(&self) {
        let partitions = mih_shared::partition::in_use(
            &self.js,
            &self.names(),
            mih_shared::partition::Partitioned::Events,
            mih_shared::partition::Partitions::ONE,
        )
        .await
        .expect("the partitions of EVENTS");
        for partition in partitions {
            self.wait_for_consumer(
                &self.names().events_partition_stream(partition),
                mih_shared::names::MATCHER_CONSUMER,
            )
            .await;
        }
    }

    /// Waits until the durable `consumer` has acknowledged (done with, for good or not)
    /// everything `stream` holds so far.
    pub async fn wait_for_consumer(&self, stream: &str, consumer: &str) {
        mih_testkit::eventually(Duration::from_secs(30), || async {
            let mut stored = self
                .js
                .get_stream(stream)
                .await
                .map_err(|e| e.to_string())?;
            let last = stored
                .info()
                .await
                .map_err(|e| e.to_string())?
                .state
                .last_sequence;
            let mut reader: jetstream::consumer::PullConsumer = stored
                .get_consumer(consumer)
                .await
                .map_err(|e| e.to_string())?;
            let info = reader.info().await.map_err(|e| e.to_string())?;
            if info.ack_floor.stream_sequence >= last {
                Ok(())
            } else {
                Err(format!(
                    "acknowledged up to {} of {last}",
                    info.ack_floor.stream_sequence
                ))
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{consumer} on {stream} never caught up: {e}"));
    }

    /// Every message stored in a stream, in order.
    pub async fn stored(&self, stream: &str) -> Vec<Stored> {
        let stream = self.js.get_stream(stream).await.expect("stream exists");
        let state = stream.get_info().await.expect("stream info").state;
        let mut stored = Vec::new();
        if state.messages == 0 {
            return stored;
        }
        for seq in state.first_sequence..=state.last_sequence {
            if let Ok(message) = stream.direct_get(seq).await {
                stored.push(Stored {
                    subject: message.subject.to_string(),
                    headers: message.headers,
                    payload: message.payload,
                });
            }
        }
        stored
    }

    pub async fn stored_events(&self) -> Vec<Stored> {
        self.stored(&self.names().events_stream()).await
    }

    /// Stops the hub, draining its services; panics if they do not stop cleanly.
    pub async fn stop(mut self) {
        for extra in self.extra.drain(..) {
            extra.stop().await.expect("added services stop cleanly");
        }
        if let Some(hub) = self.hub.take() {
            hub.stop().await.expect("hub stops cleanly");
        }
    }
}
