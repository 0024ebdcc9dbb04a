//! A hub of separate `mih` processes, one per service, sharing a test's NATS and database.
//! Each process appends its output to `target/reliability/logs/<scenario>/<service>.log`, so a
//! failing scenario can show what each service said.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tokio::process::{Child, Command};

use mih_shared::names::Names;
use mih_testkit::sign::TEST_TOKEN;
use mih_testkit::{eventually, free_ports, unique_namespace};

/// Every service of the hub, in the order they are started.
pub const SERVICES: [&str; 5] = ["api", "ingest", "matcher", "dispatcher", "dlq"];

pub const ADMIN_TOKEN: &str = "reliability-admin-token-0123456789abcdef";
const SECRET_KEY: &str = "q2Vp2Nv5rPfBk0pO2Kq7pZbJm0Ck4YqZp0dJmQ8v3Xo=";
const READY_WAIT: Duration = Duration::from_secs(60);

/// Where the reports and logs go: `$CARGO_TARGET_DIR/reliability` or `target/reliability`.
pub fn output_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| mih_testkit::workspace_root().join("target"))
        .join("reliability")
}

pub struct Hub {
    pub namespace: String,
    env: Vec<(String, String)>,
    ports: BTreeMap<&'static str, u16>,
    processes: BTreeMap<&'static str, Child>,
    logs: PathBuf,
    pub http: reqwest::Client,
}

impl Hub {
    /// Starts every service as its own process and waits until each is ready.
    pub async fn start(scenario: &str, nats_url: &str, database_url: &str) -> Self {
        let namespace = unique_namespace();
        let mut ports = BTreeMap::new();
        let mut env = vec![
            ("MIH_NAMESPACE".to_owned(), namespace.clone()),
            ("MIH_NATS_URL".to_owned(), nats_url.to_owned()),
            ("MIH_DATABASE_URL".to_owned(), database_url.to_owned()),
            ("MIH_SECRET_KEY".to_owned(), SECRET_KEY.to_owned()),
            (
                "MIH_BOOTSTRAP_ADMIN_TOKEN".to_owned(),
                ADMIN_TOKEN.to_owned(),
            ),
            (
                "MIH_TELEMETRY_LOG_LEVEL".to_owned(),
                std::env::var("MIH_RELIABILITY_LOG").unwrap_or_else(|_| "info,sqlx=warn".into()),
            ),
            (
                "MIH_DISPATCHER_ALLOW_NETWORKS".to_owned(),
                "[\"127.0.0.0/8\"]".to_owned(),
            ),
            (
                "MIH_SOURCES__MOODLE__BEARER_TOKENS".to_owned(),
                format!("[\"{TEST_TOKEN}\"]"),
            ),
            // A killed matcher's or dispatcher's unacknowledged messages come back after the
            // ack wait; the defaults (30 s, timeout + 30 s) would outlast a short scenario.
            ("MIH_MATCHER_ACK_WAIT".to_owned(), "3s".to_owned()),
            ("MIH_DISPATCHER_ACK_WAIT_MARGIN".to_owned(), "2s".to_owned()),
        ];
        let free = free_ports(SERVICES.len()).expect("free ports");
        for (service, port) in SERVICES.into_iter().zip(free) {
            ports.insert(service, port);
            env.push((
                format!("MIH_{}_LISTEN", service.to_uppercase()),
                format!("127.0.0.1:{port}"),
            ));
        }
        let logs = output_dir().join("logs").join(scenario);
        let _ = std::fs::remove_dir_all(&logs);
        std::fs::create_dir_all(&logs).expect("log directory");
        let mut hub = Self {
            namespace,
            env,
            ports,
            processes: BTreeMap::new(),
            logs,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .expect("http client"),
        };
        for service in SERVICES {
            hub.spawn(service);
        }
        for service in SERVICES {
            hub.wait_ready(service).await;
        }
        hub
    }

    pub fn names(&self) -> Names {
        Names::new(self.namespace.parse().expect("namespace"))
    }

    fn spawn(&mut self, service: &'static str) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(service))
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_mih"))
            .args(["run", "--service", service])
            .env_clear()
            .envs(self.env.iter().map(|(name, value)| (name, value)))
            .stdout(Stdio::from(log.try_clone().expect("log file")))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .expect("mih starts");
        self.processes.insert(service, child);
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
        format!("http://127.0.0.1:{}{path}", self.ports[service])
    }

    pub fn ingest_url(&self) -> String {
        self.url("ingest", "/v1/events")
    }

    pub async fn wait_ready(&self, service: &str) {
        let url = self.url(service, "/readyz");
        mih_testkit::wait_until_ok(&url, READY_WAIT)
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
        if std::net::TcpListener::bind(("127.0.0.1", self.ports[service])).is_err() {
            // Seen in CI: a killed matcher's port was reused by another test's connection
            // and the restarted matcher could not listen.
            let port = free_ports(1).expect("a free port")[0];
            self.ports.insert(service, port);
            let key = format!("MIH_{}_LISTEN", service.to_uppercase());
            for (name, value) in &mut self.env {
                if *name == key {
                    *value = format!("127.0.0.1:{port}");
                }
            }
        }
        self.spawn(service);
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

    /// Waits until ingest knows the seeded source (an empty batch is 400, not 401).
    pub async fn wait_source_known(&self) {
        let url = self.ingest_url();
        eventually(READY_WAIT, || {
            let request = self
                .http
                .post(&url)
                .bearer_auth(TEST_TOKEN)
                .header("content-type", "application/json")
                .body("[]")
                .send();
            async move {
                match request.await {
                    Ok(r) if r.status() == StatusCode::BAD_REQUEST => Ok(()),
                    Ok(r) => Err(r.status().to_string()),
                    Err(e) => Err(e.to_string()),
                }
            }
        })
        .await
        .unwrap_or_else(|e| panic!("ingest never learnt the source: {e}"));
    }
}
