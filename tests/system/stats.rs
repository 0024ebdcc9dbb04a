//! The recorder and `/api/v1/stats` against known data: outcomes with chosen latencies and
//! start times published to RESULTS on the test's NATS, circuit states written to the circuits
//! bucket, and the figures compared with values computed by hand.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use reqwest::StatusCode;
use serde_json::Value;

use mih_shared::ServiceName;
use mih_shared::circuit::{Circuit, CircuitState};
use mih_shared::messages::{self, EventId, JobId, Origin, Outcome, OutcomeStatus, RuleId, Version};
use mih_shared::names::ServiceSlug;

use crate::harness::TestHub;

const WAIT: Duration = Duration::from_secs(20);
/// The documented bound of the percentile estimates (2.5 %).
const ERROR: f64 = 0.025;

async fn api_hub() -> TestHub {
    TestHub::builder()
        .services(&[ServiceName::Api])
        .start()
        .await
}

fn at(text: &str) -> DateTime<Utc> {
    text.parse().expect("an RFC 3339 time")
}

fn outcome(
    service: &str,
    rule: Option<RuleId>,
    started_at: DateTime<Utc>,
    duration_ms: u64,
    status: OutcomeStatus,
) -> Outcome {
    Outcome {
        v: Version,
        job_id: JobId::new_v7(),
        service: ServiceSlug::parse(service).expect("slug"),
        attempt: 1,
        started_at,
        duration_ms,
        status,
        response_status: (status != OutcomeStatus::CircuitOpen).then_some(200),
        response_excerpt: None,
        error: None,
        event_id: rule.map(|_| EventId::new_v7()),
        rule_id: rule,
        origin: if rule.is_some() {
            Origin::Rule
        } else {
            Origin::Facade
        },
        trace_id: None,
        source: None,
        eventname: None,
        replay_of: None,
        request: None,
        retry_at: None,
    }
}

/// Publishes raw bytes to `<ns>.results.<service>` with a message id, as the dispatcher does.
async fn publish_raw(hub: &TestHub, service: &str, payload: bytes::Bytes, id: &str) {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", id);
    let subject = hub
        .names()
        .result_subject(&ServiceSlug::parse(service).expect("slug"));
    hub.js
        .publish_with_headers(subject, headers, payload)
        .await
        .expect("publish")
        .await
        .expect("stored");
}

async fn publish(hub: &TestHub, outcome: &Outcome) {
    let id = format!("{}:{}", outcome.job_id, outcome.attempt);
    publish_raw(
        hub,
        outcome.service.as_str(),
        messages::encode(outcome).expect("encodes"),
        &id,
    )
    .await;
}

/// Waits until the recorder acknowledged (recorded, or terminated) everything in RESULTS:
/// acknowledgement follows the commit, so the tables hold it all.
async fn wait_for_recorder(hub: &TestHub) {
    hub.wait_for_consumer(
        &hub.names().results_stream(),
        mih_api::delivery_log::CONSUMER,
    )
    .await;
}

async fn stats(hub: &TestHub, query: &str) -> Value {
    let answer = hub.api().get(&format!("/api/v1/stats?{query}")).await;
    assert_eq!(answer.status, StatusCode::OK, "{query}: {}", answer.body);
    answer.body
}

/// The nearest-rank percentile of the exact samples.
fn nearest_rank(samples: &[u64], p: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let rank = ((p / 100.0 * sorted.len() as f64).ceil() as usize).max(1);
    #[allow(clippy::cast_precision_loss)]
    let value = sorted[rank - 1] as f64;
    value
}

/// Asserts a reported percentile against the hand-computed value, within the error bound.
fn assert_close(figures: &Value, name: &str, expected: f64) {
    let reported = figures["latency"][name]
        .as_f64()
        .unwrap_or_else(|| panic!("{name} missing in {figures}"));
    assert!(
        (reported - expected).abs() <= expected * ERROR,
        "{name}: reported {reported}, nearest rank {expected}"
    );
}

fn int(value: &Value) -> i64 {
    value
        .as_i64()
        .unwrap_or_else(|| panic!("not an integer: {value}"))
}

