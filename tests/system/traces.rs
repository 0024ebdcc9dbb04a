//! OpenTelemetry traces over real processes: one `mih` process per service, exporting to an
//! OTLP/HTTP receiver, one trace from Moodle's request to each transport's target (REST, SOAP,
//! AMQP), and the traces of a facade call, a dead-letter replay and a backfill.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use mih_testkit::sign::TEST_TOKEN;
use mih_testkit::soap::{NAMESPACE, SoapServer};
use mih_testkit::{
    ADMIN_TOKEN, CollectedSpan, HttpSink, MihProcesses, NatsServer, OtlpCollector, Output, Reply,
    TestDatabase, eventually,
};

const SERVICES: [&str; 5] = ["api", "ingest", "matcher", "dispatcher", "dlq"];
const WAIT: Duration = Duration::from_secs(30);

/// A caller's trace (Moodle's, a plugin's): mih's spans must join it.
fn caller_traceparent(trace_id: &str) -> String {
    format!("00-{trace_id}-00f067aa0ba902b7-01")
}

fn trace_of(traceparent: &str) -> (String, String) {
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "a W3C traceparent: {traceparent}");
    (parts[1].to_owned(), parts[2].to_owned())
}

/// The hub's processes, each service on its own, exporting to `collector`.
struct Hub {
    mih: MihProcesses,
    children: Vec<(String, Child)>,
    logs: PathBuf,
    http: reqwest::Client,
}

impl Hub {
    fn new(nats: &NatsServer, db: &TestDatabase, collector: &OtlpCollector) -> Self {
        let mut mih = MihProcesses::new(
            env!("CARGO_BIN_EXE_mih"),
            &nats.url(),
            db.url(),
            "info,sqlx=warn",
        );
        mih.listen(&SERVICES).expect("ports");
        mih.set("MIH_DISPATCHER_ALLOW_NETWORKS", "[\"127.0.0.0/8\"]")
            .set(
                "MIH_SOURCES__MOODLE__BEARER_TOKENS",
                format!("[\"{TEST_TOKEN}\"]"),
            )
            .set("MIH_TELEMETRY_OTLP_ENDPOINT", collector.url())
            // Nothing is exported until shutdown, unless the exporter's queue fills: every span
            // checked below reached the collector because stopping flushed it.
            .set("OTEL_BSP_SCHEDULE_DELAY", "3600000");
        let logs = std::env::temp_dir().join(format!("mih-traces-{}", mih.namespace()));
        std::fs::create_dir_all(&logs).expect("log directory");
        Self {
            mih,
            children: Vec::new(),
            logs,
            http: reqwest::Client::new(),
        }
    }

