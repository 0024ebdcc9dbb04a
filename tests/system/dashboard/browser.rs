//! The dashboard in headless Chromium (Debian's chromium and chromedriver, driven through
//! `mih_testkit::browser`): what an administrator sees and does, with axe-core checking each
//! page and a screenshot of each under `target/dashboard-screenshots/`.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use mih_shared::ServiceName;
use mih_testkit::browser::Browser;
use mih_testkit::{HttpSink, fixtures};

use crate::harness::{ADMIN_TOKEN, TestHub};

const WAIT: Duration = Duration::from_secs(20);

/// A hub delivering every event to `sink`, with some deliveries already made.
async fn busy_hub(sink: &HttpSink) -> TestHub {
    let hub = TestHub::builder().start().await;
    hub.deliver_everything_to(sink, "sis", "/events").await;
    let events = fixtures::moodle_events();
    let body = serde_json::to_vec(&events[..10]).expect("json");
    let sent = hub.post_signed(&body, "application/json").await;
    assert_eq!(sent.status, StatusCode::ACCEPTED, "{}", sent.body);
    sink.wait_for(10, WAIT).await.expect("deliveries");
    hub
}

async fn log_in(browser: &Browser, hub: &TestHub, token: &str) {
    browser
        .goto(&hub.url(ServiceName::Api, "/"))
        .await
        .expect("the dashboard answers");
    browser
        .wait_for("#token", WAIT)
        .await
        .expect("the login form");
    browser.fill("#token", token).await.expect("token typed");
    browser
        .click("form.login button[type=submit]")
        .await
        .expect("submitted");
    // Only a logged-in page carries the session's CSRF token.
    browser
        .wait_for("meta[name=csrf-token]", WAIT)
        .await
        .expect("logged in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_administrator_logs_in_sees_the_overview_and_switches_language() {
    let sink = HttpSink::start().await.expect("sink");
    let hub = busy_hub(&sink).await;
    let browser = Browser::start().await.expect("chromium starts");

    browser
        .goto(&hub.url(ServiceName::Api, "/"))
        .await
        .expect("dashboard");
    browser.wait_for("#token", WAIT).await.expect("login form");
    browser.screenshot("login").await.expect("screenshot");
    browser.assert_accessible("login").await;

    log_in(&browser, &hub, ADMIN_TOKEN).await;
    assert_eq!(browser.text("h1").await.expect("h1"), "Overview");
    // The recorder's rollups arrive within seconds; the live part refreshes itself.
    browser
        .wait_for(".chart .uplot canvas", WAIT)
        .await
        .expect("charts drawn");
    browser
        .wait_for_text(".services tbody th", "sis", WAIT)
        .await
        .expect("the service is listed");
    let updated = browser.text(".updated time").await.expect("time");
    assert!(
        !updated.contains('T'),
        "the time is formatted for people: {updated}"
    );
    let session = browser
        .cookie("mih_session")
        .await
        .expect("cookie read")
        .expect("a session cookie");
    assert_eq!(session.http_only(), Some(true));
    browser.screenshot("overview").await.expect("screenshot");
    browser.assert_accessible("overview").await;

    // Every delivery is in the log; one opens on the request sent and each attempt.
    browser
        .goto(&hub.url(ServiceName::Api, "/deliveries"))
        .await
        .expect("deliveries");
    let rows = browser
        .texts("table.deliveries tbody tr")
        .await
        .expect("rows");
    assert_eq!(rows.len(), 10, "{rows:?}");
    assert!(
        rows.iter()
            .all(|r| r.contains("delivered") && r.contains("sis")),
        "{rows:?}"
    );
    browser.screenshot("deliveries").await.expect("screenshot");
    browser.assert_accessible("deliveries").await;
    browser
        .click("table.deliveries tbody tr a")
        .await
        .expect("a delivery opened");
    let request = browser
        .wait_for_text("pre.body", "\"path\": \"/events\"", WAIT)
        .await
        .expect("the request sent");
    assert!(request.contains("POST"), "{request}");
    assert!(
        browser
            .exists("table.attempts tbody tr")
            .await
            .expect("query")
    );
    browser.screenshot("delivery").await.expect("screenshot");
    browser.assert_accessible("delivery").await;
    browser
        .goto(&hub.url(ServiceName::Api, "/"))
        .await
        .expect("overview");
    browser
        .wait_for("#lang-picker", WAIT)
        .await
        .expect("picker");

    browser
        .select("#lang-picker", "fr")
        .await
        .expect("French chosen");
    browser
        .wait_for_text("h1", "Vue d", WAIT)
        .await
        .expect("the page is in French");
    browser.screenshot("overview-fr").await.expect("screenshot");
    browser.close().await;
    hub.stop().await;
}

/// The accessibility check can fail: an unlabelled field is a serious violation to axe-core.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axe_finds_an_unlabelled_field() {
    let browser = Browser::start().await.expect("chromium starts");
    browser
        .goto("data:text/html,<!doctype html><html lang=en><title>t</title><main><input type=text></main></html>")
        .await
        .expect("page");
    let violations = browser.axe().await.expect("axe runs");
    assert!(
        violations.iter().any(|v| v.id == "label" && v.is_serious()),
        "{violations:?}"
    );
    browser.close().await;
}

