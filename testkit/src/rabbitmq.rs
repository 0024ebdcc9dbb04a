//! RabbitMQ for tests: the machine's broker (127.0.0.1:5672, guest/guest, started by
//! `scripts/dev-deps`) for ordinary tests, and a private [`RabbitMqNode`] per test for the ones
//! that stop or restart the broker — the machine's broker is shared by every test running.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::{eventually, free_port, unique_namespace};

/// The machine's broker.
pub const SYSTEM_HOST: &str = "127.0.0.1";
pub const SYSTEM_PORT: u16 = 5672;

/// Override with `MIH_TEST_RABBITMQ_BIN=/dir/holding/rabbitmq-server/and/rabbitmqctl`.
const BIN_ENV: &str = "MIH_TEST_RABBITMQ_BIN";
/// Debian's real scripts; `/usr/sbin/rabbitmq-*` are wrappers that switch to the `rabbitmq` user,
/// who could not write a node's private directory.
const DEBIAN_BIN: &str = "/usr/lib/rabbitmq/bin";

/// Booting takes 2–5 s on a quiet machine; a busy CI runner can take much longer.
const BOOT_TIMEOUT: Duration = Duration::from_secs(90);
/// A graceful stop takes about 1–2 s; after this the node is killed.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// `amqp://guest:guest@127.0.0.1:5672/%2f`: the machine's broker, default vhost.
pub fn system_url() -> String {
    format!("amqp://guest:guest@{SYSTEM_HOST}:{SYSTEM_PORT}/%2f")
}

/// Runs `rabbitmqctl` against the machine's broker (root or the `rabbitmq` user only) and returns
/// its standard output.
pub async fn system_ctl(args: &[&str]) -> anyhow::Result<String> {
    let mut command = tokio::process::Command::new("rabbitmqctl");
    command.args(args);
    run(command, "rabbitmqctl").await
}

/// A RabbitMQ node of its own: free ports, its data and logs in a temporary directory, the
/// machine's configuration ignored. [`stop`](Self::stop) and [`restart`](Self::restart) keep the
/// port and the data directory, so durable queues and persistent messages survive them.
///
/// The node dies with the test: it reads its standard input from a pipe the test holds, and an
/// Erlang VM reading standard input halts when it closes — so a test process killed before its
/// `Drop` runs leaves no node behind.
#[derive(Debug)]
pub struct RabbitMqNode {
    bin: PathBuf,
    name: String,
    port: u16,
    dist_port: u16,
    dir: tempfile::TempDir,
    running: Option<Running>,
    last_boot: Duration,
}

#[derive(Debug)]
struct Running {
    child: Child,
    /// Dropping it halts the node (see the type's documentation).
    lifeline: ChildStdin,
}

impl RabbitMqNode {
    /// Starts a fresh node and waits until it accepts AMQP clients.
    pub async fn start() -> anyhow::Result<Self> {
        let bin = bin_dir()?;
        // A port freed a moment ago can be taken by someone else before the node binds it.
        let mut last_error = None;
        for _ in 0..3 {
            let mut node = Self::prepare(bin.clone())?;
            match node.launch().await {
                Ok(()) => return Ok(node),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("the RabbitMQ node did not start")))
    }

