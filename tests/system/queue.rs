//! The queue API: what waits in JOBS per service (and since when), which jobs wait for a
//! retry, and an operator's "attempt now" and "move to dead letters" on one of them.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use mih_shared::ServiceName;
use mih_shared::circuit::CircuitState;
use mih_shared::messages::{HttpMethod, Job};
use mih_testkit::{HttpSink, Reply};

use crate::dispatcher::{publish, service, wait_for_circuit};
use crate::harness::{Answer, TestHub};

const WAIT: Duration = Duration::from_secs(30);
const HUB: &[ServiceName] = &[ServiceName::Api, ServiceName::Dispatcher, ServiceName::Dlq];

async fn hub() -> TestHub {
    TestHub::builder().services(HUB).start().await
}

/// The queue entry of `service`.
async fn entry(hub: &TestHub, service: &str) -> Value {
    let answer = hub.api().get("/api/v1/queue").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    answer.body["items"]
        .as_array()
        .and_then(|items| items.iter().find(|i| i["service"] == service).cloned())
        .unwrap_or_else(|| panic!("{service} not in {}", answer.body))
}

/// Waits until `service`'s queue entry satisfies `want`.
async fn wait_for_entry(hub: &TestHub, service: &str, want: impl Fn(&Value) -> bool) -> Value {
    mih_testkit::eventually(WAIT, || async {
        let entry = entry(hub, service).await;
        if want(&entry) {
            Ok(entry)
        } else {
            Err(entry.to_string())
        }
    })
    .await
    .unwrap_or_else(|e| panic!("the queue of {service} never got there: {e}"))
}

async fn jobs(hub: &TestHub, service: &str, query: &str) -> Answer {
    hub.api()
        .get(&format!("/api/v1/queue/{service}/jobs?{query}"))
        .await
}

fn items(answer: &Answer) -> Vec<Value> {
    answer.body["items"].as_array().cloned().unwrap_or_default()
}

async fn viewer(hub: &TestHub) -> String {
    let answer = hub
        .api()
        .post("/api/v1/tokens", &json!({"label": "v", "role": "viewer"}))
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    answer.body["token"].as_str().expect("token").to_owned()
}

/// A job for `service` as the matcher queues it for a Moodle event.
fn job(service: &str, _method: HttpMethod, path: &str, body: Option<&str>) -> Job {
    mih_testkit::fixtures::job(service, path, body.unwrap_or("{}"))
}

/// An address nothing listens on.
async fn vacant_address() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    listener.local_addr().expect("address")
}

