//! The admin API against real PostgreSQL and NATS: CRUD, validation, roles, versions, audit.

use reqwest::StatusCode;
use serde_json::{Value, json};

use mih_shared::ServiceName;

use crate::harness::{Answer, TestHub};

async fn api_hub() -> TestHub {
    TestHub::builder()
        .services(&[ServiceName::Api])
        .start()
        .await
}

fn assert_status(answer: &Answer, status: StatusCode) {
    assert_eq!(answer.status, status, "{}", answer.body);
}

fn rest_service(name: &str) -> Value {
    json!({
        "name": name,
        "description": "student information system",
        "transport": {"kind": "rest", "base_url": "https://sis.example.org/api/"},
        "auth": {"type": "bearer", "token": format!("{name}-bearer-token")},
        "headers": {"X-Tenant": "7"},
        "timeout_ms": 2500,
        "retry": {"max_retries": 3},
    })
}

async fn create_service(hub: &TestHub, name: &str) {
    assert_status(
        &hub.api()
            .post("/api/v1/services", &rest_service(name))
            .await,
        StatusCode::CREATED,
    );
}

async fn create_rule(hub: &TestHub, service: &str) -> String {
    let answer = hub
        .api()
        .post(
            "/api/v1/rules",
            &json!({"name": format!("to {service}"), "events": ["\\core\\event\\user_created"], "service": service}),
        )
        .await;
    assert_status(&answer, StatusCode::CREATED);
    answer.body["id"].as_str().expect("id").to_owned()
}

#[tokio::test]
async fn sources_round_trip() {
    let hub = api_hub().await;
    let api = hub.api();
    let created = api
        .post(
            "/api/v1/sources",
            &json!({"id": "site-a", "name": "Site A", "signing_secret": mih_testkit::sign::TEST_SECRET,
                    "bearer_token": "site-a-bearer-token-0001"}),
        )
        .await;
    assert_status(&created, StatusCode::CREATED);
    assert_eq!(created.body["name"], "Site A");
    assert_eq!(created.body["bearer_token_set"], true);
    assert_eq!(
        created.body["signing_secrets"].as_array().map(Vec::len),
        Some(1)
    );
    let etag = created.etag().expect("etag");

    let got = api.get("/api/v1/sources/site-a").await;
    assert_status(&got, StatusCode::OK);
    assert_eq!(got.body, created.body);
    assert_eq!(got.etag().as_deref(), Some(etag.as_str()));

    let all = api.get("/api/v1/sources").await;
    let ids: Vec<&str> = all.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|s| s["id"].as_str())
        .collect();
    assert_eq!(
        ids,
        ["closed", "moodle", "site-a"],
        "seeded sources and the new one, by id"
    );
    let disabled = api.get("/api/v1/sources?enabled=false").await;
    assert_eq!(disabled.body["items"][0]["id"], "closed");
    let found = api.get("/api/v1/sources?q=SITE").await;
    assert_eq!(found.body["items"].as_array().map(Vec::len), Some(1));
    let first_page = api.get("/api/v1/sources?limit=2").await;
    assert_eq!(first_page.body["items"].as_array().map(Vec::len), Some(2));
    let cursor = first_page.body["next_cursor"]
        .as_str()
        .expect("a next page");
    let second_page = api
        .get(&format!("/api/v1/sources?limit=2&cursor={cursor}"))
        .await;
    assert_eq!(second_page.body["items"][0]["id"], "site-a");
    assert!(second_page.body.get("next_cursor").is_none());

    let renamed = api
        .patch_if(
            "/api/v1/sources/site-a",
            &json!({"name": "Site A (prod)"}),
            &etag,
        )
        .await;
    assert_status(&renamed, StatusCode::OK);
    assert_eq!(renamed.body["name"], "Site A (prod)");
    assert_eq!(
        renamed.body["bearer_token_set"], true,
        "secrets left out are kept"
    );
    assert!(renamed.body["version"].as_i64() > created.body["version"].as_i64());
    let cleared = api
        .patch("/api/v1/sources/site-a", &json!({"bearer_token": null}))
        .await;
    assert_eq!(
        cleared.body["bearer_token_set"], false,
        "null removes a secret"
    );

    assert_eq!(
        api.post("/api/v1/sources/site-a/disable", &json!({}))
            .await
            .body["enabled"],
        false
    );
    assert_eq!(
        api.post("/api/v1/sources/site-a/enable", &json!({}))
            .await
            .body["enabled"],
        true
    );
    let duplicate = api
        .post(
            "/api/v1/sources",
            &json!({"id": "site-a", "bearer_token": "x-bearer-token-00001"}),
        )
        .await;
    assert_status(&duplicate, StatusCode::CONFLICT);

    assert_status(
        &api.delete("/api/v1/sources/site-a").await,
        StatusCode::NO_CONTENT,
    );
    assert_status(
        &api.get("/api/v1/sources/site-a").await,
        StatusCode::NOT_FOUND,
    );
    hub.stop().await;
}

