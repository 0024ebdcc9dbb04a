//! The dashboard over plain HTTP: what a browser is sent, before any JavaScript runs.

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use serde_json::json;

use mih_shared::ServiceName;

use crate::harness::{ADMIN_TOKEN, TestHub};

/// A browser without JavaScript: follows nothing by itself, keeps the cookies it is given.
struct Visitor<'a> {
    hub: &'a TestHub,
    http: reqwest::Client,
    cookies: Vec<(String, String)>,
}

struct Page {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl<'a> Visitor<'a> {
    fn new(hub: &'a TestHub) -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        Visitor {
            hub,
            http,
            cookies: Vec::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn keep(&mut self, response: reqwest::Response) -> Page {
        for value in response.headers().get_all(SET_COOKIE) {
            let text = value.to_str().expect("ascii cookie");
            let (pair, _) = text.split_once(';').unwrap_or((text, ""));
            let (name, value) = pair.split_once('=').expect("name=value");
            self.cookies.retain(|(k, _)| k != name);
            if !text.contains("Max-Age=0") {
                self.cookies.push((name.to_owned(), value.to_owned()));
            }
        }
        Page {
            status: response.status(),
            headers: response.headers().clone(),
            body: response.text().await.expect("body"),
        }
    }

    async fn get(&mut self, path: &str) -> Page {
        let response = self
            .http
            .get(self.hub.url(ServiceName::Api, path))
            .header("cookie", self.cookie_header())
            .send()
            .await
            .expect("api answers");
        self.keep(response).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let response = self
            .http
            .post(self.hub.url(ServiceName::Api, path))
            .header("cookie", self.cookie_header())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(mih_testkit::form_body(form))
            .send()
            .await
            .expect("api answers");
        self.keep(response).await
    }

    fn cookie(&self, name: &str) -> Option<&str> {
        self.cookies
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Logs in with `token` through the form, as a person would.
    async fn log_in(&mut self, token: &str) -> Page {
        self.get("/login").await;
        let csrf = self
            .cookie("mih_login")
            .expect("login form cookie")
            .to_owned();
        self.post(
            "/login",
            &[("token", token), ("csrf", &csrf), ("next", "/")],
        )
        .await
    }
}

fn between<'t>(text: &'t str, start: &str, end: &str) -> Option<&'t str> {
    let from = text.find(start)? + start.len();
    let to = text[from..].find(end)? + from;
    Some(&text[from..to])
}

async fn hub() -> TestHub {
    TestHub::builder()
        .services(&[ServiceName::Api])
        .start()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logging_in_sets_a_strict_http_only_session_and_pages_are_locked_down() {
    let hub = hub().await;
    let mut visitor = Visitor::new(&hub);

    let anonymous = visitor.get("/").await;
    assert_eq!(anonymous.status, StatusCode::SEE_OTHER);
    assert_eq!(anonymous.headers[LOCATION], "/login?next=/");

    let form = visitor.get("/login").await;
    assert_eq!(form.status, StatusCode::OK);
    let csp = form.headers["content-security-policy"]
        .to_str()
        .expect("csp");
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe"),
        "{csp}"
    );
    assert_eq!(form.headers["x-frame-options"], "DENY");
    assert!(
        form.body.contains(r#"<label for="token">"#),
        "the field is labelled"
    );

    let refused = visitor.log_in("mih_not-a-real-token").await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert!(
        refused.body.contains("unknown, revoked or expired"),
        "{}",
        refused.body
    );

    // A login form posted from elsewhere (no matching login cookie) is refused.
    let forged = Visitor::new(&hub)
        .post(
            "/login",
            &[("token", ADMIN_TOKEN), ("csrf", "guess"), ("next", "/")],
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);

    let accepted = visitor.log_in(ADMIN_TOKEN).await;
    assert_eq!(accepted.status, StatusCode::SEE_OTHER, "{}", accepted.body);
    let session = accepted
        .headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("mih_session="))
        .expect("a session cookie");
    assert!(
        session.contains("HttpOnly") && session.contains("SameSite=Strict"),
        "{session}"
    );

    let overview = visitor.get("/").await;
    assert_eq!(overview.status, StatusCode::OK);
    assert!(
        overview.body.contains("<h1>Overview</h1>"),
        "{}",
        overview.body
    );
    assert_eq!(overview.headers["cache-control"], "no-store");
    let csrf = between(&overview.body, r#"<meta name="csrf-token" content=""#, "\"")
        .expect("the page's CSRF token")
        .to_owned();

    // Changing anything needs the CSRF token: logging out without it is refused.
    assert_eq!(
        visitor.post("/logout", &[]).await.status,
        StatusCode::FORBIDDEN
    );
    let out = visitor.post("/logout", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert_eq!(
        visitor.get("/").await.status,
        StatusCode::SEE_OTHER,
        "logged out"
    );

    // A revoked token ends its session at once.
    let issued = hub
        .api()
        .post(
            "/api/v1/tokens",
            &json!({"label": "night shift", "role": "viewer"}),
        )
        .await;
    let token = issued.body["token"].as_str().expect("token").to_owned();
    let id = issued.body["id"].as_str().expect("id").to_owned();
    let mut night = Visitor::new(&hub);
    night.log_in(&token).await;
    assert_eq!(night.get("/").await.status, StatusCode::OK);
    let revoked = hub.api().delete(&format!("/api/v1/tokens/{id}")).await;
    assert!(revoked.status.is_success(), "{}", revoked.body);
    let after = night.get("/").await;
    assert_eq!(after.status, StatusCode::SEE_OTHER);
    assert_eq!(after.headers[LOCATION], "/login?next=/&expired=1");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_from_users_is_shown_as_text_and_pages_speak_the_visitors_language() {
    let hub = hub().await;
    let hostile = "<img src=x onerror=alert(1)>";
    let issued = hub
        .api()
        .post(
            "/api/v1/tokens",
            &json!({"label": hostile, "role": "operator"}),
        )
        .await;
    let token = issued.body["token"].as_str().expect("token").to_owned();
    let mut visitor = Visitor::new(&hub);
    visitor.log_in(&token).await;
    let page = visitor.get("/").await;
    assert!(!page.body.contains("<img"), "the label is not markup");
    assert!(
        page.body
            .contains("&lt;img src&#x3D;x onerror&#x3D;alert(1)&gt; (operator)"),
        "{}",
        page.body
    );

    // The browser's language by default, the picker's choice after it.
    let spanish = visitor
        .http
        .get(hub.url(ServiceName::Api, "/"))
        .header("cookie", visitor.cookie_header())
        .header("accept-language", "es-ES,es;q=0.9,en;q=0.5")
        .send()
        .await
        .expect("answer")
        .text()
        .await
        .expect("body");
    assert!(spanish.contains(r#"<html lang="es">"#), "{spanish}");
    let chosen = visitor.get("/lang?lang=fr&back=/").await;
    assert_eq!(chosen.status, StatusCode::SEE_OTHER);
    assert_eq!(chosen.headers[LOCATION], "/");
    let french = visitor.get("/").await;
    assert!(french.body.contains(r#"<html lang="fr">"#));
    assert!(!french.body.contains("<h1>Overview</h1>"), "translated");
    // A picker pointed elsewhere stays on this site.
    let away = visitor.get("/lang?lang=it&back=//evil.example/").await;
    assert_eq!(away.headers[LOCATION], "/");
    hub.stop().await;
}

/// Text as a browser shows it: handlebars escapes `=` and `/` too.
fn unescape(html: &str) -> String {
    html.replace("&#x3D;", "=")
        .replace("&#x2F;", "/")
        .replace("&#x60;", "`")
        .replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The CSRF token of a page a logged-in visitor got.
fn csrf_of(page: &Page) -> String {
    between(&page.body, r#"<meta name="csrf-token" content=""#, "\"")
        .expect("the page's CSRF token")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_are_created_and_changed_through_the_form_with_secrets_write_only() {
    let hub = hub().await;
    let mut admin = Visitor::new(&hub);
    admin.log_in(ADMIN_TOKEN).await;
    let form = admin.get("/services/new").await;
    assert_eq!(form.status, StatusCode::OK, "{}", form.body);
    assert!(
        form.body.contains(r#"<label for="f-transport-base_url">"#),
        "every input is labelled"
    );
    let csrf = csrf_of(&form);

    // A refusal keeps what was typed — except the secret — and puts the API's words next to
    // the input they are about.
    let refused = admin
        .post(
            "/services/new",
            &[
                ("csrf", &csrf),
                ("name", "crm"),
                ("transport.kind", "rest"),
                ("transport.base_url", "ftp://crm.example/"),
                ("auth.type", "bearer"),
                ("auth.token", "tok-EN-1"),
                ("retry.max_retries", "lots"),
            ],
        )
        .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        refused.body.contains(r#"id="f-retry-max_retries-error""#),
        "{}",
        refused.body
    );
    assert!(refused.body.contains("must be a whole number"));
    assert!(
        !refused.body.contains("tok-EN-1"),
        "a secret is never sent back"
    );
    assert!(
        refused.body.contains(r#"value="crm""#),
        "what was typed stays"
    );
    let refused = admin
        .post(
            "/services/new",
            &[
                ("csrf", &csrf),
                ("name", "crm"),
                ("transport.kind", "rest"),
                ("transport.base_url", "ftp://crm.example/"),
                ("auth.type", "bearer"),
                ("auth.token", "tok-EN-1"),
            ],
        )
        .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    let error = between(&refused.body, r#"id="f-transport-base_url-error">"#, "<")
        .expect("the URL's error next to it");
    assert!(error.contains("http:// or https://"), "{error}");

    let created = admin
        .post(
            "/services/new",
            &[
                ("csrf", &csrf),
                ("name", "crm"),
                ("description", "Student CRM"),
                ("enabled", "on"),
                ("transport.kind", "rest"),
                ("transport.base_url", "https://crm.example/api"),
                ("transport.host", "ignored, another kind's input"),
                ("auth.type", "bearer"),
                ("auth.token", "tok-EN-1"),
                ("headers", "X-Site: moodle"),
                ("timeout_ms", "2500"),
                ("rate_limit_per_sec", ""),
            ],
        )
        .await;
    assert_eq!(created.status, StatusCode::SEE_OTHER, "{}", created.body);
    assert_eq!(created.headers[LOCATION], "/services/crm?saved=1");
    let stored = hub.api().get("/api/v1/services/crm").await.body;
    assert_eq!(stored["transport"]["base_url"], "https://crm.example/api");
    assert_eq!(stored["auth"], json!({"type": "bearer", "token_set": true}));
    assert_eq!(stored["headers"], json!({"X-Site": "moodle"}));
    assert_eq!(stored["timeout_ms"], 2500);

    let detail = admin.get("/services/crm?saved=1").await;
    assert_eq!(detail.status, StatusCode::OK);
    assert!(detail.body.contains("https://crm.example/api"));
    assert!(detail.body.contains(r#"href="/services/crm/edit""#));

    // Editing: the secret input is empty and says a value is kept; saving without typing one
    // keeps it; a stale form (someone saved in between) is refused, not silently merged.
    let edit = admin.get("/services/crm/edit").await;
    assert!(!edit.body.contains("tok-EN-1"));
    assert!(
        edit.body.contains("leave empty to keep it"),
        "{}",
        edit.body
    );
    let version = between(&edit.body, r#"name="version" value=""#, "\"")
        .expect("the version the form was drawn from")
        .to_owned();
    let changed = admin
        .post(
            "/services/crm/edit",
            &[
                ("csrf", &csrf),
                ("version", &version),
                ("enabled", "on"),
                ("transport.kind", "amqp"),
                ("transport.host", "rabbit.example"),
                ("transport.exchange", "moodle"),
                ("auth.type", "bearer"),
                ("timeout_ms", "3000"),
            ],
        )
        .await;
    assert_eq!(changed.status, StatusCode::SEE_OTHER, "{}", changed.body);
    let stored = hub.api().get("/api/v1/services/crm").await.body;
    assert_eq!(stored["transport"]["kind"], "amqp");
    assert_eq!(stored["transport"]["port"], 5672);
    assert_eq!(stored["auth"]["token_set"], true, "the token was kept");
    assert_eq!(stored["description"], "", "an emptied field is emptied");
    let stale = admin
        .post(
            "/services/crm/edit",
            &[
                ("csrf", &csrf),
                ("version", &version),
                ("transport.kind", "rest"),
                ("transport.base_url", "https://other.example/"),
            ],
        )
        .await;
    assert_eq!(stale.status, StatusCode::CONFLICT, "{}", stale.body);
    assert_eq!(
        hub.api().get("/api/v1/services/crm").await.body["transport"]["kind"],
        "amqp"
    );

    let disabled = admin
        .post("/services/crm/disable", &[("csrf", &csrf)])
        .await;
    assert_eq!(disabled.status, StatusCode::SEE_OTHER);
    assert_eq!(
        hub.api().get("/api/v1/services/crm").await.body["enabled"],
        false
    );

    // A viewer sees the service but no edit controls, and the form's address refuses them.
    let issued = hub
        .api()
        .post(
            "/api/v1/tokens",
            &json!({"label": "auditor", "role": "viewer"}),
        )
        .await;
    let mut viewer = Visitor::new(&hub);
    viewer
        .log_in(issued.body["token"].as_str().expect("token"))
        .await;
    let seen = viewer.get("/services/crm").await;
    assert_eq!(seen.status, StatusCode::OK);
    assert!(!seen.body.contains("/edit"), "{}", seen.body);
    assert!(!viewer.get("/services").await.body.contains("/services/new"));
    assert_eq!(
        viewer.get("/services/new").await.status,
        StatusCode::FORBIDDEN
    );
    let viewer_csrf = csrf_of(&seen);
    let attempt = viewer
        .post(
            "/services/crm/edit",
            &[
                ("csrf", &viewer_csrf),
                ("transport.kind", "rest"),
                ("transport.base_url", "https://evil.example/"),
            ],
        )
        .await;
    assert_eq!(attempt.status, StatusCode::FORBIDDEN);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_filter_by_rule_event_time_and_text_and_name_a_bad_time() {
    let hub = hub().await;
    let mut admin = Visitor::new(&hub);
    admin.log_in(ADMIN_TOKEN).await;
    let page = admin
        .get("/deliveries?eventname=core%5Cevent%5Cuser_created&from=2026-12-01T10%3A00&tz_offset=-60&q=timeout&status=")
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(
        page.body.contains(r#"value="2026-12-01T10:00""#),
        "the filter stays filled in"
    );
    assert!(page.body.contains(r#"<label for="d-rule">"#));
    let bad = admin.get("/deliveries?from=last+tuesday").await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad.body.contains("last tuesday"), "{}", bad.body);
    hub.stop().await;
}

/// Every dead letter the filter matches is replayed in one go, and the page follows the
/// operation until it is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_filtered_dead_letter_is_replayed_with_progress() {
    let sink = mih_testkit::HttpSink::start().await.expect("sink");
    sink.set_reply(mih_testkit::Reply::status(400).with_body("unknown course"));
    let hub = TestHub::builder().start().await;
    hub.deliver_everything_to(&sink, "sis", "/enrol").await;
    let events = mih_testkit::fixtures::moodle_events();
    let body = serde_json::to_vec(&events[..3]).expect("json");
    let sent = hub.post_signed(&body, "application/json").await;
    assert_eq!(sent.status, StatusCode::ACCEPTED, "{}", sent.body);
    mih_testkit::eventually(std::time::Duration::from_secs(20), || async {
        let listed = hub.api().get("/api/v1/dead-letters?status=dead").await;
        let count = listed.body["items"].as_array().map_or(0, Vec::len);
        if count == 3 {
            Ok(())
        } else {
            Err(format!("{count} dead letters"))
        }
    })
    .await
    .expect("three dead letters");
    sink.set_reply(mih_testkit::Reply::status(200));

    let mut operator = Visitor::new(&hub);
    operator.log_in(ADMIN_TOKEN).await;
    let list = operator.get("/dead-letters?q=unknown+course").await;
    assert!(
        list.body
            .contains("Replay every dead letter this filter matches"),
        "{}",
        list.body
    );
    let csrf = csrf_of(&list);
    let started = operator
        .post(
            "/dead-letters/replay-all",
            &[
                ("csrf", &csrf),
                ("q", "unknown course"),
                ("service", ""),
                ("status", ""),
            ],
        )
        .await;
    assert_eq!(started.status, StatusCode::SEE_OTHER, "{}", started.body);
    let location = started.headers[LOCATION]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        location.starts_with("/dead-letters?operation="),
        "{location}"
    );
    let id = between(&location, "operation=", "&")
        .expect("the operation's id")
        .to_owned();
    let followed = operator.get(&location).await;
    assert!(
        followed.body.contains(&format!(r#"id="operation-{id}""#)),
        "{}",
        followed.body
    );
    mih_testkit::eventually(std::time::Duration::from_secs(20), || {
        let operator = &operator;
        let id = &id;
        async move {
            let panel = operator
                .http
                .get(operator.hub.url(
                    ServiceName::Api,
                    &format!("/dead-letters/operations/{id}/progress"),
                ))
                .header("cookie", operator.cookie_header())
                .send()
                .await
                .map_err(|e| e.to_string())?
                .text()
                .await
                .map_err(|e| e.to_string())?;
            if panel.contains("3 replayed, 0 could not be, of 3") && !panel.contains("hx-trigger") {
                Ok(())
            } else {
                Err(panel)
            }
        }
    })
    .await
    .expect("the operation completes and stops polling");
    sink.wait_for(6, std::time::Duration::from_secs(20))
        .await
        .expect("three refusals, then three replays delivered");
    hub.stop().await;
}

/// An admin adds a Moodle site and gets its signing secret once; the site signs with it and
/// ingest takes its events; a rotation's new secret works at once and the old one still does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_adds_a_site_whose_secret_is_shown_once_and_works() {
    let hub = TestHub::builder()
        .services(&[ServiceName::Api, ServiceName::Ingest])
        .start()
        .await;
    let mut admin = Visitor::new(&hub);
    admin.log_in(ADMIN_TOKEN).await;
    let list = admin.get("/sources").await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.body);
    let csrf = csrf_of(&list);
    let added = admin
        .post(
            "/sources",
            &[
                ("csrf", &csrf),
                ("id", "campus-b"),
                ("name", "Campus <b>B</b>"),
            ],
        )
        .await;
    assert_eq!(added.status, StatusCode::OK, "{}", added.body);
    let secret =
        unescape(between(&added.body, r#"id="issued-secret">"#, "<").expect("the secret, once"));
    assert!(
        secret.starts_with("whsec_") && secret.len() > 40,
        "{secret}"
    );
    assert!(
        added.body.contains("Campus &lt;b&gt;B&lt;/b&gt;"),
        "the name is text"
    );
    assert!(
        !admin.get("/sources").await.body.contains(&secret),
        "shown once only"
    );
    let again = admin
        .post("/sources", &[("csrf", &csrf), ("id", "campus-b")])
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.body);

    let event = serde_json::to_vec(&mih_testkit::fixtures::moodle_events()[0]).expect("json");
    let send = |secret: String| {
        let hub = &hub;
        let event = event.clone();
        async move {
            mih_testkit::eventually(std::time::Duration::from_secs(20), || {
                let headers = mih_testkit::sign::signed_now(&secret, "campus-b", &event);
                let event = event.clone();
                async move {
                    let answer = hub.post_events(event, "application/json", &headers).await;
                    if answer.status == StatusCode::ACCEPTED {
                        Ok(())
                    } else {
                        Err(format!("{}: {}", answer.status, answer.body))
                    }
                }
            })
            .await
        }
    };
    send(secret.clone())
        .await
        .expect("ingest takes the site's signed events");

    let rotated = admin
        .post("/sources/campus-b/rotate", &[("csrf", &csrf)])
        .await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.body);
    let fresh =
        unescape(between(&rotated.body, r#"id="issued-secret">"#, "<").expect("the new secret"));
    assert_ne!(fresh, secret);
    send(fresh).await.expect("the new secret works");
    send(secret)
        .await
        .expect("the old one still does, for the overlap");

    // Operators and viewers do not see or reach the page.
    let issued = hub
        .api()
        .post(
            "/api/v1/tokens",
            &json!({"label": "ops", "role": "operator"}),
        )
        .await;
    let mut operator = Visitor::new(&hub);
    operator
        .log_in(issued.body["token"].as_str().expect("token"))
        .await;
    let overview = operator.get("/").await;
    assert!(!overview.body.contains(r#"href="/sources""#));
    assert_eq!(operator.get("/sources").await.status, StatusCode::FORBIDDEN);
    let forged = operator
        .post(
            "/sources",
            &[("csrf", &csrf_of(&overview)), ("id", "sneaky")],
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    hub.stop().await;
}

/// A source's latest events, filtered by name, each with the rules that took it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_events_page_lists_a_sources_latest_events_and_the_rules_that_took_them() {
    let sink = mih_testkit::HttpSink::start().await.expect("sink");
    let hub = TestHub::builder().start().await;
    hub.deliver_everything_to(&sink, "sis", "/events").await;
    let events = mih_testkit::fixtures::moodle_events();
    let mut hostile = events[0].clone();
    hostile["other"] = json!({"username": "<img src=x onerror=alert(1)>"});
    let batch = json!([hostile, events[5], events[9]]);
    let sent = hub
        .post_signed(
            &serde_json::to_vec(&batch).expect("json"),
            "application/json",
        )
        .await;
    assert_eq!(sent.status, StatusCode::ACCEPTED, "{}", sent.body);
    sink.wait_for(3, std::time::Duration::from_secs(20))
        .await
        .expect("delivered");
    let mut viewer = Visitor::new(&hub);
    viewer.log_in(ADMIN_TOKEN).await;
    let page = mih_testkit::eventually(std::time::Duration::from_secs(20), || {
        let viewer = &viewer;
        async move {
            let response = viewer
                .http
                .get(viewer.hub.url(ServiceName::Api, "/events?source=moodle"))
                .header("cookie", viewer.cookie_header())
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let body = response.text().await.map_err(|e| e.to_string())?;
            // The recorder logs the deliveries a moment after they happen.
            if body.matches("everything to sis").count() == 3 {
                Ok(body)
            } else {
                Err(body)
            }
        }
    })
    .await
    .expect("three events, each taken by the rule");
    assert!(!page.contains("<img src=x"), "event data is text");
    assert!(page.contains("&lt;img src&#x3D;x onerror&#x3D;alert(1)&gt;"));
    let name = events[5]["eventname"].as_str().expect("name");
    let only = viewer
        .get(&format!(
            "/events?source=moodle&eventname={}",
            mih_testkit::form_body(&[("v", name)]).trim_start_matches("v=")
        ))
        .await;
    assert_eq!(only.status, StatusCode::OK);
    let rows = only.body.matches("<tr id=\"event-").count();
    let expected = [&hostile, &events[5], &events[9]]
        .iter()
        .filter(|e| e["eventname"] == events[5]["eventname"])
        .count();
    assert_eq!(rows, expected, "{}", only.body);
    hub.stop().await;
}

/// Rules: a viewer reads them but finds no control, and the addresses refuse the viewer; an
/// operator writes rules and backfills them (the API's roles).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_show_each_role_only_what_it_may_do() {
    let hub = hub().await;
    let sink = mih_testkit::HttpSink::start().await.expect("sink");
    hub.deliver_everything_to(&sink, "sis", "/events").await;
    let rule = hub.api().get("/api/v1/rules").await.body["items"][0]["id"]
        .as_str()
        .expect("the rule")
        .to_owned();
    let token = |role: &'static str| {
        let hub = &hub;
        async move {
            let issued = hub
                .api()
                .post("/api/v1/tokens", &json!({"label": role, "role": role}))
                .await;
            issued.body["token"].as_str().expect("token").to_owned()
        }
    };
    let mut viewer = Visitor::new(&hub);
    viewer.log_in(&token("viewer").await).await;
    let list = viewer.get("/rules").await;
    assert_eq!(list.status, StatusCode::OK);
    assert!(list.body.contains("everything to sis"));
    assert!(!list.body.contains("/rules/new"));
    let page = viewer.get(&format!("/rules/{rule}")).await;
    assert!(
        !page.body.contains("/edit") && !page.body.contains("/backfill"),
        "{}",
        page.body
    );
    assert_eq!(viewer.get("/rules/new").await.status, StatusCode::FORBIDDEN);
    let csrf = csrf_of(&page);
    let refused = viewer
        .post(
            &format!("/rules/{rule}/edit"),
            &[
                ("csrf", &csrf),
                ("name", "mine now"),
                ("service", "sis"),
                ("events", "*"),
            ],
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let refused = viewer
        .post(
            &format!("/rules/{rule}/backfill"),
            &[("csrf", &csrf), ("from", "2026-01-01T00:00")],
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(
        hub.api().get(&format!("/api/v1/rules/{rule}")).await.body["name"],
        "everything to sis"
    );

    let mut operator = Visitor::new(&hub);
    operator.log_in(&token("operator").await).await;
    let page = operator.get(&format!("/rules/{rule}")).await;
    assert!(
        page.body.contains("/backfill") && page.body.contains("/edit"),
        "{}",
        page.body
    );
    hub.stop().await;
}

/// The queue page: jobs waiting for a failing target, the oldest's age; an operator hurries
/// one waiting for its retry once the target is back, and moves another to the dead letters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_page_shows_waiting_jobs_and_an_operator_hurries_or_moves_them() {
    let sink = mih_testkit::HttpSink::start().await.expect("sink");
    // The target asks for ten minutes: the retry's time is then known, not a random draw.
    sink.set_reply(mih_testkit::Reply::status(503).with_header("retry-after", "600"));
    let hub = TestHub::builder().start().await;
    let created = hub
        .api()
        .post(
            "/api/v1/services",
            &json!({"name": "grades", "transport": {"kind": "rest", "base_url": format!("{}/api", sink.url())},
                    "retry": {"max_retries": 5},
                    "breaker": {"failure_threshold": 100}}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let rule = hub
        .api()
        .post(
            "/api/v1/rules",
            &json!({"name": "grades", "events": ["*"], "service": "grades"}),
        )
        .await;
    assert_eq!(rule.status, StatusCode::CREATED, "{}", rule.body);
    hub.wait_for_config(ServiceName::Matcher).await;
    hub.wait_for_config(ServiceName::Dispatcher).await;
    let events = mih_testkit::fixtures::moodle_events();
    let body = serde_json::to_vec(&events[..2]).expect("json");
    let sent = hub.post_signed(&body, "application/json").await;
    assert_eq!(sent.status, StatusCode::ACCEPTED, "{}", sent.body);
    sink.wait_for(2, std::time::Duration::from_secs(20))
        .await
        .expect("both refused once");

    let mut operator = Visitor::new(&hub);
    operator.log_in(ADMIN_TOKEN).await;
    let overview = operator.get("/queue").await;
    assert_eq!(overview.status, StatusCode::OK, "{}", overview.body);
    let row = between(&overview.body, r#"<tr id="queue-grades">"#, "</tr>").expect("the service");
    assert!(row.contains(r#"data-number="2""#), "{row}");
    assert!(row.contains("s old"), "the oldest job's age: {row}");

    // Both wait in the dispatcher for a retry ten minutes away, once both attempts are in the
    // delivery log (the sink saw them a moment before the recorder did: waiting for one of the
    // two failed in CI).
    let listed = mih_testkit::eventually(std::time::Duration::from_secs(20), || {
        let hub = &hub;
        async move {
            let listed = hub.api().get("/api/v1/queue/grades/jobs").await;
            let items = listed.body["items"].as_array().cloned().unwrap_or_default();
            if items.len() == 2 && items.iter().all(|job| job["next_attempt_at"].is_string()) {
                Ok(items)
            } else {
                Err(listed.body.to_string())
            }
        }
    })
    .await
    .expect("two jobs waiting for a retry");
    let response = operator
        .http
        .get(hub.url(ServiceName::Api, "/queue/grades"))
        .header("cookie", operator.cookie_header())
        .send()
        .await
        .expect("the service's queue page");
    let jobs = response.text().await.expect("the page");
    assert!(
        jobs.matches("/attempt-now").count() == 2 && jobs.matches("503").count() >= 2,
        "two jobs waiting for a retry, with their last error: {jobs}"
    );
    let seqs: Vec<String> = jobs
        .match_indices(r#"<tr id="job-"#)
        .filter_map(|(at, _)| between(&jobs[at..], r#"<tr id="job-"#, "\"").map(str::to_owned))
        .collect();
    assert_eq!(seqs.len(), 2, "{jobs}");
    let csrf = csrf_of(&overview);
    // Each says when its retry is due: about ten minutes after its attempt.
    for job in &listed {
        let due: chrono::DateTime<chrono::Utc> = job["next_attempt_at"]
            .as_str()
            .unwrap_or_else(|| panic!("a due time: {job}"))
            .parse()
            .expect("a time");
        let wait = due - chrono::Utc::now();
        assert!(
            wait > chrono::TimeDelta::seconds(500) && wait <= chrono::TimeDelta::seconds(600),
            "{job}"
        );
    }
    assert!(
        jobs.matches("<time").count() >= 4,
        "enqueued and due times shown: {jobs}"
    );

    sink.set_reply(mih_testkit::Reply::status(200));
    let hurried = operator
        .post(
            &format!("/queue/grades/jobs/{}/attempt-now", seqs[0]),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(hurried.status, StatusCode::SEE_OTHER, "{}", hurried.body);
    sink.wait_for(3, std::time::Duration::from_secs(20))
        .await
        .expect("attempted at once, not in ten minutes");

    let moved = operator
        .post(
            &format!("/queue/grades/jobs/{}/dead-letter", seqs[1]),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(moved.status, StatusCode::SEE_OTHER, "{}", moved.body);
    let again = operator
        .post(
            &format!("/queue/grades/jobs/{}/dead-letter", seqs[1]),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(
        again.status,
        StatusCode::CONFLICT,
        "moved once: {}",
        again.body
    );
    mih_testkit::eventually(std::time::Duration::from_secs(20), || async {
        let letters = hub.api().get("/api/v1/dead-letters?service=grades").await;
        let count = letters.body["items"].as_array().map_or(0, Vec::len);
        if count == 1 {
            Ok(())
        } else {
            Err(format!("{count}: {}", letters.body))
        }
    })
    .await
    .expect("the moved job is a dead letter");
    assert_eq!(sink.requests().len(), 3, "the moved job was not sent");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_takes_messages_back_to_moodle_through_the_form() {
    let hub = hub().await;
    let mut admin = Visitor::new(&hub);
    admin.log_in(ADMIN_TOKEN).await;
    let form = admin.get("/services/new").await;
    assert!(
        form.body.contains(r#"<label for="f-inbound-source">"#),
        "{}",
        form.body
    );
    let csrf = csrf_of(&form);
    let base = [
        ("csrf", csrf.as_str()),
        ("name", "sis"),
        ("enabled", "on"),
        ("transport.kind", "amqp"),
        ("transport.host", "rabbit.example"),
        ("transport.routing_key", "events"),
        ("transport.response_queue", "sis.replies"),
        ("auth.type", "none"),
        ("inbound_on", "on"),
        ("inbound.source", "moodle"),
        ("inbound.enabled", "on"),
        ("inbound.rate_limit_per_sec", "5"),
        ("inbound.burst", "10"),
    ];
    // No secret and no token, and no response queue to reply on instead: there is no open
    // mode, and the form says so.
    let without_queue: Vec<(&str, &str)> = base
        .iter()
        .copied()
        .filter(|(name, _)| *name != "transport.response_queue")
        .collect();
    let open = admin.post("/services/new", &without_queue).await;
    assert_eq!(open.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(open.body.contains("no open mode"), "{}", open.body);

    let mut with_token = base.to_vec();
    with_token.push(("inbound.bearer_token", "sis-inbound-token-0000001"));
    let created = admin.post("/services/new", &with_token).await;
    assert_eq!(created.status, StatusCode::SEE_OTHER, "{}", created.body);
    let stored = hub.api().get("/api/v1/services/sis").await.body;
    assert_eq!(stored["transport"]["response_queue"], "sis.replies");
    assert_eq!(stored["inbound"]["source"], "moodle");
    assert_eq!(stored["inbound"]["bearer_token_set"], true);
    assert_eq!(stored["inbound"]["rate_limit_per_sec"], 5);

    // The edit form keeps the token (write-only) when left empty; unticking removes inbound.
    let edit = admin.get("/services/sis/edit").await;
    assert!(!edit.body.contains("sis-inbound-token-0000001"));
    let version = between(&edit.body, r#"name="version" value=""#, "\"")
        .expect("version")
        .to_owned();
    let mut kept = base.to_vec();
    kept.push(("version", &version));
    let saved = admin.post("/services/sis/edit", &kept).await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.body);
    let stored = hub.api().get("/api/v1/services/sis").await.body;
    assert_eq!(stored["inbound"]["bearer_token_set"], true, "kept");
    let version = stored["version"].to_string();
    let off: Vec<(&str, &str)> = base
        .iter()
        .copied()
        .filter(|(name, _)| !name.starts_with("inbound") && *name != "transport.response_queue")
        .chain([("version", version.as_str())])
        .collect();
    let saved = admin.post("/services/sis/edit", &off).await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.body);
    assert!(hub.api().get("/api/v1/services/sis").await.body["inbound"].is_null());
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_paused_by_its_429_says_until_when() {
    let hub = hub().await;
    let created = hub
        .api()
        .post(
            "/api/v1/services",
            &json!({"name": "busy", "transport": {"kind": "rest", "base_url": "http://127.0.0.1:9/"}}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    // What a dispatcher writes when the service answers 429 with Retry-After: 60.
    let circuits = mih_shared::circuit::CircuitStore::open(&hub.js, &hub.names().circuits_bucket())
        .await
        .expect("circuits");
    let until = chrono::Utc::now() + chrono::Duration::seconds(60);
    circuits
        .modify(&"busy".parse().expect("slug"), |circuit| {
            circuit.pause(until)
        })
        .await
        .expect("paused");

    let api = hub.api().get("/api/v1/circuits").await;
    assert!(
        api.body["items"][0]["paused_until"].is_string(),
        "{}",
        api.body
    );
    let mut viewer = Visitor::new(&hub);
    viewer.log_in(ADMIN_TOKEN).await;
    for path in ["/services", "/services/busy"] {
        let page = viewer.get(path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}");
        let shown = between(&page.body, "paused (429) until <time datetime=\"", "\"")
            .unwrap_or_else(|| panic!("{path} shows the pause: {}", page.body));
        let shown = chrono::DateTime::parse_from_rfc3339(shown).expect("a time");
        assert_eq!(shown, until, "{path}");
    }
    // An operator who knows better lifts the pause with the circuit's reset.
    let reset = hub
        .api()
        .post("/api/v1/circuits/busy/reset", &json!({}))
        .await;
    assert_eq!(reset.status, StatusCode::OK, "{}", reset.body);
    assert_eq!(reset.body["paused_until"], serde_json::Value::Null);
    let page = viewer.get("/services/busy").await;
    assert!(!page.body.contains("paused (429) until"), "{}", page.body);
    hub.stop().await;
}
