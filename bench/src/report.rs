//! Printing results as a table and writing them as JSON.

use std::path::PathBuf;

use serde::Serialize;

/// One measured scenario.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Row {
    pub scenario: String,
    pub events: usize,
    /// HTTP requests sent (ingest scenarios).
    pub requests: Option<usize>,
    /// Requests in flight (ingest) or events in flight (matcher).
    pub concurrency: usize,
    /// Rules in the configuration (matcher scenarios).
    pub rules: Option<usize>,
    /// Jobs published (matcher scenarios).
    pub jobs: Option<usize>,
    pub seconds: f64,
    pub events_per_sec: f64,
    /// Latency percentiles: of requests (ingest), or from the ingest request to the sink's
    /// arrival (end to end).
    pub request_p50_ms: Option<f64>,
    pub request_p95_ms: Option<f64>,
    pub request_p99_ms: Option<f64>,
    pub request_max_ms: Option<f64>,
    /// CPU used by the measured mih process during the run, as a share of one core.
    pub mih_cpu_cores: f64,
    pub mih_rss_mib: f64,
    pub mih_peak_rss_mib: f64,
    /// Per process, when the hub runs one process per service.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<ServiceUsage>,
    /// What else on the machine worked for the scenario: nats-server, PostgreSQL, the
    /// benchmark itself (load generator and sink), and the whole machine.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub others: Vec<ServiceUsage>,
    /// CPU time per delivered event (or per message, for the JetStream limit), in µs, of mih
    /// (all its processes) and of each of `others`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cpu_us_per_event: Vec<(String, f64)>,
    /// Fixed rates of two minutes or more: the p99 of the events sent in each minute, to show
    /// whether the tail drifts as streams, buckets and tables grow.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub p99_by_minute_ms: Vec<f64>,
    /// The same runs: each process's RSS at the end of each minute (nats-server included).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rss_by_minute_mib: Vec<(String, Vec<f64>)>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ServiceUsage {
    pub service: String,
    pub cpu_cores: f64,
    pub peak_rss_mib: f64,
}

fn or_dash(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"))
}

pub fn print_table(rows: &[Row]) {
    println!(
        "{:<30} {:>7} {:>6} {:>7} {:>8} {:>10} {:>8} {:>8} {:>8} {:>8} {:>6} {:>8}",
        "scenario",
        "events",
        "rules",
        "jobs",
        "seconds",
        "events/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "cpu",
        "peak MiB"
    );
    for r in rows {
        let count = |n: Option<usize>| n.map_or_else(|| "-".to_owned(), |n| n.to_string());
        println!(
            "{:<30} {:>7} {:>6} {:>7} {:>8.2} {:>10.0} {:>8} {:>8} {:>8} {:>8} {:>6.2} {:>8.1}",
            r.scenario,
            r.events,
            count(r.rules),
            count(r.jobs),
            r.seconds,
            r.events_per_sec,
            or_dash(r.request_p50_ms),
            or_dash(r.request_p95_ms),
            or_dash(r.request_p99_ms),
            or_dash(r.request_max_ms),
            r.mih_cpu_cores,
            r.mih_peak_rss_mib
        );
        for s in &r.services {
            println!(
                "    {:<26} cpu {:>5.2} core   peak RSS {:>6.1} MiB",
                s.service, s.cpu_cores, s.peak_rss_mib
            );
        }
        for s in &r.others {
            println!("    {:<26} cpu {:>5.2} core", s.service, s.cpu_cores);
        }
        if !r.cpu_us_per_event.is_empty() {
            let parts: Vec<String> = r
                .cpu_us_per_event
                .iter()
                .map(|(who, us)| format!("{who} {us:.0}"))
                .collect();
            println!("    CPU µs per event: {}", parts.join(", "));
        }
        if !r.p99_by_minute_ms.is_empty() {
            println!("    p99 ms by minute: {}", joined(&r.p99_by_minute_ms, 1));
        }
        for (who, rss) in &r.rss_by_minute_mib {
            println!("    RSS MiB by minute, {who}: {}", joined(rss, 0));
        }
    }
}

fn joined(values: &[f64], decimals: usize) -> String {
    values
        .iter()
        .map(|v| format!("{v:.decimals$}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Request latencies alone (one request at a time): scenario, requests, p50, p95, max, and the
/// items a search answered.
pub fn print_latency_table(rows: &[Row]) {
    println!(
        "{:<62} {:>8} {:>8} {:>8} {:>8} {:>6} {:>6}",
        "request", "requests", "p50 ms", "p95 ms", "max ms", "items", "cpu"
    );
    for r in rows {
        println!(
            "{:<62} {:>8} {:>8} {:>8} {:>8} {:>6} {:>6.2}",
            r.scenario,
            r.requests.unwrap_or(0),
            or_dash(r.request_p50_ms),
            or_dash(r.request_p95_ms),
            or_dash(r.request_max_ms),
            r.events,
            r.mih_cpu_cores
        );
    }
}

pub fn write_json(path: Option<PathBuf>, name: &str, rows: &[Row]) -> anyhow::Result<PathBuf> {
    let path = path.unwrap_or_else(|| {
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
        mih_testkit::workspace_root()
            .join("target/bench")
            .join(format!("{name}-{stamp}.json"))
    });
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let document = serde_json::json!({
        "command": name,
        "at": chrono::Utc::now().to_rfc3339(),
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "results": rows,
    });
    std::fs::write(&path, serde_json::to_vec_pretty(&document)?)?;
    Ok(path)
}

/// The `q` quantile (0..=1) of sorted values.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    // In [0, len - 1] by construction.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let rank = (q * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}
