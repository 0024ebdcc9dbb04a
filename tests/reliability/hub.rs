//! A hub of separate `mih` processes sharing a test's NATS and database: one per service, or
//! (for the cluster scenarios) several replicas of ingest, matcher and dispatcher, each
//! connected to its own node of a NATS cluster. Each process appends its output to
//! `target/reliability/logs/<scenario>/<member>.log`, so a failing scenario can show what each
//! process said.

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

/// Services that run as several replicas in a replicated layout. api and dlq stay single: the
/// scenarios are about the event path.
const REPLICATED: [&str; 3] = ["ingest", "matcher", "dispatcher"];

/// How the hub's processes are laid out over NATS.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Processes per replicated service.
    pub replicas: usize,
    /// The NATS servers; the members are spread over them in turn (a single URL for all when
    /// there is one server).
    pub nats_urls: Vec<String>,
    /// `streams.replicas`.
    pub stream_replicas: usize,
    /// `streams.job_partitions`.
    pub job_partitions: u16,
    /// `streams.event_partitions`.
    pub event_partitions: u16,
}

impl Layout {
    pub fn single(nats_url: String) -> Self {
        Self {
            replicas: 1,
            nats_urls: vec![nats_url],
            stream_replicas: 1,
            job_partitions: 1,
            event_partitions: 1,
        }
    }
}

/// One process of the hub: a service, its name in logs and faults, and its own environment
/// (its NATS server and listen port).
#[derive(Debug, Clone)]
struct Member {
    service: &'static str,
    mih: MihProcesses,
}

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
    /// By member name: the service's name, or `<service>-<n>` for replicas.
    members: BTreeMap<String, Member>,
    processes: BTreeMap<String, Child>,
    logs: PathBuf,
    pub http: reqwest::Client,
}