/// A service that is down opens its circuit; the jobs behind it pile up in the queue and the
/// oldest one ages; a viewer sees them and cannot act; an operator moves one to the dead
/// letters (once: the second time it is gone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_of_a_service_that_is_down_grows_and_a_job_can_be_moved_to_dead_letters() {
    let hub = hub().await;
    let addr = vacant_address().await;
    let body = json!({
        "name": "erp",
        "transport": {"kind": "rest", "base_url": format!("http://{addr}/api")},
        "retry": {"max_retries": 5, "backoff_base_ms": 100, "backoff_cap_ms": 200},
        "breaker": {"failure_threshold": 1, "cooldown_ms": 600_000},
        "concurrency": 1,
    });
    let created = hub.api().post("/api/v1/services", &body).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    hub.wait_for_config(ServiceName::Dispatcher).await;

    let first = job("erp", HttpMethod::Post, "/grades/0", Some("{}"));
    publish(&hub, &first).await;
    wait_for_circuit(&hub, "erp", CircuitState::Open).await;
    let later: Vec<_> = (1..4)
        .map(|i| job("erp", HttpMethod::Post, &format!("/grades/{i}"), Some("{}")))
        .collect();
    for job in &later {
        publish(&hub, job).await;
    }

    // The first job is the dispatcher's (held behind the open circuit, or waiting out its
    // retry delay), the other three wait in JOBS; the oldest keeps ageing.
    let before = wait_for_entry(&hub, "erp", |e| {
        e["jobs"] == 4 && e["queued"] == 3 && e["in_dispatcher"] == 1
    })
    .await;
    assert_eq!(before["circuit"]["state"], "open", "{before}");
    assert_eq!(before["consumer"], true);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = entry(&hub, "erp").await;
    let age = |e: &Value| e["oldest_age_ms"].as_u64().expect("an age");
    assert!(age(&after) >= age(&before) + 1000, "{before} then {after}");
    assert_eq!(after["oldest_enqueued_at"], before["oldest_enqueued_at"]);

    // The jobs, oldest first, with what the log knows of the first one's attempt.
    let listed = mih_testkit::eventually(WAIT, || async {
        let answer = jobs(&hub, "erp", "").await;
        let listed = items(&answer);
        if listed.len() == 4 && listed[0]["attempts"].as_u64() >= Some(1) {
            Ok(listed)
        } else {
            Err(answer.body.to_string())
        }
    })
    .await
    .expect("four jobs, the first one attempted");
    let ids: Vec<&str> = listed.iter().filter_map(|j| j["job_id"].as_str()).collect();
    let expected: Vec<String> = std::iter::once(&first)
        .chain(&later)
        .map(|j| j.id.to_string())
        .collect();
    assert_eq!(ids, expected);
    assert_eq!(listed[0]["state"], "in_dispatcher");
    assert_eq!(listed[0]["last_status"], "failed_retryable");
    assert!(listed[0]["last_error"].is_string(), "{}", listed[0]);
    // Its retry is scheduled, and says when (the circuit may hold it past that).
    assert!(listed[0]["next_attempt_at"].is_string(), "{}", listed[0]);
    assert!(
        listed[1]["next_attempt_at"].is_null(),
        "queued: no retry scheduled"
    );
    for queued in &listed[1..] {
        assert_eq!(queued["state"], "queued", "{queued}");
        assert_eq!(queued["attempts"], 0);
        assert_eq!(queued["eventname"], "\\core\\event\\user_created");
        assert_eq!(queued["source"], "moodle");
    }
    let seqs: Vec<u64> = listed.iter().filter_map(|j| j["seq"].as_u64()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");

    // Paging by stream sequence.
    let page = jobs(&hub, "erp", "limit=3").await;
    assert_eq!(items(&page).len(), 3);
    assert_eq!(page.body["next_after"], seqs[2].to_string());
    let rest = jobs(&hub, "erp", &format!("limit=3&after={}", seqs[2])).await;
    assert_eq!(items(&rest).len(), 1, "{}", rest.body);
    assert!(rest.body["next_after"].is_null());
    for bad in [
        "limit=0",
        "limit=501",
        "limit=many",
        "after=-1",
        "color=red",
    ] {
        let answer = jobs(&hub, "erp", bad).await;
        assert_eq!(
            answer.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {}",
            answer.body
        );
    }
    let missing = jobs(&hub, "nope", "").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(
        missing.body["message"]
            .as_str()
            .is_some_and(|m| m.contains("nope")),
        "{}",
        missing.body
    );

    // A viewer sees, but does not act.
    let token = viewer(&hub).await;
    let as_viewer = hub.api_as(&token);
    assert_eq!(as_viewer.get("/api/v1/queue").await.status, StatusCode::OK);
    for action in ["attempt-now", "dead-letter"] {
        let path = format!("/api/v1/queue/erp/jobs/{}/{action}", seqs[1]);
        assert_eq!(
            as_viewer.post(&path, &json!({})).await.status,
            StatusCode::FORBIDDEN
        );
        let unknown = hub
            .api()
            .post(
                &format!("/api/v1/queue/nope/jobs/{}/{action}", seqs[1]),
                &json!({}),
            )
            .await;
        assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{}", unknown.body);
    }
    // Behind an open circuit, attempting now would change nothing: refused, saying why.
    let hurried = hub
        .api()
        .post(
            &format!("/api/v1/queue/erp/jobs/{}/attempt-now", seqs[1]),
            &json!({}),
        )
        .await;
    assert_eq!(hurried.status, StatusCode::CONFLICT, "{}", hurried.body);

    // An operator moves the second job to the dead letters: once.
    let path = format!("/api/v1/queue/erp/jobs/{}/dead-letter", seqs[1]);
    let moved = hub.api().post(&path, &json!({})).await;
    assert_eq!(moved.status, StatusCode::OK, "{}", moved.body);
    assert_eq!(moved.body["job_id"], expected[1].as_str());
    let again = hub.api().post(&path, &json!({})).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.body);

    let remaining = items(&jobs(&hub, "erp", "").await);
    assert_eq!(remaining.len(), 3);
    assert!(
        remaining
            .iter()
            .all(|j| j["job_id"] != expected[1].as_str())
    );
    let dead = mih_testkit::eventually(WAIT, || async {
        let answer = hub
            .api()
            .get(&format!("/api/v1/dead-letters/{}", expected[1]))
            .await;
        if answer.status == StatusCode::OK {
            Ok(answer.body)
        } else {
            Err(answer.body.to_string())
        }
    })
    .await
    .expect("the moved job is a dead letter");
    let reason = dead["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("moved") && reason.contains("token:"),
        "{dead}"
    );
    let audit = hub.api().get("/api/v1/audit").await;
    assert!(
        audit.body.to_string().contains("dead_letter"),
        "{}",
        audit.body
    );
    hub.stop().await;
}

