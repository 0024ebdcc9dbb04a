//! The dispatcher against real NATS and real HTTP targets: methods, auth, signatures, retries,
//! dead letters, the shared circuit breaker, and isolation between services.

use std::time::Duration;

use base64::Engine as _;
use chrono::Utc;
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Sha256;

use mih_shared::ServiceName;
use mih_shared::circuit::{Circuit, CircuitState};
use mih_shared::messages::{
    self, DeadLetter, Header, HttpMethod, HttpRequest, Job, JobId, Origin, Outcome, OutcomeStatus,
    Request, Version,
};
use mih_shared::names::ServiceSlug;
use mih_testkit::{HttpSink, Reply};

use crate::harness::TestHub;

pub(crate) const DELIVERY: &[ServiceName] = &[ServiceName::Api, ServiceName::Dispatcher];
pub(crate) const WAIT: Duration = Duration::from_secs(20);

pub(crate) async fn hub() -> TestHub {
    TestHub::builder().services(DELIVERY).start().await
}

/// Registers a REST service pointing at `sink`; `extra` is merged into the request body. Waits
/// until the dispatcher applied it.
pub(crate) async fn service(hub: &TestHub, name: &str, sink: &HttpSink, extra: Value) {
    register(hub, name, sink, extra).await;
    hub.wait_for_config(ServiceName::Dispatcher).await;
}

/// Registers a REST service pointing at `sink`, as [`service`] does, without waiting for a
/// dispatcher (none may run yet).
pub(crate) async fn register(hub: &TestHub, name: &str, sink: &HttpSink, extra: Value) {
    let mut body = json!({
        "name": name,
        "transport": {"kind": "rest", "base_url": format!("{}/api", sink.url())},
        "retry": {"max_retries": 5, "backoff_base_ms": 10, "backoff_cap_ms": 200},
    });
    merge(&mut body, extra);
    let answer = hub.api().post("/api/v1/services", &body).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
}

fn merge(into: &mut Value, extra: Value) {
    if let (Value::Object(into), Value::Object(extra)) = (into, extra) {
        for (key, value) in extra {
            into.insert(key, value);
        }
    }
}

pub(crate) fn job(service: &str, method: HttpMethod, path: &str, body: Option<&str>) -> Job {
    Job {
        v: Version,
        id: JobId::new_v7(),
        event_id: Some(messages::EventId::new_v7()),
        rule_id: None,
        service: ServiceSlug::parse(service).expect("slug"),
        request: Request::Http(HttpRequest {
            method,
            path: path.to_owned(),
            query: Vec::new(),
            headers: vec![Header {
                name: "X-Rule-Header".into(),
                value: "from the rule".into(),
            }],
            body: body.map(str::to_owned),
            content_type: body.map(|_| "application/json".to_owned()),
        }),
        origin: Origin::Rule,
        created_at: Utc::now(),
        replay_of: None,
        ordering_key: None,
        hold_key: false,
        source: None,
        eventname: None,
    }
}

pub(crate) async fn publish(hub: &TestHub, job: &Job) {
    let payload = messages::encode(job).expect("encodes");
    hub.js
        .publish(hub.names().job_subject(&job.service), payload)
        .await
        .expect("publish")
        .await
        .expect("stored");
}

/// Every outcome in RESULTS, in order (a message holds one or a batch).
pub(crate) async fn outcomes(hub: &TestHub) -> Vec<Outcome> {
    hub.stored(&hub.names().results_stream())
        .await
        .iter()
        .flat_map(|m| messages::decode_outcomes(&m.payload).expect("outcomes"))
        .collect()
}

pub(crate) async fn dead_letters(hub: &TestHub) -> Vec<DeadLetter> {
    hub.stored(&hub.names().dlq_stream())
        .await
        .iter()
        .map(|m| messages::decode(&m.payload).expect("a dead letter"))
        .collect()
}

pub(crate) async fn wait_for_dead_letter(hub: &TestHub) -> DeadLetter {
    mih_testkit::eventually(WAIT, || async {
        dead_letters(hub)
            .await
            .pop()
            .ok_or_else(|| "no dead letter yet".to_owned())
    })
    .await
    .expect("dead-lettered")
}

pub(crate) async fn wait_for_outcomes(hub: &TestHub, count: usize) -> Vec<Outcome> {
    mih_testkit::eventually(WAIT, || async {
        let found = outcomes(hub).await;
        if found.len() >= count {
            Ok(found)
        } else {
            Err(format!("{} outcomes of {count}", found.len()))
        }
    })
    .await
    .expect("outcomes recorded")
}

