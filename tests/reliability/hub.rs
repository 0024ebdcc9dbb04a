//! A hub of separate `mih` processes, one per service, sharing a test's NATS and database.
//! Each process appends its output to `target/reliability/logs/<scenario>/<service>.log`, so a
//! failing scenario can show what each service said.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tokio::process::Child;

use mih_shared::names::Names;
use mih_testkit::sign::TEST_TOKEN;
use mih_testkit::{ADMIN_TOKEN, MihProcesses, Output};

/// Every service of the hub, in the order they are started.
pub const SERVICES: [&str; 5] = ["api", "ingest", "matcher", "dispatcher", "dlq"];

const READY_WAIT: Duration = Duration::from_secs(60);

/// Where the reports and logs go: `$CARGO_TARGET_DIR/reliability` or `target/reliability`.
pub fn output_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| mih_testkit::workspace_root().join("target"))
        .join("reliability")
}

pub struct Hub {
    mih: MihProcesses,
    processes: BTreeMap<&'static str, Child>,
    logs: PathBuf,
    pub http: reqwest::Client,
}

impl Hub {
    /// Starts every service as its own process and waits until each is ready.
    pub async fn start(scenario: &str, nats_url: &str, database_url: &str) -> Self {
        // Whatever the level asked for, the line saying a service listens is needed.
        let log_level = format!(
            "{},mih::commands=info",
            std::env::var("MIH_RELIABILITY_LOG").unwrap_or_else(|_| "info,sqlx=warn".into())
        );
        let mut mih = MihProcesses::new(
            env!("CARGO_BIN_EXE_mih"),
            nats_url,
            database_url,
            &log_level,
        );
        mih.set("MIH_DISPATCHER_ALLOW_NETWORKS", "[\"127.0.0.0/8\"]")
            .set(
                "MIH_SOURCES__MOODLE__BEARER_TOKENS",
                format!("[\"{TEST_TOKEN}\"]"),
            )
            // A killed matcher's or dispatcher's unacknowledged messages come back after the
            // ack wait; the defaults (30 s, timeout + 30 s) would outlast a short scenario.
            .set("MIH_MATCHER_ACK_WAIT", "3s")
            .set("MIH_DISPATCHER_ACK_WAIT_MARGIN", "2s");
        mih.listen(&SERVICES).expect("free ports");
        let logs = output_dir().join("logs").join(scenario);
        let _ = std::fs::remove_dir_all(&logs);
        std::fs::create_dir_all(&logs).expect("log directory");
        let mut hub = Self {
            mih,
            processes: BTreeMap::new(),
            logs,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .expect("http client"),
        };
        let mut started = BTreeMap::new();
        for service in SERVICES {
            started.insert(service, hub.spawn(service));
        }
        for service in SERVICES {
            hub.ensure_listening(service, started[service]).await;
            hub.wait_ready(service).await;
        }
        hub
    }

