//! End to end: 1 KiB Moodle events posted to ingest, matched, and delivered to an HTTP sink,
//! with every service as its own `mih` process. Measures delivered events/s, latency from the
//! ingest request to the sink's arrival at fixed rates and at saturation, fan-out, one versus
//! two dispatchers, replicas of ingest, matcher and dispatcher (`--ingests`, `--matchers`,
//! `--dispatchers`, and the 1-2-4 scaling table of `--scale`), CPU and RSS per process and CPU
//! per delivered event per process — and, in the same run, the raw limits mih is built on: a
//! three-hop JetStream chain and the HTTP sink alone. Every scenario is bounded (a fixed count
//! of events, deliveries awaited at most 120 s), so it runs unattended.

use std::collections::HashMap;
use std::future::IntoFuture;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::process::Child;
use tokio::sync::Semaphore;

use mih_testkit::sign::TEST_TOKEN;
use mih_testkit::{ADMIN_TOKEN, HttpSink, OtlpCollector, fixtures};

use crate::hub::BenchHub;
use crate::process;
use crate::report::{Row, ServiceUsage, quantile};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Seconds of load at each fixed rate.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Fixed rates (events/s), one scenario each.
    #[arg(long, value_delimiter = ',', default_value = "100,500,1000,5000")]
    rates: Vec<u64>,
    /// Events of the saturation scenarios.
    #[arg(long, default_value_t = 20_000)]
    events: usize,
    /// Rules every event matches in the fan-out scenario.
    #[arg(long, default_value_t = 10)]
    fanout: usize,
    /// Scenario groups to run (all by default): limits, rates, saturation, dispatchers, fanout,
    /// scaling, ordered.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "limits,rates,saturation,dispatchers,fanout,scaling,ordered"
    )]
    only: Vec<Scenario>,
    /// Ingest processes of the rates and saturation scenarios; the benchmark spreads its
    /// requests over them in turn.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    ingests: u16,
    /// Matcher processes of the rates and saturation scenarios (they share EVENTS' consumer).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    matchers: u16,
    /// Dispatcher processes of the rates and saturation scenarios (they share each service's
    /// consumer).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    dispatchers: u16,
    /// Replicas of the scaling scenario: saturation with this many ingest, matcher and
    /// dispatcher processes each, one row per count.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    scale: Vec<u16>,
    /// Partitions of EVENTS and of JOBS (`streams.event_partitions`, `streams.job_partitions`)
    /// in every scenario; shown in the scenario's name when more than one.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    partitions: u16,
    /// Export every process's spans to an OTLP/HTTP receiver in this benchmark, recording this
    /// share of traces (`telemetry.trace_sample_ratio`): what tracing costs. Unset: no exporter.
    #[arg(long, value_parser = sample_ratio)]
    traces: Option<f64>,
    /// More environment for every mih process, `NAME=VALUE`, repeatable (e.g.
    /// `--mih-env TOKIO_WORKER_THREADS=1`); shown in the scenario's name.
    #[arg(long = "mih-env", value_parser = name_value)]
    mih_env: Vec<(String, String)>,
}

fn name_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => Err(format!("`{text}` is not NAME=VALUE")),
    }
}

/// What every scenario's processes get beyond the defaults.
#[derive(Debug, Clone, Default)]
struct Setup {
    traces: Option<f64>,
    partitions: u16,
    env: Vec<(String, String)>,
}

fn sample_ratio(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(ratio) if (0.0..=1.0).contains(&ratio) => Ok(ratio),
        _ => Err(format!("`{text}` is not a ratio between 0.0 and 1.0")),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Scenario {
    /// The raw JetStream chain and the HTTP sink alone.
    Limits,
    /// Each fixed rate.
    Rates,
    /// Batched ingest as fast as it answers, one dispatcher.
    Saturation,
    /// The same with two dispatchers.
    Dispatchers,
    /// One event to many rules.
    Fanout,
    /// Saturation with 1, 2, 4 … replicas of ingest, matcher and dispatcher (`--scale`).
    Scaling,
    /// Saturation with a rule ordered by key: 1,000 keys, 10 events each, next to the same
    /// events unordered.
    Ordered,
}

/// Keys and events per key of the ordered scenario.
const ORDERED_KEYS: usize = 1_000;
const EVENTS_PER_KEY: usize = 10;

/// How many processes of each event-path service a scenario runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Replicas {
    ingest: u16,
    matcher: u16,
    dispatcher: u16,
}

