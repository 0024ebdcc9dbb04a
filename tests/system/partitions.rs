//! JOBS split into partitions: jobs spread by key, every dispatcher replica reads every
//! partition, the queue API sees and acts on all of them, and partitions left over from a
//! higher setting are drained.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use mih_shared::ServiceName;
use mih_shared::config::ConfigLoader;
use mih_shared::messages::{self, HttpMethod, Job};
use mih_shared::partition::Partitions;
use mih_shared::topology::{Resource, Topology};
use mih_testkit::HttpSink;

use crate::dispatcher::{DELIVERY, job, service};
use crate::harness::TestHub;

const WAIT: Duration = Duration::from_secs(30);

async fn hub(services: &[ServiceName], partitions: u16) -> TestHub {
    TestHub::builder()
        .services(services)
        .toml(&format!("[streams]\njob_partitions = {partitions}\n"))
        .start()
        .await
}

/// A job for `service` whose ordering key is `key`.
fn keyed(service: &str, key: &str, n: usize) -> Job {
    Job {
        ordering_key: Some(key.to_owned()),
        ..job(service, HttpMethod::Post, &format!("/n/{n}"), Some("{}"))
    }
}

/// Publishes `job` where the hub's publishers would: its partition of `partitions`.
async fn publish_to_partition(hub: &TestHub, job: &Job, partition: u16) {
    let payload = messages::encode(job).expect("encodes");
    hub.js
        .publish(hub.names().job_subject_in(&job.service, partition), payload)
        .await
        .expect("publish")
        .await
        .expect("stored");
}

/// Messages `partition`'s stream holds now.
async fn held(hub: &TestHub, partition: u16) -> u64 {
    hub.js
        .get_stream(hub.names().jobs_partition_stream(partition))
        .await
        .expect("partition stream")
        .get_info()
        .await
        .expect("info")
        .state
        .messages
}