#[tokio::test]
async fn services_round_trip_for_every_transport() {
    let hub = api_hub().await;
    let api = hub.api();
    let rest = api.post("/api/v1/services", &rest_service("sis")).await;
    assert_status(&rest, StatusCode::CREATED);
    assert_eq!(
        rest.body["auth"],
        json!({"type": "bearer", "token_set": true})
    );
    assert_eq!(rest.body["timeout_ms"], 2500);
    assert_eq!(
        rest.body["retry"],
        json!({"max_retries": 3, "backoff_base_ms": 1000, "backoff_cap_ms": 300000})
    );
    assert_eq!(
        rest.body["breaker"],
        json!({"failure_threshold": 5, "cooldown_ms": 30000, "half_open_probes": 1})
    );
    assert_eq!(rest.body["max_job_age_ms"], 86_400_000);

    let amqp = api
        .post(
            "/api/v1/services",
            &json!({"name": "events-bus", "transport": {"kind": "amqp", "host": "rabbit.internal", "tls": true,
                    "username": "mih", "password": "p@ss:w/rd%?", "exchange": "moodle", "routing_key": "events",
                    "queue_declare": "moodle-events"},
                    "concurrency": 50, "rate_limit_per_sec": 200}),
        )
        .await;
    assert_status(&amqp, StatusCode::CREATED);
    assert_eq!(amqp.body["transport"]["port"], 5671, "amqps default port");
    assert_eq!(amqp.body["transport"]["password_set"], true);
    assert_eq!(amqp.body["rate_limit_per_sec"], 200);

    let soap = api
        .post(
            "/api/v1/services",
            &json!({"name": "erp", "transport": {"kind": "soap", "endpoint": "https://erp.example.org/soap",
                    "wsdl_url": "https://erp.example.org/soap?wsdl", "version": "1.2", "namespace": "urn:erp"},
                    "auth": {"type": "basic", "username": "moodle", "password": "erp-password"},
                    "signing_secret": mih_testkit::sign::TEST_SECRET}),
        )
        .await;
    assert_status(&soap, StatusCode::CREATED);
    assert_eq!(soap.body["transport"]["version"], "1.2");
    assert_eq!(soap.body["signing_secret_set"], true);

    let kinds = api.get("/api/v1/services?kind=amqp").await;
    assert_eq!(kinds.body["items"].as_array().map(Vec::len), Some(1));

    // Changing other fields keeps the secrets; changing the auth type needs the new secret.
    let patched = api
        .patch(
            "/api/v1/services/events-bus",
            &json!({"description": "bus", "transport": {"kind": "amqp", "host": "rabbit2"}}),
        )
        .await;
    assert_status(&patched, StatusCode::OK);
    assert_eq!(
        patched.body["transport"]["password_set"], true,
        "the stored password is kept"
    );
    let needs_key = api
        .patch(
            "/api/v1/services/sis",
            &json!({"auth": {"type": "api_key"}}),
        )
        .await;
    assert_status(&needs_key, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(needs_key.fields(), ["auth.key"]);
    let api_key = api
        .patch(
            "/api/v1/services/sis",
            &json!({"auth": {"type": "api_key", "key": "k-123"}}),
        )
        .await;
    assert_eq!(
        api_key.body["auth"],
        json!({"type": "api_key", "header": "X-API-Key", "key_set": true})
    );

    // A service with rules cannot be deleted unless the rules go with it.
    let rule = create_rule(&hub, "sis").await;
    let refused = api.delete("/api/v1/services/sis").await;
    assert_status(&refused, StatusCode::CONFLICT);
    assert!(
        refused.body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("cascade")
    );
    assert_status(
        &api.delete("/api/v1/services/sis?cascade=true").await,
        StatusCode::NO_CONTENT,
    );
    assert_status(
        &api.get(&format!("/api/v1/rules/{rule}")).await,
        StatusCode::NOT_FOUND,
    );
    assert_status(
        &api.get("/api/v1/services/sis").await,
        StatusCode::NOT_FOUND,
    );
    hub.stop().await;
}

#[tokio::test]
async fn rules_round_trip() {
    let hub = api_hub().await;
    let api = hub.api();
    create_service(&hub, "sis").await;
    let created = api
        .post(
            "/api/v1/rules",
            &json!({"name": "enrolments", "sources": ["moodle"], "events": ["core\\event\\user_enrolment_created", "mod_quiz\\event\\*"],
                    "condition": "courseid == 12", "service": "sis",
                    "target": {"kind": "rest", "method": "PUT", "path": "/enrolments/{{objectid}}"},
                    "headers": {"X-Course": "{{courseid}}"}, "body": "{\"user\": {{json relateduserid}}}",
                    "ordering_key": "{{relateduserid}}"}),
        )
        .await;
    assert_status(&created, StatusCode::CREATED);
    assert_eq!(
        created.body["events"],
        json!([
            "\\core\\event\\user_enrolment_created",
            "\\mod_quiz\\event\\*"
        ]),
        "patterns normalised"
    );
    assert_eq!(created.body["content_type"], "application/json");
    assert_eq!(
        created.body["ordering_on_dead_letter"], "skip",
        "the default"
    );
    let id = created.body["id"].as_str().expect("id").to_owned();

    let defaulted = api
        .post(
            "/api/v1/rules",
            &json!({"name": "everything", "events": ["*"], "service": "sis"}),
        )
        .await;
    assert_eq!(
        defaulted.body["target"],
        json!({"kind": "rest", "method": "POST", "path": "/"})
    );
    assert_eq!(
        defaulted.body["body"],
        Value::Null,
        "no template: the event as Moodle gave it"
    );

    let by_service = api.get("/api/v1/rules?service=sis").await;
    assert_eq!(by_service.body["items"].as_array().map(Vec::len), Some(2));
    let by_event = api.get("/api/v1/rules?event=mod_quiz%5Cevent%5C*").await;
    assert_eq!(by_event.body["items"][0]["id"], id.as_str());
    let by_source = api.get("/api/v1/rules?source=elsewhere").await;
    assert_eq!(
        by_source.body["items"][0]["name"], "everything",
        "rules for every source match any source"
    );

    let patched = api
        .patch(
            &format!("/api/v1/rules/{id}"),
            &json!({"condition": null, "enabled": false}),
        )
        .await;
    assert_status(&patched, StatusCode::OK);
    assert_eq!(patched.body["condition"], Value::Null);
    assert_eq!(patched.body["enabled"], false);
    assert_eq!(
        patched.body["body"], created.body["body"],
        "untouched fields kept"
    );
    assert_status(
        &api.delete(&format!("/api/v1/rules/{id}")).await,
        StatusCode::NO_CONTENT,
    );
    assert_status(
        &api.get(&format!("/api/v1/rules/{id}")).await,
        StatusCode::NOT_FOUND,
    );
    assert_status(
        &api.get("/api/v1/rules/not-a-uuid").await,
        StatusCode::NOT_FOUND,
    );
    hub.stop().await;
}

#[tokio::test]
async fn tokens_are_shown_once_revocable_and_the_last_admin_stays() {
    let hub = api_hub().await;
    let api = hub.api();
    let issued = api
        .post(
            "/api/v1/tokens",
            &json!({"label": "dashboard", "role": "viewer"}),
        )
        .await;
    assert_status(&issued, StatusCode::CREATED);
    let token = issued.body["token"]
        .as_str()
        .expect("the token, once")
        .to_owned();
    assert!(token.starts_with("mih_"));
    let id = issued.body["id"].as_str().expect("id").to_owned();
    let shown = api.get(&format!("/api/v1/tokens/{id}")).await;
    assert!(shown.body.get("token").is_none(), "never shown again");
    assert_eq!(shown.body["token_prefix"].as_str(), Some(&token[..10]));

    let viewer = hub.api_as(&token);
    assert_status(&viewer.get("/api/v1/sources").await, StatusCode::OK);
    let used = api.get(&format!("/api/v1/tokens/{id}")).await;
    assert!(
        used.body["last_used_at"].is_string(),
        "last use is recorded"
    );
    let relabelled = api
        .patch(
            &format!("/api/v1/tokens/{id}"),
            &json!({"label": "wallboard"}),
        )
        .await;
    assert_eq!(relabelled.body["label"], "wallboard");

    assert_status(
        &api.delete(&format!("/api/v1/tokens/{id}")).await,
        StatusCode::NO_CONTENT,
    );
    assert_status(
        &viewer.get("/api/v1/sources").await,
        StatusCode::UNAUTHORIZED,
    );
    let active = api.get("/api/v1/tokens?revoked=false").await;
    let admins: Vec<&Value> = active.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|t| t["role"] == "admin")
        .collect();
    assert_eq!(admins.len(), 1, "only the bootstrap admin is left");
    let last = admins[0]["id"].as_str().expect("id").to_owned();
    assert_status(
        &api.delete(&format!("/api/v1/tokens/{last}")).await,
        StatusCode::CONFLICT,
    );
    assert_status(
        &api.patch(
            &format!("/api/v1/tokens/{last}"),
            &json!({"role": "viewer"}),
        )
        .await,
        StatusCode::CONFLICT,
    );
    hub.stop().await;
}

