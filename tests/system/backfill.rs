//! Backfill: stored events replayed through one rule, tracked, resumable and cancellable.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};

use mih_shared::messages::{JobId, Origin, RuleId};
use mih_testkit::fixtures;
use mih_testkit::sign::TEST_TOKEN;

use crate::harness::TestHub;
use crate::matcher::{create_rule, create_service, jobs, pipeline, post, settle};

fn course_viewed(course: u64) -> Value {
    let mut event = fixtures::moodle_events()
        .into_iter()
        .find(|e| e["eventname"] == "\\core\\event\\course_viewed")
        .expect("fixture");
    event["courseid"] = json!(course);
    event["contextinstanceid"] = json!(course);
    event
}

/// Posts `count` distinct course_viewed events in batches; returns their ids.
async fn post_many(hub: &TestHub, count: u64) -> Vec<String> {
    let mut ids = Vec::new();
    let bearer = vec![("authorization".to_owned(), format!("Bearer {TEST_TOKEN}"))];
    for first in (0..count).step_by(250) {
        let batch: Vec<Value> = (first..count.min(first + 250))
            .map(|n| course_viewed(1000 + n))
            .collect();
        let answer = hub
            .post_events(
                Value::from(batch).to_string().into_bytes(),
                "application/json",
                &bearer,
            )
            .await;
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.body);
        ids.extend(
            answer.body["events"]
                .as_array()
                .expect("events")
                .iter()
                .filter_map(|e| e["id"].as_str().map(str::to_owned)),
        );
    }
    ids
}

fn rfc3339(at: chrono::DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

async fn start_backfill(hub: &TestHub, rule: &str, body: &Value) -> crate::harness::Answer {
    hub.api()
        .post(&format!("/api/v1/rules/{rule}/backfill"), body)
        .await
}

async fn wait_for_status(hub: &TestHub, backfill: &str, status: &str) -> Value {
    mih_testkit::eventually(Duration::from_secs(30), || async {
        let answer = hub
            .api()
            .get(&format!("/api/v1/backfills/{backfill}"))
            .await;
        if answer.body["status"] == status {
            Ok(answer.body)
        } else {
            Err(answer.body.to_string())
        }
    })
    .await
    .unwrap_or_else(|last| panic!("backfill never became {status}: {last}"))
}

async fn jobs_of_rule(hub: &TestHub, rule: &str) -> Vec<mih_shared::messages::Job> {
    jobs(hub)
        .await
        .into_iter()
        .map(|(_, job)| job)
        .filter(|job| job.rule_id.is_some_and(|id| id.to_string() == rule))
        .collect()
}

#[tokio::test]
async fn a_backfill_of_1000_stored_events_queues_1000_jobs_for_its_rule_only() {
    let hub = pipeline("").await;
    let from = Utc::now() - chrono::Duration::seconds(5);
    create_service(&hub, "sis").await;
    create_service(&hub, "lms").await;
    let existing = create_rule(
        &hub,
        json!({"name": "views", "events": ["\\core\\event\\course_viewed"], "service": "sis"}),
    )
    .await;
    let _never = create_rule(
        &hub,
        json!({"name": "quizzes", "events": ["\\mod_quiz\\event\\*"], "service": "sis"}),
    )
    .await;
    settle(&hub).await;
    let event_ids: HashSet<String> = post_many(&hub, 1000).await.into_iter().collect();
    assert_eq!(event_ids.len(), 1000);
    hub.wait_for_matcher_idle().await;
    assert_eq!(jobs_of_rule(&hub, &existing).await.len(), 1000);

    let added = create_rule(
        &hub,
        json!({"name": "views to lms", "events": ["\\core\\event\\*"], "service": "lms",
               "condition": "courseid >= 1000",
               "target": {"kind": "rest", "method": "POST", "path": "/courses/{{courseid}}/views"}}),
    )
    .await;
    let started = start_backfill(&hub, &added, &json!({"from": rfc3339(from)})).await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);
    let id = started.body["id"].as_str().expect("id").to_owned();
    assert_eq!(
        started
            .headers
            .get("location")
            .and_then(|v| v.to_str().ok()),
        Some(format!("/api/v1/backfills/{id}").as_str())
    );
    assert_eq!(started.body["status"], "running");
    assert_eq!(started.body["rule_name"], "views to lms");

    let done = wait_for_status(&hub, &id, "completed").await;
    assert_eq!(done["scanned"], 1000, "{done}");
    assert_eq!(done["matched"], 1000, "{done}");
    assert_eq!(done["jobs"], 1000, "{done}");
    assert_eq!(done["render_failures"], 0);
    assert_eq!(done["skipped_duplicates"], 0);
    assert_eq!(done["progress"], 1.0);

    let backfilled = jobs_of_rule(&hub, &added).await;
    assert_eq!(backfilled.len(), 1000);
    let rule_id: RuleId = added.parse().expect("rule id");
    let mut seen = HashSet::new();
    for job in &backfilled {
        assert_eq!(job.origin, Origin::Backfill);
        assert_eq!(job.service.as_str(), "lms");
        let event = job.event_id.expect("event id");
        assert_eq!(job.id, JobId::for_rule(event, rule_id));
        assert!(event_ids.contains(&event.to_string()), "a posted event");
        assert!(seen.insert(event), "one job per event");
    }
    assert_eq!(
        jobs_of_rule(&hub, &existing).await.len(),
        1000,
        "the other rules got nothing from the backfill"
    );
    assert_eq!(jobs(&hub).await.len(), 2000);

    let listed = hub
        .api()
        .get(&format!(
            "/api/v1/backfills?rule_id={added}&status=completed"
        ))
        .await;
    assert_eq!(
        listed.body["items"][0]["id"],
        id.as_str(),
        "{}",
        listed.body
    );
    let audit = hub.api().get("/api/v1/audit?resource_kind=backfill").await;
    assert!(audit.body.to_string().contains(&id), "{}", audit.body);
    hub.stop().await;
}