    fn prepare(bin: PathBuf) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("mih-rabbitmq-").tempdir()?;
        let port = free_port()?;
        let dist_port = free_port()?;
        // The classic Erlang-term format skips the cuttlefish translation of `rabbitmq.conf`,
        // which is a noticeable part of the boot.
        std::fs::write(
            dir.path().join("rabbitmq.config"),
            format!("[{{rabbit, [{{tcp_listeners, [{{\"127.0.0.1\", {port}}}]}}]}}].\n"),
        )?;
        std::fs::write(dir.path().join("enabled_plugins"), "[].\n")?;
        std::fs::write(dir.path().join("rabbitmq-env.conf"), "")?;
        Ok(Self {
            bin,
            name: format!("mih-test-{}@localhost", unique_namespace()),
            port,
            dist_port,
            dir,
            running: None,
            last_boot: Duration::ZERO,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The Erlang node name, for `rabbitmqctl -n`.
    pub fn node_name(&self) -> &str {
        &self.name
    }

    /// `amqp://guest:guest@127.0.0.1:<port>/%2f`.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// How long the last start or restart took until the node accepted clients.
    /// The last `lines` lines of the node's own log (all its boots), for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let mut text = String::new();
        if let Ok(entries) = std::fs::read_dir(self.dir.path().join("log")) {
            for entry in entries.flatten() {
                text.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
            }
        }
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    pub fn last_boot(&self) -> Duration {
        self.last_boot
    }

    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Stops the node gracefully (SIGTERM: what `rabbitmqctl stop` does, without a CLI node).
    /// Its data stays for [`restart`](Self::restart).
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let Some(running) = self.running.take() else {
            return Ok(());
        };
        let status = terminate(running).await?;
        tracing::debug!(node = %self.name, %status, "RabbitMQ node stopped");
        Ok(())
    }

    /// Kills the node (SIGKILL: a crash, no shutdown at all). Its data stays for
    /// [`restart`](Self::restart), which then recovers like after a power cut.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        let Some(running) = self.running.take() else {
            return Ok(());
        };
        let Running {
            mut child,
            lifeline,
        } = running;
        child.kill().context("killing the RabbitMQ node")?;
        tokio::task::spawn_blocking(move || child.wait())
            .await
            .context("waiting for the RabbitMQ node")??;
        drop(lifeline);
        Ok(())
    }

    /// Starts the node again on the same port with the same data (stopping it first if needed).
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await?;
        self.launch().await
    }

    /// Runs `rabbitmqctl` against this node and returns its standard output.
    pub async fn ctl(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut command = tokio::process::Command::new(self.bin.join("rabbitmqctl"));
        command.arg("-n").arg(&self.name).args(args);
        command.envs(self.environment());
        run(command, "rabbitmqctl").await
    }

    async fn launch(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        let log = std::fs::File::create(self.dir.path().join("server.out"))?;
        let mut child = Command::new(self.bin.join("rabbitmq-server"))
            .envs(self.environment())
            // Makes the script exec the VM (so the child is the node itself, and a signal
            // reaches it) and leaves standard input open for the lifeline.
            .env("RABBITMQ_ALLOW_INPUT", "true")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::piped())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| {
                format!("cannot run {}", self.bin.join("rabbitmq-server").display())
            })?;
        let Some(lifeline) = child.stdin.take() else {
            let _ = child.kill();
            bail!("rabbitmq-server's standard input is not a pipe");
        };
        let mut running = Running { child, lifeline };
        match self.wait_ready(&mut running).await {
            Ok(()) => {
                self.last_boot = started.elapsed();
                self.running = Some(running);
                Ok(())
            }
            Err(e) => {
                let _ = running.child.kill();
                let _ = running.child.wait();
                Err(e)
            }
        }
    }

    /// The listener opens last in RabbitMQ's boot, so a TCP connection means it is ready.
    async fn wait_ready(&self, running: &mut Running) -> anyhow::Result<()> {
        let port = self.port;
        let outcome = eventually(BOOT_TIMEOUT, || {
            let exited = running.child.try_wait().ok().flatten();
            async move {
                if let Some(status) = exited {
                    return Ok(Err(status));
                }
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .map(|_| Ok(()))
                    .map_err(|e| e.to_string())
            }
        })
        .await;
        match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(status)) => bail!(
                "the RabbitMQ node exited with {status} while booting: {}",
                self.output_tail()
            ),
            Err(timeout) => bail!(
                "the RabbitMQ node did not accept connections on port {port} ({timeout}): {}",
                self.output_tail()
            ),
        }
    }

    fn environment(&self) -> Vec<(&'static str, OsString)> {
        let dir = self.dir.path();
        vec![
            // HOME holds the Erlang cookie the node and rabbitmqctl share.
            ("HOME", dir.into()),
            ("RABBITMQ_NODENAME", self.name.clone().into()),
            ("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1".into()),
            ("RABBITMQ_NODE_PORT", self.port.to_string().into()),
            ("RABBITMQ_DIST_PORT", self.dist_port.to_string().into()),
            // Keeps the machine's configuration (its listener on 5672, its node name) out.
            (
                "RABBITMQ_CONF_ENV_FILE",
                dir.join("rabbitmq-env.conf").into(),
            ),
            ("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq.config").into()),
            (
                "RABBITMQ_ENABLED_PLUGINS_FILE",
                dir.join("enabled_plugins").into(),
            ),
            ("RABBITMQ_MNESIA_BASE", dir.join("mnesia").into()),
            ("RABBITMQ_LOG_BASE", dir.join("log").into()),
        ]
    }

    fn output_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("server.out")).unwrap_or_default();
        let start = text.len().saturating_sub(2000);
        text.get(start..).unwrap_or(&text).to_owned()
    }
}

impl Drop for RabbitMqNode {
    /// Kills rather than stops: the data is thrown away with the directory, and `Drop` cannot
    /// wait for a graceful shutdown.
    fn drop(&mut self) {
        if let Some(mut running) = self.running.take() {
            let _ = running.child.kill();
            let _ = running.child.wait();
        }
    }
}

/// SIGTERM, then up to [`STOP_GRACE`] for the node to exit, then SIGKILL.
async fn terminate(running: Running) -> anyhow::Result<ExitStatus> {
    let Running {
        mut child,
        lifeline,
    } = running;
    let pid = child.id().to_string();
    signal("TERM", &pid).await?;
    let mut waiter = tokio::task::spawn_blocking(move || {
        let status = child.wait();
        // Closing standard input halts the VM abruptly: only once it has stopped on its own.
        drop(lifeline);
        status
    });
    let status = match tokio::time::timeout(STOP_GRACE, &mut waiter).await {
        Ok(joined) => joined,
        Err(_) => {
            signal("KILL", &pid).await?;
            waiter.await
        }
    };
    Ok(status.context("waiting for the RabbitMQ node")??)
}

async fn signal(name: &str, pid: &str) -> anyhow::Result<()> {
    let status = tokio::process::Command::new("kill")
        .args([&format!("-{name}"), pid])
        .status()
        .await
        .context("cannot run kill")?;
    if !status.success() {
        bail!("kill -{name} {pid} failed: {status}");
    }
    Ok(())
}

async fn run(mut command: tokio::process::Command, what: &str) -> anyhow::Result<String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("cannot run {what}"))?;
    if !output.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn bin_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os(BIN_ENV) {
        return Ok(PathBuf::from(dir));
    }
    if Path::new(DEBIAN_BIN).join("rabbitmq-server").is_file() {
        return Ok(PathBuf::from(DEBIAN_BIN));
    }
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path).find(|dir| dir.join("rabbitmq-server").is_file())
    });
    found.with_context(|| {
        format!("rabbitmq-server is not installed: run scripts/dev-deps (or set {BIN_ENV})")
    })
}