/// A job the target asked to retry in an hour waits for it — held by the dispatcher, counted
/// in `num_ack_pending`, not in `num_pending` — until an operator asks for an attempt now:
/// then it is delivered at once, same job id, and the delivery log goes on at attempt 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempt_now_delivers_a_job_waiting_for_its_retry_without_waiting_out_the_delay() {
    let hub = hub().await;
    let sink = HttpSink::start().await.expect("sink");
    sink.set_reply(Reply::status(503).with_header("Retry-After", "3600"));
    service(
        &hub,
        "sis",
        &sink,
        json!({"breaker": {"failure_threshold": 100}}),
    )
    .await;
    let waiting = job("sis", HttpMethod::Post, "/users", Some("{}"));
    publish(&hub, &waiting).await;
    sink.wait_for(1, WAIT).await.expect("the first attempt");

    let entry = wait_for_entry(&hub, "sis", |e| e["jobs"] == 1).await;
    assert_eq!(
        entry["in_dispatcher"], 1,
        "NAK-delayed is ack-pending: {entry}"
    );
    assert_eq!(entry["queued"], 0, "NAK-delayed is not pending: {entry}");
    assert_eq!(entry["circuit"]["state"], "closed");
    let listed = mih_testkit::eventually(WAIT, || async {
        let listed = items(&jobs(&hub, "sis", "").await);
        match listed.first() {
            Some(job) if job["attempts"] == 1 => Ok(job.clone()),
            _ => Err(format!("{listed:?}")),
        }
    })
    .await
    .expect("the waiting job, attempted once");
    assert_eq!(listed["state"], "in_dispatcher");
    assert_eq!(listed["last_response_status"], 503);
    let seq = listed["seq"].as_u64().expect("seq");

    // The delay holds: nothing more goes out on its own.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sink.count(), 1);

    sink.set_reply(Reply::status(200));
    let token = viewer(&hub).await;
    let path = format!("/api/v1/queue/sis/jobs/{seq}/attempt-now");
    let refused = hub.api_as(&token).post(&path, &json!({})).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let hurried = hub.api().post(&path, &json!({})).await;
    assert_eq!(hurried.status, StatusCode::ACCEPTED, "{}", hurried.body);
    assert_eq!(hurried.body["job_id"], waiting.id.to_string());

    let requests = sink
        .wait_for(2, Duration::from_secs(10))
        .await
        .expect("attempted at once, not in an hour");
    let key = waiting.id.to_string();
    assert!(
        requests
            .iter()
            .all(|r| r.header("idempotency-key") == Some(key.as_str()))
    );
    wait_for_entry(&hub, "sis", |e| e["jobs"] == 0 && e["in_dispatcher"] == 0).await;
    let logged = mih_testkit::eventually(WAIT, || async {
        let answer = hub.api().get(&format!("/api/v1/deliveries/{key}")).await;
        if answer.body["status"] == "delivered" {
            Ok(answer.body)
        } else {
            Err(answer.body.to_string())
        }
    })
    .await
    .expect("the log shows the delivery");
    assert!(logged.to_string().contains("\"attempt\":2"), "{logged}");
    // It is gone from the queue now.
    let late = hub.api().post(&path, &json!({})).await;
    assert_eq!(late.status, StatusCode::CONFLICT, "{}", late.body);
    hub.stop().await;
}
