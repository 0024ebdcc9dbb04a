//! The live config: api writes every committed change to the config bucket, ingest follows it,
//! and api repairs the bucket from PostgreSQL.

use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

use mih_shared::ServiceName;
use mih_testkit::sign::{OTHER_SECRET, TEST_SECRET, signed_headers};

use crate::harness::TestHub;

async fn hub() -> TestHub {
    TestHub::builder()
        .services(&[ServiceName::Ingest, ServiceName::Api])
        .start()
        .await
}

/// Every key of the config bucket with its JSON value.
async fn bucket(hub: &TestHub) -> Vec<(String, Value)> {
    let kv = hub
        .js
        .get_key_value(hub.names().config_bucket())
        .await
        .expect("bucket");
    let mut keys: Vec<String> = kv
        .keys()
        .await
        .expect("keys")
        .filter_map(|k| async { k.ok() })
        .collect()
        .await;
    keys.sort();
    let mut entries = Vec::new();
    for key in keys {
        if let Some(bytes) = kv.get(&key).await.expect("get") {
            entries.push((key, serde_json::from_slice(&bytes).expect("JSON value")));
        }
    }
    entries
}

async fn post_with_token(hub: &TestHub, token: &str) -> StatusCode {
    let headers = vec![("authorization".to_owned(), format!("Bearer {token}"))];
    let event = mih_testkit::fixtures::moodle_events()[0].to_string();
    hub.post_events(event.into_bytes(), "application/json", &headers)
        .await
        .status
}

