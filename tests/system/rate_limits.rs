//! A service's rate limit and a target's 429 hold for the service as a whole, however many
//! dispatcher replicas deliver its jobs.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::json;

use mih_shared::ServiceName;
use mih_shared::messages::HttpMethod;
use mih_testkit::{HttpSink, Recorded, Reply};

use crate::dispatcher::{dead_letters, job, publish, register};
use crate::harness::TestHub;

const WAIT: Duration = Duration::from_secs(60);

/// The api only: jobs wait in JOBS until the dispatchers are added.
async fn hub() -> TestHub {
    TestHub::builder()
        .services(&[ServiceName::Api])
        .start()
        .await
}

/// The dispatcher replicas in the presence bucket.
async fn replicas_present(hub: &TestHub) -> usize {
    use futures::TryStreamExt;
    let kv = hub
        .js
        .get_key_value(hub.names().dispatchers_bucket())
        .await
        .expect("the dispatchers bucket");
    let keys: Vec<String> = kv
        .keys()
        .await
        .expect("keys")
        .try_collect()
        .await
        .expect("keys");
    keys.len()
}

/// The most requests that arrived within any one second.
fn busiest_second(requests: &[Recorded]) -> usize {
    let mut times: Vec<Instant> = requests.iter().map(|r| r.received_at).collect();
    times.sort();
    let mut most = 0;
    let mut start = 0;
    for (end, at) in times.iter().enumerate() {
        while *at - times[start] >= Duration::from_secs(1) {
            start += 1;
        }
        most = most.max(end - start + 1);
    }
    most
}

/// Every job id the target received, once each.
fn job_ids(requests: &[Recorded]) -> HashSet<String> {
    requests
        .iter()
        .filter_map(|r| r.header("idempotency-key").map(str::to_owned))
        .collect()
}

async fn publish_jobs(hub: &TestHub, service: &str, count: usize) {
    for n in 0..count {
        publish(
            hub,
            &job(service, HttpMethod::Post, &format!("/n/{n}"), Some("{}")),
        )
        .await;
    }
}

async fn wait_for_jobs(sink: &HttpSink, count: usize) -> Vec<Recorded> {
    mih_testkit::eventually(WAIT, || async {
        let requests = sink.requests();
        let delivered = job_ids(&requests).len();
        if delivered >= count {
            Ok(requests)
        } else {
            Err(format!("{delivered} of {count} jobs delivered"))
        }
    })
    .await
    .expect("every job delivered")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_dispatchers_together_keep_to_the_services_rate_limit() {
    let mut hub = hub().await;
    let sink = HttpSink::start().await.expect("sink");
    register(
        &hub,
        "limited",
        &sink,
        json!({"rate_limit_per_sec": 50, "concurrency": 30}),
    )
    .await;
    publish_jobs(&hub, "limited", 300).await;
    for _ in 0..3 {
        hub.add_services(&[ServiceName::Dispatcher]).await;
    }

    let requests = wait_for_jobs(&sink, 300).await;
    assert_eq!(requests.len(), 300, "each job sent once");
    // The documented burst: a hundredth of the limit (none at 50/s), plus one per replica.
    let busiest = busiest_second(&requests);
    assert!(
        busiest <= 50 + 3,
        "at most the limit and one per replica in any second; the target saw {busiest}"
    );
    assert_eq!(replicas_present(&hub).await, 3);
    assert!(dead_letters(&hub).await.is_empty());
    hub.stop_added_services().await;
    assert_eq!(replicas_present(&hub).await, 0, "stopped replicas leave");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_pauses_the_service_on_every_replica_until_its_retry_after() {
    let mut hub = hub().await;
    let sink = HttpSink::start().await.expect("sink");
    // Slow answers, so that the replicas are still sending when the 429 comes.
    let slow = Duration::from_millis(100);
    sink.set_reply(Reply::status(200).with_delay(slow));
    sink.script([Reply::status(429)
        .with_header("retry-after", "2")
        .with_delay(slow)]);
    register(
        &hub,
        "busy",
        &sink,
        json!({"concurrency": 4, "breaker": {"failure_threshold": 1}}),
    )
    .await;
    publish_jobs(&hub, "busy", 60).await;
    hub.add_services(&[ServiceName::Dispatcher]).await;
    hub.add_services(&[ServiceName::Dispatcher]).await;

    let requests = wait_for_jobs(&sink, 60).await;
    let refused = requests
        .iter()
        .find(|r| r.status == 429)
        .expect("the first request was refused");
    // Its answer came `slow` after it arrived; what was already sent then may still arrive
    // shortly after. Then nothing until the two seconds asked for have passed.
    let answered = refused.received_at + slow;
    let grace = Duration::from_millis(300);
    let during_pause: Vec<Duration> = requests
        .iter()
        .map(|r| r.received_at)
        .filter(|at| *at > answered + grace && *at < answered + Duration::from_millis(1950))
        .map(|at| at - answered)
        .collect();
    assert!(
        during_pause.is_empty(),
        "no replica sent anything while the service was paused: {during_pause:?}"
    );
    let retried = requests
        .iter()
        .filter(|r| r.header("idempotency-key") == refused.header("idempotency-key"))
        .count();
    assert_eq!(retried, 2, "the refused job was sent again, once");
    assert_eq!(
        requests.len(),
        61,
        "each job sent once, the refused one twice"
    );

    // A 429 says the service is up: the circuit stayed closed (its threshold is one).
    let circuits = hub.api().get("/api/v1/circuits").await;
    let busy = &circuits.body["items"][0];
    assert_eq!(busy["state"], "closed", "{}", circuits.body);
    assert!(dead_letters(&hub).await.is_empty());
    hub.stop().await;
}
