//! ingest against a real NATS server: what is stored, what is refused, and outages.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use mih_shared::ServiceName;
use mih_shared::moodle::EventName;
use mih_testkit::fixtures;
use mih_testkit::sign::{OTHER_SECRET, TEST_SECRET, TEST_TOKEN, signed_headers};

use crate::harness::{Answer, CLOSED_TOKEN, TestHub};

const JSON: &str = "application/json";
const NDJSON: &str = "application/x-ndjson";

/// ingest, with api providing its sources (seeded from the test configuration).
async fn ingest_hub() -> TestHub {
    TestHub::builder()
        .services(&[ServiceName::Ingest, ServiceName::Api])
        .start()
        .await
}

fn expected_subject(hub: &TestHub, event: &Value) -> String {
    let name =
        EventName::parse(event["eventname"].as_str().expect("eventname")).expect("valid name");
    hub.names()
        .event_subject(&"moodle".parse().expect("source id"), &name)
}

fn accepted_ids(answer: &Answer) -> Vec<String> {
    answer.body["events"]
        .as_array()
        .expect("events list")
        .iter()
        .map(|e| e["id"].as_str().expect("id").to_owned())
        .collect()
}

/// Every fixture is in EVENTS exactly once, in order, on its subject, with its id, dedup key,
/// message id and trace context, its data as Moodle gave it.
async fn assert_fixtures_stored(hub: &TestHub, ids: &[String], dedup_keys: &[String]) {
    let fixtures = fixtures::moodle_events();
    let stored = hub.stored_events().await;
    assert_eq!(stored.len(), fixtures.len(), "each event stored once");
    for (i, ((message, fixture), id)) in stored.iter().zip(&fixtures).zip(ids).enumerate() {
        let event = message.event();
        assert_eq!(&event.id.to_string(), id, "event {i}: id as answered");
        assert_eq!(event.id.as_uuid().get_version_num(), 7, "event {i}: UUIDv7");
        assert_eq!(event.source.as_str(), "moodle");
        assert_eq!(event.dedup_key, dedup_keys[i], "event {i}: dedup key");
        assert_eq!(
            &Value::Object(event.data.clone().into()),
            fixture,
            "event {i}: data as sent"
        );
        assert_eq!(
            message.subject,
            expected_subject(hub, fixture),
            "event {i}: subject"
        );
        assert_eq!(
            message.header("Nats-Msg-Id"),
            Some(format!("moodle:{}", event.dedup_key))
        );
        assert_eq!(message.header("Mih-Event-Id"), Some(id.clone()));
        let traceparent = message.header("traceparent").unwrap_or_default();
        let parts: Vec<_> = traceparent.split('-').collect();
        assert!(
            parts.len() == 4 && parts[1].len() == 32 && parts[2].len() == 16,
            "event {i}: traceparent `{traceparent}`"
        );
    }
}

#[tokio::test]
async fn fixtures_posted_one_by_one_are_stored_once_with_ids_and_traceparent() {
    let hub = ingest_hub().await;
    let mut ids = Vec::new();
    let mut keys = Vec::new();
    for (i, event) in fixtures::moodle_events().iter().enumerate() {
        let body = serde_json::to_vec(event).expect("json");
        let webhook_id = format!("msg_single_{i}");
        let headers = signed_headers(
            TEST_SECRET,
            "moodle",
            &webhook_id,
            chrono::Utc::now().timestamp(),
            &body,
        );
        let answer = hub.post_events(body, JSON, &headers).await;
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.body);
        assert_eq!(answer.body["accepted"], 1);
        assert_eq!(answer.body["events"][0]["dedup_key"], webhook_id.as_str());
        ids.extend(accepted_ids(&answer));
        keys.push(webhook_id);
    }
    assert_fixtures_stored(&hub, &ids, &keys).await;
    hub.stop().await;
}