pub(crate) async fn circuit(hub: &TestHub, service: &str) -> Option<Circuit> {
    let kv = hub
        .js
        .get_key_value(hub.names().circuits_bucket())
        .await
        .expect("circuits bucket");
    kv.get(service)
        .await
        .expect("readable")
        .map(|bytes| serde_json::from_slice(&bytes).expect("a circuit"))
}

pub(crate) async fn wait_for_circuit(hub: &TestHub, service: &str, state: CircuitState) -> Circuit {
    mih_testkit::eventually(WAIT, || async {
        match circuit(hub, service).await {
            Some(c) if c.state == state => Ok(c),
            other => Err(format!("circuit is {other:?}")),
        }
    })
    .await
    .expect("circuit reaches the state")
}

/// Jobs of `service` still waiting in JOBS (not acknowledged).
pub(crate) async fn jobs_waiting(hub: &TestHub, service: &str) -> u64 {
    let stream = hub
        .js
        .get_stream(hub.names().jobs_stream())
        .await
        .expect("jobs stream");
    let mut consumer: async_nats::jetstream::consumer::PullConsumer = stream
        .get_consumer(&format!("dispatch-{service}"))
        .await
        .expect("consumer");
    let info = consumer.info().await.expect("info");
    info.num_pending + u64::try_from(info.num_ack_pending).unwrap_or(0)
}

/// The Standard Webhooks check, written here from the specification rather than with the
/// crate the dispatcher signs with.
fn signature_valid(secret: &str, id: &str, timestamp: &str, body: &[u8], header: &str) -> bool {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .expect("secret is base64");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("any key length");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    header
        .split(' ')
        .any(|candidate| candidate.strip_prefix("v1,") == Some(expected.as_str()))
}

