//! The real `mih` binary as a child process, its output captured.

use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

/// `mih` with only the environment the test gives it.
pub fn mih() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mih"));
    command.env_clear().kill_on_drop(true);
    command
}

pub struct MihProcess {
    child: Child,
    output: Arc<Mutex<String>>,
}

fn collect(stream: impl AsyncRead + Unpin + Send + 'static, into: Arc<Mutex<String>>) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Ok(mut text) = into.lock() {
                text.push_str(&line);
                text.push('\n');
            }
        }
    });
}

impl MihProcess {
    /// Runs `mih <args>` with `env`, collecting stdout and stderr.
    pub fn spawn(args: &[&str], env: &[(&str, String)]) -> Self {
        let mut command = mih();
        command
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("mih starts");
        let output = Arc::new(Mutex::new(String::new()));
        if let Some(stdout) = child.stdout.take() {
            collect(stdout, Arc::clone(&output));
        }
        if let Some(stderr) = child.stderr.take() {
            collect(stderr, Arc::clone(&output));
        }
        Self { child, output }
    }

    pub fn output(&self) -> String {
        self.output
            .lock()
            .map(|text| text.clone())
            .unwrap_or_default()
    }

    /// Waits for the process to end by itself.
    pub async fn wait(mut self, limit: Duration) -> (ExitStatus, String) {
        let status = tokio::time::timeout(limit, self.child.wait())
            .await
            .expect("mih ends in time")
            .expect("exit status");
        // Let the readers drain what is left in the pipes.
        tokio::time::sleep(Duration::from_millis(50)).await;
        (status, self.output())
    }

    /// SIGTERM, then waits for the drain.
    pub async fn stop(self) -> (ExitStatus, String) {
        let pid = self.child.id().expect("running").to_string();
        let killed = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .expect("kill runs");
        assert!(killed.success());
        self.wait(Duration::from_secs(30)).await
    }
}