#[tokio::test]
async fn fixtures_posted_as_an_array_are_stored_once_even_when_posted_twice() {
    let hub = ingest_hub().await;
    let body = serde_json::to_vec(&fixtures::moodle_events()).expect("json");
    let headers = signed_headers(
        TEST_SECRET,
        "moodle",
        "msg_batch",
        chrono::Utc::now().timestamp(),
        &body,
    );
    let first = hub.post_events(body.clone(), JSON, &headers).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.body);
    assert_eq!(
        (
            first.body["accepted"].as_u64(),
            first.body["duplicates"].as_u64()
        ),
        (Some(40), Some(0))
    );

    // The shim retries the same request: every event is recognised, the answer gives the same ids.
    let again = hub.post_events(body, JSON, &headers).await;
    assert_eq!(again.status, StatusCode::ACCEPTED);
    assert_eq!(
        (
            again.body["accepted"].as_u64(),
            again.body["duplicates"].as_u64()
        ),
        (Some(0), Some(40))
    );
    assert_eq!(accepted_ids(&again), accepted_ids(&first));
    assert!(
        again.body["events"]
            .as_array()
            .expect("list")
            .iter()
            .all(|e| e["status"] == "duplicate")
    );

    let keys: Vec<String> = (0..40).map(|i| format!("msg_batch#{i}")).collect();
    assert_fixtures_stored(&hub, &accepted_ids(&first), &keys).await;
    hub.stop().await;
}

#[tokio::test]
async fn fixtures_posted_as_ndjson_are_stored_once() {
    let hub = ingest_hub().await;
    let body = fixtures::moodle_events_ndjson().as_bytes();
    let headers = signed_headers(
        TEST_SECRET,
        "moodle",
        "msg_lines",
        chrono::Utc::now().timestamp(),
        body,
    );
    let answer = hub.post_events(body.to_vec(), NDJSON, &headers).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.body);
    assert_eq!(answer.body["accepted"], 40);
    let keys: Vec<String> = (0..40).map(|i| format!("msg_lines#{i}")).collect();
    assert_fixtures_stored(&hub, &accepted_ids(&answer), &keys).await;
    hub.stop().await;
}

#[tokio::test]
async fn the_same_webhook_id_twice_stores_one_event_and_says_duplicate() {
    let hub = ingest_hub().await;
    let body = serde_json::to_vec(&fixtures::moodle_events()[4]).expect("json");
    let now = chrono::Utc::now().timestamp();
    let first = hub
        .post_events(
            body.clone(),
            JSON,
            &signed_headers(TEST_SECRET, "moodle", "msg_dup", now, &body),
        )
        .await;
    // A redelivery is signed again (new timestamp) but keeps its webhook-id.
    let second = hub
        .post_events(
            body.clone(),
            JSON,
            &signed_headers(TEST_SECRET, "moodle", "msg_dup", now + 1, &body),
        )
        .await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    assert_eq!(second.status, StatusCode::ACCEPTED);
    assert_eq!(first.body["events"][0]["status"], "accepted");
    assert_eq!(second.body["events"][0]["status"], "duplicate");
    assert_eq!(second.body["duplicates"], 1);
    assert_eq!(
        second.body["events"][0]["id"],
        first.body["events"][0]["id"]
    );
    assert_eq!(hub.stored_events().await.len(), 1);
    hub.stop().await;
}

/// The Moodle plugin resends an event in whatever batch it next sends: a keyed item is the same
/// event in any request, while the rest of each batch is new.
#[tokio::test]
async fn keyed_items_are_recognised_in_any_batch() {
    let hub = ingest_hub().await;
    let events = fixtures::moodle_events();
    let keyed = |key: &str, event: &Value| json!({"idempotency_key": key, "event": event});
    let first = serde_json::to_vec(&json!([
        keyed("row-1", &events[0]),
        keyed("row-2", &events[1])
    ]))
    .expect("json");
    let second = serde_json::to_vec(&json!([
        keyed("row-2", &events[1]),
        events[2].clone(),
        keyed("row-3", &events[3])
    ]))
    .expect("json");
    let one = hub.post_signed(&first, JSON).await;
    let two = hub.post_signed(&second, JSON).await;
    assert_eq!(one.status, StatusCode::ACCEPTED, "{}", one.body);
    assert_eq!(two.status, StatusCode::ACCEPTED, "{}", two.body);
    let statuses: Vec<&str> = two.body["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["status"].as_str().expect("status"))
        .collect();
    assert_eq!(statuses, ["duplicate", "accepted", "accepted"]);
    assert_eq!(two.body["events"][0]["id"], one.body["events"][1]["id"]);
    assert_eq!(two.body["events"][0]["dedup_key"], "row-2");
    let keys: Vec<String> = hub
        .stored_events()
        .await
        .iter()
        .map(|m| m.event().dedup_key)
        .collect();
    assert_eq!(keys.len(), 4, "{keys:?}");
    assert_eq!(&keys[..2], ["row-1", "row-2"]);
    assert!(
        keys[2].ends_with("#1"),
        "an unkeyed item keeps its batch key: {keys:?}"
    );
    assert_eq!(keys[3], "row-3");

    // A key that is no key is refused like any invalid field, naming the item.
    let bad = serde_json::to_vec(&json!([
        keyed("fine", &events[4]),
        {"idempotency_key": 7, "event": events[5]},
        keyed("has space", &events[6])
    ]))
    .expect("json");
    let refused = hub.post_signed(&bad, JSON).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    let named: Vec<(u64, &str)> = refused.body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| {
            (
                e["index"].as_u64().expect("index"),
                e["field"].as_str().expect("field"),
            )
        })
        .collect();
    assert_eq!(named, [(1, "idempotency_key"), (2, "idempotency_key")]);
    assert_eq!(
        hub.stored_events().await.len(),
        4,
        "nothing of a refused request is stored"
    );
    hub.stop().await;
}

