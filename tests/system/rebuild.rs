//! The projections rebuilt from the streams: same rows, same counts, same statistics.

use std::time::Duration;

use chrono::Utc;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use mih_shared::ServiceName;
use mih_shared::messages::{self, HttpMethod, HttpRequest, Job, JobId, Origin, Request, Version};
use mih_shared::names::ServiceSlug;
use mih_testkit::{HttpSink, Reply};

use crate::harness::TestHub;

const WAIT: Duration = Duration::from_secs(30);

fn job(service: &str, path: &str) -> Job {
    Job {
        v: Version,
        id: JobId::new_v7(),
        event_id: Some(messages::EventId::new_v7()),
        rule_id: None,
        service: ServiceSlug::parse(service).expect("slug"),
        request: Request::Http(HttpRequest {
            method: HttpMethod::Post,
            path: path.to_owned(),
            query: Vec::new(),
            headers: Vec::new(),
            body: Some("{}".to_owned()),
            content_type: Some("application/json".to_owned()),
        }),
        origin: Origin::Rule,
        created_at: Utc::now(),
        replay_of: None,
        ordering_key: None,
        hold_key: false,
        source: Some("moodle".parse().expect("source")),
        eventname: Some("\\core\\event\\user_created".to_owned()),
    }
}

/// The stats answer without its time-dependent throughput, and without empty buckets.
fn timeless(mut stats: Value) -> Value {
    fn strip(value: &mut Value) {
        match value {
            Value::Object(fields) => {
                fields.remove("throughput_per_s");
                fields.values_mut().for_each(strip);
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut stats);
    if let Some(series) = stats["series"].as_array_mut() {
        series.retain(|point| {
            point["attempts"] != 0 || point["dead_letters"] != 0 || point["circuit_changes"] != 0
        });
    }
    stats
}

/// An inbound log row: id, sequence, service, source, excerpt, parked reason.
type InboundRow = (String, i64, String, Option<String>, String, Option<String>);

/// Everything the projections hold, in a comparable form.
async fn snapshot(db: &PgPool) -> Value {
    let deliveries: Vec<(String, i32, String, i64)> = sqlx::query_as(
        "SELECT job_id::text, attempt, status, duration_ms FROM deliveries ORDER BY job_id, attempt",
    )
    .fetch_all(db)
    .await
    .expect("deliveries");
    let rollups: Vec<(String, String, i64, i64, i64, Vec<i32>)> = sqlx::query_as(
        "SELECT minute::text, service, delivered, failed_retryable + failed_permanent + timeout,
                latency_sum_ms, latency_buckets
         FROM delivery_rollups ORDER BY minute, service, rule_key",
    )
    .fetch_all(db)
    .await
    .expect("rollups");
    let periods: Vec<(i32, String, String, i64, i64, i64)> = sqlx::query_as(
        "SELECT width_s, at::text, service, delivered, failed_retryable + failed_permanent + timeout,
                latency_sum_ms
         FROM delivery_period_rollups ORDER BY width_s, at, service, rule_key",
    )
    .fetch_all(db)
    .await
    .expect("period rollups");
    let latency: Vec<(i32, String, String, i16, i64)> = sqlx::query_as(
        "SELECT width_s, at::text, service, bucket, samples
         FROM delivery_period_latency ORDER BY width_s, at, service, rule_key, bucket",
    )
    .fetch_all(db)
    .await
    .expect("period latency");
    let dead: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT job_id::text, status, replay_job_id::text FROM dead_letters ORDER BY job_id",
    )
    .fetch_all(db)
    .await
    .expect("dead letters");
    let circuits: i64 = sqlx::query_scalar("SELECT count(*) FROM circuit_changes")
        .fetch_one(db)
        .await
        .expect("circuit changes");
    let inbound: Vec<InboundRow> = sqlx::query_as(
        "SELECT id::text, sequence, service, source, excerpt, parked_reason
             FROM inbound_messages ORDER BY sequence",
    )
    .fetch_all(db)
    .await
    .expect("inbound log");
    json!({"deliveries": deliveries, "rollups": rollups, "periods": periods, "latency": latency,
           "dead_letters": dead, "circuit_changes": circuits, "inbound": inbound})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_after_dropping_the_projections_yields_the_same_rows_and_stats() {
    let hub = TestHub::builder()
        .services(&[ServiceName::Api, ServiceName::Dispatcher, ServiceName::Dlq])
        .start()
        .await;
    let db = PgPool::connect(hub.config.database.url.expose())
        .await
        .expect("test database");
    let ok = HttpSink::start().await.expect("sink");
    let flaky = HttpSink::start().await.expect("sink");
    flaky.script([Reply::status(503), Reply::status(503)]);
    let broken = HttpSink::start().await.expect("sink");
    broken.set_reply(Reply::status(422));
    for (name, sink) in [("ok", &ok), ("flaky", &flaky), ("broken", &broken)] {
        let answer = hub
            .api()
            .post(
                "/api/v1/services",
                &json!({"name": name, "transport": {"kind": "rest", "base_url": sink.url()},
                        "retry": {"max_retries": 5, "backoff_base_ms": 10, "backoff_cap_ms": 20},
                        "breaker": {"failure_threshold": 2, "cooldown_ms": 100}}),
            )
            .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    }
    hub.wait_for_config(ServiceName::Dispatcher).await;
    let mut jobs = Vec::new();
    for i in 0..20 {
        jobs.push(job("ok", &format!("/ok/{i}")));
    }
    for i in 0..3 {
        jobs.push(job("flaky", &format!("/flaky/{i}")));
        jobs.push(job("broken", &format!("/broken/{i}")));
    }
    for job in &jobs {
        hub.js
            .publish(
                hub.names().job_subject(&job.service),
                messages::encode(job).expect("json"),
            )
            .await
            .expect("publish")
            .await
            .expect("stored");
    }
    // Every job ends: delivered, or (broken) dead-lettered. The dead letters (dlq) and their
    // refused attempts (the recorder) are projected independently: wait for both.
    mih_testkit::eventually(WAIT, || async {
        let count = |status: &'static str| {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM deliveries WHERE status = $1")
                .bind(status)
                .fetch_one(&db)
        };
        let delivered = count("delivered").await.map_err(|e| e.to_string())?;
        let refused = count("failed_permanent").await.map_err(|e| e.to_string())?;
        let dead: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters")
            .fetch_one(&db)
            .await
            .map_err(|e| e.to_string())?;
        if delivered == 23 && refused == 3 && dead == 3 {
            Ok(())
        } else {
            Err(format!(
                "{delivered} delivered, {refused} refused, {dead} dead"
            ))
        }
    })
    .await
    .expect("all jobs ended");
    // One dead letter replayed after the target is fixed: it must stay resolved after a rebuild.
    broken.set_reply(Reply::status(200));
    let dead_id: String = sqlx::query_scalar("SELECT job_id::text FROM dead_letters LIMIT 1")
        .fetch_one(&db)
        .await
        .expect("a dead letter");
    let replay = hub
        .api()
        .post(
            &format!("/api/v1/dead-letters/{dead_id}/replay"),
            &json!({}),
        )
        .await;
    assert!(
        replay.status.is_success(),
        "{}: {}",
        replay.status,
        replay.body
    );
    mih_testkit::eventually(WAIT, || async {
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters")
            .fetch_one(&db)
            .await
            .map_err(|e| e.to_string())?;
        if left == 2 {
            Ok(())
        } else {
            Err(format!("{left} dead letters"))
        }
    })
    .await
    .expect("the replay resolved its dead letter");
    // The dlq service and the recorder project RESULTS independently: the dead letter can be
    // resolved before the recorder has written the replay's delivery. Snapshot only once both
    // have caught up, or the rebuild "finds" a row the snapshot missed.
    let replay_job = replay.body["replay_job_id"]
        .as_str()
        .expect("the replay's job id")
        .to_owned();
    mih_testkit::eventually(WAIT, || async {
        let recorded: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM deliveries WHERE job_id::text = $1 AND status = 'delivered'",
        )
        .bind(&replay_job)
        .fetch_one(&db)
        .await
        .map_err(|e| e.to_string())?;
        if recorded == 1 {
            Ok(())
        } else {
            Err(format!(
                "replay {replay_job}: {recorded} deliveries recorded"
            ))
        }
    })
    .await
    .expect("the recorder wrote the replay's delivery");
    // Inbound messages, as ingest stores one and the reply consumer parks one: the inbound log
    // is a projection of INBOUND too.
    let stored = messages::InboundMessage {
        v: Version,
        id: messages::InboundId::new_v7(),
        service: "ok".parse().expect("slug"),
        source: "moodle".parse().expect("source"),
        via: messages::InboundVia::Webhook,
        received_at: Utc::now(),
        content_type: Some("application/json".into()),
        payload: json!({"grade": 42}),
        external_id: Some("wh_1".into()),
    };
    let parked = messages::ParkedInbound {
        v: Version,
        id: messages::InboundId::new_v7(),
        service: "ok".parse().expect("slug"),
        via: messages::InboundVia::Amqp,
        received_at: Utc::now(),
        reason: "the body is not UTF-8 text".into(),
        size: 3,
        excerpt: "\u{fffd}".into(),
        external_id: None,
    };
    let names = hub.names();
    for (subject, payload) in [
        (
            names.inbound_subject(&stored.source, &stored.service),
            messages::encode(&stored).expect("json"),
        ),
        (
            names.inbound_parked_subject(&parked.service),
            messages::encode(&parked).expect("json"),
        ),
    ] {
        hub.js
            .publish(subject, payload)
            .await
            .expect("publish")
            .await
            .expect("stored");
    }
    mih_testkit::eventually(WAIT, || async {
        let logged: i64 = sqlx::query_scalar("SELECT count(*) FROM inbound_messages")
            .fetch_one(&db)
            .await
            .map_err(|e| e.to_string())?;
        if logged == 2 {
            Ok(())
        } else {
            Err(format!("{logged} inbound messages logged"))
        }
    })
    .await
    .expect("the inbound log caught up");
    let window =
        |d: chrono::Duration| (Utc::now() + d).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let stats_query = format!(
        "/api/v1/stats?bucket=1m&from={}&to={}",
        window(chrono::Duration::minutes(-30)),
        window(chrono::Duration::minutes(30))
    );
    let before = snapshot(&db).await;
    let stats_before = hub.api().get(&stats_query).await;
    assert_eq!(stats_before.status, StatusCode::OK, "{}", stats_before.body);

    let output = crate::process::MihProcess::spawn(
        &["rebuild-projections"],
        &[
            ("MIH_NAMESPACE", hub.config.namespace.to_string()),
            ("MIH_NATS_URL", hub.nats.url().to_owned()),
            (
                "MIH_DATABASE_URL",
                hub.config.database.url.expose().to_owned(),
            ),
            ("MIH_SECRET_KEY", crate::harness::SECRET_KEY.to_owned()),
        ],
    );
    let (status, log) = output.wait(Duration::from_secs(60)).await;
    assert!(status.success(), "{log}");
    assert!(log.contains("projections rebuilt"), "{log}");

    let after = snapshot(&db).await;
    for part in [
        "deliveries",
        "rollups",
        "periods",
        "latency",
        "dead_letters",
        "circuit_changes",
        "inbound",
    ] {
        assert!(
            after[part] == before[part],
            "{part} differ after the rebuild:\n{:#}\n{:#}",
            before[part],
            after[part]
        );
    }
    let stats_after = hub.api().get(&stats_query).await;
    // Throughput divides by the part of the window that has passed, which grows meanwhile.
    let (before, after) = (timeless(stats_before.body), timeless(stats_after.body));
    assert!(
        before == after,
        "stats differ after the rebuild:\n{before:#}\n{after:#}"
    );
    hub.stop().await;
}
