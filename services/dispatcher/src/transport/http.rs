//! REST over HTTP(S): one pooled keep-alive client per service, the service's auth and static
//! headers, identification headers on every request, optional Standard Webhooks signature.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use url::Url;

use mih_shared::live::{LiveService, RestTransport};
use mih_shared::messages::{Header, HttpMethod, HttpRequest};

use super::{Attempt, AttemptMeta, TargetError, TransportEnv, Verdict, auth_header};
use crate::ssrf::{GuardedResolver, SsrfError, SsrfGuard};

/// Longest `Retry-After` honoured; a target asking for more gets the retry policy's cap.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

pub struct HttpTarget {
    client: reqwest::Client,
    base: Url,
    guard: Arc<SsrfGuard>,
    headers: HeaderMap,
    signer: Option<standardwebhooks::Webhook>,
}

impl std::fmt::Debug for HttpTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpTarget")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

impl HttpTarget {
    pub fn new(
        service: &LiveService,
        rest: &RestTransport,
        env: &TransportEnv,
    ) -> Result<Self, TargetError> {
        let base = parse_base(&rest.base_url, "transport.base_url")?;
        Ok(HttpTarget {
            client: client(env, Duration::from_millis(service.timeout_ms))?,
            base,
            guard: Arc::clone(&env.guard),
            headers: service_headers(service, env)?,
            signer: signer(service, env)?,
        })
    }

    /// The client span of one attempt (OTel HTTP conventions). `url.full` leaves out the
    /// query, where tokens and personal data tend to travel.
    pub fn span(&self, request: &HttpRequest) -> tracing::Span {
        let method = method(request.method);
        let url = join(&self.base, &request.path, &[]).unwrap_or_else(|_| self.base.clone());
        client_span(&method, &url)
    }

    pub async fn deliver(&self, request: &HttpRequest, meta: &AttemptMeta) -> Attempt {
        let url = match join(&self.base, &request.path, &request.query) {
            Ok(url) => url,
            Err(message) => return Attempt::failed(Verdict::Permanent, message),
        };
        if let Err(refused) = check_literal(&self.guard, &url) {
            return Attempt::failed(Verdict::Permanent, refused.to_string());
        }
        let (url, body) = match (request.method, &request.body) {
            (HttpMethod::Get, Some(body)) => (with_body_as_query(url, body), None),
            (_, body) => (url, body.clone()),
        };
        let mut headers = self.headers.clone();
        if let Err(message) = add_headers(&mut headers, &request.headers) {
            return Attempt::failed(Verdict::Permanent, message);
        }
        if let (Some(content_type), Some(_)) = (&request.content_type, &body)
            && let Ok(value) = HeaderValue::from_str(content_type)
        {
            headers.insert(reqwest::header::CONTENT_TYPE, value);
        }
        identify(&mut headers, meta);
        if let Some(signer) = &self.signer {
            sign(
                signer,
                &mut headers,
                meta,
                body.as_deref().unwrap_or("").as_bytes(),
            );
        }
        let mut builder = self
            .client
            .request(method(request.method), url)
            .headers(headers);
        if let Some(body) = body {
            builder = builder.body(body);
        }
        match builder.send().await {
            Ok(response) => read_response(response, meta.body_limit).await,
            Err(error) => failure(&error),
        }
    }
}

/// An HTTP client span for `method` to `url` (query and credentials left out).
pub fn client_span(method: &Method, url: &Url) -> tracing::Span {
    let mut shown = url.clone();
    shown.set_query(None);
    shown.set_fragment(None);
    // Only fails for URLs that cannot have credentials, which then have none to hide.
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    tracing::info_span!(
        "http.client",
        otel.name = %method,
        otel.kind = "client",
        http.request.method = %method,
        url.full = %shown,
        server.address = url.host_str().unwrap_or_default(),
        server.port = url.port_or_known_default(),
        http.response.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    )
}

/// The pooled client of one service: its timeout, no redirects (a redirect could lead past the
/// SSRF guard, and a 3xx is the target's answer to report), resolution through the guard.
pub fn client(env: &TransportEnv, timeout: Duration) -> Result<reqwest::Client, TargetError> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .pool_idle_timeout(Duration::from_secs(90))
        .dns_resolver(Arc::new(GuardedResolver(Arc::clone(&env.guard))))
        .user_agent(concat!("mih/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| TargetError::Invalid {
            setting: "transport",
            message: format!("cannot build the HTTP client: {e}"),
        })
}