#[tokio::test]
async fn an_interrupted_backfill_resumes_after_a_restart_and_can_be_cancelled() {
    let mut hub = pipeline("").await;
    let from = Utc::now() - chrono::Duration::seconds(5);
    create_service(&hub, "lms").await;
    post_many(&hub, 300).await;
    // The matcher must be done with the events before the rule exists: one it was still
    // matching would fail to publish while JOBS is gone and come back, retried, after a
    // later restart, and the backfill alone is what this test counts.
    hub.wait_for_matcher_idle().await;
    let rule = create_rule(
        &hub,
        json!({"name": "views", "events": ["\\core\\event\\course_viewed"], "service": "lms"}),
    )
    .await;

    // JOBS gone: every publish fails, so the backfill stays running with nothing checkpointed.
    hub.js
        .delete_stream(hub.names().jobs_stream())
        .await
        .expect("JOBS deleted");
    let started = start_backfill(&hub, &rule, &json!({"from": rfc3339(from)})).await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);
    let id = started.body["id"].as_str().expect("id").to_owned();
    let again = start_backfill(&hub, &rule, &json!({"from": rfc3339(from)})).await;
    assert_eq!(
        again.status,
        StatusCode::CONFLICT,
        "one running per rule: {}",
        again.body
    );
    assert_eq!(
        hub.api().get(&format!("/api/v1/backfills/{id}")).await.body["status"],
        "running"
    );

    // The restarted hub recreates JOBS; the runner resumes the backfill and completes it.
    hub.restart().await;
    let done = wait_for_status(&hub, &id, "completed").await;
    assert_eq!(done["jobs"], 300, "{done}");
    assert_eq!(jobs_of_rule(&hub, &rule).await.len(), 300);

    let cancel_done = hub
        .api()
        .post(&format!("/api/v1/backfills/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(
        cancel_done.status,
        StatusCode::CONFLICT,
        "{}",
        cancel_done.body
    );
    assert!(
        cancel_done.body["message"]
            .as_str()
            .is_some_and(|m| m.contains("completed")),
        "{}",
        cancel_done.body
    );

    // Cancelled while it cannot progress: it ends, and publishes nothing after.
    hub.js
        .delete_stream(hub.names().jobs_stream())
        .await
        .expect("JOBS deleted");
    let second = start_backfill(&hub, &rule, &json!({"from": rfc3339(from)})).await;
    let second_id = second.body["id"].as_str().expect("id").to_owned();
    let cancelled = hub
        .api()
        .post(&format!("/api/v1/backfills/{second_id}/cancel"), &json!({}))
        .await;
    assert_eq!(cancelled.status, StatusCode::OK, "{}", cancelled.body);
    assert_eq!(cancelled.body["status"], "cancelled");
    assert!(cancelled.body["finished_at"].is_string());
    hub.restart().await;
    let after = hub
        .api()
        .get(&format!("/api/v1/backfills/{second_id}"))
        .await;
    assert_eq!(after.body["status"], "cancelled");
    assert_eq!(after.body["jobs"], 0, "{}", after.body);
    let left: Vec<(Origin, String)> = jobs(&hub)
        .await
        .into_iter()
        .map(|(_, job)| (job.origin, format!("{:?}", job.event_id)))
        .collect();
    assert!(
        left.is_empty(),
        "a cancelled backfill is not resumed: {left:?}"
    );
    hub.stop().await;
}