    async fn start(&mut self, service: &str) {
        let log = self.logs.join(format!("{service}.log"));
        let child = self
            .mih
            .spawn(&[service], &Output::File(log.clone()))
            .expect("mih starts");
        self.children.push((service.to_owned(), child));
        if self.mih.wait_ready(service, WAIT).await.is_err() {
            panic!(
                "{service} not ready:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
    }

    async fn api(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> Value {
        let (status, answer) = self.api_status(method.clone(), path, body, None).await;
        assert!(status.is_success(), "{method} {path}: {status} {answer}");
        answer
    }

    async fn api_status(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        traceparent: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, self.mih.url("api", path))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(body) = body {
            request = request.json(body);
        }
        if let Some(traceparent) = traceparent {
            request = request.header("traceparent", traceparent);
        }
        let response = request.send().await.expect("api answers");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// SIGTERM to every process; each must drain and exit 0 (and flush its spans).
    async fn stop(&mut self) {
        for (_, child) in &self.children {
            if let Some(pid) = child.id() {
                let _ = Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status()
                    .await;
            }
        }
        for (service, child) in &mut self.children {
            let status = tokio::time::timeout(WAIT, child.wait())
                .await
                .unwrap_or_else(|_| panic!("{service} did not stop"))
                .expect("exit status");
            assert!(status.success(), "{service} exited with {status}");
        }
        let _ = std::fs::remove_dir_all(&self.logs);
    }
}

/// The spans of one trace, with helpers to walk it.
struct Trace(Vec<CollectedSpan>);

impl Trace {
    fn named(&self, service: &str, name: &str) -> Vec<&CollectedSpan> {
        self.0
            .iter()
            .filter(|s| s.service == service && s.name == name)
            .collect()
    }

    #[track_caller]
    fn one(&self, service: &str, name: &str) -> &CollectedSpan {
        let found = self.named(service, name);
        assert_eq!(
            found.len(),
            1,
            "one `{name}` of {service} in\n{}",
            self.show()
        );
        found[0]
    }

    /// The span of `service` named `name` whose parent is `parent`.
    #[track_caller]
    fn child(&self, parent: &CollectedSpan, service: &str, name: &str) -> &CollectedSpan {
        self.0
            .iter()
            .find(|s| s.service == service && s.name == name && s.parent_span_id == parent.span_id)
            .unwrap_or_else(|| {
                panic!(
                    "no `{name}` of {service} under `{}` ({}) in\n{}",
                    parent.name,
                    parent.span_id,
                    self.show()
                )
            })
    }

    fn show(&self) -> String {
        self.0
            .iter()
            .map(|s| {
                format!(
                    "  {} {} {:?} [{}] {} <- {} {:?}",
                    s.service, s.kind, s.name, s.status, s.span_id, s.parent_span_id, s.attributes
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

async fn amqp_message(queue: &str) -> lapin::message::BasicGetMessage {
    let connection = lapin::Connection::connect(
        &mih_testkit::rabbitmq::system_url(),
        lapin::ConnectionProperties::default(),
    )
    .await
    .expect("RabbitMQ (scripts/dev-deps starts it)");
    // A channel per try: a `basic.get` on a queue the dispatcher has not declared yet makes
    // RabbitMQ close the channel (404), and every later try on it would fail.
    let message = eventually(WAIT, || {
        let connection = &connection;
        async move {
            let channel = connection
                .create_channel()
                .await
                .map_err(|e| e.to_string())?;
            let got = channel
                .basic_get(
                    queue.into(),
                    lapin::options::BasicGetOptions { no_ack: true },
                )
                .await
                .map_err(|e| e.to_string())?;
            let _ = channel.close(200, "done".into()).await;
            got.ok_or_else(|| "no message yet".to_owned())
        }
    })
    .await
    .expect("the AMQP service received the event");
    if let Ok(channel) = connection.create_channel().await {
        let _ = channel
            .queue_delete(queue.into(), lapin::options::QueueDeleteOptions::default())
            .await;
    }
    let _ = connection.close(200, "done".into()).await;
    message
}

fn amqp_header(message: &lapin::message::BasicGetMessage, name: &str) -> Option<String> {
    let headers = message.delivery.properties.headers().as_ref()?;
    match headers.inner().get(name)? {
        lapin::types::AMQPValue::LongString(text) => Some(text.to_string()),
        other => Some(format!("{other:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_runs_from_moodle_through_every_process_to_each_transport() {
    let nats = NatsServer::start().await.expect("nats");
    let db = TestDatabase::create().await.expect("database");
    let collector = OtlpCollector::start().await.expect("collector");
    let sis = HttpSink::start().await.expect("sink");
    let gone = HttpSink::start().await.expect("sink");
    gone.set_reply(Reply::status(400).with_body("unknown learner"));
    let soap = SoapServer::start()
        .await
        .expect("the spyne server (run scripts/dev-deps)");
    let mut hub = Hub::new(&nats, &db, &collector);
    let queue = format!("mih-traces-{}", hub.mih.namespace());
    let namespace = hub.mih.namespace().to_owned();

    // api first: the others read the services and rules it stores when they start.
    hub.start("api").await;
    let post = reqwest::Method::POST;
    for service in [
        json!({"name": "sis", "transport": {"kind": "rest", "base_url": sis.url()}}),
        json!({"name": "gone", "transport": {"kind": "rest", "base_url": gone.url()},
               "retry": {"max_retries": 0}}),
        json!({"name": "erp", "transport": {"kind": "soap", "endpoint": soap.url(),
               "version": "1.1", "namespace": NAMESPACE}}),
        json!({"name": "bus", "transport": {"kind": "amqp", "host": "127.0.0.1", "port": 5672,
               "username": "guest", "password": "guest", "queue_declare": queue,
               "routing_key": queue}}),
    ] {
        hub.api(post.clone(), "/api/v1/services", Some(&service))
            .await;
    }
    for rule in [
        json!({"name": "to-sis", "events": ["*"], "service": "sis",
               "target": {"kind": "rest", "method": "POST", "path": "/hook?token=s3cret"}}),
        json!({"name": "to-gone", "events": ["*"], "service": "gone",
               "target": {"kind": "rest", "method": "POST", "path": "/hook"}}),
        json!({"name": "to-erp", "events": ["*"], "service": "erp",
               "target": {"kind": "soap", "operation": "EnrolUser"},
               "body": "<EnrolUser><userid>27</userid><courseid>12</courseid><role>student</role></EnrolUser>"}),
        json!({"name": "to-bus", "events": ["*"], "service": "bus",
               "target": {"kind": "amqp"}}),
    ] {
        hub.api(post.clone(), "/api/v1/rules", Some(&rule)).await;
    }
    for service in ["ingest", "matcher", "dispatcher", "dlq"] {
        hub.start(service).await;
    }
    hub.mih
        .wait_source_known(WAIT)
        .await
        .expect("ingest knows the source");

    // 1. A Moodle event, sent without a trace: ingest starts one.
    let event = mih_testkit::fixtures::moodle_events()[0].to_string();
    let accepted = hub
        .http
        .post(hub.mih.url("ingest", "/v1/events"))
        .bearer_auth(TEST_TOKEN)
        .header("content-type", "application/json")
        .body(event)
        .send()
        .await
        .expect("ingest answers");
    assert_eq!(accepted.status(), StatusCode::ACCEPTED);
    let to_sis = sis.wait_for(1, WAIT).await.expect("sis got the event");
    let sis_parent = to_sis[0]
        .header("traceparent")
        .expect("traceparent")
        .to_owned();
    let to_erp = soap.wait_for(1, WAIT).await.expect("erp got the event");
    let erp_parent = to_erp[0]
        .header("traceparent")
        .expect("traceparent")
        .to_owned();
    let to_bus = amqp_message(&queue).await;
    let bus_parent = amqp_header(&to_bus, "traceparent").expect("traceparent");
    gone.wait_for(1, WAIT).await.expect("gone got the event");

    // 2. A facade call in the caller's trace.
    let facade_trace = "0af7651916cd43dd8448eb211c80319c";
    let (status, answer) = hub
        .api_status(
            post.clone(),
            "/api/v1/services/sis/request",
            Some(&json!({"path": "/report"})),
            Some(&caller_traceparent(facade_trace)),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let called = sis.wait_for(2, WAIT).await.expect("the call");
    let call_parent = called[1].header("traceparent").expect("traceparent");
    assert_eq!(
        trace_of(call_parent).0,
        facade_trace,
        "the facade call keeps the caller's trace"
    );

    // 3. The dead letter of `gone`, replayed in an operator's trace.
    let dead = eventually(WAIT, || async {
        let (_, page) = hub
            .api_status(
                reqwest::Method::GET,
                "/api/v1/dead-letters?service=gone",
                None,
                None,
            )
            .await;
        page["items"][0]["job_id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("no dead letter yet: {page}"))
    })
    .await
    .expect("gone's job dead-lettered");
    gone.set_reply(Reply::status(200));
    let replay_trace = "5b8aa5a2d2c872e8321cf37308d69df2";
    let (status, answer) = hub
        .api_status(
            post.clone(),
            &format!("/api/v1/dead-letters/{dead}/replay"),
            None,
            Some(&caller_traceparent(replay_trace)),
        )
        .await;
    assert!(status.is_success(), "{status} {answer}");
    let replayed = gone.wait_for(2, WAIT).await.expect("the replay");
    let replay_parent = replayed[1].header("traceparent").expect("traceparent");
    assert_eq!(
        trace_of(replay_parent).0,
        replay_trace,
        "the replay is in the operator's trace"
    );

    // 4. A rule made after the event, backfilled over it: a trace of its own.
    let later = hub
        .api(
            post.clone(),
            "/api/v1/rules",
            Some(&json!({"name": "later", "events": ["*"], "service": "sis",
                         "target": {"kind": "rest", "method": "POST", "path": "/backfilled"}})),
        )
        .await;
    let rule_id = later["id"].as_str().expect("rule id");
    hub.api(
        post.clone(),
        &format!("/api/v1/rules/{rule_id}/backfill"),
        Some(&json!({"from": "2000-01-01T00:00:00Z"})),
    )
    .await;
    let backfilled = sis.wait_for(3, WAIT).await.expect("the backfill");
    let backfill_parent = backfilled[2]
        .header("traceparent")
        .expect("traceparent")
        .to_owned();

    hub.stop().await;
    let spans = collector.spans();
    assert!(
        !spans.is_empty(),
        "nothing exported: the exporter was not flushed on SIGTERM"
    );
    for span in &spans {
        assert_eq!(
            span.resource.get("service.namespace").map(String::as_str),
            Some(namespace.as_str()),
            "{span:?}"
        );
    }

    // The event's trace: ingest → matcher → dispatcher → each target, parent by parent.
    let (trace_id, client_id) = trace_of(&sis_parent);
    let trace = Trace(collector.trace(&trace_id));
    let request = trace.one("mih-ingest", "POST /v1/events");
    assert_eq!(request.kind, "server");
    assert_eq!(request.parent_span_id, "", "ingest started the trace");
    assert_eq!(request.attribute("http.route"), Some("/v1/events"));
    assert_eq!(request.attribute("http.response.status_code"), Some("202"));
    let sent = trace
        .0
        .iter()
        .find(|s| s.parent_span_id == request.span_id && s.kind == "producer")
        .unwrap_or_else(|| {
            panic!(
                "ingest's publish in
{}",
                trace.show()
            )
        });
    let events_subject = sent
        .attribute("messaging.destination.name")
        .expect("destination")
        .to_owned();
    assert!(
        events_subject.starts_with(&format!("{namespace}.events.moodle.")),
        "{events_subject}"
    );
    assert_eq!(sent.name, format!("publish {events_subject}"));
    assert_eq!(sent.attribute("messaging.system"), Some("nats"));
    let matched = trace.child(sent, "mih-matcher", &format!("process {events_subject}"));
    assert_eq!(matched.kind, "consumer");
    assert_eq!(
        matched.attribute("messaging.operation.type"),
        Some("process")
    );
    assert!(
        matched.attribute("messaging.message.id").is_some(),
        "{matched:?}"
    );
    let jobs_stream = hub.mih.names().jobs_stream();
    let jobs = trace
        .named("mih-matcher", &format!("publish {jobs_stream}"))
        .into_iter()
        .find(|s| s.parent_span_id == matched.span_id)
        .unwrap_or_else(|| panic!("the jobs' publish under the event's in\n{}", trace.show()));
    assert_eq!(jobs.attribute("messaging.batch.message_count"), Some("4"));
    let processing: Vec<&CollectedSpan> = trace
        .0
        .iter()
        .filter(|s| s.service == "mih-dispatcher" && s.parent_span_id == jobs.span_id)
        .collect();
    assert_eq!(
        processing.len(),
        4,
        "one job per service:\n{}",
        trace.show()
    );
    assert!(
        processing
            .iter()
            .all(|s| s.kind == "consumer" && s.name.starts_with("process "))
    );

    let rest = trace
        .0
        .iter()
        .find(|s| s.span_id == client_id)
        .unwrap_or_else(|| panic!("sis's parent {client_id} in\n{}", trace.show()));
    assert_eq!((rest.name.as_str(), rest.kind), ("POST", "client"));
    assert_eq!(rest.attribute("http.response.status_code"), Some("200"));
    let url = rest.attribute("url.full").expect("url.full");
    assert!(
        url.ends_with("/hook"),
        "the query (a token here) is left out: {url}"
    );
    assert_eq!(rest.attribute("server.address"), Some("127.0.0.1"));
    assert!(processing.iter().any(|p| p.span_id == rest.parent_span_id));

    let (erp_trace, erp_client) = trace_of(&erp_parent);
    assert_eq!(erp_trace, trace_id, "SOAP: one trace");
    let soap_span = trace
        .0
        .iter()
        .find(|s| s.span_id == erp_client)
        .expect("soap span");
    assert_eq!(
        (soap_span.name.as_str(), soap_span.kind),
        ("POST", "client")
    );
    assert_eq!(soap_span.attribute("mih.soap.operation"), Some("EnrolUser"));

    let (bus_trace, bus_producer) = trace_of(&bus_parent);
    assert_eq!(bus_trace, trace_id, "AMQP: one trace");
    let amqp_span = trace
        .0
        .iter()
        .find(|s| s.span_id == bus_producer)
        .expect("amqp span");
    assert_eq!(
        (amqp_span.name.as_str(), amqp_span.kind),
        ("publish amq.default", "producer")
    );
    assert_eq!(amqp_span.attribute("messaging.system"), Some("rabbitmq"));
    assert_eq!(
        amqp_span.attribute("messaging.rabbitmq.destination.routing_key"),
        Some(queue.as_str())
    );

    let refused = trace
        .0
        .iter()
        .find(|s| s.kind == "client" && s.attribute("http.response.status_code") == Some("400"))
        .unwrap_or_else(|| panic!("gone's failed attempt in\n{}", trace.show()));
    assert_eq!(refused.status, "error");
    assert_eq!(refused.attribute("error.type"), Some("400"));

    // The facade call: the API request in the caller's trace, a dispatcher answering it.
    let facade = Trace(collector.trace(facade_trace));
    let call = facade.one("mih-api", "POST /api/v1/services/{name}/request");
    assert_eq!(
        call.parent_span_id, "00f067aa0ba902b7",
        "a child of the caller's span"
    );
    let asked = facade.child(call, "mih-api", &format!("publish {namespace}.rpc.request"));
    let answered = facade.child(
        asked,
        "mih-dispatcher",
        &format!("process {namespace}.rpc.request"),
    );
    let made = facade.child(answered, "mih-dispatcher", "POST");
    assert_eq!(
        made.span_id,
        trace_of(call_parent).1,
        "the service saw the client span"
    );

    // The replay: API request → replay → publish → dispatcher → the service.
    let replay = Trace(collector.trace(replay_trace));
    let asked = replay.one("mih-api", "POST /api/v1/dead-letters/{job_id}/replay");
    let replaying = replay.child(asked, "mih-api", "replay dead letter");
    assert_eq!(
        replaying.attribute("mih.dead_letter.job_id"),
        Some(dead.as_str())
    );
    let requeued = replay.child(
        replaying,
        "mih-api",
        &format!("publish {namespace}.jobs.gone"),
    );
    let redelivered = replay.child(
        requeued,
        "mih-dispatcher",
        &format!("process {namespace}.jobs.gone"),
    );
    let made = replay.child(redelivered, "mih-dispatcher", "POST");
    assert_eq!(made.span_id, trace_of(replay_parent).1);

    // The backfill: its own trace, started by api for the event.
    let (backfill_trace, backfill_client) = trace_of(&backfill_parent);
    assert_ne!(backfill_trace, trace_id);
    let backfill = Trace(collector.trace(&backfill_trace));
    let root = backfill.one("mih-api", "backfill event");
    assert_eq!(root.parent_span_id, "");
    let published = backfill.child(root, "mih-api", &format!("publish {jobs_stream}"));
    let taken = backfill.child(
        published,
        "mih-dispatcher",
        &format!("process {namespace}.jobs.sis"),
    );
    assert_eq!(
        backfill.child(taken, "mih-dispatcher", "POST").span_id,
        backfill_client
    );
}

/// `telemetry.trace_sample_ratio = 0`: mih records none of the traces it starts, yet passes
/// the context on (unsampled), and a caller's sampled trace is still recorded whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sample_ratio_thins_new_traces_but_keeps_a_callers_decision() {
    let nats = NatsServer::start().await.expect("nats");
    let db = TestDatabase::create().await.expect("database");
    let collector = OtlpCollector::start().await.expect("collector");
    let sink = HttpSink::start().await.expect("sink");
    let mut hub = Hub::new(&nats, &db, &collector);
    hub.mih
        .set("MIH_TELEMETRY_TRACE_SAMPLE_RATIO", "0")
        .set("OTEL_BSP_SCHEDULE_DELAY", "100");
    hub.start("api").await;
    hub.api(
        reqwest::Method::POST,
        "/api/v1/services",
        Some(&json!({"name": "sis", "transport": {"kind": "rest", "base_url": sink.url()}})),
    )
    .await;
    hub.api(
        reqwest::Method::POST,
        "/api/v1/rules",
        Some(&json!({"name": "to-sis", "events": ["*"], "service": "sis",
                     "target": {"kind": "rest", "method": "POST", "path": "/hook"}})),
    )
    .await;
    for service in ["ingest", "matcher", "dispatcher"] {
        hub.start(service).await;
    }
    hub.mih.wait_source_known(WAIT).await.expect("source known");

    let events = mih_testkit::fixtures::moodle_events();
    let sampled_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    for (event, traceparent) in [
        (&events[0], None),
        (&events[1], Some(caller_traceparent(sampled_trace))),
    ] {
        let mut request = hub
            .http
            .post(hub.mih.url("ingest", "/v1/events"))
            .bearer_auth(TEST_TOKEN)
            .json(event);
        if let Some(traceparent) = traceparent {
            request = request.header("traceparent", traceparent);
        }
        let response = request.send().await.expect("ingest answers");
        assert_eq!(response.status(), StatusCode::ACCEPTED);
    }
    let delivered = sink.wait_for(2, WAIT).await.expect("both delivered");
    let mut unsampled = None;
    for request in &delivered {
        let traceparent = request
            .header("traceparent")
            .expect("traceparent passed on");
        let (trace, _) = trace_of(traceparent);
        if trace == sampled_trace {
            assert!(traceparent.ends_with("-01"), "still sampled: {traceparent}");
        } else {
            assert!(traceparent.ends_with("-00"), "not sampled: {traceparent}");
            unsampled = Some(trace);
        }
    }
    let unsampled = unsampled.expect("the trace mih started reached the target");

    hub.stop().await;
    let spans = collector.spans();
    assert!(
        spans.iter().all(|s| s.trace_id != unsampled),
        "spans of an unsampled trace were exported"
    );
    let sampled = Trace(collector.trace(sampled_trace));
    for (service, name) in [
        ("mih-ingest", "POST /v1/events"),
        ("mih-dispatcher", "POST"),
    ] {
        sampled.one(service, name);
    }
}