pub fn parse_base(text: &str, setting: &'static str) -> Result<Url, TargetError> {
    let url = Url::parse(text).map_err(|e| TargetError::Invalid {
        setting,
        message: format!("`{text}` is not a URL: {e}"),
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(TargetError::Invalid {
            setting,
            message: format!("`{text}` is not an http(s) URL with a host"),
        });
    }
    Ok(url)
}

/// The service's auth and static headers, sent with every request.
pub fn service_headers(
    service: &LiveService,
    env: &TransportEnv,
) -> Result<HeaderMap, TargetError> {
    let mut headers = HeaderMap::new();
    for (name, value) in &service.headers {
        insert(&mut headers, name, value).map_err(|message| TargetError::Invalid {
            setting: "headers",
            message,
        })?;
    }
    if let Some((name, value)) = auth_header(&service.auth, &env.keyring)? {
        insert(&mut headers, &name, &value).map_err(|message| TargetError::Invalid {
            setting: "auth",
            message,
        })?;
    }
    Ok(headers)
}

pub fn signer(
    service: &LiveService,
    env: &TransportEnv,
) -> Result<Option<standardwebhooks::Webhook>, TargetError> {
    let Some(sealed) = &service.signing_secret else {
        return Ok(None);
    };
    let secret = env.keyring.open(sealed)?;
    standardwebhooks::Webhook::new(&secret)
        .map(Some)
        .map_err(|e| TargetError::Invalid {
            setting: "signing_secret",
            message: format!("not a Standard Webhooks secret: {e}"),
        })
}

/// `Idempotency-Key` (the job id: the same on every attempt), the event id, the attempt
/// number and the trace context.
pub fn identify(headers: &mut HeaderMap, meta: &AttemptMeta) {
    let mut set = |name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    };
    set("idempotency-key", meta.job_id.to_string());
    set("mih-job-id", meta.job_id.to_string());
    if let Some(event) = meta.event_id {
        set("mih-event-id", event.to_string());
    }
    set("mih-attempt", meta.attempt.to_string());
    if let Some(traceparent) = &meta.traceparent {
        set("traceparent", traceparent.clone());
    }
}

/// Standard Webhooks signature: `webhook-id` is the job id, so a target that dedups on it sees
/// retries as the same message.
pub fn sign(
    signer: &standardwebhooks::Webhook,
    headers: &mut HeaderMap,
    meta: &AttemptMeta,
    body: &[u8],
) {
    let id = meta.job_id.to_string();
    let timestamp = Utc::now().timestamp();
    let Ok(signature) = signer.sign(&id, timestamp, body) else {
        return;
    };
    for (name, value) in [
        ("webhook-id", id),
        ("webhook-timestamp", timestamp.to_string()),
        ("webhook-signature", signature),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
}

fn insert(headers: &mut HeaderMap, name: &str, value: &str) -> Result<(), String> {
    let name = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("`{name}` is not a valid header name"))?;
    let value = HeaderValue::from_str(value)
        .map_err(|_| format!("the value of header `{name}` is not valid in a header"))?;
    headers.insert(name, value);
    Ok(())
}

/// The rule's rendered headers, over the service's static ones.
pub fn add_headers(headers: &mut HeaderMap, extra: &[Header]) -> Result<(), String> {
    extra
        .iter()
        .try_for_each(|header| insert(headers, &header.name, &header.value))
}

fn method(method: HttpMethod) -> Method {
    match method {
        HttpMethod::Get => Method::GET,
        HttpMethod::Post => Method::POST,
        HttpMethod::Put => Method::PUT,
        HttpMethod::Patch => Method::PATCH,
        HttpMethod::Delete => Method::DELETE,
    }
}

/// Appends `path` (and its own `?query`, if the template wrote one) to the base URL's path, so
/// `https://sis.example.org/api` + `/users/27` is `https://sis.example.org/api/users/27`.
pub fn join(base: &Url, path: &str, query: &[(String, String)]) -> Result<Url, String> {
    if let Some(refusal) = mih_shared::urlpath::refusal(path) {
        return Err(refusal);
    }
    let (path, path_query) = match path.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (path, None),
    };
    let mut url = base.clone();
    let joined = format!(
        "{}/{}",
        base.path().trim_end_matches('/'),
        path.trim_start_matches('/')
    );
    url.set_path(if path.is_empty() {
        base.path()
    } else {
        &joined
    });
    let extra = [path_query, url.query()]
        .into_iter()
        .flatten()
        .filter(|q| !q.is_empty())
        .map(str::to_owned)
        .collect::<Vec<_>>();
    url.set_query(None);
    if !extra.is_empty() {
        url.set_query(Some(&extra.join("&")));
    }
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(query);
    }
    if url.host() != base.host() {
        return Err(format!("the path `{path}` leaves the service's host"));
    }
    if !under(base.path(), url.path()) {
        return Err(format!(
            "the path `{path}` leads to `{}`, outside the service's base path `{}`",
            url.path(),
            base.path()
        ));
    }
    Ok(url)
}

