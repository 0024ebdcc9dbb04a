//! The facade's edges: calls that take long, answers that are large, calls refused by the
//! circuit, paths that would climb out of the service's base URL, and a dispatcher that never
//! answers.

use std::time::Duration;

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::json;

use mih_shared::ServiceName;
use mih_shared::messages::{self, FacadeRequest, OutcomeStatus};
use mih_testkit::{HttpSink, Reply};

use crate::dispatcher::{WAIT, hub, outcomes, service};
use crate::harness::TestHub;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_takes_longer_than_five_seconds_is_waited_for() {
    let hub = hub().await;
    let sink = HttpSink::start().await.expect("sink");
    sink.set_reply(
        Reply::status(200)
            .with_body("slow but fine")
            .with_delay(Duration::from_secs(7)),
    );
    service(&hub, "slow", &sink, json!({"timeout_ms": 20000})).await;
    let answer = hub
        .api()
        .post(
            "/api/v1/services/slow/request",
            &json!({"path": "/report", "timeout_ms": 15000}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["ok"], true);
    assert_eq!(answer.body["attempts"], 1);
    assert_eq!(answer.body["body"], "slow but fine");
    assert_eq!(sink.count(), 1);
    hub.stop().await;
}

/// A dispatcher took the call and then went silent (it died, or its answer was lost): the
/// call may have reached the target, so the answer must not say nothing was sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_no_dispatcher_answers_is_reported_as_unknown_not_as_unsent() {
    let hub = TestHub::builder()
        .services(&[ServiceName::Api])
        .start()
        .await;
    let created = hub
        .api()
        .post(
            "/api/v1/services",
            &json!({"name": "sis", "transport": {"kind": "rest", "base_url": "http://127.0.0.1:9/api"}}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    // A responder that takes calls and never answers, where a dispatcher would be.
    let nats = async_nats::connect(hub.nats.url()).await.expect("connect");
    let mut calls = nats
        .queue_subscribe(hub.names().rpc_request(), hub.names().rpc_queue_group())
        .await
        .expect("subscribe");
    nats.flush().await.expect("flush");
    let taken = tokio::spawn(async move { calls.next().await });

    let answer = hub
        .api()
        .post(
            "/api/v1/services/sis/request",
            &json!({"path": "/users/27", "timeout_ms": 1000}),
        )
        .await;
    assert_eq!(
        answer.status,
        StatusCode::GATEWAY_TIMEOUT,
        "{}",
        answer.body
    );
    assert!(answer.body["attempts"].is_null(), "{}", answer.body);
    assert_eq!(answer.body["ok"], false);
    let error = answer.body["error"].as_str().unwrap_or_default();
    assert!(error.contains("may have been made"), "{error}");
    let call_id = answer.body["call_id"]
        .as_str()
        .expect("a call id")
        .to_owned();
    let request = taken
        .await
        .expect("responder")
        .expect("the call reached the responder");
    let call: FacadeRequest = messages::decode(&request.payload).expect("a facade request");
    assert_eq!(
        call.call_id.map(|id| id.to_string()),
        Some(call_id),
        "the id to look up is the call's"
    );
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_answer_is_cut_flagged_and_the_call_still_logged() {
    let hub = hub().await;
    let sink = HttpSink::start().await.expect("sink");
    // Quotes double in size once escaped into the JSON answer: the cut must allow for that.
    let large = "\"".repeat(3 * 1024 * 1024);
    sink.set_reply(Reply::status(200).with_body(large.clone()));
    service(&hub, "export", &sink, json!({})).await;
    let answer = hub
        .api()
        .post("/api/v1/services/export/request", &json!({"path": "/all"}))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body["error"]);
    assert_eq!(answer.body["ok"], true);
    assert_eq!(answer.body["body_truncated"], true);
    let body = answer.body["body"].as_str().expect("a body");
    assert!(
        !body.is_empty() && body.len() <= 512 * 1024,
        "{}",
        body.len()
    );
    assert!(large.starts_with(body));
    let call_id = answer.body["call_id"].as_str().expect("call id").to_owned();
    let logged = mih_testkit::eventually(WAIT, || async {
        outcomes(&hub)
            .await
            .into_iter()
            .find(|o| o.job_id.to_string() == call_id)
            .ok_or_else(|| "the call is not in RESULTS yet".to_owned())
    })
    .await
    .expect("the call is logged");
    assert_eq!(logged.status, OutcomeStatus::Delivered);
    assert!(
        logged
            .response_excerpt
            .as_deref()
            .is_some_and(|excerpt| excerpt.len() <= 2048),
        "the log keeps an excerpt"
    );

    // A small answer says it is whole.
    sink.set_reply(Reply::status(200).with_body("small"));
    let small = hub
        .api()
        .post("/api/v1/services/export/request", &json!({"path": "/one"}))
        .await;
    assert_eq!(small.body["body_truncated"], false, "{}", small.body);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_refused_by_an_open_circuit_is_in_the_delivery_log() {
    let hub = hub().await;
    let sink = HttpSink::start().await.expect("sink");
    sink.set_reply(Reply::status(500));
    service(
        &hub,
        "points",
        &sink,
        json!({"retry": {"max_retries": 0}, "breaker": {"failure_threshold": 1, "cooldown_ms": 60000}}),
    )
    .await;
    let call = json!({"path": "/points"});
    let failed = hub
        .api()
        .post("/api/v1/services/points/request", &call)
        .await;
    assert_eq!(failed.body["status"], 500, "{}", failed.body);
    let refused = hub
        .api()
        .post("/api/v1/services/points/request", &call)
        .await;
    assert_eq!(
        refused.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        refused.body
    );
    assert_eq!(refused.body["attempts"], 0);
    let call_id = refused.body["call_id"]
        .as_str()
        .expect("call id")
        .to_owned();
    let logged = mih_testkit::eventually(WAIT, || async {
        let page = hub
            .api()
            .get("/api/v1/deliveries?service=points&status=circuit_open")
            .await;
        match page.body["items"].as_array() {
            Some(items) if !items.is_empty() => Ok(items.clone()),
            _ => Err(format!("not in the log yet: {}", page.body)),
        }
    })
    .await
    .expect("the refusal is logged");
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert_eq!(logged[0]["job_id"], call_id.as_str());
    assert_eq!(logged[0]["origin"], "facade");
    assert_eq!(sink.count(), 1, "the refusal sent nothing");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn facade_paths_cannot_climb_out_of_the_base_url() {
    let hub = hub().await;
    let sink = HttpSink::start().await.expect("sink");
    service(&hub, "sis", &sink, json!({})).await;
    for path in [
        "../admin",
        "%2e%2e/%2e%2e/pct",
        "/users/.%2E/.%2E/x",
        "/a\\..\\..\\b",
    ] {
        let answer = hub
            .api()
            .post("/api/v1/services/sis/request", &json!({"path": path}))
            .await;
        assert_eq!(
            answer.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{path}: {}",
            answer.body
        );
        assert_eq!(answer.fields(), ["path"], "{path}");
    }
    let fine = hub
        .api()
        .post(
            "/api/v1/services/sis/request",
            &json!({"path": "/users/..27"}),
        )
        .await;
    assert_eq!(fine.status, StatusCode::OK, "{}", fine.body);
    let received = sink.requests();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].uri.path(), "/api/users/..27");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_answered_429_is_not_called_until_its_retry_after() {
    let hub = hub().await;
    let sink = HttpSink::start().await.expect("sink");
    sink.script([Reply::status(429).with_header("retry-after", "3")]);
    service(&hub, "points", &sink, json!({})).await;
    let call = |timeout_ms: u64| json!({"path": "/points", "timeout_ms": timeout_ms});
    let first = hub
        .api()
        .post("/api/v1/services/points/request", &call(1000))
        .await;
    assert_eq!(first.body["status"], 429, "{}", first.body);

    // Paused for longer than this call may wait: refused at once, saying until when.
    let refused = hub
        .api()
        .post("/api/v1/services/points/request", &call(1000))
        .await;
    assert_eq!(
        refused.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        refused.body
    );
    assert_eq!(refused.body["attempts"], 0);
    assert_eq!(refused.body["circuit"], "closed", "a 429 does not open it");
    assert!(refused.body["retry_at"].is_string(), "{}", refused.body);
    let retry_after: u64 = refused
        .headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .expect("Retry-After");
    assert!((1..=3).contains(&retry_after), "{retry_after}");
    assert_eq!(sink.count(), 1, "the refusal sent nothing");

    // A call that may wait longer than the pause waits it out.
    let waited = hub
        .api()
        .post("/api/v1/services/points/request", &call(10_000))
        .await;
    assert_eq!(waited.body["ok"], true, "{}", waited.body);
    let requests = sink.requests();
    assert_eq!(requests.len(), 2);
    let gap = requests[1].received_at - requests[0].received_at;
    assert!(
        gap >= Duration::from_millis(2900),
        "called again after {gap:?}"
    );
    hub.stop().await;
}
