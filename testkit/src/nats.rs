//! A throwaway nats-server: the pinned binary, a free port, a temporary JetStream store; and a
//! JetStream cluster of three such servers routed to each other on loopback.

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
    cluster: Option<Membership>,
}

/// What makes a server one node of a cluster: its name, its route port and its peers'.
#[derive(Debug, Clone)]
struct Membership {
    cluster_name: String,
    server_name: String,
    route_port: u16,
    monitor_port: u16,
    peers: Vec<u16>,
    /// The server's `server_tags`, which placement can ask for.
    tags: Vec<String>,
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
                cluster: None,
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

    /// The server's name in its cluster (`n0`, `n1`, …), as JetStream reports stream leaders.
    pub fn name(&self) -> Option<&str> {
        self.cluster.as_ref().map(|m| m.server_name.as_str())
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The server's log so far (it survives restarts: each launch appends).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.store.path().join("server.log")
    }

    async fn launch(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let mut command = Command::new(&self.bin);
        command
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.store.path());
        if let Some(member) = &self.cluster {
            let routes = member
                .peers
                .iter()
                .map(|port| format!("nats://127.0.0.1:{port}"))
                .collect::<Vec<_>>()
                .join(",");
            command
                .args(["-n", &member.server_name])
                .args(["--cluster_name", &member.cluster_name])
                .args([
                    "--cluster",
                    &format!("nats://127.0.0.1:{}", member.route_port),
                ])
                .args(["--routes", &routes])
                .args(["-m", &member.monitor_port.to_string()]);
            if !member.tags.is_empty() {
                // Tags exist only in the configuration file; the flags above still win.
                let file = self.store.path().join("tags.conf");
                let quoted: Vec<String> = member.tags.iter().map(|t| format!("{t:?}")).collect();
                std::fs::write(&file, format!("server_tags: [{}]\n", quoted.join(", ")))?;
                command.arg("-c").arg(file);
            }
        }
        let mut child = command
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
            bail!("nats-server exited with {status}: {}", self.log());
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

/// Three nats-servers with JetStream, routed to each other on loopback: enough for R3 streams
/// to keep accepting writes (two of three) while one node is down.
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<NatsServer>,
}

impl NatsCluster {
    pub const SIZE: usize = 3;

