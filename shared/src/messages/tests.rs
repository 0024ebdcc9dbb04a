use chrono::{TimeZone, Utc};
use serde_json::{Value, json};

use super::*;
use crate::names::{ServiceSlug, SourceId};

fn sample_event() -> Event {
    let data = json!({
        "eventname": "\\core\\event\\user_created",
        "component": "core",
        "objectid": "4294967296",
        "other": {"nested": [1, {"x": null}]},
        "origin": "web"
    });
    let Value::Object(data) = data else {
        unreachable!("literal is an object")
    };
    Event {
        v: Version,
        id: EventId::new_v7(),
        source: SourceId::parse("moodle").expect("valid"),
        received_at: Utc
            .with_ymd_and_hms(2026, 2, 25, 8, 0, 0)
            .single()
            .expect("valid"),
        dedup_key: "abc".into(),
        data: data.into(),
    }
}

fn sample_job() -> Job {
    Job {
        v: Version,
        id: JobId::new_v7(),
        event_id: Some(EventId::new_v7()),
        rule_id: Some(RuleId(uuid::Uuid::now_v7())),
        service: ServiceSlug::parse("sis").expect("valid"),
        request: Request::Http(HttpRequest {
            method: HttpMethod::Patch,
            path: "/users/27".into(),
            query: vec![("a".into(), "b c".into())],
            headers: vec![Header {
                name: "X-Tenant".into(),
                value: "7".into(),
            }],
            body: Some(r#"{"user":27}"#.into()),
            content_type: Some("application/json".into()),
        }),
        origin: Origin::Rule,
        created_at: Utc::now(),
        replay_of: None,
        ordering_key: Some("user-27".into()),
        hold_key: false,
        source: Some("moodle".parse().expect("source id")),
        eventname: Some("\\core\\event\\user_updated".into()),
    }
}

fn round_trip<T>(value: &T) -> T
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    let bytes = encode(value).expect("encodes");
    decode(&bytes).expect("decodes")
}

#[test]
fn event_round_trips_and_keeps_key_order() {
    let event = sample_event();
    let back = round_trip(&event);
    assert_eq!(back, event);
    let keys: Vec<_> = back.data.keys().cloned().collect();
    assert_eq!(
        keys,
        ["eventname", "component", "objectid", "other", "origin"]
    );
    assert_eq!(back.name().expect("valid name").component(), "core");
}

#[test]
fn job_round_trips_for_every_transport() {
    let mut job = sample_job();
    assert_eq!(round_trip(&job), job);
    job.request = Request::Amqp(AmqpRequest {
        exchange: Some("moodle".into()),
        routing_key: "user.created".into(),
        headers: vec![],
        body: "{}".into(),
        content_type: "application/json".into(),
    });
    assert_eq!(round_trip(&job), job);
    job.request = Request::Soap(SoapRequest {
        operation: "CreateUser".into(),
        headers: vec![],
        body: "<CreateUser/>".into(),
    });
    job.origin = Origin::Replay;
    job.replay_of = Some(JobId::new_v7());
    assert_eq!(round_trip(&job), job);
}

fn sample_outcome(attempt: u32) -> Outcome {
    let job = sample_job();
    Outcome {
        v: Version,
        job_id: job.id,
        service: job.service.clone(),
        attempt,
        started_at: Utc::now(),
        duration_ms: 12,
        status: OutcomeStatus::Delivered,
        response_status: Some(200),
        response_excerpt: None,
        error: None,
        event_id: job.event_id,
        rule_id: job.rule_id,
        origin: job.origin,
        trace_id: None,
        source: job.source.clone(),
        eventname: job.eventname.clone(),
        replay_of: None,
        request: None,
        retry_at: None,
    }
}

#[test]
fn results_messages_hold_one_outcome_or_an_array_of_them() {
    let outcomes: Vec<Outcome> = (1..=3).map(sample_outcome).collect();
    let encoded: Vec<bytes::Bytes> = outcomes
        .iter()
        .map(|o| encode(o).expect("encodes"))
        .collect();

    let alone = join_outcomes(&encoded[..1]);
    assert_eq!(
        alone, encoded[0],
        "a lone outcome is sent as it was before batching"
    );
    assert_eq!(decode_outcomes(&alone).expect("one"), outcomes[..1]);

    let joined = join_outcomes(&encoded);
    assert_eq!(joined.first(), Some(&b'['));
    assert_eq!(decode_outcomes(&joined).expect("an array"), outcomes);
    assert_eq!(
        decode_outcomes(b" \n[]").expect("empty"),
        Vec::<Outcome>::new()
    );

    let one_bad = format!("[{},{{\"v\":1}}]", String::from_utf8_lossy(&encoded[0]));
    assert!(
        decode_outcomes(one_bad.as_bytes()).is_err(),
        "an array is read whole or not at all"
    );
    assert!(decode_outcomes(b"{\"v\":2}").is_err());
}

#[test]
fn outcome_and_dead_letter_round_trip() {
    let job = sample_job();
    let outcome = Outcome {
        status: OutcomeStatus::FailedPermanent,
        response_status: Some(400),
        response_excerpt: Some("bad".into()),
        error: Some("HTTP 400".into()),
        request: Some(job.request.clone()),
        ..sample_outcome(3)
    };
    assert_eq!(round_trip(&outcome), outcome);
    let dead = DeadLetter {
        v: Version,
        job,
        last_outcome: Some(outcome),
        attempts: 3,
        reason: "permanent failure: HTTP 400".into(),
        dead_lettered_at: Utc::now(),
        stage: FailureStage::Delivery,
        event: None,
    };
    assert_eq!(round_trip(&dead), dead);
    let rendered_badly = DeadLetter {
        stage: FailureStage::Render,
        event: Some(sample_event()),
        ..dead
    };
    assert_eq!(round_trip(&rendered_badly), rendered_badly);
}

#[test]
fn messages_carry_their_version_and_refuse_unknown_ones() {
    let encoded = serde_json::to_value(sample_event()).expect("serialises");
    assert_eq!(encoded["v"], 1);
    let mut newer = encoded.clone();
    newer["v"] = json!(2);
    let err = serde_json::from_value::<Event>(newer).expect_err("v2 must be refused");
    assert!(
        err.to_string().contains("unsupported message version 2"),
        "{err}"
    );
    let mut missing = encoded;
    missing.as_object_mut().expect("object").remove("v");
    assert!(serde_json::from_value::<Event>(missing).is_err());
}

#[test]
fn job_ids_are_derived_from_event_and_rule() {
    let event = EventId::new_v7();
    let rule = RuleId(uuid::Uuid::now_v7());
    assert_eq!(JobId::for_rule(event, rule), JobId::for_rule(event, rule));
    let other_rule = RuleId(uuid::Uuid::now_v7());
    assert_ne!(
        JobId::for_rule(event, rule),
        JobId::for_rule(event, other_rule)
    );
}

#[test]
fn enums_use_their_documented_spellings() {
    assert_eq!(
        serde_json::to_value(OutcomeStatus::FailedRetryable).expect("ok"),
        "failed_retryable"
    );
    assert_eq!(
        serde_json::to_value(Origin::Backfill).expect("ok"),
        "backfill"
    );
    assert_eq!(
        serde_json::to_value(HttpMethod::Patch).expect("ok"),
        "PATCH"
    );
}
