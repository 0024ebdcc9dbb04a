//! The real `mih` binary: starting every service, draining on SIGTERM, and refusing to start
//! with a message that names the setting to fix.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use reqwest::StatusCode;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

use mih_shared::ServiceName;
use mih_testkit::{NatsServer, TestDatabase, free_port, unique_namespace};

fn mih() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mih"));
    // Only what the test sets: no MIH_* from the surrounding environment.
    command.env_clear().kill_on_drop(true);
    command
}

fn listen_everything_on_port_zero(command: &mut Command) {
    for service in ServiceName::ALL {
        command.env(
            format!("MIH_{}_LISTEN", service.as_str().to_uppercase()),
            "127.0.0.1:0",
        );
    }
}

/// Reads JSON log lines until every service said where it listens.
async fn listening_addrs(child: &mut Child) -> BTreeMap<String, String> {
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut lines = BufReader::new(stdout).lines();
    let mut addrs = BTreeMap::new();
    let read = async {
        while let Ok(Some(line)) = lines.next_line().await {
            let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if let (true, Some(service), Some(addr)) = (
                entry["message"] == "listening",
                entry["service"].as_str(),
                entry["addr"].as_str(),
            ) {
                addrs.insert(service.to_owned(), addr.to_owned());
            }
            if addrs.len() == ServiceName::ALL.len() {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("every service logs where it listens");
    // Keep draining stdout so the process never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    addrs
}

#[tokio::test]
async fn mih_run_starts_every_service_and_drains_on_sigterm() {
    let nats = NatsServer::start().await.expect("nats");
    let db = TestDatabase::create().await.expect("database");
    let mut command = mih();
    command
        .arg("run")
        .env("MIH_NAMESPACE", unique_namespace())
        .env("MIH_NATS_URL", nats.url())
        .env("MIH_DATABASE_URL", db.url())
        .env("MIH_TELEMETRY_LOG_FORMAT", "json")
        .stdout(Stdio::piped());
    listen_everything_on_port_zero(&mut command);
    let mut child = command.spawn().expect("mih starts");
    let addrs = listening_addrs(&mut child).await;
    assert_eq!(addrs.len(), 5, "{addrs:?}");

    let http = reqwest::Client::new();
    for (service, addr) in &addrs {
        mih_testkit::wait_until_ok(&format!("http://{addr}/readyz"), Duration::from_secs(15))
            .await
            .unwrap_or_else(|e| panic!("{service} not ready: {e}"));
        let metrics = http
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .expect("metrics");
        assert_eq!(metrics.status(), StatusCode::OK);
    }

    let pid = child.id().expect("running").to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .expect("kill runs");
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("mih exits after SIGTERM")
        .expect("exit status");
    assert!(status.success(), "mih exits 0 after draining, got {status}");
}

async fn expect_startup_failure(command: &mut Command) -> String {
    let output = tokio::time::timeout(
        Duration::from_secs(30),
        command
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .output(),
    )
    .await
    .expect("mih gives up in time")
    .expect("mih runs");
    assert!(!output.status.success(), "mih must exit non-zero");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn startup_gives_up_on_unreachable_nats_naming_the_setting() {
    let port = free_port().expect("port");
    let stderr = expect_startup_failure(
        mih()
            .args(["run", "--service", "ingest"])
            .env("MIH_NATS_URL", format!("nats://127.0.0.1:{port}"))
            .env("MIH_NATS_CONNECT_TIMEOUT", "1s")
            .env("MIH_INGEST_LISTEN", "127.0.0.1:0"),
    )
    .await;
    assert!(stderr.contains("cannot reach NATS"), "{stderr}");
    assert!(
        stderr.contains("nats.url") && stderr.contains("MIH_NATS_URL"),
        "{stderr}"
    );
}

#[tokio::test]
async fn startup_gives_up_on_unreachable_postgres_naming_the_setting() {
    let nats = NatsServer::start().await.expect("nats");
    let port = free_port().expect("port");
    let stderr = expect_startup_failure(
        mih()
            .args(["run", "--service", "api"])
            .env("MIH_NATS_URL", nats.url())
            .env(
                "MIH_DATABASE_URL",
                format!("postgres://postgres@127.0.0.1:{port}/mih"),
            )
            .env("MIH_DATABASE_CONNECT_TIMEOUT", "1s")
            .env("MIH_API_LISTEN", "127.0.0.1:0"),
    )
    .await;
    assert!(stderr.contains("cannot reach PostgreSQL"), "{stderr}");
    assert!(stderr.contains("MIH_DATABASE_URL"), "{stderr}");
}

/// Speaks just enough of the NATS protocol to look like a 2.9 server.
async fn fake_old_nats() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let info = format!(
                    "INFO {{\"server_id\":\"FAKE\",\"server_name\":\"fake\",\"version\":\"2.9.10\",\"go\":\"go1.19.8\",\
                     \"host\":\"127.0.0.1\",\"port\":{port},\"headers\":true,\"max_payload\":1048576,\
                     \"proto\":1,\"jetstream\":true}}\r\n"
                );
                if socket.write_all(info.as_bytes()).await.is_err() {
                    return;
                }
                let mut buffer = [0u8; 4096];
                while let Ok(read) = socket.read(&mut buffer).await {
                    if read == 0 {
                        break;
                    }
                    if String::from_utf8_lossy(&buffer[..read]).contains("PING")
                        && socket.write_all(b"PONG\r\n").await.is_err()
                    {
                        break;
                    }
                }
            });
        }
    });
    port
}

