//! Inbound messages: services sending webhooks back towards a Moodle site through ingest
//! (`POST /v1/inbound/{service}`), stored in `<NS>_INBOUND` and pulled by the site's plugin
//! through the API (`GET /api/v1/inbound`, `POST /api/v1/inbound/ack`).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use mih_shared::ServiceName;
use mih_testkit::sign::{OTHER_SECRET, TEST_SECRET, TEST_TOKEN, signed_headers};

use crate::harness::{Answer, TestHub};

/// The `crm` service's inbound secret and token: its own, apart from the Moodle site's.
const INBOUND_SECRET: &str = OTHER_SECRET;
const INBOUND_TOKEN: &str = "crm-inbound-token-0000001";
const OUTBOUND_TOKEN: &str = "crm-outbound-token-000001";

async fn hub(extra_toml: &str) -> TestHub {
    TestHub::builder()
        .services(&[ServiceName::Ingest, ServiceName::Api])
        .toml(extra_toml)
        .start()
        .await
}

/// Creates `crm` with an inbound endpoint for the `moodle` source.
async fn create_crm(hub: &TestHub, rate: u32, burst: u32) {
    let created = hub
        .api()
        .post(
            "/api/v1/services",
            &json!({
                "name": "crm",
                "transport": {"kind": "rest", "base_url": "http://127.0.0.1:9/"},
                "auth": {"type": "bearer", "token": OUTBOUND_TOKEN},
                "inbound": {"source": "moodle", "signing_secret": INBOUND_SECRET,
                            "bearer_token": INBOUND_TOKEN, "rate_limit_per_sec": rate,
                            "burst": burst},
            }),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.body["inbound"]["path"], "/v1/inbound/crm");
    assert_eq!(created.body["inbound"]["signing_secrets"], 1);
    assert_eq!(created.body["inbound"]["bearer_token_set"], true);
    assert!(
        !created.body.to_string().contains(INBOUND_TOKEN),
        "secrets are never shown"
    );
}

/// `(name, value)` pairs of request headers.
type Headers = Vec<(String, String)>;

