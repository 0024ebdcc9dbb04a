//! A real SOAP server for tests: spyne (`testkit/soap/server.py`, installed into `.tools/spyne`
//! by `scripts/dev-deps`) on a free port, serving a Moodle-flavoured service over SOAP 1.1 and
//! 1.2 and recording every request it receives.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

use crate::{eventually, free_port, workspace_root};

/// The service's target namespace; its elements are qualified.
pub const NAMESPACE: &str = "urn:mih:test:moodle";

const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// The running server. Killed when dropped; it also exits by itself when its standard input
/// closes, so a test process that dies does not leave it behind.
#[derive(Debug)]
pub struct SoapServer {
    port: u16,
    http: reqwest::Client,
    logs: tempfile::TempDir,
    _child: Child,
    _stdin: ChildStdin,
}

/// One request the server received.
#[derive(Debug, Clone, Deserialize)]
pub struct ReceivedSoap {
    pub method: String,
    /// `/soap11` or `/soap12`.
    pub path: String,
    pub query: String,
    /// Lower-case names, as the server's WSGI layer saw them.
    pub headers: BTreeMap<String, String>,
    /// The request body, as sent.
    pub envelope: String,
    /// The UsernameToken of a `wsse:Security` header, if there was one.
    pub ws_security: Option<WsSecurity>,
    /// The operation spyne ran and its arguments after XML decoding; `None` when the envelope
    /// did not get that far (invalid against the schema).
    pub call: Option<SoapCall>,
}

impl ReceivedSoap {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct WsSecurity {
    pub must_understand: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub password_type: Option<String>,
    pub nonce: Option<String>,
    pub nonce_encoding: Option<String>,
    pub created: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SoapCall {
    pub operation: String,
    pub args: serde_json::Map<String, serde_json::Value>,
}

impl SoapServer {
    /// Starts the server on a free port and waits for its ready line.
    pub async fn start() -> anyhow::Result<Self> {
        let root = workspace_root();
        let python = root.join(".tools/spyne/bin/python");
        if !python.is_file() {
            bail!(
                "spyne is not installed ({} is missing): run scripts/dev-deps",
                python.display()
            );
        }
        let script = root.join("testkit/soap/server.py");
        // A port freed a moment ago can be taken by someone else before the server binds it.
        let mut last_error = None;
        for _ in 0..5 {
            match Self::launch(&python, &script, free_port()?).await {
                Ok(server) => return Ok(server),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("the SOAP server did not start")))
    }

    async fn launch(python: &Path, script: &Path, port: u16) -> anyhow::Result<Self> {
        let logs = tempfile::Builder::new().prefix("mih-soap-").tempdir()?;
        let log_path = logs.path().join("server.log");
        let mut child = Command::new(python)
            .arg(script)
            .arg(port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(&log_path)?))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot run {}", python.display()))?;
        let stdin = child.stdin.take().context("the server's stdin")?;
        let stdout = child.stdout.take().context("the server's stdout")?;
        let expected = format!("ready {port}");
        let ready = tokio::time::timeout(READY_TIMEOUT, async {
            let mut lines = BufReader::new(stdout).lines();
            while let Some(line) = lines.next_line().await? {
                if line.trim() == expected {
                    return Ok(true);
                }
            }
            Ok::<_, std::io::Error>(false)
        })
        .await;
        match ready {
            Ok(Ok(true)) => Ok(SoapServer {
                port,
                http: reqwest::Client::new(),
                logs,
                _child: child,
                _stdin: stdin,
            }),
            Ok(Ok(false)) | Ok(Err(_)) => bail!(
                "the SOAP server exited before it was ready: {}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            ),
            Err(_) => bail!(
                "the SOAP server was not ready within {READY_TIMEOUT:?}: {}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            ),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The SOAP 1.1 endpoint.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/soap11", self.port)
    }

    /// The SOAP 1.2 endpoint.
    pub fn url_12(&self) -> String {
        format!("http://127.0.0.1:{}/soap12", self.port)
    }

    /// A URL that answers `status` with a non-SOAP body (`Retry-After: 7` on 429 and 503).
    pub fn status_url(&self, status: u16) -> String {
        format!("http://127.0.0.1:{}/_status/{status}", self.port)
    }

    /// The server's stderr so far (spyne's tracebacks), for a failing test's message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.logs.path().join("server.log")
    }

    /// Every request answered so far, oldest first (a request shows up once spyne has run it).
    pub async fn received(&self) -> anyhow::Result<Vec<ReceivedSoap>> {
        let url = format!("http://127.0.0.1:{}/_received", self.port);
        let response = self.http.get(&url).send().await?.error_for_status()?;
        Ok(response.json().await?)
    }

    /// Waits until at least `n` requests were received.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> anyhow::Result<Vec<ReceivedSoap>> {
        Ok(eventually(timeout, || async {
            let received = self.received().await.map_err(|e| e.to_string())?;
            if received.len() >= n {
                Ok(received)
            } else {
                Err(format!("{} of {n} requests received", received.len()))
            }
        })
        .await?)
    }
}
