//! Deliveries/s from JOBS to a local HTTP sink (1 and 10 services), AMQP publishes/s with
//! publisher confirms to the local RabbitMQ, and the time from a target going down to its
//! circuit opening.
//!
//! The jobs are stored in `<NS>_JOBS` before any service exists; then the services are
//! registered and a dispatcher starts as its own process. The clock runs from the first
//! delivery to the last, so start-up is not counted.

use std::future::IntoFuture;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::Utc;
use futures::StreamExt;
use serde_json::{Value, json};

use mih_shared::circuit::{Circuit, CircuitState};
use mih_shared::messages::{
    self, AmqpRequest, HttpMethod, HttpRequest, Job, JobId, Origin, Request, Version,
};
use mih_shared::names::ServiceSlug;
use mih_testkit::{ADMIN_TOKEN, HttpSink, Reply};

use crate::hub::BenchHub;
use crate::process;
use crate::report::{Row, quantile};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Jobs per delivery scenario.
    #[arg(long, default_value_t = 20_000)]
    jobs: usize,
    /// Service counts to measure HTTP deliveries with, one scenario each.
    #[arg(long, value_delimiter = ',', default_value = "1,10")]
    services: Vec<usize>,
    /// Each service's `concurrency`.
    #[arg(long, default_value_t = 32)]
    concurrency: u32,
    /// Skip the AMQP scenario (needs RabbitMQ on 127.0.0.1:5672, guest/guest).
    #[arg(long)]
    no_amqp: bool,
    /// Trials of the breaker scenario.
    #[arg(long, default_value_t = 5)]
    breaker_trials: usize,
    /// The rate limit (per second) of the rate-limit scenarios.
    #[arg(long, default_value_t = 500)]
    rate_limit: u32,
    /// Dispatcher processes to share the rate limit, one scenario each (10 s of jobs).
    #[arg(long, value_delimiter = ',', default_value = "1,3")]
    rate_replicas: Vec<usize>,
    /// Skip the rate-limit scenarios.
    #[arg(long)]
    no_rate: bool,
}

const BODY: &str =
    r#"{"user": 27, "course": 12, "event": "\\core\\event\\user_enrolment_created"}"#;

pub async fn run(args: &Args) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for &services in &args.services {
        rows.push(http(services, args.jobs, args.concurrency).await?);
    }
    if !args.no_amqp {
        rows.push(amqp(args.jobs, args.concurrency).await?);
    }
    rows.push(breaker(args.breaker_trials).await?);
    if !args.no_rate {
        for &replicas in &args.rate_replicas {
            rows.push(rate_limited(args.rate_limit, replicas, args.concurrency).await?);
        }
    }
    Ok(rows)
}

async fn hub() -> anyhow::Result<BenchHub> {
    BenchHub::start(
        &[],
        &[
            ("MIH_DISPATCHER_LISTEN", "127.0.0.1:0".to_owned()),
            (
                "MIH_DISPATCHER_ALLOW_NETWORKS",
                r#"["127.0.0.0/8"]"#.to_owned(),
            ),
        ],
    )
    .await
}

async fn post(hub: &BenchHub, path: &str, body: Value) -> anyhow::Result<Value> {
    let answer = reqwest::Client::new()
        .post(hub.api_url(path))
        .bearer_auth(ADMIN_TOKEN)
        .json(&body)
        .send()
        .await?;
    let status = answer.status();
    let body: Value = answer.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("POST {path}: {status} {body}");
    }
    Ok(body)
}

fn job(service: &str, request: Request) -> anyhow::Result<Job> {
    Ok(Job {
        v: Version,
        id: JobId::new_v7(),
        event_id: None,
        rule_id: None,
        service: ServiceSlug::parse(service).map_err(|e| anyhow::anyhow!("{e}"))?,
        request,
        origin: Origin::Rule,
        created_at: Utc::now(),
        replay_of: None,
        ordering_key: None,
        hold_key: false,
        source: None,
        eventname: None,
    })
}