fn circuit(state: CircuitState, failures: u32, changed_at: &str) -> Circuit {
    Circuit {
        v: Version,
        state,
        consecutive_failures: failures,
        opened_at: (state != CircuitState::Closed).then(|| at(changed_at)),
        probes: 0,
        changed_at: at(changed_at),
        last_error: (failures > 0).then(|| "HTTP 503".to_owned()),
        paused_until: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn percentiles_counts_and_rates_match_hand_computed_values() {
    let hub = api_hub().await;
    let (r1, r2) = (RuleId(uuid::Uuid::now_v7()), RuleId(uuid::Uuid::now_v7()));
    let base = at("2026-01-05T10:00:00Z");
    let mut alpha_r1 = Vec::new();
    let mut alpha_r2 = Vec::new();
    let mut beta = Vec::new();
    // alpha, rule 1, minute 10:00: 10, 20, …, 1000 ms; every tenth failed (retryable).
    for i in 1..=100u64 {
        let status = if i % 10 == 0 {
            OutcomeStatus::FailedRetryable
        } else {
            OutcomeStatus::Delivered
        };
        let started = base + TimeDelta::milliseconds(i64::try_from(i * 500).expect("small"));
        publish(&hub, &outcome("alpha", Some(r1), started, i * 10, status)).await;
        alpha_r1.push(i * 10);
    }
    // alpha, rule 2, minute 10:01: 1500, 1600, …, 3400 ms; 4 timeouts, 2 permanent failures.
    for i in 0..20u64 {
        let status = match i {
            0..4 => OutcomeStatus::Timeout,
            4..6 => OutcomeStatus::FailedPermanent,
            _ => OutcomeStatus::Delivered,
        };
        let started = base + TimeDelta::seconds(60 + i64::try_from(i).expect("small"));
        let duration = 1500 + 100 * i;
        publish(&hub, &outcome("alpha", Some(r2), started, duration, status)).await;
        alpha_r2.push(duration);
    }
    // beta, facade calls, minute 10:03: ten of 3 ms, two refused by an open circuit.
    for i in 0..12i64 {
        let started = base + TimeDelta::seconds(180 + i);
        let (duration, status) = if i < 10 {
            (3, OutcomeStatus::Delivered)
        } else {
            (0, OutcomeStatus::CircuitOpen)
        };
        publish(&hub, &outcome("beta", None, started, duration, status)).await;
        if status != OutcomeStatus::CircuitOpen {
            beta.push(duration);
        }
    }
    // Dead letters, as the dlq service stores them: two of alpha at 10:02, one of beta at 10:03.
    let url = hub.config.database.url.expose().to_owned();
    let db = sqlx::PgPool::connect(&url).await.expect("database");
    for (service, rule, when) in [
        ("alpha", Some(r1), "2026-01-05T10:02:05Z"),
        ("alpha", Some(r2), "2026-01-05T10:02:50Z"),
        ("beta", None, "2026-01-05T10:03:05Z"),
    ] {
        sqlx::query(
            "INSERT INTO dead_letters (job_id, service, rule_id, origin, stage, reason, attempts, \
             job, dead_lettered_at) VALUES ($1, $2, $3, 'rule', 'delivery', 'exhausted', 6, \
             '{}'::jsonb, $4)",
        )
        .bind(uuid::Uuid::now_v7())
        .bind(service)
        .bind(rule.map(|r| r.0))
        .bind(at(when))
        .execute(&db)
        .await
        .expect("dead letter stored");
    }
    // Circuit states: alpha closed (a failure, before the window) → open → half-open → open →
    // closed; beta opens once.
    let circuits = hub
        .js
        .get_key_value(hub.names().circuits_bucket())
        .await
        .expect("circuits bucket");
    for (service, circuit) in [
        (
            "alpha",
            circuit(CircuitState::Closed, 1, "2026-01-05T09:00:00Z"),
        ),
        (
            "alpha",
            circuit(CircuitState::Open, 3, "2026-01-05T10:01:10Z"),
        ),
        (
            "alpha",
            circuit(CircuitState::HalfOpen, 3, "2026-01-05T10:02:30Z"),
        ),
        (
            "alpha",
            circuit(CircuitState::Open, 4, "2026-01-05T10:02:40Z"),
        ),
        (
            "alpha",
            circuit(CircuitState::Closed, 0, "2026-01-05T10:04:00Z"),
        ),
        (
            "beta",
            circuit(CircuitState::Open, 5, "2026-01-05T10:03:00Z"),
        ),
    ] {
        circuits
            .put(service, serde_json::to_vec(&circuit).expect("json").into())
            .await
            .expect("circuit written");
    }
    wait_for_recorder(&hub).await;
    let window = "from=2026-01-05T10:00:00Z&to=2026-01-05T10:05:00Z";
    mih_testkit::eventually(WAIT, || async {
        let body = stats(&hub, window).await;
        match body["totals"]["circuit_changes"].as_i64() {
            Some(5) => Ok(()),
            other => Err(format!("{other:?} circuit changes recorded")),
        }
    })
    .await
    .expect("circuit changes recorded");

    // Overall, by minute.
    let body = stats(&hub, &format!("{window}&bucket=1m")).await;
    assert_eq!(body["bucket"], "1m");
    assert_eq!(body["from"], "2026-01-05T10:00:00Z");
    assert_eq!(body["to"], "2026-01-05T10:05:00Z");
    assert_eq!(body["latency_error"], ERROR);
    let totals = &body["totals"];
    assert_eq!(int(&totals["attempts"]), 132);
    assert_eq!(int(&totals["delivered"]), 114);
    assert_eq!(int(&totals["failed"]), 18);
    assert_eq!(int(&totals["failed_retryable"]), 10);
    assert_eq!(int(&totals["timeout"]), 4);
    assert_eq!(int(&totals["failed_permanent"]), 2);
    assert_eq!(int(&totals["circuit_open"]), 2);
    assert_eq!(totals["success_rate"].as_f64(), Some(114.0 / 132.0));
    assert_eq!(totals["throughput_per_s"].as_f64(), Some(132.0 / 300.0));
    assert_eq!(int(&totals["dead_letters"]), 3);
    assert_eq!(int(&totals["circuit_changes"]), 5);
    assert_eq!(int(&totals["circuit_opened"]), 3);
    let all: Vec<u64> = [alpha_r1.clone(), alpha_r2.clone(), beta.clone()].concat();
    // By hand: 130 timed samples (ten of 3 ms, 10…1000, 1500…3400): p50 is the 65th (550),
    // p95 the 124th (2800), p99 the 129th (3300).
    assert_eq!(
        (
            nearest_rank(&all, 50.0),
            nearest_rank(&all, 95.0),
            nearest_rank(&all, 99.0)
        ),
        (550.0, 2800.0, 3300.0)
    );
    assert_close(totals, "p50_ms", 550.0);
    assert_close(totals, "p95_ms", 2800.0);
    assert_close(totals, "p99_ms", 3300.0);
    assert_eq!(totals["latency"]["max_ms"].as_f64(), Some(3400.0));
    #[allow(clippy::cast_precision_loss)]
    let mean = all.iter().sum::<u64>() as f64 / all.len() as f64;
    assert_eq!(totals["latency"]["mean_ms"].as_f64(), Some(mean));

    let series = body["series"].as_array().expect("series");
    let points: Vec<(&str, i64, i64, i64, i64)> = series
        .iter()
        .map(|p| {
            (
                p["at"].as_str().expect("at"),
                int(&p["attempts"]),
                int(&p["dead_letters"]),
                int(&p["circuit_changes"]),
                int(&p["circuit_opened"]),
            )
        })
        .collect();
    assert_eq!(
        points,
        [
            ("2026-01-05T10:00:00Z", 100, 0, 0, 0),
            ("2026-01-05T10:01:00Z", 20, 0, 1, 1),
            ("2026-01-05T10:02:00Z", 0, 2, 2, 1),
            ("2026-01-05T10:03:00Z", 12, 1, 1, 1),
            ("2026-01-05T10:04:00Z", 0, 0, 1, 0),
        ]
    );
    assert_eq!(series[0]["throughput_per_s"].as_f64(), Some(100.0 / 60.0));
    assert_eq!(series[0]["success_rate"].as_f64(), Some(0.9));
    assert_close(&series[0], "p50_ms", 500.0);
    assert_close(&series[0], "p95_ms", 950.0);
    assert_close(&series[0], "p99_ms", 990.0);
    assert!(
        series[2]["latency"]["p50_ms"].is_null(),
        "no attempts, no latency"
    );
    assert!(series[2]["success_rate"].is_null());
    assert_eq!(
        series[3]["latency"]["p99_ms"].as_f64(),
        Some(3.0),
        "exact below 20 ms"
    );

    // One bucket for the whole window gives the same totals.
    let body = stats(&hub, &format!("{window}&bucket=5m")).await;
    let series = body["series"].as_array().expect("series");
    assert_eq!(series.len(), 1);
    assert_eq!(int(&series[0]["attempts"]), 132);
    assert_eq!(series[0]["latency"], body["totals"]["latency"]);

    // Per service.
    let alpha = stats(&hub, &format!("{window}&service=alpha")).await;
    let t = &alpha["totals"];
    assert_eq!(
        (
            int(&t["attempts"]),
            int(&t["delivered"]),
            int(&t["dead_letters"])
        ),
        (120, 104, 2)
    );
    assert_eq!(
        (int(&t["circuit_changes"]), int(&t["circuit_opened"])),
        (4, 2)
    );
    let alpha_all = [alpha_r1.clone(), alpha_r2.clone()].concat();
    for (name, p) in [("p50_ms", 50.0), ("p95_ms", 95.0), ("p99_ms", 99.0)] {
        assert_close(t, name, nearest_rank(&alpha_all, p));
    }
    let beta_stats = stats(&hub, &format!("{window}&service=beta")).await;
    let t = &beta_stats["totals"];
    assert_eq!(
        (
            int(&t["attempts"]),
            int(&t["circuit_open"]),
            int(&t["dead_letters"])
        ),
        (12, 2, 1)
    );
    assert_eq!(t["latency"]["p50_ms"].as_f64(), Some(3.0));
    assert_eq!(t["latency"]["max_ms"].as_f64(), Some(3.0));
    assert_eq!(t["success_rate"].as_f64(), Some(10.0 / 12.0));

    // Per rule.
    let rule = stats(&hub, &format!("{window}&rule_id={r1}")).await;
    let t = &rule["totals"];
    assert_eq!(rule["rule_id"], r1.to_string());
    assert_eq!(
        (
            int(&t["attempts"]),
            int(&t["failed_retryable"]),
            int(&t["dead_letters"])
        ),
        (100, 10, 1)
    );
    assert_close(t, "p50_ms", 500.0);
    assert_close(t, "p95_ms", 950.0);
    assert_close(t, "p99_ms", 990.0);
    assert_eq!(t["latency"]["max_ms"].as_f64(), Some(1000.0));
    let rule2 = stats(&hub, &format!("{window}&rule_id={r2}&service=alpha")).await;
    assert_eq!(int(&rule2["totals"]["attempts"]), 20);
    assert_close(&rule2["totals"], "p50_ms", nearest_rank(&alpha_r2, 50.0));
    let nobody = stats(&hub, &format!("{window}&service=gamma")).await;
    assert_eq!(int(&nobody["totals"]["attempts"]), 0);
    assert!(nobody["totals"]["latency"]["p50_ms"].is_null());

    // Defaults: the last hour, by minute.
    let recent = stats(&hub, "").await;
    assert_eq!(recent["bucket"], "1m");
    let points = recent["series"].as_array().expect("series").len();
    assert!((60..=61).contains(&points), "{points} points");
    let day = stats(
        &hub,
        "from=2026-01-05T00:00:00Z&to=2026-01-06T00:00:00Z&service=alpha",
    )
    .await;
    assert_eq!(day["bucket"], "15m");
    assert_eq!(day["series"].as_array().expect("series").len(), 96);
    assert_eq!(int(&day["totals"]["attempts"]), 120);

    // Buckets of 15 minutes and more are read from the period rollups: every figure is the
    // one the minutes give, overall, per service and per rule.
    let day = "from=2026-01-05T00:00:00Z&to=2026-01-06T00:00:00Z";
    for scope in [
        String::new(),
        "&service=alpha".into(),
        format!("&rule_id={r2}"),
    ] {
        let by_minute = stats(&hub, &format!("{day}{scope}&bucket=1m")).await;
        assert!(int(&by_minute["totals"]["attempts"]) > 0, "{scope}");
        for bucket in ["15m", "1h", "1d"] {
            let coarse = stats(&hub, &format!("{day}{scope}&bucket={bucket}")).await;
            assert_eq!(coarse["totals"], by_minute["totals"], "{bucket}{scope}");
        }
    }
    let quarters = stats(&hub, &format!("{day}&bucket=15m")).await;
    let busy: Vec<(&str, i64)> = quarters["series"]
        .as_array()
        .expect("series")
        .iter()
        .filter(|p| int(&p["attempts"]) > 0)
        .map(|p| (p["at"].as_str().expect("at"), int(&p["attempts"])))
        .collect();
    assert_eq!(busy, [("2026-01-05T10:00:00Z", 132)]);

    // Bad windows and filters are 422 naming the field.
    for (query, field) in [
        ("from=2026-01-05T10:00:00Z&to=2026-01-05T10:00:00Z", "from"),
        ("from=2026-01-05T11:00:00Z&to=2026-01-05T10:00:00Z", "from"),
        ("bucket=7m", "bucket"),
        (
            "from=2025-01-01T00:00:00Z&to=2026-01-01T00:00:00Z&bucket=1m",
            "bucket",
        ),
        ("rule_id=rule-one", "rule_id"),
        ("to=tomorrow", "to"),
    ] {
        let answer = hub.api().get(&format!("/api/v1/stats?{query}")).await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{query}");
        assert_eq!(answer.fields(), [field], "{query}: {}", answer.body);
    }
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_published_twice_is_recorded_and_counted_once() {
    let hub = api_hub().await;
    let started = at("2026-02-01T08:30:10Z");
    let first = outcome("gamma", None, started, 120, OutcomeStatus::FailedRetryable);
    let payload = messages::encode(&first).expect("encodes");
    // Two message ids: JetStream stores both, as after its duplicate window.
    publish_raw(&hub, "gamma", payload.clone(), "copy-1").await;
    publish_raw(&hub, "gamma", payload, "copy-2").await;
    // Unreadable messages are terminated and hold nothing up.
    publish_raw(&hub, "gamma", "not json".into(), "junk").await;
    publish_raw(&hub, "gamma", r#"{"v": 9}"#.into(), "future").await;
    let second = Outcome {
        attempt: 2,
        duration_ms: 80,
        status: OutcomeStatus::Delivered,
        started_at: started + TimeDelta::seconds(1),
        ..first.clone()
    };
    publish(&hub, &second).await;
    wait_for_recorder(&hub).await;

    let items = hub.api().get("/api/v1/deliveries?service=gamma").await.body["items"]
        .as_array()
        .cloned()
        .expect("items");
    let attempts: Vec<i64> = items.iter().map(|i| int(&i["attempt"])).collect();
    assert_eq!(attempts, [2, 1]);
    let body = stats(
        &hub,
        "from=2026-02-01T08:30:00Z&to=2026-02-01T08:31:00Z&service=gamma",
    )
    .await;
    let t = &body["totals"];
    assert_eq!(
        (
            int(&t["attempts"]),
            int(&t["delivered"]),
            int(&t["failed_retryable"])
        ),
        (2, 1, 1)
    );
    assert_eq!(t["latency"]["max_ms"].as_f64(), Some(120.0));

    let metrics = hub.metrics(ServiceName::Api).await;
    for result in ["recorded", "duplicate", "unreadable"] {
        let line = format!("mih_recorder_outcomes_total{{result=\"{result}\"}}");
        assert!(metrics.contains(&line), "{line} missing");
    }
    hub.stop().await;
}

/// The dispatcher sends the outcomes that are ready together as one message (a JSON array):
/// each is recorded and counted once, also when one of them was recorded before, and one the
/// database refuses parks its message without losing the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_batched_in_one_message_are_each_recorded_and_counted_once() {
    let hub = api_hub().await;
    let db = sqlx::PgPool::connect(hub.config.database.url.expose())
        .await
        .expect("database");
    sqlx::query(
        "ALTER TABLE deliveries ADD CONSTRAINT no_poison_batch CHECK (error IS NULL OR error NOT LIKE 'poison%')",
    )
    .execute(&db)
    .await
    .expect("constraint");
    let started = at("2026-02-02T09:00:05Z");
    let batch: Vec<Outcome> = (0..5)
        .map(|i| {
            outcome(
                "batched",
                None,
                started,
                10 * (i + 1),
                OutcomeStatus::Delivered,
            )
        })
        .collect();
    // One of them already came alone (a redelivery of a batch whose ack was lost).
    publish(&hub, &batch[2]).await;
    let encoded: Vec<bytes::Bytes> = batch
        .iter()
        .map(|o| messages::encode(o).expect("encodes"))
        .collect();
    publish_raw(
        &hub,
        "batched",
        messages::join_outcomes(&encoded),
        "batch-1",
    )
    .await;
    // A second batch in which the database refuses one outcome.
    let mut poisoned = outcome("batched", None, started, 70, OutcomeStatus::FailedRetryable);
    poisoned.error = Some("poison".into());
    let fine = outcome("batched", None, started, 60, OutcomeStatus::Delivered);
    let second = [
        messages::encode(&fine).expect("encodes"),
        messages::encode(&poisoned).expect("encodes"),
    ];
    publish_raw(&hub, "batched", messages::join_outcomes(&second), "batch-2").await;

    let parked = mih_testkit::eventually(Duration::from_secs(60), || async {
        let page = hub.api().get("/api/v1/parked?consumer=recorder").await;
        let items = page.body["items"].as_array().cloned().unwrap_or_default();
        if items.len() == 1 {
            Ok(items)
        } else {
            Err(format!("{} parked: {}", items.len(), page.body))
        }
    })
    .await
    .expect("the message with the refused outcome parked");
    assert!(
        parked[0]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("no_poison_batch"),
        "{}",
        parked[0]
    );
    wait_for_recorder(&hub).await;
    let recorded: Vec<(i64,)> = sqlx::query_as(
        "SELECT duration_ms FROM deliveries WHERE service = 'batched' ORDER BY duration_ms",
    )
    .fetch_all(&db)
    .await
    .expect("rows");
    assert_eq!(
        recorded.iter().map(|r| r.0).collect::<Vec<_>>(),
        [10, 20, 30, 40, 50, 60],
        "every outcome of both batches but the refused one, once"
    );
    let body = stats(
        &hub,
        "from=2026-02-02T09:00:00Z&to=2026-02-02T09:01:00Z&service=batched",
    )
    .await;
    assert_eq!(int(&body["totals"]["attempts"]), 6, "{body}");
    assert_eq!(int(&body["totals"]["delivered"]), 6, "{body}");
    hub.stop().await;
}

/// Messages carrying more outcomes than one transaction takes (256) are recorded in several,
/// each outcome once, and every message acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_outcomes_than_one_transaction_takes_are_each_recorded_once() {
    let hub = api_hub().await;
    let started = at("2026-02-03T10:00:05Z");
    for message in 0..5 {
        let encoded: Vec<bytes::Bytes> = (0..70)
            .map(|_| outcome("many", None, started, 3, OutcomeStatus::Delivered))
            .map(|o| messages::encode(&o).expect("encodes"))
            .collect();
        publish_raw(
            &hub,
            "many",
            messages::join_outcomes(&encoded),
            &format!("many-{message}"),
        )
        .await;
    }
    wait_for_recorder(&hub).await;
    let body = mih_testkit::eventually(WAIT, || async {
        let body = stats(
            &hub,
            "from=2026-02-03T10:00:00Z&to=2026-02-03T10:01:00Z&service=many",
        )
        .await;
        if int(&body["totals"]["attempts"]) == 350 {
            Ok(body)
        } else {
            Err(body.to_string())
        }
    })
    .await
    .expect("350 attempts counted");
    assert_eq!(int(&body["totals"]["delivered"]), 350);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_is_idempotent_on_job_and_attempt() {
    let hub = api_hub().await;
    let url = hub.config.database.url.expose().to_owned();
    let db = sqlx::PgPool::connect(&url).await.expect("database");
    let rule = RuleId(uuid::Uuid::now_v7());
    let o = outcome(
        "delta",
        Some(rule),
        at("2026-02-02T09:00:30Z"),
        42,
        OutcomeStatus::Delivered,
    );
    assert!(
        mih_api::delivery_log::record(&db, &o)
            .await
            .expect("recorded")
    );
    assert!(
        !mih_api::delivery_log::record(&db, &o)
            .await
            .expect("no error")
    );
    let (rows, delivered, sum): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), sum(delivered)::bigint, sum(latency_sum_ms)::bigint \
         FROM delivery_rollups WHERE service = 'delta'",
    )
    .fetch_one(&db)
    .await
    .expect("rollups");
    assert_eq!((rows, delivered, sum), (1, 1, 42));
    let deliveries: i64 =
        sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE service = 'delta'")
            .fetch_one(&db)
            .await
            .expect("deliveries");
    assert_eq!(deliveries, 1);

    let open = circuit(CircuitState::Open, 3, "2026-02-02T09:01:00Z");
    assert!(
        mih_api::delivery_log::record_circuit(&db, "delta", 7, &open)
            .await
            .expect("recorded")
    );
    assert!(
        !mih_api::delivery_log::record_circuit(&db, "delta", 7, &open)
            .await
            .expect("no error")
    );
    hub.stop().await;
}

/// A rollup row without its service: minute, rule key, the five counts, latency sum and max,
/// and the histogram.
type RollupRow = (
    DateTime<Utc>,
    String,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    Vec<i32>,
);

async fn rollup_rows(db: &sqlx::PgPool, service: &str) -> Vec<RollupRow> {
    sqlx::query_as(
        "SELECT minute, rule_key, delivered, failed_retryable, failed_permanent, timeout, \
         circuit_open, latency_sum_ms, latency_max_ms, latency_buckets \
         FROM delivery_rollups WHERE service = $1 ORDER BY minute, rule_key",
    )
    .bind(service)
    .fetch_all(db)
    .await
    .expect("rollups")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_record_what_one_at_a_time_records_and_count_each_attempt_once() {
    let hub = api_hub().await;
    let url = hub.config.database.url.expose().to_owned();
    let db = sqlx::PgPool::connect(&url).await.expect("database");
    let rules = [
        Some(RuleId(uuid::Uuid::now_v7())),
        None,
        Some(RuleId(uuid::Uuid::now_v7())),
    ];
    let statuses = [
        OutcomeStatus::Delivered,
        OutcomeStatus::Delivered,
        OutcomeStatus::FailedRetryable,
        OutcomeStatus::Timeout,
        OutcomeStatus::FailedPermanent,
        OutcomeStatus::CircuitOpen,
    ];
    let base = at("2026-03-03T12:00:00Z");
    // 300 attempts over three minutes, three rules, every status, latencies 0 ms to ~20 s.
    let single: Vec<Outcome> = (0..300u64)
        .map(|i| {
            let offset = i64::try_from((i * 7919) % 180_000).expect("small");
            outcome(
                "single",
                rules[usize::try_from(i % 3).expect("small")],
                base + TimeDelta::milliseconds(offset),
                (i * i * 31) % 20_011,
                statuses[usize::try_from(i % 6).expect("small")],
            )
        })
        .collect();
    for o in &single {
        assert!(
            mih_api::delivery_log::record(&db, o)
                .await
                .expect("recorded")
        );
    }
    let batched: Vec<Outcome> = single
        .iter()
        .map(|o| Outcome {
            job_id: JobId::new_v7(),
            service: ServiceSlug::parse("batched").expect("slug"),
            ..o.clone()
        })
        .collect();
    // First 128, then the rest with ten of the first again and one of its own twice: as after
    // a redelivery, and as two copies of one outcome pulled together.
    let first = mih_api::delivery_log::record_batch(&db, &batched[..128])
        .await
        .expect("first batch");
    assert_eq!(first, vec![true; 128]);
    let mut second: Vec<Outcome> = batched[118..].to_vec();
    second.push(batched[200].clone());
    let fresh = mih_api::delivery_log::record_batch(&db, &second)
        .await
        .expect("second batch");
    let expected: Vec<bool> = (0..second.len()).map(|i| (10..182).contains(&i)).collect();
    assert_eq!(
        fresh, expected,
        "only first copies of unseen attempts are new"
    );
    // Everything again: nothing is new, nothing changes.
    let again = mih_api::delivery_log::record_batch(&db, &batched)
        .await
        .expect("third batch");
    assert!(again.iter().all(|new| !new));

    for service in ["single", "batched"] {
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE service = $1")
            .bind(service)
            .fetch_one(&db)
            .await
            .expect("deliveries");
        assert_eq!(rows, 300, "{service}");
    }
    let one_by_one = rollup_rows(&db, "single").await;
    assert_eq!(one_by_one.len(), 9, "three minutes × three rules");
    assert_eq!(rollup_rows(&db, "batched").await, one_by_one);

    // The period rollups: the same whichever way outcomes were recorded, and the minutes summed.
    let periods = period_rows(&db, "single").await;
    assert_eq!(
        periods.len(),
        6,
        "a quarter-hour and a day per rule: {periods:?}"
    );
    assert_eq!(period_rows(&db, "batched").await, periods);
    for width in [900, 86_400] {
        assert_eq!(
            period_totals(&db, "single", width).await,
            minute_totals(&db, "single").await,
            "width {width}"
        );
    }
    // Migration 0010 derives them from the minutes when a hub is upgraded: the same rows.
    sqlx::query("TRUNCATE delivery_period_rollups, delivery_period_latency")
        .execute(&db)
        .await
        .expect("emptied");
    sqlx::raw_sql(include_str!(
        "../../migrations/0010_delivery_period_rollups_from_minutes.sql"
    ))
    .execute(&db)
    .await
    .expect("derived from the minutes");
    assert_eq!(period_rows(&db, "single").await, periods);
    assert_eq!(period_rows(&db, "batched").await, periods);
    hub.stop().await;
}

/// A service's period rollups: width, start, rule key, the five counts, latency sum and max,
/// and the sparse histogram as (bucket, samples) pairs.
type PeriodRow = (i32, DateTime<Utc>, String, Vec<i64>, Vec<(i16, i64)>);

async fn period_rows(db: &sqlx::PgPool, service: &str) -> Vec<PeriodRow> {
    let rows: Vec<(i32, DateTime<Utc>, String, Vec<i64>)> = sqlx::query_as(
        "SELECT width_s, at, rule_key, ARRAY[delivered, failed_retryable, failed_permanent, \
         timeout, circuit_open, latency_sum_ms, latency_max_ms] \
         FROM delivery_period_rollups WHERE service = $1 ORDER BY width_s, at, rule_key",
    )
    .bind(service)
    .fetch_all(db)
    .await
    .expect("period rollups");
    let mut out = Vec::new();
    for (width, at, rule_key, counts) in rows {
        let latency: Vec<(i16, i64)> = sqlx::query_as(
            "SELECT bucket, samples FROM delivery_period_latency \
             WHERE service = $1 AND width_s = $2 AND at = $3 AND rule_key = $4 ORDER BY bucket",
        )
        .bind(service)
        .bind(width)
        .bind(at)
        .bind(&rule_key)
        .fetch_all(db)
        .await
        .expect("period latency");
        out.push((width, at, rule_key, counts, latency));
    }
    out
}

/// A service's delivered attempts, timed samples and latency sum over every minute rollup.
async fn minute_totals(db: &sqlx::PgPool, service: &str) -> (i64, i64, i64) {
    sqlx::query_as(
        "SELECT sum(delivered)::bigint, \
         (SELECT sum(c)::bigint FROM delivery_rollups r2, unnest(r2.latency_buckets) AS c \
           WHERE r2.service = $1), sum(latency_sum_ms)::bigint \
         FROM delivery_rollups WHERE service = $1",
    )
    .bind(service)
    .fetch_one(db)
    .await
    .expect("minute totals")
}

/// The same over the period rollups of one width.
async fn period_totals(db: &sqlx::PgPool, service: &str, width: i32) -> (i64, i64, i64) {
    sqlx::query_as(
        "SELECT sum(delivered)::bigint, \
         (SELECT sum(samples)::bigint FROM delivery_period_latency \
           WHERE service = $1 AND width_s = $2), sum(latency_sum_ms)::bigint \
         FROM delivery_period_rollups WHERE service = $1 AND width_s = $2",
    )
    .bind(service)
    .bind(width)
    .fetch_one(db)
    .await
    .expect("period totals")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_the_database_refuses_is_set_aside_alone() {
    let hub = api_hub().await;
    let url = hub.config.database.url.expose().to_owned();
    let db = sqlx::PgPool::connect(&url).await.expect("database");
    let started = at("2026-03-04T07:00:00Z");
    let good: Vec<Outcome> = (0..20)
        .map(|i| outcome("epsilon", None, started, i, OutcomeStatus::Delivered))
        .collect();
    // Readable, but before PostgreSQL's first representable time (4713 BC).
    let refused = outcome(
        "epsilon",
        None,
        chrono::NaiveDate::from_ymd_opt(-10_000, 1, 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .expect("a date chrono can hold")
            .and_utc(),
        5,
        OutcomeStatus::Delivered,
    );
    let mut mixed = good[..2].to_vec();
    mixed.push(refused.clone());
    let error = mih_api::delivery_log::record_batch(&db, &mixed)
        .await
        .expect_err("a time PostgreSQL cannot store");
    let code = error
        .as_database_error()
        .and_then(|e| e.code())
        .map(|c| c.into_owned());
    assert!(
        code.as_deref().is_some_and(|c| c.starts_with("22")),
        "{error}"
    );
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE service = 'epsilon'")
        .fetch_one(&db)
        .await
        .expect("deliveries");
    assert_eq!(rows, 0, "a refused batch leaves nothing behind");

    // Through RESULTS: whatever batches the recorder pulls, the twenty good ones are recorded
    // and only the refused one is set aside (parked, after the poison policy's tries).
    for (i, o) in good.iter().enumerate() {
        publish(&hub, o).await;
        if i == 9 {
            publish(&hub, &refused).await;
        }
    }
    let rows: i64 = mih_testkit::eventually(Duration::from_secs(30), || async {
        let rows: i64 =
            sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE service = 'epsilon'")
                .fetch_one(&db)
                .await
                .map_err(|e| e.to_string())?;
        if rows == 20 {
            Ok(rows)
        } else {
            Err(format!("{rows} recorded"))
        }
    })
    .await
    .expect("the twenty good outcomes recorded while the refused one is retried");
    assert_eq!(rows, 20);
    mih_testkit::eventually(Duration::from_secs(60), || async {
        let metrics = hub.metrics(ServiceName::Api).await;
        if metrics.contains("mih_recorder_outcomes_total{result=\"parked\"} 1") {
            Ok(())
        } else {
            Err(metrics)
        }
    })
    .await
    .expect("the refused outcome parked");
    wait_for_recorder(&hub).await;
    hub.stop().await;
}

/// The recorder's poison policy: outcomes the database refuses are parked after a few tries
/// and the others are recorded; nothing waits behind them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_the_database_refuses_are_parked_and_the_rest_recorded() {
    let hub = api_hub().await;
    let db = sqlx::PgPool::connect(hub.config.database.url.expose())
        .await
        .expect("database");
    sqlx::query(
        "ALTER TABLE deliveries ADD CONSTRAINT no_poison CHECK (error IS NULL OR error NOT LIKE 'poison%')",
    )
    .execute(&db)
    .await
    .expect("constraint");
    let now = Utc::now();
    for i in 0..20 {
        let mut bad = outcome("omega", None, now, 5, OutcomeStatus::FailedRetryable);
        bad.error = Some(format!("poison {i}"));
        publish(&hub, &bad).await;
        publish(
            &hub,
            &outcome("omega", None, now, 5, OutcomeStatus::Delivered),
        )
        .await;
    }
    let parked = mih_testkit::eventually(Duration::from_secs(60), || async {
        let page = hub
            .api()
            .get("/api/v1/parked?consumer=recorder&limit=100")
            .await;
        let items = page.body["items"].as_array().cloned().unwrap_or_default();
        if items.len() == 20 {
            Ok(items)
        } else {
            Err(format!("{} parked: {}", items.len(), page.body))
        }
    })
    .await
    .expect("the refused outcomes parked");
    assert!(parked.iter().all(|p| {
        p["error"]
            .as_str()
            .unwrap_or_default()
            .contains("no_poison")
    }));
    let recorded: i64 =
        sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE service = 'omega'")
            .fetch_one(&db)
            .await
            .expect("count");
    assert_eq!(recorded, 20, "every other outcome recorded");
    hub.stop().await;
}

/// Lone outcomes (one statement each) and batches (one transaction each) recorded at once on
/// the same rollup rows: both lock rows in one order, so neither waits on the other in a cycle
/// (PostgreSQL would abort one with a deadlock, 40P01).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lone_outcomes_and_batches_recorded_at_once_never_deadlock() {
    let hub = api_hub().await;
    let url = hub.config.database.url.expose().to_owned();
    let db = sqlx::PgPool::connect(&url).await.expect("database");
    let rules = [
        Some(RuleId(uuid::Uuid::now_v7())),
        Some(RuleId(uuid::Uuid::now_v7())),
    ];
    let base = at("2026-04-04T08:00:00Z");
    // Two minutes and two rules: four minute rows, sharing their 15-minute and day rows.
    let make = move |i: u64| {
        outcome(
            "race",
            rules[usize::try_from(i % 2).expect("small")],
            base + TimeDelta::seconds(i64::try_from(i % 120).expect("small")),
            i % 700,
            OutcomeStatus::Delivered,
        )
    };
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..4u64 {
        let lone = db.clone();
        tasks.spawn(async move {
            for i in 0..150 {
                mih_api::delivery_log::record(&lone, &make(worker * 1000 + i))
                    .await
                    .map_err(|e| format!("lone outcome: {e}"))?;
            }
            Ok::<u64, String>(150)
        });
        let db = db.clone();
        tasks.spawn(async move {
            for i in 0..50 {
                let batch: Vec<Outcome> = (0..3).map(|k| make(worker * 7 + i * 3 + k)).collect();
                mih_api::delivery_log::record_batch(&db, &batch)
                    .await
                    .map_err(|e| format!("batch: {e}"))?;
            }
            Ok(150)
        });
    }
    let mut recorded = 0;
    while let Some(done) = tasks.join_next().await {
        recorded += done.expect("task").expect("recorded without a deadlock");
    }
    let (delivered,): (i64,) = sqlx::query_as(
        "SELECT sum(delivered)::bigint FROM delivery_rollups WHERE service = 'race'",
    )
    .fetch_one(&db)
    .await
    .expect("rollups");
    assert_eq!(delivered, i64::try_from(recorded).expect("small"));
    let (period,): (i64,) = sqlx::query_as(
        "SELECT sum(delivered)::bigint FROM delivery_period_rollups \
         WHERE service = 'race' AND width_s = 900",
    )
    .fetch_one(&db)
    .await
    .expect("period rollups");
    assert_eq!(period, delivered);
    hub.stop().await;
}