#[tokio::test]
async fn every_validation_rule_answers_422_naming_the_field() {
    let hub = api_hub().await;
    let api = hub.api();
    create_service(&hub, "sis").await;
    let rest = |extra: Value| {
        let mut body = rest_service("new");
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        body
    };
    let cases: Vec<(&str, Value, &[&str])> = vec![
        ("/api/v1/sources", json!({"name": "no id"}), &["id"]),
        ("/api/v1/sources", json!({"id": "Bad Id"}), &["id"]),
        ("/api/v1/sources", json!({"id": "a", "name": ""}), &["name"]),
        (
            "/api/v1/sources",
            json!({"id": "a", "signing_secret": "whsec_short"}),
            &["signing_secret"],
        ),
        (
            "/api/v1/sources",
            json!({"id": "a", "bearer_token": "short"}),
            &["bearer_token"],
        ),
        (
            "/api/v1/sources",
            json!({"id": "a", "rotation_overlap_secs": 99_999_999}),
            &["rotation_overlap_secs"],
        ),
        (
            "/api/v1/sources",
            json!({"id": "a", "colour": "red"}),
            &["colour"],
        ),
        ("/api/v1/sources", json!({"id": 7}), &["id"]),
        ("/api/v1/services", json!({"name": "x"}), &["transport"]),
        (
            "/api/v1/services",
            rest(json!({"name": "Not A Slug"})),
            &["name"],
        ),
        (
            "/api/v1/services",
            rest(json!({"transport": {"kind": "rest", "base_url": "ftp://x"}})),
            &["transport.base_url"],
        ),
        (
            "/api/v1/services",
            rest(json!({"transport": {"kind": "rest", "base_url": "https://u:p@x"}})),
            &["transport.base_url"],
        ),
        (
            "/api/v1/services",
            rest(json!({"transport": {"kind": "rest", "base_url": "not a url"}})),
            &["transport.base_url"],
        ),
        (
            "/api/v1/services",
            rest(json!({"transport": {"kind": "gopher"}})),
            &["transport.kind"],
        ),
        (
            "/api/v1/services",
            rest(json!({"transport": {"kind": "amqp", "host": "h", "port": 0}})),
            &["transport.port"],
        ),
        (
            "/api/v1/services",
            rest(json!({"transport": {"kind": "amqp", "host": "h", "queue_declare": "amq.x"}})),
            &["transport.queue_declare"],
        ),
        (
            "/api/v1/services",
            rest(json!({"transport": {"kind": "amqp", "host": "h", "exchange": "x".repeat(300)}})),
            &["transport.exchange"],
        ),
        (
            "/api/v1/services",
            rest(json!({"transport": {"kind": "soap", "endpoint": "https://e", "version": "2.0"}})),
            &["transport.version"],
        ),
        (
            "/api/v1/services",
            rest(json!({"auth": {"type": "bearer"}})),
            &["auth.token"],
        ),
        (
            "/api/v1/services",
            rest(json!({"auth": {"type": "api_key", "key": "k", "header": "Bad Header"}})),
            &["auth.header"],
        ),
        (
            "/api/v1/services",
            rest(json!({"auth": {"type": "basic", "username": "a:b", "password": "p"}})),
            &["auth.username"],
        ),
        (
            "/api/v1/services",
            rest(json!({"auth": {"type": "oauth"}})),
            &["auth.type"],
        ),
        (
            "/api/v1/services",
            rest(json!({"signing_secret": "nope"})),
            &["signing_secret"],
        ),
        (
            "/api/v1/services",
            rest(json!({"headers": {"Content-Length": "5"}})),
            &["headers.Content-Length"],
        ),
        (
            "/api/v1/services",
            rest(json!({"headers": {"X-Ok": "bad\nvalue"}})),
            &["headers.X-Ok"],
        ),
        (
            "/api/v1/services",
            rest(json!({"timeout_ms": 0})),
            &["timeout_ms"],
        ),
        (
            "/api/v1/services",
            rest(json!({"retry": {"max_retries": 101}})),
            &["retry.max_retries"],
        ),
        (
            "/api/v1/services",
            rest(json!({"retry": {"backoff_base_ms": 5000, "backoff_cap_ms": 1000}})),
            &["retry.backoff_cap_ms"],
        ),
        (
            "/api/v1/services",
            rest(json!({"breaker": {"failure_threshold": 0}})),
            &["breaker.failure_threshold"],
        ),
        (
            "/api/v1/services",
            rest(json!({"breaker": {"cooldown_ms": 1}})),
            &["breaker.cooldown_ms"],
        ),
        (
            "/api/v1/services",
            rest(json!({"breaker": {"half_open_probes": 0}})),
            &["breaker.half_open_probes"],
        ),
        (
            "/api/v1/services",
            rest(json!({"concurrency": 0})),
            &["concurrency"],
        ),
        (
            "/api/v1/services",
            rest(json!({"rate_limit_per_sec": 0})),
            &["rate_limit_per_sec"],
        ),
        (
            "/api/v1/services",
            rest(json!({"max_job_age_ms": 10})),
            &["max_job_age_ms"],
        ),
        (
            "/api/v1/services",
            rest(json!({"description": "x\u{0}y"})),
            &["description"],
        ),
        (
            "/api/v1/services",
            json!({"name": "erp", "transport": {"kind": "soap", "endpoint": "https://erp.example/soap",
                   "version": "1.1", "ws_security": true}}),
            &["transport.ws_security"],
        ),
        (
            "/api/v1/services",
            json!({"name": "erp", "transport": {"kind": "soap", "endpoint": "https://erp.example/soap",
                   "version": "1.1", "ws_security": true}, "auth": {"type": "bearer", "token": "t-123"}}),
            &["transport.ws_security"],
        ),
        (
            "/api/v1/rules",
            json!({"events": ["*"], "service": "sis"}),
            &["name"],
        ),
        (
            "/api/v1/rules",
            json!({"name": "r", "service": "sis"}),
            &["events"],
        ),
        (
            "/api/v1/rules",
            json!({"name": "r", "events": [], "service": "sis"}),
            &["events"],
        ),
        (
            "/api/v1/rules",
            json!({"name": "r", "events": ["user_created"], "service": "sis"}),
            &["events[0]"],
        ),
        (
            "/api/v1/rules",
            json!({"name": "r", "events": ["*"], "service": "nope"}),
            &["service"],
        ),
        (
            "/api/v1/rules",
            json!({"name": "r", "events": ["*"]}),
            &["service"],
        ),
        (
            "/api/v1/rules",
            json!({"name": "r", "events": ["*"], "service": "sis", "sources": ["unknown"]}),
            &["sources[0]"],
        ),
        (
            "/api/v1/rules",
            json!({"name": "r", "events": ["*"], "service": "sis", "target": {"kind": "soap", "operation": "x"}}),
            &["target.kind"],
        ),
        (
            "/api/v1/rules",
            json!({"name": "r", "events": ["*"], "service": "sis", "target": {"kind": "rest", "method": "TRACE"}}),
            &["target.method"],
        ),
        (
            "/api/v1/rules",
            json!({"name": "r", "events": ["*"], "service": "sis", "headers": {"Host": "x"}}),
            &["headers.Host"],
        ),
        (
            "/api/v1/rules",
            json!({"name": "r", "events": ["*"], "service": "sis", "content_type": "json"}),
            &["content_type"],
        ),
        (
            "/api/v1/rules",
            json!({"name": "r", "events": ["*"], "service": "sis", "body": "x".repeat(300_000)}),
            &["body"],
        ),
        (
            "/api/v1/rules",
            json!({"name": "r", "events": ["*"], "service": "sis", "condition": "courseid == 12 &&& x"}),
            &["condition"],
        ),
        (
            "/api/v1/rules",
            json!({"name": "r", "events": ["*"], "service": "sis", "body": "{\"a\": {{#if x}}"}),
            &["body"],
        ),
        (
            "/api/v1/rules",
            json!({"name": "r", "events": ["*"], "service": "sis", "target": {"kind": "rest", "path": "/u/{{userid"}}),
            &["target.path"],
        ),
        (
            "/api/v1/rules",
            json!({"name": "r", "events": ["*"], "service": "sis", "headers": {"X-A": "{{a"}}),
            &["headers.X-A"],
        ),
        (
            "/api/v1/rules",
            json!({"name": "r", "events": ["*"], "service": "sis", "ordering_key": "{{/if}}"}),
            &["ordering_key"],
        ),
        (
            "/api/v1/rules",
            json!({"name": "r", "events": ["*"], "service": "sis", "ordering_key": "{{userid}}",
                   "ordering_on_dead_letter": "wait"}),
            &["ordering_on_dead_letter"],
        ),
        ("/api/v1/tokens", json!({"role": "viewer"}), &["label"]),
        ("/api/v1/tokens", json!({"label": "x"}), &["role"]),
        (
            "/api/v1/tokens",
            json!({"label": "x", "role": "root"}),
            &["role"],
        ),
        (
            "/api/v1/tokens",
            json!({"label": "x", "role": "viewer", "expires_at": "2001-01-01T00:00:00Z"}),
            &["expires_at"],
        ),
    ];
    for (path, body, fields) in cases {
        let answer = api.post(path, &body).await;
        assert_eq!(
            answer.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{path} {body}: {}",
            answer.body
        );
        assert_eq!(answer.body["error"], "unprocessable");
        assert_eq!(answer.fields(), fields, "{path} {body}");
    }
    let parse_error = api
        .post("/api/v1/rules", &json!({"name": "r", "events": ["*"], "service": "sis", "condition": "courseid == 12 &&& x"}))
        .await;
    let message = parse_error.body["errors"][0]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.contains("line 1, column 19"),
        "the position is reported: {message}"
    );
    let not_json = hub
        .http
        .post(hub.url(ServiceName::Api, "/api/v1/sources"))
        .bearer_auth(crate::harness::ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body("{\"id\": ")
        .send()
        .await
        .expect("answer");
    assert_eq!(not_json.status(), StatusCode::BAD_REQUEST);
    let wrong_type = hub
        .http
        .post(hub.url(ServiceName::Api, "/api/v1/sources"))
        .bearer_auth(crate::harness::ADMIN_TOKEN)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .expect("answer");
    assert_eq!(wrong_type.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    hub.stop().await;
}

#[tokio::test]
async fn stale_versions_are_refused_and_concurrent_updates_serialise() {
    let hub = api_hub().await;
    let api = hub.api();
    create_service(&hub, "sis").await;
    let read = api.get("/api/v1/services/sis").await;
    let etag = read.etag().expect("etag");
    let version = read.body["version"].as_i64().expect("version");

    // Two writers read the same version and update at the same moment: one wins.
    let (body_a, body_b) = (
        json!({"description": "writer a"}),
        json!({"description": "writer b"}),
    );
    let (a, b) = tokio::join!(
        api.patch_if("/api/v1/services/sis", &body_a, &etag),
        api.patch_if("/api/v1/services/sis", &body_b, &etag),
    );
    let mut statuses = [a.status, b.status];
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::OK, StatusCode::PRECONDITION_FAILED],
        "{} / {}",
        a.body,
        b.body
    );

    let stale_body = api
        .patch(
            "/api/v1/services/sis",
            &json!({"description": "late", "version": version}),
        )
        .await;
    assert_status(&stale_body, StatusCode::CONFLICT);
    let stale_delete = hub
        .http
        .delete(hub.url(ServiceName::Api, "/api/v1/services/sis"))
        .bearer_auth(crate::harness::ADMIN_TOKEN)
        .header("if-match", etag)
        .send()
        .await
        .expect("answer");
    assert_eq!(stale_delete.status(), StatusCode::PRECONDITION_FAILED);
    let winner = if a.status == StatusCode::OK {
        "writer a"
    } else {
        "writer b"
    };
    assert_eq!(
        api.get("/api/v1/services/sis").await.body["description"],
        winner
    );
    hub.stop().await;
}