/// An operator sends a test request through the facade, sees the target's answer as text and
/// the circuit it opened, and closes it again; a viewer sees no controls, and the API refuses
/// the viewer's change too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_tests_a_service_and_resets_its_circuit_and_a_viewer_cannot() {
    let hub = TestHub::builder()
        .services(&[ServiceName::Api, ServiceName::Dispatcher])
        .start()
        .await;
    let sink = HttpSink::start().await.expect("sink");
    sink.set_reply(mih_testkit::Reply::status(500).with_body("<b>database on fire</b>"));
    let created = hub
        .api()
        .post(
            "/api/v1/services",
            &json!({"name": "grades", "transport": {"kind": "rest", "base_url": format!("{}/api", sink.url())},
                    "retry": {"max_retries": 0}, "breaker": {"failure_threshold": 1, "cooldown_ms": 600000}}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    hub.wait_for_config(ServiceName::Dispatcher).await;
    let token = |role: &str| {
        let hub = &hub;
        let role = role.to_owned();
        async move {
            let issued = hub
                .api()
                .post(
                    "/api/v1/tokens",
                    &json!({"label": format!("{role} on duty"), "role": role}),
                )
                .await;
            issued.body["token"].as_str().expect("token").to_owned()
        }
    };
    let (operator, viewer) = (token("operator").await, token("viewer").await);

    let browser = Browser::start().await.expect("chromium starts");
    log_in(&browser, &hub, &operator).await;
    browser
        .goto(&hub.url(ServiceName::Api, "/services"))
        .await
        .expect("services");
    browser
        .click("#service-grades details summary")
        .await
        .expect("opened");
    browser.fill("#path-grades", "/ping").await.expect("path");
    browser
        .click("#service-grades form.test button")
        .await
        .expect("sent");
    let shown = browser
        .wait_for_text("pre.body", "database on fire", WAIT)
        .await
        .expect("the target's answer");
    assert_eq!(
        shown, "<b>database on fire</b>",
        "shown as text, not markup"
    );
    assert!(!browser.exists("pre.body b").await.expect("query"));
    assert_eq!(sink.requests()[0].uri.path(), "/api/ping");
    // That failure opened the circuit (threshold 1): the list says so, with when it retries.
    browser
        .goto(&hub.url(ServiceName::Api, "/services"))
        .await
        .expect("services");
    browser
        .wait_for_text("#service-grades .badge.error", "open", WAIT)
        .await
        .expect("open circuit shown");
    assert!(
        browser
            .exists("#service-grades .retry time")
            .await
            .expect("query")
    );
    browser.screenshot("services").await.expect("screenshot");
    browser.assert_accessible("services").await;
    browser
        .click("#service-grades form[action$='/reset'] button")
        .await
        .expect("reset");
    browser
        .wait_for_text(".notice.ok", "closed again", WAIT)
        .await
        .expect("reset confirmed");
    browser
        .wait_for_text("#service-grades td:nth-child(4) .badge", "closed", WAIT)
        .await
        .expect("the circuit is closed");
    browser.close().await;

    let browser = Browser::start().await.expect("chromium starts");
    log_in(&browser, &hub, &viewer).await;
    browser
        .goto(&hub.url(ServiceName::Api, "/services"))
        .await
        .expect("services");
    browser
        .wait_for("#service-grades", WAIT)
        .await
        .expect("the list");
    assert!(
        !browser
            .exists("form[action$='/reset']")
            .await
            .expect("query"),
        "no controls"
    );
    assert!(!browser.exists("form.test").await.expect("query"));
    browser.assert_accessible("services-viewer").await;
    browser.close().await;
    let refused = hub
        .api_as(&viewer)
        .post("/api/v1/circuits/grades/reset", &json!({}))
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    hub.stop().await;
}

/// A target refuses an event (400): it becomes a dead letter; once the target is fixed, an
/// operator replays it from the page and it is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_is_replayed_from_the_page_after_the_target_is_fixed() {
    let sink = HttpSink::start().await.expect("sink");
    sink.set_reply(mih_testkit::Reply::status(400).with_body("unknown course"));
    let hub = TestHub::builder().start().await;
    hub.deliver_everything_to(&sink, "sis", "/enrol").await;
    let event = serde_json::to_vec(&fixtures::moodle_events()[3]).expect("json");
    let sent = hub.post_signed(&event, "application/json").await;
    assert_eq!(sent.status, StatusCode::ACCEPTED, "{}", sent.body);
    sink.wait_for(1, WAIT).await.expect("the refused attempt");

    let browser = Browser::start().await.expect("chromium starts");
    log_in(&browser, &hub, ADMIN_TOKEN).await;
    let list = hub.url(ServiceName::Api, "/dead-letters");
    // The dlq service projects the dead letter within a moment; reload until it is listed.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        browser.goto(&list).await.expect("dead letters");
        if browser
            .exists("table.letters tbody tr")
            .await
            .expect("query")
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the dead letter never appeared"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let reason = browser.text("table.letters tbody tr").await.expect("row");
    assert!(reason.contains("sis"), "{reason}");
    browser
        .screenshot("dead-letters")
        .await
        .expect("screenshot");
    browser.assert_accessible("dead-letters").await;
    // Inspected: the request as it would be sent again, and the target's answer.
    browser
        .click("table.letters tbody tr td a")
        .await
        .expect("the dead letter opened");
    browser
        .wait_for_text("pre.body", "/enrol", WAIT)
        .await
        .expect("the request");
    let outcome = browser.texts("pre.body").await.expect("blocks").join("\n");
    assert!(outcome.contains("unknown course"), "{outcome}");
    browser.screenshot("dead-letter").await.expect("screenshot");
    browser.assert_accessible("dead-letter").await;
    browser.goto(&list).await.expect("dead letters");

    sink.set_reply(mih_testkit::Reply::status(200));
    browser
        .click("table.letters form[action$='/replay'] button")
        .await
        .expect("replayed");
    browser
        .wait_for_text(".notice.ok", "new job", WAIT)
        .await
        .expect("replay confirmed");
    sink.wait_for(2, WAIT)
        .await
        .expect("the replay is delivered");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        browser.goto(&list).await.expect("dead letters");
        if !browser
            .exists("table.letters tbody tr")
            .await
            .expect("query")
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the delivered replay did not resolve the dead letter"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    browser.close().await;
    hub.stop().await;
}

