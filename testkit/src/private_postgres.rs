//! A PostgreSQL server of a test's own: `initdb -A trust` into a temporary directory and
//! `pg_ctl start` on a free port, so a test may stop and restart it without touching the
//! machine's cluster, which every other test shares.
//!
//! PostgreSQL refuses to run as root; when the test runs as root, `initdb` and `pg_ctl` run as
//! the `postgres` user (`runuser -u postgres`), which owns the directory.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, bail};
use tokio::process::Command;

use crate::free_port;

/// Override with `MIH_TEST_POSTGRES_BIN=/dir/holding/initdb/and/pg_ctl`.
const BIN_ENV: &str = "MIH_TEST_POSTGRES_BIN";
/// Where Debian installs the server binaries, one folder per major version.
const DEBIAN_LIB: &str = "/usr/lib/postgresql";
/// The user the server runs as when the test runs as root.
const SERVER_USER: &str = "postgres";
/// Longest `pg_ctl` waits for a start or a stop.
const PG_CTL_WAIT_SECS: &str = "60";

#[derive(Debug)]
pub struct PrivatePostgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    running: bool,
}

impl PrivatePostgres {
    /// Creates a cluster and starts it; the server accepts clients when this returns.
    pub async fn start() -> anyhow::Result<Self> {
        let bin = bin_dir()?;
        let dir = tempfile::Builder::new().prefix("mih-postgres-").tempdir()?;
        if running_as_root()? {
            let owned = Command::new("chown")
                .arg(format!("{SERVER_USER}:{SERVER_USER}"))
                .arg(dir.path())
                .status()
                .await
                .context("running chown")?;
            if !owned.success() {
                bail!("cannot give {} to {SERVER_USER}", dir.path().display());
            }
        }
        let mut server = Self {
            bin,
            dir,
            port: 0,
            running: false,
        };
        let data = server.data();
        server
            .run_tool(
                "initdb",
                &[
                    "-A",
                    "trust",
                    "-U",
                    "postgres",
                    "-E",
                    "UTF8",
                    "--no-sync",
                    "-D",
                    path_str(&data)?,
                ],
            )
            .await?;
        // A port freed a moment ago can be taken by someone else before the server binds it.
        let mut last_error = None;
        for _ in 0..5 {
            server.port = free_port()?;
            match server.launch().await {
                Ok(()) => return Ok(server),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("PostgreSQL did not start")))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://postgres@127.0.0.1:<port>/<database>`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    pub fn is_running(&self) -> bool {
        self.running
    }

    /// Stops the server (`pg_ctl stop -m fast`: clients are disconnected, the data is kept).
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if !self.running {
            return Ok(());
        }
        let data = self.data();
        self.run_tool(
            "pg_ctl",
            &[
                "-D",
                path_str(&data)?,
                "-m",
                "fast",
                "-w",
                "-t",
                PG_CTL_WAIT_SECS,
                "stop",
            ],
        )
        .await?;
        self.running = false;
        Ok(())
    }

    /// Starts the server again on the same port with the same data (stopping it first if needed).
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await?;
        self.launch().await
    }

    /// The server's log (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    async fn launch(&mut self) -> anyhow::Result<()> {
        let data = self.data();
        let log = self.dir.path().join("server.log");
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            path_str(self.dir.path())?
        );
        self.run_tool(
            "pg_ctl",
            &[
                "-D",
                path_str(&data)?,
                "-l",
                path_str(&log)?,
                "-o",
                &options,
                "-w",
                "-t",
                PG_CTL_WAIT_SECS,
                "start",
            ],
        )
        .await
        .with_context(|| format!("PostgreSQL did not start: {}", tail(&self.log())))?;
        self.running = true;
        Ok(())
    }

    /// Runs one of the server's tools, as the server's user when we are root.
    async fn run_tool(&self, tool: &str, args: &[&str]) -> anyhow::Result<()> {
        let program = self.bin.join(tool);
        let mut command = if running_as_root()? {
            let mut command = Command::new("runuser");
            command.args(["-u", SERVER_USER, "--"]).arg(&program);
            command
        } else {
            Command::new(&program)
        };
        let output = command
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .await
            .with_context(|| format!("cannot run {}", program.display()))?;
        if !output.status.success() {
            bail!(
                "{tool} failed with {}: {}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }
}

impl Drop for PrivatePostgres {
    /// Stops the server at once (`-m immediate`); the directory goes with the `TempDir`.
    fn drop(&mut self) {
        if !self.running {
            return;
        }
        let program = self.bin.join("pg_ctl");
        let data = self.data();
        let mut command = if running_as_root().unwrap_or(false) {
            let mut command = std::process::Command::new("runuser");
            command.args(["-u", SERVER_USER, "--"]).arg(&program);
            command
        } else {
            std::process::Command::new(&program)
        };
        let _ = command
            .arg("-D")
            .arg(&data)
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn running_as_root() -> anyhow::Result<bool> {
    // `/proc/self` belongs to the process's effective user.
    Ok(std::fs::metadata("/proc/self")
        .context("reading /proc/self")?
        .uid()
        == 0)
}

fn path_str(path: &Path) -> anyhow::Result<&str> {
    path.to_str()
        .with_context(|| format!("{} is not UTF-8", path.display()))
}

fn tail(text: &str) -> &str {
    let start = text.len().saturating_sub(2000);
    text.get(start..).unwrap_or(text)
}

/// `MIH_TEST_POSTGRES_BIN`, else the newest `/usr/lib/postgresql/<version>/bin`.
fn bin_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os(BIN_ENV) {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(DEBIAN_LIB)
        .with_context(|| format!("no PostgreSQL under {DEBIAN_LIB} (set {BIN_ENV})"))?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, bin)) => Ok(bin),
        None => bail!("no initdb under {DEBIAN_LIB}/*/bin (set {BIN_ENV})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn starts_stops_and_restarts_keeping_its_data() {
        let mut server = PrivatePostgres::start().await.expect("starts");
        let url = server.url("postgres");
        let connect = || async {
            use sqlx::Connection;
            sqlx::PgConnection::connect(&url).await
        };
        let mut db = connect().await.expect("connects");
        sqlx::query("CREATE TABLE kept (n int)")
            .execute(&mut db)
            .await
            .expect("creates");
        drop(db);
        server.stop().await.expect("stops");
        assert!(connect().await.is_err(), "stopped means refused");
        server.restart().await.expect("restarts");
        let mut db = connect().await.expect("connects again");
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM kept")
            .fetch_one(&mut db)
            .await
            .expect("table survived");
        assert_eq!(n, 0);
    }
}