    /// Starts the nodes and waits until JetStream has a meta leader and every node is healthy.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_tagged(&[&[], &[], &[]]).await
    }

    /// The same, node `i` carrying the `server_tags` `tags[i]`.
    pub async fn start_tagged(tags: &[&[&str]; Self::SIZE]) -> anyhow::Result<Self> {
        let mut last_error = None;
        // Ports freed a moment ago can be taken before the servers bind them; start over.
        for _ in 0..3 {
            match Self::try_start(tags).await {
                Ok(cluster) => return Ok(cluster),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("the NATS cluster did not start")))
    }

    async fn try_start(tags: &[&[&str]; Self::SIZE]) -> anyhow::Result<Self> {
        let bin = binary()?;
        let ports = crate::free_ports(Self::SIZE * 3)?;
        let cluster_name = format!(
            "mih-test-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let route_ports: Vec<u16> = ports[Self::SIZE..Self::SIZE * 2].to_vec();
        let mut nodes = Vec::with_capacity(Self::SIZE);
        for i in 0..Self::SIZE {
            nodes.push(NatsServer {
                bin: bin.clone(),
                port: ports[i],
                store: tempfile::Builder::new().prefix("mih-nats-").tempdir()?,
                child: None,
                cluster: Some(Membership {
                    cluster_name: cluster_name.clone(),
                    server_name: format!("n{i}"),
                    route_port: route_ports[i],
                    monitor_port: ports[Self::SIZE * 2 + i],
                    peers: route_ports
                        .iter()
                        .enumerate()
                        .filter(|&(j, _)| j != i)
                        .map(|(_, &port)| port)
                        .collect(),
                    tags: tags[i].iter().map(|&t| t.to_owned()).collect(),
                }),
            });
        }
        let mut cluster = Self { nodes };
        for node in &mut cluster.nodes {
            node.launch().await?;
        }
        cluster.wait_healthy(Duration::from_secs(30)).await?;
        cluster.wait_placeable(tags).await?;
        Ok(cluster)
    }

    /// Waits until the meta leader can place a stream on all the servers, and on every tag's.
    /// A healthy cluster can still refuse for a while: the leader learns a peer's resources
    /// and tags from the peer's statistics, which may not have reached it yet ("no suitable
    /// peers for placement", with or without "tags not matched", seen in CI and in the full
    /// suite on a loaded machine for over 50 s).
    async fn wait_placeable(&self, tags: &[&[&str]; Self::SIZE]) -> anyhow::Result<()> {
        let mut distinct: Vec<&str> = tags.iter().flat_map(|t| t.iter().copied()).collect();
        distinct.sort_unstable();
        distinct.dedup();
        let client = async_nats::connect(self.urls())
            .await
            .context("connecting to the cluster")?;
        let js = async_nats::jetstream::new(client);
        // Every node (no tag: what an R3 stream needs; CI saw "no suitable peers for placement"
        // after /healthz was fine), then each tag's nodes.
        let probes = std::iter::once((None, Self::SIZE)).chain(
            distinct
                .into_iter()
                .map(|tag| (Some(tag), tags.iter().filter(|t| t.contains(&tag)).count())),
        );
        for (tag, holders) in probes {
            let label = tag.unwrap_or("all");
            let name = format!("PLACEMENT_PROBE_{label}");
            eventually(Duration::from_secs(120), || {
                let (js, name) = (&js, &name);
                async move {
                    js.create_stream(async_nats::jetstream::stream::Config {
                        name: name.clone(),
                        subjects: vec![format!("placement-probe.{label}")],
                        storage: async_nats::jetstream::stream::StorageType::Memory,
                        num_replicas: holders,
                        placement: tag.map(|tag| async_nats::jetstream::stream::Placement {
                            tags: vec![tag.to_owned()],
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| format!("placing on {label}: {e}"))?;
                    js.delete_stream(name)
                        .await
                        .map_err(|e| format!("deleting the probe: {e}"))?;
                    Ok(())
                }
            })
            .await
            .with_context(|| {
                format!("the cluster could not place a stream on the {label:?} servers")
            })?;
        }
        Ok(())
    }

    /// Every node's client URL (what `async_nats::connect` takes for a cluster).
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(NatsServer::url).collect()
    }

    /// Every node's client URL, comma-separated: what mih's `nats.url` takes for a cluster.
    pub fn setting(&self) -> String {
        self.urls().join(",")
    }

    pub fn node(&self, index: usize) -> &NatsServer {
        &self.nodes[index % self.nodes.len()]
    }

    pub fn node_mut(&mut self, index: usize) -> &mut NatsServer {
        let len = self.nodes.len();
        &mut self.nodes[index % len]
    }

    /// The index of the node called `name` (as JetStream names a stream's leader).
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|node| node.name() == Some(name))
    }

    /// Waits until every running node answers its monitoring `/healthz` with JetStream ready
    /// (a meta leader elected, its streams current).
    pub async fn wait_healthy(&self, timeout: Duration) -> anyhow::Result<()> {
        let http = reqwest::Client::new();
        let urls: Vec<String> = self
            .nodes
            .iter()
            .filter(|node| node.is_running())
            .filter_map(|node| node.cluster.as_ref())
            .map(|member| format!("http://127.0.0.1:{}/healthz", member.monitor_port))
            .collect();
        eventually(timeout, || {
            let http = &http;
            let urls = &urls;
            async move {
                for url in urls {
                    let response = http.get(url).send().await.map_err(|e| e.to_string())?;
                    if !response.status().is_success() {
                        let body = response.text().await.unwrap_or_default();
                        return Err(format!("{url}: {body}"));
                    }
                }
                Ok(())
            }
        })
        .await
        .context("the NATS cluster did not become healthy")
    }
}