impl Hub {
    /// Starts every member as its own process and waits until each is ready.
    pub async fn start(scenario: &str, layout: &Layout, database_url: &str) -> Self {
        // Whatever the level asked for, the line saying a service listens is needed.
        let log_level = format!(
            "{},mih::commands=info",
            std::env::var("MIH_RELIABILITY_LOG").unwrap_or_else(|_| "info,sqlx=warn".into())
        );
        let all_nodes = layout.nats_urls.join(",");
        let mut mih = MihProcesses::new(
            env!("CARGO_BIN_EXE_mih"),
            &all_nodes,
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
            .set("MIH_DISPATCHER_ACK_WAIT_MARGIN", "2s")
            .set("MIH_STREAMS_REPLICAS", layout.stream_replicas.to_string())
            .set(
                "MIH_STREAMS_JOB_PARTITIONS",
                layout.job_partitions.to_string(),
            )
            .set(
                "MIH_STREAMS_EVENT_PARTITIONS",
                layout.event_partitions.to_string(),
            );
        let members = members(&mih, layout);
        let logs = output_dir().join("logs").join(scenario);
        let _ = std::fs::remove_dir_all(&logs);
        std::fs::create_dir_all(&logs).expect("log directory");
        let mut hub = Self {
            mih,
            members,
            processes: BTreeMap::new(),
            logs,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .expect("http client"),
        };
        let names: Vec<String> = hub.members.keys().cloned().collect();
        let mut started = BTreeMap::new();
        // api first: it creates the streams and seeds the configuration the others wait for.
        for name in names.iter().filter(|n| n.as_str() == "api") {
            started.insert(name.clone(), hub.spawn(name));
            hub.ensure_listening(name, started[name]).await;
            hub.wait_ready(name).await;
        }
        for name in names.iter().filter(|n| n.as_str() != "api") {
            started.insert(name.clone(), hub.spawn(name));
        }
        for name in names.iter().filter(|n| n.as_str() != "api") {
            hub.ensure_listening(name, started[name]).await;
            hub.wait_ready(name).await;
        }
        hub
    }

    /// The names of the members running `service` (one, or its replicas).
    pub fn members_of(&self, service: &str) -> Vec<String> {
        self.members
            .iter()
            .filter(|(_, member)| member.service == service)
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Waits until `service`, spawned when its log was `log_offset` bytes long, listens. A port
    /// handed out as free can be taken by another test's process before this one binds it (seen
    /// in CI, where that other process even answered this one's readiness probe); a process
    /// that could not listen is started again on a new port.
    async fn ensure_listening(&mut self, name: &str, mut log_offset: usize) {
        let service = self.member(name).service;
        let listening = format!("listening service={service} ");
        for _ in 0..5 {
            let deadline = tokio::time::Instant::now() + READY_WAIT;
            loop {
                let log = std::fs::read(self.log_path(name)).unwrap_or_default();
                let new = log.get(log_offset..).unwrap_or_default();
                if String::from_utf8_lossy(new).contains(&listening) {
                    return;
                }
                let exited = self
                    .processes
                    .get_mut(name)
                    .is_none_or(|child| child.try_wait().ok().flatten().is_some());
                if exited {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{name} never listened:\n{}",
                    String::from_utf8_lossy(new)
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            self.relisten_if_taken(name);
            log_offset = self.spawn(name);
        }
        panic!(
            "{name} could not start five times; see {}",
            self.log_path(name).display()
        );
    }

    fn member(&self, name: &str) -> &Member {
        self.members
            .get(name)
            .unwrap_or_else(|| panic!("no member {name} in this hub"))
    }

    fn relisten_if_taken(&mut self, name: &str) {
        if let Some(member) = self.members.get_mut(name) {
            member
                .mih
                .relisten_if_taken(member.service)
                .expect("a free port");
        }
    }

    pub fn names(&self) -> Names {
        self.mih.names()
    }

    /// Starts member `name`; answers how long its log was before, where the new process's
    /// lines begin.
    fn spawn(&mut self, name: &str) -> usize {
        let offset = std::fs::read(self.log_path(name)).map_or(0, |log| log.len());
        let member = self.member(name);
        let child = member
            .mih
            .spawn(&[member.service], &Output::File(self.log_path(name)))
            .expect("mih starts");
        self.processes.insert(name.to_owned(), child);
        offset
    }

    pub fn log_path(&self, service: &str) -> PathBuf {
        self.logs.join(format!("{service}.log"))
    }

    /// The last lines of each member's log that are warnings or errors.
    pub fn complaints(&self) -> String {
        let mut out = String::new();
        for service in self.members.keys() {
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

    /// A URL of the first member running `service`.
    pub fn url(&self, service: &str, path: &str) -> String {
        let name = self
            .members_of(service)
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("no {service} in this hub"));
        self.member(&name).mih.url(service, path)
    }

    /// The event endpoint of every ingest member: the load spreads over them.
    pub fn ingest_urls(&self) -> Vec<String> {
        self.members_of("ingest")
            .iter()
            .map(|name| self.member(name).mih.url("ingest", "/v1/events"))
            .collect()
    }

    pub async fn wait_ready(&self, name: &str) {
        let member = self.member(name);
        member
            .mih
            .wait_ready(member.service, READY_WAIT)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "{name} never became ready: {e}\n{}",
                    std::fs::read_to_string(self.log_path(name)).unwrap_or_default()
                )
            });
    }

    /// kill -9: no drain, no goodbye.
    pub async fn kill(&mut self, name: &str) {
        if let Some(mut child) = self.processes.remove(name) {
            child.kill().await.expect("SIGKILL");
        }
    }

    /// Starts the member again (same environment, same port unless another process took it
    /// while the member was down) and waits until it is ready.
    pub async fn restart(&mut self, name: &str) {
        self.kill(name).await;
        self.relisten_if_taken(name);
        let offset = self.spawn(name);
        self.ensure_listening(name, offset).await;
        self.wait_ready(name).await;
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

    /// Waits until every ingest member knows the seeded source.
    pub async fn wait_source_known(&self) {
        for name in self.members_of("ingest") {
            self.member(&name)
                .mih
                .wait_source_known(READY_WAIT)
                .await
                .unwrap_or_else(|e| panic!("{name} never learnt the source: {e}"));
        }
    }
}

/// The hub's members: each service once, the replicated ones `layout.replicas` times, spread
/// over the NATS servers in turn so that replicas of one service talk to different nodes.
fn members(base: &MihProcesses, layout: &Layout) -> BTreeMap<String, Member> {
    let mut members = BTreeMap::new();
    let mut next_node = 0;
    let total = SERVICES.len() + REPLICATED.len() * (layout.replicas.max(1) - 1);
    // Chosen together, so that no two members are handed the same port.
    let mut ports = mih_testkit::free_ports(total)
        .expect("free ports")
        .into_iter();
    for service in SERVICES {
        let count = if REPLICATED.contains(&service) {
            layout.replicas.max(1)
        } else {
            1
        };
        for n in 1..=count {
            let name = if count == 1 {
                service.to_owned()
            } else {
                format!("{service}-{n}")
            };
            let mut mih = base.clone();
            if layout.nats_urls.len() > 1 {
                mih.set(
                    "MIH_NATS_URL",
                    layout.nats_urls[next_node % layout.nats_urls.len()].clone(),
                );
                next_node += 1;
            }
            mih.listen_at(service, ports.next().expect("a port per member"));
            members.insert(name, Member { service, mih });
        }
    }
    members
}