#[tokio::test]
async fn changes_are_audited_with_actor_and_without_secrets() {
    let hub = api_hub().await;
    let api = hub.api();
    create_service(&hub, "sis").await;
    api.patch(
        "/api/v1/services/sis",
        &json!({"auth": {"type": "bearer", "token": "rotated-secret-value"}}),
    )
    .await;
    api.post("/api/v1/services/sis/disable", &json!({})).await;
    let log = api
        .get("/api/v1/audit?resource_kind=service&resource_id=sis")
        .await;
    let entries = log.body["items"].as_array().expect("items");
    let actions: Vec<&str> = entries
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(actions, ["disable", "update", "create"], "newest first");
    assert!(
        entries[0]["actor"]
            .as_str()
            .unwrap_or_default()
            .starts_with("token:")
    );
    assert_eq!(entries[0]["before"]["enabled"], true);
    assert_eq!(entries[0]["after"]["enabled"], false);
    assert_eq!(entries[2]["before"], Value::Null);
    let text = log.body.to_string();
    for secret in ["sis-bearer-token", "rotated-secret-value"] {
        assert!(!text.contains(secret), "audit leaks {secret}");
    }
    hub.stop().await;
}

/// The least role an endpoint needs.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Need {
    Viewer,
    Operator,
    Admin,
}