    /// Waits until `service`, spawned when its log was `log_offset` bytes long, listens. A port
    /// handed out as free can be taken by another test's process before this one binds it (seen
    /// in CI, where that other process even answered this one's readiness probe); a process
    /// that could not listen is started again on a new port.
    async fn ensure_listening(&mut self, service: &'static str, mut log_offset: usize) {
        let listening = format!("listening service={service} ");
        for _ in 0..5 {
            let deadline = tokio::time::Instant::now() + READY_WAIT;
            loop {
                let log = std::fs::read(self.log_path(service)).unwrap_or_default();
                let new = log.get(log_offset..).unwrap_or_default();
                if String::from_utf8_lossy(new).contains(&listening) {
                    return;
                }
                let exited = self
                    .processes
                    .get_mut(service)
                    .is_none_or(|child| child.try_wait().ok().flatten().is_some());
                if exited {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{service} never listened:\n{}",
                    String::from_utf8_lossy(new)
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            self.mih.relisten_if_taken(service).expect("a free port");
            log_offset = self.spawn(service);
        }
        panic!(
            "{service} could not start five times; see {}",
            self.log_path(service).display()
        );
    }

    pub fn names(&self) -> Names {
        self.mih.names()
    }

    /// Starts `service`; answers how long its log was before, where the new process's lines begin.
    fn spawn(&mut self, service: &'static str) -> usize {
        let offset = std::fs::read(self.log_path(service)).map_or(0, |log| log.len());
        let child = self
            .mih
            .spawn(&[service], &Output::File(self.log_path(service)))
            .expect("mih starts");
        self.processes.insert(service, child);
        offset
    }

    pub fn log_path(&self, service: &str) -> PathBuf {
        self.logs.join(format!("{service}.log"))
    }

    /// The last lines of each service's log that are warnings or errors.
    pub fn complaints(&self) -> String {
        let mut out = String::new();
        for service in SERVICES {
            let text = std::fs::read_to_string(self.log_path(service)).unwrap_or_default();
            let lines: Vec<&str> = text
                .lines()
                .filter(|line| line.contains("WARN") || line.contains("ERROR"))
                .collect();
            let start = lines.len().saturating_sub(15);
            out.push_str(&format!(
                "--- {service} ({}):\n",
                self.log_path(service).display()
            ));
            for line in &lines[start..] {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    pub fn url(&self, service: &str, path: &str) -> String {
        self.mih.url(service, path)
    }

    pub fn ingest_url(&self) -> String {
        self.url("ingest", "/v1/events")
    }

    pub async fn wait_ready(&self, service: &str) {
        self.mih
            .wait_ready(service, READY_WAIT)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "{service} never became ready: {e}\n{}",
                    std::fs::read_to_string(self.log_path(service)).unwrap_or_default()
                )
            });
    }

    /// kill -9: no drain, no goodbye.
    pub async fn kill(&mut self, service: &'static str) {
        if let Some(mut child) = self.processes.remove(service) {
            child.kill().await.expect("SIGKILL");
        }
    }

    /// Starts the service again (same environment, same port unless another process took it
    /// while the service was down) and waits until it is ready.
    pub async fn restart(&mut self, service: &'static str) {
        self.kill(service).await;
        self.mih.relisten_if_taken(service).expect("a free port");
        let offset = self.spawn(service);
        self.ensure_listening(service, offset).await;
        self.wait_ready(service).await;
    }

    /// An admin API call.
    pub async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, self.url("api", path))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.expect("api answers");
        let status = response.status();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    pub async fn create(&self, path: &str, body: &Value) {
        let (status, answer) = self.api(reqwest::Method::POST, path, Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "POST {path}: {answer}");
    }

    /// Job ids of every dead letter the api lists (the dlq service's projection).
    pub async fn listed_dead_letters(&self) -> Result<Vec<String>, String> {
        let mut ids = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = "/api/v1/dead-letters?limit=500".to_owned();
            if let Some(cursor) = &cursor {
                path.push_str(&format!("&cursor={cursor}"));
            }
            let response = self
                .http
                .get(self.url("api", &path))
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if response.status() != StatusCode::OK {
                return Err(format!("dead letters: {}", response.status()));
            }
            let page: Value = response.json().await.map_err(|e| e.to_string())?;
            for item in page["items"].as_array().into_iter().flatten() {
                if let Some(id) = item["job_id"].as_str() {
                    ids.push(id.to_owned());
                }
            }
            match page["next_cursor"].as_str() {
                Some(next) if !next.is_empty() => cursor = Some(next.to_owned()),
                _ => return Ok(ids),
            }
        }
    }

    /// Waits until ingest knows the seeded source.
    pub async fn wait_source_known(&self) {
        self.mih
            .wait_source_known(READY_WAIT)
            .await
            .unwrap_or_else(|e| panic!("ingest never learnt the source: {e}"));
    }
}
