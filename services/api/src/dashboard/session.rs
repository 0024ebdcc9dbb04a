//! Who is looking at the dashboard: the API token they logged in with, kept in an HttpOnly,
//! SameSite=Strict cookie (so scripts cannot read it and other sites cannot send it), checked
//! on every request like an API call (a revoked token ends the session at once); and the
//! CSRF token every change must carry.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use sha2::{Digest, Sha256};

use super::i18n::Lang;
use crate::auth::{Caller, authenticate};
use crate::state::AppState;

pub const SESSION_COOKIE: &str = "mih_session";
pub const LANG_COOKIE: &str = "mih_lang";
/// A login form's own CSRF token (before there is a session).
pub const LOGIN_COOKIE: &str = "mih_login";

/// The value of cookie `name`, if the request has it.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// A `Set-Cookie` value for the dashboard's cookies: the whole site, HttpOnly, SameSite=Strict,
/// and Secure when the request came over HTTPS (directly or through a proxy that says so).
pub fn set_cookie(
    headers: &HeaderMap,
    name: &str,
    value: &str,
    max_age: Option<i64>,
) -> HeaderValue {
    let secure = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|proto| proto.eq_ignore_ascii_case("https"));
    let mut cookie = format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict");
    if let Some(age) = max_age {
        cookie.push_str(&format!("; Max-Age={age}"));
    }
    if secure {
        cookie.push_str("; Secure");
    }
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static("mih_invalid=1"))
}

/// The language of a request: the picker's cookie, else the browser's `Accept-Language`.
pub fn lang_of(headers: &HeaderMap) -> Lang {
    cookie(headers, LANG_COOKIE)
        .and_then(Lang::parse)
        .unwrap_or_else(|| {
            Lang::negotiate(
                headers
                    .get(header::ACCEPT_LANGUAGE)
                    .and_then(|v| v.to_str().ok()),
            )
        })
}

/// The CSRF token of a session: derived from its API token, so it needs no storage and only
/// whoever holds the token can know it.
pub fn csrf_token(api_token: &str) -> String {
    let digest = Sha256::digest(format!("mih-dashboard-csrf:{api_token}").as_bytes());
    hex::encode(&digest[..16])
}

/// A logged-in visitor.
#[derive(Debug, Clone)]
pub struct Session {
    pub caller: Caller,
    pub csrf: String,
    pub lang: Lang,
}

impl Session {
    /// Whether a change request carries this session's CSRF token (header or form field).
    pub fn csrf_ok(&self, headers: &HeaderMap, form_value: Option<&str>) -> bool {
        let sent = headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .or(form_value);
        sent.is_some_and(|token| constant_time_eq(token.as_bytes(), self.csrf.as_bytes()))
    }
}

impl Session {
    /// The same check as a refusal the pages show: 403, saying what to do.
    pub fn require_csrf(
        &self,
        headers: &HeaderMap,
        form_value: Option<&str>,
    ) -> Result<(), crate::error::ApiFailure> {
        if self.csrf_ok(headers, form_value) {
            Ok(())
        } else {
            Err(crate::error::ApiFailure::Forbidden(
                "the form's CSRF token is missing or stale: reload the page".into(),
            ))
        }
    }
}

/// A query or form field with something in it, trimmed.
pub fn nonempty(value: Option<&String>) -> Option<String> {
    value
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// No session: pages send the visitor to the login form (and back afterwards), htmx requests
/// get a redirect header so the whole page goes there.
#[derive(Debug)]
pub enum NoSession {
    Login { next: String, expired: bool },
    Failed(crate::error::ApiFailure),
}

impl IntoResponse for NoSession {
    fn into_response(self) -> Response {
        match self {
            NoSession::Login { next, expired } => {
                let mut url = format!("/login?next={}", percent_encode(&next));
                if expired {
                    url.push_str("&expired=1");
                }
                let mut response = Redirect::to(&url).into_response();
                if let Ok(value) = HeaderValue::from_str(&url) {
                    response.headers_mut().insert("hx-redirect", value);
                }
                response
            }
            NoSession::Failed(failure) => failure.into_response(),
        }
    }
}

impl FromRequestParts<AppState> for Session {
    type Rejection = NoSession;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let next = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let Some(token) = cookie(&parts.headers, SESSION_COOKIE) else {
            return Err(NoSession::Login {
                next,
                expired: false,
            });
        };
        match authenticate(&state.db, token).await {
            Ok(Some(caller)) => Ok(Session {
                caller,
                csrf: csrf_token(token),
                lang: lang_of(&parts.headers),
            }),
            Ok(None) => Err(NoSession::Login {
                next,
                expired: true,
            }),
            Err(failure) => Err(NoSession::Failed(failure)),
        }
    }
}

/// Percent-encodes everything but unreserved characters and `/`.
pub fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                char::from(b).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// Where to go after logging in: only a path on this site (never `//elsewhere` or a URL).
pub fn local_path(next: Option<&str>) -> String {
    match next {
        Some(path) if path.starts_with('/') && !path.starts_with("//") && !path.contains('\\') => {
            path.to_owned()
        }
        _ => "/".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; mih_session=mih_abc; mih_lang=fr"),
        );
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("mih_abc"));
        assert_eq!(lang_of(&headers), Lang::Fr);
        assert_eq!(cookie(&headers, "missing"), None);
    }

    #[test]
    fn only_local_paths_are_followed_after_login() {
        assert_eq!(local_path(Some("/deliveries?x=1")), "/deliveries?x=1");
        for hostile in ["//evil.example", "https://evil.example", "/\\evil", "evil"] {
            assert_eq!(local_path(Some(hostile)), "/", "{hostile}");
        }
    }

    #[test]
    fn session_cookies_are_http_only_and_strict() {
        let plain = set_cookie(&HeaderMap::new(), SESSION_COOKIE, "t", None);
        assert_eq!(plain, "mih_session=t; Path=/; HttpOnly; SameSite=Strict");
        let mut proxied = HeaderMap::new();
        proxied.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        let secure = set_cookie(&proxied, SESSION_COOKIE, "t", Some(0));
        assert!(
            secure
                .to_str()
                .unwrap_or_default()
                .ends_with("Max-Age=0; Secure")
        );
    }
}