/// Stores `jobs` in JOBS, awaiting every ack (pipelined).
async fn store(hub: &BenchHub, jobs: Vec<Job>) -> anyhow::Result<()> {
    let js = hub.jetstream().await?;
    let names = hub.names()?;
    // async-nats bounds the acks a context has pending; awaiting them in chunks keeps the
    // publisher from waiting on itself.
    let mut acks = Vec::with_capacity(1000);
    for job in jobs {
        let payload = messages::encode(&job)?;
        acks.push(js.publish(names.job_subject(&job.service), payload).await?);
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

/// Runs a dispatcher until `done` says every job is through; returns the row's measurements.
async fn measure<F, Fut>(
    hub: &BenchHub,
    total: usize,
    mut done: F,
) -> anyhow::Result<(Duration, f64, f64)>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<usize>>,
{
    let mut dispatcher = hub.spawn(&["dispatcher"])?;
    let pid = dispatcher.id().context("dispatcher is not running")?;
    let poll = Duration::from_millis(20);
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut first: Option<(Instant, Duration)> = None;
    let finished = loop {
        if Instant::now() > deadline {
            bail!("the dispatcher did not finish within 10 minutes");
        }
        if let Ok(Some(status)) = dispatcher.try_wait() {
            bail!("the dispatcher exited: {status}");
        }
        let through = done().await?;
        let now = Instant::now();
        if through > 0 && first.is_none() {
            first = Some((now, process::cpu_time(pid).unwrap_or_default()));
        }
        if through >= total {
            break now;
        }
        tokio::time::sleep(poll).await;
    };
    let (started, cpu_at_start) = first.context("nothing was delivered")?;
    let cpu = process::cpu_time(pid)
        .unwrap_or_default()
        .saturating_sub(cpu_at_start);
    let (_, peak) = process::memory_mib(pid).unwrap_or_default();
    let elapsed = finished.duration_since(started).max(poll);
    dispatcher.kill().await.ok();
    Ok((elapsed, cpu.as_secs_f64() / elapsed.as_secs_f64(), peak))
}

async fn http(services: usize, total: usize, concurrency: u32) -> anyhow::Result<Row> {
    let name = format!("HTTP, {services} service(s)");
    let hub = hub().await?;
    let sink = HttpSink::start().await?;
    let jobs = (0..total)
        .map(|i| job(&format!("sink-{}", i % services), http_request(i)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    store(&hub, jobs).await?;
    for s in 0..services {
        post(
            &hub,
            "/api/v1/services",
            json!({"name": format!("sink-{s}"), "concurrency": concurrency,
                   "transport": {"kind": "rest", "base_url": sink.url()}}),
        )
        .await?;
    }
    let (elapsed, cpu, peak) = measure(&hub, total, || {
        let count = sink.count();
        async move { Ok(count) }
    })
    .await?;
    let delivered = sink.count();
    let distinct: std::collections::HashSet<String> = sink
        .requests()
        .iter()
        .filter_map(|r| r.header("idempotency-key").map(str::to_owned))
        .collect();
    if distinct.len() != total {
        bail!(
            "{name}: {} distinct jobs of {total} arrived ({delivered} requests)",
            distinct.len()
        );
    }
    delivery_row(name, total, concurrency, elapsed, cpu, peak)
}

/// Ten seconds of jobs for one service with a rate limit, delivered by `replicas` dispatcher
/// processes together: the rate the sink saw, and its busiest second.
async fn rate_limited(rate: u32, replicas: usize, concurrency: u32) -> anyhow::Result<Row> {
    let total = usize::try_from(rate)? * 10;
    let hub = hub().await?;
    let sink = HttpSink::start().await?;
    let jobs = (0..total)
        .map(|i| job("limited", http_request(i)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    store(&hub, jobs).await?;
    post(
        &hub,
        "/api/v1/services",
        json!({"name": "limited", "concurrency": concurrency, "rate_limit_per_sec": rate,
               "transport": {"kind": "rest", "base_url": sink.url()}}),
    )
    .await?;
    let mut dispatchers = (0..replicas)
        .map(|_| hub.spawn(&["dispatcher"]))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let pids: Vec<u32> = dispatchers
        .iter()
        .filter_map(tokio::process::Child::id)
        .collect();
    let cpu_before = process::cpu_time_of(&pids);
    let deadline = Instant::now() + Duration::from_secs(600);
    while sink.count() < total {
        if Instant::now() > deadline {
            bail!("{replicas} dispatcher(s) did not deliver {total} jobs within 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cpu = process::cpu_time_of(&pids).saturating_sub(cpu_before);
    let peak: f64 = pids
        .iter()
        .filter_map(|pid| process::memory_mib(*pid))
        .map(|(_, peak)| peak)
        .sum();
    for dispatcher in &mut dispatchers {
        dispatcher.kill().await.ok();
    }
    let mut arrivals: Vec<Instant> = sink.requests().iter().map(|r| r.received_at).collect();
    arrivals.sort();
    let (Some(first), Some(last)) = (arrivals.first(), arrivals.last()) else {
        bail!("nothing was delivered");
    };
    let elapsed = last.duration_since(*first).max(Duration::from_millis(1));
    let mut busiest = 0;
    let mut start = 0;
    for (end, at) in arrivals.iter().enumerate() {
        while at.duration_since(arrivals[start]) >= Duration::from_secs(1) {
            start += 1;
        }
        busiest = busiest.max(end - start + 1);
    }
    let name =
        format!("HTTP, rate limit {rate}/s, {replicas} dispatcher(s): busiest second {busiest}");
    delivery_row(
        name,
        total,
        concurrency,
        elapsed,
        cpu.as_secs_f64() / elapsed.as_secs_f64(),
        peak,
    )
}

fn http_request(i: usize) -> Request {
    Request::Http(HttpRequest {
        method: HttpMethod::Post,
        path: format!("/users/{i}"),
        query: Vec::new(),
        headers: Vec::new(),
        body: Some(BODY.to_owned()),
        content_type: Some("application/json".to_owned()),
    })
}

async fn amqp(total: usize, concurrency: u32) -> anyhow::Result<Row> {
    let name = "AMQP with confirms, 1 service".to_owned();
    let hub = hub().await?;
    let queue = format!("mih-bench-{}", hub.namespace);
    let jobs = (0..total)
        .map(|_| {
            job(
                "rabbit",
                Request::Amqp(AmqpRequest {
                    exchange: None,
                    routing_key: queue.clone(),
                    headers: Vec::new(),
                    body: BODY.to_owned(),
                    content_type: "application/json".to_owned(),
                }),
            )
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    store(&hub, jobs).await?;
    post(
        &hub,
        "/api/v1/services",
        json!({"name": "rabbit", "concurrency": concurrency,
               "transport": {"kind": "amqp", "host": "127.0.0.1", "port": 5672, "vhost": "/",
                             "username": "guest", "password": "guest", "tls": false,
                             "exchange": "", "routing_key": queue, "queue_declare": queue}}),
    )
    .await?;
    let js = hub.jetstream().await?;
    let names = hub.names()?;
    let (jobs, consumer) = (
        names.jobs_stream(),
        names.dispatch_consumer(&"rabbit".parse()?),
    );
    // Done when the service's consumer acknowledged every job (each after its outcome was
    // stored); RESULTS messages no longer count outcomes, since they carry batches.
    let (elapsed, cpu, peak) = measure(&hub, total, || {
        let (js, jobs, consumer) = (js.clone(), jobs.clone(), consumer.clone());
        async move {
            let Ok(mut consumer) = js
                .get_consumer_from_stream::<async_nats::jetstream::consumer::pull::Config, _, _>(
                    &consumer, &jobs,
                )
                .await
            else {
                return Ok(0);
            };
            Ok(usize::try_from(
                consumer.info().await?.ack_floor.stream_sequence,
            )?)
        }
    })
    .await?;
    let in_queue = purge(&queue).await?;
    if in_queue < total {
        bail!("{name}: {in_queue} messages of {total} in queue {queue}");
    }
    delivery_row(name, total, concurrency, elapsed, cpu, peak)
}

fn delivery_row(
    scenario: String,
    total: usize,
    concurrency: u32,
    elapsed: Duration,
    cpu: f64,
    peak: f64,
) -> anyhow::Result<Row> {
    #[allow(clippy::cast_precision_loss)]
    Ok(Row {
        scenario,
        events: total,
        concurrency: usize::try_from(concurrency)?,
        jobs: Some(total),
        seconds: elapsed.as_secs_f64(),
        events_per_sec: total as f64 / elapsed.as_secs_f64(),
        mih_cpu_cores: cpu,
        mih_peak_rss_mib: peak,
        ..Row::default()
    })
}

/// Deletes the benchmark's queue, returning how many messages it held.
async fn purge(queue: &str) -> anyhow::Result<usize> {
    let connection = lapin::Connection::connect(
        "amqp://guest:guest@127.0.0.1:5672/%2f",
        lapin::ConnectionProperties::default(),
    )
    .await?;
    let channel = connection.create_channel().await?;
    let held = channel
        .queue_delete(queue.into(), lapin::options::QueueDeleteOptions::default())
        .await?;
    connection.close(200, "done".into()).await.ok();
    Ok(usize::try_from(held)?)
}

/// A service with a steady stream of jobs; its target starts failing (503) and the time until
/// the shared circuit reads `open` is measured, `trials` times.
async fn breaker(trials: usize) -> anyhow::Result<Row> {
    let threshold = 5;
    let hub = hub().await?;
    let sink = HttpSink::start().await?;
    let mut dispatcher = hub.spawn(&["dispatcher"])?;
    let pid = dispatcher.id().context("dispatcher is not running")?;
    let js = hub.jetstream().await?;
    let names = hub.names()?;
    let circuits = js.get_key_value(names.circuits_bucket()).await?;
    let mut times = Vec::with_capacity(trials);
    for trial in 0..trials {
        let service = format!("target-{trial}");
        post(
            &hub,
            "/api/v1/services",
            json!({"name": service, "concurrency": 10,
                   "transport": {"kind": "rest", "base_url": sink.url()},
                   "retry": {"max_retries": 100, "backoff_base_ms": 50, "backoff_cap_ms": 500},
                   "breaker": {"failure_threshold": threshold, "cooldown_ms": 3_600_000}}),
        )
        .await?;
        sink.set_reply(Reply::status(200));
        let feeder = tokio::spawn(feed(hub.jetstream().await?, names.clone(), service.clone()));
        // Healthy first: deliveries flowing before the target goes down.
        let flowing = sink.count() + 50;
        while sink.count() < flowing {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut watch = circuits.watch(&service).await?;
        let down_at = Instant::now();
        sink.set_reply(Reply::status(503));
        let opened = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(entry) = watch.next().await {
                let entry = entry?;
                let circuit: Circuit = serde_json::from_slice(&entry.value)?;
                if circuit.state == CircuitState::Open {
                    return anyhow::Ok(Instant::now());
                }
            }
            bail!("the circuit watch ended")
        })
        .await
        .context("the circuit did not open within 60 s")??;
        feeder.abort();
        #[allow(clippy::cast_precision_loss)]
        times.push(opened.duration_since(down_at).as_secs_f64() * 1000.0);
    }
    let (_, peak) = process::memory_mib(pid).unwrap_or_default();
    dispatcher.kill().await.ok();
    times.sort_by(f64::total_cmp);
    Ok(Row {
        scenario: format!("breaker: down → open (×{trials})"),
        events: trials,
        concurrency: 10,
        request_p50_ms: Some(quantile(&times, 0.5)),
        request_p99_ms: Some(quantile(&times, 0.99)),
        request_max_ms: times.last().copied(),
        mih_peak_rss_mib: peak,
        ..Row::default()
    })
}

/// About 500 jobs/s for `service` until aborted.
async fn feed(
    js: async_nats::jetstream::Context,
    names: mih_shared::names::Names,
    service: String,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(Duration::from_millis(2));
    loop {
        tick.tick().await;
        let job = job(
            &service,
            Request::Http(HttpRequest {
                method: HttpMethod::Post,
                path: "/steady".to_owned(),
                query: Vec::new(),
                headers: Vec::new(),
                body: Some(BODY.to_owned()),
                content_type: Some("application/json".to_owned()),
            }),
        )?;
        js.publish(names.job_subject(&job.service), messages::encode(&job)?)
            .await?;
    }
}
