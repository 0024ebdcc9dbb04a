//! A throwaway nats-server: the pinned binary, a free port, a temporary JetStream store.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

use crate::{eventually, free_port, workspace_root};

/// Override with `MIH_TEST_NATS_SERVER=/path/to/nats-server`.
const BINARY_ENV: &str = "MIH_TEST_NATS_SERVER";

#[derive(Debug)]
pub struct NatsServer {
    bin: PathBuf,
    port: u16,
    store: tempfile::TempDir,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts a server on a free port and waits until it accepts clients.
    pub async fn start() -> anyhow::Result<Self> {
        let bin = binary()?;
        let store = tempfile::Builder::new().prefix("mih-nats-").tempdir()?;
        // A port freed a moment ago can be taken by someone else before we bind it; try again.
        let mut last_error = None;
        for _ in 0..5 {
            let mut server = Self {
                bin: bin.clone(),
                port: free_port()?,
                store: tempfile::Builder::new().prefix("mih-nats-").tempdir()?,
                child: None,
            };
            match server.launch().await {
                Ok(()) => return Ok(server),
                Err(e) => last_error = Some(e),
            }
        }
        drop(store);
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("nats-server did not start")))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The server's process id while it runs (benchmarks read its CPU time).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Kills the server (like a crash: no lame-duck period). Its store survives for `restart`.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await.context("killing nats-server")?;
        }
        Ok(())
    }

    /// Starts the server again on the same port with the same store.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await?;
        let mut last_error = None;
        // The old process may hold the port for a moment after it died.
        for _ in 0..20 {
            match self.launch().await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    last_error = Some(e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("nats-server did not restart")))
    }

    async fn launch(&mut self) -> anyhow::Result<()> {
        let log = std::fs::File::create(self.store.path().join("server.log"))?;
        let mut child = Command::new(&self.bin)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot run {}", self.bin.display()))?;
        let port = self.port;
        let ready = eventually(Duration::from_secs(10), || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .await;
        if let Ok(Some(status)) = child.try_wait() {
            let log =
                std::fs::read_to_string(self.store.path().join("server.log")).unwrap_or_default();
            bail!("nats-server exited with {status}: {log}");
        }
        ready.context("nats-server did not accept connections")?;
        self.child = Some(child);
        Ok(())
    }
}

fn binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os(BINARY_ENV) {
        return Ok(PathBuf::from(path));
    }
    let pinned = workspace_root().join(".tools/nats/bin/nats-server");
    if pinned.is_file() {
        Ok(pinned)
    } else {
        bail!(
            "the pinned nats-server is missing at {}: run scripts/dev-deps (or set {BINARY_ENV})",
            pinned.display()
        )
    }
}