#[tokio::test]
async fn startup_refuses_nats_older_than_2_10() {
    let port = fake_old_nats().await;
    let stderr = expect_startup_failure(
        mih()
            .args(["run", "--service", "ingest"])
            .env("MIH_NATS_URL", format!("nats://127.0.0.1:{port}"))
            .env("MIH_INGEST_LISTEN", "127.0.0.1:0"),
    )
    .await;
    assert!(
        stderr.contains("2.9.10") && stderr.contains("2.10 or newer"),
        "{stderr}"
    );
}

#[tokio::test]
async fn config_errors_name_the_setting_and_dump_hides_secrets() {
    let bad = mih()
        .args(["config", "dump"])
        .env("MIH_INGEST_MAX_BATCH_EVENTS", "lots")
        .output()
        .await
        .expect("runs");
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("MIH_INGEST_MAX_BATCH_EVENTS"), "{stderr}");

    let unknown = mih()
        .args(["config", "dump"])
        .env("MIH_NATS_URRL", "x")
        .output()
        .await
        .expect("runs");
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("urrl"));

    let dump = mih()
        .args([
            "config",
            "dump",
            "--database-url",
            "postgres://mih:s3cret-pw@db/mih",
        ])
        .env(
            "MIH_SOURCES__MOODLE__BEARER_TOKENS",
            "[\"bearer-secret-value-1\"]",
        )
        .output()
        .await
        .expect("runs");
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let stdout = String::from_utf8_lossy(&dump.stdout);
    assert!(
        stdout.contains("postgres://mih:<redacted>@db/mih"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("s3cret-pw") && !stdout.contains("bearer-secret-value-1"),
        "{stdout}"
    );
}

#[tokio::test]
async fn traces_are_exported_over_otlp_when_the_endpoint_is_set() {
    let nats = NatsServer::start().await.expect("nats");
    let db = TestDatabase::create().await.expect("database");
    let collector = mih_testkit::OtlpCollector::start()
        .await
        .expect("collector");
    let ingest_port = free_port().expect("port");
    let namespace = unique_namespace();
    let mut child = mih()
        .args(["run", "--service", "ingest,api"])
        .env("MIH_NAMESPACE", &namespace)
        .env("MIH_NATS_URL", nats.url())
        .env("MIH_DATABASE_URL", db.url())
        .env("MIH_INGEST_LISTEN", format!("127.0.0.1:{ingest_port}"))
        .env("MIH_API_LISTEN", "127.0.0.1:0")
        .env(
            "MIH_SOURCES__MOODLE__BEARER_TOKENS",
            format!("[\"{}\"]", mih_testkit::sign::TEST_TOKEN),
        )
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url())
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .stdout(Stdio::null())
        .spawn()
        .expect("mih starts");

    let http = reqwest::Client::new();
    let event = mih_testkit::fixtures::moodle_events()[0].to_string();
    let url = format!("http://127.0.0.1:{ingest_port}/v1/events");
    mih_testkit::eventually(Duration::from_secs(15), || {
        let (http, url, event) = (http.clone(), url.clone(), event.clone());
        async move {
            let response = http
                .post(&url)
                .bearer_auth(mih_testkit::sign::TEST_TOKEN)
                .header("content-type", "application/json")
                .body(event)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            match response.status() {
                StatusCode::ACCEPTED => Ok(()),
                status => Err(status.to_string()),
            }
        }
    })
    .await
    .expect("event accepted");

    // The trace id the event carries on to the next hop...
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.expect("connect"));
    let stream = js
        .get_stream(
            mih_shared::names::Names::new(namespace.parse().expect("namespace")).events_stream(),
        )
        .await
        .expect("stream");
    let stored = stream.direct_get(1).await.expect("stored event");
    let traceparent = stored
        .headers
        .get("traceparent")
        .expect("traceparent")
        .as_str()
        .to_owned();
    let trace_id = traceparent.split('-').nth(1).expect("trace id").to_owned();

    // ...is the trace of spans the collector received, from a resource named `mih`.
    let spans = mih_testkit::eventually(Duration::from_secs(15), || {
        let spans = collector.trace(&trace_id);
        let exports = collector.exports();
        let trace_id = &trace_id;
        async move {
            if spans.is_empty() {
                Err(format!(
                    "{exports} export requests, none with trace {trace_id}"
                ))
            } else {
                Ok(spans)
            }
        }
    })
    .await
    .expect("spans exported");
    for span in &spans {
        assert_eq!(span.service, "mih", "{span:?}");
        assert_eq!(
            span.resource.get("service.namespace"),
            Some(&namespace),
            "{span:?}"
        );
    }
    assert!(
        spans.iter().any(|s| s.name == "POST /v1/events"),
        "{spans:?}"
    );

    let pid = child.id().expect("running").to_string();
    Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .expect("kill");
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("exits")
        .expect("status");
    assert!(status.success());
}
