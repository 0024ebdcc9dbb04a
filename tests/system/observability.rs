//! What SREs watch: every metric the Prometheus rules (`deploy/k8s/files/mih-rules.yml`) and
//! the Grafana dashboard (`deploy/k8s/files/mih-dashboard.json`) reference is one the services
//! really export, checked by scraping every service's `/metrics` after traffic that makes
//! each of them appear.

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use mih_shared::ServiceName;
use mih_testkit::{HttpSink, Reply, fixtures};

use crate::harness::TestHub;

const WAIT: Duration = Duration::from_secs(30);

/// The `mih_…` names a file mentions.
fn referenced(path: &str) -> BTreeSet<String> {
    let text = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("mih_") {
        let start = i + at;
        let end = start
            + text[start..]
                .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(text.len() - start);
        // Only whole names: not the tail of another identifier.
        let whole =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        if whole {
            names.insert(text[start..end].to_owned());
        }
        i = end;
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_rules_and_the_dashboard_use_is_exported() {
    let hub = TestHub::builder()
        .services(&[
            ServiceName::Ingest,
            ServiceName::Matcher,
            ServiceName::Dispatcher,
            ServiceName::Dlq,
            ServiceName::Api,
        ])
        .start()
        .await;
    // Three services: one that takes everything, one that refuses (dead letters), one that is
    // down (its circuit opens and holds its jobs).
    let ok = HttpSink::start().await.expect("sink");
    let refusing = HttpSink::start().await.expect("sink");
    refusing.set_reply(Reply::status(400));
    let down = HttpSink::start().await.expect("sink");
    down.set_reply(Reply::status(503));
    // And one that asks to be called less often: every 429 pauses it.
    let busy = HttpSink::start().await.expect("sink");
    busy.set_reply(Reply::status(429).with_header("retry-after", "1"));
    hub.deliver_everything_to(&ok, "ok", "/events").await;
    hub.deliver_everything_to(&refusing, "refusing", "/events")
        .await;
    hub.deliver_everything_to(&down, "down", "/events").await;
    hub.deliver_everything_to(&busy, "busy", "/events").await;
    let patched = hub
        .api()
        .patch(
            "/api/v1/services/down",
            &json!({"breaker": {"failure_threshold": 1, "cooldown_ms": 600000},
                    "retry": {"max_retries": 3, "backoff_base_ms": 10, "backoff_cap_ms": 20}}),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.body);
    hub.wait_for_config(ServiceName::Dispatcher).await;
    for event in fixtures::moodle_events().iter().take(5) {
        let body = serde_json::to_vec(event).expect("json");
        let answer = hub.post_signed(&body, "application/json").await;
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.body);
    }
    // Refusals: a wrong token at ingest, a webhook for no service.
    let refused = hub
        .post_events(
            b"{}".to_vec(),
            "application/json",
            &[("authorization".into(), "Bearer not-a-token-0000000".into())],
        )
        .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    let webhook = hub
        .http
        .post(hub.url(ServiceName::Ingest, "/v1/inbound/nosuch"))
        .body("{}")
        .send()
        .await
        .expect("ingest answers");
    assert_eq!(webhook.status(), StatusCode::UNAUTHORIZED);
    // A service that answers on an AMQP response queue (the machine's RabbitMQ): its reply
    // consumer runs, and a reply it takes is counted.
    let queue = format!("mih-observability-{}", uuid::Uuid::new_v4().simple());
    amqp_tool("amqp-declare-queue", &["-d", "-q", &queue]);
    let replies = hub
        .api()
        .post(
            "/api/v1/services",
            &json!({"name": "replies", "transport": {"kind": "amqp", "host": "127.0.0.1",
                    "port": 5672, "username": "guest", "password": "guest",
                    "routing_key": "out", "response_queue": queue},
                    "inbound": {"source": "moodle"}}),
        )
        .await;
    assert_eq!(replies.status, StatusCode::CREATED, "{}", replies.body);
    mih_testkit::eventually(WAIT, || async {
        let exported = hub.metrics(ServiceName::Dispatcher).await;
        if exported.contains("mih_dispatcher_reply_consumers{service=\"replies\"} 1") {
            Ok(())
        } else {
            Err("the reply consumer is not consuming yet".to_owned())
        }
    })
    .await
    .expect("the reply consumer runs");
    amqp_tool(
        "amqp-publish",
        &[
            "-r",
            &queue,
            "-C",
            "application/json",
            "-b",
            "{\"grade\": 7}",
        ],
    );
    // An outcome nobody can read: the recorder parks it.
    hub.js
        .publish(
            hub.names().result_subject(&"ok".parse().expect("slug")),
            "not an outcome".into(),
        )
        .await
        .expect("publish")
        .await
        .expect("stored");

    let mut wanted = referenced("deploy/k8s/files/mih-rules.yml");
    wanted.extend(referenced("deploy/k8s/files/mih-dashboard.json"));
    assert!(wanted.len() >= 10, "{wanted:?}");
    let missing = mih_testkit::eventually(WAIT, || async {
        let mut exported = String::new();
        for service in [
            ServiceName::Ingest,
            ServiceName::Matcher,
            ServiceName::Dispatcher,
            ServiceName::Dlq,
            ServiceName::Api,
        ] {
            exported.push_str(&hub.metrics(service).await);
        }
        let missing: Vec<&String> = wanted
            .iter()
            .filter(|name| {
                !exported.lines().any(|line| {
                    line.starts_with(&format!("{name}{{")) || line.starts_with(&format!("{name} "))
                })
            })
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("not exported (yet): {missing:?}"))
        }
    })
    .await;
    missing.expect("every referenced metric is exported");
    hub.stop().await;
}

/// Runs one of Debian's amqp-tools (installed by scripts/dev-deps) against the machine's
/// RabbitMQ.
fn amqp_tool(tool: &str, args: &[&str]) {
    let output = std::process::Command::new(tool)
        .args(["--url", &mih_testkit::rabbitmq::system_url()])
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("{tool} cannot run ({e}): scripts/dev-deps installs amqp-tools")
        });
    assert!(
        output.status.success(),
        "{tool}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The alert rules are valid and each alert fires, with its labels and words, on the series
/// of `deploy/k8s/files/mih-rules.test.yml` — and not before its `for`.
#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/k8s/files");
    for args in [
        ["check", "rules", "mih-rules.yml"],
        ["test", "rules", "mih-rules.test.yml"],
    ] {
        let output = std::process::Command::new("promtool")
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap_or_else(|e| {
                panic!("promtool cannot run ({e}): scripts/dev-deps installs Debian's prometheus")
            });
        assert!(
            output.status.success(),
            "promtool {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
