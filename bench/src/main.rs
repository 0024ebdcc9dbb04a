//! `mih-bench`: measures mih on this machine against the pinned NATS server. Build in release
//! mode; the hub runs as a separate `mih` process (the one beside this binary), so its CPU and
//! memory are its own. See BENCHMARKS.md for how to run it and the figures.

// Printing the results table is what this binary is for.
#![allow(clippy::print_stdout)]

mod dashboard;
mod dispatcher;
mod e2e;
mod hub;
mod ingest;
mod matcher;
mod moodle;
mod process;
mod report;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "mih-bench", about = "Benchmarks of mih on this machine")]
struct Cli {
    /// Where to write the results as JSON (default: target/bench/<command>-<time>.json).
    #[arg(long, global = true)]
    json: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Accepted events/s at ingest: signed requests, batched and one event per request.
    Ingest(ingest::Args),
    /// Events/s through the matcher with 10, 100 and 1,000 rules.
    Matcher(matcher::Args),
    /// Deliveries/s over HTTP (1 and 10 services) and AMQP, and how fast a circuit opens.
    Dispatcher(dispatcher::Args),
    /// End to end, one process per service: latency at fixed rates, saturation, fan-out, two
    /// dispatchers, and the raw JetStream and HTTP limits.
    E2e(e2e::Args),
    /// The Moodle plugin's observer: its cost per event on the user's request.
    Moodle(moodle::Args),
    /// The dashboard's overview and deliveries searches over 1,000,000 deliveries.
    Dashboard(dashboard::Args),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let (name, results) = match cli.command {
        Command::Ingest(args) => ("ingest", ingest::run(&args).await?),
        Command::Matcher(args) => ("matcher", matcher::run(&args).await?),
        Command::Dispatcher(args) => ("dispatcher", dispatcher::run(&args).await?),
        Command::E2e(args) => ("e2e", e2e::run(&args).await?),
        Command::Moodle(args) => ("moodle", moodle::run(&args).await?),
        Command::Dashboard(args) => ("dashboard", dashboard::run(&args).await?),
    };
    if name == "dashboard" {
        report::print_latency_table(&results);
    } else {
        report::print_table(&results);
    }
    let path = report::write_json(cli.json, name, &results)?;
    eprintln!("results written to {}", path.display());
    Ok(())
}
