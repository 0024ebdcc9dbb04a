//! `POST /api/v1/rules/preview`: a rule, saved or drafted, tried on an inline or a stored event.

use reqwest::StatusCode;
use serde_json::{Value, json};

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