impl Replicas {
    fn each(n: u16) -> Self {
        Replicas {
            ingest: n,
            matcher: n,
            dispatcher: n,
        }
    }

    /// `, 2 ingest, 2 matcher, 2 dispatcher` — what differs from one of each, for row names.
    fn label(self) -> String {
        [
            ("ingest", self.ingest),
            ("matcher", self.matcher),
            ("dispatcher", self.dispatcher),
        ]
        .iter()
        .filter(|(_, n)| *n > 1)
        .map(|(service, n)| format!(", {n} {service}"))
        .collect()
    }
}

/// Bytes of each event as JSON (the fixtures, padded).
const EVENT_BYTES: usize = 1024;

pub async fn run(args: &Args) -> anyhow::Result<Vec<Row>> {
    let wanted = |scenario| args.only.contains(&scenario);
    let chosen = Replicas {
        ingest: args.ingests,
        matcher: args.matchers,
        dispatcher: args.dispatchers,
    };
    let setup = Setup {
        traces: args.traces,
        partitions: args.partitions,
        env: args.mih_env.clone(),
    };
    let mut rows = Vec::new();
    if wanted(Scenario::Limits) {
        rows.push(raw_jetstream(args.events).await?);
        rows.push(raw_http(args.events).await?);
    }
    if wanted(Scenario::Rates) {
        for &rate in &args.rates {
            rows.push(fixed_rate(rate, args.seconds, chosen, &setup).await?);
        }
    }
    if wanted(Scenario::Saturation) {
        rows.push(saturation(args.events, chosen, Rules::Plain(1), &setup).await?);
    }
    if wanted(Scenario::Dispatchers) {
        let two = Replicas {
            dispatcher: 2,
            ..chosen
        };
        rows.push(saturation(args.events, two, Rules::Plain(1), &setup).await?);
    }
    if wanted(Scenario::Fanout) {
        rows.push(
            saturation(
                args.events / args.fanout.max(1),
                chosen,
                Rules::Plain(args.fanout),
                &setup,
            )
            .await?,
        );
    }
    if wanted(Scenario::Scaling) {
        for &n in &args.scale {
            rows.push(
                saturation(
                    args.events,
                    Replicas::each(n.max(1)),
                    Rules::Plain(1),
                    &setup,
                )
                .await?,
            );
        }
    }
    if wanted(Scenario::Ordered) {
        let total = ORDERED_KEYS * EVENTS_PER_KEY;
        for ordered in [false, true] {
            rows.push(saturation(total, chosen, Rules::Keyed { ordered }, &setup).await?);
        }
    }
    Ok(rows)
}

/// A Moodle event of about [`EVENT_BYTES`], unique by `n`.
fn event(n: usize) -> Value {
    let fixtures = fixtures::moodle_events();
    let mut event = fixtures[n % fixtures.len()].clone();
    event["timecreated"] = json!(1_772_006_400 + n as i64);
    let size = event.to_string().len() + 40;
    event["other"] = json!({"bench": n, "key": n % ORDERED_KEYS,
                            "pad": "x".repeat(EVENT_BYTES.saturating_sub(size))});
    // One learner per key: a learner's events share an EVENTS partition, so a thousand
    // learners spread the events over every partition as a real site's would.
    event["relateduserid"] = json!(1 + n % ORDERED_KEYS);
    event
}

/// The rules of a scenario: `n` rules every event matches, or the ordered scenario's one
/// rule, ordered by `other.key` or (its baseline) not.
#[derive(Debug, Clone, Copy)]
enum Rules {
    Plain(usize),
    Keyed { ordered: bool },
}

impl Rules {
    fn count(self) -> usize {
        match self {
            Rules::Plain(n) => n,
            Rules::Keyed { .. } => 1,
        }
    }
}