/// Waits until none of the first `partitions` partitions holds a job.
async fn wait_until_drained(hub: &TestHub, partitions: u16) {
    for partition in 0..partitions {
        mih_testkit::eventually(WAIT, || async {
            match held(hub, partition).await {
                0 => Ok(()),
                n => Err(format!("partition {partition} still holds {n}")),
            }
        })
        .await
        .unwrap_or_else(|last| panic!("not drained: {last}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_spread_over_the_partitions_and_two_dispatchers_deliver_each_once() {
    let mut hub = hub(DELIVERY, 4).await;
    let sink = HttpSink::start().await.expect("sink");
    service(&hub, "sis", &sink, json!({"concurrency": 8})).await;
    hub.add_services(&[ServiceName::Dispatcher]).await;
    let partitions = Partitions::new(4);
    let mut per_partition = BTreeMap::new();
    let mut ids = HashSet::new();
    for n in 0..240 {
        let job = keyed("sis", &format!("user-{}", n % 60), n);
        let partition = partitions.of_job(&job);
        *per_partition.entry(partition).or_insert(0) += 1;
        ids.insert(job.id.to_string());
        publish_to_partition(&hub, &job, partition).await;
    }
    assert_eq!(
        per_partition.keys().copied().collect::<Vec<u16>>(),
        [0, 1, 2, 3],
        "60 keys reach every partition: {per_partition:?}"
    );
    let received = sink.wait_for(240, WAIT).await.expect("every job delivered");
    let keys: HashSet<String> = received
        .iter()
        .filter_map(|r| r.header("idempotency-key").map(str::to_owned))
        .collect();
    assert_eq!(keys, ids, "each job delivered, under its own id");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sink.count(), 240, "no job delivered twice");
    // A work queue keeps only what is unacknowledged.
    wait_until_drained(&hub, 4).await;
    hub.stop().await;
}

async fn queue_page(hub: &TestHub, query: &str) -> Value {
    let answer = hub
        .api()
        .get(&format!("/api/v1/queue/sis/jobs?{query}"))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    answer.body
}

#[tokio::test]
async fn the_queue_shows_every_partition_and_acts_on_a_job_in_any() {
    // No dispatcher: the jobs wait.
    let hub = hub(&[ServiceName::Api], 3).await;
    let sink = HttpSink::start().await.expect("sink");
    let created = hub
        .api()
        .post(
            "/api/v1/services",
            &json!({"name": "sis", "transport": {"kind": "rest", "base_url": sink.url()}}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let partitions = Partitions::new(3);
    for n in 0..30 {
        let job = keyed("sis", &format!("course-{n}"), n);
        if n % 2 == 0 {
            publish_to_partition(&hub, &job, partitions.of_job(&job)).await;
        } else {
            // Where the matcher puts a keyed job: its key's own subject, read by the ordered
            // consumer; the queue shows both.
            let payload = messages::encode(&job).expect("encodes");
            hub.js
                .publish(hub.names().job_subject_for(&job, partitions), payload)
                .await
                .expect("publish")
                .await
                .expect("stored");
        }
    }

    let queue = hub.api().get("/api/v1/queue").await;
    let entry = &queue.body["items"][0];
    assert_eq!(entry["jobs"], 30, "{entry}");
    assert_eq!(entry["queued"], 30, "{entry}");
    assert_eq!(entry["partitions"], 3, "{entry}");
    assert_eq!(entry["consumer"], false, "{entry}");

    // Paged through every partition: each job once, oldest first.
    let mut handles = Vec::new();
    let mut times = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..10 {
        let query = match &after {
            Some(after) => format!("limit=7&after={after}"),
            None => "limit=7".to_owned(),
        };
        let page = queue_page(&hub, &query).await;
        for item in page["items"].as_array().expect("items") {
            handles.push(item["handle"].as_str().expect("handle").to_owned());
            times.push(item["enqueued_at"].as_str().expect("time").to_owned());
        }
        match page["next_after"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(handles.len(), 30, "{handles:?}");
    assert_eq!(handles.iter().collect::<HashSet<_>>().len(), 30);
    let parsed: Vec<chrono::DateTime<chrono::Utc>> =
        times.iter().map(|t| t.parse().expect("rfc3339")).collect();
    assert!(parsed.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    let elsewhere = handles
        .iter()
        .find(|h| h.starts_with("2."))
        .expect("a job in partition 2")
        .clone();
    // A job on its key's own subject is acted on by its handle as well.
    let keyed_handle = {
        let page = queue_page(&hub, "limit=100").await;
        page["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter(|item| item["handle"] != elsewhere.as_str())
            .find(|item| {
                item["ordering_key"]
                    .as_str()
                    .and_then(|key| key.trim_start_matches("course-").parse::<u32>().ok())
                    .is_some_and(|n| n % 2 == 1)
            })
            .and_then(|item| item["handle"].as_str().map(str::to_owned))
            .expect("a job on its key's subject, listed with its key")
    };
    let moved = hub
        .api()
        .post(
            &format!("/api/v1/queue/sis/jobs/{keyed_handle}/dead-letter"),
            &json!({}),
        )
        .await;
    assert_eq!(moved.status, StatusCode::OK, "{}", moved.body);

    // An operator's action on a job of partition 2 by its handle.
    let moved = hub
        .api()
        .post(
            &format!("/api/v1/queue/sis/jobs/{elsewhere}/dead-letter"),
            &json!({}),
        )
        .await;
    assert_eq!(moved.status, StatusCode::OK, "{}", moved.body);
    assert_eq!(moved.body["partition"], 2);
    assert_eq!(moved.body["handle"], elsewhere.as_str());
    let again = hub
        .api()
        .post(
            &format!("/api/v1/queue/sis/jobs/{elsewhere}/dead-letter"),
            &json!({}),
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.body);
    let queue = hub.api().get("/api/v1/queue").await;
    assert_eq!(queue.body["items"][0]["jobs"], 28, "{}", queue.body);
    for bad in ["2.x", "x.1", "2.0", "70000.1"] {
        let refused = hub
            .api()
            .post(
                &format!("/api/v1/queue/sis/jobs/{bad}/attempt-now"),
                &json!({}),
            )
            .await;
        assert_eq!(
            refused.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {}",
            refused.body
        );
    }
    let missing = hub
        .api()
        .post("/api/v1/queue/sis/jobs/9.1/attempt-now", &json!({}))
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND, "{}", missing.body);
    hub.stop().await;
}

#[tokio::test]
async fn partitions_left_over_from_a_higher_setting_are_drained() {
    // The api makes two partitions; a former setting of four left jobs in partitions 2 and 3.
    let mut hub = hub(&[ServiceName::Api], 2).await;
    let sink = HttpSink::start().await.expect("sink");
    let created = hub
        .api()
        .post(
            "/api/v1/services",
            &json!({"name": "sis", "transport": {"kind": "rest", "base_url": format!("{}/api", sink.url())}}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let four = ConfigLoader::new()
        .toml("[streams]\njob_partitions = 4\n")
        .load()
        .expect("valid");
    Topology::new(hub.names(), &four)
        .ensure(&hub.js, &[Resource::Jobs])
        .await
        .expect("four partitions");
    for n in 0..12 {
        let job = job("sis", HttpMethod::Post, &format!("/n/{n}"), Some("{}"));
        publish_to_partition(&hub, &job, u16::try_from(n % 4).expect("small")).await;
    }
    let queue = hub.api().get("/api/v1/queue").await;
    assert_eq!(queue.body["items"][0]["jobs"], 12, "{}", queue.body);
    assert_eq!(queue.body["items"][0]["partitions"], 4, "{}", queue.body);

    hub.add_services(&[ServiceName::Dispatcher]).await;
    sink.wait_for(12, WAIT)
        .await
        .expect("the jobs of every partition, left over ones too, are delivered");
    wait_until_drained(&hub, 4).await;
    hub.stop().await;
}
