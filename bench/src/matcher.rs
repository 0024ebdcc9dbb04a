//! Events/s through the matcher with 10, 100 and 1,000 rules.
//!
//! The events are stored in `<NS>_EVENTS` first; then a matcher process starts and the clock
//! runs from its first acknowledged event to its last, so start-up is not counted. Every event
//! matches exactly one rule (an exact event name plus a `courseid % n == r` condition), so
//! each scenario publishes the same number of jobs and only the number of rules changes.

use std::collections::BTreeMap;
use std::future::IntoFuture;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use async_nats::jetstream::consumer::PullConsumer;
use serde_json::{Map, Value, json};

use mih_shared::messages::{self, Event, EventId, Version};
use mih_shared::moodle::EventName;
use mih_shared::names::{MATCHER_CONSUMER, SourceId};
use mih_testkit::ADMIN_TOKEN;
use mih_testkit::fixtures;

use crate::hub::BenchHub;
use crate::process;
use crate::report::Row;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Events per scenario.
    #[arg(long, default_value_t = 20_000)]
    events: usize,
    /// Rule counts to measure, one scenario each.
    #[arg(long, value_delimiter = ',', default_value = "10,100,1000")]
    rules: Vec<usize>,
    /// The matcher's `matcher.max_in_flight`.
    #[arg(long, default_value_t = 256)]
    max_in_flight: usize,
}

const BODY: &str = r#"{"user": {{userid}}, "course": {{courseid}}, "event": "{{eventname}}", "rule": "{{rule.name}}", "received": "{{event.received_at}}"}"#;

pub async fn run(args: &Args) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for &rules in &args.rules {
        rows.push(scenario(rules, args.events, args.max_in_flight).await?);
    }
    Ok(rows)
}

/// The fixtures' distinct event names, and one fixture of each.
fn templates() -> BTreeMap<String, Value> {
    let mut by_name = BTreeMap::new();
    for event in fixtures::moodle_events() {
        if let Some(name) = event["eventname"].as_str() {
            by_name.entry(name.to_owned()).or_insert(event);
        }
    }
    by_name
}

async fn scenario(rules: usize, total: usize, max_in_flight: usize) -> anyhow::Result<Row> {
    let name = format!("matcher, {rules} rules");
    let hub = BenchHub::start(
        &[],
        &[("MIH_MATCHER_MAX_IN_FLIGHT", max_in_flight.to_string())],
    )
    .await?;
    let events = templates();
    let names: Vec<&String> = events.keys().take(rules.max(1)).collect();
    create_rules(&hub, rules, &names).await?;
    store_events(&hub, total, &names, &events).await?;

    let mut matcher = hub.spawn(&["matcher"])?;
    let pid = matcher.id().context("matcher is not running")?;
    let js = hub.jetstream().await?;
    let names_of = hub.names()?;
    let stream = js.get_stream(names_of.events_stream()).await?;
    let total_u64 = total as u64;
    let poll = Duration::from_millis(20);
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut first: Option<(Instant, u64, Duration)> = None;
    let finished = loop {
        if Instant::now() > deadline {
            bail!("{name}: the matcher did not finish within 10 minutes");
        }
        if let Ok(Some(status)) = matcher.try_wait() {
            bail!("{name}: the matcher exited: {status}");
        }
        let consumer: Result<PullConsumer, _> = stream.get_consumer(MATCHER_CONSUMER).await;
        let acked = match consumer {
            Ok(mut consumer) => consumer
                .info()
                .await
                .map(|i| i.ack_floor.stream_sequence)
                .unwrap_or(0),
            Err(_) => 0,
        };
        let now = Instant::now();
        if acked > 0 && first.is_none() {
            first = Some((now, acked, process::cpu_time(pid).unwrap_or_default()));
        }
        if acked >= total_u64 {
            break now;
        }
        tokio::time::sleep(poll).await;
    };
    let (started, acked_at_start, cpu_at_start) = first.context("no event was acknowledged")?;
    let cpu = process::cpu_time(pid)
        .unwrap_or_default()
        .saturating_sub(cpu_at_start);
    let (rss, peak) = process::memory_mib(pid).unwrap_or_default();
    let elapsed = finished.duration_since(started).max(poll);
    let measured = total_u64 - acked_at_start;
    let jobs = js
        .get_stream(names_of.jobs_stream())
        .await?
        .get_info()
        .await?
        .state
        .messages;
    matcher.kill().await.ok();
    if jobs != total_u64 {
        let why = explain_first_rule(&hub)
            .await
            .unwrap_or_else(|e| e.to_string());
        bail!(
            "{name}: {jobs} jobs published for {total} events (each should match one rule); \
             rule 0 on the latest event: {why}"
        );
    }
    #[allow(clippy::cast_precision_loss)]
    Ok(Row {
        scenario: name,
        events: total,
        concurrency: max_in_flight,
        rules: Some(rules),
        jobs: usize::try_from(jobs).ok(),
        seconds: elapsed.as_secs_f64(),
        events_per_sec: measured as f64 / elapsed.as_secs_f64(),
        mih_cpu_cores: cpu.as_secs_f64() / elapsed.as_secs_f64(),
        mih_rss_mib: rss,
        mih_peak_rss_mib: peak,
        ..Row::default()
    })
}