/// Whether `path` is `base` or below it, segment-wise (`/api` holds `/api/x`, not `/apix`).
fn under(base: &str, path: &str) -> bool {
    let base = base.trim_end_matches('/');
    path == base
        || path
            .strip_prefix(base)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// A GET carries no body: a JSON object's scalar fields become query parameters instead.
fn with_body_as_query(mut url: Url, body: &str) -> Url {
    if let Ok(serde_json::Value::Object(fields)) = serde_json::from_str(body) {
        let mut pairs = url.query_pairs_mut();
        for (name, value) in fields {
            match value {
                serde_json::Value::String(text) => {
                    pairs.append_pair(&name, &text);
                }
                serde_json::Value::Number(_) | serde_json::Value::Bool(_) => {
                    pairs.append_pair(&name, &value.to_string());
                }
                _ => {}
            }
        }
    }
    url
}

/// reqwest does not resolve an IP literal, so the guard in the resolver never sees it.
pub(crate) fn check_literal(guard: &SsrfGuard, url: &Url) -> Result<(), SsrfError> {
    let ip = match url.host() {
        Some(url::Host::Ipv4(v4)) => std::net::IpAddr::V4(v4),
        Some(url::Host::Ipv6(v6)) => std::net::IpAddr::V6(v6),
        _ => return Ok(()),
    };
    guard.check(&ip.to_string(), ip)
}

async fn read_response(mut response: reqwest::Response, limit: usize) -> Attempt {
    let status = response.status();
    let headers = response_headers(response.headers());
    let retry_after = retry_after(response.headers(), Utc::now());
    let body = read_body(&mut response, limit).await;
    let verdict = classify(status, retry_after);
    let error = (verdict != Verdict::Delivered).then(|| format!("HTTP {status}"));
    Attempt {
        verdict,
        status: Some(status.as_u16()),
        headers,
        body_truncated: body.len() > limit,
        body: Some(super::excerpt(&body, limit)),
        error,
    }
}

/// The response headers that are text.
pub(crate) fn response_headers(headers: &HeaderMap) -> Vec<Header> {
    headers
        .iter()
        .filter_map(|(name, value)| {
            Some(Header {
                name: name.as_str().to_owned(),
                value: value.to_str().ok()?.to_owned(),
            })
        })
        .collect()
}

/// The body, or its first `wanted` bytes and at least one more when it is longer (so a body
/// that was cut can be told from one that fit). A body cut short by the connection is judged
/// by what arrived: the status already says how the target answered.
pub(crate) async fn read_body(response: &mut reqwest::Response, wanted: usize) -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() <= wanted {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => break,
            Err(error) => {
                tracing::debug!(%error, "response body incomplete");
                break;
            }
        }
    }
    body
}

/// 2xx delivered; 408, 429 and 5xx worth retrying; any other status permanent (3xx included:
/// redirects are not followed).
pub fn classify(status: StatusCode, retry_after: Option<Duration>) -> Verdict {
    if status.is_success() {
        Verdict::Delivered
    } else if status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
    {
        Verdict::Retryable { retry_after }
    } else {
        Verdict::Permanent
    }
}

/// `Retry-After` as seconds or an HTTP date, clamped to [`MAX_RETRY_AFTER`].
pub fn retry_after(headers: &HeaderMap, now: DateTime<Utc>) -> Option<Duration> {
    let text = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    let wait = match text.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => {
            let at = DateTime::parse_from_rfc2822(text).ok()?;
            (at.with_timezone(&Utc) - now).to_std().unwrap_or_default()
        }
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// A request that got no response: timeouts and connection failures (name resolution
/// included: DNS outages end) are worth retrying, an address the SSRF guard refuses or an
/// unbuildable request is not.
pub(crate) fn failure(error: &reqwest::Error) -> Attempt {
    let text = error_chain(error);
    if let Some(SsrfError::Refused { .. }) = find_ssrf(error) {
        return Attempt::failed(Verdict::Permanent, text);
    }
    if error.is_timeout() {
        return Attempt::failed(Verdict::Timeout, text);
    }
    if error.is_builder() {
        return Attempt::failed(Verdict::Permanent, text);
    }
    Attempt::failed(Verdict::Retryable { retry_after: None }, text)
}

fn find_ssrf<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a SsrfError> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(ssrf) = error.downcast_ref::<SsrfError>() {
            return Some(ssrf);
        }
        current = error.source();
    }
    None
}

