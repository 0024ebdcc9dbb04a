//! The three ways a job reaches its service. A [`Target`] is built once per service (and
//! rebuilt when the service changes): it owns the long-lived client — a pooled HTTP client, an
//! AMQP connection and channel — so no delivery pays for a connection of its own.
//!
//! Every transport answers an attempt with an [`Attempt`]; what to do next (ack, retry later,
//! dead-letter) is decided from its [`Verdict`] by the worker, never by the transport.

pub mod amqp;
pub mod http;
pub mod soap;

use std::sync::Arc;
use std::time::Duration;

use mih_shared::crypto::{CryptoError, Keyring};
use mih_shared::live::{Auth, LiveService, Transport};
use mih_shared::messages::{EventId, Header, JobId, Request};
use mih_shared::telemetry;
use tracing::Instrument as _;

use crate::redact::Redactor;
use crate::ssrf::SsrfGuard;

/// Most bytes of a response body kept in an outcome (the facade returns more: up to
/// `dispatcher.facade_max_body_bytes`).
pub const EXCERPT_LIMIT: usize = 2048;

/// What every transport needs to build its client.
#[derive(Debug, Clone)]
pub struct TransportEnv {
    pub keyring: Arc<Keyring>,
    pub guard: Arc<SsrfGuard>,
}

/// Who is being delivered, for the headers that let a target recognise duplicates.
#[derive(Debug, Clone)]
pub struct AttemptMeta {
    pub job_id: JobId,
    pub event_id: Option<EventId>,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// W3C `traceparent` sent on to the target: set by [`Target::deliver`] from the attempt's
    /// own client (or producer) span, so the target's work is that span's child.
    pub traceparent: Option<String>,
    /// How much of the response body to keep (an excerpt for the log, more for the facade).
    pub body_limit: usize,
}

/// Completes an attempt's span: the status, and what kind of failure it was (`error.type`:
/// the HTTP status, or `timeout`, `retryable`, `permanent` where there was none).
fn record_outcome(span: &tracing::Span, attempt: &Attempt) {
    if let Some(status) = attempt.status {
        span.record("http.response.status_code", status);
    }
    let kind = match attempt.verdict {
        Verdict::Delivered => return,
        Verdict::Timeout => "timeout",
        Verdict::Retryable { .. } => "retryable",
        Verdict::Permanent => "permanent",
    };
    match attempt.status {
        Some(status) => span.record("error.type", status.to_string()),
        None => span.record("error.type", kind),
    };
    span.record("otel.status_code", "error");
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    pub verdict: Verdict,
    /// HTTP status (REST, SOAP); `None` for AMQP and for failures before a response.
    pub status: Option<u16>,
    pub headers: Vec<Header>,
    /// The start of the response body, at most `AttemptMeta::body_limit` bytes.
    pub body: Option<String>,
    /// The response body was longer than `body`.
    pub body_truncated: bool,
    /// Why it failed, for people: the transport error, the SOAP fault, the AMQP reply.
    pub error: Option<String>,
}

