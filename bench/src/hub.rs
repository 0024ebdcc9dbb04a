//! A hub under measurement: the pinned nats-server and a `mih` process.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

use mih_shared::names::Names;
use mih_testkit::sign::{TEST_SECRET, TEST_TOKEN};
use mih_testkit::{NatsServer, TestDatabase, free_port, unique_namespace};

pub struct BenchHub {
    pub nats: NatsServer,
    /// Where api keeps the configuration; dropped with the hub.
    _db: TestDatabase,
    pub mih: Child,
    pub ingest_port: u16,
    pub api_port: u16,
    pub namespace: String,
    /// The environment every `mih` process of this hub shares.
    env: Vec<(String, String)>,
}

/// The admin token of benchmark hubs (bootstrap admin token).
pub const BENCH_ADMIN_TOKEN: &str = "bench-admin-token-0123456789abcdef";

/// Key for the secrets of benchmark hubs (the seeded source's signing secret).
const BENCH_SECRET_KEY: &str = "q2Vp2Nv5rPfBk0pO2Kq7pZbJm0Ck4YqZp0dJmQ8v3Xo=";

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

impl BenchHub {
    /// Starts NATS and `mih run` with the given services (api is always added: it serves the
    /// configuration) and extra environment.
    pub async fn start(services: &[&str], env: &[(&str, String)]) -> anyhow::Result<Self> {
        let nats = NatsServer::start().await?;
        let db = TestDatabase::create().await?;
        let ingest_port = free_port()?;
        let api_port = free_port()?;
        let namespace = unique_namespace();
        let mut shared = vec![
            ("MIH_NAMESPACE", namespace.clone()),
            ("MIH_NATS_URL", nats.url().to_owned()),
            ("MIH_DATABASE_URL", db.url().to_owned()),
            ("MIH_SECRET_KEY", BENCH_SECRET_KEY.to_owned()),
            ("MIH_BOOTSTRAP_ADMIN_TOKEN", BENCH_ADMIN_TOKEN.to_owned()),
            ("MIH_API_LISTEN", format!("127.0.0.1:{api_port}")),
            (
                "MIH_TELEMETRY_LOG_LEVEL",
                std::env::var("BENCH_LOG").unwrap_or_else(|_| "warn".to_owned()),
            ),
            ("MIH_INGEST_LISTEN", format!("127.0.0.1:{ingest_port}")),
            ("MIH_MATCHER_LISTEN", "127.0.0.1:0".to_owned()),
            (
                "MIH_SOURCES__MOODLE__SIGNING_SECRETS",
                format!("[\"{TEST_SECRET}\"]"),
            ),
            (
                "MIH_SOURCES__MOODLE__BEARER_TOKENS",
                format!("[\"{TEST_TOKEN}\"]"),
            ),
        ];
        shared.extend(env.iter().map(|(name, value)| (*name, value.clone())));
        let env: Vec<(String, String)> = shared
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value))
            .collect();
        let mut all: Vec<&str> = services.to_vec();
        if !all.contains(&"api") {
            all.push("api");
        }
        let mih = spawn_mih(&all, &env)?;
        let hub = Self {
            nats,
            _db: db,
            mih,
            ingest_port,
            api_port,
            namespace,
            env,
        };
        hub.wait_ready(all.contains(&"ingest")).await?;
        Ok(hub)
    }

    /// Another `mih` process of this hub (same NATS, database, namespace) running `services`.
    pub fn spawn(&self, services: &[&str]) -> anyhow::Result<Child> {
        spawn_mih(services, &self.env)
    }

    pub fn pid(&self) -> anyhow::Result<u32> {
        self.mih.id().context("mih is not running")
    }

    pub fn ingest_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1/events", self.ingest_port)
    }

    pub fn api_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.api_port)
    }

    pub fn names(&self) -> anyhow::Result<Names> {
        Ok(Names::new(self.namespace.parse()?))
    }

    /// Ready, and with ingest, the seeded source known to it (an empty batch is 400, not 401).
    async fn wait_ready(&self, ingest: bool) -> anyhow::Result<()> {
        mih_testkit::wait_until_ok(&self.api_url("/readyz"), Duration::from_secs(30))
            .await
            .context("mih did not become ready")?;
        if !ingest {
            return Ok(());
        }
        let url = format!("http://127.0.0.1:{}/readyz", self.ingest_port);
        mih_testkit::wait_until_ok(&url, Duration::from_secs(30))
            .await
            .context("ingest did not become ready")?;
        let http = reqwest::Client::new();
        let ingest = self.ingest_url();
        mih_testkit::eventually(Duration::from_secs(10), || {
            let request = http
                .post(&ingest)
                .bearer_auth(TEST_TOKEN)
                .header("content-type", "application/json")
                .body("[]")
                .send();
            async move {
                match request.await {
                    Ok(r) if r.status() == reqwest::StatusCode::BAD_REQUEST => Ok(()),
                    Ok(r) => Err(r.status().to_string()),
                    Err(e) => Err(e.to_string()),
                }
            }
        })
        .await
        .context("ingest did not learn the benchmark source")?;
        Ok(())
    }

    pub async fn jetstream(&self) -> anyhow::Result<async_nats::jetstream::Context> {
        let client = async_nats::connect(self.nats.url()).await?;
        Ok(async_nats::jetstream::new(client))
    }

    /// Messages in `<NS>_EVENTS`.
    pub async fn stored_events(&self) -> anyhow::Result<u64> {
        let stream = self
            .jetstream()
            .await?
            .get_stream(self.names()?.events_stream())
            .await?;
        Ok(stream.get_info().await?.state.messages)
    }
}

/// `mih run --service <services>` with exactly `env`.
fn spawn_mih(services: &[&str], env: &[(String, String)]) -> anyhow::Result<Child> {
    let mut command = Command::new(mih_binary()?);
    command
        .args(["run", "--service", &services.join(",")])
        .env_clear()
        .envs(env.iter().map(|(name, value)| (name, value)))
        .stdout(if std::env::var_os("BENCH_LOG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    command.spawn().context("starting mih")
}