#[tokio::test]
async fn unsigned_events_dedup_on_their_content_and_idempotency_key() {
    let hub = ingest_hub().await;
    let events = fixtures::moodle_events();
    let body = serde_json::to_vec(&events[10]).expect("json");
    let a = hub.post_bearer(&body, JSON).await;
    let b = hub.post_bearer(&body, JSON).await;
    assert_eq!(a.body["events"][0]["status"], "accepted");
    assert_eq!(
        b.body["events"][0]["status"], "duplicate",
        "same content, same event"
    );
    assert!(
        a.body["events"][0]["dedup_key"]
            .as_str()
            .unwrap_or_default()
            .starts_with("sha256:")
    );

    // Same content under an explicit Idempotency-Key is a different delivery.
    let headers = vec![
        ("authorization".to_owned(), format!("Bearer {TEST_TOKEN}")),
        ("idempotency-key".to_owned(), "order-42".to_owned()),
    ];
    let keyed = hub.post_events(body.clone(), JSON, &headers).await;
    assert_eq!(keyed.body["events"][0]["status"], "accepted");
    assert_eq!(keyed.body["events"][0]["dedup_key"], "order-42");

    // Two events differing only in courseid are two events (the original plugin merged them).
    let mut viewed = events
        .iter()
        .find(|e| e["eventname"] == "\\core\\event\\course_viewed")
        .expect("fixture")
        .clone();
    let first = hub
        .post_bearer(&serde_json::to_vec(&viewed).expect("json"), JSON)
        .await;
    viewed["courseid"] = json!(57);
    viewed["contextinstanceid"] = json!(57);
    let second = hub
        .post_bearer(&serde_json::to_vec(&viewed).expect("json"), JSON)
        .await;
    assert_eq!(first.body["events"][0]["status"], "accepted");
    assert_eq!(second.body["events"][0]["status"], "accepted");
    assert_eq!(hub.stored_events().await.len(), 4);
    hub.stop().await;
}

