//! A hub under measurement: the pinned nats-server and a `mih` process.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::Child;

use mih_shared::names::Names;
use mih_testkit::sign::{TEST_SECRET, TEST_TOKEN};
use mih_testkit::{MihProcesses, NatsServer, Output, TestDatabase};

pub struct BenchHub {
    pub nats: NatsServer,
    /// Where api keeps the configuration; dropped with the hub.
    _db: TestDatabase,
    pub mih: Child,
    pub namespace: String,
    /// The environment and ports every `mih` process of this hub shares.
    processes: MihProcesses,
}

const READY_WAIT: Duration = Duration::from_secs(30);

/// The `mih` binary next to this one (both built by the same `cargo build`).
fn mih_binary() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let path = me.with_file_name("mih");
    if !path.is_file() {
        bail!(
            "{} not found: build both with `cargo build --release -p mih -p mih-bench`",
            path.display()
        );
    }
    Ok(path)
}

/// `BENCH_LOG` set: the services' logs at that level on this terminal; unset: warnings only,
/// and only stderr, so that a measurement's output stays readable.
fn output() -> Output {
    if std::env::var_os("BENCH_LOG").is_some() {
        Output::Inherit
    } else {
        Output::ErrorsOnly
    }
}

impl BenchHub {
    /// Starts NATS and `mih run` with the given services (api is always added: it serves the
    /// configuration) and extra environment.
    pub async fn start(services: &[&str], env: &[(&str, String)]) -> anyhow::Result<Self> {
        let nats = NatsServer::start().await?;
        let db = TestDatabase::create().await?;
        let log_level = std::env::var("BENCH_LOG").unwrap_or_else(|_| "warn".to_owned());
        let mut processes = MihProcesses::new(mih_binary()?, &nats.url(), db.url(), &log_level);
        processes.listen(&["api", "ingest"])?;
        processes
            .listen_anywhere("matcher")
            .set(
                "MIH_SOURCES__MOODLE__SIGNING_SECRETS",
                format!("[\"{TEST_SECRET}\"]"),
            )
            .set(
                "MIH_SOURCES__MOODLE__BEARER_TOKENS",
                format!("[\"{TEST_TOKEN}\"]"),
            );
        for (name, value) in env {
            processes.set(name, value.clone());
        }
        let mut all: Vec<&str> = services.to_vec();
        if !all.contains(&"api") {
            all.push("api");
        }
        let mih = processes.spawn(&all, &output()).context("starting mih")?;
        let hub = Self {
            nats,
            _db: db,
            mih,
            namespace: processes.namespace().to_owned(),
            processes,
        };
        hub.wait_ready(all.contains(&"ingest")).await?;
        Ok(hub)
    }

    /// Another `mih` process of this hub (same NATS, database, namespace) running `services`.
    pub fn spawn(&self, services: &[&str]) -> anyhow::Result<Child> {
        self.processes
            .spawn(services, &output())
            .context("starting mih")
    }

    /// Another ingest of this hub on a port of its own, once it is ready: its events URL.
    pub async fn spawn_ingest(&self) -> anyhow::Result<(Child, String)> {
        let mut processes = self.processes.clone();
        processes.listen_at("ingest", mih_testkit::free_port()?);
        let child = processes
            .spawn(&["ingest"], &output())
            .context("starting ingest")?;
        processes
            .wait_ready("ingest", READY_WAIT)
            .await
            .context("the extra ingest did not become ready")?;
        Ok((child, processes.url("ingest", "/v1/events")))
    }

    pub fn pid(&self) -> anyhow::Result<u32> {
        self.mih.id().context("mih is not running")
    }

    pub fn ingest_url(&self) -> String {
        self.processes.url("ingest", "/v1/events")
    }

    pub fn api_url(&self, path: &str) -> String {
        self.processes.url("api", path)
    }

    pub fn names(&self) -> anyhow::Result<Names> {
        Ok(self.processes.names())
    }

    /// Ready, and with ingest, the seeded source known to it.
    async fn wait_ready(&self, ingest: bool) -> anyhow::Result<()> {
        self.processes
            .wait_ready("api", READY_WAIT)
            .await
            .context("mih did not become ready")?;
        if !ingest {
            return Ok(());
        }
        self.processes
            .wait_ready("ingest", READY_WAIT)
            .await
            .context("ingest did not become ready")?;
        self.processes
            .wait_source_known(Duration::from_secs(10))
            .await
            .context("ingest did not learn the benchmark source")?;
        Ok(())
    }

    pub async fn jetstream(&self) -> anyhow::Result<async_nats::jetstream::Context> {
        let client = async_nats::connect(self.nats.url()).await?;
        Ok(async_nats::jetstream::new(client))
    }

    /// Messages in `<NS>_EVENTS` and its partitions.
    pub async fn stored_events(&self) -> anyhow::Result<u64> {
        let js = self.jetstream().await?;
        let names = self.names()?;
        let streams = mih_shared::partition::streams(
            &js,
            &names,
            mih_shared::partition::Partitioned::Events,
            mih_shared::partition::Partitions::ONE,
        )
        .await?;
        let mut stored = 0;
        for (_, stream) in streams {
            stored += stream.get_info().await?.state.messages;
        }
        Ok(stored)
    }
}