/// An admin issues a token (shown once), whoever gets it logs in with it, and the admin
/// revokes it: that session ends at once. Only admins see the page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_issues_and_revokes_a_token_and_its_session_ends() {
    let hub = TestHub::builder()
        .services(&[ServiceName::Api])
        .start()
        .await;
    let admin = Browser::start().await.expect("chromium starts");
    log_in(&admin, &hub, ADMIN_TOKEN).await;
    admin
        .goto(&hub.url(ServiceName::Api, "/tokens"))
        .await
        .expect("tokens");
    admin
        .fill("#issue-label", "<script>alert(1)</script> on call")
        .await
        .expect("label");
    admin.select("#issue-role", "viewer").await.expect("role");
    admin.click("form.issue button").await.expect("issued");
    let token = admin
        .wait_for_text("#issued-token", "mih_", WAIT)
        .await
        .expect("the token, once");
    let label = admin
        .wait_for_text("table.tokens th", "on call", WAIT)
        .await
        .expect("listed");
    assert_eq!(label, "<script>alert(1)</script> on call", "shown as text");
    admin.screenshot("tokens").await.expect("screenshot");
    admin.assert_accessible("tokens").await;

    let viewer = Browser::start().await.expect("chromium starts");
    log_in(&viewer, &hub, token.trim()).await;
    assert!(
        !viewer.exists("a[href='/tokens']").await.expect("query"),
        "admins only"
    );
    viewer
        .goto(&hub.url(ServiceName::Api, "/tokens"))
        .await
        .expect("tokens");
    viewer
        .wait_for_text("h1", "Something went wrong", WAIT)
        .await
        .expect("refused");

    admin
        .goto(&hub.url(ServiceName::Api, "/tokens"))
        .await
        .expect("tokens");
    let row = admin
        .execute(
            "return [...document.querySelectorAll('table.tokens tr')].find(r => r.textContent.includes('on call')).id",
            vec![],
        )
        .await
        .expect("row id");
    let row = row.as_str().expect("id").to_owned();
    admin
        .click(&format!("#{row} form button"))
        .await
        .expect("revoke");
    admin.client().accept_alert().await.expect("confirmed");
    admin
        .wait_for_text(".notice.ok", "revoked", WAIT)
        .await
        .expect("revoked");
    viewer
        .goto(&hub.url(ServiceName::Api, "/"))
        .await
        .expect("overview");
    viewer
        .wait_for("#token", WAIT)
        .await
        .expect("back at the login form");
    assert!(
        viewer
            .current_url()
            .await
            .expect("url")
            .contains("expired=1")
    );
    admin.close().await;
    viewer.close().await;
    hub.stop().await;
}