#[tokio::test]
async fn bad_credentials_are_refused_and_nothing_is_stored() {
    let hub = ingest_hub().await;
    let body = serde_json::to_vec(&fixtures::moodle_events()[0]).expect("json");
    let now = chrono::Utc::now().timestamp();
    let mut tampered_body = body.clone();
    tampered_body.extend_from_slice(b" ");

    type Headers = Vec<(String, String)>;
    let cases: Vec<(&str, Vec<u8>, Headers)> = vec![
        (
            "tampered body",
            tampered_body,
            signed_headers(TEST_SECRET, "moodle", "m1", now, &body),
        ),
        (
            "wrong secret",
            body.clone(),
            signed_headers(OTHER_SECRET, "moodle", "m2", now, &body),
        ),
        (
            "stale timestamp",
            body.clone(),
            signed_headers(TEST_SECRET, "moodle", "m3", now - 600, &body),
        ),
        (
            "timestamp from the future",
            body.clone(),
            signed_headers(TEST_SECRET, "moodle", "m4", now + 600, &body),
        ),
        (
            "unknown source",
            body.clone(),
            signed_headers(TEST_SECRET, "nobody", "m5", now, &body),
        ),
        ("no credentials", body.clone(), vec![]),
        (
            "bad bearer token",
            body.clone(),
            vec![(
                "authorization".into(),
                "Bearer not-a-token-of-anyone".into(),
            )],
        ),
    ];
    for (case, body, headers) in cases {
        let answer = hub.post_events(body, JSON, &headers).await;
        assert_eq!(
            answer.status,
            StatusCode::UNAUTHORIZED,
            "{case}: {}",
            answer.body
        );
        assert_eq!(answer.body["error"], "unauthorized", "{case}");
        assert!(
            answer.body["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{case}"
        );
    }
    let stale = hub
        .post_events(
            body.clone(),
            JSON,
            &signed_headers(TEST_SECRET, "moodle", "m6", now - 600, &body),
        )
        .await;
    assert!(
        stale.body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("webhook-timestamp"),
        "{}",
        stale.body
    );

    let closed = hub
        .post_events(
            body.clone(),
            JSON,
            &[("authorization".into(), format!("Bearer {CLOSED_TOKEN}"))],
        )
        .await;
    assert_eq!(closed.status, StatusCode::FORBIDDEN, "{}", closed.body);

    assert!(hub.stored_events().await.is_empty(), "nothing stored");
    hub.stop().await;
}

#[tokio::test]
async fn bad_input_is_refused_naming_item_and_field() {
    let hub = TestHub::builder()
        .services(&[ServiceName::Ingest, ServiceName::Api])
        .toml("[ingest]\nmax_body_bytes = 65536\nmax_batch_events = 5\nmax_event_bytes = 8192\n")
        .start()
        .await;
    let events = fixtures::moodle_events();

    let malformed = hub.post_signed(b"{\"eventname\": ", JSON).await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    assert!(
        malformed.body["errors"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("not valid JSON")
    );

    let mut wrong = events[2].clone();
    wrong["crud"] = json!("x");
    wrong["userid"] = json!("12abc");
    let batch = json!([events[0], events[1], wrong]);
    let answer = hub.post_signed(batch.to_string().as_bytes(), JSON).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.body);
    assert_eq!(answer.body["error"], "invalid_input");
    let named: Vec<(u64, String)> = answer.body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| {
            (
                e["index"].as_u64().unwrap_or(99),
                e["field"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(named, [(2, "crud".to_owned()), (2, "userid".to_owned())]);

    let mut nameless = events[0].clone();
    nameless
        .as_object_mut()
        .expect("object")
        .remove("eventname");
    let answer = hub.post_signed(nameless.to_string().as_bytes(), JSON).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.body["errors"][0]["field"], "eventname");
    assert_eq!(answer.body["errors"][0]["index"], 0);

    let huge_body = vec![b' '; 70_000];
    let answer = hub.post_signed(&huge_body, JSON).await;
    assert_eq!(
        answer.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        answer.body
    );
    assert!(
        answer.body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("ingest.max_body_bytes")
    );

    let six = serde_json::to_vec(&events[..6]).expect("json");
    let answer = hub.post_signed(&six, JSON).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer.body["errors"][0]["field"], "batch");

    let mut fat = events[3].clone();
    fat["other"] = json!({ "blob": "x".repeat(10_000) });
    let answer = hub
        .post_signed(json!([events[0], fat]).to_string().as_bytes(), JSON)
        .await;
    assert_eq!(
        answer.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        answer.body
    );
    assert_eq!(answer.body["errors"][0]["index"], 1);

    let answer = hub
        .post_signed(events[0].to_string().as_bytes(), "text/plain")
        .await;
    assert_eq!(answer.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    assert!(
        hub.stored_events().await.is_empty(),
        "nothing half-accepted"
    );
    hub.stop().await;
}

#[tokio::test]
async fn awkward_but_valid_events_and_queued_task_wrappers_are_accepted_as_sent() {
    let hub = ingest_hub().await;
    let awkward = json!({
        "eventname": "mod_quiz\\event\\attempt_submitted", "component": "mod_quiz",
        "action": "submitted", "target": "attempt", "objecttable": "quiz_attempts",
        "objectid": "5000000000", "crud": "u", "edulevel": 2, "contextid": "533",
        "contextlevel": 70, "contextinstanceid": 415, "userid": "27", "courseid": 12,
        "relateduserid": null, "anonymous": 1,
        "other": [{"deep": {"er": ["ü", "日本", "\"quoted\" \\ back"]}}],
        "timecreated": 1772010000, "origin": "web", "ip": "10.0.0.7", "realuserid": null
    });
    let wrapper =
        json!({"ruleid": 3, "eventdata": fixtures::moodle_events()[7], "eventcontextid": 1201});
    let body = format!("{awkward}\n{wrapper}\n");
    let answer = hub.post_signed(body.as_bytes(), NDJSON).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.body);

    let stored = hub.stored_events().await;
    assert_eq!(stored.len(), 2);
    let first = stored[0].event();
    assert_eq!(
        first.data["eventname"], "\\mod_quiz\\event\\attempt_submitted",
        "normalised"
    );
    assert_eq!(first.data["objectid"], "5000000000", "kept as sent");
    assert_eq!(first.data["other"], awkward["other"]);
    assert_eq!(first.data["ip"], "10.0.0.7", "extra keys kept");
    assert!(
        stored[0]
            .subject
            .ends_with(".events.moodle.mod_quiz.attempt_submitted")
    );
    assert_eq!(
        Value::Object(stored[1].event().data.into()),
        fixtures::moodle_events()[7]
    );
    hub.stop().await;
}

#[tokio::test]
async fn nats_outage_answers_503_and_recovers_without_restart() {
    let mut hub = ingest_hub().await;
    let events = fixtures::moodle_events();
    let before = hub
        .post_signed(events[0].to_string().as_bytes(), JSON)
        .await;
    assert_eq!(before.status, StatusCode::ACCEPTED);

    hub.nats.stop().await.expect("nats stops");
    let refused = hub
        .post_signed_until(
            events[1].to_string().as_bytes(),
            StatusCode::SERVICE_UNAVAILABLE,
        )
        .await;
    assert_eq!(refused.body["error"], "unavailable");
    assert_eq!(
        refused
            .headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("3"),
        "Retry-After from ingest.retry_after"
    );
    let ready = hub
        .http
        .get(hub.url(ServiceName::Ingest, "/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(
        ready.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "not ready while NATS is down"
    );

    hub.nats.restart().await.expect("nats restarts");
    let after = hub
        .post_signed_until(events[39].to_string().as_bytes(), StatusCode::ACCEPTED)
        .await;

    let stored: Vec<String> = hub
        .stored_events()
        .await
        .iter()
        .map(|m| m.event().id.to_string())
        .collect();
    for answer in [&before, &after] {
        let id = answer.body["events"][0]["id"]
            .as_str()
            .expect("id")
            .to_owned();
        assert!(
            stored.contains(&id),
            "acknowledged event {id} survived the outage"
        );
    }
    hub.stop().await;
}

#[tokio::test]
async fn a_batch_jetstream_stores_only_partly_is_answered_503_item_by_item() {
    let hub = ingest_hub().await;
    // A full stream that refuses new messages: JetStream takes the first two, rejects the rest.
    let mut config = hub
        .js
        .get_stream(hub.names().events_stream())
        .await
        .expect("stream")
        .cached_info()
        .config
        .clone();
    config.max_messages = 2;
    config.discard = async_nats::jetstream::stream::DiscardPolicy::New;
    hub.js.update_stream(config).await.expect("stream updated");

    let batch = serde_json::to_vec(&fixtures::moodle_events()[..4]).expect("json");
    let answer = hub.post_signed(&batch, JSON).await;
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        answer.body
    );
    assert!(answer.headers.contains_key("retry-after"));
    let statuses: Vec<&str> = answer.body["events"]
        .as_array()
        .expect("per-item report")
        .iter()
        .map(|e| e["status"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        statuses,
        ["accepted", "accepted", "unconfirmed", "unconfirmed"]
    );

    let stored: Vec<String> = hub
        .stored_events()
        .await
        .iter()
        .map(|m| m.event().id.to_string())
        .collect();
    let reported: Vec<String> = answer.body["events"].as_array().expect("list")[..2]
        .iter()
        .map(|e| e["id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(
        stored, reported,
        "exactly the items reported accepted are stored"
    );
    hub.stop().await;
}

#[tokio::test]
async fn the_hub_stops_promptly_even_while_nats_is_down() {
    let mut hub = ingest_hub().await;
    hub.nats.stop().await.expect("nats stops");
    tokio::time::timeout(Duration::from_secs(10), hub.stop())
        .await
        .expect("shutdown does not wait for an absent NATS server");
}