#[tokio::test]
async fn each_role_can_do_exactly_what_it_may() {
    let hub = api_hub().await;
    let admin = hub.api();
    let mut tokens = Vec::new();
    for role in ["viewer", "operator", "admin"] {
        let issued = admin
            .post("/api/v1/tokens", &json!({"label": role, "role": role}))
            .await;
        tokens.push((
            role,
            issued.body["token"].as_str().expect("token").to_owned(),
        ));
    }
    create_service(&hub, "sis").await;
    let mut serial = 0;
    // Each check runs against objects made for it, so allowed deletes do not affect others.
    for (role, token) in &tokens {
        let rank = match *role {
            "viewer" => Need::Viewer,
            "operator" => Need::Operator,
            _ => Need::Admin,
        };
        serial += 1;
        let source = format!("src-{serial}");
        let service = format!("svc-{serial}");
        admin
            .post(
                "/api/v1/sources",
                &json!({"id": source, "bearer_token": format!("bearer-token-{serial:08}")}),
            )
            .await;
        create_service(&hub, &service).await;
        let rule = create_rule(&hub, &service).await;
        let viewer_token_id = admin
            .post(
                "/api/v1/tokens",
                &json!({"label": "target", "role": "viewer"}),
            )
            .await
            .body["id"]
            .as_str()
            .expect("id")
            .to_owned();
        let table: Vec<(&str, String, Option<Value>, Need)> = vec![
            ("GET", "/api/v1/sources".into(), None, Need::Viewer),
            (
                "GET",
                format!("/api/v1/sources/{source}"),
                None,
                Need::Viewer,
            ),
            (
                "POST",
                "/api/v1/sources".into(),
                Some(
                    json!({"id": format!("new-{serial}"), "bearer_token": "bearer-token-new-0001"}),
                ),
                Need::Admin,
            ),
            (
                "PATCH",
                format!("/api/v1/sources/{source}"),
                Some(json!({"name": "renamed"})),
                Need::Admin,
            ),
            (
                "POST",
                format!("/api/v1/sources/{source}/disable"),
                Some(json!({})),
                Need::Admin,
            ),
            (
                "POST",
                format!("/api/v1/sources/{source}/enable"),
                Some(json!({})),
                Need::Admin,
            ),
            (
                "DELETE",
                format!("/api/v1/sources/{source}"),
                None,
                Need::Admin,
            ),
            ("GET", "/api/v1/services".into(), None, Need::Viewer),
            (
                "GET",
                format!("/api/v1/services/{service}"),
                None,
                Need::Viewer,
            ),
            (
                "POST",
                "/api/v1/services".into(),
                Some(rest_service(&format!("new-{serial}"))),
                Need::Admin,
            ),
            (
                "PATCH",
                format!("/api/v1/services/{service}"),
                Some(json!({"description": "d"})),
                Need::Admin,
            ),
            (
                "POST",
                format!("/api/v1/services/{service}/disable"),
                Some(json!({})),
                Need::Admin,
            ),
            (
                "POST",
                format!("/api/v1/services/{service}/enable"),
                Some(json!({})),
                Need::Admin,
            ),
            ("GET", "/api/v1/rules".into(), None, Need::Viewer),
            ("GET", format!("/api/v1/rules/{rule}"), None, Need::Viewer),
            (
                "POST",
                "/api/v1/rules".into(),
                Some(json!({"name": "n", "events": ["*"], "service": service})),
                Need::Operator,
            ),
            (
                "PATCH",
                format!("/api/v1/rules/{rule}"),
                Some(json!({"name": "renamed"})),
                Need::Operator,
            ),
            (
                "POST",
                format!("/api/v1/rules/{rule}/disable"),
                Some(json!({})),
                Need::Operator,
            ),
            (
                "POST",
                format!("/api/v1/rules/{rule}/enable"),
                Some(json!({})),
                Need::Operator,
            ),
            (
                "DELETE",
                format!("/api/v1/rules/{rule}"),
                None,
                Need::Operator,
            ),
            (
                "DELETE",
                format!("/api/v1/services/{service}?cascade=true"),
                None,
                Need::Admin,
            ),
            ("GET", "/api/v1/tokens".into(), None, Need::Admin),
            (
                "GET",
                format!("/api/v1/tokens/{viewer_token_id}"),
                None,
                Need::Admin,
            ),
            (
                "POST",
                "/api/v1/tokens".into(),
                Some(json!({"label": "l", "role": "viewer"})),
                Need::Admin,
            ),
            (
                "PATCH",
                format!("/api/v1/tokens/{viewer_token_id}"),
                Some(json!({"label": "l2"})),
                Need::Admin,
            ),
            (
                "DELETE",
                format!("/api/v1/tokens/{viewer_token_id}"),
                None,
                Need::Admin,
            ),
            ("GET", "/api/v1/audit".into(), None, Need::Viewer),
        ];
        for (method, path, body, need) in table {
            let answer = hub.api_as(token).call(method, &path, body.as_ref()).await;
            if rank >= need {
                assert!(
                    answer.status.is_success(),
                    "{role} {method} {path}: {} {}",
                    answer.status,
                    answer.body
                );
            } else {
                assert_eq!(
                    answer.status,
                    StatusCode::FORBIDDEN,
                    "{role} {method} {path}: {}",
                    answer.body
                );
                assert_eq!(answer.body["error"], "forbidden");
            }
        }
    }
    for (label, token) in [("no token", ""), ("unknown token", "mih_not_a_real_token")] {
        let answer = hub.api_as(token).get("/api/v1/sources").await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{label}");
    }
    hub.stop().await;
}