/// The whole first morning in the browser: an admin registers a service and writes a rule for
/// it through the forms, previews the rule on an event Moodle really sent, saves it; events
/// then reach the target and show in Deliveries; the target goes down, and the service's page
/// shows its circuit open while jobs wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_creates_a_service_and_a_rule_previews_it_and_watches_deliveries() {
    let sink = HttpSink::start().await.expect("sink");
    let hub = TestHub::builder().start().await;
    let events = fixtures::moodle_events();
    let user_created = |i: usize| {
        let mut event = events[0].clone();
        event["objectid"] = json!(900 + i);
        event["relateduserid"] = json!(900 + i);
        serde_json::to_vec(&event).expect("json")
    };
    // A real event in the stream before any rule exists: the preview's material.
    let sent = hub.post_signed(&user_created(0), "application/json").await;
    assert_eq!(sent.status, StatusCode::ACCEPTED, "{}", sent.body);

    let browser = Browser::start().await.expect("chromium starts");
    log_in(&browser, &hub, ADMIN_TOKEN).await;
    browser
        .goto(&hub.url(ServiceName::Api, "/services/new"))
        .await
        .expect("the service form");
    browser.wait_for("#f-name", WAIT).await.expect("form");
    // Only the chosen kind's inputs show.
    let amqp_hidden = browser
        .execute("return document.getElementById('fs-amqp').hidden", vec![])
        .await
        .expect("script");
    assert_eq!(
        amqp_hidden,
        json!(true),
        "AMQP inputs hidden while REST is chosen"
    );
    browser.fill("#f-name", "crm").await.expect("name");
    browser
        .fill("#f-transport-base_url", &format!("{}/api", sink.url()))
        .await
        .expect("url");
    browser
        .fill("#f-retry-max_retries", "0")
        .await
        .expect("retries");
    browser
        .fill("#f-breaker-failure_threshold", "1")
        .await
        .expect("threshold");
    browser
        .fill("#f-breaker-cooldown_ms", "600000")
        .await
        .expect("cooldown");
    browser
        .screenshot("service-form")
        .await
        .expect("screenshot");
    browser.assert_accessible("service-form").await;
    browser
        .click("form.config button[type=submit].btn-primary")
        .await
        .expect("saved");
    browser
        .wait_for_text(".notice.ok", "Saved", WAIT)
        .await
        .expect("the service page");
    let title = browser.text("h1").await.expect("h1");
    assert!(title.starts_with("crm"), "{title}");

    browser
        .goto(&hub.url(ServiceName::Api, "/rules/new"))
        .await
        .expect("the rule form");
    browser.wait_for("#f-name", WAIT).await.expect("form");
    browser
        .fill("#f-name", "new users to the CRM")
        .await
        .expect("name");
    browser
        .fill("#event-picker", "\\core\\event\\user_created")
        .await
        .expect("picked");
    browser.click("#event-picker-add").await.expect("added");
    browser
        .fill("#f-target-path", "/users")
        .await
        .expect("path");
    browser
        .fill("#f-body", "{\"moodle_user\": {{relateduserid}} }")
        .await
        .expect("template");
    // The preview follows the typing: the stored event matched, and the request it renders.
    let preview = match browser
        .wait_for_text("#preview .preview-event", "\"moodle_user\": 900", WAIT)
        .await
    {
        Ok(preview) => preview,
        Err(error) => panic!(
            "the preview on the real event: {error}; the panel says {:?}",
            browser.text("#preview").await
        ),
    };
    assert!(preview.contains("matched"), "{preview}");
    browser.screenshot("rule-form").await.expect("screenshot");
    browser.assert_accessible("rule-form").await;

    // A condition with a syntax error is refused, and the editor points at the mistake.
    browser
        .fill("#f-condition", "courseid ==")
        .await
        .expect("condition");
    browser
        .click("form.config button[type=submit].btn-primary")
        .await
        .expect("submitted");
    browser
        .wait_for("#f-condition-error", WAIT)
        .await
        .expect("the condition's error");
    assert!(browser.exists("pre.pointer .caret").await.expect("query"));
    browser
        .fill("#f-condition", "relateduserid > 0")
        .await
        .expect("fixed");
    browser
        .click("form.config button[type=submit].btn-primary")
        .await
        .expect("saved");
    browser
        .wait_for_text(".notice.ok", "Saved", WAIT)
        .await
        .expect("the rule's page");
    hub.wait_for_config(ServiceName::Matcher).await;
    hub.wait_for_config(ServiceName::Dispatcher).await;

    for i in 1..=3 {
        let sent = hub.post_signed(&user_created(i), "application/json").await;
        assert_eq!(sent.status, StatusCode::ACCEPTED, "{}", sent.body);
    }
    sink.wait_for(3, WAIT).await.expect("delivered");
    assert_eq!(sink.requests()[0].uri.path(), "/api/users");
    browser
        .goto(&hub.url(ServiceName::Api, "/deliveries?service=crm"))
        .await
        .expect("deliveries");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let rows = browser
            .texts("table.deliveries tbody tr")
            .await
            .expect("rows");
        if rows.len() == 3 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{rows:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        browser.client().refresh().await.expect("reload");
    }

    // The target goes down: one failure opens the circuit (threshold 1), later jobs wait.
    sink.set_reply(mih_testkit::Reply::status(503));
    for i in 4..=6 {
        hub.post_signed(&user_created(i), "application/json").await;
    }
    browser
        .goto(&hub.url(ServiceName::Api, "/services/crm"))
        .await
        .expect("the service");
    let deadline = tokio::time::Instant::now() + WAIT;
    // The circuit's state is read live; its history comes from the recorder a moment later.
    while !(browser
        .exists(".two-columns .badge.error")
        .await
        .expect("query")
        && browser
            .exists("table.history tbody tr")
            .await
            .expect("query"))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the circuit never opened, or its history never showed it"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        browser.client().refresh().await.expect("reload");
    }
    browser.screenshot("service").await.expect("screenshot");
    browser.assert_accessible("service").await;

    // While the circuit is open, new jobs wait rather than fail: the overview counts them.
    for i in 7..=9 {
        hub.post_signed(&user_created(i), "application/json").await;
    }
    browser
        .goto(&hub.url(ServiceName::Api, "/"))
        .await
        .expect("overview");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let pending = browser
            .execute(
                "const card = [...document.querySelectorAll('.card')].find(c => c.textContent.includes('Pending jobs')); \
                 return card ? Number(card.querySelector('.figure').dataset.number) : -1",
                vec![],
            )
            .await
            .expect("script");
        if pending.as_f64().unwrap_or(-1.0) >= 3.0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "pending: {pending}");
        tokio::time::sleep(Duration::from_millis(500)).await;
        browser.client().refresh().await.expect("reload");
    }
    browser.close().await;
    hub.stop().await;
}