/// Rule `i` takes event name `i % names`; the rules sharing a name split its events by
/// `courseid % n`, so each event matches exactly one rule.
async fn create_rules(hub: &BenchHub, rules: usize, names: &[&String]) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let post = |path: &str, body: Value| {
        http.post(hub.api_url(path))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
    };
    let created = post(
        "/api/v1/services",
        json!({"name": "sink", "transport": {"kind": "rest", "base_url": "http://127.0.0.1:9/"}}),
    )
    .await?;
    if !created.status().is_success() {
        bail!("creating the service: {}", created.text().await?);
    }
    let per_name = |k: usize| (rules - k).div_ceil(names.len());
    for i in 0..rules {
        let k = i % names.len();
        let body = json!({
            "name": format!("rule {i}"),
            "events": [names[k]],
            "service": "sink",
            "condition": format!("courseid % {} == {}", per_name(k), i / names.len()),
            "target": {"kind": "rest", "method": "POST", "path": "/courses/{{courseid}}"},
            "body": BODY,
        });
        let answer = post("/api/v1/rules", body).await?;
        if !answer.status().is_success() {
            bail!("creating rule {i}: {}", answer.text().await?);
        }
    }
    Ok(())
}

/// The preview of the first rule against the latest stored event: why it did not match.
async fn explain_first_rule(hub: &BenchHub) -> anyhow::Result<String> {
    let http = reqwest::Client::new();
    let rules: Value = http
        .get(hub.api_url("/api/v1/rules?limit=1"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await?
        .json()
        .await?;
    let preview: Value = http
        .post(hub.api_url("/api/v1/rules/preview"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"rule_id": rules["items"][0]["id"], "recent": {"source": "moodle", "last": 40}}))
        .send()
        .await?
        .json()
        .await?;
    Ok(preview.to_string())
}

/// Stores `total` distinct events of the given names in EVENTS, as ingest would.
async fn store_events(
    hub: &BenchHub,
    total: usize,
    names: &[&String],
    templates: &BTreeMap<String, Value>,
) -> anyhow::Result<()> {
    let js = hub.jetstream().await?;
    let subjects = hub.names()?;
    let source: SourceId = "moodle".parse()?;
    let mut acks = Vec::with_capacity(1000);
    for i in 0..total {
        let name = names[i % names.len()];
        let Some(Value::Object(template)) = templates.get(name.as_str()) else {
            bail!("no fixture for {name}");
        };
        let mut data: Map<String, Value> = template.clone();
        data.insert("courseid".into(), json!(1000 + i / names.len()));
        data.insert("timecreated".into(), json!(1_772_006_400 + i as i64));
        let event = Event {
            v: Version,
            id: EventId::new_v7(),
            source: source.clone(),
            received_at: chrono::Utc::now(),
            dedup_key: format!("bench-{i}"),
            data: data.into(),
        };
        let subject = subjects.event_subject(&source, &EventName::parse(name)?);
        acks.push(js.publish(subject, messages::encode(&event)?).await?);
        if acks.len() == 1000 {
            for ack in futures::future::join_all(acks.drain(..).map(IntoFuture::into_future)).await
            {
                ack?;
            }
        }
    }
    for ack in futures::future::join_all(acks.into_iter().map(IntoFuture::into_future)).await {
        ack?;
    }
    Ok(())
}