/// The hub as one process per service, an HTTP sink, one service and `rules` rules that every
/// event matches; with `traces`, an OTLP receiver the processes export to.
struct Pipeline {
    hub: BenchHub,
    /// Every ingest's events URL; requests go to each in turn.
    ingests: Vec<String>,
    next_ingest: std::sync::atomic::AtomicUsize,
    sink: HttpSink,
    collector: Option<OtlpCollector>,
    processes: Vec<(String, Child)>,
    http: reqwest::Client,
}

impl Pipeline {
    async fn start(replicas: Replicas, rules: Rules, setup: &Setup) -> anyhow::Result<Self> {
        let mut env = vec![
            ("MIH_DISPATCHER_LISTEN", "127.0.0.1:0".to_owned()),
            ("MIH_DLQ_LISTEN", "127.0.0.1:0".to_owned()),
            (
                "MIH_DISPATCHER_ALLOW_NETWORKS",
                r#"["127.0.0.0/8"]"#.to_owned(),
            ),
        ];
        env.push(("MIH_STREAMS_JOB_PARTITIONS", setup.partitions.to_string()));
        env.push(("MIH_STREAMS_EVENT_PARTITIONS", setup.partitions.to_string()));
        for (name, value) in &setup.env {
            env.push((name.as_str(), value.clone()));
        }
        let collector = match setup.traces {
            Some(ratio) => {
                let collector = OtlpCollector::start().await?;
                env.push(("MIH_TELEMETRY_OTLP_ENDPOINT", collector.url()));
                env.push(("MIH_TELEMETRY_TRACE_SAMPLE_RATIO", ratio.to_string()));
                Some(collector)
            }
            None => None,
        };
        let hub = BenchHub::start(&[], &env).await?;
        let sink = HttpSink::start().await?;
        let http = reqwest::Client::new();
        let admin = |path: &str, body: Value| {
            http.post(hub.api_url(path))
                .bearer_auth(ADMIN_TOKEN)
                .json(&body)
                .send()
        };
        let answer = admin(
            "/api/v1/services",
            json!({"name": "target", "concurrency": 64,
                   "transport": {"kind": "rest", "base_url": sink.url()}}),
        )
        .await?;
        if !answer.status().is_success() {
            bail!("creating the service: {}", answer.text().await?);
        }
        for r in 0..rules.count() {
            let mut rule = json!({"name": format!("rule {r}"), "events": ["*"], "service": "target",
                                  "target": {"kind": "rest", "method": "POST", "path": format!("/r/{r}")}});
            if matches!(rules, Rules::Keyed { ordered: true }) {
                rule["ordering_key"] = json!("{{other.key}}");
            }
            let answer = admin("/api/v1/rules", rule).await?;
            if !answer.status().is_success() {
                bail!("creating rule {r}: {}", answer.text().await?);
            }
        }
        let mut processes = Vec::new();
        let mut ingests = vec![hub.ingest_url()];
        processes.push(("ingest".to_owned(), hub.spawn(&["ingest"])?));
        for i in 1..replicas.ingest {
            let (child, url) = hub.spawn_ingest().await?;
            processes.push((format!("ingest-{i}"), child));
            ingests.push(url);
        }
        for m in 0..replicas.matcher {
            processes.push((
                numbered("matcher", m, replicas.matcher),
                hub.spawn(&["matcher"])?,
            ));
        }
        processes.push(("dlq".to_owned(), hub.spawn(&["dlq"])?));
        for d in 0..replicas.dispatcher {
            processes.push((format!("dispatcher-{d}"), hub.spawn(&["dispatcher"])?));
        }
        let pipeline = Pipeline {
            hub,
            ingests,
            next_ingest: std::sync::atomic::AtomicUsize::new(0),
            sink,
            collector,
            processes,
            http,
        };
        pipeline.warm_up(rules.count()).await?;
        Ok(pipeline)
    }