/// The pages not walked through above pass axe-core too, and an operator backfills a rule
/// from its page and sees the backfill finish without reloading.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_events_and_sources_pages_are_accessible_and_a_backfill_runs_from_the_page() {
    let sink = HttpSink::start().await.expect("sink");
    let hub = busy_hub(&sink).await;
    let browser = Browser::start().await.expect("chromium starts");
    log_in(&browser, &hub, ADMIN_TOKEN).await;

    browser
        .goto(&hub.url(ServiceName::Api, "/rules"))
        .await
        .expect("rules");
    browser
        .wait_for_text("table.rules-list th a", "everything to sis", WAIT)
        .await
        .expect("the rule is listed");
    browser.screenshot("rules").await.expect("screenshot");
    browser.assert_accessible("rules").await;
    browser
        .click("table.rules-list th a")
        .await
        .expect("the rule opened");
    browser
        .wait_for("#backfill-from", WAIT)
        .await
        .expect("backfill form");
    let an_hour_ago = browser
        .execute(
            "const d = new Date(Date.now() - 3600e3); d.setMinutes(d.getMinutes() - d.getTimezoneOffset()); \
             return d.toISOString().slice(0, 16)",
            vec![],
        )
        .await
        .expect("script");
    browser
        .execute(
            "document.getElementById('backfill-from').value = arguments[0]",
            vec![an_hour_ago],
        )
        .await
        .expect("from set");
    browser
        .click("form[action$='/backfill'] button")
        .await
        .expect("started");
    // The row polls itself until the backfill is done; the page is never reloaded.
    let row = browser
        .wait_for_text("table.backfills tbody tr", "completed", WAIT)
        .await
        .expect("the backfill completes");
    assert!(row.contains("100"), "{row}");
    browser.screenshot("rule").await.expect("screenshot");
    browser.assert_accessible("rule").await;

    browser
        .goto(&hub.url(ServiceName::Api, "/events"))
        .await
        .expect("events");
    browser
        .wait_for("table.events tbody tr", WAIT)
        .await
        .expect("the source's events");
    browser.screenshot("events").await.expect("screenshot");
    browser.assert_accessible("events").await;

    // Inbound: a reply the AMQP consumer had to park, as it parks one.
    let patched = hub
        .api()
        .patch(
            "/api/v1/services/sis",
            &json!({"inbound": {"source": "moodle", "bearer_token": "sis-inbound-token-00001"}}),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.body);
    let parked = mih_shared::messages::ParkedInbound {
        v: mih_shared::messages::Version,
        id: mih_shared::messages::InboundId::new_v7(),
        service: "sis".parse().expect("slug"),
        via: mih_shared::messages::InboundVia::Amqp,
        received_at: chrono::Utc::now(),
        reason: "the body is larger than 262144 bytes".into(),
        size: 300_000,
        excerpt: "<script>alert(1)</script>".into(),
        external_id: None,
    };
    hub.js
        .publish(
            hub.names()
                .inbound_parked_subject(&"sis".parse().expect("slug")),
            mih_shared::messages::encode(&parked).expect("json"),
        )
        .await
        .expect("publish")
        .await
        .expect("stored");
    let inbound = mih_testkit::eventually(WAIT, || async {
        browser
            .goto(&hub.url(ServiceName::Api, "/inbound?status=parked"))
            .await
            .map_err(|e| e.to_string())?;
        browser
            .wait_for_text("table.inbound tbody tr", "262144", Duration::from_secs(2))
            .await
            .map_err(|e| e.to_string())
    })
    .await
    .expect("the parked reply is listed");
    assert!(inbound.contains("sis"), "{inbound}");
    browser.screenshot("inbound").await.expect("screenshot");
    browser.assert_accessible("inbound").await;

    for (path, name) in [("/queue", "queue"), ("/queue/sis", "queue-jobs")] {
        browser
            .goto(&hub.url(ServiceName::Api, path))
            .await
            .expect("the queue");
        browser.wait_for("main h1", WAIT).await.expect("a page");
        browser.screenshot(name).await.expect("screenshot");
        browser.assert_accessible(name).await;
    }

    browser
        .goto(&hub.url(ServiceName::Api, "/sources"))
        .await
        .expect("sources");
    browser
        .wait_for("#source-moodle", WAIT)
        .await
        .expect("the seeded source");
    browser.screenshot("sources").await.expect("screenshot");
    browser.assert_accessible("sources").await;
    browser.close().await;
    hub.stop().await;
}