/// reqwest's own message is terse ("error sending request"); the causes say what happened.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut current = error.source();
    while let Some(cause) = current {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        current = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(text: &str) -> Url {
        Url::parse(text).expect("url")
    }

    #[test]
    fn paths_join_under_the_base_path() {
        let cases = [
            (
                "https://sis.example.org/api",
                "/users/27",
                "https://sis.example.org/api/users/27",
            ),
            (
                "https://sis.example.org/api/",
                "users/27",
                "https://sis.example.org/api/users/27",
            ),
            (
                "https://sis.example.org",
                "/users",
                "https://sis.example.org/users",
            ),
            (
                "https://sis.example.org/api?key=1",
                "/u?x=2",
                "https://sis.example.org/api/u?x=2&key=1",
            ),
            (
                "https://sis.example.org/api",
                "",
                "https://sis.example.org/api",
            ),
        ];
        for (b, path, expected) in cases {
            assert_eq!(
                join(&base(b), path, &[]).expect("joins").as_str(),
                expected,
                "{b} + {path}"
            );
        }
        let with_query = join(
            &base("https://h.example/a"),
            "/b",
            &[("q".into(), "a b&c".into())],
        );
        assert_eq!(
            with_query.expect("joins").as_str(),
            "https://h.example/a/b?q=a+b%26c"
        );
    }

    #[test]
    fn a_path_cannot_leave_the_base_path() {
        let api = base("https://sis.example.org/api/v2");
        for path in [
            "/courses/../../enrol",
            "/../admin",
            "%2e%2e/%2e%2e/pct",
            "/courses/.%2E/x",
            "/x/..\\..\\y",
        ] {
            let refused = join(&api, path, &[]).expect_err(path);
            assert!(
                refused.contains("segment") || refused.contains("outside"),
                "{path}: {refused}"
            );
        }
        assert_eq!(
            join(&api, "/courses/%2E%2E%2Fx", &[])
                .expect("an encoded slash stays in its segment")
                .path(),
            "/api/v2/courses/%2E%2E%2Fx"
        );
        assert!(under("/api/", "/api/x") && under("/", "/x") && !under("/api", "/apix"));
    }

    #[test]
    fn a_path_cannot_leave_the_host() {
        let joined = join(&base("https://h.example/a"), "//evil.example/x", &[]).expect("joins");
        assert_eq!(joined.host_str(), Some("h.example"), "{joined}");
    }

    #[test]
    fn statuses_are_classified() {
        let wait = Some(Duration::from_secs(3));
        assert_eq!(classify(StatusCode::OK, wait), Verdict::Delivered);
        assert_eq!(classify(StatusCode::NO_CONTENT, None), Verdict::Delivered);
        for status in [408, 429, 500, 502, 503, 504] {
            let status = StatusCode::from_u16(status).expect("status");
            assert_eq!(
                classify(status, wait),
                Verdict::Retryable { retry_after: wait },
                "{status}"
            );
        }
        for status in [301, 400, 401, 403, 404, 409, 410, 422] {
            let status = StatusCode::from_u16(status).expect("status");
            assert_eq!(classify(status, None), Verdict::Permanent, "{status}");
        }
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date_and_is_clamped() {
        let now = DateTime::parse_from_rfc3339("2026-11-25T10:00:00Z")
            .expect("time")
            .with_timezone(&Utc);
        let header = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(
                reqwest::header::RETRY_AFTER,
                HeaderValue::from_str(value).expect("value"),
            );
            headers
        };
        assert_eq!(retry_after(&header("7"), now), Some(Duration::from_secs(7)));
        assert_eq!(
            retry_after(&header("Wed, 25 Nov 2026 10:00:30 GMT"), now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(retry_after(&header("999999"), now), Some(MAX_RETRY_AFTER));
        assert_eq!(retry_after(&header("soon"), now), None);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn a_get_body_becomes_the_query() {
        let url = with_body_as_query(
            base("https://h.example/a?x=1"),
            r#"{"user": 27, "name": "Ana María", "nested": {"no": 1}, "ok": true}"#,
        );
        assert_eq!(
            url.as_str(),
            "https://h.example/a?x=1&user=27&name=Ana+Mar%C3%ADa&ok=true"
        );
    }
}
