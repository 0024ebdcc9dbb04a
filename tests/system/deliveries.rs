//! The delivery log through the real pipeline: jobs delivered by the dispatcher to real HTTP
//! targets, their outcomes recorded from RESULTS by the api's recorder, searched and shown by
//! `/api/v1/deliveries`.

use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};

use mih_shared::ServiceName;
use mih_shared::messages::{self, Job, RuleId};
use mih_testkit::{HttpSink, Reply, fixtures};

use crate::harness::TestHub;

const WAIT: Duration = Duration::from_secs(20);

async fn service(hub: &TestHub, name: &str, sink: &HttpSink) {
    let body = json!({
        "name": name,
        "transport": {"kind": "rest", "base_url": format!("{}/api", sink.url())},
        "retry": {"max_retries": 5, "backoff_base_ms": 10, "backoff_cap_ms": 100},
        "breaker": {"failure_threshold": 10},
    });
    let answer = hub.api().post("/api/v1/services", &body).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    hub.wait_for_config(ServiceName::Dispatcher).await;
}

/// The `grades` service at `sink`, delivering at most `concurrency` jobs at once.
async fn grades_service(hub: &TestHub, sink: &HttpSink, concurrency: u32) {
    let body = json!({
        "name": "grades",
        "concurrency": concurrency,
        "transport": {"kind": "rest", "base_url": format!("{}/api", sink.url())},
    });
    let answer = hub.api().post("/api/v1/services", &body).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    hub.wait_for_config(ServiceName::Dispatcher).await;
}

