//! Accepted events/s at ingest for signed requests: batched, and one event per request.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use mih_testkit::fixtures;
use mih_testkit::sign::{TEST_SECRET, signed_headers};

use crate::hub::BenchHub;
use crate::process;
use crate::report::{Row, quantile};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Events per scenario.
    #[arg(long, default_value_t = 10_000)]
    events: usize,
    /// Events per request in the batched scenario.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Requests in flight at once, batched scenario.
    #[arg(long, default_value_t = 4)]
    batch_concurrency: usize,
    /// Requests in flight at once, single-event scenario.
    #[arg(long, default_value_t = 32)]
    single_concurrency: usize,
}

pub async fn run(args: &Args) -> anyhow::Result<Vec<Row>> {
    let batched = scenario(
        &format!("ingest batched ({}/request)", args.batch),
        args.events,
        args.batch,
        args.batch_concurrency,
    )
    .await?;
    let single = scenario(
        "ingest single (1/request)",
        args.events,
        1,
        args.single_concurrency,
    )
    .await?;
    Ok(vec![batched, single])
}

/// Distinct events of realistic shape and size: the fixtures, each copy made unique.
fn events(count: usize) -> Vec<Value> {
    let fixtures = fixtures::moodle_events();
    (0..count)
        .map(|i| {
            let mut event = fixtures[i % fixtures.len()].clone();
            event["timecreated"] = json!(1_772_006_400 + i as i64);
            event["other"] = json!({"bench": i, "detail": event["other"].clone()});
            event
        })
        .collect()
}

async fn scenario(
    name: &str,
    total: usize,
    per_request: usize,
    concurrency: usize,
) -> anyhow::Result<Row> {
    let hub = BenchHub::start(&["ingest"], &[]).await?;
    let pid = hub.pid()?;
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new(
        events(total)
            .chunks(per_request)
            .map(|chunk| {
                let value = if per_request == 1 {
                    chunk[0].clone()
                } else {
                    Value::from(chunk.to_vec())
                };
                serde_json::to_vec(&value).unwrap_or_default()
            })
            .collect(),
    );
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let url = hub.ingest_url();
    let next = Arc::new(AtomicUsize::new(0));

    let cpu_before = process::cpu_time(pid).unwrap_or_default();
    let started = Instant::now();
    let workers = (0..concurrency).map(|_| {
        let (bodies, http, url, next) = (
            Arc::clone(&bodies),
            http.clone(),
            url.clone(),
            Arc::clone(&next),
        );
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(i) else { break };
                let headers = signed_headers(
                    TEST_SECRET,
                    "moodle",
                    &format!("bench_{i}"),
                    chrono::Utc::now().timestamp(),
                    body,
                );
                let mut request = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone());
                for (name, value) in headers {
                    request = request.header(name, value);
                }
                let sent = Instant::now();
                let response = request.send().await?;
                let status = response.status();
                let answer: Value = response.json().await?;
                latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                if status.as_u16() != 202 {
                    bail!("request {i} answered {status}: {answer}");
                }
            }
            Ok::<_, anyhow::Error>(latencies)
        })
    });
    let mut latencies = Vec::new();
    for worker in futures::future::join_all(workers).await {
        latencies.extend(worker.context("worker panicked")??);
    }
    let elapsed = started.elapsed();
    let cpu = process::cpu_time(pid)
        .unwrap_or_default()
        .saturating_sub(cpu_before);
    let (rss, peak) = process::memory_mib(pid).unwrap_or_default();

    let stored = hub.stored_events().await?;
    if stored != total as u64 {
        bail!("{name}: {stored} events stored, {total} sent");
    }
    latencies.sort_by(f64::total_cmp);
    Ok(Row {
        scenario: name.to_owned(),
        events: total,
        requests: Some(bodies.len()),
        concurrency,
        seconds: elapsed.as_secs_f64(),
        events_per_sec: total as f64 / elapsed.as_secs_f64(),
        request_p50_ms: Some(quantile(&latencies, 0.50)),
        request_p99_ms: Some(quantile(&latencies, 0.99)),
        request_max_ms: latencies.last().copied(),
        mih_cpu_cores: cpu.as_secs_f64() / elapsed.as_secs_f64().max(f64::EPSILON),
        mih_rss_mib: rss,
        mih_peak_rss_mib: peak,
        ..Row::default()
    })
}