/// Polls every 10 ms until `probe` returns `want`; returns how long it took.
async fn time_until(
    limit: Duration,
    mut probe: impl AsyncFnMut() -> StatusCode,
    want: StatusCode,
) -> Duration {
    let started = Instant::now();
    loop {
        let got = probe().await;
        if got == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "still {got}, not {want}, after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_change_reaches_the_bucket_and_ingest_within_a_second() {
    let hub = hub().await;
    let api = hub.api();
    let token = "fresh-site-token-00000001";
    assert_eq!(post_with_token(&hub, token).await, StatusCode::UNAUTHORIZED);
    let created = api
        .post(
            "/api/v1/sources",
            &json!({"id": "fresh", "bearer_token": token, "signing_secret": TEST_SECRET}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);

    let took = time_until(
        Duration::from_secs(1),
        async || post_with_token(&hub, token).await,
        StatusCode::ACCEPTED,
    )
    .await;
    eprintln!("new source usable at ingest after {took:?}");

    let live = bucket(&hub).await;
    let (_, value) = live
        .iter()
        .find(|(k, _)| k == "source.fresh")
        .expect("source.fresh in KV");
    assert_eq!(value["version"], created.body["version"]);
    assert!(
        value["signing_secrets"][0]["secret"]
            .as_str()
            .unwrap_or_default()
            .starts_with("v1:"),
        "sealed"
    );

    api.post("/api/v1/sources/fresh/disable", &json!({})).await;
    time_until(
        Duration::from_secs(1),
        async || post_with_token(&hub, token).await,
        StatusCode::FORBIDDEN,
    )
    .await;
    api.delete("/api/v1/sources/fresh").await;
    time_until(
        Duration::from_secs(1),
        async || post_with_token(&hub, token).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert!(
        bucket(&hub).await.iter().all(|(k, _)| k != "source.fresh"),
        "deleted from KV"
    );
    hub.stop().await;
}

#[tokio::test]
async fn a_rotated_signing_secret_overlaps_then_only_the_new_one_works() {
    let hub = hub().await;
    let api = hub.api();
    let sign_and_post = async |secret: &str, id: &str| {
        let body = mih_testkit::fixtures::moodle_events()[2].to_string();
        let headers = signed_headers(
            secret,
            "moodle",
            id,
            chrono::Utc::now().timestamp(),
            body.as_bytes(),
        );
        hub.post_events(body.into_bytes(), "application/json", &headers)
            .await
            .status
    };
    assert_eq!(sign_and_post(TEST_SECRET, "m1").await, StatusCode::ACCEPTED);

    let rotated = api
        .patch(
            "/api/v1/sources/moodle",
            &json!({"signing_secret": OTHER_SECRET, "rotation_overlap_secs": 3600}),
        )
        .await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.body);
    let secrets = rotated.body["signing_secrets"].as_array().expect("secrets");
    assert_eq!(secrets.len(), 2);
    assert!(secrets[0]["expires_at"].is_string() && secrets[1]["expires_at"].is_null());
    time_until(
        Duration::from_secs(1),
        async || sign_and_post(OTHER_SECRET, "m2").await,
        StatusCode::ACCEPTED,
    )
    .await;
    assert_eq!(
        sign_and_post(TEST_SECRET, "m3").await,
        StatusCode::ACCEPTED,
        "old secret valid during overlap"
    );

    api.patch(
        "/api/v1/sources/moodle",
        &json!({"signing_secret": TEST_SECRET, "rotation_overlap_secs": 0}),
    )
    .await;
    time_until(
        Duration::from_secs(1),
        async || sign_and_post(OTHER_SECRET, "m4").await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert_eq!(sign_and_post(TEST_SECRET, "m5").await, StatusCode::ACCEPTED);
    hub.stop().await;
}

#[tokio::test]
async fn a_wiped_or_damaged_bucket_is_restored_when_api_restarts() {
    let mut hub = hub().await;
    let api = hub.api();
    api.post(
        "/api/v1/services",
        &json!({"name": "sis", "transport": {"kind": "rest", "base_url": "https://sis.example.org"}}),
    )
    .await;
    let rule = api
        .post(
            "/api/v1/rules",
            &json!({"name": "r", "events": ["*"], "service": "sis"}),
        )
        .await;
    assert_eq!(rule.status, StatusCode::CREATED);
    let before = bucket(&hub).await;
    let keys: Vec<&str> = before.iter().map(|(k, _)| k.as_str()).collect();
    let rule_key = format!("rule.{}", rule.body["id"].as_str().expect("id"));
    assert_eq!(
        keys,
        [
            rule_key.as_str(),
            "service.sis",
            "source.closed",
            "source.moodle"
        ]
    );

    let kv = hub
        .js
        .get_key_value(hub.names().config_bucket())
        .await
        .expect("bucket");
    for (key, _) in &before {
        kv.delete(key).await.expect("delete");
    }
    kv.put(
        "source.ghost",
        bytes::Bytes::from_static(b"{\"stale\": true}"),
    )
    .await
    .expect("put");
    assert_eq!(bucket(&hub).await.len(), 1, "wiped, one stale key left");

    hub.restart().await;
    assert_eq!(
        bucket(&hub).await,
        before,
        "restored exactly, stale key removed"
    );
    // And ingest, restarted with it, reads the restored sources.
    assert_eq!(
        post_with_token(&hub, mih_testkit::sign::TEST_TOKEN).await,
        StatusCode::ACCEPTED
    );
    hub.stop().await;
}

/// The periodic reconcile compares; with nothing changed it writes nothing, so the services
/// following the bucket do not rebuild their rules for nothing every interval.
#[tokio::test]
async fn a_reconcile_with_nothing_changed_writes_nothing() {
    let hub = TestHub::builder()
        .services(&[ServiceName::Api])
        .toml("[api]\nreconcile_interval = \"1s\"")
        .start()
        .await;
    let api = hub.api();
    let created = api
        .post(
            "/api/v1/services",
            &json!({"name": "sis", "transport": {"kind": "rest", "base_url": "https://sis.example.org"},
                    "auth": {"type": "bearer", "token": "sis-token-123456"},
                    "signing_secret": TEST_SECRET}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let rule = api
        .post(
            "/api/v1/rules",
            &json!({"name": "r", "events": ["*"], "service": "sis", "condition": "courseid == 12",
                    "body": "{\"u\": {{userid}}}"}),
        )
        .await;
    assert_eq!(rule.status, StatusCode::CREATED, "{}", rule.body);
    let stream = format!("KV_{}", hub.names().config_bucket());
    let last = || async {
        hub.js
            .get_stream(&stream)
            .await
            .expect("bucket stream")
            .get_info()
            .await
            .expect("info")
            .state
            .last_sequence
    };
    // A first reconcile may still be repairing what the creates raced with; then it settles.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let settled = last().await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        last().await,
        settled,
        "reconciles with nothing changed wrote to the bucket"
    );
    hub.stop().await;
}