const SIGNING_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_arrives_with_its_body_and_headers() {
    let hub = hub().await;
    let sink = HttpSink::start().await.expect("sink");
    service(
        &hub,
        "sis",
        &sink,
        json!({
            "auth": {"type": "bearer", "token": "sis-token-123"},
            "headers": {"X-Static": "always"},
            "signing_secret": SIGNING_SECRET,
        }),
    )
    .await;
    let body = r#"{"user": 27, "name": "Ana \"the\" María"}"#;
    let jobs = [
        job("sis", HttpMethod::Post, "/users", Some(body)),
        job("sis", HttpMethod::Put, "/users/27", Some(body)),
        job("sis", HttpMethod::Patch, "/users/27", Some(body)),
        job("sis", HttpMethod::Delete, "/users/27", Some(body)),
        job("sis", HttpMethod::Get, "/users/27?fields=all", Some(body)),
    ];
    for job in &jobs {
        publish(&hub, job).await;
    }
    let received = sink.wait_for(5, WAIT).await.expect("five requests");
    for job in &jobs {
        let request = received
            .iter()
            .find(|r| r.header("idempotency-key") == Some(job.id.to_string().as_str()))
            .unwrap_or_else(|| panic!("job {} arrived", job.id));
        let Request::Http(sent) = &job.request else {
            unreachable!("http jobs")
        };
        assert_eq!(request.method.as_str(), sent.method.as_str());
        assert_eq!(
            request.header("authorization"),
            Some("Bearer sis-token-123")
        );
        assert_eq!(request.header("x-static"), Some("always"));
        assert_eq!(request.header("x-rule-header"), Some("from the rule"));
        assert_eq!(request.header("mih-attempt"), Some("1"));
        let event = job.event_id.map(|e| e.to_string());
        assert_eq!(request.header("mih-event-id"), event.as_deref());
        assert!(
            request
                .header("traceparent")
                .is_some_and(|t| t.starts_with("00-")),
            "traceparent sent"
        );
        let signed = signature_valid(
            SIGNING_SECRET,
            request.header("webhook-id").expect("webhook-id"),
            request.header("webhook-timestamp").expect("timestamp"),
            &request.body,
            request.header("webhook-signature").expect("signature"),
        );
        assert!(signed, "the signature verifies");
        assert_eq!(
            request.header("webhook-id"),
            Some(job.id.to_string().as_str())
        );
        if sent.method == HttpMethod::Get {
            assert!(request.body.is_empty(), "a GET carries no body");
            assert_eq!(
                request.uri.to_string(),
                "/api/users/27?fields=all&user=27&name=Ana+%22the%22+Mar%C3%ADa"
            );
        } else {
            assert_eq!(request.body, body.as_bytes(), "{}", sent.method.as_str());
            assert_eq!(request.header("content-type"), Some("application/json"));
            assert_eq!(request.uri.path(), format!("/api{}", sent.path));
        }
    }
    let outcomes = wait_for_outcomes(&hub, 5).await;
    assert!(
        outcomes.iter().all(|o| o.status == OutcomeStatus::Delivered
            && o.attempt == 1
            && o.response_status == Some(200)),
        "{outcomes:?}"
    );
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_and_basic_auth_are_applied() {
    let hub = hub().await;
    let sink = HttpSink::start().await.expect("sink");
    service(
        &hub,
        "keyed",
        &sink,
        json!({"auth": {"type": "api_key", "header": "X-Moodle-Key", "key": "k-123"}}),
    )
    .await;
    service(
        &hub,
        "basic",
        &sink,
        json!({"auth": {"type": "basic", "username": "moodle", "password": "p@ss:wörd"}}),
    )
    .await;
    publish(&hub, &job("keyed", HttpMethod::Post, "/k", Some("{}"))).await;
    publish(&hub, &job("basic", HttpMethod::Post, "/b", Some("{}"))).await;
    let received = sink.wait_for(2, WAIT).await.expect("two requests");
    let keyed = received
        .iter()
        .find(|r| r.uri.path() == "/api/k")
        .expect("keyed");
    assert_eq!(keyed.header("x-moodle-key"), Some("k-123"));
    assert_eq!(keyed.header("authorization"), None);
    let basic = received
        .iter()
        .find(|r| r.uri.path() == "/api/b")
        .expect("basic");
    let expected = base64::engine::general_purpose::STANDARD.encode("moodle:p@ss:wörd");
    assert_eq!(
        basic.header("authorization"),
        Some(format!("Basic {expected}").as_str())
    );
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_failing_three_times_gets_the_job_on_attempt_four() {
    let hub = hub().await;
    let sink = HttpSink::start().await.expect("sink");
    sink.script([
        Reply::status(503),
        Reply::status(500).with_body("database is restarting"),
        Reply::status(429).with_header("retry-after", "1"),
    ]);
    service(
        &hub,
        "flaky",
        &sink,
        json!({"retry": {"max_retries": 5, "backoff_base_ms": 200, "backoff_cap_ms": 2000},
               "breaker": {"failure_threshold": 10}}),
    )
    .await;
    let job = job(
        "flaky",
        HttpMethod::Post,
        "/grades",
        Some(r#"{"grade": 9}"#),
    );
    publish(&hub, &job).await;
    let received = sink.wait_for(4, WAIT).await.expect("four attempts");
    let attempts: Vec<&str> = received
        .iter()
        .map(|r| r.header("mih-attempt").unwrap_or(""))
        .collect();
    assert_eq!(attempts, ["1", "2", "3", "4"]);
    assert!(
        received
            .iter()
            .all(|r| r.header("idempotency-key") == Some(job.id.to_string().as_str())),
        "the same idempotency key on every attempt"
    );
    // Retry-After: 1 is honoured (the backoff alone could have been shorter).
    let waited = received[3].received_at - received[2].received_at;
    assert!(waited >= Duration::from_millis(950), "waited {waited:?}");
    let outcomes = wait_for_outcomes(&hub, 4).await;
    let statuses: Vec<(u32, OutcomeStatus, Option<u16>)> = outcomes
        .iter()
        .map(|o| (o.attempt, o.status, o.response_status))
        .collect();
    assert_eq!(
        statuses,
        [
            (1, OutcomeStatus::FailedRetryable, Some(503)),
            (2, OutcomeStatus::FailedRetryable, Some(500)),
            (3, OutcomeStatus::FailedRetryable, Some(429)),
            (4, OutcomeStatus::Delivered, Some(200)),
        ]
    );
    assert_eq!(
        outcomes[1].response_excerpt.as_deref(),
        Some("database is restarting")
    );
    assert!(dead_letters(&hub).await.is_empty());
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_back_off_with_jitter_and_then_dead_letter() {
    let hub = hub().await;
    let sink = HttpSink::start().await.expect("sink");
    sink.set_reply(Reply::status(502));
    service(
        &hub,
        "down",
        &sink,
        json!({"retry": {"max_retries": 3, "backoff_base_ms": 100, "backoff_cap_ms": 400},
               "breaker": {"failure_threshold": 100}}),
    )
    .await;
    let job = job("down", HttpMethod::Post, "/x", Some("{}"));
    publish(&hub, &job).await;
    let dead = wait_for_dead_letter(&hub).await;
    assert_eq!(sink.count(), 4, "the first attempt and three retries");
    assert_eq!(dead.attempts, 4);
    assert_eq!(dead.job, job);
    assert!(
        dead.reason.contains("gave up after 4 attempts"),
        "{}",
        dead.reason
    );
    let last = dead.last_outcome.expect("last outcome");
    assert_eq!((last.attempt, last.response_status), (4, Some(502)));
    // Full jitter: each wait is at most base·2^(n-1), capped (plus scheduling slack).
    let received = sink.requests();
    for (n, pair) in received.windows(2).enumerate() {
        let ceiling = Duration::from_millis((100u64 << n).min(400) + 500);
        let waited = pair[1].received_at - pair[0].received_at;
        assert!(waited <= ceiling, "retry {} waited {waited:?}", n + 1);
    }
    assert_eq!(
        jobs_waiting(&hub, "down").await,
        0,
        "acknowledged after the DLQ"
    );
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_is_dead_lettered_after_one_attempt_with_the_response() {
    let hub = hub().await;
    let sink = HttpSink::start().await.expect("sink");
    sink.set_reply(Reply::status(400).with_body(r#"{"error": "courseid is unknown"}"#));
    service(
        &hub,
        "strict",
        &sink,
        json!({"breaker": {"failure_threshold": 1}}),
    )
    .await;
    let job = job("strict", HttpMethod::Post, "/enrol", Some("{}"));
    publish(&hub, &job).await;
    let dead = wait_for_dead_letter(&hub).await;
    assert_eq!(sink.count(), 1);
    assert_eq!(dead.attempts, 1);
    assert!(
        dead.reason.starts_with("permanent failure"),
        "{}",
        dead.reason
    );
    let last = dead.last_outcome.expect("outcome");
    assert_eq!(last.status, OutcomeStatus::FailedPermanent);
    assert_eq!(last.response_status, Some(400));
    assert_eq!(
        last.response_excerpt.as_deref(),
        Some(r#"{"error": "courseid is unknown"}"#)
    );
    // A 4xx is the request's fault: the breaker (threshold 1) stays closed.
    assert!(
        circuit(&hub, "strict")
            .await
            .is_none_or(|c| c.state == CircuitState::Closed)
    );
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_circuit_holds_jobs_and_drains_them_when_the_target_is_back() {
    let hub = hub().await;
    let sink = HttpSink::start().await.expect("sink");
    sink.set_reply(Reply::status(503));
    service(
        &hub,
        "crm",
        &sink,
        json!({"concurrency": 1,
               "retry": {"max_retries": 50, "backoff_base_ms": 10, "backoff_cap_ms": 20},
               "breaker": {"failure_threshold": 3, "cooldown_ms": 1500, "half_open_probes": 1}}),
    )
    .await;
    let jobs: Vec<Job> = (0..10)
        .map(|i| job("crm", HttpMethod::Post, &format!("/n/{i}"), Some("{}")))
        .collect();
    for job in &jobs {
        publish(&hub, job).await;
    }
    let open = wait_for_circuit(&hub, "crm", CircuitState::Open).await;
    assert_eq!(open.consecutive_failures, 3);
    assert_eq!(sink.count(), 3, "no attempt after the circuit opened");
    assert_eq!(
        jobs_waiting(&hub, "crm").await,
        10,
        "every job waits in JOBS"
    );
    assert!(dead_letters(&hub).await.is_empty(), "nothing dead-lettered");

    // After the cooldown one probe goes out; it fails and the circuit opens again.
    let probe = sink.wait_for(4, WAIT).await.expect("a probe");
    assert!(probe[3].received_at - probe[2].received_at >= Duration::from_millis(1400));
    wait_for_circuit(&hub, "crm", CircuitState::Open).await;

    sink.set_reply(Reply::status(200));
    mih_testkit::eventually(WAIT, || async {
        let delivered: std::collections::HashSet<String> = sink
            .requests()
            .iter()
            .filter_map(|r| r.header("idempotency-key").map(str::to_owned))
            .collect();
        let waiting = jobs_waiting(&hub, "crm").await;
        if delivered.len() == 10 && waiting == 0 {
            Ok(())
        } else {
            Err(format!(
                "{} distinct jobs seen, {waiting} waiting",
                delivered.len()
            ))
        }
    })
    .await
    .expect("all held jobs delivered");
    wait_for_circuit(&hub, "crm", CircuitState::Closed).await;
    assert!(dead_letters(&hub).await.is_empty());
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_dispatchers_share_one_circuit() {
    let mut hub = hub().await;
    let sink = HttpSink::start().await.expect("sink");
    sink.set_reply(Reply::status(500));
    service(
        &hub,
        "erp",
        &sink,
        json!({"concurrency": 1,
               "retry": {"max_retries": 50, "backoff_base_ms": 10, "backoff_cap_ms": 20},
               "breaker": {"failure_threshold": 4, "cooldown_ms": 60000}}),
    )
    .await;
    hub.add_services(&[ServiceName::Dispatcher]).await;
    for i in 0..20 {
        publish(
            &hub,
            &job("erp", HttpMethod::Post, &format!("/n/{i}"), Some("{}")),
        )
        .await;
    }
    wait_for_circuit(&hub, "erp", CircuitState::Open).await;
    // Each replica may have had one attempt in flight when the other opened the circuit.
    let attempts = sink.count();
    assert!((4..=5).contains(&attempts), "{attempts} attempts");
    assert_eq!(jobs_waiting(&hub, "erp").await, 20);

    let listed = hub.api().get("/api/v1/circuits").await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
    let erp = &listed.body["items"][0];
    assert_eq!(erp["service"], "erp");
    assert_eq!(erp["state"], "open");
    assert_eq!(erp["failure_threshold"], 4);
    assert!(erp["probe_at"].is_string(), "{erp}");
    assert!(
        erp["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("500")),
        "{erp}"
    );

    // An operator's reset resumes both replicas at once, without waiting for the cooldown.
    sink.set_reply(Reply::status(200));
    let viewer = hub
        .api()
        .post("/api/v1/tokens", &json!({"label": "v", "role": "viewer"}))
        .await;
    let viewer_token = viewer.body["token"].as_str().expect("token").to_owned();
    let refused = hub
        .api_as(&viewer_token)
        .post("/api/v1/circuits/erp/reset", &json!({}))
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let missing = hub
        .api()
        .post("/api/v1/circuits/nope/reset", &json!({}))
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND, "{}", missing.body);
    let reset = hub
        .api()
        .post("/api/v1/circuits/erp/reset", &json!({}))
        .await;
    assert_eq!(reset.status, StatusCode::OK, "{}", reset.body);
    assert_eq!(reset.body["state"], "closed");
    mih_testkit::eventually(WAIT, || async {
        match jobs_waiting(&hub, "erp").await {
            0 => Ok(()),
            n => Err(format!("{n} waiting")),
        }
    })
    .await
    .expect("drained after the reset");
    let replicas: std::collections::HashSet<String> = outcomes(&hub)
        .await
        .iter()
        .filter(|o| o.status == OutcomeStatus::Delivered)
        .map(|o| o.job_id.to_string())
        .collect();
    assert_eq!(replicas.len(), 20);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_service_does_not_delay_a_fast_one() {
    let hub = hub().await;
    let slow = HttpSink::start().await.expect("sink");
    slow.set_reply(Reply::status(200).with_delay(Duration::from_secs(5)));
    let fast = HttpSink::start().await.expect("sink");
    service(
        &hub,
        "slow",
        &slow,
        json!({"concurrency": 1, "timeout_ms": 30000}),
    )
    .await;
    service(&hub, "fast", &fast, json!({"concurrency": 4})).await;
    for i in 0..3 {
        publish(
            &hub,
            &job("slow", HttpMethod::Post, &format!("/s/{i}"), Some("{}")),
        )
        .await;
    }
    slow.wait_for(1, WAIT)
        .await
        .expect("the slow service got its first job");
    for i in 0..30 {
        publish(
            &hub,
            &job("fast", HttpMethod::Post, &format!("/f/{i}"), Some("{}")),
        )
        .await;
    }
    fast.wait_for(30, WAIT)
        .await
        .expect("the fast service got all its jobs");
    assert_eq!(
        slow.count(),
        1,
        "the fast service finished while the slow one was still on its first job"
    );
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_addresses_are_refused_unless_allowed() {
    let hub = TestHub::builder()
        .services(DELIVERY)
        .toml("[dispatcher]\nallow_networks = []")
        .start()
        .await;
    let sink = HttpSink::start().await.expect("sink");
    service(&hub, "internal", &sink, json!({})).await;
    publish(&hub, &job("internal", HttpMethod::Post, "/x", Some("{}"))).await;
    let dead = wait_for_dead_letter(&hub).await;
    assert_eq!(sink.count(), 0, "nothing reached the loopback target");
    assert!(dead.reason.contains("loopback"), "{}", dead.reason);
    assert!(
        dead.reason.contains("dispatcher.allow_networks"),
        "{}",
        dead.reason
    );
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_facade_calls_a_service_and_answers_in_one_shape() {
    let hub = hub().await;
    let sink = HttpSink::start().await.expect("sink");
    sink.script([
        Reply::status(503),
        Reply::status(201)
            .with_body(r#"{"id": 77}"#)
            .with_header("x-sis-request", "r-1"),
    ]);
    service(
        &hub,
        "sis",
        &sink,
        json!({"auth": {"type": "bearer", "token": "sis-token"}}),
    )
    .await;
    let answer = hub
        .api()
        .post(
            "/api/v1/services/sis/request",
            &json!({"method": "PUT", "path": "/users/27", "query": {"notify": "yes"},
                    "headers": {"X-Caller": "local_plugin"}, "body": {"email": "ana@example.org"}}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["ok"], true);
    assert_eq!(answer.body["status"], 201);
    assert_eq!(answer.body["body"], r#"{"id": 77}"#);
    assert_eq!(answer.body["headers"]["x-sis-request"], "r-1");
    assert_eq!(
        answer.body["attempts"], 2,
        "retried the 503 within the call"
    );
    assert_eq!(answer.body["circuit"], "closed");
    assert!(answer.body["error"].is_null());
    let call_id = answer.body["call_id"].as_str().expect("call id").to_owned();

    let received = sink.requests();
    let last = received.last().expect("requests");
    assert_eq!(last.method.as_str(), "PUT");
    assert_eq!(last.uri.to_string(), "/api/users/27?notify=yes");
    assert_eq!(last.header("authorization"), Some("Bearer sis-token"));
    assert_eq!(last.header("x-caller"), Some("local_plugin"));
    assert_eq!(last.header("idempotency-key"), Some(call_id.as_str()));
    assert_eq!(last.header("content-type"), Some("application/json"));
    assert_eq!(
        last.json().expect("json"),
        json!({"email": "ana@example.org"})
    );
    let logged = wait_for_outcomes(&hub, 2).await;
    assert!(
        logged
            .iter()
            .all(|o| o.origin == Origin::Facade && o.job_id.to_string() == call_id),
        "{logged:?}"
    );

    // A refusal is an answer too: ok false, the target's status and body.
    sink.set_reply(Reply::status(404).with_body("no such user"));
    let refused = hub
        .api()
        .post(
            "/api/v1/services/sis/request",
            &json!({"method": "GET", "path": "/users/0"}),
        )
        .await;
    assert_eq!(refused.status, StatusCode::OK);
    assert_eq!(refused.body["ok"], false);
    assert_eq!(refused.body["status"], 404);
    assert_eq!(refused.body["body"], "no such user");
    assert_eq!(refused.body["attempts"], 1);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_facade_fails_fast_while_the_circuit_is_open() {
    let hub = hub().await;
    let sink = HttpSink::start().await.expect("sink");
    sink.set_reply(Reply::status(500));
    service(
        &hub,
        "gamification",
        &sink,
        json!({"retry": {"max_retries": 0},
               "breaker": {"failure_threshold": 2, "cooldown_ms": 60000}}),
    )
    .await;
    let call = json!({"path": "/points", "body": {"points": 5}});
    for _ in 0..2 {
        let failed = hub
            .api()
            .post("/api/v1/services/gamification/request", &call)
            .await;
        assert_eq!(failed.status, StatusCode::OK, "{}", failed.body);
        assert_eq!(failed.body["ok"], false);
        assert_eq!(failed.body["status"], 500);
    }
    let open = hub
        .api()
        .post("/api/v1/services/gamification/request", &call)
        .await;
    assert_eq!(
        open.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        open.body
    );
    assert_eq!(open.body["circuit"], "open");
    assert_eq!(open.body["ok"], false);
    assert_eq!(open.body["attempts"], 0);
    assert!(
        open.body["error"]
            .as_str()
            .is_some_and(|e| e.contains("circuit")),
        "{}",
        open.body
    );
    assert_eq!(
        open.headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("60")
    );
    assert_eq!(sink.count(), 2, "nothing sent while open");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn facade_errors_name_the_problem() {
    let hub = hub().await;
    let sink = HttpSink::start().await.expect("sink");
    service(&hub, "sis", &sink, json!({})).await;
    let unknown = hub
        .api()
        .post("/api/v1/services/nope/request", &json!({}))
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{}", unknown.body);
    let invalid = hub
        .api()
        .post(
            "/api/v1/services/sis/request",
            &json!({"method": "TRACE", "timeout_ms": 0}),
        )
        .await;
    assert_eq!(
        invalid.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        invalid.body
    );
    assert_eq!(invalid.fields(), ["method", "timeout_ms"]);
    let disabled = hub
        .api()
        .post("/api/v1/services/sis/disable", &json!({}))
        .await;
    assert_eq!(disabled.status, StatusCode::OK, "{}", disabled.body);
    let conflict = hub
        .api()
        .post("/api/v1/services/sis/request", &json!({}))
        .await;
    assert_eq!(conflict.status, StatusCode::CONFLICT, "{}", conflict.body);
    assert!(
        conflict.body["message"]
            .as_str()
            .is_some_and(|m| m.contains("disabled")),
        "{}",
        conflict.body
    );
    hub.stop().await;

    let api_only = TestHub::builder()
        .services(&[ServiceName::Api])
        .start()
        .await;
    let answer = api_only
        .api()
        .post(
            "/api/v1/services",
            &json!({"name": "sis", "transport": {"kind": "rest", "base_url": sink.url()}}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED);
    let nobody = api_only
        .api()
        .post("/api/v1/services/sis/request", &json!({}))
        .await;
    assert_eq!(
        nobody.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        nobody.body
    );
    assert_eq!(nobody.body["ok"], false);
    assert_eq!(nobody.body["circuit"], "unknown");
    assert!(
        nobody.body["error"]
            .as_str()
            .is_some_and(|m| m.contains("no dispatcher")),
        "{}",
        nobody.body
    );
    api_only.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moodle_event_reaches_its_target_in_one_trace() {
    let hub = TestHub::builder()
        .services(&[
            ServiceName::Ingest,
            ServiceName::Api,
            ServiceName::Matcher,
            ServiceName::Dispatcher,
        ])
        .start()
        .await;
    let sink = HttpSink::start().await.expect("sink");
    service(&hub, "crm", &sink, json!({})).await;
    crate::matcher::create_rule(
        &hub,
        json!({"name": "manual enrolments", "events": ["\\core\\event\\user_enrolment_created"],
               "condition": "other.enrol == \"manual\"", "service": "crm",
               "target": {"kind": "rest", "method": "POST", "path": "/courses/{{courseid}}/enrolments"},
               "body": "{\"user\": {{relateduserid}}, \"course\": {{courseid}}}"}),
    )
    .await;
    crate::matcher::settle(&hub).await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let event_id = crate::matcher::post(
        &hub,
        &crate::matcher::enrolment(),
        &[(
            "traceparent".to_owned(),
            format!("00-{trace_id}-00f067aa0ba902b7-01"),
        )],
    )
    .await;
    let received = sink.wait_for(1, WAIT).await.expect("delivered");
    let delivery = &received[0];
    assert_eq!(delivery.uri.path(), "/api/courses/12/enrolments");
    assert_eq!(
        delivery.json().expect("json"),
        json!({"user": 27, "course": 12})
    );
    assert_eq!(delivery.header("mih-event-id"), Some(event_id.as_str()));
    let traceparent = delivery.header("traceparent").expect("traceparent");
    assert_eq!(
        traceparent.split('-').nth(1),
        Some(trace_id),
        "one trace from the Moodle request to the target: {traceparent}"
    );
    let outcome = wait_for_outcomes(&hub, 1).await.remove(0);
    assert_eq!(outcome.status, OutcomeStatus::Delivered);
    assert_eq!(outcome.event_id.map(|e| e.to_string()), Some(event_id));
    assert_eq!(outcome.trace_id.as_deref(), Some(trace_id));
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mih_circuit_reset_closes_a_circuit_from_the_command_line() {
    let hub = hub().await;
    let sink = HttpSink::start().await.expect("sink");
    sink.set_reply(Reply::status(503));
    service(
        &hub,
        "lms",
        &sink,
        json!({"retry": {"max_retries": 50, "backoff_base_ms": 10, "backoff_cap_ms": 20},
               "breaker": {"failure_threshold": 1, "cooldown_ms": 3600000}}),
    )
    .await;
    publish(&hub, &job("lms", HttpMethod::Post, "/x", Some("{}"))).await;
    wait_for_circuit(&hub, "lms", CircuitState::Open).await;
    sink.set_reply(Reply::status(200));
    // A cluster's servers, comma-separated, one of them down: mih uses the one that answers.
    let down = mih_testkit::free_port().expect("a free port");
    let env = [
        ("MIH_NAMESPACE", hub.config.namespace.to_string()),
        (
            "MIH_NATS_URL",
            format!("nats://127.0.0.1:{down},{}", hub.nats.url()),
        ),
    ];
    let reset = crate::process::MihProcess::spawn(&["circuit", "reset", "lms"], &env);
    let (status, output) = reset.wait(Duration::from_secs(30)).await;
    assert!(status.success(), "{output}");
    assert!(output.contains("circuit of lms is closed"), "{output}");
    sink.wait_for(2, WAIT)
        .await
        .expect("the held job delivered after the reset");
    wait_for_circuit(&hub, "lms", CircuitState::Closed).await;

    let unknown = crate::process::MihProcess::spawn(&["circuit", "reset", "nope"], &env);
    let (status, output) = unknown.wait(Duration::from_secs(30)).await;
    assert!(!status.success());
    assert!(output.contains("service `nope` does not exist"), "{output}");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_older_than_the_max_age_is_dead_lettered_unattempted() {
    let hub = hub().await;
    let sink = HttpSink::start().await.expect("sink");
    service(
        &hub,
        "slowpoke",
        &sink,
        json!({"max_job_age_ms": 3_600_000}),
    )
    .await;
    let mut stale = job("slowpoke", HttpMethod::Post, "/old", Some("{}"));
    stale.created_at = Utc::now() - chrono::Duration::hours(2);
    let fresh = job("slowpoke", HttpMethod::Post, "/new", Some("{}"));
    publish(&hub, &stale).await;
    publish(&hub, &fresh).await;
    let dead = wait_for_dead_letter(&hub).await;
    assert_eq!(dead.job.id, stale.id);
    assert_eq!(dead.attempts, 0);
    assert!(dead.last_outcome.is_none());
    assert!(dead.reason.contains("max job age"), "{}", dead.reason);
    let received = sink.wait_for(1, WAIT).await.expect("the fresh job");
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].uri.path(), "/api/new");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_with_dot_segments_is_refused_not_sent_elsewhere() {
    let hub = hub().await;
    let sink = HttpSink::start().await.expect("sink");
    service(&hub, "sis", &sink, json!({})).await;
    // What `/courses/{{other.a}}/{{other.b}}/enrol` renders for a = b = "..".
    let climbing = job("sis", HttpMethod::Put, "/courses/../../enrol", None);
    publish(&hub, &climbing).await;
    let dead = wait_for_dead_letter(&hub).await;
    assert_eq!(dead.job.id, climbing.id);
    assert!(dead.reason.contains("permanent failure"), "{}", dead.reason);
    assert!(dead.reason.contains("`..` segment"), "{}", dead.reason);
    let fine = job("sis", HttpMethod::Put, "/courses/..12/enrol", None);
    publish(&hub, &fine).await;
    let received = sink.wait_for(1, WAIT).await.expect("the fine one");
    assert_eq!(received.len(), 1, "the climbing path never went out");
    assert_eq!(received[0].uri.path(), "/api/courses/..12/enrol");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_a_target_echoes_are_not_kept() {
    const TOKEN: &str = "sis-secret-token-8d2f";
    let hub = hub().await;
    let sink = HttpSink::start().await.expect("sink");
    sink.set_reply(
        Reply::status(400)
            .with_body(format!(
                "bad request; you sent Authorization: Bearer {TOKEN}"
            ))
            .with_header("x-echo", TOKEN),
    );
    service(
        &hub,
        "echo",
        &sink,
        json!({"auth": {"type": "bearer", "token": TOKEN}}),
    )
    .await;
    publish(&hub, &job("echo", HttpMethod::Post, "/x", Some("{}"))).await;
    let dead = wait_for_dead_letter(&hub).await;
    assert_eq!(
        sink.requests()[0].header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str()),
        "the target got the credential"
    );
    let last = dead.last_outcome.expect("last outcome");
    let excerpt = last.response_excerpt.unwrap_or_default();
    assert_eq!(
        excerpt,
        "bad request; you sent Authorization: Bearer [redacted]"
    );
    let stored = wait_for_outcomes(&hub, 1).await;
    assert!(
        stored.iter().all(|o| !o
            .response_excerpt
            .as_deref()
            .unwrap_or_default()
            .contains(TOKEN)),
        "{stored:?}"
    );
    // Through the facade too, where the answer goes back to the caller.
    let answer = hub
        .api()
        .post("/api/v1/services/echo/request", &json!({"path": "/y"}))
        .await;
    let text = answer.body.to_string();
    assert!(!text.contains(TOKEN), "{text}");
    assert_eq!(answer.body["headers"]["x-echo"], "[redacted]");
    hub.stop().await;
}