impl Attempt {
    pub fn failed(verdict: Verdict, error: impl Into<String>) -> Self {
        Attempt {
            verdict,
            status: None,
            headers: Vec::new(),
            body: None,
            body_truncated: false,
            error: Some(error.into()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The target took it (2xx, SOAP response without fault, AMQP confirm ack).
    Delivered,
    /// Worth another attempt: 408, 429, 5xx, SOAP server fault, connection failures, nack.
    /// `retry_after` is what the target asked for, if anything.
    Retryable { retry_after: Option<Duration> },
    /// No answer within the service's timeout.
    Timeout,
    /// Retrying cannot help: other 4xx, SOAP client fault, unroutable AMQP message, a request
    /// that does not fit the service.
    Permanent,
}

impl Verdict {
    /// Whether the attempt counts against the circuit breaker. A permanent failure is the
    /// request's fault, not the service's.
    pub fn counts_as_failure(self) -> bool {
        matches!(self, Verdict::Retryable { .. } | Verdict::Timeout)
    }
}

/// A service's transport could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("cannot open the service's secret: {0}")]
    Secret(#[from] CryptoError),
    #[error("{setting}: {message}")]
    Invalid {
        setting: &'static str,
        message: String,
    },
}

/// How a service is reached: one long-lived client per transport.
#[derive(Debug)]
pub enum Link {
    Http(http::HttpTarget),
    Amqp(amqp::AmqpTarget),
    Soap(soap::SoapTarget),
}

/// A service's transport, ready to deliver, and what of its answers must never be kept.
pub struct Target {
    link: Link,
    redactor: Redactor,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Target").field(&self.kind()).finish()
    }
}

impl Target {
    pub fn build(service: &LiveService, env: &TransportEnv) -> Result<Target, TargetError> {
        let link = match &service.transport {
            Transport::Rest(rest) => Link::Http(http::HttpTarget::new(service, rest, env)?),
            Transport::Amqp(amqp) => Link::Amqp(amqp::AmqpTarget::new(service, amqp, env)?),
            Transport::Soap(soap) => Link::Soap(soap::SoapTarget::new(service, soap, env)?),
        };
        Ok(Target {
            link,
            redactor: redactor(service, &env.keyring)?,
        })
    }

    pub fn link(&self) -> &Link {
        &self.link
    }

    /// Makes one attempt. Whatever the target answered, the service's own credentials are
    /// removed from the answer before anyone sees or stores it.
    pub async fn deliver(&self, request: &Request, meta: &AttemptMeta) -> Attempt {
        let span = match (&self.link, request) {
            (Link::Http(target), Request::Http(request)) => target.span(request),
            (Link::Amqp(target), Request::Amqp(request)) => target.span(request),
            (Link::Soap(target), Request::Soap(request)) => target.span(request),
            _ => tracing::Span::none(),
        };
        let meta = AttemptMeta {
            traceparent: span
                .in_scope(telemetry::current_traceparent)
                .or_else(|| meta.traceparent.clone()),
            ..meta.clone()
        };
        let attempt = self.attempt(request, &meta).instrument(span.clone()).await;
        record_outcome(&span, &attempt);
        attempt
    }

    async fn attempt(&self, request: &Request, meta: &AttemptMeta) -> Attempt {
        let attempt = match (&self.link, request) {
            (Link::Http(target), Request::Http(request)) => target.deliver(request, meta).await,
            (Link::Amqp(target), Request::Amqp(request)) => target.deliver(request, meta).await,
            (Link::Soap(target), Request::Soap(request)) => target.deliver(request, meta).await,
            (_, request) => Attempt::failed(
                Verdict::Permanent,
                format!(
                    "the job is a {} request but the service's transport is {}",
                    request_kind(request),
                    self.kind()
                ),
            ),
        };
        self.redactor.attempt(attempt)
    }

    /// Closes long-lived connections (AMQP) when the service is removed or changed.
    pub async fn close(&self) {
        if let Link::Amqp(target) = &self.link {
            target.close().await;
        }
    }

    pub fn kind(&self) -> &'static str {
        match self.link {
            Link::Http(_) => "rest",
            Link::Amqp(_) => "amqp",
            Link::Soap(_) => "soap",
        }
    }
}

/// The service's credentials, to be kept out of answers: its auth secret, its AMQP password and
/// its signing secret.
fn redactor(service: &LiveService, keyring: &Keyring) -> Result<Redactor, TargetError> {
    let mut secrets = Vec::new();
    let mut basic = None;
    match &service.auth {
        Auth::None => {}
        Auth::Bearer { token } => secrets.push(keyring.open(token)?),
        Auth::ApiKey { key, .. } => secrets.push(keyring.open(key)?),
        Auth::Basic { username, password } => {
            let password = keyring.open(password)?;
            basic = Some((username.clone(), password.clone()));
            secrets.push(password);
        }
    }
    if let Transport::Amqp(amqp) = &service.transport
        && let Some(password) = &amqp.password
    {
        secrets.push(keyring.open(password)?);
    }
    if let Some(secret) = &service.signing_secret {
        let secret = keyring.open(secret)?;
        // The key proper is the base64 after `whsec_`; either form may be echoed.
        if let Some(key) = secret.strip_prefix("whsec_") {
            secrets.push(key.to_owned());
        }
        secrets.push(secret);
    }
    Ok(Redactor::new(
        secrets.iter().map(String::as_str),
        basic.as_ref().map(|(u, p)| (u.as_str(), p.as_str())),
    ))
}

fn request_kind(request: &Request) -> &'static str {
    match request {
        Request::Http(_) => "rest",
        Request::Amqp(_) => "amqp",
        Request::Soap(_) => "soap",
    }
}

/// The `authorization`-style header a service's auth adds to HTTP requests (REST and SOAP).
pub fn auth_header(
    auth: &Auth,
    keyring: &Keyring,
) -> Result<Option<(String, String)>, TargetError> {
    use base64::Engine as _;
    Ok(match auth {
        Auth::None => None,
        Auth::Bearer { token } => Some((
            "authorization".to_owned(),
            format!("Bearer {}", keyring.open(token)?),
        )),
        Auth::ApiKey { header, key } => Some((header.clone(), keyring.open(key)?)),
        Auth::Basic { username, password } => {
            let pair = format!("{username}:{}", keyring.open(password)?);
            Some((
                "authorization".to_owned(),
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                ),
            ))
        }
    })
}

/// `text` cut to at most `limit` bytes, on a character boundary.
pub fn cut(text: &str, limit: usize) -> &str {
    if text.len() <= limit {
        return text;
    }
    let end = (0..=limit)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    &text[..end]
}

/// Cuts `bytes` to at most `limit` bytes on a character boundary, lossily decoded.
pub fn excerpt(bytes: &[u8], limit: usize) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(limit)]);
    // A cut through a multi-byte character leaves a replacement character at the end.
    text.trim_end_matches('\u{FFFD}').to_owned()
}
