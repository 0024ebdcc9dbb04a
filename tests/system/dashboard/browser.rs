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
    let service = hub
        .api()
        .post(
            "/api/v1/services",
            &json!({"name": "sis", "transport": {"kind": "rest", "base_url": format!("{}/api", sink.url())}}),
        )
        .await;
    assert_eq!(service.status, StatusCode::CREATED, "{}", service.body);
    let rule = hub
        .api()
        .post(
            "/api/v1/rules",
            &json!({"name": "all to sis", "events": ["*"], "service": "sis",
                    "target": {"kind": "rest", "method": "POST", "path": "/events"}}),
        )
        .await;
    assert_eq!(rule.status, StatusCode::CREATED, "{}", rule.body);
    hub.wait_for_config(ServiceName::Matcher).await;
    hub.wait_for_config(ServiceName::Dispatcher).await;
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
