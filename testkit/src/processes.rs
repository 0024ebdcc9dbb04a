//! A hub run as real `mih` processes sharing one NATS, one database and one namespace: the
//! reliability suite starts one process per service (to kill them one by one), the benchmarks
//! one process for several services. Both need the same environment, ports and readiness waits.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use mih_shared::names::Names;

use crate::sign::TEST_TOKEN;
use crate::{Timeout, eventually, free_ports, unique_namespace, wait_until_ok};

/// The bootstrap admin token of every hub started here.
pub const ADMIN_TOKEN: &str = "mih-testkit-admin-token-0123456789abcdef";

/// Encrypts the hub's stored secrets (a fixed key: test data only).
const SECRET_KEY: &str = "q2Vp2Nv5rPfBk0pO2Kq7pZbJm0Ck4YqZp0dJmQ8v3Xo=";

/// Where a process's stdout and stderr go.
#[derive(Debug, Clone)]
pub enum Output {
    /// Appended to this file (kept after a failure, to show what the service said).
    File(PathBuf),
    /// stdout dropped, stderr to the caller's stderr: a measurement stays readable but an error
    /// still shows.
    ErrorsOnly,
    /// Both to the caller's.
    Inherit,
}

/// The environment and ports of a hub's `mih` processes; spawns them on demand.
#[derive(Debug, Clone)]
pub struct MihProcesses {
    binary: PathBuf,
    namespace: String,
    env: BTreeMap<String, String>,
    ports: BTreeMap<String, u16>,
}

impl MihProcesses {
    /// A hub in a namespace of its own on `nats_url` and `database_url`, with the admin token
    /// [`ADMIN_TOKEN`] and the given `MIH_TELEMETRY_LOG_LEVEL`.
    pub fn new(
        binary: impl Into<PathBuf>,
        nats_url: &str,
        database_url: &str,
        log_level: &str,
    ) -> Self {
        let namespace = unique_namespace();
        let mut processes = Self {
            binary: binary.into(),
            namespace: namespace.clone(),
            env: BTreeMap::new(),
            ports: BTreeMap::new(),
        };
        processes
            .set("MIH_NAMESPACE", namespace)
            .set("MIH_NATS_URL", nats_url)
            .set("MIH_DATABASE_URL", database_url)
            .set("MIH_SECRET_KEY", SECRET_KEY)
            .set("MIH_BOOTSTRAP_ADMIN_TOKEN", ADMIN_TOKEN)
            .set("MIH_TELEMETRY_LOG_LEVEL", log_level);
        processes
    }

    /// Sets (or replaces) one environment variable of every process spawned from now on.
    pub fn set(&mut self, name: &str, value: impl Into<String>) -> &mut Self {
        self.env.insert(name.to_owned(), value.into());
        self
    }

    /// Gives each of `services` its own free port on 127.0.0.1. The ports are chosen together
    /// so that no two services are handed the same one.
    pub fn listen(&mut self, services: &[&str]) -> std::io::Result<&mut Self> {
        for (service, port) in services.iter().zip(free_ports(services.len())?) {
            self.assign(service, port);
        }
        Ok(self)
    }

    /// Makes `service` listen on `port` (chosen by the caller, e.g. with
    /// [`free_ports`](crate::free_ports) together with other processes' ports).
    pub fn listen_at(&mut self, service: &str, port: u16) -> &mut Self {
        self.assign(service, port);
        self
    }

    /// Lets `service` listen on any port: for processes nobody calls over HTTP.
    pub fn listen_anywhere(&mut self, service: &str) -> &mut Self {
        self.set(&listen_variable(service), "127.0.0.1:0");
        self
    }

    /// Moves `service` to a new free port if its old one was taken while it was down (seen in
    /// CI: a killed matcher's port was reused by another test's connection, and the restarted
    /// matcher could not listen).
    pub fn relisten_if_taken(&mut self, service: &str) -> std::io::Result<()> {
        let Some(port) = self.port(service) else {
            return Ok(());
        };
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            let port = free_ports(1)?[0];
            self.assign(service, port);
        }
        Ok(())
    }

    fn assign(&mut self, service: &str, port: u16) {
        self.ports.insert(service.to_owned(), port);
        self.set(&listen_variable(service), format!("127.0.0.1:{port}"));
    }

    /// `mih run --service <services>` with exactly this hub's environment; killed when dropped.
    pub fn spawn(&self, services: &[&str], output: &Output) -> std::io::Result<Child> {
        let (stdout, stderr) = match output {
            Output::File(path) => {
                let file = OpenOptions::new().create(true).append(true).open(path)?;
                (Stdio::from(file.try_clone()?), Stdio::from(file))
            }
            Output::ErrorsOnly => (Stdio::null(), Stdio::inherit()),
            Output::Inherit => (Stdio::inherit(), Stdio::inherit()),
        };
        Command::new(&self.binary)
            .args(["run", "--service", &services.join(",")])
            .env_clear()
            .envs(&self.env)
            .stdout(stdout)
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
    }

    /// `http://127.0.0.1:<port of service><path>`. Panics if `service` was given no port with
    /// [`listen`](Self::listen): a harness bug, not a test outcome.
    pub fn url(&self, service: &str, path: &str) -> String {
        let port = self
            .port(service)
            .unwrap_or_else(|| panic!("{service} was given no port"));
        format!("http://127.0.0.1:{port}{path}")
    }

    pub fn port(&self, service: &str) -> Option<u16> {
        self.ports.get(service).copied()
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn names(&self) -> Names {
        Names::new(
            self.namespace
                .parse()
                .unwrap_or_else(|e| panic!("unique_namespace made {}: {e}", self.namespace)),
        )
    }

    /// Waits until `service` answers 200 on `/readyz`.
    pub async fn wait_ready(&self, service: &str, timeout: Duration) -> Result<(), Timeout> {
        wait_until_ok(&self.url(service, "/readyz"), timeout).await
    }

    /// Waits until ingest knows the source whose bearer token is [`TEST_TOKEN`]: an empty batch
    /// is then 400 (nothing to take), not 401. Ingest learns sources from the live
    /// configuration, a moment after api seeds them.
    pub async fn wait_source_known(&self, timeout: Duration) -> Result<(), Timeout> {
        let http = reqwest::Client::new();
        let url = self.url("ingest", "/v1/events");
        eventually(timeout, || {
            let request = http
                .post(&url)
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
    }
}

fn listen_variable(service: &str) -> String {
    format!("MIH_{}_LISTEN", service.to_uppercase())
}