#[tokio::test]
async fn the_openapi_document_is_served_and_matches_the_committed_one() {
    let hub = api_hub().await;
    let served = hub
        .http
        .get(hub.url(ServiceName::Api, "/api/v1/openapi.json"))
        .send()
        .await
        .expect("answer")
        .text()
        .await
        .expect("body");
    assert_eq!(served, include_str!("../../services/api/openapi.json"));
    let document: Value = serde_json::from_str(&served).expect("JSON");
    assert_eq!(document["openapi"], "3.1.0");
    assert!(document["paths"]["/api/v1/rules/{id}"]["patch"].is_object());
    hub.stop().await;
}

#[tokio::test]
async fn a_service_the_dispatcher_may_not_reach_is_saved_with_a_warning() {
    // The test hubs allow 127.0.0.0/8 (dispatcher.allow_networks), not private networks.
    let hub = api_hub().await;
    let api = hub.api();
    let private = api
        .post(
            "/api/v1/services",
            &json!({"name": "intranet", "transport": {"kind": "rest", "base_url": "http://10.20.30.40/api"}}),
        )
        .await;
    assert_status(&private, StatusCode::CREATED);
    let warnings = private.body["warnings"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(warnings.len(), 1, "{}", private.body);
    assert_eq!(warnings[0]["field"], "transport.base_url");
    let message = warnings[0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("private") && message.contains("dispatcher.allow_networks"),
        "{message}"
    );
    assert!(
        api.get("/api/v1/services/intranet").await.body["warnings"].is_null(),
        "warnings belong to the answer of a save"
    );

    let allowed = api
        .post(
            "/api/v1/services",
            &json!({"name": "local", "transport": {"kind": "rest", "base_url": "http://127.0.0.1:9/api"}}),
        )
        .await;
    assert_status(&allowed, StatusCode::CREATED);
    assert!(allowed.body["warnings"].is_null(), "{}", allowed.body);

    let amqp = api
        .patch(
            "/api/v1/services/local",
            &json!({"transport": {"kind": "rest", "base_url": "http://[fd00::1]/api"}}),
        )
        .await;
    assert_status(&amqp, StatusCode::OK);
    assert_eq!(amqp.body["warnings"][0]["field"], "transport.base_url");

    let unknown = api
        .post(
            "/api/v1/services",
            &json!({"name": "typo", "transport": {"kind": "soap", "endpoint": "https://erp.mih-test.invalid/soap"}}),
        )
        .await;
    assert_status(&unknown, StatusCode::CREATED);
    let message = unknown.body["warnings"][0]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(message.contains("resolve"), "{}", unknown.body);
    hub.stop().await;
}

#[tokio::test]
async fn a_template_that_can_never_render_a_valid_request_is_refused_where_it_breaks() {
    let hub = api_hub().await;
    create_service(&hub, "sis").await;
    let api = hub.api();
    let rule = |body: &str, content_type: &str| {
        json!({"name": "r", "events": ["*"], "service": "sis", "body": body,
               "content_type": content_type})
    };
    let json_body = api
        .post(
            "/api/v1/rules",
            &rule("{\"a\": {{userid}}", "application/json"),
        )
        .await;
    assert_status(&json_body, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(json_body.fields(), ["body"]);
    let message = json_body.body["errors"][0]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.contains("never be valid JSON") && message.contains("line 1"),
        "{message}"
    );
    let xml_body = api
        .post(
            "/api/v1/rules",
            &rule("<user><id>{{userid}}</user>", "application/xml"),
        )
        .await;
    assert_status(&xml_body, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(xml_body.fields(), ["body"]);

    // What some event renders validly is accepted, however odd.
    for (body, content_type) in [
        (
            r#"{"a": {{userid}}, "list": [{{#each other.ids}}{{this}}{{/each}}]}"#,
            "application/json",
        ),
        (
            "<user><id>{{userid}}</id><note><![CDATA[{{other.note}}]]></note></user>",
            "text/xml",
        ),
        ("{\"a\": {{userid}}", "text/plain"),
    ] {
        let accepted = api.post("/api/v1/rules", &rule(body, content_type)).await;
        assert_status(&accepted, StatusCode::CREATED);
    }

    let climbing = api
        .post(
            "/api/v1/rules",
            &json!({"name": "r", "events": ["*"], "service": "sis",
                    "target": {"kind": "rest", "method": "PUT", "path": "/courses/../admin"}}),
        )
        .await;
    assert_status(&climbing, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(climbing.fields(), ["target.path"]);
    hub.stop().await;
}