/// A job for a graded event, from a rule.
fn job(service: &str, path: &str, body: &str) -> Job {
    Job {
        rule_id: Some(RuleId(uuid::Uuid::now_v7())),
        eventname: Some(r"\core\event\user_graded".to_owned()),
        ..fixtures::job(service, path, body)
    }
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// Publishes a job as the matcher would, inside the trace [`TRACE_ID`].
async fn publish(hub: &TestHub, job: &Job) {
    let payload = messages::encode(job).expect("encodes");
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(
        "traceparent",
        format!("00-{TRACE_ID}-00f067aa0ba902b7-01").as_str(),
    );
    hub.js
        .publish_with_headers(hub.names().job_subject(&job.service), headers, payload)
        .await
        .expect("publish")
        .await
        .expect("stored");
}

/// The items of one search, asserting it succeeded.
async fn search(hub: &TestHub, query: &str) -> Vec<Value> {
    let answer = hub.api().get(&format!("/api/v1/deliveries?{query}")).await;
    assert_eq!(answer.status, StatusCode::OK, "{query}: {}", answer.body);
    answer.body["items"].as_array().cloned().unwrap_or_default()
}

async fn wait_for_items(hub: &TestHub, query: &str, count: usize) -> Vec<Value> {
    mih_testkit::eventually(WAIT, || async {
        let items = search(hub, query).await;
        if items.len() >= count {
            Ok(items)
        } else {
            Err(format!("{} of {count} attempts recorded", items.len()))
        }
    })
    .await
    .expect("attempts recorded")
}

fn enc(time: chrono::DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Micros, true)
        .replace('+', "%2B")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_are_searchable_and_show_every_attempt_with_the_request() {
    let hub = TestHub::builder()
        .services(&[ServiceName::Api, ServiceName::Dispatcher])
        .start()
        .await;
    let before = Utc::now() - chrono::TimeDelta::seconds(1);
    let flaky_sink = HttpSink::start().await.expect("sink");
    flaky_sink.script([
        Reply::status(503),
        Reply::status(500).with_body("database is restarting"),
    ]);
    flaky_sink.set_reply(Reply::status(200).with_body(r#"{"stored": true}"#));
    let steady_sink = HttpSink::start().await.expect("sink");
    service(&hub, "flaky", &flaky_sink).await;
    service(&hub, "steady", &steady_sink).await;

    let flaky = job("flaky", "/grades", r#"{"grade": 9}"#);
    publish(&hub, &flaky).await;
    let flaky_items = wait_for_items(&hub, "service=flaky", 3).await;
    let steady = job("steady", "/users", r#"{"user": 27}"#);
    publish(&hub, &steady).await;
    wait_for_items(&hub, "service=steady", 1).await;

    // Newest first: the last attempt of the flaky job leads.
    let attempts: Vec<(i64, &str)> = flaky_items
        .iter()
        .map(|i| {
            (
                i["attempt"].as_i64().expect("attempt"),
                i["status"].as_str().expect("status"),
            )
        })
        .collect();
    assert_eq!(
        attempts,
        [
            (3, "delivered"),
            (2, "failed_retryable"),
            (1, "failed_retryable")
        ]
    );
    let all = search(&hub, "").await;
    assert_eq!(all.len(), 4, "{all:?}");
    assert_eq!(all[0]["service"], "steady", "the newest attempt first");

    // Filters.
    let failed = search(&hub, "status=failed_retryable").await;
    assert_eq!(failed.len(), 2);
    assert!(failed.iter().all(|i| i["job_id"] == flaky.id.to_string()));
    let event = steady.event_id.expect("event id");
    let by_event = search(&hub, &format!("event_id={event}")).await;
    assert_eq!(by_event.len(), 1);
    assert_eq!(by_event[0]["job_id"], steady.id.to_string());
    let rule = flaky.rule_id.expect("rule");
    assert_eq!(search(&hub, &format!("rule_id={rule}")).await.len(), 3);
    assert_eq!(
        search(
            &hub,
            "source=moodle&origin=rule&service=flaky&status=delivered"
        )
        .await
        .len(),
        1
    );
    assert_eq!(search(&hub, "origin=facade").await.len(), 0);
    // By event name (the leading backslash optional) and by text in an error or an answer.
    let eventname = all[0]["eventname"].as_str().expect("eventname").to_owned();
    let by_name = search(&hub, &format!("eventname={}", enc_text(&eventname))).await;
    assert_eq!(by_name.len(), 4, "{by_name:?}");
    let bare = eventname.trim_start_matches('\\');
    assert_eq!(
        search(&hub, &format!("eventname={}", enc_text(bare)))
            .await
            .len(),
        4
    );
    assert!(
        search(&hub, "eventname=%5Cmod_quiz%5Cevent%5Cnothing")
            .await
            .is_empty()
    );
    let restarting = search(&hub, "q=DATABASE%20is%20restart").await;
    assert_eq!(restarting.len(), 1, "{restarting:?}");
    assert_eq!(restarting[0]["attempt"], 2);
    assert_eq!(
        search(&hub, "q=stored").await.len(),
        1,
        "the answer's excerpt"
    );
    // LIKE's wildcards are text here: `%` matches only a percent sign.
    assert!(search(&hub, "q=%25%25").await.is_empty());
    let refused = hub.api().get("/api/v1/deliveries?q=x").await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        refused.body.to_string().contains("\"q\""),
        "{}",
        refused.body
    );
    assert_eq!(
        search(&hub, &format!("from={}", enc(before))).await.len(),
        4
    );
    assert!(
        search(&hub, &format!("to={}", enc(before)))
            .await
            .is_empty()
    );
    let later = Utc::now() + chrono::TimeDelta::hours(1);
    assert!(
        search(&hub, &format!("from={}", enc(later)))
            .await
            .is_empty()
    );
    // A window ending just after the first attempt holds only it.
    let first_started: chrono::DateTime<Utc> = flaky_items[2]["started_at"]
        .as_str()
        .expect("started_at")
        .parse()
        .expect("time");
    let window = format!(
        "from={}&to={}",
        enc(first_started),
        enc(first_started + chrono::TimeDelta::microseconds(1))
    );
    let first = search(&hub, &window).await;
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0]["attempt"], 1);

    // Paging: one at a time, every attempt once, newest first.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/deliveries?limit=1&cursor={c}"),
            None => "/api/v1/deliveries?limit=1".to_owned(),
        };
        let page = hub.api().get(&path).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let items = page.body["items"].as_array().expect("items");
        assert_eq!(items.len(), 1);
        seen.push((items[0]["job_id"].clone(), items[0]["attempt"].clone()));
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let expected: Vec<(Value, Value)> = all
        .iter()
        .map(|i| (i["job_id"].clone(), i["attempt"].clone()))
        .collect();
    assert_eq!(seen, expected);

    // Detail: the attempts in order, with the request, excerpts and trace ids.
    let detail = hub
        .api()
        .get(&format!("/api/v1/deliveries/{}", flaky.id))
        .await;
    assert_eq!(detail.status, StatusCode::OK, "{}", detail.body);
    let d = &detail.body;
    assert_eq!(d["service"], "flaky");
    assert_eq!(d["status"], "delivered");
    assert_eq!(d["origin"], "rule");
    assert_eq!(d["source"], "moodle");
    assert_eq!(d["eventname"], r"\core\event\user_graded");
    assert_eq!(d["event_id"], flaky.event_id.expect("event").to_string());
    assert_eq!(d["rule_id"], rule.to_string());
    assert_eq!(
        d["request"],
        serde_json::to_value(&flaky.request).expect("request as JSON")
    );
    let attempts = d["attempts"].as_array().expect("attempts");
    let summary: Vec<(i64, &str, i64)> = attempts
        .iter()
        .map(|a| {
            (
                a["attempt"].as_i64().expect("attempt"),
                a["status"].as_str().expect("status"),
                a["response_status"].as_i64().expect("http status"),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (1, "failed_retryable", 503),
            (2, "failed_retryable", 500),
            (3, "delivered", 200)
        ]
    );
    assert_eq!(attempts[1]["response_excerpt"], "database is restarting");
    assert_eq!(attempts[2]["response_excerpt"], r#"{"stored": true}"#);
    assert!(attempts[0]["error"].as_str().is_some(), "{}", attempts[0]);
    for a in attempts {
        assert_eq!(
            a["trace_id"], TRACE_ID,
            "the job's trace on every attempt: {a}"
        );
        assert!(a["duration_ms"].as_i64().is_some());
    }

    // Unknown jobs and bad filters.
    let missing = hub
        .api()
        .get(&format!("/api/v1/deliveries/{}", uuid::Uuid::now_v7()))
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let nonsense = hub.api().get("/api/v1/deliveries/not-a-job").await;
    assert_eq!(nonsense.status, StatusCode::NOT_FOUND);
    for (query, field) in [
        ("status=lost", "status"),
        ("origin=moon", "origin"),
        ("event_id=42", "event_id"),
        ("rule_id=x", "rule_id"),
        ("from=yesterday", "from"),
        ("cursor=zzz", "cursor"),
    ] {
        let answer = hub.api().get(&format!("/api/v1/deliveries?{query}")).await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{query}");
        assert_eq!(answer.fields(), [field], "{query}: {}", answer.body);
    }
    let window = format!("from={}&to={}", enc(later), enc(before));
    let backwards = hub.api().get(&format!("/api/v1/deliveries?{window}")).await;
    assert_eq!(backwards.fields(), ["to"]);
    hub.stop().await;
}

fn enc_text(text: &str) -> String {
    mih_testkit::form_body(&[("v", text)])
        .trim_start_matches("v=")
        .to_owned()
}

/// `dispatcher.record_requests = false`: the target gets the request, the log keeps only the
/// answer (no body, which may hold personal data, is copied into RESULTS or PostgreSQL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_stay_out_of_the_log_when_record_requests_is_off() {
    let hub = TestHub::builder()
        .services(&[ServiceName::Api, ServiceName::Dispatcher])
        .toml("[dispatcher]\nrecord_requests = false\n")
        .start()
        .await;
    let sink = HttpSink::start().await.expect("sink");
    sink.script([Reply::status(503)]);
    sink.set_reply(Reply::status(200));
    service(&hub, "grades", &sink).await;
    let sent = job("grades", "/grades", r#"{"grade": "private"}"#);
    publish(&hub, &sent).await;
    wait_for_items(&hub, "service=grades", 2).await;
    let arrived = sink.wait_for(2, WAIT).await.expect("delivered");
    assert_eq!(arrived[1].body.as_ref(), br#"{"grade": "private"}"#);

    let detail = hub
        .api()
        .get(&format!("/api/v1/deliveries/{}", sent.id))
        .await;
    assert_eq!(detail.status, StatusCode::OK, "{}", detail.body);
    assert_eq!(detail.body["status"], "delivered");
    assert_eq!(detail.body["request"], Value::Null, "{}", detail.body);
    let results = hub.stored(&hub.names().results_stream()).await;
    let outcomes: usize = results
        .iter()
        .map(|m| messages::decode_outcomes(&m.payload).map_or(0, |o| o.len()))
        .sum();
    assert_eq!(outcomes, 2);
    for outcome in &results {
        let text = String::from_utf8_lossy(&outcome.payload);
        assert!(
            !text.contains("private"),
            "a request copied into RESULTS: {text}"
        );
    }
    hub.stop().await;
}

/// Outcomes ready together travel to RESULTS in one message (here gathered for 500 ms), yet
/// the log has each attempt once and every job is acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_ready_together_share_a_message_and_each_is_logged_once() {
    let hub = TestHub::builder()
        .services(&[ServiceName::Api, ServiceName::Dispatcher])
        .toml("[dispatcher]\noutcome_linger = \"500ms\"\n")
        .start()
        .await;
    let sink = HttpSink::start().await.expect("sink");
    grades_service(&hub, &sink, 16).await;
    let sent: Vec<Job> = (0..30)
        .map(|i| job("grades", &format!("/grades/{i}"), "{}"))
        .collect();
    for job in &sent {
        publish(&hub, job).await;
    }
    sink.wait_for(30, WAIT).await.expect("delivered");
    let items = wait_for_items(&hub, "service=grades&limit=100", 30).await;
    let mut logged: Vec<String> = items
        .iter()
        .map(|i| i["job_id"].as_str().expect("job id").to_owned())
        .collect();
    logged.sort();
    let mut expected: Vec<String> = sent.iter().map(|j| j.id.to_string()).collect();
    expected.sort();
    assert_eq!(logged, expected, "each job's attempt logged once");

    let slug = "grades".parse().expect("slug");
    hub.wait_for_consumer(
        &hub.names().jobs_stream(),
        &hub.names().dispatch_consumer(&slug),
    )
    .await;
    let results = hub.stored(&hub.names().results_stream()).await;
    let per_message: Vec<usize> = results
        .iter()
        .map(|m| {
            messages::decode_outcomes(&m.payload)
                .expect("outcomes")
                .len()
        })
        .collect();
    assert_eq!(per_message.iter().sum::<usize>(), 30, "{per_message:?}");
    assert!(
        per_message.len() < 30,
        "16 deliveries at once within 500 ms share messages: {per_message:?}"
    );
    let metrics = hub.metrics(ServiceName::Dispatcher).await;
    assert!(
        metrics.contains("mih_dispatcher_outcomes_per_message"),
        "the batch sizes are exported"
    );
    hub.stop().await;
}

/// Outcomes that reach the recorder one after another, within `api.record_linger`, are
/// written together, and each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_arriving_within_the_record_linger_are_written_together() {
    const JOBS: usize = 12;
    let hub = TestHub::builder()
        .services(&[ServiceName::Api, ServiceName::Dispatcher])
        .toml(
            "[api]\nrecord_linger = \"1s\"\n[dispatcher]\noutcome_batch_max = 1\n[nats]\nack_linger = \"0s\"\n",
        )
        .start()
        .await;
    let sink = HttpSink::start().await.expect("sink");
    // One delivery at a time: each outcome is a RESULTS message of its own, a few
    // milliseconds after the one before.
    grades_service(&hub, &sink, 1).await;
    for i in 0..JOBS {
        publish(&hub, &job("grades", &format!("/grades/{i}"), "{}")).await;
    }
    sink.wait_for(JOBS, WAIT).await.expect("delivered");
    let items = wait_for_items(&hub, "service=grades&limit=100", JOBS).await;
    assert_eq!(items.len(), JOBS, "each attempt logged once");
    let metrics = hub.metrics(ServiceName::Api).await;
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{name} in {metrics}"))
    };
    assert_eq!(value("mih_recorder_batch_size_sum"), JOBS as f64);
    let batches = value("mih_recorder_batch_size_count");
    assert!(
        batches < JOBS as f64 / 2.0,
        "{JOBS} outcomes a few ms apart went in {batches} statements"
    );
    hub.stop().await;
}