    /// One event through every stage, so connections, consumers and rules are in place.
    async fn warm_up(&self, rules: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.post(&event(999_999_999)).await.is_ok() {
                break;
            }
            if Instant::now() > deadline {
                bail!("ingest never accepted the warm-up event");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.sink
            .wait_for(rules, Duration::from_secs(60))
            .await
            .context("the warm-up event was not delivered")?;
        Ok(())
    }

    /// The next ingest in turn.
    fn ingest_url(&self) -> &str {
        let n = self
            .next_ingest
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        &self.ingests[n % self.ingests.len()]
    }

    /// Posts one event; its mih event id when accepted.
    async fn post(&self, body: &Value) -> anyhow::Result<String> {
        let answer = self
            .http
            .post(self.ingest_url())
            .bearer_auth(TEST_TOKEN)
            .json(body)
            .send()
            .await?;
        if answer.status() != reqwest::StatusCode::ACCEPTED {
            bail!("ingest answered {}", answer.status());
        }
        let body: Value = answer.json().await?;
        body["events"][0]["id"]
            .as_str()
            .map(str::to_owned)
            .context("no event id")
    }

    /// Posts a batch; the accepted events' ids.
    async fn post_batch(&self, events: &[Value]) -> anyhow::Result<Vec<String>> {
        let answer = self
            .http
            .post(self.ingest_url())
            .bearer_auth(TEST_TOKEN)
            .json(&events)
            .send()
            .await?;
        if answer.status() != reqwest::StatusCode::ACCEPTED {
            bail!("ingest answered {}", answer.status());
        }
        let body: Value = answer.json().await?;
        Ok(body["events"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|e| e["id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default())
    }

    fn usage_start(&self) -> Vec<(String, u32, Duration)> {
        self.processes
            .iter()
            .filter_map(|(name, child)| {
                let pid = child.id()?;
                Some((
                    name.clone(),
                    pid,
                    process::cpu_time(pid).unwrap_or_default(),
                ))
            })
            .chain(self.hub.pid().ok().map(|pid| {
                (
                    "api".to_owned(),
                    pid,
                    process::cpu_time(pid).unwrap_or_default(),
                )
            }))
            .collect()
    }

    /// Deliveries at the sink, after the warm-up, as (event id, arrival).
    fn arrivals(&self, skip: usize) -> Vec<(String, Instant)> {
        self.sink
            .requests()
            .into_iter()
            .skip(skip)
            .filter_map(|r| Some((r.header("mih-event-id")?.to_owned(), r.received_at)))
            .collect()
    }

    async fn stop(mut self) {
        if let Some(collector) = &self.collector {
            // Counted after the measurement: decoding is the receiver's work, not mih's.
            eprintln!(
                "mih-bench: {} spans exported in {} requests (the last batch dies with the processes)",
                collector.spans().len(),
                collector.exports()
            );
        }
        for (_, child) in &mut self.processes {
            child.kill().await.ok();
        }
        self.hub.mih.kill().await.ok();
    }
}

/// CPU time, at a scenario's start, of what is not mih: nats-server, PostgreSQL (every
/// backend), this benchmark (load generator and sink), and the machine as a whole.
struct OthersStart {
    nats: Option<(u32, Duration)>,
    postgres: (Vec<u32>, Duration),
    bench: Duration,
    machine: Duration,
}

fn others_start(nats: Option<u32>) -> OthersStart {
    let postgres = process::pids_named("postgres");
    let postgres_cpu = process::cpu_time_of(&postgres);
    OthersStart {
        nats: nats.map(|pid| (pid, process::cpu_time(pid).unwrap_or_default())),
        postgres: (postgres, postgres_cpu),
        bench: process::cpu_time(std::process::id()).unwrap_or_default(),
        machine: process::machine_busy().unwrap_or_default(),
    }
}

fn others(start: &OthersStart, elapsed: Duration) -> Vec<ServiceUsage> {
    let cores = |cpu: Duration| cpu.as_secs_f64() / elapsed.as_secs_f64().max(1e-9);
    let mut usage = Vec::new();
    if let Some((pid, before)) = start.nats {
        let cpu = process::cpu_time(pid).unwrap_or_default();
        usage.push(ServiceUsage {
            service: "nats-server".to_owned(),
            cpu_cores: cores(cpu.saturating_sub(before)),
            peak_rss_mib: process::memory_mib(pid).unwrap_or_default().1,
        });
    }
    if !start.postgres.0.is_empty() {
        let cpu = process::cpu_time_of(&start.postgres.0);
        usage.push(ServiceUsage {
            service: "postgres".to_owned(),
            cpu_cores: cores(cpu.saturating_sub(start.postgres.1)),
            peak_rss_mib: 0.0,
        });
    }
    let bench = process::cpu_time(std::process::id()).unwrap_or_default();
    usage.push(ServiceUsage {
        service: "benchmark".to_owned(),
        cpu_cores: cores(bench.saturating_sub(start.bench)),
        peak_rss_mib: 0.0,
    });
    let machine = process::machine_busy().unwrap_or_default();
    usage.push(ServiceUsage {
        service: "machine".to_owned(),
        cpu_cores: cores(machine.saturating_sub(start.machine)),
        peak_rss_mib: 0.0,
    });
    usage
}

/// µs of CPU per delivered event of mih and of each other party.
fn per_event(row: &Row) -> Vec<(String, f64)> {
    if row.events_per_sec <= 0.0 {
        return Vec::new();
    }
    let us = |cores: f64| cores / row.events_per_sec * 1e6;
    let mut parts = Vec::new();
    if !row.services.is_empty() {
        parts.push(("mih".to_owned(), us(row.mih_cpu_cores)));
        parts.extend(
            row.services
                .iter()
                .map(|s| (s.service.clone(), us(s.cpu_cores))),
        );
    }
    parts.extend(
        row.others
            .iter()
            .map(|o| (o.service.clone(), us(o.cpu_cores))),
    );
    parts
}

fn usage(start: &[(String, u32, Duration)], elapsed: Duration) -> Vec<ServiceUsage> {
    start
        .iter()
        .map(|(name, pid, cpu_before)| {
            let cpu = process::cpu_time(*pid)
                .unwrap_or_default()
                .saturating_sub(*cpu_before);
            let (_, peak) = process::memory_mib(*pid).unwrap_or_default();
            ServiceUsage {
                service: name.clone(),
                cpu_cores: cpu.as_secs_f64() / elapsed.as_secs_f64().max(1e-9),
                peak_rss_mib: peak,
            }
        })
        .collect()
}

/// Latencies (ms, sorted) from each event's send to its first arrival per rule, and the last
/// arrival.
fn latencies(
    sent: &HashMap<String, Instant>,
    arrivals: &[(String, Instant)],
) -> (Vec<f64>, Option<Instant>) {
    let mut values: Vec<f64> = arrivals
        .iter()
        .filter_map(|(id, at)| {
            Some(at.saturating_duration_since(*sent.get(id)?).as_secs_f64() * 1000.0)
        })
        .collect();
    values.sort_by(f64::total_cmp);
    (values, arrivals.iter().map(|(_, at)| *at).max())
}

/// Waits until `expected` deliveries after the warm-up arrived (or a minute passed).
async fn await_deliveries(pipeline: &Pipeline, skip: usize, expected: usize) -> anyhow::Result<()> {
    pipeline
        .sink
        .wait_for(skip + expected, Duration::from_secs(120))
        .await
        .map(|_| ())
        .context("not every accepted event was delivered")
}

/// `rate` single-event requests per second for `seconds`.
async fn fixed_rate(
    rate: u64,
    seconds: u64,
    replicas: Replicas,
    setup: &Setup,
) -> anyhow::Result<Row> {
    let pipeline = Arc::new(Pipeline::start(replicas, Rules::Plain(1), setup).await?);
    let skip = pipeline.sink.count();
    let total = usize::try_from(rate * seconds)?;
    let sent = Arc::new(Mutex::new(HashMap::with_capacity(total)));
    let in_flight = Arc::new(Semaphore::new(512));
    let start = pipeline.usage_start();
    let others_before = others_start(pipeline.hub.nats.pid());
    let began = Instant::now();
    let mut watched: Vec<(String, u32)> = start
        .iter()
        .map(|(name, pid, _)| (name.clone(), *pid))
        .collect();
    watched.extend(
        pipeline
            .hub
            .nats
            .pid()
            .map(|pid| ("nats-server".to_owned(), pid)),
    );
    let rss = (seconds >= 2 * MINUTE.as_secs()).then(|| {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        (stop, tokio::spawn(rss_by_minute(watched, stopped)))
    });
    let period = Duration::from_secs_f64(1.0 / rate as f64);
    let mut tasks = Vec::with_capacity(total);
    for n in 0..total {
        // Paced from the start, so a slow moment is caught up rather than stretching the run.
        let due = began + period.mul_f64(n as f64);
        tokio::time::sleep_until(due.into()).await;
        let permit = Arc::clone(&in_flight).acquire_owned().await?;
        let (pipeline, sent) = (Arc::clone(&pipeline), Arc::clone(&sent));
        tasks.push(tokio::spawn(async move {
            let body = event(n);
            let at = Instant::now();
            let accepted = pipeline.post(&body).await;
            drop(permit);
            if let (Ok(id), Ok(mut sent)) = (accepted, sent.lock()) {
                sent.insert(id, at);
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    let offered = began.elapsed();
    let sent = std::mem::take(&mut *sent.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    await_deliveries(&pipeline, skip, sent.len()).await?;
    let arrivals = pipeline.arrivals(skip);
    let (values, last) = latencies(&sent, &arrivals);
    let by_minute = rss
        .is_some()
        .then(|| p99_by_minute(&sent, &arrivals, began));
    let rss = match rss {
        Some((stop, task)) => {
            let _ = stop.send(());
            task.await.unwrap_or_default()
        }
        None => Vec::new(),
    };
    let elapsed = last.map_or(offered, |l| l.saturating_duration_since(began));
    let services = usage(&start, elapsed);
    let mut row = latency_row(
        traced(
            format!("e2e {rate}/s ×{seconds}s{}", replicas.label()),
            setup,
        ),
        sent.len(),
        1,
        elapsed,
        &values,
        services,
    );
    row.others = others(&others_before, elapsed);
    row.cpu_us_per_event = per_event(&row);
    row.p99_by_minute_ms = by_minute.unwrap_or_default();
    row.rss_by_minute_mib = rss;
    if let Ok(pipeline) = Arc::try_unwrap(pipeline) {
        pipeline.stop().await;
    }
    Ok(row)
}

const MINUTE: Duration = Duration::from_secs(60);

/// The p99 latency of the events sent in each whole minute since `began`.
fn p99_by_minute(
    sent: &HashMap<String, Instant>,
    arrivals: &[(String, Instant)],
    began: Instant,
) -> Vec<f64> {
    let mut minutes: Vec<Vec<f64>> = Vec::new();
    for (id, at) in arrivals {
        let Some(sent_at) = sent.get(id) else {
            continue;
        };
        let minute =
            usize::try_from(sent_at.saturating_duration_since(began).as_secs() / MINUTE.as_secs())
                .unwrap_or(usize::MAX);
        if minutes.len() <= minute {
            minutes.resize_with(minute + 1, Vec::new);
        }
        minutes[minute].push(at.saturating_duration_since(*sent_at).as_secs_f64() * 1000.0);
    }
    minutes
        .into_iter()
        .filter(|values| !values.is_empty())
        .map(|mut values| {
            values.sort_by(f64::total_cmp);
            quantile(&values, 0.99)
        })
        .collect()
}

/// Each process's RSS once a minute until `stop`.
async fn rss_by_minute(
    watched: Vec<(String, u32)>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> Vec<(String, Vec<f64>)> {
    let mut samples: Vec<(String, Vec<f64>)> = watched
        .iter()
        .map(|(name, _)| (name.clone(), Vec::new()))
        .collect();
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + MINUTE, MINUTE);
    loop {
        tokio::select! {
            _ = &mut stop => return samples,
            _ = ticks.tick() => {}
        }
        for ((_, pid), (_, values)) in watched.iter().zip(samples.iter_mut()) {
            values.push(process::memory_mib(*pid).map_or(0.0, |(rss, _)| rss));
        }
    }
}

/// As fast as ingest takes them: 100-event batches, 4 requests in flight.
async fn saturation(
    total: usize,
    replicas: Replicas,
    rules: Rules,
    setup: &Setup,
) -> anyhow::Result<Row> {
    let pipeline = Arc::new(Pipeline::start(replicas, rules, setup).await?);
    let skip = pipeline.sink.count();
    let events: Vec<Value> = (0..total).map(event).collect();
    let chunks: Vec<Vec<Value>> = events.chunks(100).map(<[Value]>::to_vec).collect();
    let sent = Arc::new(Mutex::new(HashMap::with_capacity(total)));
    let start = pipeline.usage_start();
    let others_before = others_start(pipeline.hub.nats.pid());
    let began = Instant::now();
    futures::stream::iter(chunks)
        .for_each_concurrent(4, |chunk| {
            let (pipeline, sent) = (Arc::clone(&pipeline), Arc::clone(&sent));
            async move {
                let at = Instant::now();
                if let (Ok(ids), Ok(mut sent)) = (pipeline.post_batch(&chunk).await, sent.lock()) {
                    for id in ids {
                        sent.insert(id, at);
                    }
                }
            }
        })
        .await;
    let sent = std::mem::take(&mut *sent.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    await_deliveries(&pipeline, skip, sent.len() * rules.count()).await?;
    let arrivals = pipeline.arrivals(skip);
    let (values, last) = latencies(&sent, &arrivals);
    let elapsed = last.map_or(began.elapsed(), |l| l.saturating_duration_since(began));
    let services = usage(&start, elapsed);
    let name = match rules {
        Rules::Plain(1) => format!("e2e saturation{}", replicas.label()),
        Rules::Plain(r) => format!("e2e fan-out 1 → {r} rules{}", replicas.label()),
        Rules::Keyed { ordered } => format!(
            "e2e {ORDERED_KEYS} keys × {EVENTS_PER_KEY}, {}{}",
            if ordered {
                "ordered by key"
            } else {
                "unordered"
            },
            replicas.label()
        ),
    };
    let mut row = latency_row(
        traced(name, setup),
        sent.len(),
        rules.count(),
        elapsed,
        &values,
        services,
    );
    row.others = others(&others_before, elapsed);
    row.cpu_us_per_event = per_event(&row);
    if let Ok(pipeline) = Arc::try_unwrap(pipeline) {
        pipeline.stop().await;
    }
    Ok(row)
}

/// `matcher` for the only one, `matcher-0`, `matcher-1` … for several.
fn numbered(service: &str, n: u16, of: u16) -> String {
    if of == 1 {
        service.to_owned()
    } else {
        format!("{service}-{n}")
    }
}

/// The scenario's name with what its setup changed.
fn traced(name: String, setup: &Setup) -> String {
    let mut name = match setup.traces {
        Some(ratio) => format!("{name}, traced (ratio {ratio})"),
        None => name,
    };
    if setup.partitions > 1 {
        name.push_str(&format!(", {} partitions", setup.partitions));
    }
    for (var, value) in &setup.env {
        name.push_str(&format!(", {var}={value}"));
    }
    name
}

fn latency_row(
    scenario: String,
    events: usize,
    rules: usize,
    elapsed: Duration,
    values: &[f64],
    services: Vec<ServiceUsage>,
) -> Row {
    let deliveries = values.len();
    #[allow(clippy::cast_precision_loss)]
    Row {
        scenario,
        events,
        rules: Some(rules),
        jobs: Some(deliveries),
        seconds: elapsed.as_secs_f64(),
        events_per_sec: deliveries as f64 / elapsed.as_secs_f64().max(1e-9),
        request_p50_ms: Some(quantile(values, 0.5)),
        request_p95_ms: Some(quantile(values, 0.95)),
        request_p99_ms: Some(quantile(values, 0.99)),
        request_max_ms: values.last().copied(),
        mih_cpu_cores: services.iter().map(|s| s.cpu_cores).sum(),
        mih_peak_rss_mib: services.iter().map(|s| s.peak_rss_mib).sum(),
        services,
        ..Row::default()
    }
}

/// The same three hops as mih's hot path (ingest → EVENTS → matcher → JOBS → dispatcher →
/// RESULTS) with nothing but JetStream: publish, pull, publish on, ack — file storage.
async fn raw_jetstream(total: usize) -> anyhow::Result<Row> {
    use async_nats::jetstream::{self, consumer::pull, stream};
    let nats = mih_testkit::NatsServer::start().await?;
    let client = async_nats::connect(nats.url()).await?;
    let js = jetstream::new(client);
    for name in ["A", "B", "C"] {
        js.create_stream(stream::Config {
            name: name.to_owned(),
            subjects: vec![format!("{}.>", name.to_lowercase())],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await?;
    }
    let payload = bytes::Bytes::from(event(0).to_string());
    let others_before = others_start(nats.pid());
    let began = Instant::now();
    let mut relays = Vec::new();
    for (from, to) in [("A", "b.x"), ("B", "c.x")] {
        let consumer = js
            .get_stream(from)
            .await?
            .create_consumer(pull::Config {
                durable_name: Some(format!("relay-{from}")),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                max_ack_pending: 256,
                ..Default::default()
            })
            .await?;
        let js = js.clone();
        relays.push(tokio::spawn(async move {
            let messages = consumer.messages().await?;
            messages
                .take(total)
                .for_each_concurrent(256, |message| {
                    let js = js.clone();
                    async move {
                        if let Ok(message) = message
                            && let Ok(ack) = js.publish(to, message.payload.clone()).await
                            && ack.await.is_ok()
                        {
                            message.ack().await.ok();
                        }
                    }
                })
                .await;
            anyhow::Ok(())
        }));
    }
    let mut acks = Vec::with_capacity(1000);
    for _ in 0..total {
        acks.push(js.publish("a.x", payload.clone()).await?);
        if acks.len() == 1000 {
            for ack in futures::future::join_all(acks.drain(..).map(IntoFuture::into_future)).await
            {
                ack?;
            }
        }
    }
    for ack in futures::future::join_all(acks.drain(..).map(IntoFuture::into_future)).await {
        ack?;
    }
    let mut last = js.get_stream("C").await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while last.info().await?.state.messages < total as u64 {
        if Instant::now() > deadline {
            bail!("the JetStream chain did not finish");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = began.elapsed();
    for relay in relays {
        relay.abort();
    }
    #[allow(clippy::cast_precision_loss)]
    let mut row = Row {
        scenario: "limit: JetStream 3 hops".to_owned(),
        events: total,
        seconds: elapsed.as_secs_f64(),
        events_per_sec: total as f64 / elapsed.as_secs_f64(),
        others: others(&others_before, elapsed),
        ..Row::default()
    };
    row.cpu_us_per_event = per_event(&row);
    Ok(row)
}

/// The HTTP sink alone: 1 KiB POSTs from a keep-alive client, 64 in flight.
async fn raw_http(total: usize) -> anyhow::Result<Row> {
    let sink = HttpSink::start().await?;
    let http = reqwest::Client::new();
    let body = event(0).to_string();
    let url = format!("{}/x", sink.url());
    let others_before = others_start(None);
    let began = Instant::now();
    futures::stream::iter(0..total)
        .for_each_concurrent(64, |_| {
            let request = http.post(&url).body(body.clone()).send();
            async move {
                request.await.ok();
            }
        })
        .await;
    let elapsed = began.elapsed();
    if sink.count() < total {
        bail!("the sink received {} of {total}", sink.count());
    }
    #[allow(clippy::cast_precision_loss)]
    let mut row = Row {
        scenario: "limit: HTTP sink alone".to_owned(),
        events: total,
        seconds: elapsed.as_secs_f64(),
        events_per_sec: total as f64 / elapsed.as_secs_f64(),
        others: others(&others_before, elapsed),
        ..Row::default()
    };
    row.cpu_us_per_event = per_event(&row);
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_minute_gets_the_p99_of_the_events_sent_in_it() {
        let began = Instant::now();
        let at = |s: u64| began + Duration::from_secs(s);
        let mut sent = HashMap::new();
        let mut arrivals = Vec::new();
        // Minute 0: 100 events taking 1 ms, one taking 900 ms; minute 2: one taking 5 ms.
        for n in 0..100 {
            sent.insert(format!("a{n}"), at(10));
            arrivals.push((format!("a{n}"), at(10) + Duration::from_millis(1)));
        }
        sent.insert("slow".to_owned(), at(59));
        arrivals.push(("slow".to_owned(), at(59) + Duration::from_millis(900)));
        sent.insert("late".to_owned(), at(130));
        arrivals.push(("late".to_owned(), at(130) + Duration::from_millis(5)));
        arrivals.push(("unknown".to_owned(), at(20)));
        let minutes = p99_by_minute(&sent, &arrivals, began);
        assert_eq!(
            minutes.len(),
            2,
            "the empty minute is left out: {minutes:?}"
        );
        assert!((minutes[0] - 1.0).abs() < 0.01, "{minutes:?}");
        assert!((minutes[1] - 5.0).abs() < 0.01, "{minutes:?}");
    }
}
