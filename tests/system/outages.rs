//! A service that is down: what its jobs go through while it is (they wait behind the circuit,
//! their retries kept), and which failures count as "down" (a name that does not resolve,
//! a refused connection).

use std::collections::HashMap;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use mih_shared::ServiceName;
use mih_shared::circuit::CircuitState;
use mih_shared::messages::{HttpMethod, OutcomeStatus};
use mih_testkit::HttpSink;

use crate::dispatcher::{
    dead_letters, hub, job, outcomes, publish, wait_for_circuit, wait_for_outcomes,
};
use crate::harness::TestHub;

/// Registers a REST service at `base_url` (not a sink: it may not exist).
async fn service_at(hub: &TestHub, name: &str, base_url: &str, extra: serde_json::Value) {
    let mut body = json!({"name": name, "transport": {"kind": "rest", "base_url": base_url}});
    if let (Some(body), serde_json::Value::Object(extra)) = (body.as_object_mut(), extra) {
        body.extend(extra);
    }
    let answer = hub.api().post("/api/v1/services", &body).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    hub.wait_for_config(ServiceName::Dispatcher).await;
}

/// An address nothing listens on (yet): bound, noted, released.
async fn vacant_address() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    listener.local_addr().expect("address")
}

/// The probe acceptance's scenario: with one retry allowed, a half-open probe that fails
/// because the target is still down used to spend it, and every held job ended in the DLQ
/// within seconds. Probes do not count now; after the outage each job arrives once.
///
/// The circuit opens at the first failure: a job is handed back only after its failure is
/// stored in the circuit, so every job's second delivery meets the open circuit. With a higher
/// threshold, a job whose retry delay drew almost nothing (full jitter) could come back before
/// the failures that open the circuit were stored, and spend its one retry on a real attempt:
/// dead-lettered by its own policy, as it should be, but not what this test is about.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_minute_outage_dead_letters_nothing_and_delivers_every_job_once() {
    const OUTAGE: Duration = Duration::from_secs(120);
    let hub = hub().await;
    let addr = vacant_address().await;
    service_at(
        &hub,
        "sis",
        &format!("http://{addr}/api"),
        json!({"retry": {"max_retries": 1, "backoff_base_ms": 100, "backoff_cap_ms": 1000},
               "breaker": {"failure_threshold": 1, "cooldown_ms": 500}}),
    )
    .await;
    let jobs: Vec<_> = (0..6)
        .map(|i| job("sis", HttpMethod::Post, &format!("/grades/{i}"), Some("{}")))
        .collect();
    for job in &jobs {
        publish(&hub, job).await;
    }

    // The outage: the circuit opens, probes keep failing, and nothing is given up on.
    let outage_ends = tokio::time::Instant::now() + OUTAGE;
    while tokio::time::Instant::now() < outage_ends {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let dead = dead_letters(&hub).await;
        assert!(
            dead.is_empty(),
            "dead-lettered during the outage: {:?}",
            dead.iter().map(|d| &d.reason).collect::<Vec<_>>()
        );
    }
    let failed = outcomes(&hub)
        .await
        .iter()
        .filter(|o| o.status == OutcomeStatus::FailedRetryable)
        .count();
    assert!(
        failed > 2 * jobs.len(),
        "probes went out and failed during the outage ({failed} failed attempts)"
    );
    let metrics = hub.metrics(ServiceName::Dispatcher).await;
    assert!(
        metrics.contains("mih_dispatcher_probes_failed_total{service=\"sis\"}"),
        "{metrics}"
    );

    // The target comes back where it was.
    let sink = HttpSink::start_at(addr).await.expect("the target is back");
    mih_testkit::eventually(Duration::from_secs(60), || async {
        let mut seen: HashMap<String, usize> = HashMap::new();
        for request in sink.requests() {
            *seen
                .entry(request.header("idempotency-key").unwrap_or("").to_owned())
                .or_default() += 1;
        }
        if seen.len() == jobs.len() {
            Ok(seen)
        } else {
            Err(format!("{} of {} jobs delivered", seen.len(), jobs.len()))
        }
    })
    .await
    .expect("every job delivered after the outage");
    wait_for_circuit(&hub, "sis", CircuitState::Closed).await;
    // Settled: no job comes twice, none was dead-lettered.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for request in sink.requests() {
        *seen
            .entry(request.header("idempotency-key").unwrap_or("").to_owned())
            .or_default() += 1;
    }
    for job in &jobs {
        assert_eq!(seen.get(&job.id.to_string()), Some(&1), "job {}", job.id);
    }
    assert!(dead_letters(&hub).await.is_empty());
    hub.stop().await;
}

/// README's own example service names a host; when the name does not resolve, the delivery
/// is retried and counted by the breaker, like any other sign that the service is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_does_not_resolve_is_retried_and_opens_the_circuit() {
    let hub = hub().await;
    // `.invalid` never resolves (RFC 2606).
    service_at(
        &hub,
        "sis",
        "https://sis.mih-test.invalid/api",
        json!({"retry": {"max_retries": 5, "backoff_base_ms": 10, "backoff_cap_ms": 50},
               "breaker": {"failure_threshold": 3, "cooldown_ms": 60000}}),
    )
    .await;
    publish(&hub, &job("sis", HttpMethod::Put, "/users/27", Some("{}"))).await;
    let open = wait_for_circuit(&hub, "sis", CircuitState::Open).await;
    assert_eq!(open.consecutive_failures, 3);
    let attempts = wait_for_outcomes(&hub, 3).await;
    for outcome in &attempts {
        assert_eq!(
            outcome.status,
            OutcomeStatus::FailedRetryable,
            "{outcome:?}"
        );
        let error = outcome.error.as_deref().unwrap_or_default();
        assert!(error.contains("resolve"), "{error}");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        dead_letters(&hub).await.is_empty(),
        "held behind the circuit, not dead-lettered"
    );
    hub.stop().await;
}
