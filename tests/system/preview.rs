//! `POST /api/v1/rules/preview`: a rule, saved or drafted, tried on an inline or a stored event.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use mih_shared::ServiceName;

use crate::harness::TestHub;
use crate::matcher::{create_rule, create_service, enrolment, jobs, pipeline, post};

fn check<'a>(result: &'a Value, step: &str) -> &'a Value {
    result["checks"]
        .as_array()
        .and_then(|checks| checks.iter().find(|c| c["step"] == step))
        .unwrap_or_else(|| panic!("no `{step}` check in {result}"))
}

#[tokio::test]
async fn preview_explains_which_check_refused_an_event() {
    let hub = pipeline("").await;
    create_service(&hub, "sis").await;
    let rule = create_rule(
        &hub,
        json!({"name": "course 99", "events": ["\\core\\event\\*"], "service": "sis", "condition": "courseid == 99 && other.status in [0, 1]"}),
    )
    .await;

    let answer = hub
        .api()
        .post(
            "/api/v1/rules/preview",
            &json!({"rule_id": rule, "event": enrolment()}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let result = &answer.body["results"][0];
    assert_eq!(result["matched"], false);
    assert_eq!(check(result, "event")["passed"], true);
    assert!(
        check(result, "event")["detail"]
            .as_str()
            .is_some_and(|d| d.contains("\\core\\event\\*")),
        "names the pattern: {result}"
    );
    let condition = check(result, "condition");
    assert_eq!(condition["passed"], false);
    assert_eq!(condition["detail"], "the condition is false");
    assert!(result["request"].is_null());

    let wrong_name = hub
        .api()
        .post(
            "/api/v1/rules/preview",
            &json!({"rule_id": rule, "event": {"eventname": "\\mod_quiz\\event\\attempt_submitted", "courseid": 99}}),
        )
        .await;
    let result = &wrong_name.body["results"][0];
    assert_eq!(result["matched"], false);
    assert_eq!(check(result, "event")["passed"], false, "{result}");
    assert!(
        result["checks"]
            .as_array()
            .is_some_and(|c| c.iter().all(|c| c["step"] != "condition")),
        "stops at the first refusal: {result}"
    );
    assert!(jobs(&hub).await.is_empty(), "a preview publishes nothing");
    hub.stop().await;
}

#[tokio::test]
async fn preview_renders_a_draft_rule_without_saving_it() {
    let hub = pipeline("").await;
    create_service(&hub, "sis").await;
    let draft = json!({
        "name": "draft", "events": ["core\\event\\user_enrolment_created"], "service": "sis",
        "condition": "courseid == 12",
        "target": {"kind": "rest", "method": "PUT", "path": "/courses/{{courseid}}/users/{{relateduserid}}"},
        "body": "{\"user\": {{relateduserid}}, \"note\": \"{{other.enrol}}\", \"rule\": \"{{rule.name}}\"}"
    });
    let answer = hub
        .api()
        .post(
            "/api/v1/rules/preview",
            &json!({"rule": draft, "event": enrolment(), "source": "moodle"}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let result = &answer.body["results"][0];
    assert_eq!(result["matched"], true, "{result}");
    assert_eq!(result["source"], "moodle");
    let request = &result["request"];
    assert_eq!(request["method"], "PUT", "{request}");
    assert_eq!(request["path"], "/courses/12/users/27");
    let body: Value =
        serde_json::from_str(request["body"].as_str().expect("a body")).expect("JSON");
    assert_eq!(body, json!({"user": 27, "note": "manual", "rule": "draft"}));

    let listed = hub.api().get("/api/v1/rules").await;
    assert_eq!(listed.body["items"], json!([]), "the draft was not saved");

    // A draft is validated like a rule being created.
    let broken = hub
        .api()
        .post(
            "/api/v1/rules/preview",
            &json!({"rule": {"name": "x", "events": ["*"], "service": "sis", "condition": "courseid =="}, "event": enrolment()}),
        )
        .await;
    assert_eq!(
        broken.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        broken.body
    );
    assert!(
        broken.body.to_string().contains("condition"),
        "{}",
        broken.body
    );
    hub.stop().await;
}

#[tokio::test]
async fn preview_tries_a_rule_on_the_latest_events_of_a_source() {
    let hub = pipeline("").await;
    create_service(&hub, "sis").await;
    let rule = create_rule(
        &hub,
        json!({"name": "enrolments", "events": ["\\core\\event\\user_enrolment_created"], "service": "sis", "enabled": false}),
    )
    .await;
    let mut ids = Vec::new();
    for user in [7, 8, 9] {
        let mut event = enrolment();
        event["relateduserid"] = json!(user);
        ids.push(post(&hub, &event, &[]).await);
    }

    let answer = hub
        .api()
        .post(
            "/api/v1/rules/preview",
            &json!({"rule_id": rule, "recent": {"source": "moodle", "last": 2}}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let results = answer.body["results"].as_array().expect("results");
    let seen: Vec<&str> = results
        .iter()
        .filter_map(|r| r["event_id"].as_str())
        .collect();
    assert_eq!(
        seen,
        [ids[2].as_str(), ids[1].as_str()],
        "the two latest, newest first"
    );
    // A disabled rule explains itself rather than pretending to match.
    assert_eq!(results[0]["matched"], false);
    assert_eq!(check(&results[0], "enabled")["passed"], false);

    let unknown = hub
        .api()
        .post(
            "/api/v1/rules/preview",
            &json!({"rule_id": rule, "recent": {"source": "moodle", "last": 500}}),
        )
        .await;
    assert_eq!(
        unknown.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        unknown.body
    );
    assert!(
        unknown.body.to_string().contains("recent.last"),
        "{}",
        unknown.body
    );
    hub.stop().await;
}

/// `[0, 1, …, n-1]`.
fn list(n: usize) -> String {
    let items: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    format!("[{}]", items.join(", "))
}

/// The attacker's probe: four nested `.all()` over 100-element list literals (about 1.5 KB).
fn probe() -> String {
    let vars = ["a", "b", "c", "d"];
    let mut condition = format!("{} >= 0", vars.join(" + "));
    for var in vars.iter().rev() {
        condition = format!("{}.all({var}, {condition})", list(100));
    }
    condition
}

/// A condition within the cost limit for ordinary events that is costly on `large_event`.
fn costly_on_large_events() -> String {
    format!(
        "other.items.exists(i, {}.exists(j, i == j + 1000000))",
        list(30)
    )
}

/// An enrolment carrying a list of 100,000 numbers (about 600 KB).
fn large_event() -> Value {
    let mut event = enrolment();
    let items: Vec<u32> = (0..100_000).collect();
    event["other"] = json!({"items": items});
    event
}

fn draft(condition: &str) -> Value {
    json!({"name": "costly", "events": ["*"], "service": "sis", "condition": condition})
}

async fn viewer_token(hub: &TestHub) -> String {
    let issued = hub
        .api()
        .post(
            "/api/v1/tokens",
            &json!({"label": "viewer", "role": "viewer"}),
        )
        .await;
    assert_eq!(issued.status, StatusCode::CREATED, "{}", issued.body);
    issued.body["token"].as_str().expect("token").to_owned()
}

/// `/readyz` of `service` answers 200, within a generous timeout.
async fn answers_ready(hub: &TestHub, service: ServiceName) {
    let answer = hub
        .http
        .get(hub.url(service, "/readyz"))
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{service} /readyz did not answer: {e}"));
    assert_eq!(answer.status(), StatusCode::OK, "{service} /readyz");
}

#[tokio::test]
async fn a_viewers_preview_of_the_probes_condition_is_refused_saying_why() {
    let hub = pipeline("").await;
    create_service(&hub, "sis").await;
    let viewer = viewer_token(&hub).await;
    let answer = hub
        .api_as(&viewer)
        .post(
            "/api/v1/rules/preview",
            &json!({"rule": draft(&probe()), "event": enrolment()}),
        )
        .await;
    assert_eq!(
        answer.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        answer.body
    );
    assert_eq!(answer.fields(), ["condition"], "{}", answer.body);
    let message = answer.body["errors"][0]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.contains("the condition may cost about")
            && message.contains("`.all()` over a 100-element list nested 4 deep"),
        "{message}"
    );
    // Saving it is refused the same way.
    let saved = hub.api().post("/api/v1/rules", &draft(&probe())).await;
    assert_eq!(
        saved.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        saved.body
    );
    assert_eq!(saved.fields(), ["condition"]);
    hub.stop().await;
}

#[tokio::test]
async fn health_checks_answer_while_costly_previews_run() {
    let hub = pipeline("").await;
    create_service(&hub, "sis").await;
    let viewer = viewer_token(&hub).await;
    let api = hub.api_as(&viewer);
    let probe = json!({"rule": draft(&probe()), "event": enrolment()});
    let large = json!({"rule": draft(&costly_on_large_events()), "event": large_event()});
    let done = AtomicBool::new(false);
    let previews = async {
        let answers = futures::future::join4(
            api.post("/api/v1/rules/preview", &probe),
            api.post("/api/v1/rules/preview", &probe),
            api.post("/api/v1/rules/preview", &large),
            api.post("/api/v1/rules/preview", &large),
        )
        .await;
        done.store(true, Ordering::SeqCst);
        answers
    };
    let health = async {
        loop {
            answers_ready(&hub, ServiceName::Ingest).await;
            answers_ready(&hub, ServiceName::Api).await;
            if done.load(Ordering::SeqCst) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let ((first, second, third, fourth), ()) = tokio::join!(previews, health);
    for refused in [first, second] {
        assert_eq!(
            refused.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{}",
            refused.body
        );
    }
    for answered in [third, fourth] {
        assert_eq!(answered.status, StatusCode::OK, "{}", answered.body);
    }
    answers_ready(&hub, ServiceName::Ingest).await;
    answers_ready(&hub, ServiceName::Api).await;
    hub.stop().await;
}

#[tokio::test]
async fn a_preview_shows_a_condition_running_out_of_budget_on_a_large_event() {
    let hub = pipeline("").await;
    create_service(&hub, "sis").await;
    let viewer = viewer_token(&hub).await;
    let answer = hub
        .api_as(&viewer)
        .post(
            "/api/v1/rules/preview",
            &json!({"rule": draft(&costly_on_large_events()), "event": large_event()}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let result = &answer.body["results"][0];
    assert_eq!(result["matched"], false, "{result}");
    let condition = check(result, "condition");
    assert_eq!(condition["passed"], false);
    assert_eq!(
        condition["detail"],
        "the condition exceeded its evaluation budget (more than 5,000,000 steps) for this event"
    );
    // The same rule decides an ordinary event.
    let mut ordinary = enrolment();
    ordinary["other"] = json!({"items": [1, 1000002]});
    let answer = hub
        .api_as(&viewer)
        .post(
            "/api/v1/rules/preview",
            &json!({"rule": draft(&costly_on_large_events()), "event": ordinary}),
        )
        .await;
    assert_eq!(
        answer.body["results"][0]["matched"], true,
        "{}",
        answer.body
    );
    hub.stop().await;
}
