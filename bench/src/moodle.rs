//! The Moodle plugin's cost on a user's request: its observer, per event, on the stand-in
//! (PDO over PostgreSQL) and, when `scripts/moodle-dev` installed one, in a real Moodle.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde_json::Value;
use tokio::process::Command;

use mih_testkit::TestDatabase;

use crate::report::Row;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Events per measurement.
    #[arg(long, default_value_t = 5_000)]
    events: usize,
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub async fn run(args: &Args) -> anyhow::Result<Vec<Row>> {
    let script = repo().join("shim/tests/bench/observer.php");
    let events = format!("--events={}", args.events);
    let db = TestDatabase::create().await?;
    let standin = php(Command::new("php")
        .arg(&script)
        .args(["--standin", &events])
        .env(
            "MIH_STANDIN_DSN",
            format!(
                "pgsql:host=127.0.0.1;port=5432;dbname={};user=postgres",
                db.name()
            ),
        ))
    .await?;
    let mut rows = rows_of("stand-in", &standin)?;
    let moodle = repo().join(".tools/moodle");
    if moodle.join("installed").exists() {
        let www = format!("--moodle={}", moodle.join("www").display());
        let real = php(Command::new("php")
            .args(["-d", "max_input_vars=5000"])
            .arg(&script)
            .args([www.as_str(), &events]))
        .await?;
        rows.extend(rows_of("moodle 4.4", &real)?);
    } else {
        eprintln!(
            "no real Moodle in .tools/moodle (scripts/moodle-dev): measured on the stand-in only"
        );
    }
    Ok(rows)
}

async fn php(command: &mut Command) -> anyhow::Result<Value> {
    let output = command.output().await.context("running php")?;
    if !output.status.success() {
        bail!(
            "the observer benchmark failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    serde_json::from_slice(&output.stdout).context("the observer benchmark printed no JSON")
}

/// One row per mode; the latency columns hold the observer's cost per event.
fn rows_of(label: &str, result: &Value) -> anyhow::Result<Vec<Row>> {
    ["no_transaction", "in_transaction"]
        .iter()
        .map(|mode| {
            let m = &result[mode];
            let number = |key: &str| m[key].as_f64().with_context(|| format!("{mode}.{key}"));
            let events = m["events"]
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .with_context(|| format!("{mode}.events"))?;
            let mean_us = number("mean_us")?;
            Ok(Row {
                scenario: format!("observer, {label}, {}", mode.replace('_', " ")),
                events,
                concurrency: 1,
                seconds: mean_us * events as f64 / 1e6,
                events_per_sec: 1e6 / mean_us,
                request_p50_ms: Some(number("p50_us")? / 1000.0),
                request_p95_ms: Some(number("p95_us")? / 1000.0),
                request_p99_ms: Some(number("p99_us")? / 1000.0),
                request_max_ms: Some(number("max_us")? / 1000.0),
                ..Row::default()
            })
        })
        .collect()
}
