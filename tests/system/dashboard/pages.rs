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