/// Headers of a webhook signed with `secret` at `timestamp`, with `id`.
fn signed(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Headers {
    signed_headers(secret, "", id, timestamp, body)
        .into_iter()
        .filter(|(name, _)| name != "mih-source")
        .collect()
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

async fn post(
    hub: &TestHub,
    service: &str,
    body: &[u8],
    content_type: &str,
    headers: &[(String, String)],
) -> Answer {
    let mut request = hub
        .http
        .post(hub.url(ServiceName::Ingest, &format!("/v1/inbound/{service}")))
        .header("content-type", content_type)
        .body(body.to_vec());
    for (name, value) in headers {
        request = request.header(name, value);
    }
    Answer::read(request.send().await.expect("ingest answers")).await
}

/// Posts a signed webhook until ingest knows the service (its config arrives by KV).
async fn post_signed_until_accepted(hub: &TestHub, id: &str, body: &[u8]) -> Answer {
    mih_testkit::eventually(Duration::from_secs(20), || async {
        let answer = post(
            hub,
            "crm",
            body,
            "application/json",
            &signed(INBOUND_SECRET, id, now(), body),
        )
        .await;
        if answer.status == StatusCode::ACCEPTED {
            Ok(answer)
        } else {
            Err(format!("{}: {}", answer.status, answer.body))
        }
    })
    .await
    .expect("the webhook is accepted once ingest knows crm")
}

fn cursors(pulled: &Value) -> Vec<u64> {
    pulled["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["cursor"].as_u64().expect("cursor"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_webhook_is_stored_once_and_pulled_by_its_site_until_acknowledged() {
    let hub = hub("").await;
    create_crm(&hub, 100, 100).await;
    let body = br#"{"student": 7, "grade": 42}"#;
    let first = post_signed_until_accepted(&hub, "wh_1", body).await;
    assert_eq!(first.body["duplicate"], false);
    let id = first.body["id"].as_str().expect("id").to_owned();

    // The sender retries the same webhook later (new timestamp, same webhook-id): stored once.
    let again = post(
        &hub,
        "crm",
        body,
        "application/json",
        &signed(INBOUND_SECRET, "wh_1", now() + 1, body),
    )
    .await;
    assert_eq!(again.status, StatusCode::ACCEPTED, "{}", again.body);
    assert_eq!(again.body["duplicate"], true);
    assert_eq!(again.body["id"], id.as_str(), "the original's id");

    // The bearer token instead of a signature; a text body stays text.
    let text = post(
        &hub,
        "crm",
        b"sync finished",
        "text/plain",
        &[("authorization".into(), format!("Bearer {INBOUND_TOKEN}"))],
    )
    .await;
    assert_eq!(text.status, StatusCode::ACCEPTED, "{}", text.body);

    let stored = hub.stored(&hub.names().inbound_stream()).await;
    assert_eq!(stored.len(), 2, "the retry was not stored again");
    let subject = hub.names().inbound_subject(
        &"moodle".parse().expect("source"),
        &"crm".parse().expect("slug"),
    );
    assert!(stored.iter().all(|m| m.subject == subject));
    let traceparent = stored[0].header("traceparent").unwrap_or_default();
    assert_eq!(
        traceparent.split('-').count(),
        4,
        "trace context: {traceparent}"
    );

    // The site pulls both, oldest first, with what its Moodle event needs.
    let pulled = hub.api().get("/api/v1/inbound?source=moodle").await;
    assert_eq!(pulled.status, StatusCode::OK, "{}", pulled.body);
    let messages = pulled.body["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0]["id"], id.as_str());
    assert_eq!(messages[0]["service"], "crm");
    assert_eq!(messages[0]["via"], "webhook");
    assert_eq!(messages[0]["payload"], json!({"student": 7, "grade": 42}));
    assert_eq!(messages[0]["external_id"], "wh_1");
    assert_eq!(messages[1]["payload"], "sync finished");
    assert_eq!(messages[1]["content_type"], "text/plain");
    let [c1, c2] = cursors(&pulled.body)[..] else {
        panic!("two cursors")
    };
    assert!(c1 < c2);
    assert_eq!(pulled.body["next_cursor"], c2);
    assert_eq!(pulled.body["acknowledged"], 0);
    let limited = hub.api().get("/api/v1/inbound?source=moodle&limit=1").await;
    assert_eq!(cursors(&limited.body), [c1]);

    // Acknowledged up to the first: the next pull starts after it; never moves back.
    let ack = hub
        .api()
        .post(
            "/api/v1/inbound/ack",
            &json!({"source": "moodle", "cursor": c1}),
        )
        .await;
    assert_eq!(ack.status, StatusCode::OK, "{}", ack.body);
    assert_eq!(ack.body["acknowledged"], c1);
    let rest = hub.api().get("/api/v1/inbound?source=moodle").await;
    assert_eq!(cursors(&rest.body), [c2]);
    assert_eq!(rest.body["acknowledged"], c1);
    let back = hub
        .api()
        .post(
            "/api/v1/inbound/ack",
            &json!({"source": "moodle", "cursor": 0}),
        )
        .await;
    assert_eq!(back.body["acknowledged"], c1, "never backwards");
    let beyond = hub
        .api()
        .post(
            "/api/v1/inbound/ack",
            &json!({"source": "moodle", "cursor": c2 + 100}),
        )
        .await;
    assert_eq!(beyond.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(beyond.fields(), ["cursor"]);
    let explicit = hub
        .api()
        .get(&format!("/api/v1/inbound?source=moodle&after={c2}"))
        .await;
    assert_eq!(cursors(&explicit.body), Vec::<u64>::new());
    assert_eq!(explicit.body["next_cursor"], c2);

    // A long poll answers as soon as a message arrives.
    let waiting = {
        let http = hub.http.clone();
        let url = hub.url(
            ServiceName::Api,
            &format!("/api/v1/inbound?source=moodle&after={c2}&wait=20"),
        );
        tokio::spawn(async move {
            let response = http
                .get(url)
                .bearer_auth(crate::harness::ADMIN_TOKEN)
                .send()
                .await
                .expect("api answers");
            Answer::read(response).await
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A retried webhook is heard on the subject but never stored: it must not end the wait.
    let retried = post(
        &hub,
        "crm",
        body,
        "application/json",
        &signed(INBOUND_SECRET, "wh_1", now() + 2, body),
    )
    .await;
    assert_eq!(retried.body["duplicate"], true, "{}", retried.body);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let late = br#"{"late": true}"#;
    let posted = post(
        &hub,
        "crm",
        late,
        "application/json",
        &signed(INBOUND_SECRET, "wh_2", now(), late),
    )
    .await;
    assert_eq!(posted.status, StatusCode::ACCEPTED);
    let woke = waiting.await.expect("the long poll ends");
    assert_eq!(woke.status, StatusCode::OK);
    let messages = woke.body["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 1, "{}", woke.body);
    assert_eq!(messages[0]["payload"], json!({"late": true}));

    // Bad pulls name their parameter.
    for (query, field) in [
        ("", "source"),
        ("source=nosuch", "source"),
        ("source=moodle&limit=0", "limit"),
        ("source=moodle&wait=31", "wait"),
        ("source=moodle&after=minus", "query"),
    ] {
        let answer = hub.api().get(&format!("/api/v1/inbound?{query}")).await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{query}");
        assert_eq!(answer.fields(), [field], "{query}: {}", answer.body);
    }
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_unauthenticated_inbound_request_gets_the_same_401() {
    let hub = hub("").await;
    create_crm(&hub, 100, 100).await;
    let quiet = hub
        .api()
        .post(
            "/api/v1/services",
            &json!({"name": "quiet", "transport": {"kind": "rest", "base_url": "http://127.0.0.1:9/"}}),
        )
        .await;
    assert_eq!(quiet.status, StatusCode::CREATED, "{}", quiet.body);
    post_signed_until_accepted(&hub, "wh_ready", b"{}").await;

    let body = br#"{"grade": 1}"#;
    let stale = now() - 600;
    let cases: Vec<(&str, &str, Headers)> = vec![
        ("no credentials", "crm", Vec::new()),
        (
            "another secret",
            "crm",
            signed(TEST_SECRET, "wh_a", now(), body),
        ),
        (
            "a replay outside the tolerance",
            "crm",
            signed(INBOUND_SECRET, "wh_b", stale, body),
        ),
        (
            "a tampered body",
            "crm",
            signed(INBOUND_SECRET, "wh_c", now(), b"{}"),
        ),
        (
            "an unknown service",
            "nosuch",
            signed(INBOUND_SECRET, "wh_d", now(), body),
        ),
        (
            "a service without inbound",
            "quiet",
            signed(INBOUND_SECRET, "wh_e", now(), body),
        ),
        (
            "a wrong bearer token",
            "crm",
            vec![("authorization".into(), "Bearer not-the-crm-token-00".into())],
        ),
        (
            "the Moodle site's own token",
            "crm",
            vec![("authorization".into(), format!("Bearer {TEST_TOKEN}"))],
        ),
        (
            "the outbound token",
            "crm",
            vec![("authorization".into(), format!("Bearer {OUTBOUND_TOKEN}"))],
        ),
    ];
    let refused_before = counter(&hub, "unauthorized").await;
    let mut bodies = Vec::new();
    for (case, service, headers) in &cases {
        let answer = post(&hub, service, body, "application/json", headers).await;
        assert_eq!(
            answer.status,
            StatusCode::UNAUTHORIZED,
            "{case}: {}",
            answer.body
        );
        bodies.push(answer.body.to_string());
    }
    assert!(
        bodies.iter().all(|b| b == &bodies[0]),
        "identical bodies: {bodies:#?}"
    );
    let stored = hub.stored(&hub.names().inbound_stream()).await;
    assert_eq!(stored.len(), 1, "only the accepted webhook");
    assert_eq!(
        counter(&hub, "unauthorized").await - refused_before,
        9,
        "each refusal counted"
    );
    hub.stop().await;
}

/// `mih_ingest_inbound_total{result}` now.
async fn counter(hub: &TestHub, result: &str) -> u64 {
    let line = format!("mih_ingest_inbound_total{{result=\"{result}\"}} ");
    hub.metrics(ServiceName::Ingest)
        .await
        .lines()
        .find_map(|l| l.strip_prefix(&line))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_malformed_and_too_frequent_webhooks_are_refused_clearly() {
    let hub = hub("[ingest]\ninbound_max_body_bytes = 1024").await;
    create_crm(&hub, 1, 3).await;
    post_signed_until_accepted(&hub, "wh_ready", b"{}").await;

    let big = vec![b'x'; 2000];
    let answer = post(
        &hub,
        "crm",
        &big,
        "text/plain",
        &signed(INBOUND_SECRET, "wh_big", now(), &big),
    )
    .await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        answer.body["message"]
            .as_str()
            .is_some_and(|m| m.contains("ingest.inbound_max_body_bytes")),
        "{}",
        answer.body
    );

    let broken = br#"{"grade": "#;
    let answer = post(
        &hub,
        "crm",
        broken,
        "application/json",
        &signed(INBOUND_SECRET, "wh_broken", now(), broken),
    )
    .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.body);
    assert!(
        answer.body["message"]
            .as_str()
            .is_some_and(|m| m.contains("JSON"))
    );

    // Burst 3, one more per second; authenticated requests spend it (the accepted one and the
    // malformed one above), so a quick run of six meets the limit.
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for i in 0..6 {
        let body = format!("{{\"n\": {i}}}");
        let answer = post(
            &hub,
            "crm",
            body.as_bytes(),
            "application/json",
            &signed(INBOUND_SECRET, &format!("wh_n{i}"), now(), body.as_bytes()),
        )
        .await;
        if answer.status == StatusCode::TOO_MANY_REQUESTS {
            retry_after = answer
                .headers
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
        }
        statuses.push(answer.status);
    }
    assert!(
        statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    assert!(retry_after.is_some_and(|s| s >= 1), "{retry_after:?}");
    hub.stop().await;
}

#[tokio::test]
async fn inbound_settings_are_validated_and_never_open() {
    let hub = TestHub::builder()
        .services(&[ServiceName::Api])
        .start()
        .await;
    let base = |inbound: Value| {
        json!({"name": "erp", "transport": {"kind": "rest", "base_url": "http://127.0.0.1:9/"},
               "auth": {"type": "bearer", "token": OUTBOUND_TOKEN}, "inbound": inbound})
    };
    for (inbound, field) in [
        (json!({"source": "moodle"}), "inbound"),
        (json!({"signing_secret": INBOUND_SECRET}), "inbound.source"),
        (
            json!({"source": "nosuch", "signing_secret": INBOUND_SECRET}),
            "inbound.source",
        ),
        (
            json!({"source": "moodle", "signing_secret": "not-a-secret"}),
            "inbound.signing_secret",
        ),
        (
            json!({"source": "moodle", "bearer_token": OUTBOUND_TOKEN}),
            "inbound.bearer_token",
        ),
        (
            json!({"source": "moodle", "bearer_token": "short"}),
            "inbound.bearer_token",
        ),
        (
            json!({"source": "moodle", "bearer_token": INBOUND_TOKEN, "rate_limit_per_sec": 0}),
            "inbound.rate_limit_per_sec",
        ),
    ] {
        let answer = hub
            .api()
            .post("/api/v1/services", &base(inbound.clone()))
            .await;
        assert_eq!(
            answer.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{inbound}: {}",
            answer.body
        );
        assert_eq!(answer.fields(), [field], "{inbound}: {}", answer.body);
    }
    let amqp = hub
        .api()
        .post(
            "/api/v1/services",
            &json!({"name": "queue", "transport": {"kind": "amqp", "host": "127.0.0.1",
                    "routing_key": "out", "response_queue": "replies"}}),
        )
        .await;
    assert_eq!(amqp.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(amqp.fields(), ["transport.response_queue"]);
    // Replying only on its queue, a service needs no webhook credentials (its webhooks are
    // refused, as for any service without them).
    let replies_only = hub
        .api()
        .post(
            "/api/v1/services",
            &json!({"name": "queue", "transport": {"kind": "amqp", "host": "127.0.0.1",
                    "routing_key": "out", "response_queue": "replies"},
                    "inbound": {"source": "moodle"}}),
        )
        .await;
    assert_eq!(
        replies_only.status,
        StatusCode::CREATED,
        "{}",
        replies_only.body
    );
    assert_eq!(replies_only.body["transport"]["response_queue"], "replies");
    assert_eq!(replies_only.body["inbound"]["signing_secrets"], 0);

    // Disabled, it may have no credentials; updating keeps what is left out; null removes it.
    let created = hub
        .api()
        .post(
            "/api/v1/services",
            &base(json!({"source": "moodle", "enabled": false})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let updated = hub
        .api()
        .patch(
            "/api/v1/services/erp",
            &json!({"inbound": {"enabled": true, "bearer_token": INBOUND_TOKEN}}),
        )
        .await;
    assert_eq!(updated.status, StatusCode::OK, "{}", updated.body);
    assert_eq!(updated.body["inbound"]["source"], "moodle");
    assert_eq!(updated.body["inbound"]["enabled"], true);
    assert_eq!(updated.body["inbound"]["rate_limit_per_sec"], 10);
    let removed = hub
        .api()
        .patch("/api/v1/services/erp", &json!({"inbound": null}))
        .await;
    assert_eq!(removed.status, StatusCode::OK, "{}", removed.body);
    assert!(removed.body["inbound"].is_null());
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inbound_log_says_where_each_message_stands_and_the_stats_count_them() {
    let hub = hub("").await;
    create_crm(&hub, 100, 100).await;
    let first = post_signed_until_accepted(&hub, "wh_1", br#"{"n": 1}"#).await;
    let second = post_signed_until_accepted(&hub, "wh_2", br#"{"n": 2}"#).await;
    // A reply the AMQP consumer could not store, as it parks one.
    let parked = mih_shared::messages::ParkedInbound {
        v: mih_shared::messages::Version,
        id: mih_shared::messages::InboundId::new_v7(),
        service: "crm".parse().expect("slug"),
        via: mih_shared::messages::InboundVia::Amqp,
        received_at: chrono::Utc::now(),
        reason: "the body is not UTF-8 text (invalid byte at offset 3)".into(),
        size: 5,
        excerpt: "abc\u{fffd}\u{fffd}".into(),
        external_id: Some("amqp-7".into()),
    };
    hub.js
        .publish(
            hub.names()
                .inbound_parked_subject(&"crm".parse().expect("slug")),
            mih_shared::messages::encode(&parked).expect("json"),
        )
        .await
        .expect("publish")
        .await
        .expect("stored");

    let log = mih_testkit::eventually(Duration::from_secs(20), || async {
        let log = hub.api().get("/api/v1/inbound/log?service=crm").await;
        match log.body["items"].as_array().map(Vec::len) {
            Some(3) => Ok(log),
            other => Err(format!("{other:?} logged: {}", log.body)),
        }
    })
    .await
    .expect("every message logged");
    let items = log.body["items"].as_array().expect("items");
    assert_eq!(items[0]["status"], "parked", "newest first");
    assert_eq!(items[0]["parked_reason"], parked.reason);
    assert_eq!(items[0]["via"], "amqp");
    assert_eq!(items[1]["id"], second.body["id"]);
    assert_eq!(items[1]["status"], "pending");
    assert_eq!(items[1]["excerpt"], r#"{"n":2}"#);
    assert_eq!(items[2]["id"], first.body["id"]);

    // The site acknowledges the first: delivered; the second still waits.
    let cursor = items[2]["cursor"].as_u64().expect("cursor");
    let ack = hub
        .api()
        .post(
            "/api/v1/inbound/ack",
            &json!({"source": "moodle", "cursor": cursor}),
        )
        .await;
    assert_eq!(ack.status, StatusCode::OK, "{}", ack.body);
    let delivered = hub.api().get("/api/v1/inbound/log?status=delivered").await;
    let ids: Vec<&Value> = delivered.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| &i["id"])
        .collect();
    assert_eq!(ids, [&first.body["id"]]);
    let pending = hub.api().get("/api/v1/inbound/log?status=pending").await;
    assert_eq!(pending.body["items"].as_array().map(Vec::len), Some(1));
    let bad = hub.api().get("/api/v1/inbound/log?status=lost").await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(bad.fields(), ["status"]);
    let paged = hub.api().get("/api/v1/inbound/log?limit=2").await;
    let next = paged.body["next_cursor"].as_str().expect("a next page");
    let rest = hub
        .api()
        .get(&format!("/api/v1/inbound/log?limit=2&cursor={next}"))
        .await;
    assert_eq!(rest.body["items"][0]["id"], first.body["id"]);

    // The statistics count them, per service too (the warm-up webhooks are crm's as well).
    let stats = hub.api().get("/api/v1/stats?service=crm").await;
    assert_eq!(
        stats.body["totals"]["inbound"], 3,
        "{}",
        stats.body["totals"]
    );
    assert_eq!(stats.body["totals"]["inbound_parked"], 1);
    let other = hub.api().get("/api/v1/stats?service=quiet").await;
    assert_eq!(other.body["totals"]["inbound"], 0);
    hub.stop().await;
}