#[tokio::test]
async fn a_backfill_skips_events_the_matcher_dropped_as_duplicates() {
    let hub = pipeline("[streams]\nduplicate_window = \"1s\"\n").await;
    let from = Utc::now() - chrono::Duration::seconds(5);
    create_service(&hub, "sis").await;
    create_service(&hub, "lms").await;
    create_rule(
        &hub,
        json!({"name": "views", "events": ["\\core\\event\\course_viewed"], "service": "sis"}),
    )
    .await;
    settle(&hub).await;
    let key = vec![("idempotency-key".to_owned(), "moodle-task-7".to_owned())];
    let first = post(&hub, &course_viewed(1), &key).await;
    // The same key once the window has passed: stored as a new event, dropped by the matcher.
    let bearer_and_key = [
        ("authorization".to_owned(), format!("Bearer {TEST_TOKEN}")),
        key[0].clone(),
    ];
    mih_testkit::eventually(Duration::from_secs(10), || async {
        let answer = hub
            .post_events(
                course_viewed(2).to_string().into_bytes(),
                "application/json",
                &bearer_and_key,
            )
            .await;
        match answer.body["duplicates"].as_u64() {
            Some(0) => Ok(()),
            _ => Err(answer.body.to_string()),
        }
    })
    .await
    .expect("stored once the window passed");
    hub.wait_for_matcher_idle().await;

    let added = create_rule(
        &hub,
        json!({"name": "views to lms", "events": ["*"], "service": "lms"}),
    )
    .await;
    let started = start_backfill(&hub, &added, &json!({"from": rfc3339(from)})).await;
    let id = started.body["id"].as_str().expect("id").to_owned();
    let done = wait_for_status(&hub, &id, "completed").await;
    assert_eq!(done["scanned"], 2, "{done}");
    assert_eq!(done["skipped_duplicates"], 1, "{done}");
    assert_eq!(done["jobs"], 1, "{done}");
    let backfilled = jobs_of_rule(&hub, &added).await;
    assert_eq!(backfilled.len(), 1);
    assert_eq!(
        backfilled[0].event_id.map(|e| e.to_string()).as_deref(),
        Some(first.as_str())
    );
    hub.stop().await;
}

#[tokio::test]
async fn bad_backfill_requests_are_refused_with_the_reason() {
    let hub = TestHub::builder()
        .services(&[mih_shared::ServiceName::Api])
        .start()
        .await;
    create_service(&hub, "lms").await;
    let rule = create_rule(
        &hub,
        json!({"name": "views", "events": ["*"], "service": "lms"}),
    )
    .await;
    let now = Utc::now();
    let cases = [
        (
            json!({"from": rfc3339(now + chrono::Duration::hours(1))}),
            "from",
        ),
        (
            json!({"from": rfc3339(now - chrono::Duration::hours(1)), "to": rfc3339(now - chrono::Duration::hours(2))}),
            "to",
        ),
        (json!({"from": "yesterday"}), "from"),
        (json!({"to": rfc3339(now)}), "from"),
    ];
    for (body, field) in cases {
        let answer = start_backfill(&hub, &rule, &body).await;
        assert_eq!(
            answer.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            answer.body
        );
        assert!(
            answer.body.to_string().contains(field),
            "{body}: {}",
            answer.body
        );
    }
    let from = json!({"from": rfc3339(now - chrono::Duration::hours(1))});
    let missing = start_backfill(&hub, "0195b3c6-0000-7000-8000-000000000000", &from).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND, "{}", missing.body);
    let disabled = hub
        .api()
        .post(&format!("/api/v1/rules/{rule}/disable"), &json!({}))
        .await;
    assert_eq!(disabled.status, StatusCode::OK);
    let refused = start_backfill(&hub, &rule, &from).await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.body);
    assert!(
        refused.body["message"]
            .as_str()
            .is_some_and(|m| m.contains("disabled"))
    );

    let viewer = hub
        .api()
        .post("/api/v1/tokens", &json!({"label": "ro", "role": "viewer"}))
        .await;
    let token = viewer.body["token"].as_str().expect("token").to_owned();
    let forbidden = hub
        .api_as(&token)
        .post(&format!("/api/v1/rules/{rule}/backfill"), &from)
        .await;
    assert_eq!(forbidden.status, StatusCode::FORBIDDEN);
    let unknown = hub.api().get("/api/v1/backfills/not-a-backfill").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let bad_status = hub.api().get("/api/v1/backfills?status=paused").await;
    assert_eq!(bad_status.status, StatusCode::UNPROCESSABLE_ENTITY);
    hub.stop().await;
}
